// The CPU forward pass of Mamba-1 and Mamba-2 (latim-method.md §1-2), layer by layer over
// the whole sequence. Memory is O(T * width): the scans carry one state, never T x D x N.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "latim/error.hpp"
#include "latim/forward.hpp"
#include "model/cpu_ops.hpp"

namespace latim {

using cpu::silu;
using cpu::softplus;

namespace {

// Mamba-1 selective scan. Channels are split into blocks so a thread walks the sequence
// once per block with the block's states in cache.
void selective_scan_mamba1(int64_t T, int64_t D, int64_t N, const float* x, const float* delta,
                           const float* A, const float* B, int64_t ldb, const float* C, int64_t ldc,
                           const float* Dskip, float* y) {
  constexpr int64_t kBlock = 16;
  const int64_t nblocks = (D + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t c0 = blk * kBlock, c1 = std::min(D, c0 + kBlock);
    std::vector<float> h(static_cast<std::size_t>((c1 - c0) * N), 0.0f);
    for (int64_t t = 0; t < T; ++t) {
      const float* Bt = B + t * ldb;
      const float* Ct = C + t * ldc;
      for (int64_t c = c0; c < c1; ++c) {
        const float dt = delta[t * D + c];
        const float dx = dt * x[t * D + c];
        const float* Ac = A + c * N;
        float* hc = h.data() + (c - c0) * N;
        float acc = 0.0f;
        for (int64_t n = 0; n < N; ++n) {
          hc[n] = cpu::exp_nonpositive(dt * Ac[n]) * hc[n] + dx * Bt[n];
          acc += hc[n] * Ct[n];
        }
        y[t * D + c] = acc + Dskip[c] * x[t * D + c];
      }
    }
  }
}

// Mamba-2 scan: one scalar decay per head, state [P, N] per head.
void ssd_scan_mamba2(int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, const float* x,
                     int64_t ldx, const float* delta, const float* A, const float* B,
                     const float* C, int64_t ldbc, const float* Dskip, float* y) {
  const int64_t heads_per_group = H / G;
  const int64_t D = H * P;
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / heads_per_group;
    std::vector<float> s(static_cast<std::size_t>(P * N), 0.0f);
    for (int64_t t = 0; t < T; ++t) {
      const float dt = delta[t * H + h];
      const float dA = cpu::exp_nonpositive(dt * A[h]);
      const float* Bt = B + t * ldbc + g * N;
      const float* Ct = C + t * ldbc + g * N;
      const float* xt = x + t * ldx + h * P;
      float* yt = y + t * D + h * P;
      for (int64_t p = 0; p < P; ++p) {
        float* sp = s.data() + p * N;
        const float dx = dt * xt[p];
        float acc = 0.0f;
        for (int64_t n = 0; n < N; ++n) {
          sp[n] = dA * sp[n] + dx * Bt[n];
          acc += sp[n] * Ct[n];
        }
        yt[p] = acc + Dskip[h] * xt[p];
      }
    }
  }
}

void cumulative_sum(const std::vector<float>& delta, int64_t T, int64_t W, std::vector<double>& S) {
  S.assign(static_cast<std::size_t>(T * W), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < W; ++c) {
    double acc = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      acc += delta[t * W + c];
      S[t * W + c] = acc;
    }
  }
}

struct Workspace {
  std::vector<float> u, proj, conv, xdbl, y, o;
};

