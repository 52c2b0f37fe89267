// The CPU forward pass of Mamba-1 and Mamba-2 (latim-method.md §1-2), one layer at a time
// over a slice of the sequence. Memory is O(T * width): the scans carry one state, never
// T x D x N. A SequenceLink joins a slice to the tokens before it (conv halo, incoming
// state, Δ offsets), so the same code runs whole sequences, chunks and MPI shards.
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

// The scans' inner loops over the state vectorise; the binary is built for the baseline
// x86-64 ISA (SSE2), so these functions are also compiled for AVX2+FMA and AVX-512 and the
// loader picks the widest the CPU has (GCC function multiversioning).
#if defined(__x86_64__)
#define LATIM_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define LATIM_SIMD_CLONES
#endif

// Mamba-1 selective scan from a zero state. Channels are split into blocks so a thread
// walks the sequence once per block with the block's states in cache. h_final [D, N].
LATIM_SIMD_CLONES
void selective_scan_mamba1(int64_t T, int64_t D, int64_t N, const float* x, const float* delta, const float* A,
                           const float* B, int64_t ldb, const float* C, int64_t ldc, const float* Dskip, float* y,
                           float* h_final) {
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
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          hc[n] = cpu::exp_nonpositive(dt * Ac[n]) * hc[n] + dx * Bt[n];
          acc += hc[n] * Ct[n];
        }
        y[t * D + c] = acc + Dskip[c] * x[t * D + c];
      }
    }
    std::copy(h.begin(), h.end(), h_final + c0 * N);
  }
}

// Mamba-2 scan from a zero state: one scalar decay per head, state [P, N] per head.
// h_final [H, P, N].
LATIM_SIMD_CLONES
void ssd_scan_mamba2(int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, const float* x, int64_t ldx,
                     const float* delta, const float* A, const float* B, const float* C, int64_t ldbc,
                     const float* Dskip, float* y, float* h_final) {
  const int64_t heads_per_group = H / G;
  const int64_t D = H * P;
#pragma omp parallel for schedule(static)
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / heads_per_group;
    float* s = h_final + h * P * N;
    std::fill(s, s + P * N, 0.0f);
    for (int64_t t = 0; t < T; ++t) {
      const float dt = delta[t * H + h];
      const float dA = cpu::exp_nonpositive(dt * A[h]);
      const float* Bt = B + t * ldbc + g * N;
      const float* Ct = C + t * ldbc + g * N;
      const float* xt = x + t * ldx + h * P;
      float* yt = y + t * D + h * P;
      for (int64_t p = 0; p < P; ++p) {
        float* sp = s + p * N;
        const float dx = dt * xt[p];
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          sp[n] = dA * sp[n] + dx * Bt[n];
          acc += sp[n] * Ct[n];
        }
        yt[p] = acc + Dskip[h] * xt[p];
      }
    }
  }
}

// Local cumulative sums of Δ (fp64), [T, W], plus `offset` (the sums before this slice).
void cumulative_sum(const std::vector<float>& delta, int64_t T, int64_t W, const double* offset,
                    std::vector<double>& S) {
  S.assign(static_cast<std::size_t>(T * W), 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < W; ++c) {
    double acc = offset ? offset[c] : 0.0;
    for (int64_t t = 0; t < T; ++t) {
      acc += delta[t * W + c];
      S[t * W + c] = acc;
    }
  }
}

bool all_zero(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return x == 0.0f; });
}

struct Workspace {
  std::vector<float> u, proj, ext, ext_out, conv, xdbl, y, o, hfin, decay, hin, tail, prev;
  std::vector<double> totals, offset, Sloc;
};

