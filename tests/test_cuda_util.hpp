// Helpers for the CUDA tests: fixture location (overridable with LATIM_TEST_DATA_DIR, so a
// build can be run from another checkout), the skip when no GPU is visible, random data,
// and the normalised error max|a - b| / max|b|.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "latim/backend.hpp"

namespace latim::cudatest {

inline std::string data_dir() {
  const char* env = std::getenv("LATIM_TEST_DATA_DIR");
  return env && *env ? std::string(env) : std::string(LATIM_TEST_DATA_DIR);
}

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

template <class A, class B>
double norm_error(const A& a, const B& b) {
  double num = 0.0, den = 0.0;
  if (a.size() != b.size()) return INFINITY;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = a[i], y = b[i];
    if (std::isnan(x) || std::isnan(y)) {
      if (std::isnan(x) != std::isnan(y)) return INFINITY;
      continue;
    }
    num = std::max(num, std::abs(x - y));
    den = std::max(den, std::abs(y));
  }
  return den > 0 ? num / den : num;
}

}  // namespace latim::cudatest
