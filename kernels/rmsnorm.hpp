// RMSNorm of rows (the block norm and the final norm), the residual add fused with the next
// norm, and Mamba-2's grouped, gated RMSNorm. bf16 outputs are bf16 bit patterns (rounded to
// nearest even), for products that take bf16 operands.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

// out[r, :] = in[r, :] / sqrt(mean(in[r, :]^2) + eps) * w, rows of `dim` values (dense).
void rmsnorm_rows(const float* in, int64_t rows, int64_t dim, const float* w, double eps, float* out,
                  cudaStream_t stream, int layer);

// A layer's residual add and the next norm in one pass over r: r <- r + o (skipped when o is
// null; r is then only read), then out = RMSNorm(r) * w exactly as rmsnorm_rows computes it
// (the same bits), into out (fp32) and/or out16 (bf16); either may be null. Rows are dense.
void residual_rmsnorm(float* r, const float* o, int64_t rows, int64_t dim, const float* w, double eps, float* out,
                      uint16_t* out16, cudaStream_t stream, int layer);

// Mamba-2 gated norm, in place on y [T, D], per group of D/G channels (latim-method.md §2):
// gate = SiLU(z), v = norm_before_gate ? y : y * gate, gamma = w / sqrt(mean_group(v^2) + eps),
// y <- gamma * (y * gate). z has leading dimension ldz; gate_out, gamma_out ([T, D]) may be null.
// With y16 ([T, D], bf16) not null the result goes there instead of into y, which is left as
// it was (for an out_proj on bf16 operands, when nothing else reads the fp32 result).
void gated_rmsnorm(float* y, const float* z, int64_t ldz, int64_t T, int64_t D, int64_t G, const float* w,
                   double eps, bool norm_before_gate, float* gate_out, float* gamma_out, uint16_t* y16,
                   cudaStream_t stream, int layer);
// The same with z in bf16 (bf16 bits, widened exactly: the bits of the fp32 kernel on rounded z).
void gated_rmsnorm(float* y, const uint16_t* z, int64_t ldz, int64_t T, int64_t D, int64_t G, const float* w,
                   double eps, bool norm_before_gate, float* gate_out, float* gamma_out, uint16_t* y16,
                   cudaStream_t stream, int layer);
// The same with y in bf16 too (the SSD scan's bf16 output in untraced layers), into y16 only:
// the bits of the fp32 kernel on the rounded y.
void gated_rmsnorm(const uint16_t* y, const uint16_t* z, int64_t ldz, int64_t T, int64_t D, int64_t G,
                   const float* w, double eps, bool norm_before_gate, uint16_t* y16, cudaStream_t stream, int layer);

}  // namespace latim::cuda