// The conv over [halo; local rows] for a slice; writes T_local rows to out.
void conv_with_halo(const float* in, int64_t T, int64_t width, int64_t lda, const LayerWeights& w, int64_t K,
                    bool silu_act, int layer, SequenceLink* link, Workspace& ws, float* out) {
  const float* bias = w.conv_b.empty() ? nullptr : w.conv_b.data();
  if (!link || K == 1) {
    cpu::causal_conv(in, T, width, lda, w.conv_w.data(), K, bias, silu_act, out);
    return;
  }
  const int64_t H = K - 1;
  if (T < H) fail("internal: sequence slice of ", T, " tokens is shorter than the conv halo (", H, ")");
  ws.tail.resize(H * width);
  for (int64_t r = 0; r < H; ++r) std::memcpy(&ws.tail[r * width], in + (T - H + r) * lda, width * sizeof(float));
  ws.prev.resize(H * width);
  link->conv_halo(layer, ws.tail.data(), H, width, ws.prev.data());
  ws.ext.resize((H + T) * width);
  std::memcpy(ws.ext.data(), ws.prev.data(), H * width * sizeof(float));
  for (int64_t t = 0; t < T; ++t) std::memcpy(&ws.ext[(H + t) * width], in + t * lda, width * sizeof(float));
  ws.ext_out.resize((H + T) * width);
  cpu::causal_conv(ws.ext.data(), H + T, width, width, w.conv_w.data(), K, bias, silu_act, ws.ext_out.data());
  std::memcpy(out, ws.ext_out.data() + H * width, T * width * sizeof(float));
}

void mamba1_layer(const ModelConfig& c, const LayerWeights& w, int layer, int64_t T, std::vector<float>& r,
                  Workspace& ws, LayerTrace& L, bool keep_trace, SequenceLink* link) {
  const int64_t d = c.d_model, D = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
  ws.u.resize(T * d);
  cpu::rmsnorm_rows(r.data(), T, d, w.norm.data(), c.norm_eps, ws.u.data());
  ws.proj.resize(T * 2 * D);
  cpu::linear(ws.u.data(), T, d, d, w.in_proj.data(), 2 * D, w.in_proj_b.empty() ? nullptr : w.in_proj_b.data(),
              ws.proj.data(), 2 * D);
  L.x.resize(T * D);
  conv_with_halo(ws.proj.data(), T, D, 2 * D, w, K, c.activation == Activation::SiLU, layer, link, ws, L.x.data());
  const int64_t XR = c.x_proj_rows();
  ws.xdbl.resize(T * XR);
  cpu::linear(L.x.data(), T, D, D, w.x_proj.data(), XR, nullptr, ws.xdbl.data(), XR);
  L.delta.resize(T * D);
  cpu::linear(ws.xdbl.data(), T, R, XR, w.dt_proj.data(), D, w.dt_proj_b.data(), L.delta.data(), D);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < T * D; ++i) L.delta[i] = softplus(L.delta[i]);
  ws.y.resize(T * D);
  ws.hfin.resize(D * N);
  selective_scan_mamba1(T, D, N, L.x.data(), L.delta.data(), w.A.data(), ws.xdbl.data() + R, XR,
                        ws.xdbl.data() + R + N, XR, w.D_skip.data(), ws.y.data(), ws.hfin.data());
  const double* offset = nullptr;
  if (link) {
    // Join the slice to the tokens before it: the incoming state decays along the slice
    // and adds C_t . (exp(A * (S_t - S_start)) ⊙ h_in) to every output.
    cumulative_sum(L.delta, T, D, nullptr, ws.Sloc);
    ws.totals.assign(ws.Sloc.end() - D, ws.Sloc.end());
    ws.decay.resize(D * N);
    for (int64_t ch = 0; ch < D; ++ch)
      for (int64_t n = 0; n < N; ++n)
        ws.decay[ch * N + n] = static_cast<float>(std::exp(static_cast<double>(w.A[ch * N + n]) * ws.totals[ch]));
    ws.hin.resize(D * N);
    link->scan_prefix(layer, ws.decay.data(), ws.hfin.data(), D * N, ws.hin.data());
    if (!all_zero(ws.hin)) {
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < T; ++t) {
        const float* Ct = ws.xdbl.data() + t * XR + R + N;
        for (int64_t ch = 0; ch < D; ++ch) {
          const float s = static_cast<float>(ws.Sloc[t * D + ch]);
          const float* A = w.A.data() + ch * N;
          const float* h = ws.hin.data() + ch * N;
          float acc = 0.0f;
          for (int64_t n = 0; n < N; ++n) acc += Ct[n] * cpu::exp_nonpositive(A[n] * s) * h[n];
          ws.y[t * D + ch] += acc;
        }
      }
    }
    ws.offset.resize(D);
    link->sum_prefix(layer, ws.totals.data(), D, ws.offset.data());
    offset = ws.offset.data();
  }
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
  if (keep_trace) {
    L.T = T;
    L.r_in = r;
    L.o = ws.o;
    L.v.resize(T * D);
    L.B.resize(T * N);
    L.C.resize(T * N);
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(&L.v[t * D], &ws.proj[t * 2 * D], D * sizeof(float));
      std::memcpy(&L.B[t * N], &ws.xdbl[t * XR + R], N * sizeof(float));
      std::memcpy(&L.C[t * N], &ws.xdbl[t * XR + R + N], N * sizeof(float));
    }
    cumulative_sum(L.delta, T, D, offset, L.S);
  }
}

