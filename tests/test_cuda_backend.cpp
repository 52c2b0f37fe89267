// One test, every backend: the forward pass against the HF goldens and against the CPU
// backend (per-layer residuals and every trace field), and the LaTIM maps of the backend's
// tile engine against the CPU tile engine. Instantiated for "cpu" and "cuda" (fp32); the
// CUDA instances skip on a machine without a GPU. The bf16/tf32 tile paths are judged
// against an fp64 reference: their error must be at most twice that of a plain
// implementation in the same precision.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "latim/backend.hpp"
#include "latim/forward.hpp"
#include "latim/latim.hpp"
#include "latim/model.hpp"
#include "latim/safetensors.hpp"
#include "latim/tokens.hpp"
#include "parallel/sequence_link.hpp"
#include "reference_fp64.hpp"
#include "test_cuda_util.hpp"
#include "test_util.hpp"

#ifdef LATIM_HAVE_CUDA
#include "../bench/bench_models.hpp"
#include "backend/cuda_backend.hpp"
#include "conv_xproj.hpp"
#include "device_buffer.hpp"
#include "latim_tile_wgmma.hpp"
#endif

namespace latim {
namespace {

using reference::norm_error;
using reference::Recorder;
using reference::reference_contribution;

const char* kFixtures[] = {"mamba1_f32", "mamba1_bias_f16",     "mamba1_ssm_padded", "mamba1_identity_f32",
                           "mamba2_f32", "mamba2_bf16_sharded", "mamba2_g2_f32",     "mamba2_identity_f32"};

std::unique_ptr<ComputeBackend> backend_for(const std::string& name) {
  return make_backend(name, Precision::FP32);
}


std::vector<int64_t> fixture_tokens(const std::string& dir, const ModelWeights& m, int64_t T) {
  const std::vector<int64_t> base = read_token_file(dir + "/tokens.txt", m.config.vocab_size);
  std::vector<int64_t> t(T);
  for (int64_t k = 0; k < T; ++k) t[k] = base[k % base.size()];
  return t;
}

class BackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "cuda") LATIM_SKIP_WITHOUT_GPU();
  }
};

TEST_P(BackendTest, ForwardMatchesTransformersGoldens) {
  auto backend = backend_for(GetParam());
  for (const char* fx : kFixtures) {
    const std::string dir = cudatest::data_dir() + "/" + fx;
    const ModelWeights model = load_model(dir);
    SafetensorsFile golden(dir + "/golden.safetensors");
    for (int T : {1, 7, 64, 300}) {
      const std::string sfx = "_T" + std::to_string(T);
      const std::vector<int64_t> tokens = to_int64(golden.at("tokens" + sfx));
      Recorder rec;
      const ForwardOutput fwd = backend->forward(model, tokens, &rec);
      ASSERT_EQ(static_cast<int64_t>(rec.residual.size()), model.config.n_layer) << fx;
      for (int64_t l = 0; l < model.config.n_layer; ++l) {
        const std::vector<float> want = to_float32(golden.at("hidden" + sfx + "_L" + std::to_string(l)));
        EXPECT_LE(norm_error(rec.residual[l], want), 1e-4) << fx << " T=" << T << " layer " << l;
      }
      const int64_t V = model.config.vocab_size;
      std::vector<float> logits(T * V);
      compute_logits(model, fwd, 0, T, logits.data());
      EXPECT_LE(norm_error(logits, to_float32(golden.at("logits" + sfx))), 1e-4) << fx << " T=" << T << " logits";
    }
  }
}

// Residuals and traces against the CPU backend, at lengths that span several scan chunks.
TEST_P(BackendTest, ForwardAndTracesMatchCpuBackend) {
  auto backend = backend_for(GetParam());
  auto cpu = backend_for("cpu");
  for (const char* fx : kFixtures) {
    const std::string dir = cudatest::data_dir() + "/" + fx;
    const ModelWeights model = load_model(dir);
    for (int64_t T : {300, 700}) {
      const std::vector<int64_t> tokens = fixture_tokens(dir, model, T);
      Recorder a, b;
      a.trace_layers = b.trace_layers = Recorder::kAll;
      const ForwardOutput fa = backend->forward(model, tokens, &a);
      const ForwardOutput fb = cpu->forward(model, tokens, &b);
      const std::string at = std::string(fx) + " T=" + std::to_string(T);
      EXPECT_LE(norm_error(fa.final_hidden, fb.final_hidden), 1e-5) << at << " final hidden";
      {  // untraced: the CUDA backend's fp32 mode takes split tf32 products there (FP32X3)
        Recorder u;
        const ForwardOutput fu = backend->forward(model, tokens, &u);
        EXPECT_LE(norm_error(fu.final_hidden, fb.final_hidden), 1e-5) << at << " final hidden, untraced";
        for (std::size_t l = 0; l < b.residual.size(); ++l)
          EXPECT_LE(norm_error(u.residual[l], b.residual[l]), 1e-5) << at << " layer " << l << " residual, untraced";
      }
      for (std::size_t l = 0; l < b.residual.size(); ++l) {
        const std::string where = at + " layer " + std::to_string(l);
        EXPECT_LE(norm_error(a.residual[l], b.residual[l]), 1e-5) << where << " residual";
        const LayerTrace &x = a.trace[l], &y = b.trace[l];
        ASSERT_EQ(x.T, y.T) << where;
        EXPECT_LE(norm_error(x.r_in, y.r_in), 1e-5) << where << " r_in";
        EXPECT_LE(norm_error(x.o, y.o), 1e-5) << where << " o";
        EXPECT_LE(norm_error(x.v, y.v), 1e-5) << where << " v";
        EXPECT_LE(norm_error(x.x, y.x), 1e-5) << where << " x";
        EXPECT_LE(norm_error(x.delta, y.delta), 1e-5) << where << " delta";
        EXPECT_LE(norm_error(x.S, y.S), 1e-5) << where << " S";
        EXPECT_LE(norm_error(x.B, y.B), 1e-5) << where << " B";
        EXPECT_LE(norm_error(x.C, y.C), 1e-5) << where << " C";
        EXPECT_LE(norm_error(x.gate, y.gate), 1e-5) << where << " gate";
        EXPECT_LE(norm_error(x.gamma, y.gamma), 1e-5) << where << " gamma";
      }
    }
  }
}

