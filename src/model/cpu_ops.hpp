// Elementwise and matrix building blocks of the CPU reference backend (fp32, OpenMP + BLAS).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

namespace latim::cpu {

// exp(x) for x <= 0, accurate to about 2 ulp, in plain arithmetic the compiler vectorises
// (std::exp is a scalar libm call). Arguments below -87 give 0: anything smaller than
// exp(-87) ~ 1.6e-38 would be a denormal, which costs 100x on some CPUs.
inline float exp_nonpositive(float x) {
  const bool underflow = x < -87.0f;
  x = underflow ? -87.0f : x;
  const float kMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float n = (x * 1.44269504089f + kMagic) - kMagic;
  const float g = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;  // Cody-Waite, |g| <= ln2/2
  float p = 1.0f / 720.0f;
  p = p * g + 1.0f / 120.0f;
  p = p * g + 1.0f / 24.0f;
  p = p * g + 1.0f / 6.0f;
  p = p * g + 0.5f;
  p = p * g + 1.0f;
  p = p * g + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return underflow ? 0.0f : p * scale;
}

// Flush denormal results and inputs to zero on this thread and on the threads it creates
// later (they inherit the floating-point environment). Decays multiplied along long spans
// reach the denormal range, where x86 cores can be 100x slower; such values are far below
// any score's precision.
void flush_denormals_to_zero();

// OpenBLAS chooses its kernels from the CPU's model number. A model newer than the library
// (a 5th-generation Xeon with Debian 12's OpenBLAS 0.3.21, say) falls back to the SSE3
// "Prescott" kernels, 2-4x slower than the AVX-512 ones on the same core. When that happened
// and the CPU has AVX-512 (or AVX2 and FMA), this switches to the SkylakeX (or Haswell)
// kernels, as OPENBLAS_CORETYPE would at start-up, and returns the name of the set OpenBLAS
// had picked; otherwise, or when OPENBLAS_CORETYPE is set (the user's choice), it changes
// nothing and returns "".
// Call it before any BLAS call and any thread.
std::string choose_blas_kernels();

// "OpenBLAS <kernel set>" (or "BLAS" for another library).
std::string blas_kernels();

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
