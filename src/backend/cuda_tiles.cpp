// The CUDA tile backend: uploads a layer's factors once and computes each tile with the
// fused kernel, returning host scores.
#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include "backend/cuda_backend.hpp"
#include "latim/error.hpp"
#include "linear.hpp"
#include "selective_scan.hpp"
#include "ssd_scan.hpp"
#include "tile_reduce.hpp"

namespace latim {

using cuda::DeviceArray;
using cuda::TilePrecision;

TilePrecision tile_precision(Precision p) {
  switch (p) {
    case Precision::FP32: return TilePrecision::FP32;
    case Precision::TF32: return TilePrecision::TF32;
    case Precision::BF16: return TilePrecision::BF16;
  }
  return TilePrecision::FP32;
}

DeviceLayerFactors::Key DeviceLayerFactors::key_of(const LayerFactors& f) {
  Key k;
  k.trace = f.trace;
  k.weights = f.weights;
  k.z = f.Z.data();
  k.T = f.trace->T;
  auto take = [&](const std::vector<float>& v) {
    const std::size_t n = v.size();
    if (n == 0) return;
    for (std::size_t s = 0; s < 16; ++s) k.sample.push_back(v[(n - 1) * s / 15]);
  };
  take(f.trace->o);
  take(f.trace->v);
  take(f.Z);
  take(f.weights->out_proj);
  return k;
}

namespace {
template <class T>
const T* put(DeviceArray<T>& a, const std::vector<T>& v, const char* what, int layer) {
  if (v.empty()) return nullptr;
  return a.upload(v.data(), static_cast<int64_t>(v.size()), what, layer);
}
}  // namespace

cuda::TileFactors tile_shape(const ModelConfig& c, int64_t T) {
  cuda::TileFactors t;
  t.mamba2 = c.family == Family::Mamba2;
  t.silu = c.activation == Activation::SiLU;
  t.T = T;
  t.d = c.d_model;
  t.D = c.d_inner;
  t.N = c.d_state;
  t.K = c.d_conv;
  t.H = c.n_heads;
  t.P = c.head_dim;
  t.G = c.n_groups;
  t.ldv = t.D;
  t.ldbc = t.mamba2 ? t.G * t.N : t.N;
  return t;
}

void CudaDeviceTrace::read_o(int64_t i0, int64_t n, float* dst) const {
  if (n <= 0) return;
  const int64_t d = factors.d;
  cuda::check(cudaMemcpy(dst, o + i0 * d, static_cast<std::size_t>(n * d) * sizeof(float), cudaMemcpyDeviceToHost),
              "mixer output rows download", layer);
}

void DeviceLayerFactors::upload(const LayerFactors& f, int layer) {
  if (f.trace->device) {
    const auto* dt = dynamic_cast<const CudaDeviceTrace*>(f.trace->device.get());
    if (!dt) fail("internal: the CUDA tile backend was given another backend's device trace");
    dev_ = dt->factors;
    have_ = false;  // nothing of ours is cached: the next host trace uploads again
    return;
  }
  Key k = key_of(f);
  if (have_ && k == key_) return;
  have_ = false;
  const ModelConfig& c = *f.config;
  const LayerWeights& w = *f.weights;
  const LayerTrace& tr = *f.trace;
  const int64_t T = tr.T, d = c.d_model, D = c.d_inner;
  cuda::TileFactors t = tile_shape(c, T);
  t.v = put(v_, tr.v, "LaTIM factors (v)", layer);
  t.Z = put(z_, f.Z, "LaTIM factors (Z)", layer);
  t.S = put(s_, tr.S, "LaTIM factors (S)", layer);
  t.delta = put(delta_, tr.delta, "LaTIM factors (delta)", layer);
  t.B = put(b_, tr.B, "LaTIM factors (B)", layer);
  t.C = put(c_, tr.C, "LaTIM factors (C)", layer);
  t.conv_w = put(conv_w_, w.conv_w, "LaTIM factors (conv weight)", layer);
  t.conv_b = put(conv_b_, w.conv_b, "LaTIM factors (conv bias)", layer);
  std::vector<float> a2(w.A.size());
  for (std::size_t k2 = 0; k2 < a2.size(); ++k2) a2[k2] = w.A[k2] * 1.4426950408889634f;
  t.A2 = put(a2_, a2, "LaTIM factors (A)", layer);
  t.Dskip = put(dskip_, w.D_skip, "LaTIM factors (D)", layer);
  t.r_in = put(r_in_, tr.r_in, "LaTIM factors (r_in)", layer);
  const float* o = put(o_tmp_, tr.o, "LaTIM factors (o)", layer);
  float* yhat = yhat_.reserve(T * d, "LaTIM factors (yhat)", layer);
  cuda::latim_yhat(t.r_in, o, T * d, yhat, nullptr, layer);
  t.yhat = yhat;
  const float* wout = put(w_tmp_, w.out_proj, "LaTIM factors (W_out)", layer);
  const int64_t wn = cuda::latim_tile_wout_elems(d, D, prec_);
  void* wt = prec_ == TilePrecision::BF16 ? static_cast<void*>(wout16_.reserve(wn, "LaTIM W_out (bf16)", layer))
                                          : static_cast<void*>(wout32_.reserve(wn, "LaTIM W_out", layer));
  cuda::latim_prepare_wout(wout, d, D, prec_, wt, nullptr, layer);
  t.WoutT = wt;
  cuda::check(cudaDeviceSynchronize(), "LaTIM factor upload", layer);
  dev_ = t;
  key_ = std::move(k);
  have_ = true;
}

namespace {

class CudaTileBackend final : public TileBackend {
 public:
  explicit CudaTileBackend(Precision p) : factors_(p) {}
  const char* name() const override { return "cuda"; }

