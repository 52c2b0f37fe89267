// Mamba-1 selective scan (latim-method.md §1) with an fp32 state, chunked over the sequence:
// each chunk scans from a zero state, the chunk states are chained, and each chunk is scanned
// again from its incoming state. Any T; memory O(T/chunk * D * N).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

// Workspace floats needed by selective_scan for these sizes.
int64_t selective_scan_work(int64_t T, int64_t D, int64_t N);

// y[t, c] = sum_n C[t, n] h_t[c, n] + Dskip[c] x[t, c], h_t = exp(Δ[t, c] A[c, n]) h_{t-1} + Δ[t, c] B[t, n] x[t, c].
// x, delta, y dense [T, D]; A [D, N]; B and C with leading dimensions ldb, ldc. N <= 64.
// h_final ([D, N], may be null) receives the state after the last token.
void selective_scan(const float* x, const float* delta, const float* A, const float* B, int64_t ldb, const float* C,
                    int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N, float* y, float* h_final,
                    float* work, cudaStream_t stream, int layer);

}  // namespace latim::cuda
