// Mamba-1 selective scan (latim-method.md §1) with an fp32 state, chunked over the sequence:
// each chunk scans from a zero state, the chunk states are chained, and each chunk is scanned
// again from its incoming state. Any T; memory O(T/chunk * D * N).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

// The Mamba-1 gate done in the scan's output pass (bf16 mode, untraced and unsharded layers):
// with y16 set, y16[t, c] = bf16(y[t, c] SiLU(z[t, c])) (the bits silu_gate writes, z bf16
// bits with leading dimension ldz) and y is not written.
struct ScanGate {
  const uint16_t* z = nullptr;
  int64_t ldz = 0;
  uint16_t* y16 = nullptr;
};

// Workspace floats needed by selective_scan for these sizes.
int64_t selective_scan_work(int64_t T, int64_t D, int64_t N);

// y[t, c] = sum_n C[t, n] h_t[c, n] + Dskip[c] x[t, c], h_t = exp(Δ[t, c] A[c, n]) h_{t-1} + Δ[t, c] B[t, n] x[t, c].
// x, delta, y dense [T, D]; A [D, N]; B and C with leading dimensions ldb, ldc. N <= 64.
// h_final ([D, N], may be null) receives the state after the last token.
// With raw_dt false, delta holds Δ (dt_bias unused). With raw_dt, it holds dt_proj's raw
// output, and the scan makes it Δ = softplus(dt + dt_bias) in place (dt_bias [D] may be
// null; the bits softplus_rows gives) before using it: after the call delta holds Δ.
void selective_scan(const float* x, float* delta, const float* dt_bias, bool raw_dt, const float* A, const float* B,
                    int64_t ldb, const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N,
                    float* y, float* h_final, float* work, cudaStream_t stream, int layer, const ScanGate& gate = {});
// The same with x in bf16 (bf16 bits, widened exactly).
void selective_scan(const uint16_t* x, float* delta, const float* dt_bias, bool raw_dt, const float* A, const float* B,
                    int64_t ldb, const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N,
                    float* y, float* h_final, float* work, cudaStream_t stream, int layer, const ScanGate& gate = {});
// The same with x and dt_proj's raw output in bf16 (dt16 [T, D]): the scan makes it
// Δ = bf16(softplus(dt + dt_bias)) in place (softplus_fast: within a bf16 ulp of the exact
// form's rounding) and uses that rounded Δ in every pass (the bits of the fp32 version given
// those Δ values, finished); after the call dt16 holds Δ.
void selective_scan(const uint16_t* x, uint16_t* dt16, const float* dt_bias, const float* A, const float* B,
                    int64_t ldb, const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N,
                    float* y, float* h_final, float* work, cudaStream_t stream, int layer, const ScanGate& gate = {});

}  // namespace latim::cuda
