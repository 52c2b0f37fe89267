// The CUDA compute backend (forward kernels + LaTIM tile kernel), selected by make_backend().
#include <cuda_runtime.h>

#include "latim/backend.hpp"
#include "latim/error.hpp"

namespace latim {

bool cuda_device_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

std::unique_ptr<ComputeBackend> make_cuda_backend(Precision) {
  fail("--backend cuda: the CUDA backend is not implemented yet in this version; use --backend cpu");
}

}  // namespace latim
