// RMSNorm kernels; the sum of squares is reduced in fp64, as on the CPU.
//
// The reduction order is that of the original one-block-per-row kernels (256 threads, thread
// t summing elements t, t + 256, ... in turn, a xor-shuffle tree within each warp, then the 8
// warp sums in order), so the fp32 results keep their bits. The kernels reach it with 64
// threads per row (4 rows per block) that each load 4 consecutive values with one 16-byte
// access and keep the 4 partial sums of the 4 "virtual" threads those values belong to:
// row_sum below replays the original tree on them. Rows whose width or pointers are not
// 16-byte aligned take the same path with scalar accesses.
#include <cuda_bf16.h>

#include <type_traits>

#include "cuda_check.hpp"
#include "device_buffer.hpp"
#include "device_math.cuh"
#include "rmsnorm.hpp"

namespace latim::cuda {

namespace {

constexpr int kThreads = 256;                  // threads per block
constexpr int kOrder = 256;                    // threads per row of the order the sums keep
constexpr int kRowThreads = kOrder / 4;        // threads per row here: 4 values each
constexpr int kRows = kThreads / kRowThreads;  // rows per block

// The sum of the 4 virtual threads' partial sums s of every thread p < 64 of a row, in the
// order of the original block_sum: virtual lane l = 4 (p % 8) + i adds lanes l ^ 16, l ^ 8,
// l ^ 4 (threads p ^ 4, p ^ 2, p ^ 1, same i), then l ^ 2 and l ^ 1 (within the thread);
// virtual warp p / 8 leaves its sum in shared[p / 8] and the 8 warp sums are added in order.
// Every thread of the block calls it (it synchronises the block); shared: 8 doubles per row.
__device__ double row_sum(double (&s)[4], double* shared, int p) {
  for (int o = 4; o > 0; o >>= 1)
#pragma unroll
    for (int i = 0; i < 4; ++i) s[i] += __shfl_xor_sync(0xffffffffu, s[i], o);
  const double v = (s[0] + s[2]) + (s[1] + s[3]);
  __syncthreads();  // shared may still be read by a previous call
  if (p % 8 == 0) shared[p / 8] = v;
  __syncthreads();
  double t = 0.0;
  for (int w = 0; w < kOrder / 32; ++w) t += shared[w];
  return t;
}

// 4 values from p[k..k+3] (one 16-byte load when Vec; otherwise those below `end`, 0 above).
template <bool Vec, class T>  // T: float, or uint16_t (bf16 bits, widened)
__device__ __forceinline__ float4 load4(const T* p, int64_t k, int64_t end) {
  if constexpr (Vec) {
    return ld_act4(p, k);
  } else {
    return make_float4(ld_act(p, k), k + 1 < end ? ld_act(p, k + 1) : 0.0f, k + 2 < end ? ld_act(p, k + 2) : 0.0f,
                       k + 3 < end ? ld_act(p, k + 3) : 0.0f);
  }
}

template <bool Vec>
__device__ __forceinline__ void store4(float* p, int64_t k, int64_t end, float4 v) {
  if constexpr (Vec) {
    *reinterpret_cast<float4*>(p + k) = v;
  } else {
    p[k] = v.x;
    if (k + 1 < end) p[k + 1] = v.y;
    if (k + 2 < end) p[k + 2] = v.z;
    if (k + 3 < end) p[k + 3] = v.w;
  }
}

template <bool Vec>
__device__ __forceinline__ void store4_bf16(uint16_t* p, int64_t k, int64_t end, float4 v) {
  if constexpr (Vec) {
    *reinterpret_cast<uint2*>(p + k) = make_uint2(pack_bf16x2(v.x, v.y), pack_bf16x2(v.z, v.w));
  } else {
    p[k] = bf16_bits(v.x);
    if (k + 1 < end) p[k + 1] = bf16_bits(v.y);
    if (k + 2 < end) p[k + 2] = bf16_bits(v.z);
    if (k + 3 < end) p[k + 3] = bf16_bits(v.w);
  }
}

__device__ __forceinline__ float get(const float4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// s[i] += v_i^2 for the values of v below `end` (k is v.x's index).
__device__ __forceinline__ void add_squares(double (&s)[4], const float4& v, int64_t k, int64_t end) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
    if (k + i < end) s[i] += static_cast<double>(get(v, i)) * get(v, i);
}

// out = w * (x * inv) per value, as the original kernels round it.
__device__ __forceinline__ float4 scale4(const float* w, int64_t k, int64_t end, const float4& x, float inv) {
  float4 o;
  o.x = w[k] * (x.x * inv);
  o.y = k + 1 < end ? w[k + 1] * (x.y * inv) : 0.0f;
  o.z = k + 2 < end ? w[k + 2] * (x.z * inv) : 0.0f;
  o.w = k + 3 < end ? w[k + 3] * (x.w * inv) : 0.0f;
  return o;
}

// Rows of r (x <- x + o first when o is not null), normed into out and/or out16. Thread p of
// a row handles the values 4 p + 256 j + [0, 4) for j = 0, 1, ...; the first kCache steps
// stay in registers between the sum and the output.
template <bool Vec, int kCache>
__global__ void __launch_bounds__(kThreads, 4) rmsnorm_kernel(float* r, const float* __restrict__ o, int64_t rows, int64_t dim,
                               const float* __restrict__ w, double eps, float* __restrict__ out,
                               uint16_t* __restrict__ out16) {
  __shared__ double red[kRows][kOrder / 32];
  const int p = threadIdx.x % kRowThreads, rr = threadIdx.x / kRowThreads;
  const int64_t row = blockIdx.x * int64_t{kRows} + rr;
  const bool live = row < rows;
  float* x = r + row * dim;
  const float* ox = o ? o + row * dim : nullptr;
  const int64_t steps = (dim + kOrder - 1) / kOrder;
  auto value = [&](int64_t k) {  // x[k..k+3] after the residual add, which is stored here
    float4 v = load4<Vec>(x, k, dim);
    if (ox) {
      const float4 a = load4<Vec>(ox, k, dim);
      v.x += a.x;
      v.y += a.y;
      v.z += a.z;
      v.w += a.w;
      store4<Vec>(x, k, dim, v);
    }
    return v;
  };
  float4 cache[kCache];
  double s[4] = {0.0, 0.0, 0.0, 0.0};
#pragma unroll
  for (int j = 0; j < kCache; ++j) {
    const int64_t k = 4 * p + int64_t{kOrder} * j;
    if (live && j < steps && k < dim) {
      cache[j] = value(k);
      add_squares(s, cache[j], k, dim);
    }
  }
  for (int64_t j = kCache; j < steps; ++j) {
    const int64_t k = 4 * p + kOrder * j;
    if (live && k < dim) add_squares(s, value(k), k, dim);
  }
  const double ss = row_sum(s, red[rr], p);
  if (!live) return;
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + eps));
  auto emit = [&](int64_t k, const float4& v) {
    const float4 u = scale4(w, k, dim, v, inv);
    if (out) store4<Vec>(out + row * dim, k, dim, u);
    if (out16) store4_bf16<Vec>(out16 + row * dim, k, dim, u);
  };
#pragma unroll
  for (int j = 0; j < kCache; ++j) {
    const int64_t k = 4 * p + int64_t{kOrder} * j;
    if (j < steps && k < dim) emit(k, cache[j]);
  }
  for (int64_t j = kCache; j < steps; ++j) {
    const int64_t k = 4 * p + kOrder * j;
    if (k < dim) emit(k, load4<Vec>(x, k, dim));  // this thread's own values, already added
  }
}


