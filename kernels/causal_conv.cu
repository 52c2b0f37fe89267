// Causal depthwise conv: a thread owns one channel and a run of consecutive positions, keeping
// the K-1 previous inputs in registers, so each input is read about once. 64-bit indexing.
// Inputs fp32 or bf16 (widened exactly), outputs fp32 or bf16.
#include <type_traits>

#include "causal_conv.hpp"
#include "cuda_check.hpp"
#include "device_math.cuh"

namespace latim::cuda {

namespace {

constexpr int kRun = 8;      // positions per thread
constexpr int kMaxK = 8;     // widest conv kept in registers
constexpr int kThreads = 128;

__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(uint16_t* p, float v) { *p = bf16_bits(v); }

template <int KM, class In, class Out>
__global__ void causal_conv_kernel(const In* __restrict__ in, int64_t T, int64_t channels, int64_t lda,
                                   const float* __restrict__ w, int K, const float* __restrict__ b, bool act,
                                   const float* __restrict__ halo, Out* __restrict__ out) {
  const int64_t c = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  if (c >= channels) return;
  float tap[KM];  // tap[s] multiplies the input s steps back
#pragma unroll
  for (int s = 0; s < KM; ++s) tap[s] = s < K ? w[c * K + (K - 1 - s)] : 0.0f;
  const float bias = b ? b[c] : 0.0f;
  const int64_t runs = (T + kRun - 1) / kRun;
  for (int64_t r = blockIdx.y; r < runs; r += gridDim.y) {
    const int64_t t0 = r * kRun;
    float win[KM];  // win[s] = in[t - s] for the current t
#pragma unroll
    for (int s = 1; s < KM; ++s)
      win[s] = !(s < K)     ? 0.0f
               : t0 - s >= 0 ? ld_act(in, (t0 - s) * lda + c)
               : halo        ? halo[(K - 1 + t0 - s) * channels + c]
                             : 0.0f;
    const int n = static_cast<int>(T - t0 < kRun ? T - t0 : kRun);
    // The run's inputs first, all loads in flight at once; then the same sums as before.
    float x[kRun];
#pragma unroll
    for (int q = 0; q < kRun; ++q) x[q] = q < n ? ld_act(in, (t0 + q) * lda + c) : 0.0f;
#pragma unroll
    for (int q = 0; q < kRun; ++q) {
      if (q >= n) break;
      const int64_t t = t0 + q;
      win[0] = x[q];
      float acc = bias;
#pragma unroll
      for (int s = 0; s < KM; ++s) acc += tap[s] * win[s];
      // A bf16 output takes the fast SiLU (a few fp32 ulps, far below bf16's rounding); an
      // fp32 output the CPU reference's formula.
      if (act) acc = std::is_same_v<Out, float> ? silu(acc) : silu_fast(acc);
      put(out + t * channels + c, acc);
#pragma unroll
      for (int s = KM - 1; s > 0; --s) win[s] = win[s - 1];
    }
  }
}

// The bf16-to-bf16 conv with 2 channels per thread (4-byte accesses of bf16 pairs): the
// same sums in the same order as causal_conv_kernel, so the same bits, with half its
// address arithmetic and memory instructions. Runs of kPairRun positions: the K - 1 inputs
// before a run are read again by its thread, so longer runs read less twice. (H100, bf16
// forward at 64K, Mamba-2 130m: runs of 16 1,493,345-1,496,131 -> 1,501,136-1,502,104
// tok/s against runs of 8; 32 and 4, and 8 channels per thread in 16-byte accesses, were
// slower.)
constexpr int kPairRun = 16;
template <int KM>
__global__ void causal_conv_bf16x2_kernel(const uint16_t* __restrict__ in, int64_t T, int64_t channels,
                                          int64_t lda, const float* __restrict__ w, int K,
                                          const float* __restrict__ b, bool act, const float* __restrict__ halo,
                                          uint16_t* __restrict__ out) {
  const int64_t c = 2 * (blockIdx.x * int64_t{kThreads} + threadIdx.x);
  if (c >= channels) return;
  float tap[2][KM];
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int s = 0; s < KM; ++s) tap[j][s] = s < K ? w[(c + j) * K + (K - 1 - s)] : 0.0f;
  const float bias[2] = {b ? b[c] : 0.0f, b ? b[c + 1] : 0.0f};
  const int64_t runs = (T + kPairRun - 1) / kPairRun;
  for (int64_t r = blockIdx.y; r < runs; r += gridDim.y) {
    const int64_t t0 = r * kPairRun;
    float2 win[KM];
#pragma unroll
    for (int s = 1; s < KM; ++s)
      win[s] = !(s < K)     ? make_float2(0.0f, 0.0f)
               : t0 - s >= 0 ? widen_bf16x2(*reinterpret_cast<const uint32_t*>(in + (t0 - s) * lda + c))
               : halo        ? *reinterpret_cast<const float2*>(halo + (K - 1 + t0 - s) * channels + c)
                             : make_float2(0.0f, 0.0f);
    const int n = static_cast<int>(T - t0 < kPairRun ? T - t0 : kPairRun);
    uint32_t x[kPairRun];
#pragma unroll
    for (int q = 0; q < kPairRun; ++q) x[q] = q < n ? *reinterpret_cast<const uint32_t*>(in + (t0 + q) * lda + c) : 0u;
#pragma unroll
    for (int q = 0; q < kPairRun; ++q) {
      if (q >= n) break;
      win[0] = widen_bf16x2(x[q]);
      *reinterpret_cast<uint32_t*>(out + (t0 + q) * channels + c) = conv_pair_bf16(tap, bias[0], bias[1], win, act);
#pragma unroll
      for (int s = KM - 1; s > 0; --s) win[s] = win[s - 1];
    }
  }
}

}  // namespace

