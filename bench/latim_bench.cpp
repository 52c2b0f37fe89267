// CPU benchmark: forward tok/s and LaTIM pairs/s on random models with the shapes of
// mamba-130m / mamba2-130m, plus peak host memory. Prints a table and writes JSON.
// With --check it first verifies the engine on an identity-activation copy of the shape
// (the decomposition must then reproduce the mixer output) before timing anything.
#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>

#include "bench_models.hpp"
#include "latim/forward.hpp"
#include "latim/latim.hpp"
#include "model/cpu_ops.hpp"

using namespace latim;
using namespace latim::bench;

namespace {

struct CountingSink : MapSink {
  double max_eps = 0.0;
  int64_t cells = 0;
  void on_panel(int, Score, int64_t, int64_t ni, int64_t ncols, const float*) override { cells += ni * ncols; }
  void on_approx_error(int, int64_t, int64_t ni, const float* e) override {
    for (int64_t i = 0; i < ni; ++i) max_eps = std::max<double>(max_eps, e[i]);
  }
};

struct LayerMaps : LayerObserver {
  LayerMaps(const ModelWeights& m) : model(m) {}
  bool wants_trace(int layer) const override { return layer == 0; }
  void on_layer(int layer, const LayerWeights& w, const LayerTrace* tr, const std::vector<float>&) override {
    if (!tr) return;
    const LayerFactors f = make_layer_factors(model.config, w, *tr);
    EngineOptions opt;
    opt.scores = {Score::L2};
    const double t0 = now();
    compute_layer_maps(layer, f, *backend, opt, sink, nullptr);
    seconds = now() - t0;
  }
  const ModelWeights& model;
  std::unique_ptr<TileBackend> backend = make_cpu_tile_backend();
  CountingSink sink;
  double seconds = 0;
};

}  // namespace

int main(int argc, char** argv) {
  latim::cpu::flush_denormals_to_zero();
  latim::cpu::choose_blas_kernels();
  int64_t fwd_T = 4096, layers = 24;
  std::vector<int64_t> map_T{512, 2048};
  std::string json = "latim_bench.json";
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--check") check = true;
    else if (a == "--forward-tokens" && i + 1 < argc) fwd_T = std::stoll(argv[++i]);
    else if (a == "--layers" && i + 1 < argc) layers = std::stoll(argv[++i]);
    else if (a == "--map-tokens" && i + 1 < argc) {
      map_T.clear();
      std::string s = argv[++i];
      for (size_t p = 0; p != std::string::npos;) {
        size_t q = s.find(',', p);
        map_T.push_back(std::stoll(s.substr(p, q == std::string::npos ? q : q - p)));
        p = q == std::string::npos ? q : q + 1;
      }
    } else if (a == "--json" && i + 1 < argc) json = argv[++i];
    else {
      std::fprintf(stderr, "usage: latim_bench [--check] [--forward-tokens T] [--layers L] [--map-tokens 512,2048] [--json FILE]\n");
      return 2;
    }
  }
  std::ofstream js(json);
  js << "{\"results\": [\n";
  bool first = true;
  std::printf("%s, %d threads\n", latim::cpu::blas_kernels().c_str(), omp_get_max_threads());
  std::printf("%-8s %-10s %8s %14s %14s %10s\n", "family", "what", "T", "tok/s", "pairs/s", "peak GiB");
  for (Family fam : {Family::Mamba1, Family::Mamba2}) {
    if (check) {
      const ModelWeights m = random_model(shape_130m(fam, 1, Activation::Identity), 3);
      LayerMaps run(m);
      forward_cpu(m, random_tokens(96, m.config.vocab_size), &run);
      if (!(run.sink.max_eps <= 1e-4)) {
        std::fprintf(stderr, "check FAILED: %s identity model, max approximation error %.3g\n", to_string(fam),
                     run.sink.max_eps);
        return 1;
      }
      std::printf("check ok: %s identity layer reproduces the mixer output (max eps %.2g)\n", to_string(fam),
                  run.sink.max_eps);
    }
    {
      const ModelWeights m = random_model(shape_130m(fam, static_cast<int>(layers), Activation::SiLU), 1);
      const auto toks = random_tokens(fwd_T, m.config.vocab_size);
      forward_cpu(m, random_tokens(64, m.config.vocab_size));  // warm-up
      const double t0 = now();
      forward_cpu(m, toks);
      const double s = now() - t0;
      std::printf("%-8s %-10s %8lld %14.0f %14s %10.2f\n", to_string(fam), "forward", (long long)fwd_T, fwd_T / s, "-",
                  peak_rss_gib());
      js << (first ? "" : ",\n") << "  {\"family\": \"" << to_string(fam) << "\", \"what\": \"forward\", \"layers\": "
         << layers << ", \"T\": " << fwd_T << ", \"tok_per_s\": " << fwd_T / s << ", \"seconds\": " << s << "}";
      first = false;
    }
    for (int64_t T : map_T) {
      const ModelWeights m = random_model(shape_130m(fam, 1, Activation::SiLU), 2);
      LayerMaps run(m);
      forward_cpu(m, random_tokens(T, m.config.vocab_size), &run);
      const double pairs = double(T) * (T + 1) / 2;
      std::printf("%-8s %-10s %8lld %14s %14.3g %10.2f\n", to_string(fam), "latim-l2", (long long)T, "-",
                  pairs / run.seconds, peak_rss_gib());
      js << ",\n  {\"family\": \"" << to_string(fam) << "\", \"what\": \"latim-l2\", \"T\": " << T
         << ", \"pairs_per_s\": " << pairs / run.seconds << ", \"seconds\": " << run.seconds << "}";
    }
  }
  js << "\n], \"peak_rss_gib\": " << peak_rss_gib() << "}\n";
  std::printf("peak host memory %.2f GiB; results in %s\n", peak_rss_gib(), json.c_str());
  return 0;
}