void mamba1_layer(const ModelConfig& c, const LayerWeights& w, int64_t T, std::vector<float>& r,
                  Workspace& ws, LayerTrace* tr, LayerTrace& local) {
  const int64_t d = c.d_model, D = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
  LayerTrace& L = tr ? *tr : local;
  ws.u.resize(T * d);
  cpu::rmsnorm_rows(r.data(), T, d, w.norm.data(), c.norm_eps, ws.u.data());
  ws.proj.resize(T * 2 * D);
  cpu::linear(ws.u.data(), T, d, d, w.in_proj.data(), 2 * D, w.in_proj_b.empty() ? nullptr : w.in_proj_b.data(),
              ws.proj.data(), 2 * D);
  L.x.resize(T * D);
  cpu::causal_conv(ws.proj.data(), T, D, 2 * D, w.conv_w.data(), K, w.conv_b.empty() ? nullptr : w.conv_b.data(),
                   c.activation == Activation::SiLU, L.x.data());
  const int64_t XR = c.x_proj_rows();
  ws.xdbl.resize(T * XR);
  cpu::linear(L.x.data(), T, D, D, w.x_proj.data(), XR, nullptr, ws.xdbl.data(), XR);
  L.delta.resize(T * D);
  cpu::linear(ws.xdbl.data(), T, R, XR, w.dt_proj.data(), D, w.dt_proj_b.data(), L.delta.data(), D);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < T * D; ++i) L.delta[i] = softplus(L.delta[i]);
  ws.y.resize(T * D);
  selective_scan_mamba1(T, D, N, L.x.data(), L.delta.data(), w.A.data(), ws.xdbl.data() + R, XR,
                        ws.xdbl.data() + R + N, XR, w.D_skip.data(), ws.y.data());
  L.gate.resize(T * D);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < D; ++k) {
      const float g = silu(ws.proj[t * 2 * D + D + k]);
      L.gate[t * D + k] = g;
      ws.y[t * D + k] *= g;
    }
  ws.o.resize(T * d);
  cpu::linear(ws.y.data(), T, D, D, w.out_proj.data(), d, w.out_proj_b.empty() ? nullptr : w.out_proj_b.data(),
              ws.o.data(), d);
  if (tr) {
    tr->T = T;
    tr->r_in = r;
    tr->o = ws.o;
    tr->v.resize(T * D);
    tr->B.resize(T * N);
    tr->C.resize(T * N);
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(&tr->v[t * D], &ws.proj[t * 2 * D], D * sizeof(float));
      std::memcpy(&tr->B[t * N], &ws.xdbl[t * XR + R], N * sizeof(float));
      std::memcpy(&tr->C[t * N], &ws.xdbl[t * XR + R + N], N * sizeof(float));
    }
    cumulative_sum(tr->delta, T, D, tr->S);
  }
}

