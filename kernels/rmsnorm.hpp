// RMSNorm of rows (the block norm and the final norm) and Mamba-2's grouped, gated RMSNorm.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

// out[r, :] = in[r, :] / sqrt(mean(in[r, :]^2) + eps) * w, rows of `dim` values (dense).
void rmsnorm_rows(const float* in, int64_t rows, int64_t dim, const float* w, double eps, float* out,
                  cudaStream_t stream, int layer);

// Mamba-2 gated norm, in place on y [T, D], per group of D/G channels (latim-method.md §2):
// gate = SiLU(z), v = norm_before_gate ? y : y * gate, gamma = w / sqrt(mean_group(v^2) + eps),
// y <- gamma * (y * gate). z has leading dimension ldz; gate_out, gamma_out ([T, D]) may be null.
void gated_rmsnorm(float* y, const float* z, int64_t ldz, int64_t T, int64_t D, int64_t G, const float* w,
                   double eps, bool norm_before_gate, float* gate_out, float* gamma_out, cudaStream_t stream,
                   int layer);

}  // namespace latim::cuda
