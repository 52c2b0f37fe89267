// The CUDA tile backend: uploads a layer's factors once (cached by trace, weights, T and a
// sample of the data) and computes each tile with the fused kernel, returning host scores.
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cuda_backend.hpp"
#include "device_buffer.hpp"
#include "latim/error.hpp"
#include "latim_tile.hpp"

namespace latim {

namespace {

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

// Identifies the layer data behind a LayerFactors: addresses can be reused by the next
// layer or sequence, so a sample of the values is part of the key.
struct FactorKey {
  const void* trace = nullptr;
  const void* weights = nullptr;
  const void* z = nullptr;
  int64_t T = 0;
  std::vector<float> sample;
  bool operator==(const FactorKey&) const = default;
};

FactorKey key_of(const LayerFactors& f) {
  FactorKey k;
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

class CudaTileBackend final : public TileBackend {
 public:
  explicit CudaTileBackend(Precision p) : prec_(tile_precision(p)) {}
  const char* name() const override { return "cuda"; }

  void compute_tile(const LayerFactors& f, const ScoreSet& which, TileScores& out) override {
    const int layer = -1;
    upload(f);
    const int64_t ni = out.ni, nj = out.nj, d = f.config->d_model, nn = ni * nj;
    float* partial = partial_.reserve(cuda::latim_tile_partial_size(ni, nj, d), "LaTIM tile partial sums");
    float* hattn = hattn_.reserve(nn, "LaTIM tile hidden attention");
    double* contrib = contrib_.reserve(ni * d, "LaTIM tile contribution sums");
    float* scores = scores_.reserve(4 * nn, "LaTIM tile scores");
    cuda::check(cudaMemsetAsync(contrib, 0, static_cast<std::size_t>(ni * d) * sizeof(double)), "cudaMemset", layer);
    cuda::latim_tile(dev_, prec_, out.i0, ni, out.j0, nj, which.hidden_attn, partial, hattn, contrib, nullptr, layer);
    float* l2 = which.l2 ? scores : nullptr;
    float* l1 = which.l1 ? scores + nn : nullptr;
    float* alti = which.alti ? scores + 2 * nn : nullptr;
    float* ha = which.hidden_attn ? scores + 3 * nn : nullptr;
    cuda::latim_tile_finalize(out.i0, ni, out.j0, nj, d, partial, hattn, l2, l1, alti, ha, nullptr, layer);
    auto fetch = [&](const float* src, std::vector<float>& dst) {
      if (!src) {
        dst.clear();
        return;
      }
      dst.resize(nn);
      cuda::check(cudaMemcpy(dst.data(), src, nn * sizeof(float), cudaMemcpyDeviceToHost), "LaTIM tile download");
    };
    fetch(l2, out.l2);
    fetch(l1, out.l1);
    fetch(alti, out.alti);
    fetch(ha, out.hidden_attn);
    out.contrib_sum.resize(ni * d);
    cuda::check(cudaMemcpy(out.contrib_sum.data(), contrib, ni * d * sizeof(double), cudaMemcpyDeviceToHost),
                "LaTIM tile download");
  }

 private:
  template <class T>
  static const T* put(DeviceArray<T>& a, const std::vector<T>& v, const char* what) {
    if (v.empty()) return nullptr;
    return a.upload(v.data(), static_cast<int64_t>(v.size()), what);
  }

  void upload(const LayerFactors& f) {
    FactorKey k = key_of(f);
    if (have_ && k == key_) return;
    have_ = false;
    const ModelConfig& c = *f.config;
    const LayerWeights& w = *f.weights;
    const LayerTrace& tr = *f.trace;
    const int64_t T = tr.T, d = c.d_model, D = c.d_inner;
    cuda::TileFactors t;
    t.mamba2 = c.family == Family::Mamba2;
    t.silu = c.activation == Activation::SiLU;
    t.T = T;
    t.d = d;
    t.D = D;
    t.N = c.d_state;
    t.K = c.d_conv;
    t.H = c.n_heads;
    t.P = c.head_dim;
    t.G = c.n_groups;
    t.v = put(v_, tr.v, "LaTIM factors (v)");
    t.Z = put(z_, f.Z, "LaTIM factors (Z)");
    t.S = put(s_, tr.S, "LaTIM factors (S)");
    t.delta = put(delta_, tr.delta, "LaTIM factors (delta)");
    t.B = put(b_, tr.B, "LaTIM factors (B)");
    t.C = put(c_, tr.C, "LaTIM factors (C)");
    t.conv_w = put(conv_w_, w.conv_w, "LaTIM factors (conv weight)");
    t.conv_b = put(conv_b_, w.conv_b, "LaTIM factors (conv bias)");
    std::vector<float> a2(w.A.size());
    for (std::size_t k2 = 0; k2 < a2.size(); ++k2) a2[k2] = w.A[k2] * 1.4426950408889634f;
    t.A2 = put(a2_, a2, "LaTIM factors (A)");
    t.Dskip = put(dskip_, w.D_skip, "LaTIM factors (D)");
    t.r_in = put(r_in_, tr.r_in, "LaTIM factors (r_in)");
    const float* o = put(tmp_, tr.o, "LaTIM factors (o)");
    float* yhat = yhat_.reserve(T * d, "LaTIM factors (yhat)");
    cuda::latim_yhat(t.r_in, o, T * d, yhat, nullptr, -1);
    t.yhat = yhat;
    const float* wout = put(wtmp_, w.out_proj, "LaTIM factors (W_out)");
    const int64_t wn = cuda::latim_tile_Dpad(D) * cuda::latim_tile_dpad(d);
    void* wt = prec_ == TilePrecision::BF16 ? static_cast<void*>(wout16_.reserve(wn, "LaTIM W_out (bf16)"))
                                            : static_cast<void*>(wout32_.reserve(wn, "LaTIM W_out"));
    cuda::latim_prepare_wout(wout, d, D, prec_, wt, nullptr, -1);
    t.WoutT = wt;
    cuda::check(cudaDeviceSynchronize(), "LaTIM factor upload");
    dev_ = t;
    key_ = std::move(k);
    have_ = true;
  }

  TilePrecision prec_;
  bool have_ = false;
  FactorKey key_;
  cuda::TileFactors dev_;
  DeviceArray<float> v_, z_, delta_, b_, c_, conv_w_, conv_b_, a2_, dskip_, r_in_, yhat_, tmp_, wtmp_, wout32_;
  DeviceArray<uint16_t> wout16_;
  DeviceArray<double> s_;
  DeviceArray<float> partial_, hattn_, scores_;
  DeviceArray<double> contrib_;
};

}  // namespace

std::unique_ptr<TileBackend> make_cuda_tile_backend(Precision precision) {
  return std::make_unique<CudaTileBackend>(precision);
}

}  // namespace latim