// Rows of y, one group of D / G channels after the other; the layout of rmsnorm_kernel, with
// y * SiLU(z) kept in registers for the first kCache steps of each group (the gate itself,
// for the trace, is recomputed from z: the same bits, and only trace layers ask for it).
// kFast (a bf16 output alone, nothing for a trace): the gate with silu_fast.
// Y: float (y read, and written in place unless y16), or const uint16_t (bf16 y: y16 only).
template <bool Vec, int kCache, class Z, bool kFast, class Y>
__global__ void __launch_bounds__(kThreads, 3) gated_rmsnorm_kernel(Y* __restrict__ y, const Z* __restrict__ z,
                                                                    int64_t ldz, int64_t T,
                                     int64_t D, int64_t G, const float* __restrict__ w, double eps,
                                     bool norm_before_gate, float* __restrict__ gate_out,
                                     float* __restrict__ gamma_out, uint16_t* __restrict__ y16) {
  __shared__ double red[kRows][kOrder / 32];
  const int p = threadIdx.x % kRowThreads, rr = threadIdx.x / kRowThreads;
  const int64_t t = blockIdx.x * int64_t{kRows} + rr;
  const bool live = t < T;
  Y* yt = y + t * D;
  const Z* zt = z + t * ldz;
  const int64_t gs = D / G, steps = (gs + kOrder - 1) / kOrder;
  // y * gate at k..k+3, and s[i] += v_i^2 for v = y (norm before the gate) or y * gate.
  auto product = [&](int64_t k, int64_t end) {
    const float4 zv = load4<Vec>(zt, k, end);
    const float4 yv = load4<Vec>(yt, k, end), g = kFast ? silu4_fast(zv) : silu4(zv);
    return make_float4(yv.x * g.x, yv.y * g.y, yv.z * g.z, yv.w * g.w);
  };
  auto gated = [&](double(&s)[4], int64_t k, int64_t end) {
    const float4 yg = product(k, end);
    add_squares(s, norm_before_gate ? load4<Vec>(yt, k, end) : yg, k, end);
    return yg;
  };
  for (int64_t g = 0; g < G; ++g) {
    const int64_t k0 = g * gs, end = k0 + gs;
    float4 cache[kCache];
    double s[4] = {0.0, 0.0, 0.0, 0.0};
#pragma unroll
    for (int j = 0; j < kCache; ++j) {
      const int64_t k = k0 + 4 * p + int64_t{kOrder} * j;
      if (live && j < steps && k < end) cache[j] = gated(s, k, end);
    }
    for (int64_t j = kCache; j < steps; ++j) {
      const int64_t k = k0 + 4 * p + kOrder * j;
      if (live && k < end) gated(s, k, end);
    }
    const double ss = row_sum(s, red[rr], p);
    if (!live) continue;  // row_sum needs every thread: no early return before the last group
    const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(gs) + eps));
    auto emit = [&](int64_t k, const float4& yg) {
      float4 gamma, out;
      gamma.x = w[k] * inv;
      gamma.y = k + 1 < end ? w[k + 1] * inv : 0.0f;
      gamma.z = k + 2 < end ? w[k + 2] * inv : 0.0f;
      gamma.w = k + 3 < end ? w[k + 3] * inv : 0.0f;
      out.x = gamma.x * yg.x;
      out.y = gamma.y * yg.y;
      out.z = gamma.z * yg.z;
      out.w = gamma.w * yg.w;
      if (gate_out) store4<Vec>(gate_out + t * D, k, end, silu4(load4<Vec>(zt, k, end)));
      if (gamma_out) store4<Vec>(gamma_out + t * D, k, end, gamma);
      if constexpr (std::is_same_v<Y, float>) {
        if (y16) store4_bf16<Vec>(y16 + t * D, k, end, out);
        else store4<Vec>(yt, k, end, out);
      } else {
        store4_bf16<Vec>(y16 + t * D, k, end, out);
      }
    };