// A sequence run in chunks through forward_layers(), joined by a SequenceLink with carried
// state (conv tails, scan states, Δ sums), against the CPU forward of the whole sequence:
// the final residual rows and every trace field of every chunk.
TEST_P(BackendTest, ChunkedLayersMatchWholeSequence) {
  auto backend = backend_for(GetParam());
  auto cpu = backend_for("cpu");
  for (const char* fx : kFixtures) {
    const std::string dir = cudatest::data_dir() + "/" + fx;
    const ModelWeights model = load_model(dir);
    const int64_t T = 700, d = model.config.d_model, L = model.config.n_layer;
    const std::vector<int64_t> tokens = fixture_tokens(dir, model, T);
    Recorder whole;
    whole.trace_layers = Recorder::kAll;
    cpu->forward(model, tokens, &whole);
    const Group one_rank;  // the link keeps a reference
    ShardedSequenceLink link(one_rank, static_cast<int>(L));
    const int64_t cuts[] = {0, 250, 251 + 240, T};  // uneven chunks
    for (int k = 0; k < 3; ++k) {
      const int64_t c0 = cuts[k], c1 = cuts[k + 1], n = c1 - c0;
      std::vector<float> r = embed_tokens(model, std::vector<int64_t>(tokens.begin() + c0, tokens.begin() + c1), c0);
      Recorder part;
      part.trace_layers = Recorder::kAll;
      backend->forward_layers(model, 0, L, n, r, &link, &part);
      const std::string at = std::string(fx) + " chunk [" + std::to_string(c0) + ", " + std::to_string(c1) + ")";
      auto rows = [&](const auto& v, int64_t width) {
        return std::vector<typename std::decay_t<decltype(v)>::value_type>(v.begin() + c0 * width,
                                                                           v.begin() + c1 * width);
      };
      std::vector<float> want_r = rows(whole.trace[L - 1].r_in, d);  // the last layer's input + its output
      const std::vector<float> last_o = rows(whole.trace[L - 1].o, d);
      for (std::size_t q = 0; q < want_r.size(); ++q) want_r[q] += last_o[q];
      EXPECT_LE(norm_error(r, want_r), 1e-5) << at << " final residual";
      ASSERT_EQ(static_cast<int64_t>(part.trace.size()), L) << at;
      for (int64_t l = 0; l < L; ++l) {
        const LayerTrace &x = part.trace[l], &y = whole.trace[l];
        const std::string where = at + " layer " + std::to_string(l);
        ASSERT_EQ(x.T, n) << where;
        const int64_t D = model.config.d_inner, W = static_cast<int64_t>(y.delta.size()) / T,
                      BC = static_cast<int64_t>(y.B.size()) / T;
        EXPECT_LE(norm_error(x.r_in, rows(y.r_in, d)), 1e-5) << where << " r_in";
        EXPECT_LE(norm_error(x.o, rows(y.o, d)), 1e-5) << where << " o";
        EXPECT_LE(norm_error(x.v, rows(y.v, D)), 1e-5) << where << " v";
        EXPECT_LE(norm_error(x.x, rows(y.x, D)), 1e-5) << where << " x";
        EXPECT_LE(norm_error(x.delta, rows(y.delta, W)), 1e-5) << where << " delta";
        EXPECT_LE(norm_error(x.S, rows(y.S, W)), 1e-5) << where << " S";
        EXPECT_LE(norm_error(x.B, rows(y.B, BC)), 1e-5) << where << " B";
        EXPECT_LE(norm_error(x.C, rows(y.C, BC)), 1e-5) << where << " C";
        EXPECT_LE(norm_error(x.gate, rows(y.gate, D)), 1e-5) << where << " gate";
        if (!y.gamma.empty()) EXPECT_LE(norm_error(x.gamma, rows(y.gamma, D)), 1e-5) << where << " gamma";
      }
    }
  }
}

using test::MemorySink;

MemorySink maps_from(const ModelWeights& model, const std::vector<LayerTrace>& traces, TileBackend& tiles,
                     int64_t panel) {
  // (CudaStage.ChunkedDeviceForwardMatchesCpu's observer maps with the same scores and rollout.)
  MemorySink sink;
  sink.T = traces.at(0).T;
  EngineOptions opt;
  opt.scores = {Score::L2, Score::L1, Score::Alti, Score::AltiRollout, Score::HiddenAttn};
  opt.panel = panel;
  std::vector<float> rollout;
  for (std::size_t l = 0; l < traces.size(); ++l) {
    const LayerFactors f = make_layer_factors(model.config, model.layers[l], traces[l]);
    compute_layer_maps(static_cast<int>(l), f, tiles, opt, sink, &rollout);
  }
  return sink;
}

// The backend's tile engine on the CPU's traces, against the CPU tile engine.
TEST_P(BackendTest, MapsMatchCpuTileBackend) {
  auto backend = backend_for(GetParam());
  auto cpu_tiles = make_cpu_tile_backend();
  auto cpu = backend_for("cpu");
  for (const char* fx : kFixtures) {
    const std::string dir = cudatest::data_dir() + "/" + fx;
    const ModelWeights model = load_model(dir);
    for (auto [T, panel] : {std::pair<int64_t, int64_t>{75, 16}, {150, 64}, {40, 256}}) {
      Recorder rec;
      rec.trace_layers = Recorder::kAll;
      cpu->forward(model, fixture_tokens(dir, model, T), &rec);
      const MemorySink a = maps_from(model, rec.trace, backend->tiles(), panel);
      const MemorySink b = maps_from(model, rec.trace, *cpu_tiles, panel);
      const std::string at = std::string(fx) + " T=" + std::to_string(T) + " panel=" + std::to_string(panel);
      ASSERT_EQ(a.maps.size(), b.maps.size()) << at;
      for (const auto& [key, mb] : b.maps)
        EXPECT_LE(norm_error(a.maps.at(key), mb), 1e-5) << at << " layer " << key.first << " " << to_string(key.second);
      for (const auto& [layer, eb] : b.eps) {
        double mx = 0.0;
        for (std::size_t i = 0; i < eb.size(); ++i) mx = std::max<double>(mx, std::abs(a.eps.at(layer)[i] - eb[i]));
        EXPECT_LE(mx, 1e-5) << at << " layer " << layer << " approximation error";
      }
    }
  }
}

