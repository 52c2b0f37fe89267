// The approximation error of every row from the surrogate's whole-sequence sum, in O(T) per
// layer (latim-method.md §3): Σ_j T_i(x_j) = W_out (Z_i ⊙ ỹ_i), where ỹ is the layer's scan
// (Δ, B, C frozen at the forward pass) run on the summed conv pieces
// x̃_l = Σ_j x_{l←j} = Σ_{k<K} act(w_k ⊙ v_{l−k} + [k = 0] b), plus the skip D ⊙ x̃_i. The
// tiles give the same sum pair by pair; a plan that computes only a band of sources
// (--window alone) has no other way to it.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "latim/error.hpp"
#include "latim/latim.hpp"
#include "model/cpu_ops.hpp"

namespace latim {

bool surrogate_approx_error(const LayerFactors& f, std::vector<float>& eps) {
  const ModelConfig& c = *f.config;
  const LayerWeights& w = *f.weights;
  const LayerTrace& tr = *f.trace;
  if (tr.device) return false;  // the factors are in an accelerator's memory
  const int64_t T = tr.T, D = c.d_inner, d = c.d_model, K = c.d_conv, N = c.d_state;
  const bool silu = c.activation == Activation::SiLU;
  // x̃ [T, D]: each piece activated on its own, then summed in fp64 and kept in fp32 (the
  // trace's own width: T x D floats beside a trace of several times that).
  std::vector<float> xt(static_cast<std::size_t>(T * D));
#pragma omp parallel for schedule(static)
  for (int64_t l = 0; l < T; ++l)
    for (int64_t ch = 0; ch < D; ++ch) {
      double s = 0.0;
      for (int64_t k = 0; k < K && k <= l; ++k) {
        float v = w.conv_w[ch * K + (K - 1 - k)] * tr.v[(l - k) * D + ch];
        if (k == 0 && !w.conv_b.empty()) v += w.conv_b[ch];
        s += silu ? cpu::silu(v) : v;
      }
      xt[l * D + ch] = static_cast<float>(s);
    }
  // ỹ = scan(x̃) + D ⊙ x̃ with an fp64 state, overwriting x̃ row by row; each channel (Mamba-1) or head
  // (Mamba-2) is independent.
  if (c.family == Family::Mamba1) {
#pragma omp parallel for schedule(dynamic)
    for (int64_t ch = 0; ch < D; ++ch) {
      std::vector<double> h(static_cast<std::size_t>(N), 0.0);
      for (int64_t t = 0; t < T; ++t) {
        const double dt = tr.delta[t * D + ch], x = xt[t * D + ch];
        double y = 0.0;
        for (int64_t n = 0; n < N; ++n) {
          h[n] = std::exp(static_cast<double>(w.A[ch * N + n]) * dt) * h[n] + dt * tr.B[t * N + n] * x;
          y += static_cast<double>(tr.C[t * N + n]) * h[n];
        }
        xt[t * D + ch] = static_cast<float>(y + static_cast<double>(w.D_skip[ch]) * x);
      }
    }
  } else {
    const int64_t H = c.n_heads, P = c.head_dim, G = c.n_groups, hpg = H / G;
#pragma omp parallel for schedule(dynamic)
    for (int64_t hd = 0; hd < H; ++hd) {
      const int64_t g = hd / hpg;
      std::vector<double> h(static_cast<std::size_t>(P * N), 0.0);  // [P, N]
      for (int64_t t = 0; t < T; ++t) {
        const double dt = tr.delta[t * H + hd], decay = std::exp(static_cast<double>(w.A[hd]) * dt);
        const float* B = tr.B.data() + t * G * N + g * N;
        const float* C = tr.C.data() + t * G * N + g * N;
        for (int64_t p = 0; p < P; ++p) {
          double* hp = h.data() + p * N;
          const double x = xt[t * D + hd * P + p];
          double y = 0.0;
          for (int64_t n = 0; n < N; ++n) {
            hp[n] = decay * hp[n] + dt * x * B[n];
            y += static_cast<double>(C[n]) * hp[n];
          }
          xt[t * D + hd * P + p] = static_cast<float>(y + static_cast<double>(w.D_skip[hd]) * x);
        }
      }
    }
  }
  // Σ_j T_i(x_j) = W_out (Z_i ⊙ ỹ_i), then ε_i against o_i − b_out, in blocks of rows.
  std::vector<double> wout(w.out_proj.begin(), w.out_proj.end());  // [d, D]
  eps.assign(static_cast<std::size_t>(T), 0.0f);
  constexpr int64_t kRows = 256;
#pragma omp parallel
  {
    std::vector<double> u(static_cast<std::size_t>(kRows * D)), s(static_cast<std::size_t>(kRows * d));
#pragma omp for schedule(dynamic)
    for (int64_t r0 = 0; r0 < T; r0 += kRows) {
      const int64_t n = std::min(kRows, T - r0);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t k = 0; k < D; ++k)
          u[r * D + k] = static_cast<double>(f.Z[(r0 + r) * D + k]) * xt[(r0 + r) * D + k];
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(d),
                  static_cast<int>(D), 1.0, u.data(), static_cast<int>(D), wout.data(), static_cast<int>(D), 0.0,
                  s.data(), static_cast<int>(d));
      for (int64_t r = 0; r < n; ++r)
        eps[r0 + r] = approx_error_of_row(tr.o.data() + (r0 + r) * d, w.out_proj_b, s.data() + r * d, d);
    }
  }
  return true;
}

bool TileBackend::approx_error_all_rows(const LayerFactors& f, std::vector<float>& eps) {
  return surrogate_approx_error(f, eps);
}

}  // namespace latim