#pragma unroll
    for (int j = 0; j < kCache; ++j) {
      const int64_t k = k0 + 4 * p + int64_t{kOrder} * j;
      if (j < steps && k < end) emit(k, cache[j]);
    }
    for (int64_t j = kCache; j < steps; ++j) {
      const int64_t k = k0 + 4 * p + kOrder * j;
      if (k < end) emit(k, product(k, end));
    }
  }
}

// The same sums with one warp per row: lane l holds the 8 consecutive values 8 l + 256 j +
// [0, 8) of each step j, i.e. the partial sums s[i] of the virtual threads 8 l + i, whose
// virtual lanes are 8 (l % 4) + i in virtual warp l / 4. The original tree: xor 16 and 8 are
// lanes l ^ 2 and l ^ 1 (same i), xor 4, 2, 1 are within the lane, then the 8 virtual warps in
// order. No shared memory and no block barrier: each warp runs its rows on its own.
__device__ double warp_row_sum(double (&s)[8]) {
#pragma unroll
  for (int o = 2; o > 0; o >>= 1)
#pragma unroll
    for (int i = 0; i < 8; ++i) s[i] += __shfl_xor_sync(0xffffffffu, s[i], o);
  const double v = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
  double t = 0.0;
#pragma unroll
  for (int k = 0; k < 8; ++k) t += __shfl_sync(0xffffffffu, v, 4 * k);
  return t;
}

