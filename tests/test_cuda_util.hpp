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

// Sets an environment variable (or, with null, unsets it) for its lifetime, then puts back what
// was there: the kernels read their switches (LATIM_SSD_KERNEL, LATIM_GEMM_TUNE, ...) from the
// environment.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_.c_str(), old_.c_str(), 1);
    else unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

}  // namespace latim::cudatest
