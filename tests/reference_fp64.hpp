// The fp64 reference of one pair's contribution T_i(x_j) (latim-method.md §3), the
// normalised error used to compare backends, and an observer that records a forward pass.
// Shared by the CUDA tests and cuda_bench; plain C++, no CUDA.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "latim/forward.hpp"
#include "latim/latim.hpp"

namespace latim::reference {

// max |a - b| / max |b| over the entries, NaN patterns required to match (else infinity).
template <class A, class B>
double norm_error(const A& a, const B& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = a[i], y = b[i];
    if (std::isnan(x) || std::isnan(y)) {
      if (std::isnan(x) != std::isnan(y)) return INFINITY;
      continue;
    }
    num = std::max(num, std::abs(x - y));
    den = std::max(den, std::abs(y));
  }
  return den > 0 ? num / den : num;
}

// Keeps the residual after every layer and the traces of layers [0, trace_layers).
struct Recorder : LayerObserver {
  static constexpr int kAll = 1 << 30;
  int trace_layers = 0;
  bool wants_trace(int layer) const override { return layer < trace_layers; }
  void on_layer(int layer, const LayerWeights&, const LayerTrace* tr, const std::vector<float>& r) override {
    residual.resize(layer + 1);
    trace.resize(layer + 1);
    residual[layer] = r;
    if (tr) trace[layer] = *tr;
  }
  std::vector<std::vector<float>> residual;
  std::vector<LayerTrace> trace;
};

inline float round_mantissa(float x, int keep_bits) {  // round to nearest even, keeping `keep_bits` mantissa bits
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const int drop = 23 - keep_bits;
  const uint32_t half = 1u << (drop - 1), lsb = (u >> drop) & 1u;
  u = (u + half - 1 + lsb) & ~((1u << drop) - 1);
  float y;
  std::memcpy(&y, &u, 4);
  return y;
}

// T_i(x_j) in fp64 straight from latim-method.md §3; `bits` > 0 rounds u and W_out to that
// many mantissa bits first (7: bf16, 10: tf32), the plain low-precision implementation.
inline std::vector<double> reference_contribution(const LayerFactors& f, int64_t i, int64_t j, int bits) {
  const ModelConfig& c = *f.config;
  const LayerWeights& w = *f.weights;
  const LayerTrace& tr = *f.trace;
  const int64_t D = c.d_inner, d = c.d_model, K = c.d_conv, N = c.d_state;
  std::vector<double> u(D, 0.0);
  for (int64_t ch = 0; ch < D; ++ch) {
    auto tap = [&](int64_t k) {
      double pre = static_cast<double>(w.conv_w[ch * K + K - 1 - k]) * tr.v[j * D + ch];
      if (k == 0 && !w.conv_b.empty()) pre += w.conv_b[ch];
      return c.activation == Activation::SiLU ? pre / (1.0 + std::exp(-pre)) : pre;
    };
    auto M = [&](int64_t l) {
      if (c.family == Family::Mamba1) {
        double s = 0.0;
        for (int64_t n = 0; n < N; ++n)
          s += static_cast<double>(tr.C[i * N + n]) * tr.B[l * N + n] *
               std::exp(static_cast<double>(w.A[ch * N + n]) * (tr.S[i * D + ch] - tr.S[l * D + ch]));
        return s * tr.delta[l * D + ch];
      }
      const int64_t H = c.n_heads, h = ch / c.head_dim, g = h / (H / c.n_groups), GN = c.n_groups * N;
      double cb = 0.0;
      for (int64_t n = 0; n < N; ++n) cb += static_cast<double>(tr.C[i * GN + g * N + n]) * tr.B[l * GN + g * N + n];
      return cb * std::exp(static_cast<double>(w.A[h]) * (tr.S[i * H + h] - tr.S[l * H + h])) * tr.delta[l * H + h];
    };
    double s = 0.0;
    for (int64_t l = j; l <= std::min(i, j + K - 1); ++l) s += M(l) * tap(l - j);
    if (i - j < K) s += (c.family == Family::Mamba1 ? w.D_skip[ch] : w.D_skip[ch / c.head_dim]) * tap(i - j);
    u[ch] = static_cast<double>(f.Z[i * D + ch]) * s;
    if (bits) u[ch] = round_mantissa(static_cast<float>(u[ch]), bits);
  }
  std::vector<double> out(d, 0.0);
  for (int64_t k = 0; k < d; ++k)
    for (int64_t ch = 0; ch < D; ++ch) {
      const float wk = w.out_proj[k * D + ch];
      out[k] += (bits ? round_mantissa(wk, bits) : wk) * u[ch];
    }
  return out;
}

}  // namespace latim::reference