__device__ __forceinline__ void widen8(const uint4& u, float (&v)[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = widen_bf16x2(w[k]);
    v[2 * k] = f.x;
    v[2 * k + 1] = f.y;
  }
}

// gated_rmsnorm_kernel's path for a bf16 output alone (bf16 z, the fast gate; y bf16 or fp32)
// with one warp per row and 16-byte accesses: groups of 256 kSteps values (rows 16-byte
// aligned), the same bits.
constexpr int kWarpRows = kThreads / 32;  // rows per block
// The 8 values of y at p: bf16 (one 16-byte access) or fp32 (two).
__device__ __forceinline__ void load8(const uint16_t* p, float (&v)[8]) { widen8(__ldg(reinterpret_cast<const uint4*>(p)), v); }
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p)), b = __ldg(reinterpret_cast<const float4*>(p + 4));
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

template <int kSteps, class Y>  // Y: uint16_t (bf16 y) or float
__global__ void __launch_bounds__(kThreads) gated_rmsnorm_warp_kernel(const Y* __restrict__ y,
                                                                     const uint16_t* __restrict__ z, int64_t ldz,
                                                                     int64_t T, int64_t D, int64_t G,
                                                                     const float* __restrict__ w, double eps,
                                                                     bool norm_before_gate, uint16_t* __restrict__ y16) {
  const int lane = threadIdx.x & 31;
  const int64_t t = blockIdx.x * int64_t{kWarpRows} + (threadIdx.x >> 5);
  if (t >= T) return;  // whole warps: nothing below synchronises more than the warp
  const int64_t gs = D / G;
  for (int64_t g = 0; g < G; ++g) {
    const int64_t k0 = g * gs + 8 * lane;
    float yv[kSteps][8];
    uint4 zv[kSteps];
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      load8(y + t * D + k0 + kOrder * j, yv[j]);
      zv[j] = __ldg(reinterpret_cast<const uint4*>(z + t * ldz + k0 + kOrder * j));
    }
    float yg[kSteps][8];
    double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const float(&a)[8] = yv[j];
      float b[8];
      widen8(zv[j], b);
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        yg[j][i] = a[i] * silu_fast(b[i]);
        const float v = norm_before_gate ? a[i] : yg[j][i];
        s[i] += static_cast<double>(v) * v;
      }
    }
    const double ss = warp_row_sum(s);
    const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(gs) + eps));
