// Shared by the benchmarks: random models with the shapes of mamba-130m / mamba2-130m,
// random tokens, a wall clock and the peak host memory.
#pragma once
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "latim/model.hpp"

namespace latim::bench {

inline ModelConfig shape_130m(Family f, int layers, Activation act = Activation::SiLU) {
  ModelConfig c;
  c.family = f;
  c.source_format = "hf";
  c.d_model = 768;
  c.n_layer = layers;
  c.vocab_size = c.vocab_rows = 50280;
  c.d_inner = 1536;
  c.d_conv = 4;
  c.activation = act;
  if (f == Family::Mamba1) {
    c.d_state = 16;
    c.dt_rank = 48;
  } else {
    c.d_state = 128;
    c.n_heads = 24;
    c.head_dim = 64;
    c.n_groups = 1;
  }
  return c;
}

inline std::vector<float> randn(std::mt19937& g, int64_t n, float scale, float mean = 0.0f) {
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = d(g);
  return v;
}

// Weights scaled so activations stay O(1) and step sizes vary (dt bias around -3).
inline ModelWeights random_model(const ModelConfig& c, uint32_t seed) {
  std::mt19937 g(seed);
  ModelWeights m;
  m.config = c;
  const int64_t d = c.d_model, D = c.d_inner, N = c.d_state, K = c.d_conv;
  m.embedding = randn(g, c.vocab_rows * d, 1.0f);
  m.norm_f = randn(g, d, 0.1f, 1.0f);
  for (int64_t l = 0; l < c.n_layer; ++l) {
    LayerWeights w;
    w.norm = randn(g, d, 0.1f, 1.0f);
    w.in_proj = randn(g, c.in_proj_rows() * d, 1.0f / std::sqrt(float(d)));
    w.conv_w = randn(g, c.conv_channels() * K, 0.5f);
    w.conv_b = randn(g, c.conv_channels(), 0.1f);
    w.out_proj = randn(g, d * D, 1.0f / std::sqrt(float(D)));
    std::uniform_real_distribution<float> u(0.5f, 3.0f);
    if (c.family == Family::Mamba1) {
      w.x_proj = randn(g, c.x_proj_rows() * D, 1.0f / std::sqrt(float(D)));
      w.dt_proj = randn(g, D * c.dt_rank, 1.0f / std::sqrt(float(c.dt_rank)));
      w.dt_proj_b = randn(g, D, 0.5f, -3.0f);
      w.A.resize(D * N);
      for (int64_t k = 0; k < D * N; ++k) w.A[k] = -(1.0f + float(k % N));
      w.D_skip = randn(g, D, 0.5f, 1.0f);
    } else {
      w.dt_bias = randn(g, c.n_heads, 0.5f, -3.0f);
      w.A.resize(c.n_heads);
      for (auto& a : w.A) a = -u(g);
      w.D_skip = randn(g, c.n_heads, 0.5f, 1.0f);
      w.gated_norm = randn(g, D, 0.1f, 1.0f);
    }
    m.layers.push_back(std::move(w));
  }
  return m;
}

inline std::vector<int64_t> random_tokens(int64_t T, int64_t V, uint32_t seed = 7) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int64_t> d(0, V - 1);
  std::vector<int64_t> t(static_cast<std::size_t>(T));
  for (auto& x : t) x = d(g);
  return t;
}

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double peak_rss_gib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / (1024.0 * 1024.0);
}

}  // namespace latim::bench
