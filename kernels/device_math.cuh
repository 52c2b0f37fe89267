// Small device functions several kernel files use: the SiLU of the forward (and of the
// LaTIM surrogate in the mma.sync tile kernel) and the bf16 bits of a float.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace latim::cuda {

// x σ(x), as the CPU reference computes it (expf, an IEEE division).
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

// The bits of x rounded to bf16 (to nearest even).
__device__ __forceinline__ uint16_t bf16_bits(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }

}  // namespace latim::cuda
