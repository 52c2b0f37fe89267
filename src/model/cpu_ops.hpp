// Elementwise and matrix building blocks of the CPU reference backend (fp32, OpenMP + BLAS).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace latim::cpu {

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }
// torch.nn.functional.softplus with beta = 1, threshold = 20.
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

// out[r, o] = sum_k in[r, k] * W[o, k] + bias[o]; in has leading dimension lda, out ldo.
// W is row-major [out_dim, in_dim] (PyTorch nn.Linear layout); bias may be null.
void linear(const float* in, int64_t rows, int64_t in_dim, int64_t lda, const float* W,
            int64_t out_dim, const float* bias, float* out, int64_t ldo);

// out[r, :] = in[r, :] / sqrt(mean(in[r, :]^2) + eps) * w
void rmsnorm_rows(const float* in, int64_t rows, int64_t dim, const float* w, double eps, float* out);

// Causal depthwise conv over `channels` columns of `in` (leading dimension lda), then the
// activation: out[t, c] = act(sum_s w[c, K-1-s] * in[t-s, c] + b[c]); b may be null.
void causal_conv(const float* in, int64_t T, int64_t channels, int64_t lda, const float* w,
                 int64_t K, const float* b, bool silu_activation, float* out);

}  // namespace latim::cpu