// Plans of reductions only: the CUDA backend reduces each tile on the device (tile_reduce.cu)
// and returns only the reductions; they must equal the host reduction of the same backend's
// full tiles (pool sums up to fp64 summation order).
TEST_P(BackendTest, DeviceTileReductionsMatchHostReductions) {
  auto backend = backend_for(GetParam());
  const ModelWeights m = load_model(cudatest::data_dir() + "/mamba2_f32");
  const int64_t T = 150, B = 32;
  Recorder rec;
  rec.trace_layers = 1;
  backend_for("cpu")->forward(m, fixture_tokens(cudatest::data_dir() + "/mamba2_f32", m, T), &rec);
  const LayerFactors f = make_layer_factors(m.config, m.layers[0], rec.trace[0]);
  ScoreSet which;
  which.l2 = which.l1 = which.hidden_attn = true;
  std::vector<TileScores> where;
  for (int64_t i0 : {64, 128})
    for (int64_t j0 = 0; j0 <= i0; j0 += B) {
      TileScores w;
      w.i0 = i0;
      w.ni = std::min(B, T - i0);
      w.j0 = j0;
      w.nj = std::min(B, w.i0 + w.ni - j0);  // sources up to the tile's last row
      where.push_back(w);
    }
  TileReduce red;
  red.pool = 16;
  red.topk = 6;
  red.window = 40;
  std::vector<TileScores> full, reduced;
  backend->tiles().compute_tiles(f, which, TileReduce{}, where, [&](const TileScores& t) { full.push_back(t); });
  backend->tiles().compute_tiles(f, which, red, where, [&](const TileScores& t) { reduced.push_back(t); });
  ASSERT_EQ(full.size(), where.size());
  ASSERT_EQ(reduced.size(), where.size());
  for (std::size_t n = 0; n < where.size(); ++n) {
    TileScores want = full[n];
    reduce_tile(red, want);
    const TileScores& got = reduced[n];
    EXPECT_TRUE(got.l2.empty() && got.hidden_attn.empty()) << "tile " << n << ": reduced tiles carry their scores";
    EXPECT_EQ(got.contrib_sum, want.contrib_sum) << "tile " << n;
    for (int k : {0, 1, 3}) {
      const TileReduced &a = got.reduced[k], &b = want.reduced[k];
      const std::string at = "tile " + std::to_string(n) + " score " + std::to_string(k);
      ASSERT_EQ(a.pool_sum.size(), b.pool_sum.size()) << at;
      for (std::size_t e = 0; e < b.pool_sum.size(); ++e) {
        ASSERT_EQ(std::isnan(a.pool_sum[e]), std::isnan(b.pool_sum[e])) << at << " pool block " << e;
        if (std::isnan(b.pool_sum[e])) continue;
        EXPECT_NEAR(a.pool_sum[e], b.pool_sum[e], 1e-6 * std::abs(b.pool_sum[e]) + 1e-30) << at << " pool block " << e;
        EXPECT_EQ(a.pool_max[e], b.pool_max[e]) << at << " pool block " << e;
      }
      // Same K best per row; the device gives them in any order.
      const int64_t K = red.topk;
      for (int64_t r = 0; r < got.ni; ++r) {
        std::vector<std::pair<float, int64_t>> x, y;
        for (int64_t e = r * K; e < (r + 1) * K; ++e) {
          if (a.top_index[e] >= 0) x.push_back({a.top_value[e], a.top_index[e]});
          if (b.top_index[e] >= 0) y.push_back({b.top_value[e], b.top_index[e]});
        }
        std::sort(x.rbegin(), x.rend());
        std::sort(y.rbegin(), y.rend());
        ASSERT_EQ(x, y) << at << " top-k of row " << r;
        for (int64_t w = 0; w < red.window; ++w) {
          const int64_t j = got.i0 + r - w;
          if (j >= got.j0 && j < got.j0 + got.nj)
            EXPECT_EQ(a.window[r * red.window + w], b.window[r * red.window + w]) << at << " window row " << r;
        }
      }
    }
  }
}