void mamba2_layer(const ModelConfig& c, const LayerWeights& w, int64_t T, std::vector<float>& r,
                  Workspace& ws, LayerTrace* tr, LayerTrace& local) {
  const int64_t d = c.d_model, D = c.d_inner, N = c.d_state, K = c.d_conv;
  const int64_t H = c.n_heads, P = c.head_dim, G = c.n_groups, GN = G * N;
  const int64_t CC = c.conv_channels(), IR = c.in_proj_rows();
  LayerTrace& L = tr ? *tr : local;
  ws.u.resize(T * d);
  cpu::rmsnorm_rows(r.data(), T, d, w.norm.data(), c.norm_eps, ws.u.data());
  ws.proj.resize(T * IR);
  cpu::linear(ws.u.data(), T, d, d, w.in_proj.data(), IR, w.in_proj_b.empty() ? nullptr : w.in_proj_b.data(),
              ws.proj.data(), IR);
  // in_proj rows: [z (D); xBC (D + 2GN); dt (H)]
  ws.conv.resize(T * CC);
  cpu::causal_conv(ws.proj.data() + D, T, CC, IR, w.conv_w.data(), K, w.conv_b.empty() ? nullptr : w.conv_b.data(),
                   c.activation == Activation::SiLU, ws.conv.data());
  L.delta.resize(T * H);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float dt = softplus(ws.proj[t * IR + D + CC + h] + w.dt_bias[h]);
      dt = static_cast<float>(std::clamp<double>(dt, c.dt_min, c.dt_max));
      L.delta[t * H + h] = dt;
    }
  ws.y.resize(T * D);
  ssd_scan_mamba2(T, H, P, N, G, ws.conv.data(), CC, L.delta.data(), w.A.data(), ws.conv.data() + D,
                  ws.conv.data() + D + GN, CC, w.D_skip.data(), ws.y.data());
  // Gated RMSNorm per group of D/G channels.
  const int64_t gs = D / G;
  L.gate.resize(T * D);
  if (tr) tr->gamma.resize(T * D);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    float* yt = &ws.y[t * D];
    for (int64_t k = 0; k < D; ++k) L.gate[t * D + k] = silu(ws.proj[t * IR + k]);
    const float* gt = &L.gate[t * D];
    for (int64_t g = 0; g < G; ++g) {
      double ss = 0.0;
      for (int64_t k = g * gs; k < (g + 1) * gs; ++k) {
        const double v = c.norm_before_gate ? yt[k] : yt[k] * gt[k];
        ss += v * v;
      }
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(gs) + c.gated_norm_eps));
      for (int64_t k = g * gs; k < (g + 1) * gs; ++k) {
        const float gamma = w.gated_norm[k] * inv;
        if (tr) tr->gamma[t * D + k] = gamma;
        yt[k] = gamma * (yt[k] * gt[k]);
      }
    }
  }
  ws.o.resize(T * d);
  cpu::linear(ws.y.data(), T, D, D, w.out_proj.data(), d, w.out_proj_b.empty() ? nullptr : w.out_proj_b.data(),
              ws.o.data(), d);
  if (tr) {
    tr->T = T;
    tr->r_in = r;
    tr->o = ws.o;
    tr->v.resize(T * D);
    tr->x.resize(T * D);
    tr->B.resize(T * GN);
    tr->C.resize(T * GN);
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(&tr->v[t * D], &ws.proj[t * IR + D], D * sizeof(float));
      std::memcpy(&tr->x[t * D], &ws.conv[t * CC], D * sizeof(float));
      std::memcpy(&tr->B[t * GN], &ws.conv[t * CC + D], GN * sizeof(float));
      std::memcpy(&tr->C[t * GN], &ws.conv[t * CC + D + GN], GN * sizeof(float));
    }
    cumulative_sum(tr->delta, T, H, tr->S);
  }
}

}  // namespace

ForwardOutput forward_cpu(const ModelWeights& model, const std::vector<int64_t>& tokens, LayerObserver* observer) {
  const ModelConfig& c = model.config;
  const int64_t T = static_cast<int64_t>(tokens.size()), d = c.d_model;
  if (T == 0) fail("forward: empty token sequence");
  std::vector<float> r(static_cast<std::size_t>(T * d));
  for (int64_t t = 0; t < T; ++t) {
    const int64_t id = tokens[t];
    if (id < 0 || id >= c.vocab_size)
      fail("forward: token id ", id, " at position ", t, " is outside [0, ", c.vocab_size, ")");
    std::memcpy(&r[t * d], &model.embedding[id * d], d * sizeof(float));
  }
  Workspace ws;
  LayerTrace trace, local;
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const bool want = observer && observer->wants_trace(static_cast<int>(l));
    LayerTrace* tr = want ? &trace : nullptr;
    if (c.family == Family::Mamba1) {
      mamba1_layer(c, model.layers[l], T, r, ws, tr, local);
    } else {
      mamba2_layer(c, model.layers[l], T, r, ws, tr, local);
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < T * d; ++i) r[i] += ws.o[i];
    if (observer) observer->on_layer(static_cast<int>(l), model.layers[l], tr, r);
  }
  ForwardOutput out;
  out.T = T;
  out.final_hidden.resize(T * d);
  cpu::rmsnorm_rows(r.data(), T, d, model.norm_f.data(), c.norm_eps, out.final_hidden.data());
  return out;
}

void compute_logits(const ModelWeights& model, const ForwardOutput& fwd, int64_t row0, int64_t nrows, float* out) {
  const ModelConfig& c = model.config;
  if (row0 < 0 || row0 + nrows > fwd.T) fail("compute_logits: rows out of range");
  cpu::linear(fwd.final_hidden.data() + row0 * c.d_model, nrows, c.d_model, c.d_model,
              model.output_matrix().data(), c.vocab_size, nullptr, out, c.vocab_size);
}

}  // namespace latim
