// CPU tile backend: for a block of targets x sources it builds Z_i ⊙ υ_{i←j} for every pair,
// projects the stack through W_out with one matrix product, and reduces each row to the
// scores. Threads take row sub-blocks, so per-row sums need no synchronisation.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "latim/error.hpp"
#include "latim/latim.hpp"
#include "model/cpu_ops.hpp"

namespace latim {

namespace {

constexpr int64_t kRowBlock = 8;
constexpr int64_t kColBlock = 32;

inline float activation(float v, Activation a) { return a == Activation::SiLU ? cpu::silu(v) : v; }

class CpuTileBackend final : public TileBackend {
 public:
  const char* name() const override { return "cpu"; }

  void compute_tile(const LayerFactors& f, const ScoreSet& which, TileScores& out) override {
    const ModelConfig& c = *f.config;
    const LayerWeights& w = *f.weights;
    const LayerTrace& tr = *f.trace;
    if (tr.device) fail("internal: the CPU tile backend was given a device-resident trace");
    const int64_t D = c.d_inner, d = c.d_model, K = c.d_conv;
    const int64_t i0 = out.i0, ni = out.ni, j0 = out.j0, nj = out.nj;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    auto init = [&](bool on, std::vector<float>& v) {
      if (on) v.assign(ni * nj, nan); else v.clear();
    };
    init(which.l2, out.l2);
    init(which.l1, out.l1);
    init(which.alti, out.alti);
    init(which.hidden_attn, out.hidden_attn);
    if (which.contrib) out.contrib_sum.assign(ni * d, 0.0); else out.contrib_sum.clear();
    // A transposed to [N, D], per tile: D·N copies, nothing beside the tile's work. (It was
    // cached by the address of A, which a later model can reuse with other values.)
    if (c.family == Family::Mamba1) {
      const int64_t N = c.d_state;
      At_.resize(D * N);
      for (int64_t ch = 0; ch < D; ++ch)
        for (int64_t n = 0; n < N; ++n) At_[n * D + ch] = w.A[ch * N + n];
    }

    const int64_t nrb = (ni + kRowBlock - 1) / kRowBlock;
#pragma omp parallel
    {
      std::vector<float> taps(kColBlock * K * D);            // x_{j+k <- j}[c]
      std::vector<float> M((kColBlock + K - 1) * D);         // M_{i,l}[c] for l in [ja, jb + K - 1)
      std::vector<float> U(kRowBlock * kColBlock * D);       // Z_i ⊙ υ_{i←j}, one row per pair
      std::vector<float> Tout(kRowBlock * kColBlock * d);    // T_i(x_j)
      std::vector<float> hattn(kRowBlock * kColBlock);
      std::vector<float> decay(c.family == Family::Mamba1 ? (kColBlock + K) * c.d_state * D : 0);
      std::vector<float> E(c.family == Family::Mamba1 ? c.d_state * D : 0);
      std::vector<std::pair<int64_t, int64_t>> pairs;
#pragma omp for schedule(dynamic)
      for (int64_t rb = 0; rb < nrb; ++rb) {
        const int64_t ia = i0 + rb * kRowBlock, ib = std::min(i0 + ni, ia + kRowBlock);
        for (int64_t ja = j0; ja < j0 + nj && ja < ib; ja += kColBlock) {
          const int64_t jb = std::min({j0 + nj, ja + kColBlock, ib});
          build_taps(c, w, tr, ja, jb, taps.data());
          if (c.family == Family::Mamba1)
            build_step_decays(c, tr, ja + 1, std::min(ib - 1, jb - 1 + K - 1), ja, decay.data());
          pairs.clear();
          for (int64_t i = ia; i < ib; ++i) {
            const int64_t lmax = std::min(i, jb - 1 + K - 1);  // last l with M_{i,l} needed
            if (c.family == Family::Mamba1) {
              fill_M_mamba1(c, tr, i, ja, lmax, decay.data(), E.data(), M.data());
            } else {
              fill_M_mamba2(c, w, tr, i, ja, lmax, M.data());
            }
            for (int64_t j = ja; j < jb && j <= i; ++j) {
              float* u = U.data() + pairs.size() * D;
              const float* Zi = f.Z.data() + i * D;
              const int64_t lend = std::min(i, j + K - 1);
              for (int64_t k = 0; k < D; ++k) u[k] = 0.0f;
              for (int64_t l = j; l <= lend; ++l) {
                const float* Ml = M.data() + (l - ja) * D;
                const float* xs = taps.data() + ((j - ja) * K + (l - j)) * D;
                for (int64_t k = 0; k < D; ++k) u[k] += Ml[k] * xs[k];
              }
              if (i - j < K) {
                const float* xs = taps.data() + ((j - ja) * K + (i - j)) * D;
                add_skip(c, w, xs, u);
              }
              for (int64_t k = 0; k < D; ++k) u[k] *= Zi[k];
              if (which.hidden_attn) {
                const float* Mj = M.data() + (j - ja) * D;
                double s = 0.0;
#pragma omp simd reduction(+ : s)
                for (int64_t k = 0; k < D; ++k) s += Mj[k];
                // Mamba-2's M is per head, expanded over the head's P channels: the mean
                // over channels equals the mean over heads.
                hattn[pairs.size()] = static_cast<float>(s / static_cast<double>(D));
              }
              pairs.emplace_back(i, j);
            }
          }
          const int64_t np = static_cast<int64_t>(pairs.size());
          if (np == 0) continue;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(np), static_cast<int>(d),
                      static_cast<int>(D), 1.0f, U.data(), static_cast<int>(D), w.out_proj.data(),
                      static_cast<int>(D), 0.0f, Tout.data(), static_cast<int>(d));
          for (int64_t p = 0; p < np; ++p) {
            const auto [i, j] = pairs[p];
            const float* t = Tout.data() + p * d;
            const int64_t at = (i - i0) * nj + (j - j0);
            double l2 = 0.0, l1 = 0.0;
#pragma omp simd reduction(+ : l2, l1)
            for (int64_t k = 0; k < d; ++k) {
              const double v = t[k];
              l2 += v * v;
              l1 += std::abs(v);
            }
            if (which.contrib) {
              double* cs = out.contrib_sum.data() + (i - i0) * d;
#pragma omp simd
              for (int64_t k = 0; k < d; ++k) cs[k] += t[k];
            }
            if (which.l2) out.l2[at] = static_cast<float>(std::sqrt(l2));
            if (which.l1) out.l1[at] = static_cast<float>(l1);
            if (which.alti) {
              const float* r = tr.r_in.data() + i * d;
              const float* o = tr.o.data() + i * d;
              double rest = 0.0;  // ||ŷ_i - T̂_i(x_j)||_1
#pragma omp simd reduction(+ : rest)
              for (int64_t k = 0; k < d; ++k) {
                const double yh = static_cast<double>(r[k]) + o[k];
                const double th = static_cast<double>(t[k]) + (i == j ? r[k] : 0.0f);
                rest += std::abs(yh - th);
              }
              out.alti[at] = static_cast<float>(std::max(0.0, f.yhat_l1[i] - rest));
            }
            if (which.hidden_attn) out.hidden_attn[at] = hattn[p];
          }
        }
      }
    }
  }

