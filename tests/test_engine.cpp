// The CPU LaTIM engine: exactness for identity-activation models, independence of the tile
// size, and the triangular layout. (Agreement with the numpy reference is checked by
// tests/check_against_reference.py.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <string>
#include <limits>
#include <map>

#include "latim/latim.hpp"
#include "latim/tokens.hpp"
#include "model/cpu_ops.hpp"
#include "reference_fp64.hpp"
#include "test_util.hpp"

namespace latim {
namespace {

using reference::Recorder;
using test::MemorySink;

// Runs the forward pass and the engine on every layer of a fixture.
struct MapRun : LayerObserver {
  MapRun(const ModelWeights& m, EngineOptions o) : model(m), opt(o) {}
  bool wants_trace(int) const override { return true; }
  void on_layer(int layer, const LayerWeights& w, const LayerTrace* tr, const std::vector<float>&) override {
    sink.T = tr->T;
    const LayerFactors f = make_layer_factors(model.config, w, *tr);
    compute_layer_maps(layer, f, *backend, opt, sink, &rollout);
  }
  const ModelWeights& model;
  EngineOptions opt;
  std::unique_ptr<TileBackend> backend = make_cpu_tile_backend();
  MemorySink sink;
  std::vector<float> rollout;
};

MemorySink run_maps(const std::string& fixture, int64_t T, int64_t panel, std::vector<Score> scores,
                    const MapPlan& plan = MapPlan{}) {
  const std::string dir = test::data_dir() + "/" + fixture;
  const ModelWeights model = load_model(dir);
  std::vector<int64_t> tokens = read_token_file(dir + "/tokens.txt", model.config.vocab_size);
  tokens.resize(T);
  EngineOptions opt;
  opt.scores = scores;
  opt.panel = panel;
  opt.plan = plan;
  MapRun run(model, opt);
  forward_cpu(model, tokens, &run);
  return run.sink;
}

class IdentityExact : public ::testing::TestWithParam<std::string> {};

TEST_P(IdentityExact, ApproximationErrorVanishes) {
  const MemorySink s = run_maps(GetParam(), 120, 32, {Score::L2});
  ASSERT_FALSE(s.eps.empty());
  for (const auto& [layer, e] : s.eps)
    for (std::size_t i = 0; i < e.size(); ++i) ASSERT_LE(e[i], 1e-5) << "layer " << layer << " row " << i;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, IdentityExact, ::testing::Values("mamba1_identity_f32", "mamba2_identity_f32"));

TEST(Engine, SiluModelsHaveNonzeroError) {
  // The surrogate is not exact for SiLU: a zero error here would mean it is not computed.
  const MemorySink s = run_maps("mamba1_f32", 40, 16, {Score::L2});
  double mx = 0;
  for (const auto& [l, e] : s.eps)
    for (float v : e) mx = std::max<double>(mx, v);
  EXPECT_GT(mx, 1e-3);
}

// A band of sources alone (--window, no ALTI) computes only the tiles near the diagonal;
// past the first panels ε comes from the surrogate's whole-sequence scan instead of the
// tiles' sums. It must equal the full map's ε (the tiles' Σ_j T_i(x_j)) on every row.
class BandError : public ::testing::TestWithParam<std::string> {};

TEST_P(BandError, SurrogateScanGivesTheFullMapsError) {
  MapPlan band;
  band.full = false;
  band.window = 5;
  const MemorySink full = run_maps(GetParam(), 150, 16, {Score::L2});
  const MemorySink part = run_maps(GetParam(), 150, 16, {Score::L2}, band);
  ASSERT_EQ(part.eps.size(), full.eps.size());
  for (const auto& [layer, want] : full.eps) {
    const std::vector<float>& got = part.eps.at(layer);
    ASSERT_EQ(got.size(), want.size());
    double scale = 0.0;
    for (float v : want) scale = std::max<double>(scale, v);
    for (std::size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-5 + 1e-3 * scale) << "layer " << layer << " row " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, BandError,
                         ::testing::Values("mamba1_f32", "mamba1_bias_f16", "mamba1_identity_f32", "mamba2_f32",
                                           "mamba2_g2_f32", "mamba2_identity_f32"));

// A backend that prefers ε from the surrogate (as the CUDA backend does in bf16) gets tiles
// asked for no Σ_j T_i(x_j) sums, and ε of every row comes from approx_error_all_rows: the
// maps are the same bits and ε is the full map's within the surrogate's bound.
class PreferredSurrogate : public ::testing::TestWithParam<std::string> {};

TEST_P(PreferredSurrogate, TilesSkipTheSumsAndEpsilonStays) {
  struct Prefers final : TileBackend {
    std::unique_ptr<TileBackend> cpu = make_cpu_tile_backend();
    int with_sums = 0, without = 0;
    const char* name() const override { return "cpu (prefers the surrogate)"; }
    void compute_tile(const LayerFactors& f, const ScoreSet& which, TileScores& out) override {
      ++(which.contrib ? with_sums : without);
      cpu->compute_tile(f, which, out);
      EXPECT_EQ(out.contrib_sum.empty(), !which.contrib);
    }
    bool prefers_approx_error_all_rows(const LayerFactors&) const override { return true; }
  };
  const std::string dir = test::data_dir() + "/" + GetParam();
  const ModelWeights model = load_model(dir);
  std::vector<int64_t> tokens = read_token_file(dir + "/tokens.txt", model.config.vocab_size);
  tokens.resize(150);
  EngineOptions opt;
  opt.scores = {Score::L2, Score::L1};
  opt.panel = 32;
  MapRun plain(model, opt), pref(model, opt);
  auto* p = new Prefers;
  pref.backend.reset(p);
  forward_cpu(model, tokens, &plain);
  forward_cpu(model, tokens, &pref);
  EXPECT_EQ(p->with_sums, 0);
  EXPECT_GT(p->without, 0);
  ASSERT_EQ(pref.sink.eps.size(), plain.sink.eps.size());
  for (const auto& [layer, want] : plain.sink.eps) {
    const std::vector<float>& got = pref.sink.eps.at(layer);
    ASSERT_EQ(got.size(), want.size());
    double scale = 0.0;
    for (float v : want) scale = std::max<double>(scale, v);
    for (std::size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-5 + 1e-3 * scale) << "layer " << layer << " row " << i;
  }
  ASSERT_EQ(pref.sink.maps.size(), plain.sink.maps.size());
  for (const auto& [key, want] : plain.sink.maps) {
    const auto& got = pref.sink.maps.at(key);
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t k = 0; k < want.size(); ++k)
      ASSERT_TRUE(got[k] == want[k] || (std::isnan(got[k]) && std::isnan(want[k]))) << "map entry " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PreferredSurrogate,
                         ::testing::Values("mamba1_f32", "mamba1_identity_f32", "mamba2_g2_f32"));

class TileInvariance : public ::testing::TestWithParam<std::string> {};

TEST_P(TileInvariance, PanelSizeDoesNotChangeTheMaps) {
  const std::vector<Score> all{Score::L2, Score::L1, Score::Alti, Score::AltiRollout, Score::HiddenAttn};
  const MemorySink a = run_maps(GetParam(), 75, 16, all);
  const MemorySink b = run_maps(GetParam(), 75, 256, all);
  const int64_t T = 75;
  ASSERT_EQ(a.maps.size(), b.maps.size());
  for (const auto& [key, ma] : a.maps) {
    const auto& mb = b.maps.at(key);
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j) {
        const float x = ma[i * T + j], y = mb[i * T + j];
        if (j > i) {
          ASSERT_TRUE(std::isnan(x) && std::isnan(y)) << to_string(key.second) << " upper (" << i << "," << j << ")";
        } else {
          ASSERT_TRUE(std::isfinite(x)) << to_string(key.second) << " (" << i << "," << j << ")";
          ASSERT_NEAR(x, y, 1e-5 * (1 + std::abs(y))) << to_string(key.second) << " layer " << key.first << " (" << i
                                                       << "," << j << ")";
        }
      }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TileInvariance, ::testing::Values("mamba1_bias_f16", "mamba2_g2_f32"));

TEST(Engine, AltiRowsSumToOne) {
  const MemorySink s = run_maps("mamba2_f32", 50, 16, {Score::Alti, Score::AltiRollout});
  for (const auto& [key, m] : s.maps)
    for (int64_t i = 0; i < 50; ++i) {
      double sum = 0;
      for (int64_t j = 0; j <= i; ++j) sum += m[i * 50 + j];
      ASSERT_NEAR(sum, 1.0, 1e-4) << to_string(key.second) << " layer " << key.first << " row " << i;
    }
}

// A tile backend kept across models sees new weights at an old address (the allocator
// reuses it): nothing it caches may be keyed by the address alone. Here A of layer 0 changes
// in place, and the kept backend must agree with a fresh one.
TEST(Engine, KeptTileBackendSeesWeightsChangedInPlace) {
  const std::string dir = test::data_dir() + "/mamba1_f32";
  ModelWeights model = load_model(dir);
  std::vector<int64_t> tokens = read_token_file(dir + "/tokens.txt", model.config.vocab_size);
  tokens.resize(24);
  Recorder rec;
  rec.trace_layers = Recorder::kAll;
  forward_cpu(model, tokens, &rec);
  const LayerTrace& tr = rec.trace.at(0);
  auto kept = make_cpu_tile_backend();
  ScoreSet which;
  which.l2 = true;
  TileScores a;
  a.ni = a.nj = 24;
  const LayerFactors f = make_layer_factors(model.config, model.layers[0], tr);
  kept->compute_tile(f, which, a);
  for (float& x : model.layers[0].A) x *= 3.0f;  // same vector, same address, other values
  TileScores b = a, c = a;
  kept->compute_tile(f, which, b);
  make_cpu_tile_backend()->compute_tile(f, which, c);
  ASSERT_EQ(b.l2.size(), c.l2.size());
  double differs = 0.0;
  for (std::size_t k = 0; k < c.l2.size(); ++k) {
    if (std::isnan(c.l2[k])) continue;
    ASSERT_EQ(b.l2[k], c.l2[k]) << "pair " << k;
    differs = std::max<double>(differs, std::abs(a.l2[k] - c.l2[k]));
  }
  EXPECT_GT(differs, 0.0) << "changing A did not change the scores: the test checks nothing";
}

// The test runner chose the BLAS kernels as latim does (test_main.cpp): on a CPU with AVX2 and
// FMA, OpenBLAS must not run its SSE3-era kernels, which it falls back to for CPU models newer
// than the library. A second call changes nothing.
TEST(BlasKernels, NotTheSse3OnesOnACpuWithAvx2) {
  const std::string k = cpu::blas_kernels();
  if (k.rfind("OpenBLAS ", 0) != 0) GTEST_SKIP() << "not OpenBLAS: " << k;
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) GTEST_SKIP() << "no AVX2 and FMA";
#else
  GTEST_SKIP() << "not x86-64";
#endif
  const char* user = std::getenv("OPENBLAS_CORETYPE");
  std::string core = k.substr(9);
  std::transform(core.begin(), core.end(), core.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (user && std::string(user) != "SkylakeX" && std::string(user) != "Haswell")
    GTEST_SKIP() << "OPENBLAS_CORETYPE=" << user << " chosen by the user";
  for (const char* old : {"prescott", "core2", "penryn", "nehalem", "atom", "sandybridge", "unknown"})
    EXPECT_NE(core, old) << k;
  EXPECT_EQ(cpu::choose_blas_kernels(), "");
  EXPECT_EQ(cpu::blas_kernels(), k);
}

}  // namespace
}  // namespace latim
