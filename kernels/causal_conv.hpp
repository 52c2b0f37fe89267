// Causal depthwise convolution over the sequence, with optional SiLU (device pointers).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

// out[t, c] = act(sum_s w[c, K-1-s] * in[t-s, c] + b[c]) for t in [0, T), c in [0, channels).
// `in` has leading dimension lda; `out` is dense [T, channels]; b may be null.
void causal_conv(const float* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K,
                 const float* b, bool silu, float* out, cudaStream_t stream, int layer);

// The same for a slice of a longer sequence: halo ([K-1, channels], dense) holds the K-1
// inputs before in[0] (null: zeros).
void causal_conv_with_halo(const float* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K,
                           const float* b, bool silu, const float* halo, float* out, cudaStream_t stream, int layer);
// The same on bf16 inputs (bf16 bits; the bf16 mode's in_proj output): each input is widened
// to fp32 exactly, so the result has the bits the fp32 kernel gives on the rounded inputs.
void causal_conv_with_halo(const uint16_t* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K,
                           const float* b, bool silu, const float* halo, float* out, cudaStream_t stream, int layer);
// And with the output rounded to bf16 as well (the bf16 mode's untraced layers, whose conv
// output only bf16 readers take).
void causal_conv_with_halo(const uint16_t* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K,
                           const float* b, bool silu, const float* halo, uint16_t* out, cudaStream_t stream,
                           int layer);
}  // namespace latim::cuda
