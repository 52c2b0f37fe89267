// Causal depthwise conv: one thread per (token, channel), 64-bit indexing throughout.
#include "causal_conv.hpp"
#include "cuda_check.hpp"

namespace latim::cuda {

namespace {

__global__ void causal_conv_kernel(const float* __restrict__ in, int64_t T, int64_t channels, int64_t lda,
                                   const float* __restrict__ w, int K, const float* __restrict__ b, bool silu,
                                   float* __restrict__ out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= T * channels) return;
  const int64_t t = idx / channels, c = idx % channels;
  float acc = b ? b[c] : 0.0f;
  for (int s = 0; s < K && s <= t; ++s) acc += w[c * K + (K - 1 - s)] * in[(t - s) * lda + c];
  if (silu) acc = acc / (1.0f + __expf(-acc));
  out[idx] = acc;
}

}  // namespace

void causal_conv(const float* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K, const float* b,
                 bool silu, float* out, cudaStream_t stream, int layer) {
  const int64_t n = T * channels;
  if (n == 0) return;
  constexpr int kThreads = 256;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  causal_conv_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(in, T, channels, lda, w, K, b, silu, out);
  check_launch("causal_conv", layer, stream);
}

}  // namespace latim::cuda
