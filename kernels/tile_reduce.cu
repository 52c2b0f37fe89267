// Device reductions of a tile's scores for the query plans (see tile_reduce.hpp).
#include <cfloat>
#include <cmath>

#include "cuda_check.hpp"
#include "tile_reduce.hpp"

namespace latim::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Sources of row r in the tile: columns [0, n_sources(r)).
__device__ __forceinline__ int64_t n_sources(int64_t i0, int64_t r, int64_t j0, int64_t nj) {
  const int64_t n = i0 + r - j0 + 1;
  return n < 0 ? 0 : (n > nj ? nj : n);
}

// One block per pool x pool block (grid-stride): every thread sums a strided share in fp64,
// then the block reduces in a fixed order, so the result does not vary from run to run.
__global__ void __launch_bounds__(kThreads) pool_kernel(const float* __restrict__ s, int64_t i0, int64_t ni, int64_t j0,
                                                         int64_t nj, int64_t P, int64_t nq, int64_t nblocks,
                                                         float* __restrict__ sum, float* __restrict__ mx) {
  __shared__ double w_acc[kWarps];
  __shared__ float w_best[kWarps];
  __shared__ int w_any[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t blk = blockIdx.x; blk < nblocks; blk += gridDim.x) {
    const int64_t ra = blk / nq * P, ca = blk % nq * P;
    const int64_t rb = ra + P < ni ? ra + P : ni, cb = ca + P < nj ? ca + P : nj;
    const int64_t w = cb - ca, n = (rb - ra) * w;
    double acc = 0.0;
    float best = -FLT_MAX;
    int any = 0;
    for (int64_t k = threadIdx.x; k < n; k += kThreads) {
      const int64_t r = ra + k / w, c = ca + k % w;
      if (j0 + c <= i0 + r) {
        const float v = s[r * nj + c];
        acc += v;
        best = fmaxf(best, v);
        any = 1;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      acc += __shfl_down_sync(0xffffffffu, acc, o);
      best = fmaxf(best, __shfl_down_sync(0xffffffffu, best, o));
      any |= __shfl_down_sync(0xffffffffu, any, o);
    }
    if (lane == 0) {
      w_acc[warp] = acc;
      w_best[warp] = best;
      w_any[warp] = any;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double a = 0.0;
      float b = -FLT_MAX;
      int y = 0;
      for (int k = 0; k < kWarps; ++k) {
        a += w_acc[k];
        b = fmaxf(b, w_best[k]);
        y |= w_any[k];
      }
      sum[blk] = y ? static_cast<float>(a) : NAN;
      mx[blk] = y ? b : NAN;
    }
    __syncthreads();
  }
}

// Scores as unsigned keys in the same order (negative values flipped; -0 is +0, as the host's
// comparisons have it).
__device__ __forceinline__ unsigned order_key(float v) {
  const unsigned u = __float_as_uint(v == 0.0f ? 0.0f : v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// One block per row (grid-stride). A radix select over the keys' four bytes finds the K-th
// best score t and how many of the K are equal to it; the block then writes the scores above
// t (in any order) and, of those equal to t, the ones with the largest columns.
__global__ void __launch_bounds__(kThreads) topk_kernel(const float* __restrict__ s, int64_t i0, int64_t ni, int64_t j0,
                                                         int64_t nj, int64_t K, float* __restrict__ val,
                                                         int32_t* __restrict__ col) {
  __shared__ unsigned hist[256];
  __shared__ unsigned sh_prefix, sh_k, sh_count;
  __shared__ unsigned w_count[kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t r = blockIdx.x; r < ni; r += gridDim.x) {
    const float* row = s + r * nj;
    const int64_t nv = n_sources(i0, r, j0, nj);
    float* ov = val + r * K;
    int32_t* oc = col + r * K;
    if (nv <= K) {  // all of them
      for (int64_t k = threadIdx.x; k < K; k += kThreads) {
        ov[k] = k < nv ? row[k] : NAN;
        oc[k] = k < nv ? static_cast<int32_t>(k) : -1;
      }
      continue;  // uniform across the block
    }
    unsigned prefix = 0, mask = 0, k = static_cast<unsigned>(K);
    for (int shift = 24; shift >= 0; shift -= 8) {
      hist[threadIdx.x] = 0;  // kThreads == 256 bins
      __syncthreads();
      for (int64_t c = threadIdx.x; c < nv; c += kThreads) {
        const unsigned key = order_key(row[c]);
        if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        unsigned above = 0;
        int bin = 255;
        for (; bin > 0 && above + hist[bin] < k; --bin) above += hist[bin];
        sh_k = k - above;
        sh_prefix = prefix | (static_cast<unsigned>(bin) << shift);
        sh_count = 0;
      }
      __syncthreads();
      k = sh_k;
      prefix = sh_prefix;
      mask |= 255u << shift;
    }
    // prefix is the K-th best key; k of the K are equal to it.
    const unsigned thr = prefix, need = k, first_eq = static_cast<unsigned>(K) - need;
    for (int64_t c = threadIdx.x; c < nv; c += kThreads) {
      const float v = row[c];
      if (order_key(v) > thr) {
        const unsigned p = atomicAdd(&sh_count, 1u);
        ov[p] = v;
        oc[p] = static_cast<int32_t>(c);
      }
    }
    unsigned taken = 0;
    for (int64_t top = nv - 1; top >= 0 && taken < need; top -= kThreads) {
      const int64_t c = top - threadIdx.x;
      const bool eq = c >= 0 && order_key(row[c]) == thr;
      const unsigned ballot = __ballot_sync(0xffffffffu, eq);
      if (lane == 0) w_count[warp] = __popc(ballot);
      __syncthreads();
      unsigned before = __popc(ballot & ((1u << lane) - 1u)), total = 0;
      for (int w = 0; w < kWarps; ++w) {
        before += w < warp ? w_count[w] : 0u;
        total += w_count[w];
      }
      if (eq && taken + before < need) {
        ov[first_eq + taken + before] = row[c];
        oc[first_eq + taken + before] = static_cast<int32_t>(c);
      }
      taken += total;
      __syncthreads();
    }
  }
}

__global__ void window_kernel(const float* __restrict__ s, int64_t i0, int64_t ni, int64_t j0, int64_t nj, int64_t W,
                              float* __restrict__ out) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < ni * W; k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = k / W, c = i0 + r - k % W - j0;
    out[k] = c >= 0 && c < n_sources(i0, r, j0, nj) ? s[r * nj + c] : NAN;
  }
}

unsigned grid_for(int64_t n) { return static_cast<unsigned>(n < 65535 * 8 ? (n > 0 ? n : 1) : 65535 * 8); }

}  // namespace

