// Elementwise steps of the forward pass (bias, softplus, gates, residual) and the fp64
// cumulative sums of Δ that the LaTIM factors need. Device pointers, 64-bit indices.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

// out[r, c] += bias[c] for r < rows, c < cols; out has leading dimension ld.
void add_bias_rows(float* out, int64_t rows, int64_t cols, int64_t ld, const float* bias, cudaStream_t stream,
                   int layer);
// x <- softplus(x + bias) (torch semantics: threshold 20), [rows, cols] with leading dimension ld;
// bias ([cols]) may be null.
void softplus_rows(float* x, int64_t rows, int64_t cols, int64_t ld, const float* bias, cudaStream_t stream, int layer);
// Mamba-2: delta[t, h] = clamp(softplus(dt[t * ld + h] + dt_bias[h]), dt_min, dt_max).
void mamba2_delta(const float* dt, int64_t ld, int64_t T, int64_t H, const float* dt_bias, double dt_min,
                  double dt_max, float* delta, cudaStream_t stream, int layer);
// The same on bf16 dt (bf16 bits, widened exactly: the bits of the fp32 kernel on rounded dt).
void mamba2_delta(const uint16_t* dt, int64_t ld, int64_t T, int64_t H, const float* dt_bias, double dt_min,
                  double dt_max, float* delta, cudaStream_t stream, int layer);
// Mamba-1 gate: gate = SiLU(z); y <- y * gate. z has leading dimension ldz; gate_out may be null.
// With y16 ([T, D], bf16 bits) not null the result goes there instead of into y, which is left
// as it was (for an out_proj on bf16 operands, when nothing else reads the fp32 result).
void silu_gate(float* y, const float* z, int64_t ldz, int64_t T, int64_t D, float* gate_out, uint16_t* y16,
               cudaStream_t stream, int layer);
// The same with z in bf16 (bf16 bits, widened exactly).
void silu_gate(float* y, const uint16_t* z, int64_t ldz, int64_t T, int64_t D, float* gate_out, uint16_t* y16,
               cudaStream_t stream, int layer);
// out[t, :] = table[tokens[t], :] for t < T (ids already checked on the host); rows of d floats.
void embed_rows(const float* table, const int64_t* tokens, int64_t T, int64_t d, float* out, cudaStream_t stream);
// r <- r + o, n values.
void residual_add(float* r, const float* o, int64_t n, cudaStream_t stream, int layer);
// out[k] = bf16(in[k]) (bit patterns, rounded to nearest even), n values: the bf16 copies of
// weights for products on bf16 operands. `what` names the copy in errors.
void to_bf16(const float* in, int64_t n, uint16_t* out, cudaStream_t stream, const char* what, int layer);
// The same for rows of cols values with leading dimension ld, into dense [rows, cols].
void to_bf16_rows(const float* in, int64_t ld, int64_t rows, int64_t cols, uint16_t* out, cudaStream_t stream,
                  const char* what, int layer);
// S[t, c] = sum_{s <= t} delta[s, c] in fp64, delta dense [T, W]. `work` holds
// cumulative_sum_work(T, W) doubles.
int64_t cumulative_sum_work(int64_t T, int64_t W);
void cumulative_sum(const float* delta, int64_t T, int64_t W, double* S, double* work, cudaStream_t stream,
                    int layer);
// total[c] = sum_t delta[t, c] in fp64 (chunk sums added in order, as cumulative_sum makes
// them), without writing the [T, W] sums; `work` as for cumulative_sum.
void column_sums(const float* delta, int64_t T, int64_t W, double* total, double* work, cudaStream_t stream,
                 int layer);

}  // namespace latim::cuda
