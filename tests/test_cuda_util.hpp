// Helpers for the CUDA tests: fixture location (overridable with LATIM_TEST_DATA_DIR, so a
// build can be run from another checkout), the skip when no GPU is visible, random data,
// and the normalised error max|a - b| / max|b| (from reference_fp64.hpp).
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "latim/backend.hpp"
#include "reference_fp64.hpp"
#include "test_util.hpp"

namespace latim::cudatest {

using test::data_dir;

#define LATIM_SKIP_WITHOUT_GPU()                                              \
  do {                                                                        \
    if (!::latim::cuda_available()) GTEST_SKIP() << "no CUDA device visible"; \
  } while (0)

inline std::vector<float> random_vector(std::mt19937& g, std::size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

using reference::norm_error;

}  // namespace latim::cudatest