  void compute_tile(const LayerFactors& f, const ScoreSet& which, TileScores& out) override {
    const int layer = layer_of_ ? layer_of_(f.weights) : -1;
    factors_.upload(f, layer);
    const int64_t ni = out.ni, nn = ni * out.nj, d = f.config->d_model;
    float* scores = scores_.reserve(score_count(which) * nn, "LaTIM tile scores");
    double* contrib = which.contrib ? contrib_.reserve(ni * d, "LaTIM tile contribution sums") : nullptr;
    run_tile(which, out, d, scores, contrib, nullptr, layer);
    unpack(which, d, scores, contrib, out, [&](void* dst, const void* src, std::size_t bytes) {
      cuda::check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "LaTIM tile download", layer);
    });
  }
  // Two tiles in flight: while the host hands tile k to `done`, the device computes tile
  // k + 1 and a copy stream brings it to page-locked memory. The tile kernel and finalize
  // run on one stream (they share the partial sums); each slot's scores and contribution
  // sums are reused only after the copy that read them has finished.
  void compute_tiles(const LayerFactors& f, const ScoreSet& which, const TileReduce& reduce,
                     const std::vector<TileScores>& where,
                     const std::function<void(const TileScores&)>& done) override {
    const int layer = layer_of_ ? layer_of_(f.weights) : -1;
    const int64_t d = f.config->d_model;
    int64_t nn_max = 0, ni_max = 0, nj_max = 0;
    for (const TileScores& w : where) {
      nn_max = std::max(nn_max, w.ni * w.nj);
      ni_max = std::max(ni_max, w.ni);
      nj_max = std::max(nj_max, w.nj);
    }
    const int64_t nscores = score_count(which);
    // Per slot: the packed scores, or with `reduce` their reductions (4-byte values).
    int64_t red_max = 0;
    if (reduce.any())
      for (const TileScores& w : where) red_max = std::max(red_max, reduced_count(reduce, w.ni, w.nj));
    const int64_t out_max = reduce.any() ? nscores * red_max : nscores * nn_max;
    const std::size_t score_bytes = static_cast<std::size_t>(out_max) * sizeof(float);
    // LATIM_TILE_PIPELINE=0 computes the tiles one after the other (for diagnosis).
    static const bool off = [] {
      const char* e = std::getenv("LATIM_TILE_PIPELINE");
      return e && std::strcmp(e, "0") == 0;
    }();
    if (off || (where.size() < 2 && !reduce.any()) ||
        !pipeline_.ready(score_bytes + static_cast<std::size_t>(ni_max * d) * sizeof(double)))
      return TileBackend::compute_tiles(f, which, reduce, where, done);
    factors_.upload(f, layer);
    // Reserved for the largest tile up front: nothing is reallocated while tiles are in flight.
    partial_.reserve(cuda::latim_tile_partial_size(ni_max, nj_max, d), "LaTIM tile partial sums");
    hattn_.reserve(nn_max, "LaTIM tile hidden attention");
    float* scores[2] = {slot_scores_[0].reserve(nscores * nn_max, "LaTIM tile scores"),
                        slot_scores_[1].reserve(nscores * nn_max, "LaTIM tile scores")};
    double* contrib[2] = {nullptr, nullptr};
    if (which.contrib)
      for (int s = 0; s < 2; ++s) contrib[s] = slot_contrib_[s].reserve(ni_max * d, "LaTIM tile contribution sums");
    float* red[2] = {nullptr, nullptr};
    if (reduce.any())
      for (int s = 0; s < 2; ++s) red[s] = slot_reduced_[s].reserve(out_max, "LaTIM tile reductions");
    cudaStream_t cs = pipeline_.compute, xs = pipeline_.copy;
    auto launch = [&](std::size_t k) {
      const int s = static_cast<int>(k & 1);
      const TileScores& w = where[k];
      cuda::check(cudaStreamWaitEvent(cs, pipeline_.copied[s], 0), "LaTIM tile pipeline", layer);
      const int64_t n = run_tile(which, w, d, scores[s], contrib[s], cs, layer);
      const int64_t nout = reduce.any() ? reduce_on_device(reduce, w, nscores, scores[s], red[s], cs, layer) : n;
      cuda::check(cudaEventRecord(pipeline_.computed[s], cs), "LaTIM tile pipeline", layer);
      cuda::check(cudaStreamWaitEvent(xs, pipeline_.computed[s], 0), "LaTIM tile pipeline", layer);
      char* host = pipeline_.host[s];
      cuda::check(cudaMemcpyAsync(host, reduce.any() ? red[s] : scores[s], nout * sizeof(float),
                                  cudaMemcpyDeviceToHost, xs),
                  "LaTIM tile download", layer);
      if (which.contrib)
        cuda::check(
            cudaMemcpyAsync(host + score_bytes, contrib[s], w.ni * d * sizeof(double), cudaMemcpyDeviceToHost, xs),
            "LaTIM tile download", layer);
      cuda::check(cudaEventRecord(pipeline_.copied[s], xs), "LaTIM tile pipeline", layer);
    };
    auto finish = [&](std::size_t k) {
      const int s = static_cast<int>(k & 1);
      cuda::check(cudaEventSynchronize(pipeline_.copied[s]), "LaTIM tile (pipeline wait)", layer);
      TileScores& t = slot_out_[s];  // kept across calls: their pages are touched once
      t.i0 = where[k].i0;
      t.ni = where[k].ni;
      t.j0 = where[k].j0;
      t.nj = where[k].nj;
      const char* host = pipeline_.host[s];
      auto copy = [](void* dst, const void* src, std::size_t bytes) { std::memcpy(dst, src, bytes); };
      if (reduce.any())
        unpack_reduced(which, reduce, d, host, host + score_bytes, t);
      else
        unpack(which, d, host, host + score_bytes, t, copy);
      done(t);
    };
    launch(0);
    for (std::size_t k = 1; k < where.size(); ++k) {
      launch(k);
      finish(k - 1);
    }
    finish(where.size() - 1);
  }
  // ε of every row for a device-resident trace, on the device (the host version,
  // surrogate_approx_error, for host traces): the surrogate conv x̃ of the trace's v, the
  // layer's scan of x̃ with the forward's Δ, B, C (fp32 CUDA-core kernels, the fp32 mode's
  // forward scans, plus the skip), Z ⊙ ỹ, its product with W_out (cuBLAS fp32), and each
  // row's ε against o − b_out in fp64 sums.
  // bf16 with a device trace: the wgmma kernel's fp64 atomics into Σ_j T_i(x_j) cost 2.5 % of
  // the Mamba-1 kernel (H100, seventeenth session), the device surrogate one scan and one
  // product per layer; and it is closer to the exact ε than a sum of bf16 tiles. fp32 and
  // tf32 keep the tiles' sums, which agree with the CPU backend to 2e-5 (device_check).
  // Only where its workspaces (two [T, D] and one [T, d] fp32 arrays, 15 GB at T = 1M for
  // mamba-130m) take at most a quarter of the free device memory: the tiles' own scratch comes
  // after, and a long-context run must not fail for ε.
  bool prefers_approx_error_all_rows(const LayerFactors& f) const override {
    if (factors_.precision() != TilePrecision::BF16 || !f.trace) return false;
    const auto* dt = dynamic_cast<const CudaDeviceTrace*>(f.trace->device.get());
    if (!dt) return false;
    const cuda::TileFactors& t = dt->factors;
    auto more = [](int64_t want, int64_t have) { return static_cast<double>(std::max<int64_t>(0, want - have)) * 4.0; };
    const double need = more(t.T * t.D, sur_x_.size()) + more(t.T * t.D, sur_y_.size()) +
                        more(t.T * t.d, sur_s_.size()) + more(t.T, sur_eps_.size());
    std::size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) != cudaSuccess) return static_cast<void>(cudaGetLastError()), false;
    return need <= 0.25 * static_cast<double>(free);
  }
  bool approx_error_all_rows(const LayerFactors& f, std::vector<float>& eps) override {
    const auto* dt = dynamic_cast<const CudaDeviceTrace*>(f.trace->device.get());
    if (!dt) return TileBackend::approx_error_all_rows(f, eps);
    const cuda::TileFactors& t = dt->factors;
    const int layer = dt->layer;
    const int64_t T = t.T, D = t.D, d = t.d;
    if (!dt->A || !dt->Wout) fail("approximation error (layer ", layer, "): internal: the device trace has no weights");
    float* xt = sur_x_.reserve(T * D, "approximation error workspace (surrogate conv)", layer);
    float* y = sur_y_.reserve(T * D, "approximation error workspace (surrogate scan)", layer);
    cuda::latim_surrogate_conv(t.v, t.ldv, T, D, t.conv_w, t.K, t.conv_b, t.silu, xt, nullptr, layer);
    if (t.mamba2) {
      float* work = sur_work_.reserve(cuda::ssd_scan_work(T, t.H, t.P, t.N, t.G),
                                      "approximation error workspace (scan states)", layer);
      cuda::ssd_scan(xt, D, t.delta, dt->A, t.B, t.C, t.ldbc, t.Dskip, T, t.H, t.P, t.N, t.G, y, nullptr, work, false,
                     nullptr, layer);
    } else {
      float* work = sur_work_.reserve(cuda::selective_scan_work(T, D, t.N),
                                      "approximation error workspace (scan states)", layer);
      // raw_dt false: the scan reads Δ and does not write it
      cuda::selective_scan(xt, const_cast<float*>(t.delta), nullptr, false, dt->A, t.B, t.ldbc, t.C, t.ldbc, t.Dskip,
                           T, D, t.N, y, nullptr, work, nullptr, layer);
    }
    cuda::latim_gate_factor(y, t.Z, T * D, y, nullptr, layer);  // Z ⊙ ỹ, in place
    if (!blas_) blas_ = std::make_unique<cuda::Blas>();
    float* s = sur_s_.reserve(T * d, "approximation error workspace (W_out product)", layer);
    cuda::linear(*blas_, cuda::MathMode::FP32, y, T, D, D, dt->Wout, d, nullptr, s, d, nullptr,
                 "approximation error (W_out product)", layer);
    float* e = sur_eps_.reserve(T, "approximation error workspace (rows)", layer);
    cuda::latim_row_approx_error(dt->o, dt->bout, s, T, d, e, nullptr, layer);
    eps.resize(static_cast<std::size_t>(T));
    cuda::check(cudaMemcpy(eps.data(), e, static_cast<std::size_t>(T) * sizeof(float), cudaMemcpyDeviceToHost),
                "approximation error download", layer);
    return true;
  }
  std::function<int(const LayerWeights*)> layer_of_;

 private:
  static int64_t score_count(const ScoreSet& which) {
    return int64_t{which.l2} + int64_t{which.l1} + int64_t{which.alti} + int64_t{which.hidden_attn};
  }
  // The tile kernel and finalize for tile w on `stream`: Σ_j T_i(x_j) into contrib (null:
  // not computed, which.contrib false), the requested scores packed into `scores` in the
  // order l2, l1, alti, hidden attention. Returns the number of score values written.
  int64_t run_tile(const ScoreSet& which, const TileScores& w, int64_t d, float* scores, double* contrib,
                   cudaStream_t stream, int layer) {
    const int64_t ni = w.ni, nj = w.nj, nn = ni * nj;
    float* partial = partial_.reserve(cuda::latim_tile_partial_size(ni, nj, d), "LaTIM tile partial sums");
    float* hattn = hattn_.reserve(nn, "LaTIM tile hidden attention");
    if (contrib)
      cuda::check(cudaMemsetAsync(contrib, 0, static_cast<std::size_t>(ni * d) * sizeof(double), stream),
                  "cudaMemset", layer);
    cuda::latim_tile(factors_.get(), factors_.precision(), w.i0, ni, w.j0, nj, which.hidden_attn,
                     which.l1 || which.alti, partial, hattn,
                     contrib, stream, layer);
    float* next = scores;
    auto part = [&](bool on) { return on ? std::exchange(next, next + nn) : nullptr; };
    float* l2 = part(which.l2);
    float* l1 = part(which.l1);
    float* al = part(which.alti);
    float* ha = part(which.hidden_attn);
    cuda::latim_tile_finalize(w.i0, ni, w.j0, nj, d, partial, hattn, l2, l1, al, ha, stream, layer);
    return next - scores;
  }
  // 4-byte values of one score's reductions of an ni x nj tile: pooled sums and maxima, the
  // top-k values and columns, the window.
  static int64_t pooled_blocks(const TileReduce& r, int64_t ni, int64_t nj) {
    return r.pool > 0 ? ((ni + r.pool - 1) / r.pool) * ((nj + r.pool - 1) / r.pool) : 0;
  }
  static int64_t reduced_count(const TileReduce& r, int64_t ni, int64_t nj) {
    return 2 * pooled_blocks(r, ni, nj) + 2 * ni * r.topk + ni * r.window;
  }
  // The reductions of the tile's nscores packed score matrices at `scores` into `out`, packed
  // per score as reduced_count() lays them out. Returns the number of values written.
  static int64_t reduce_on_device(const TileReduce& r, const TileScores& w, int64_t nscores, const float* scores,
                                  float* out, cudaStream_t stream, int layer) {
    const int64_t nbq = pooled_blocks(r, w.ni, w.nj);
    float* o = out;
    for (int64_t k = 0; k < nscores; ++k) {
      const float* sc = scores + k * w.ni * w.nj;
      if (r.pool > 0) cuda::tile_pool(sc, w.i0, w.ni, w.j0, w.nj, r.pool, o, o + nbq, stream, layer);
      o += 2 * nbq;
      if (r.topk > 0)
        cuda::tile_topk(sc, w.i0, w.ni, w.j0, w.nj, r.topk, o, reinterpret_cast<int32_t*>(o + w.ni * r.topk), stream,
                        layer);
      o += 2 * w.ni * r.topk;
      if (r.window > 0) cuda::tile_window(sc, w.i0, w.ni, w.j0, w.nj, r.window, o, stream, layer);
      o += w.ni * r.window;
    }
    return o - out;
  }
  // Fills t.reduced (its geometry already set) from reductions packed by reduce_on_device at
  // `values` and the contribution sums at `contrib` (host memory); the score matrices are
  // left empty.
  static void unpack_reduced(const ScoreSet& which, const TileReduce& r, int64_t d, const char* values,
                             const char* contrib, TileScores& t) {
    const int64_t nbq = pooled_blocks(r, t.ni, t.nj);
    const float* src = reinterpret_cast<const float*>(values);
    for (int k = 0; k < 4; ++k) {
      t.matrix(k).clear();
      TileReduced& out = t.reduced[k];
      auto take = [&](std::vector<float>& v, int64_t n) {
        v.assign(src, src + n);
        src += n;
      };
      if (!which.at(k)) {
        out = TileReduced{};
        continue;
      }
      take(out.pool_sum, nbq);
      take(out.pool_max, nbq);
      take(out.top_value, t.ni * r.topk);
      const auto* c = reinterpret_cast<const int32_t*>(src);
      out.top_index.resize(t.ni * r.topk);
      for (int64_t e = 0; e < t.ni * r.topk; ++e) out.top_index[e] = c[e] < 0 ? -1 : t.j0 + c[e];
      src += t.ni * r.topk;
      take(out.window, t.ni * r.window);
    }
    if (!which.contrib) return t.contrib_sum.clear();
    t.contrib_sum.resize(t.ni * d);
    std::memcpy(t.contrib_sum.data(), contrib, t.ni * d * sizeof(double));
  }
  // Fills t's vectors (its geometry already set) from a tile's packed scores at `scores` and
  // its contribution sums at `contrib`, with copy(dst, src, bytes).
  template <class Copy>
  static void unpack(const ScoreSet& which, int64_t d, const void* scores, const void* contrib, TileScores& t,
                     Copy copy) {
    const int64_t nn = t.ni * t.nj;
    const char* src = static_cast<const char*>(scores);
    auto take = [&](bool on, std::vector<float>& v) {
      if (!on) return v.clear();
      v.resize(nn);
      copy(v.data(), src, nn * sizeof(float));
      src += nn * sizeof(float);
    };
    for (int k = 0; k < 4; ++k) take(which.at(k), t.matrix(k));
    if (!which.contrib) return t.contrib_sum.clear();
    t.contrib_sum.resize(t.ni * d);
    copy(t.contrib_sum.data(), contrib, t.ni * d * sizeof(double));
  }
  // Streams, events and two page-locked host slots for compute_tiles, made on first use;
  // ready() is false when page-locked memory cannot be had (then tiles run one at a time).
  struct Pipeline {
    cudaStream_t compute = nullptr, copy = nullptr;
    cudaEvent_t computed[2] = {}, copied[2] = {};
    char* host[2] = {};
    std::size_t host_bytes = 0;
    bool ready(std::size_t bytes) {
      if (!compute) {
        // Blocking streams: they wait for the forward's work on the default stream.
        cuda::check(cudaStreamCreate(&compute), "cudaStreamCreate", -1);
        cuda::check(cudaStreamCreate(&copy), "cudaStreamCreate", -1);
        for (int s = 0; s < 2; ++s) {
          cuda::check(cudaEventCreateWithFlags(&computed[s], cudaEventDisableTiming), "cudaEventCreate", -1);
          cuda::check(cudaEventCreateWithFlags(&copied[s], cudaEventDisableTiming), "cudaEventCreate", -1);
        }
      }
      if (bytes <= host_bytes) return true;
      cudaStreamSynchronize(copy);
      release_host();
      for (int s = 0; s < 2; ++s)
        if (cudaMallocHost(reinterpret_cast<void**>(&host[s]), bytes) != cudaSuccess) {
          cudaGetLastError();
          release_host();
          return false;
        }
      host_bytes = bytes;
      return true;
    }
    void release_host() {
      for (char*& h : host) {
        if (h) cudaFreeHost(h);
        h = nullptr;
      }
      host_bytes = 0;
    }
    ~Pipeline() {
      if (!compute) return;
      cudaStreamSynchronize(compute);
      cudaStreamSynchronize(copy);
      release_host();
      for (int s = 0; s < 2; ++s) {
        cudaEventDestroy(computed[s]);
        cudaEventDestroy(copied[s]);
      }
      cudaStreamDestroy(compute);
      cudaStreamDestroy(copy);
    }
  };

  DeviceLayerFactors factors_;
  DeviceArray<float> partial_, hattn_, scores_;
  DeviceArray<double> contrib_;
  DeviceArray<float> slot_scores_[2], slot_reduced_[2];
  TileScores slot_out_[2];
  DeviceArray<double> slot_contrib_[2];
  Pipeline pipeline_;
  DeviceArray<float> sur_x_, sur_y_, sur_work_, sur_s_, sur_eps_;  // approx_error_all_rows
  std::unique_ptr<cuda::Blas> blas_;
};

}  // namespace

void set_cuda_tile_layer_lookup(TileBackend& tiles, std::function<int(const LayerWeights*)> layer_of) {
  if (auto* t = dynamic_cast<CudaTileBackend*>(&tiles)) t->layer_of_ = std::move(layer_of);
}

std::unique_ptr<TileBackend> make_cuda_tile_backend(Precision precision) {
  return std::make_unique<CudaTileBackend>(precision);
}

}  // namespace latim
