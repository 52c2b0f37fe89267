// Device side of a sequence-sharded forward: prefix combinations and state corrections.
#include <limits>
#include <string>

#include "cuda_check.hpp"
#include "device_math.cuh"
#include "sequence_shard.hpp"

namespace latim::cuda {

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65536 * 8 ? b : 65536 * 8);  // grid-stride loops cover the rest
}

__global__ void chain_state_kernel(const float* all, int S, int r, int64_t n, int64_t per, const float* carry,
                                   float* h_in) {
  const int64_t nd = n / per;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += int64_t{gridDim.x} * blockDim.x) {
    float h = carry ? carry[k] : 0.0f;
    for (int q = 0; q < r; ++q) {
      const float* dq = all + (nd + n) * q;
      h = dq[k / per] * h + dq[nd + k];
    }
    h_in[k] = h;
  }
}

__global__ void sum_prefix_kernel(const double* all, int r, int64_t n, const double* base, double* offset) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += int64_t{gridDim.x} * blockDim.x) {
    double s = base ? base[k] : 0.0;
    for (int q = 0; q < r; ++q) s += all[n * q + k];
    offset[k] = s;
  }
}

// decay[i] = exp(A[i / per_a] total[i / per_total]) for i < n.
__global__ void decay_kernel(const float* A, int64_t per_a, const double* total, int64_t per_total, int64_t n,
                             float* decay) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    decay[i] = static_cast<float>(exp(static_cast<double>(A[i / per_a]) * total[i / per_total]));
}

// One thread per channel and a run of positions, with the channel's A and h_in in registers
// (N <= NM) and the run's C rows in shared memory.
constexpr int kRun = 32;
template <int NM>
__global__ void incoming_mamba1_kernel(float* y, const float* C, int64_t ldc, const double* S, const float* A,
                                       const float* h_in, int64_t T, int64_t D, int N) {
  __shared__ float cs[kRun][NM];
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  float a[NM], h[NM];
#pragma unroll
  for (int k = 0; k < NM; ++k) {
    a[k] = c < D && k < N ? A[c * N + k] : 0.0f;
    h[k] = c < D && k < N ? h_in[c * N + k] : 0.0f;
  }
  for (int64_t t0 = blockIdx.y * int64_t{kRun}; t0 < T; t0 += int64_t{gridDim.y} * kRun) {
    const int n = static_cast<int>(t0 + kRun < T ? kRun : T - t0);
    __syncthreads();
    for (int i = threadIdx.x; i < kRun * NM; i += blockDim.x) {
      const int q = i / NM, k = i % NM;
      cs[q][k] = q < n && k < N ? C[(t0 + q) * ldc + k] : 0.0f;
    }
    __syncthreads();
    if (c >= D) continue;
    for (int q = 0; q < n; ++q) {
      const int64_t t = t0 + q;
      const float s = static_cast<float>(S[t * D + c]);
      float acc = 0.0f;
#pragma unroll
      for (int k = 0; k < NM; ++k) acc += cs[q][k] * expf(a[k] * s) * h[k];
      y[t * D + c] += acc;
    }
  }
}

