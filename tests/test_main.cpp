// The test runner's entry point: the BLAS kernels are chosen as the latim binary chooses them
// (model/cpu_ops.hpp), before any test runs a product.
#include <gtest/gtest.h>

#include "model/cpu_ops.hpp"

int main(int argc, char** argv) {
  latim::cpu::choose_blas_kernels();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