#pragma unroll
    for (int j = 0; j < kSteps; ++j) {
      const int64_t k = k0 + kOrder * j;
      const float4 w0 = __ldg(reinterpret_cast<const float4*>(w + k)), w1 = __ldg(reinterpret_cast<const float4*>(w + k + 4));
      const float gm[8] = {w0.x * inv, w0.y * inv, w0.z * inv, w0.w * inv, w1.x * inv, w1.y * inv, w1.z * inv, w1.w * inv};
      *reinterpret_cast<uint4*>(y16 + t * D + k) =
          make_uint4(pack_bf16x2(gm[0] * yg[j][0], gm[1] * yg[j][1]), pack_bf16x2(gm[2] * yg[j][2], gm[3] * yg[j][3]),
                     pack_bf16x2(gm[4] * yg[j][4], gm[5] * yg[j][5]), pack_bf16x2(gm[6] * yg[j][6], gm[7] * yg[j][7]));
    }
  }
}

// rmsnorm_kernel with one warp per row (widths of 256 kSteps values, everything 16-byte
// aligned): lane l adds, sums and scales the values 8 l + 256 j + [0, 8), the same bits.
template <int kSteps>
__global__ void __launch_bounds__(kThreads) rmsnorm_warp_kernel(float* r, const float* __restrict__ o, int64_t rows,
                                                               int64_t dim, const float* __restrict__ w, double eps,
                                                               float* __restrict__ out, uint16_t* __restrict__ out16) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t{kWarpRows} + (threadIdx.x >> 5);
  if (row >= rows) return;
  float* x = r + row * dim + 8 * lane;
  const float* ox = o ? o + row * dim + 8 * lane : nullptr;
  float4 v[kSteps][2];
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    v[j][0] = *reinterpret_cast<const float4*>(x + kOrder * j);
    v[j][1] = *reinterpret_cast<const float4*>(x + kOrder * j + 4);
  }
  if (ox) {
#pragma unroll
    for (int j = 0; j < kSteps; ++j)
#pragma unroll
      for (int hq = 0; hq < 2; ++hq) {
        const float4 a = __ldg(reinterpret_cast<const float4*>(ox + kOrder * j + 4 * hq));
        v[j][hq].x += a.x;
        v[j][hq].y += a.y;
        v[j][hq].z += a.z;
        v[j][hq].w += a.w;
        *reinterpret_cast<float4*>(x + kOrder * j + 4 * hq) = v[j][hq];
      }
  }
  double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
#pragma unroll
  for (int j = 0; j < kSteps; ++j)
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float e = get(v[j][i / 4], i % 4);
      s[i] += static_cast<double>(e) * e;
    }
  const double ss = warp_row_sum(s);
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + eps));
#pragma unroll
  for (int j = 0; j < kSteps; ++j) {
    const int64_t k = 8 * lane + kOrder * j;
    float4 u[2];
#pragma unroll
    for (int hq = 0; hq < 2; ++hq) {
      const float4 wv = __ldg(reinterpret_cast<const float4*>(w + k + 4 * hq));
      u[hq] = make_float4(wv.x * (v[j][hq].x * inv), wv.y * (v[j][hq].y * inv), wv.z * (v[j][hq].z * inv),
                          wv.w * (v[j][hq].w * inv));
    }
    if (out) {
      *reinterpret_cast<float4*>(out + row * dim + k) = u[0];
      *reinterpret_cast<float4*>(out + row * dim + k + 4) = u[1];
    }
    if (out16)
      *reinterpret_cast<uint4*>(out16 + row * dim + k) =
          make_uint4(pack_bf16x2(u[0].x, u[0].y), pack_bf16x2(u[0].z, u[0].w), pack_bf16x2(u[1].x, u[1].y),
                     pack_bf16x2(u[1].z, u[1].w));
  }
}

