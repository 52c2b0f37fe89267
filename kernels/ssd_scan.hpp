// Mamba-2 scan (latim-method.md §2): per head a [P, N] state with one scalar decay per step.
// For P <= 64 and N <= 128 the chunked SSD (matrix) form in fp32: chunk states, a chain over
// groups of chunks, then per chunk C Bᵀ-masked products plus the entering state's term; other
// shapes use the per-step recurrence with chunk states. ssd_scan_work is bounded in T (the
// sequence is processed in slices of 32768 positions).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

int64_t ssd_scan_work(int64_t T, int64_t H, int64_t P, int64_t N, int64_t G);

// y[t, hP + p] = sum_n C[t, g(h), n] s_t[h, p, n] + Dskip[h] x[t, hP + p],
// s_t = exp(Δ[t, h] A[h]) s_{t-1} + Δ[t, h] x[t, hP + p] B[t, g(h), n].
// x has leading dimension ldx; B and C leading dimension ldbc (group g at column g N);
// delta dense [T, H]; y dense [T, H P]. h_final ([H, P, N]) may be null.
// tensor_cores: on the chunked path (P <= 64, N <= 128) the matrix products run as tf32
// mma.sync with fp32 sums (relative error ~1e-4..1e-3, for the tf32 and bf16 modes); false
// keeps everything fp32 on CUDA cores. Other shapes ignore it.
void ssd_scan(const float* x, int64_t ldx, const float* delta, const float* A, const float* B, const float* C,
              int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, float* y,
              float* h_final, float* work, bool tensor_cores, cudaStream_t stream, int layer);
// Whether the scan takes bf16 x, B and C for these shapes (the tensor-core chunked path).
bool ssd_scan_takes_bf16(int64_t P, int64_t N);
// The tensor-core scan on bf16 x, B and C (bf16 bits: the bf16 mode's conv output), widened
// exactly as they are staged: the bits the fp32 version gives on the rounded values. With
// y16 not null, y goes there rounded to bf16 (y is not written): for layers where only the
// gated norm reads y.
void ssd_scan(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
              const uint16_t* C, int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N,
              int64_t G, float* y, uint16_t* y16, float* h_final, float* work, cudaStream_t stream, int layer);

}  // namespace latim::cuda