void mamba2_layer(const ModelConfig& c, const LayerWeights& w, int layer, int64_t T, std::vector<float>& r,
                  Workspace& ws, LayerTrace& L, bool keep_trace, SequenceLink* link) {
  const int64_t d = c.d_model, D = c.d_inner, N = c.d_state, K = c.d_conv;
  const int64_t H = c.n_heads, P = c.head_dim, G = c.n_groups, GN = G * N;
  const int64_t CC = c.conv_channels(), IR = c.in_proj_rows();
  ws.u.resize(T * d);
  cpu::rmsnorm_rows(r.data(), T, d, w.norm.data(), c.norm_eps, ws.u.data());
  ws.proj.resize(T * IR);
  cpu::linear(ws.u.data(), T, d, d, w.in_proj.data(), IR, w.in_proj_b.empty() ? nullptr : w.in_proj_b.data(),
              ws.proj.data(), IR);
  // in_proj rows: [z (D); xBC (D + 2GN); dt (H)]
  ws.conv.resize(T * CC);
  conv_with_halo(ws.proj.data() + D, T, CC, IR, w, K, c.activation == Activation::SiLU, layer, link, ws,
                 ws.conv.data());
  L.delta.resize(T * H);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float dt = softplus(ws.proj[t * IR + D + CC + h] + w.dt_bias[h]);
      dt = static_cast<float>(std::clamp<double>(dt, c.dt_min, c.dt_max));
      L.delta[t * H + h] = dt;
    }
  ws.y.resize(T * D);
  ws.hfin.resize(H * P * N);
  ssd_scan_mamba2(T, H, P, N, G, ws.conv.data(), CC, L.delta.data(), w.A.data(), ws.conv.data() + D,
                  ws.conv.data() + D + GN, CC, w.D_skip.data(), ws.y.data(), ws.hfin.data());
  const double* offset = nullptr;
  if (link) {
    cumulative_sum(L.delta, T, H, nullptr, ws.Sloc);
    ws.totals.assign(ws.Sloc.end() - H, ws.Sloc.end());
    ws.decay.resize(H * P * N);
    for (int64_t h = 0; h < H; ++h) {
      const float dec = static_cast<float>(std::exp(static_cast<double>(w.A[h]) * ws.totals[h]));
      std::fill(ws.decay.begin() + h * P * N, ws.decay.begin() + (h + 1) * P * N, dec);
    }
    ws.hin.resize(H * P * N);
    link->scan_prefix(layer, ws.decay.data(), ws.hfin.data(), H * P * N, ws.hin.data());
    if (!all_zero(ws.hin)) {
      const int64_t hpg = H / G;
#pragma omp parallel for schedule(static)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < H; ++h) {
          const float* Ct = ws.conv.data() + t * CC + D + GN + (h / hpg) * N;
          const float dec = cpu::exp_nonpositive(w.A[h] * static_cast<float>(ws.Sloc[t * H + h]));
          for (int64_t p = 0; p < P; ++p) {
            const float* s = ws.hin.data() + (h * P + p) * N;
            float acc = 0.0f;
            for (int64_t n = 0; n < N; ++n) acc += Ct[n] * s[n];
            ws.y[t * D + h * P + p] += dec * acc;
          }
        }
    }
    ws.offset.resize(H);
    link->sum_prefix(layer, ws.totals.data(), H, ws.offset.data());
    offset = ws.offset.data();
  }
  // Gated RMSNorm per group of D/G channels.
  const int64_t gs = D / G;
  L.gate.resize(T * D);
  if (keep_trace) L.gamma.resize(T * D);
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
        if (keep_trace) L.gamma[t * D + k] = gamma;
        yt[k] = gamma * (yt[k] * gt[k]);
      }
    }
  }
  ws.o.resize(T * d);
  cpu::linear(ws.y.data(), T, D, D, w.out_proj.data(), d, w.out_proj_b.empty() ? nullptr : w.out_proj_b.data(),
              ws.o.data(), d);
  if (keep_trace) {
    L.T = T;
    L.r_in = r;
    L.o = ws.o;
    L.v.resize(T * D);
    L.x.resize(T * D);
    L.B.resize(T * GN);
    L.C.resize(T * GN);
    for (int64_t t = 0; t < T; ++t) {
      std::memcpy(&L.v[t * D], &ws.proj[t * IR + D], D * sizeof(float));
      std::memcpy(&L.x[t * D], &ws.conv[t * CC], D * sizeof(float));
      std::memcpy(&L.B[t * GN], &ws.conv[t * CC + D], GN * sizeof(float));
      std::memcpy(&L.C[t * GN], &ws.conv[t * CC + D + GN], GN * sizeof(float));
    }
    cumulative_sum(L.delta, T, H, offset, L.S);
  }
}

}  // namespace