// Calls go(integral_constant<int, steps>) for the warp-per-row kernels (1 <= steps <= 8).
template <class F>
void with_steps(int64_t steps, const F& go) {
  switch (steps) {
    case 1: go(std::integral_constant<int, 1>{}); break;
    case 2: go(std::integral_constant<int, 2>{}); break;
    case 3: go(std::integral_constant<int, 3>{}); break;
    case 4: go(std::integral_constant<int, 4>{}); break;
    case 5: go(std::integral_constant<int, 5>{}); break;
    case 6: go(std::integral_constant<int, 6>{}); break;
    case 7: go(std::integral_constant<int, 7>{}); break;
    default: go(std::integral_constant<int, 8>{}); break;
  }
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>((rows + kRows - 1) / kRows); }

// Calls launch(vec, cache) with compile-time constants: the register cache holds as many
// 4-value steps as a row needs, up to 6 (rows of up to 1536 values stay in registers; longer
// ones read their tail twice), so that 4 blocks of 256 threads fit on a multiprocessor.
template <class F>
void dispatch(bool vec, int64_t steps, const F& launch) {
  const auto with = [&](auto vec_c) {
    if (steps <= 2) launch(vec_c, std::integral_constant<int, 2>{});
    else if (steps <= 4) launch(vec_c, std::integral_constant<int, 4>{});
    else launch(vec_c, std::integral_constant<int, 6>{});
  };
  if (vec) with(std::true_type{});
  else with(std::false_type{});
}

}  // namespace

void residual_rmsnorm(float* r, const float* o, int64_t rows, int64_t dim, const float* w, double eps, float* out,
                      uint16_t* out16, cudaStream_t stream, int layer) {
  if (rows == 0 || dim == 0) return;
  const bool vec = dim % 4 == 0 && aligned16(r) && (!o || aligned16(o)) && (!out || aligned16(out)) &&
                   (!out16 || aligned8(out16));
  const int64_t steps = (dim + kOrder - 1) / kOrder;
  if (vec && dim % kOrder == 0 && steps <= 8 && aligned16(w) && (!out16 || aligned16(out16))) {  // a warp per row
    const auto go = [&](auto st) {
      rmsnorm_warp_kernel<decltype(st)::value><<<static_cast<unsigned>((rows + kWarpRows - 1) / kWarpRows), kThreads, 0,
                                                 stream>>>(r, o, rows, dim, w, eps, out, out16);
    };
    with_steps(steps, go);
    check_launch(o ? "residual_rmsnorm" : "rmsnorm_rows", layer, stream);
    return;
  }
  const auto launch = [&](auto vec_c, auto cache_c) {
    rmsnorm_kernel<decltype(vec_c)::value, decltype(cache_c)::value>
        <<<row_blocks(rows), kThreads, 0, stream>>>(r, o, rows, dim, w, eps, out, out16);
  };
  dispatch(vec, steps, launch);
  check_launch(o ? "residual_rmsnorm" : "rmsnorm_rows", layer, stream);
}

void rmsnorm_rows(const float* in, int64_t rows, int64_t dim, const float* w, double eps, float* out,
                  cudaStream_t stream, int layer) {
  // Without a residual the kernel only reads its first argument.
  residual_rmsnorm(const_cast<float*>(in), nullptr, rows, dim, w, eps, out, nullptr, stream, layer);
}