void tile_pool(const float* s, int64_t i0, int64_t ni, int64_t j0, int64_t nj, int64_t pool, float* sum, float* mx,
               cudaStream_t stream, int layer) {
  const int64_t nb = (ni + pool - 1) / pool, nq = (nj + pool - 1) / pool;
  if (nb * nq == 0) return;
  pool_kernel<<<grid_for(nb * nq), kThreads, 0, stream>>>(s, i0, ni, j0, nj, pool, nq, nb * nq, sum, mx);
  check_launch("tile_pool", layer, stream);
}

void tile_topk(const float* s, int64_t i0, int64_t ni, int64_t j0, int64_t nj, int64_t K, float* val, int32_t* col,
               cudaStream_t stream, int layer) {
  if (ni == 0 || K == 0) return;
  if (nj > INT32_MAX || K > INT32_MAX) fail("tile_topk (layer ", layer, "): a tile of ", nj, " columns is too wide");
  topk_kernel<<<grid_for(ni), kThreads, 0, stream>>>(s, i0, ni, j0, nj, K, val, col);
  check_launch("tile_topk", layer, stream);
}

void tile_window(const float* s, int64_t i0, int64_t ni, int64_t j0, int64_t nj, int64_t W, float* out,
                 cudaStream_t stream, int layer) {
  if (ni * W == 0) return;
  window_kernel<<<grid_for((ni * W + 255) / 256), 256, 0, stream>>>(s, i0, ni, j0, nj, W, out);
  check_launch("tile_window", layer, stream);
}

}  // namespace latim::cuda
