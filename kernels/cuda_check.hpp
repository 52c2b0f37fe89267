// Error checking for CUDA calls: the message names the kernel or call and the layer.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "latim/error.hpp"

namespace latim::cuda {

inline void check(cudaError_t e, const char* what, int layer = -1) {
  if (e != cudaSuccess)
    fail("CUDA error in ", what, layer >= 0 ? " (layer " + std::to_string(layer) + ")" : std::string(), ": ",
         cudaGetErrorString(e));
}

// After a kernel launch: launch-configuration errors now; with LATIM_CUDA_SYNC_CHECK=1 in
// the environment also waits, so an asynchronous fault is reported against its kernel.
void check_launch(const char* kernel, int layer = -1, cudaStream_t stream = nullptr);

}  // namespace latim::cuda
