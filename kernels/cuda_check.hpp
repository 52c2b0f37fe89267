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

}  // namespace latim::cuda