namespace {
template <class Y, class Z>
void launch_gated(Y* y, const Z* z, int64_t ldz, int64_t T, int64_t D, int64_t G, const float* w, double eps,
                  bool norm_before_gate, float* gate_out, float* gamma_out, uint16_t* y16, cudaStream_t stream,
                  int layer) {
  if (T == 0 || D == 0) return;
  const bool vec = (D / G) % 4 == 0 && D % 4 == 0 && ldz % 4 == 0 &&
                   reinterpret_cast<uintptr_t>(y) % (4 * sizeof(Y)) == 0 &&
                   reinterpret_cast<uintptr_t>(z) % (4 * sizeof(Z)) == 0 && (!gate_out || aligned16(gate_out)) &&
                   (!gamma_out || aligned16(gamma_out)) && (!y16 || aligned8(y16));
  const int64_t steps = (D / G + kOrder - 1) / kOrder;
  const auto launch = [&](auto vec_c, auto cache_c) {
    const auto go = [&](auto fast) {
      gated_rmsnorm_kernel<decltype(vec_c)::value, decltype(cache_c)::value, Z, decltype(fast)::value, Y>
          <<<row_blocks(T), kThreads, 0, stream>>>(y, z, ldz, T, D, G, w, eps, norm_before_gate, gate_out, gamma_out,
                                                   y16);
    };
    if (y16 && !gate_out && !gamma_out) go(std::true_type{});
    else go(std::false_type{});
  };
  dispatch(vec, steps, launch);
  check_launch("gated_rmsnorm", layer, stream);
}
}  // namespace

void gated_rmsnorm(float* y, const float* z, int64_t ldz, int64_t T, int64_t D, int64_t G, const float* w,
                   double eps, bool norm_before_gate, float* gate_out, float* gamma_out, uint16_t* y16,
                   cudaStream_t stream, int layer) {
  launch_gated(y, z, ldz, T, D, G, w, eps, norm_before_gate, gate_out, gamma_out, y16, stream, layer);
}
namespace {
// One warp per row for a bf16 output alone, where groups are whole multiples of 256 values,
// up to 2048, and rows and the weight are 16-byte aligned; returns false elsewhere.
template <class Y>
bool gated_warp_rows(const Y* y, const uint16_t* z, int64_t ldz, int64_t T, int64_t D, int64_t G, const float* w,
                     double eps, bool norm_before_gate, uint16_t* y16, cudaStream_t stream, int layer) {
  const int64_t gs = D / G;
  if (!(gs % kOrder == 0 && gs / kOrder <= 8 && D % 8 == 0 && ldz % 8 == 0 && aligned16(y) && aligned16(z) &&
        aligned16(w) && aligned16(y16)))
    return false;
  const auto go = [&](auto steps) {
    gated_rmsnorm_warp_kernel<decltype(steps)::value, Y>
        <<<static_cast<unsigned>((T + kWarpRows - 1) / kWarpRows), kThreads, 0, stream>>>(y, z, ldz, T, D, G, w, eps,
                                                                                           norm_before_gate, y16);
  };
  with_steps(gs / kOrder, go);
  check_launch("gated_rmsnorm", layer, stream);
  return true;
}
}  // namespace

void gated_rmsnorm(float* y, const uint16_t* z, int64_t ldz, int64_t T, int64_t D, int64_t G, const float* w,
                   double eps, bool norm_before_gate, float* gate_out, float* gamma_out, uint16_t* y16,
                   cudaStream_t stream, int layer) {
  if (T > 0 && D > 0 && y16 && !gate_out && !gamma_out &&
      gated_warp_rows<float>(y, z, ldz, T, D, G, w, eps, norm_before_gate, y16, stream, layer))
    return;
  launch_gated(y, z, ldz, T, D, G, w, eps, norm_before_gate, gate_out, gamma_out, y16, stream, layer);
}

void gated_rmsnorm(const uint16_t* y, const uint16_t* z, int64_t ldz, int64_t T, int64_t D, int64_t G,
                   const float* w, double eps, bool norm_before_gate, uint16_t* y16, cudaStream_t stream, int layer) {
  if (!y16) fail("gated_rmsnorm (layer ", layer, "): internal: bf16 y needs a bf16 output");
  if (T == 0 || D == 0) return;
  if (gated_warp_rows<uint16_t>(y, z, ldz, T, D, G, w, eps, norm_before_gate, y16, stream, layer)) return;
  launch_gated(y, z, ldz, T, D, G, w, eps, norm_before_gate, nullptr, nullptr, y16, stream, layer);
}

}  // namespace latim::cuda