 private:
  // taps[(j - ja) * K + k][c] = f(w_k[c] v_j[c] + [k = 0] b[c]): the piece of conv output
  // position j + k that comes from source j (conv bias folded into the j = l piece).
  static void build_taps(const ModelConfig& c, const LayerWeights& w, const LayerTrace& tr, int64_t ja, int64_t jb,
                         float* taps) {
    const int64_t D = c.d_inner, K = c.d_conv;
    for (int64_t j = ja; j < jb; ++j) {
      const float* v = tr.v.data() + j * D;
      for (int64_t k = 0; k < K; ++k) {
        float* out = taps + ((j - ja) * K + k) * D;
        for (int64_t ch = 0; ch < D; ++ch) {
          float val = w.conv_w[ch * K + (K - 1 - k)] * v[ch];
          if (k == 0 && !w.conv_b.empty()) val += w.conv_b[ch];
          out[ch] = activation(val, c.activation);
        }
      }
    }
  }

  // decay[(l - base) * N * D + n * D + ch] = exp(A[ch, n] * Δ_l[ch]) for l in [l0, l1]: the
  // one-step decays of a source block, shared by every target of the row block.
  void build_step_decays(const ModelConfig& c, const LayerTrace& tr, int64_t l0, int64_t l1, int64_t base,
                         float* decay) const {
    const int64_t D = c.d_inner, N = c.d_state;
    for (int64_t l = l0; l <= l1; ++l) {
      const float* dl = tr.delta.data() + l * D;
      float* out = decay + (l - base) * N * D;
      for (int64_t n = 0; n < N; ++n) {
        const float* At = At_.data() + n * D;
#pragma omp simd
        for (int64_t ch = 0; ch < D; ++ch) out[n * D + ch] = cpu::exp_nonpositive(At[ch] * dl[ch]);
      }
    }
  }