// Mamba-2: one 64-row x 64-channel tile of head h per block, 16 x 16 threads of 4 x 4
// outputs each: the tile's C rows and the head's state rows go through shared memory in
// k-chunks of 32 states, then each output is scaled by its row's decay and added to y.
constexpr int kIncRows = 64, kIncCols = 64, kIncK = 32;
__global__ void __launch_bounds__(256) incoming_mamba2_kernel(float* y, const float* C, int64_t ldc, const double* S,
                                                              const float* A, const float* h_in, int64_t T, int H,
                                                              int P, int N, int heads_per_group) {
  __shared__ float cs[kIncRows][kIncK + 1];
  __shared__ float hs[kIncCols][kIncK + 1];
  const int h = blockIdx.z, g = h / heads_per_group;
  const int64_t t0 = blockIdx.x * int64_t{kIncRows};
  const int p0 = blockIdx.y * kIncCols;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const float* Cg = C + int64_t{g} * N;
  const float* hh = h_in + int64_t{h} * P * N;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < N; k0 += kIncK) {
    for (int i = threadIdx.x; i < kIncRows * kIncK; i += blockDim.x) {
      const int r = i / kIncK, k = i % kIncK;
      const int64_t t = t0 + r;
      cs[r][k] = t < T && k0 + k < N ? Cg[t * ldc + k0 + k] : 0.0f;
      const int p = p0 + r;
      hs[r][k] = p < P && k0 + k < N ? hh[int64_t{p} * N + k0 + k] : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int k = 0; k < kIncK; ++k) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = cs[ty * 4 + i][k];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = hs[tx * 4 + j][k];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
  const int64_t D = int64_t{H} * P;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t t = t0 + ty * 4 + i;
    if (t >= T) continue;
    const float decay = expf(A[h] * static_cast<float>(S[t * H + h]));
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int p = p0 + tx * 4 + j;
      if (p < P) y[t * D + int64_t{h} * P + p] += decay * acc[i][j];
    }
  }
}

// Below this, expf underflows to exactly 0 (its smallest denormal result is near -103.97).
constexpr float kDeadExponent = -110.0f;

__global__ void live_rows_kernel(const double* S, int64_t T, int64_t W, const float* A, int64_t per_a,
                                 unsigned long long* out) {
  const int64_t w = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (w >= W) return;
  float a = A[w * per_a];
  for (int64_t k = 1; k < per_a; ++k) a = fmaxf(a, A[w * per_a + k]);
  // First row t with a * S[t, w] < kDeadExponent (T if none); the predicate is monotone in t.
  int64_t lo = 0, hi = T;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (a * static_cast<float>(S[mid * W + w]) < kDeadExponent) hi = mid;
    else lo = mid + 1;
  }
  atomicMax(out, static_cast<unsigned long long>(lo));
}

__global__ void row_offset_kernel(double* S, int64_t T, int64_t W, const double* offset) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < T * W; i += int64_t{gridDim.x} * blockDim.x)
    S[i] += offset[i % W];
}

template <class In>
__global__ void copy_rows_kernel(const In* in, int64_t ld, int64_t T, int64_t W, float* out) {
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y)
    for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < W; c += int64_t{gridDim.x} * blockDim.x)
      out[t * W + c] = ld_act(in, t * ld + c);
}

dim3 rows_grid(int64_t T, int64_t W) {
  const int64_t bx = (W + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(bx < 1024 ? bx : 1024), static_cast<unsigned>(T < 65535 ? T : 65535));
}

}  // namespace

void chain_state_prefix(const float* all, int S, int r, int64_t n, int64_t per, const float* carry, float* h_in,
                        cudaStream_t stream, int layer) {
  if (n == 0) return;
  chain_state_kernel<<<blocks_for(n), kThreads, 0, stream>>>(all, S, r, n, per, carry, h_in);
  check_launch("chain_state_prefix", layer, stream);
}

void sum_prefix(const double* all, int S, int r, int64_t n, const double* base, double* offset, cudaStream_t stream,
                int layer) {
  if (n == 0) return;
  sum_prefix_kernel<<<blocks_for(n), kThreads, 0, stream>>>(all, r, n, base, offset);
  check_launch("sum_prefix", layer, stream);
}

void scan_decay_mamba1(const float* A, const double* total, int64_t D, int64_t N, float* decay, cudaStream_t stream,
                       int layer) {
  if (D * N == 0) return;
  decay_kernel<<<blocks_for(D * N), kThreads, 0, stream>>>(A, 1, total, N, D * N, decay);
  check_launch("scan_decay_mamba1", layer, stream);
}

void scan_decay_mamba2(const float* A, const double* total, int64_t H, float* decay, cudaStream_t stream, int layer) {
  if (H == 0) return;
  decay_kernel<<<blocks_for(H), kThreads, 0, stream>>>(A, 1, total, 1, H, decay);
  check_launch("scan_decay_mamba2", layer, stream);
}