void layer_forward_cpu(const ModelConfig& c, const LayerWeights& w, int layer, int64_t T, std::vector<float>& r,
                       LayerTrace* trace, SequenceLink* link) {
  static thread_local Workspace ws;
  static thread_local LayerTrace scratch;
  LayerTrace& L = trace ? *trace : scratch;
  if (c.family == Family::Mamba1) {
    mamba1_layer(c, w, layer, T, r, ws, L, trace != nullptr, link);
  } else {
    mamba2_layer(c, w, layer, T, r, ws, L, trace != nullptr, link);
  }
  const int64_t n = T * c.d_model;
  const float* o = ws.o.data();  // ws is thread_local: take the pointer before the threads fork
  float* rp = r.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) rp[i] += o[i];
}

std::vector<float> embed_tokens(const ModelWeights& model, const std::vector<int64_t>& tokens, int64_t first_position) {
  const ModelConfig& c = model.config;
  const int64_t T = static_cast<int64_t>(tokens.size()), d = c.d_model;
  std::vector<float> r(static_cast<std::size_t>(T * d));
  for (int64_t t = 0; t < T; ++t) {
    const int64_t id = tokens[t];
    if (id < 0 || id >= c.vocab_size)
      fail("forward: token id ", id, " at position ", first_position + t, " is outside [0, ", c.vocab_size, ")");
    std::memcpy(&r[t * d], &model.embedding[id * d], d * sizeof(float));
  }
  return r;
}

std::vector<float> final_norm(const ModelWeights& model, const std::vector<float>& residual) {
  const int64_t d = model.config.d_model, T = static_cast<int64_t>(residual.size()) / d;
  std::vector<float> out(residual.size());
  cpu::rmsnorm_rows(residual.data(), T, d, model.norm_f.data(), model.config.norm_eps, out.data());
  return out;
}

void logits_rows(const ModelWeights& model, const float* h, int64_t nrows, float* out) {
  const ModelConfig& c = model.config;
  cpu::linear(h, nrows, c.d_model, c.d_model, model.output_matrix().data(), c.vocab_size, nullptr, out, c.vocab_size);
}

ForwardOutput forward_cpu(const ModelWeights& model, const std::vector<int64_t>& tokens, LayerObserver* observer) {
  const ModelConfig& c = model.config;
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (T == 0) fail("forward: empty token sequence");
  std::vector<float> r = embed_tokens(model, tokens);
  LayerTrace trace;
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const bool want = observer && observer->wants_trace(static_cast<int>(l));
    layer_forward_cpu(c, model.layers[l], static_cast<int>(l), T, r, want ? &trace : nullptr, nullptr);
    if (observer) observer->on_layer(static_cast<int>(l), model.layers[l], want ? &trace : nullptr, r);
  }
  ForwardOutput out;
  out.T = T;
  out.final_hidden = final_norm(model, r);
  return out;
}

void compute_logits(const ModelWeights& model, const ForwardOutput& fwd, int64_t row0, int64_t nrows, float* out) {
  if (row0 < 0 || row0 + nrows > fwd.T) fail("compute_logits: rows out of range");
  logits_rows(model, fwd.final_hidden.data() + row0 * model.config.d_model, nrows, out);
}

}  // namespace latim