void causal_conv(const float* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K, const float* b,
                 bool silu, float* out, cudaStream_t stream, int layer) {
  causal_conv_with_halo(in, T, channels, lda, w, K, b, silu, nullptr, out, stream, layer);
}

namespace {
template <class In, class Out>
void launch_conv(const In* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K, const float* b,
                 bool silu, const float* halo, Out* out, cudaStream_t stream, int layer) {
  if (T * channels == 0) return;
  if (K > kMaxK) fail("causal_conv (layer ", layer, "): conv width ", K, " is above the CUDA kernel's limit of ", kMaxK);
  const int64_t runs = (T + kRun - 1) / kRun;
  const dim3 grid(static_cast<unsigned>((channels + kThreads - 1) / kThreads),
                  static_cast<unsigned>(runs < 65535 ? runs : 65535));
  if (K <= 4) causal_conv_kernel<4><<<grid, kThreads, 0, stream>>>(in, T, channels, lda, w, K, b, silu, halo, out);
  else causal_conv_kernel<kMaxK><<<grid, kThreads, 0, stream>>>(in, T, channels, lda, w, K, b, silu, halo, out);
  check_launch("causal_conv", layer, stream);
}
}  // namespace

void causal_conv_with_halo(const float* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K,
                           const float* b, bool silu, const float* halo, float* out, cudaStream_t stream, int layer) {
  launch_conv(in, T, channels, lda, w, K, b, silu, halo, out, stream, layer);
}

void causal_conv_with_halo(const uint16_t* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K,
                           const float* b, bool silu, const float* halo, float* out, cudaStream_t stream, int layer) {
  launch_conv(in, T, channels, lda, w, K, b, silu, halo, out, stream, layer);
}

void causal_conv_with_halo(const uint16_t* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K,
                           const float* b, bool silu, const float* halo, uint16_t* out, cudaStream_t stream,
                           int layer) {
  const auto al = [](const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; };
  if (T * channels == 0 || channels % 2 || lda % 2 || !al(in, 4) || !al(out, 4) || (halo && !al(halo, 8)) ||
      K > kMaxK) {
    launch_conv(in, T, channels, lda, w, K, b, silu, halo, out, stream, layer);
    return;
  }
  const int64_t runs = (T + kPairRun - 1) / kPairRun, threads = channels / 2;
  const dim3 grid(static_cast<unsigned>((threads + kThreads - 1) / kThreads),
                  static_cast<unsigned>(runs < 65535 ? runs : 65535));
  if (K <= 4)
    causal_conv_bf16x2_kernel<4><<<grid, kThreads, 0, stream>>>(in, T, channels, lda, w, K, b, silu, halo, out);
  else
    causal_conv_bf16x2_kernel<kMaxK><<<grid, kThreads, 0, stream>>>(in, T, channels, lda, w, K, b, silu, halo, out);
  check_launch("causal_conv", layer, stream);
}

}  // namespace latim::cuda
