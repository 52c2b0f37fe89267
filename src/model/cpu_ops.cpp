// CPU building blocks: matrix products through BLAS, the rest as OpenMP loops over rows.
#include "model/cpu_ops.hpp"

#include <cblas.h>
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#include <pmmintrin.h>
#endif

namespace latim::cpu {

void flush_denormals_to_zero() {
#if defined(__x86_64__) || defined(__i386__)
  _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
  _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
#endif
}

namespace {

// An OpenBLAS function looked up at run time: absent from other BLAS libraries and from
// OpenBLAS builds for one CPU, where there is nothing to choose.
template <class F>
F blas_symbol(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_DEFAULT, name));
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

}  // namespace

std::string blas_kernels() {
  const auto name = blas_symbol<char* (*)()>("openblas_get_corename");
  return name ? std::string("OpenBLAS ") + name() : std::string("BLAS");
}

std::string choose_blas_kernels() {
  if (std::getenv("OPENBLAS_CORETYPE")) return {};  // the user's choice (or ours, made already)
  const auto name = blas_symbol<char* (*)()>("openblas_get_corename");
  const auto quit = blas_symbol<void (*)()>("gotoblas_dynamic_quit");
  const auto init = blas_symbol<void (*)()>("gotoblas_dynamic_init");
  if (!name || !quit || !init) return {};
  const std::string before = name();
  static const char* const kOlder[] = {"prescott", "core2",     "penryn",   "dunnington", "nehalem", "atom",
                                       "sandybridge", "unknown", "katmai",   "coppermine", "northwood", "banias"};
  if (std::find(std::begin(kOlder), std::end(kOlder), lower(before)) == std::end(kOlder)) return {};
  const char* want = nullptr;
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd"))
    want = "SkylakeX";
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    want = "Haswell";
#endif
  if (!want) return {};
  // What OpenBLAS's own start-up does with OPENBLAS_CORETYPE set: forget the kernel table,
  // pick the named one and initialise its parameters. No BLAS call has run yet, so no buffer
  // was sized for the old table.
  setenv("OPENBLAS_CORETYPE", want, 1);
  quit();
  init();
  return before;
}

void linear(const float* in, int64_t rows, int64_t in_dim, int64_t lda, const float* W,
            int64_t out_dim, const float* bias, float* out, int64_t ldo) {
  if (rows == 0 || out_dim == 0) return;
  if (bias) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out_dim; ++o) out[r * ldo + o] = bias[o];
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(out_dim),
              static_cast<int>(in_dim), 1.0f, in, static_cast<int>(lda), W, static_cast<int>(in_dim),
              bias ? 1.0f : 0.0f, out, static_cast<int>(ldo));
}

void rmsnorm_rows(const float* in, int64_t rows, int64_t dim, const float* w, double eps, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = in + r * dim;
    double ss = 0.0;
    for (int64_t k = 0; k < dim; ++k) ss += static_cast<double>(x[k]) * x[k];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    float* y = out + r * dim;
    for (int64_t k = 0; k < dim; ++k) y[k] = w[k] * (x[k] * inv);
  }
}

void causal_conv(const float* in, int64_t T, int64_t channels, int64_t lda, const float* w,
                 int64_t K, const float* b, bool silu_activation, float* out) {
  // taps[s, c] multiplies the token s steps back; laid out so the channel loop is contiguous.
  std::vector<float> taps(static_cast<std::size_t>(K * channels));
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t s = 0; s < K; ++s) taps[s * channels + c] = w[c * K + (K - 1 - s)];
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    float* o = out + t * channels;
    for (int64_t c = 0; c < channels; ++c) o[c] = b ? b[c] : 0.0f;
    const int64_t smax = std::min<int64_t>(K - 1, t);
    for (int64_t s = 0; s <= smax; ++s) {
      const float* src = in + (t - s) * lda;
      const float* tap = taps.data() + s * channels;
      for (int64_t c = 0; c < channels; ++c) o[c] += tap[c] * src[c];
    }
    if (silu_activation)
      for (int64_t c = 0; c < channels; ++c) o[c] = silu(o[c]);
  }
}

}  // namespace latim::cpu