// Identity activation: the decomposition reproduces the mixer output on this backend too.
TEST_P(BackendTest, IdentityModelsAreExact) {
  auto backend = backend_for(GetParam());
  for (const char* fx : {"mamba1_identity_f32", "mamba2_identity_f32"}) {
    const std::string dir = cudatest::data_dir() + "/" + fx;
    const ModelWeights model = load_model(dir);
    Recorder rec;
    rec.trace_layers = Recorder::kAll;
    backend->forward(model, fixture_tokens(dir, model, 120), &rec);
    const MemorySink s = maps_from(model, rec.trace, backend->tiles(), 32);
    for (const auto& [layer, e] : s.eps)
      for (std::size_t i = 0; i < e.size(); ++i) ASSERT_LE(e[i], 1e-5) << fx << " layer " << layer << " row " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendTest, ::testing::Values("cpu", "cuda"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

#ifdef LATIM_HAVE_CUDA

struct RefScores {
  std::vector<double> l2, l1, alti;
};

RefScores reference_tile(const LayerFactors& f, int64_t T, int bits) {
  const int64_t d = f.config->d_model;
  RefScores s;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < T; ++j) {
      if (j > i) {
        s.l2.push_back(nan);
        s.l1.push_back(nan);
        s.alti.push_back(nan);
        continue;
      }
      const std::vector<double> t = reference_contribution(f, i, j, bits);
      double l2 = 0, l1 = 0, al = 0;
      for (int64_t k = 0; k < d; ++k) {
        const double yh = static_cast<double>(f.trace->r_in[i * d + k]) + f.trace->o[i * d + k];
        const double th = t[k] + (i == j ? f.trace->r_in[i * d + k] : 0.0);
        l2 += t[k] * t[k];
        l1 += std::abs(t[k]);
        al += std::abs(yh) - std::abs(yh - th);
      }
      s.l2.push_back(std::sqrt(l2));
      s.l1.push_back(l1);
      s.alti.push_back(std::max(0.0, al));
    }
  return s;
}

struct LowPrecisionCase {
  Precision precision;
  int bits;
};

class CudaTilePrecision : public ::testing::TestWithParam<LowPrecisionCase> {
 protected:
  void SetUp() override { LATIM_SKIP_WITHOUT_GPU(); }
};

TEST_P(CudaTilePrecision, ErrorAtMostTwiceAPlainImplementation) {
  const auto [precision, bits] = GetParam();
  auto tiles = make_cuda_tile_backend(precision);
  auto cpu = backend_for("cpu");
  for (const char* fx : {"mamba1_f32", "mamba2_f32", "mamba2_g2_f32", "mamba1_bias_f16"}) {
    const std::string dir = cudatest::data_dir() + "/" + fx;
    const ModelWeights model = load_model(dir);
    const int64_t T = 48;
    Recorder rec;
    rec.trace_layers = Recorder::kAll;
    cpu->forward(model, fixture_tokens(dir, model, T), &rec);
    for (std::size_t l = 0; l < rec.trace.size(); ++l) {
      const LayerFactors f = make_layer_factors(model.config, model.layers[l], rec.trace[l]);
      TileScores t;
      t.i0 = t.j0 = 0;
      t.ni = t.nj = T;
      ScoreSet which;
      which.l2 = which.l1 = which.alti = true;
      tiles->compute_tile(f, which, t);
      const RefScores exact = reference_tile(f, T, 0), plain = reference_tile(f, T, bits);
      const std::string at = std::string(fx) + " layer " + std::to_string(l) + " " + to_string(precision);
      const double floor = 1e-6;  // both errors can round to nothing on tiny layers
      EXPECT_LE(norm_error(t.l2, exact.l2), 2 * norm_error(plain.l2, exact.l2) + floor) << at << " l2";
      EXPECT_LE(norm_error(t.l1, exact.l1), 2 * norm_error(plain.l1, exact.l1) + floor) << at << " l1";
      EXPECT_LE(norm_error(t.alti, exact.alti), 2 * norm_error(plain.alti, exact.alti) + floor) << at << " alti";
    }
  }
}

#ifdef LATIM_HAVE_CUDA
// The l2 scores `l2s` of a tile at (i0, j0), nj columns wide, on the pairs j <= i of rows
// [ia, ie) x columns [ja, je): {their error against fp64, that of a plain implementation
// rounding to `bits` mantissa bits}.
std::pair<double, double> l2_fp64_errors(const LayerFactors& f, const std::vector<float>& l2s, int64_t i0, int64_t j0,
                                         int64_t nj, int64_t ia, int64_t ie, int64_t ja, int64_t je, int bits) {
  std::vector<double> got, exact, plain;
  for (int64_t i = ia; i < ie; ++i)
    for (int64_t j = ja; j < je && j <= i; ++j) {
      got.push_back(l2s[(i - i0) * nj + (j - j0)]);
      auto l2 = [&](int b) {
        double ss = 0.0;
        for (const double t : reference_contribution(f, i, j, b)) ss += t * t;
        return std::sqrt(ss);
      };
      exact.push_back(l2(0));
      plain.push_back(l2(bits));
    }
  return {norm_error(got, exact), norm_error(plain, exact)};
}

// The sm_90a wgmma kernel (bf16) against the mma.sync kernel on the same tile, every output,
// and against fp64 on a block of pairs. A mamba2-130m- and a mamba-130m-shaped layer, the
// latter also with the identity activation (the fixtures are too narrow for the wgmma
// kernel), a tile whose edges cut through pair blocks. The tile's corner (i0 - j0 = 34)
// makes some pair blocks end at their first target (jb + 18 = ib): the skip term on M_{i,i}
// must reach them. Mamba-1 without the hidden attention runs the factored launch (u from R,
// the diagonal band apart): its scores are checked against the mma.sync kernel too.
// On a GPU that can run the wgmma kernel the test fails if it did not run.
TEST_P(CudaTilePrecision, WgmmaKernelMatchesMmaKernelAndFp64) {
  const auto [precision, bits] = GetParam();
  if (precision != Precision::BF16) GTEST_SKIP() << "the wgmma kernel is the bf16 path";
  struct Case {
    Family fam;
    Activation act;
  };
  for (const Case c : {Case{Family::Mamba2, Activation::SiLU}, Case{Family::Mamba1, Activation::SiLU},
                       Case{Family::Mamba1, Activation::Identity}}) {
    const Family fam = c.fam;
    SCOPED_TRACE(std::string(fam == Family::Mamba1 ? "mamba-130m shapes" : "mamba2-130m shapes") +
                 (c.act == Activation::Identity ? ", identity activation" : ""));
    ModelWeights m = bench::random_model(bench::shape_130m(fam, 1), 11);
    m.config.activation = c.act;
    const int64_t T = 240;
    auto cpu = backend_for("cpu");
    Recorder rec;
    rec.trace_layers = 1;
    cpu->forward(m, bench::random_tokens(T, m.config.vocab_size, 5), &rec);
    const LayerFactors f = make_layer_factors(m.config, m.layers[0], rec.trace[0]);
    ScoreSet which;
    which.l2 = which.l1 = which.alti = which.hidden_attn = true;
    auto run = [&](bool mma, const ScoreSet& want) {
      const cudatest::ScopedEnv kernel("LATIM_TILE_KERNEL", mma ? "mma" : "wgmma");
      auto tiles = make_cuda_tile_backend(Precision::BF16);
      TileScores t;
      t.i0 = 39;
      t.ni = 201;
      t.j0 = 5;
      t.nj = 235;
      tiles->compute_tile(f, want, t);
      return t;
    };
    const int64_t before = cuda::latim_tile_wgmma_launches();
    const TileScores w = run(false, which);
    if (cuda::latim_tile_wgmma_supported()) EXPECT_GT(cuda::latim_tile_wgmma_launches(), before) << "wgmma kernel did not run";
    const int64_t mid = cuda::latim_tile_wgmma_launches();
    const TileScores s = run(true, which);
    EXPECT_EQ(cuda::latim_tile_wgmma_launches(), mid) << "LATIM_TILE_KERNEL=mma still ran the wgmma kernel";
    auto as_double = [](const auto& v) { return std::vector<double>(v.begin(), v.end()); };
    std::vector<float> factored_l2;  // Mamba-1: l2 of the factored launch
    {
      // l2 alone runs the epilogue without the l1 and ALTI sums. Mamba-2: the same ‖T‖² bits.
      // Mamba-1: the factored launch, within the bounds below of the mma.sync kernel; and
      // l1 and ALTI without the hidden attention, likewise.
      ScoreSet l2_only, no_hattn = which;
      l2_only.l2 = true;
      no_hattn.hidden_attn = false;
      const int64_t fac = cuda::latim_tile_wgmma_factored_launches();
      const TileScores o = run(false, l2_only);
      EXPECT_TRUE(o.l1.empty() && o.alti.empty());
      ASSERT_EQ(o.l2.size(), w.l2.size());
      // Without the Σ_j T_i(x_j) sums (the engine's choice in bf16, ε then from the
      // surrogate): the same score bits from both kernels, and no sums.
      {
        ScoreSet nosum = l2_only;
        nosum.contrib = false;
        const TileScores q = run(false, nosum), qm = run(true, nosum);
        EXPECT_TRUE(q.contrib_sum.empty() && qm.contrib_sum.empty());
        ASSERT_EQ(q.l2.size(), o.l2.size());
        ASSERT_EQ(qm.l2.size(), s.l2.size());
        for (std::size_t k = 0; k < o.l2.size(); ++k) {
          ASSERT_TRUE(q.l2[k] == o.l2[k] || (std::isnan(q.l2[k]) && std::isnan(o.l2[k]))) << "no sums, pair " << k;
          ASSERT_TRUE(qm.l2[k] == s.l2[k] || (std::isnan(qm.l2[k]) && std::isnan(s.l2[k])))
              << "no sums, mma.sync kernel, pair " << k;
        }
      }
      if (fam == Family::Mamba2) {
        for (std::size_t k = 0; k < w.l2.size(); ++k)
          ASSERT_TRUE(o.l2[k] == w.l2[k] || (std::isnan(o.l2[k]) && std::isnan(w.l2[k]))) << "l2 alone, pair " << k;
        // (fp64 atomics: the order of the additions may differ between launches)
        EXPECT_LE(norm_error(o.contrib_sum, w.contrib_sum), 1e-12) << "l2 alone: Σ_j T_i(x_j) differs";
      } else {
        if (cuda::latim_tile_wgmma_supported())
          EXPECT_GT(cuda::latim_tile_wgmma_factored_launches(), fac) << "the factored launch did not run";
        const TileScores a = run(false, no_hattn);
        EXPECT_TRUE(a.hidden_attn.empty());
        for (const TileScores* x : {&o, &a}) {
          const std::string at = x == &o ? "factored, l2 alone" : "factored, all scores";
          EXPECT_LE(norm_error(as_double(x->l2), as_double(s.l2)), 1e-3) << at;
          EXPECT_LE(norm_error(x->contrib_sum, s.contrib_sum), 1.5e-3) << at;
          for (std::size_t k = 0; k < x->l2.size(); ++k)
            ASSERT_EQ(std::isnan(x->l2[k]), std::isnan(s.l2[k])) << at << ", pair " << k << ": upper triangle differs";
        }
        factored_l2 = o.l2;
        EXPECT_LE(norm_error(as_double(a.l1), as_double(s.l1)), 1e-3) << "factored";
        EXPECT_LE(norm_error(as_double(a.alti), as_double(s.alti)), 2e-3) << "factored";
        std::printf("[ wgmma M1 factored ] l2 %.3g (unfactored %.3g), l1 %.3g, alti %.3g against mma.sync\n",
                    norm_error(as_double(o.l2), as_double(s.l2)), norm_error(as_double(w.l2), as_double(s.l2)),
                    norm_error(as_double(a.l1), as_double(s.l1)), norm_error(as_double(a.alti), as_double(s.alti)));
      }
    }
    // The same products up to fp32 sum order and the wgmma kernel's SiLU through tanh.approx
    // (relative error 2^-11), which changes the bf16 rounding of some u values: measured
    // 4.1e-4 (l2, l1) and 6.2e-4 (Σ_j T), against 2.3e-3 for the bf16 error itself. The
    // accuracy bound that matters is the fp64 one below.
    EXPECT_LE(norm_error(as_double(w.l2), as_double(s.l2)), 1e-3);
    EXPECT_LE(norm_error(as_double(w.l1), as_double(s.l1)), 1e-3);
    EXPECT_LE(norm_error(as_double(w.alti), as_double(s.alti)), 2e-3);
    // (Mamba-1: the wgmma kernel's gaps S_i - S_l come from fp32 offsets to S at the block's
    // first source, the mma.sync kernel's from fp64 S; the channel sums run in another order.)
    EXPECT_LE(norm_error(as_double(w.hidden_attn), as_double(s.hidden_attn)), fam == Family::Mamba1 ? 1e-5 : 1e-6);
    EXPECT_LE(norm_error(w.contrib_sum, s.contrib_sum), 1.5e-3);
    for (std::size_t k = 0; k < w.l2.size(); ++k)
      ASSERT_EQ(std::isnan(w.l2[k]), std::isnan(s.l2[k])) << "pair " << k << ": upper triangle differs";
    // fp64 on the pairs of rows [ia, ie) x columns [ja, je): error at most twice plain bf16's.
    auto fp64_check = [&](const std::vector<float>& l2s, int64_t ia, int64_t ie, int64_t ja, int64_t je,
                          const char* what) {
      const auto [e, plain] = l2_fp64_errors(f, l2s, w.i0, w.j0, w.nj, ia, ie, ja, je, bits);
      EXPECT_LE(e, 2 * plain + 1e-7) << what;
    };
    // Blocks whose positions all precede their targets.
    fp64_check(w.l2, 220, 240, 170, 190, "rows 220-239, columns 170-189");
    if (!factored_l2.empty()) fp64_check(factored_l2, 220, 240, 170, 190, "factored, rows 220-239, columns 170-189");
    // The block of sources 197-212 ends at its first target (jb + 18 = ib = 215): pair (215, 212)
    // takes D x_{215←212}; and a block on the diagonal.
    fp64_check(w.l2, 215, 223, 197, 213, "block (215, 197)");
    if (!factored_l2.empty()) fp64_check(factored_l2, 215, 223, 197, 213, "factored, block (215, 197)");
    fp64_check(w.l2, 231, 239, 229, 240, "block on the diagonal");
  }
}

// The factored Mamba-1 build multiplies R and P on fp16 tensor cores, each scaled by a power
// of two per (source, channel) and per (target, channel). Without those scales, factors near
// fp16's smallest normal (2^-14) or below would lose their digits or flush to zero. Here B
// and C are 2^-12 times a real layer's, so u is 2^-24 times as large on pairs that the skip
// term D does not reach (still far from fp32's limits). On the pairs 32 or more apart (all in
// fast blocks, the factored launch's): the error against fp64 within twice plain bf16's, as
// large against the mma.sync kernel as on the unscaled layer, and the unscaled layer's scores
// times 2^-24 up to a few bf16 roundings of u (the scales' exponent sums round differently).
TEST_P(CudaTilePrecision, WgmmaFactoredBuildKeepsSmallFactors) {
  const auto [precision, bits] = GetParam();
  if (precision != Precision::BF16) GTEST_SKIP() << "the wgmma kernel is the bf16 path";
  if (!cuda::latim_tile_wgmma_supported()) GTEST_SKIP() << "needs a GPU that runs the wgmma kernel";
  ModelWeights m = bench::random_model(bench::shape_130m(Family::Mamba1, 1), 11);
  const int64_t T = 240;
  auto cpu = backend_for("cpu");
  Recorder rec;
  rec.trace_layers = 1;
  cpu->forward(m, bench::random_tokens(T, m.config.vocab_size, 5), &rec);
  ScoreSet l2;
  l2.l2 = true;
  auto run = [&](const LayerTrace& tr, bool mma) {
    const cudatest::ScopedEnv kernel("LATIM_TILE_KERNEL", mma ? "mma" : "wgmma");
    const LayerFactors f = make_layer_factors(m.config, m.layers[0], tr);
    auto tiles = make_cuda_tile_backend(Precision::BF16);
    TileScores t;
    t.i0 = 0;
    t.ni = T;
    t.j0 = 0;
    t.nj = T;
    tiles->compute_tile(f, l2, t);
    return t.l2;
  };
  auto far = [&](const std::vector<float>& v, int scale) {  // pairs i - j >= 32, times 2^scale
    std::vector<double> out;
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j + 32 <= i; ++j) out.push_back(std::ldexp(static_cast<double>(v[i * T + j]), scale));
    return out;
  };
  LayerTrace small = rec.trace[0];
  const float down = std::ldexp(1.0f, -12);
  for (float& b : small.B) b *= down;
  for (float& c : small.C) c *= down;
  const int64_t fac = cuda::latim_tile_wgmma_factored_launches();
  const std::vector<float> got = run(small, false);
  EXPECT_GT(cuda::latim_tile_wgmma_factored_launches(), fac) << "the factored launch did not run";
  const std::vector<double> base = far(run(rec.trace[0], false), 0), base_mma = far(run(rec.trace[0], true), 0);
  const std::vector<double> scaled = far(got, 0), want = far(run(small, true), 0), up = far(got, 24);
  const double e_base = norm_error(base, base_mma), e_scaled = norm_error(scaled, want), e_up = norm_error(up, base);
  EXPECT_LE(e_scaled, 1.25 * e_base + 1e-6) << "scaled layer against the mma.sync kernel";
  EXPECT_LE(e_up, 2e-4) << "scaled layer times 2^24 against the unscaled one";
  // fp64 on rows 220-239 x columns 100-119
  const auto [e64, e_plain] =
      l2_fp64_errors(make_layer_factors(m.config, m.layers[0], small), got, 0, 0, T, 220, 240, 100, 120, bits);
  EXPECT_LE(e64, 2 * e_plain) << "scaled layer against fp64";
  std::printf("[ factored, B and C times 2^-12 ] l2 %.3g against mma.sync (unscaled %.3g), %.3g against unscaled "
              "times 2^-24, %.3g against fp64 (plain bf16 %.3g)\n",
              e_scaled, e_base, e_up, e64, e_plain);
}
#endif

INSTANTIATE_TEST_SUITE_P(Precisions, CudaTilePrecision,
                         ::testing::Values(LowPrecisionCase{Precision::BF16, 7}, LowPrecisionCase{Precision::TF32, 10}),
                         [](const ::testing::TestParamInfo<LowPrecisionCase>& p) {
                           return std::string(to_string(p.param.precision));
                         });

// The forward in the tf32 and bf16 modes (in bf16: in_proj and out_proj on bf16 operands,
// and in_proj's output in bf16 in untraced layers; in every mode: each residual add fused
// with the next norm, or in untraced layers into out_proj) against the CPU's fp32 forward:
// the final hidden state, every layer's residual, and the trace fields downstream of the
// products, within the bounds bench/cuda_bench.cpp uses for these modes.
class CudaLowPrecisionForward : public ::testing::TestWithParam<Precision> {
 protected:
  void SetUp() override { LATIM_SKIP_WITHOUT_GPU(); }
};

TEST_P(CudaLowPrecisionForward, MatchesCpuWithinTheRounding) {
  const Precision p = GetParam();
  auto gpu = make_backend("cuda", p);
  auto cpu = backend_for("cpu");
  const double bound = p == Precision::BF16 ? 1e-1 : 2e-2;
  for (const char* fx : kFixtures) {
    const std::string dir = cudatest::data_dir() + "/" + fx;
    const ModelWeights model = load_model(dir);
    const int64_t T = 700;
    const std::vector<int64_t> tokens = fixture_tokens(dir, model, T);
    Recorder a, b;
    a.trace_layers = b.trace_layers = Recorder::kAll;
    const ForwardOutput fa = gpu->forward(model, tokens, &a);
    const ForwardOutput fb = cpu->forward(model, tokens, &b);
    const std::string at = std::string(fx) + " " + to_string(p);
    EXPECT_LE(norm_error(fa.final_hidden, fb.final_hidden), bound) << at << " final hidden";
    ASSERT_EQ(a.residual.size(), b.residual.size()) << at;
    for (std::size_t l = 0; l < b.residual.size(); ++l) {
      const std::string where = at + " layer " + std::to_string(l);
      EXPECT_LE(norm_error(a.residual[l], b.residual[l]), bound) << where << " residual";
      const LayerTrace &x = a.trace[l], &y = b.trace[l];
      EXPECT_LE(norm_error(x.r_in, y.r_in), bound) << where << " r_in";
      EXPECT_LE(norm_error(x.o, y.o), bound) << where << " o";
      EXPECT_LE(norm_error(x.v, y.v), bound) << where << " v";
      EXPECT_LE(norm_error(x.gate, y.gate), bound) << where << " gate";
      EXPECT_LE(norm_error(x.gamma, y.gamma), bound) << where << " gamma";
    }
    // forward() untraced, twice on the same backend. Untraced layers differ from traced
    // ones: in bf16 their in_proj writes bf16 (traced ones keep fp32 for the trace), and in
    // every mode out_proj adds into the residual stream in cuBLAS's epilogue (one rounding of
    // r + o instead of two), so the untraced forward is held to the same bound of the CPU,
    // and to the same bits the second time (the bf16 weight copies and the chained norms).
    Recorder c, e;
    const ForwardOutput fc = gpu->forward(model, tokens, &c);
    const ForwardOutput fe = gpu->forward(model, tokens, &e);
    EXPECT_EQ(fe.final_hidden, fc.final_hidden) << at << " second forward";
    EXPECT_LE(norm_error(fc.final_hidden, fb.final_hidden), bound) << at << " untraced final hidden";
    ASSERT_EQ(c.residual.size(), b.residual.size()) << at;
    for (std::size_t l = 0; l < b.residual.size(); ++l)
      EXPECT_LE(norm_error(c.residual[l], b.residual[l]), bound) << at << " untraced layer " << l << " residual";
  }
}

INSTANTIATE_TEST_SUITE_P(LowPrecision, CudaLowPrecisionForward, ::testing::Values(Precision::BF16, Precision::TF32),
                         [](const ::testing::TestParamInfo<Precision>& p) { return std::string(to_string(p.param)); });

#ifdef LATIM_HAVE_CUDA
// Mamba-1 in the bf16 mode at a length where its untraced layers run the conv and x_proj as
// one kernel (conv_xproj): a mamba-130m-shaped layer against the CPU's fp32 forward. The
// fixtures above are too narrow for that kernel, and too short for it to pay. The bound is
// a sixth of the bf16 bound above (the bench measures 3.4e-3 on two such layers).
TEST(CudaLowPrecisionLong, Mamba1ConvAndXprojInOneKernelMatchCpu) {
  LATIM_SKIP_WITHOUT_GPU();
  const int64_t T = 17408;
  if (!cuda::conv_xproj_pays(T)) GTEST_SKIP() << "T = " << T << " is too short for conv_xproj on this GPU";
  const ModelWeights m = bench::random_model(bench::shape_130m(Family::Mamba1, 1), 5);
  const std::vector<int64_t> tokens = bench::random_tokens(T, m.config.vocab_size);
  auto gpu = make_backend("cuda", Precision::BF16);
  auto cpu = backend_for("cpu");
  const ForwardOutput a = gpu->forward(m, tokens, nullptr);
  const ForwardOutput b = cpu->forward(m, tokens, nullptr);
  EXPECT_LE(norm_error(a.final_hidden, b.final_hidden), 2e-2);
  EXPECT_EQ(gpu->forward(m, tokens, nullptr).final_hidden, a.final_hidden) << "second forward";
}
#endif

// The grid's device forward (forward_stage) on one rank: a sequence in uneven chunks, the
// conv tails, scan states and Δ sums carried on the device, every layer traced and kept on
// the device until the last chunk. Its final rows and the maps of the traces it hands over
// (on the CUDA tile backend) against the CPU forward and CPU tile backend of the whole
// sequence.
TEST(CudaStage, ChunkedDeviceForwardMatchesCpu) {
  LATIM_SKIP_WITHOUT_GPU();
  auto backend = make_backend("cuda", Precision::FP32);
  const Group one_rank;
  if (!backend->has_device_grid(one_rank)) GTEST_SKIP() << "built without NCCL";
  auto cpu = make_backend("cpu", Precision::FP32);
  auto cpu_tiles = make_cpu_tile_backend();
  EngineOptions opt;
  opt.scores = {Score::L2, Score::L1, Score::Alti, Score::AltiRollout, Score::HiddenAttn};
  opt.panel = 64;
  for (const char* fx : kFixtures) {
    const std::string dir = cudatest::data_dir() + "/" + fx;
    const ModelWeights model = load_model(dir);
    const int64_t T = 700, d = model.config.d_model, L = model.config.n_layer;
    const std::vector<int64_t> tokens = fixture_tokens(dir, model, T);
    Recorder whole;
    whole.trace_layers = Recorder::kAll;
    const ForwardOutput want = cpu->forward(model, tokens, &whole);
    const test::MemorySink want_maps = maps_from(model, whole.trace, *cpu_tiles, opt.panel);

    struct Maps final : LayerObserver {
      const ModelWeights* model;
      TileBackend* tiles;
      EngineOptions opt;
      test::MemorySink sink;
      std::vector<float> rollout;
      std::vector<int> seen;
      bool wants_trace(int) const override { return true; }
      bool accepts_device_trace(int) const override { return true; }
      void on_layer(int l, const LayerWeights& w, const LayerTrace* tr, const std::vector<float>&) override {
        ASSERT_TRUE(tr && tr->device);
        seen.push_back(l);
        compute_layer_maps(l, make_layer_factors(model->config, w, *tr), *tiles, opt, sink, &rollout);
      }
    } maps;
    maps.model = &model;
    maps.tiles = &backend->tiles();
    maps.opt = opt;
    maps.sink.T = T;
    StagePlan plan;
    plan.layer_begin = 0;
    plan.layer_end = L;
    plan.chunks = {0, 250, 251 + 240, T};  // uneven chunks
    std::vector<float> hidden(static_cast<std::size_t>(T * d), std::numeric_limits<float>::quiet_NaN());
    const StageOutput out = backend->forward_stage(model, tokens, plan, one_rank, one_rank, &maps,
                                                   [&](const float* h, int64_t row0, int64_t n) {
                                                     std::copy(h, h + n * d, hidden.begin() + row0 * d);
                                                   });
    const std::string at = fx;
    EXPECT_EQ(out.residual_bytes, 0) << at;
    EXPECT_LE(norm_error(hidden, want.final_hidden), 1e-5) << at << " final hidden";
    std::vector<int> layers(static_cast<std::size_t>(L));
    for (int64_t l = 0; l < L; ++l) layers[l] = static_cast<int>(l);
    EXPECT_EQ(maps.seen, layers) << at << ": traced layers handed over once each, in order";
    ASSERT_EQ(maps.sink.maps.size(), want_maps.maps.size()) << at;
    for (const auto& [key, mb] : want_maps.maps)
      EXPECT_LE(norm_error(maps.sink.maps.at(key), mb), 1e-5) << at << " layer " << key.first << " "
                                                             << to_string(key.second);
    // ε_i = ‖o_i − Σ_j T_i(x_j)‖ / ‖o_i‖ subtracts two fp32 sums of the whole row, so it
    // carries more rounding than the maps: this chunked forward's ε differs from the CPU's by
    // 1.0014e-5 at most (mamba2_f32 layer 2) with OpenBLAS's AVX-512 kernels on the CPU side
    // and by less with its SSE3 ones, against 1e-5 before; 2e-5 is that with a margin.
    for (const auto& [layer, eb] : want_maps.eps) {
      double mx = 0.0;
      for (std::size_t i = 0; i < eb.size(); ++i)
        mx = std::max<double>(mx, std::abs(maps.sink.eps.at(layer)[i] - eb[i]));
      EXPECT_LE(mx, 2e-5) << at << " layer " << layer << " approximation error";
    }
  }
}

// ε of every row without the tiles, for device-resident traces (what a --window-only plan
// asks past its first panels): the CUDA tile backend computes it on the device (surrogate
// conv, the fp32 scans, W_out product, fp64 row norms); it must match the host's fp64
// surrogate on the CPU forward's traces (the host version, tested in BandError against the
// full map's ε), with the same tolerance as that test.
TEST(CudaStage, DeviceTraceApproximationErrorMatchesTheHostSurrogate) {
  LATIM_SKIP_WITHOUT_GPU();
  auto backend = make_backend("cuda", Precision::FP32);
  auto cpu = make_backend("cpu", Precision::FP32);
  for (const char* fx : kFixtures) {
    const std::string dir = cudatest::data_dir() + "/" + fx;
    const ModelWeights model = load_model(dir);
    const int64_t T = 700;
    const std::vector<int64_t> tokens = fixture_tokens(dir, model, T);
    Recorder whole;
    whole.trace_layers = Recorder::kAll;
    cpu->forward(model, tokens, &whole);
    struct Eps final : LayerObserver {
      const ModelWeights* model;
      TileBackend* tiles;
      std::map<int, std::vector<float>> eps;
      bool wants_trace(int) const override { return true; }
      bool accepts_device_trace(int) const override { return true; }
      void on_layer(int l, const LayerWeights& w, const LayerTrace* tr, const std::vector<float>&) override {
        ASSERT_TRUE(tr && tr->device);
        ASSERT_TRUE(tiles->approx_error_all_rows(make_layer_factors(model->config, w, *tr), eps[l]));
      }
    } dev;
    dev.model = &model;
    dev.tiles = &backend->tiles();
    backend->forward(model, tokens, &dev);
    ASSERT_EQ(dev.eps.size(), whole.trace.size()) << fx;
    for (std::size_t l = 0; l < whole.trace.size(); ++l) {
      std::vector<float> want;
      ASSERT_TRUE(surrogate_approx_error(make_layer_factors(model.config, model.layers[l], whole.trace[l]), want));
      const std::vector<float>& got = dev.eps.at(static_cast<int>(l));
      ASSERT_EQ(got.size(), want.size()) << fx;
      double scale = 0.0, worst = 0.0;
      for (float v : want) scale = std::max<double>(scale, v);
      for (std::size_t i = 0; i < want.size(); ++i) worst = std::max<double>(worst, std::abs(got[i] - want[i]));
      EXPECT_LE(worst, 1e-5 + 1e-3 * scale) << fx << " layer " << l << " (largest ε " << scale << ")";
      if (std::string(fx).find("identity") == std::string::npos)
        EXPECT_GT(scale, 1e-4) << fx << " layer " << l << ": SiLU models have a non-zero ε";
    }
  }
}

// The same device forward in bf16, untraced (in_proj and the conv write bf16 there): the
// conv halos are read from the bf16 in_proj output and the scan joins take C widened from
// the bf16 conv output (Mamba-2), in uneven chunks on one rank. The joins add the incoming
// state in another order than the whole-sequence scan, so values rounded to bf16 after
// them can land on the other side of a rounding midpoint: the two bf16 forwards are two
// roundings of the same computation, each about 5e-3 from the CPU's fp32 forward, and the
// chunked one must be as close to it as the whole-sequence one (a wrong halo or join would
// put whole rows off by far more).
TEST(CudaStage, ChunkedBf16ForwardMatchesTheWholeSequence) {
  LATIM_SKIP_WITHOUT_GPU();
  auto backend = make_backend("cuda", Precision::BF16);
  auto cpu = make_backend("cpu", Precision::FP32);
  const Group one_rank;
  if (!backend->has_device_grid(one_rank)) GTEST_SKIP() << "built without NCCL";
  for (const char* fx : kFixtures) {
    const std::string dir = cudatest::data_dir() + "/" + fx;
    const ModelWeights model = load_model(dir);
    const int64_t T = 700, d = model.config.d_model, L = model.config.n_layer;
    const std::vector<int64_t> tokens = fixture_tokens(dir, model, T);
    const ForwardOutput whole = backend->forward(model, tokens, nullptr);
    const ForwardOutput want = cpu->forward(model, tokens, nullptr);
    StagePlan plan;
    plan.layer_begin = 0;
    plan.layer_end = L;
    plan.chunks = {0, 250, 251 + 240, T};
    std::vector<float> hidden(static_cast<std::size_t>(T * d), std::numeric_limits<float>::quiet_NaN());
    backend->forward_stage(model, tokens, plan, one_rank, one_rank, nullptr,
                           [&](const float* h, int64_t row0, int64_t n) {
                             std::copy(h, h + n * d, hidden.begin() + row0 * d);
                           });
    const double e_whole = norm_error(whole.final_hidden, want.final_hidden), e_chunk = norm_error(hidden, want.final_hidden);
    std::printf("%s: bf16 forward vs CPU: whole %.2e, chunked %.2e, chunked vs whole %.2e\n", fx, e_whole, e_chunk,
                norm_error(hidden, whole.final_hidden));
    EXPECT_LE(e_chunk, 2 * e_whole + 2e-3) << fx << " (whole-sequence bf16: " << e_whole << ")";
  }
}

TEST(CudaErrors, OutOfMemoryNamesTheBufferAndTheRemedy) {
  LATIM_SKIP_WITHOUT_GPU();
  cuda::DeviceArray<float> huge;
  try {
    huge.reserve(int64_t{1} << 46, "LaTIM tile scratch", 7);
    FAIL() << "a 256 TiB allocation succeeded";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("LaTIM tile scratch"), std::string::npos) << m;
    EXPECT_NE(m.find("layer 7"), std::string::npos) << m;
    EXPECT_NE(m.find("asked for"), std::string::npos) << m;
    EXPECT_NE(m.find("--tile"), std::string::npos) << m;
  }
  huge.reserve(16, "small buffer");  // the device still works afterwards
}

TEST(CudaErrors, TileOutsideTheSequenceNamesTheKernel) {
  LATIM_SKIP_WITHOUT_GPU();
  const std::string dir = cudatest::data_dir() + "/mamba2_f32";
  const ModelWeights model = load_model(dir);
  Recorder rec;
  rec.trace_layers = Recorder::kAll;
  backend_for("cpu")->forward(model, fixture_tokens(dir, model, 20), &rec);
  const LayerFactors f = make_layer_factors(model.config, model.layers[0], rec.trace[0]);
  auto tiles = make_cuda_tile_backend(Precision::FP32);
  TileScores t;
  t.i0 = 16;
  t.ni = 16;  // rows 16..31 of a 20-token sequence
  t.j0 = 0;
  t.nj = 16;
  ScoreSet which;
  which.l2 = true;
  try {
    tiles->compute_tile(f, which, t);
    FAIL() << "no error for a tile outside the sequence";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("latim_tile"), std::string::npos) << e.what();
  }
}

#endif  // LATIM_HAVE_CUDA

}  // namespace
}  // namespace latim