  // Mamba-1 M_{i,l} for l = lmax down to ja. The decay from l to i starts as one direct
  // exponential of a non-positive number at l = lmax and is carried down the block by the
  // one-step decays (each <= 1), so no exp(+A S) factor ever appears.
  void fill_M_mamba1(const ModelConfig& c, const LayerTrace& tr, int64_t i, int64_t ja, int64_t lmax,
                     const float* decay, float* E, float* M) const {
    const int64_t D = c.d_inner, N = c.d_state;
    if (lmax < ja) return;
    const float* Ci = tr.C.data() + i * N;
    const double* Si = tr.S.data() + i * D;
    const double* Stop = tr.S.data() + lmax * D;
    for (int64_t n = 0; n < N; ++n) {
      const float* At = At_.data() + n * D;
      float* En = E + n * D;
#pragma omp simd
      for (int64_t ch = 0; ch < D; ++ch) En[ch] = cpu::exp_nonpositive(At[ch] * static_cast<float>(Si[ch] - Stop[ch]));
    }
    for (int64_t l = lmax; l >= ja; --l) {
      const float* Bl = tr.B.data() + l * N;
      const float* dl = tr.delta.data() + l * D;
      float* out = M + (l - ja) * D;
#pragma omp simd
      for (int64_t ch = 0; ch < D; ++ch) out[ch] = 0.0f;
      for (int64_t n = 0; n < N; ++n) {
        const float cb = Ci[n] * Bl[n];
        const float* En = E + n * D;
#pragma omp simd
        for (int64_t ch = 0; ch < D; ++ch) out[ch] += cb * En[ch];
      }
#pragma omp simd
      for (int64_t ch = 0; ch < D; ++ch) out[ch] *= dl[ch];
      if (l > ja) {  // E <- E * exp(A Δ_l): the decay from l - 1 to i
        const float* dec = decay + (l - ja) * N * D;
#pragma omp simd
        for (int64_t k = 0; k < N * D; ++k) E[k] *= dec[k];
      }
    }
  }

  // Mamba-2: M[(l - ja) * D + ch] = M^h_{i,l} for l in [ja, lmax], expanded over the P
  // channels of head h (latim-method.md §2). One scalar per head, so no block recurrence.
  static void fill_M_mamba2(const ModelConfig& c, const LayerWeights& w, const LayerTrace& tr, int64_t i, int64_t ja,
                            int64_t lmax, float* M) {
    const int64_t D = c.d_inner, N = c.d_state;
    const int64_t H = c.n_heads, P = c.head_dim, G = c.n_groups, hpg = H / G;
    const float* Ci = tr.C.data() + i * G * N;
    const double* Si = tr.S.data() + i * H;
    for (int64_t l = ja; l <= lmax; ++l) {
      const float* Bl = tr.B.data() + l * G * N;
      const double* Sl = tr.S.data() + l * H;
      float* out = M + (l - ja) * D;
      for (int64_t g = 0; g < G; ++g) {
        float cb = 0.0f;
        for (int64_t n = 0; n < N; ++n) cb += Ci[g * N + n] * Bl[g * N + n];
        for (int64_t h = g * hpg; h < (g + 1) * hpg; ++h) {
          const float gap = static_cast<float>(Si[h] - Sl[h]);
          const float m = cb * cpu::exp_nonpositive(w.A[h] * gap) * tr.delta[l * H + h];
          for (int64_t p = 0; p < P; ++p) out[h * P + p] = m;
        }
      }
    }
  }

  std::vector<float> At_;  // A transposed to [N, D] for the current tile

  static void add_skip(const ModelConfig& c, const LayerWeights& w, const float* xs, float* u) {
    const int64_t D = c.d_inner;
    if (c.family == Family::Mamba1) {
      for (int64_t k = 0; k < D; ++k) u[k] += w.D_skip[k] * xs[k];
    } else {
      const int64_t P = c.head_dim;
      for (int64_t k = 0; k < D; ++k) u[k] += w.D_skip[k / P] * xs[k];
    }
  }
};

}  // namespace

std::unique_ptr<TileBackend> make_cpu_tile_backend() { return std::make_unique<CpuTileBackend>(); }

}  // namespace latim