void add_incoming_state_mamba1(float* y, const float* C, int64_t ldc, const double* S, const float* A,
                               const float* h_in, int64_t T, int64_t D, int64_t N, cudaStream_t stream, int layer) {
  if (T * D == 0) return;
  if (N > 64) fail("add_incoming_state_mamba1 (layer ", layer, "): state size ", N, " is above the kernel's 64");
  const int64_t runs = (T + kRun - 1) / kRun;
  const dim3 grid(static_cast<unsigned>((D + 127) / 128), static_cast<unsigned>(runs < 4096 ? runs : 4096));
  const int n = static_cast<int>(N);
  if (N <= 16) incoming_mamba1_kernel<16><<<grid, 128, 0, stream>>>(y, C, ldc, S, A, h_in, T, D, n);
  else incoming_mamba1_kernel<64><<<grid, 128, 0, stream>>>(y, C, ldc, S, A, h_in, T, D, n);
  check_launch("add_incoming_state_mamba1", layer, stream);
}

void add_incoming_state_mamba2(float* y, const float* C, int64_t ldc, const double* S, const float* A,
                               const float* h_in, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                               cudaStream_t stream, int layer) {
  if (T * H * P == 0) return;
  if (H > 65535 || G <= 0 || H % G != 0)
    fail("add_incoming_state_mamba2 (layer ", layer, "): ", H, " heads in ", G, " groups");
  const dim3 grid(static_cast<unsigned>((T + kIncRows - 1) / kIncRows), static_cast<unsigned>((P + kIncCols - 1) / kIncCols),
                  static_cast<unsigned>(H));
  incoming_mamba2_kernel<<<grid, 256, 0, stream>>>(y, C, ldc, S, A, h_in, T, static_cast<int>(H), static_cast<int>(P),
                                                   static_cast<int>(N), static_cast<int>(H / G));
  check_launch("add_incoming_state_mamba2", layer, stream);
}

int64_t live_rows(const double* S, int64_t T, int64_t W, const float* A, int64_t per_a, unsigned long long* d,
                  cudaStream_t stream, int layer) {
  if (T * W == 0) return 0;
  check(cudaMemsetAsync(d, 0, sizeof *d, stream), "live_rows", layer);
  live_rows_kernel<<<static_cast<unsigned>((W + 127) / 128), 128, 0, stream>>>(S, T, W, A, per_a, d);
  check_launch("live_rows", layer, stream);
  unsigned long long h = 0;
  check(cudaMemcpyAsync(&h, d, sizeof h, cudaMemcpyDeviceToHost, stream), "live_rows (download)", layer);
  check(cudaStreamSynchronize(stream), "live_rows", layer);
  return static_cast<int64_t>(h);
}

void add_row_offset(double* S, int64_t T, int64_t W, const double* offset, cudaStream_t stream, int layer) {
  if (T * W == 0) return;
  row_offset_kernel<<<blocks_for(T * W), kThreads, 0, stream>>>(S, T, W, offset);
  check_launch("add_row_offset", layer, stream);
}

namespace {
template <class In>
void launch_copy_rows(const In* in, int64_t ld, int64_t T, int64_t W, float* out, cudaStream_t stream, int layer) {
  if (T * W == 0) return;
  copy_rows_kernel<<<rows_grid(T, W), kThreads, 0, stream>>>(in, ld, T, W, out);
  check_launch("copy_rows", layer, stream);
}
}  // namespace

void copy_rows(const float* in, int64_t ld, int64_t T, int64_t W, float* out, cudaStream_t stream, int layer) {
  launch_copy_rows(in, ld, T, W, out, stream, layer);
}

void copy_rows(const uint16_t* in, int64_t ld, int64_t T, int64_t W, float* out, cudaStream_t stream, int layer) {
  launch_copy_rows(in, ld, T, W, out, stream, layer);
}

}  // namespace latim::cuda
