// Joining a sequence slice to the tokens before it, on the device (latim-method.md §1-2):
// the (decay, state) prefix over the ranks' scan summaries, the incoming state's share of
// every output, and the Δ-sum offsets. The collectives themselves are the caller's (NCCL).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>


namespace latim::cuda {

// all = [S][n / per + n]: rank q's decays (one per `per` consecutive states) then its final
// state from a zero start (n). h_in[k] = the state entering rank r: h <- decay_q[k / per] h +
// state_q[k] over q < r, from `carry` (null: zero). r = S gives the state after every rank
// (the carry into the next sequence chunk); h_in may be carry (in place).
void chain_state_prefix(const float* all, int S, int r, int64_t n, int64_t per, const float* carry, float* h_in,
                        cudaStream_t stream, int layer);
// all = [S][n] doubles: offset[k] = base[k] (null: 0) + the sum over q < r of all[q][k],
// added in rank order. offset may be base (in place).
void sum_prefix(const double* all, int S, int r, int64_t n, const double* base, double* offset, cudaStream_t stream,
                int layer);
// Mamba-1: decay[c, s] = exp(A[c, s] total[c]), A [D, N], total [D] (the slice's Δ sums).
void scan_decay_mamba1(const float* A, const double* total, int64_t D, int64_t N, float* decay, cudaStream_t stream,
                       int layer);
// Mamba-2: decay[h] = exp(A[h] total[h]) (one decay for the head's P x N states).
void scan_decay_mamba2(const float* A, const double* total, int64_t H, float* decay, cudaStream_t stream, int layer);
// Mamba-1: y[t, c] += sum_s C[t, s] exp(A[c, s] S[t, c]) h_in[c, s]; S [T, D] is the slice's
// own cumulative Δ (from its first token), C has leading dimension ldc.
void add_incoming_state_mamba1(float* y, const float* C, int64_t ldc, const double* S, const float* A,
                               const float* h_in, int64_t T, int64_t D, int64_t N, cudaStream_t stream, int layer);
// Mamba-2: y[t, hP + p] += exp(A[h] S[t, h]) sum_s C[t, g(h), s] h_in[h, p, s], fp32 sums
// (tiles of 64 rows x 64 channels per block); S [T, H] as above.
void add_incoming_state_mamba2(float* y, const float* C, int64_t ldc, const double* S, const float* A,
                               const float* h_in, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                               cudaStream_t stream, int layer);
// The rows of a slice where the incoming state still counts: S [T, W] is non-decreasing in
// t (Δ >= 0) and A < 0, so exp(a S[t, w]) is exactly 0 in fp32 from some row on for each
// column w, where a is the largest of the column's per_a values of A (A [W, per_a]). Returns
// the number of leading rows where any column is not yet 0 (a binary search per column;
// waits for the device; `scratch`: one device word). Work past that row would add exact zeros.
int64_t live_rows(const double* S, int64_t T, int64_t W, const float* A, int64_t per_a, unsigned long long* scratch,
                  cudaStream_t stream, int layer);
// S[t, c] += offset[c] for t < T, c < W.
void add_row_offset(double* S, int64_t T, int64_t W, const double* offset, cudaStream_t stream, int layer);
// out[t, c] = in[t * ld + c] for t < T, c < W (a strided slice made dense).
void copy_rows(const float* in, int64_t ld, int64_t T, int64_t W, float* out, cudaStream_t stream, int layer);
// The same from bf16 rows (bf16 bits), widened exactly to fp32.
void copy_rows(const uint16_t* in, int64_t ld, int64_t T, int64_t W, float* out, cudaStream_t stream, int layer);

}  // namespace latim::cuda
