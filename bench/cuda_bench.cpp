// CUDA backend: parity table and benchmarks.
//   cuda_bench parity [--data DIR] [--json FILE]
//     every stage of the CUDA backend against the CPU backend (fp32, bound 1e-5) on the
//     golden fixtures and on random layers with the shapes of mamba-130m / mamba2-130m,
//     and the tf32/bf16 tile paths against an fp64 reference (bound: twice the error of a
//     plain implementation in the same precision). Exit code 1 if any row fails.
//   cuda_bench bench [--forward-T 4096,16384,65536] [--latim-T 4096,16384] [--tile 4096]
//                    [--layers 24] [--only forward|latim] [--family mamba1|mamba2]
//                    [--forward-precision fp32,tf32,bf16] [--latim-precision bf16,tf32,fp32]
//                    [--json FILE]
//     forward tok/s (fp32, tf32, bf16, or those of --forward-precision) and LaTIM l2
//     pairs/s (bf16, tf32, fp32, or those of --latim-precision; end to end through the panel
//     driver and the bare tile kernel), device memory, and the tile kernel's
//     fraction of the measured cuBLAS bf16 rate. Each configuration is checked against the
//     CPU backend before it is timed.
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda_backend.hpp"
#include "bench_models.hpp"
#include "latim/backend.hpp"
#include "latim/error.hpp"
#include "latim/forward.hpp"
#include "latim/latim.hpp"
#include "latim/model.hpp"
#include "latim/tokens.hpp"
#include "latim_tile.hpp"
#include "reference_fp64.hpp"

using namespace latim;
using namespace latim::bench;

namespace {

double device_used_gib() {
  std::size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  return static_cast<double>(total_b - free_b) / (1024.0 * 1024.0 * 1024.0);
}

using reference::norm_error;
using reference::Recorder;

// l2 of T_i(x_j) in fp64 (bits = 0) or with u and W_out rounded to `bits` mantissa bits.
double reference_l2(const LayerFactors& f, int64_t i, int64_t j, int bits) {
  double ss = 0.0;
  for (const double t : reference::reference_contribution(f, i, j, bits)) ss += t * t;
  return std::sqrt(ss);
}

// ---------------------------------------------------------------- parity table
struct Row {
  std::string where, what;
  double err, bound;
  bool ok() const { return err <= bound; }
};

struct MemorySink : MapSink {
  int64_t T = 0;
  std::vector<std::vector<float>> maps{5};  // by Score
  std::vector<float> eps;
  void on_panel(int, Score s, int64_t i0, int64_t ni, int64_t ncols, const float* data) override {
    auto& m = maps[static_cast<int>(s)];
    m.resize(T * T, std::numeric_limits<float>::quiet_NaN());
    for (int64_t r = 0; r < ni; ++r)
      for (int64_t j = 0; j < ncols; ++j) m[(i0 + r) * T + j] = data[r * ncols + j];
  }
  void on_approx_error(int, int64_t i0, int64_t ni, const float* e) override {
    eps.resize(T, 0.0f);
    std::copy(e, e + ni, eps.begin() + i0);
  }
};

// Forward residuals and traces of `backend` against the CPU backend.
void compare_forward(const std::string& where, const ModelWeights& m, const std::vector<int64_t>& tokens,
                     ComputeBackend& backend, double bound, std::vector<Row>& rows) {
  auto cpu = make_backend("cpu");
  Recorder a, b;
  a.trace_layers = b.trace_layers = Recorder::kAll;
  const ForwardOutput fa = backend.forward(m, tokens, &a);
  const ForwardOutput fb = cpu->forward(m, tokens, &b);
  double res = 0, tr = 0;
  std::string worst;
  for (std::size_t l = 0; l < b.residual.size(); ++l) {
    res = std::max(res, norm_error(a.residual[l], b.residual[l]));
    const LayerTrace &x = a.trace[l], &y = b.trace[l];
    const std::pair<const char*, double> fields[] = {
        {"r_in", norm_error(x.r_in, y.r_in)}, {"o", norm_error(x.o, y.o)},       {"v", norm_error(x.v, y.v)},
        {"x", norm_error(x.x, y.x)},          {"delta", norm_error(x.delta, y.delta)}, {"S", norm_error(x.S, y.S)},
        {"B", norm_error(x.B, y.B)},          {"C", norm_error(x.C, y.C)},       {"gate", norm_error(x.gate, y.gate)},
        {"gamma", norm_error(x.gamma, y.gamma)}};
    for (auto [name, e] : fields)
      if (e > tr) {
        tr = e;
        worst = name;
      }
  }
  rows.push_back({where, "forward: layer outputs", res, bound});
  rows.push_back({where, "forward: traces (worst: " + worst + ")", tr, bound});
  rows.push_back({where, "forward: final hidden", norm_error(fa.final_hidden, fb.final_hidden), bound});
}

// Maps of the CUDA tile engine against the CPU tile engine, on the CPU's traces.
void compare_maps(const std::string& where, const ModelWeights& m, const std::vector<int64_t>& tokens, int64_t panel,
                  std::vector<Row>& rows) {
  auto cpu = make_backend("cpu");
  Recorder rec;
  rec.trace_layers = Recorder::kAll;
  cpu->forward(m, tokens, &rec);
  auto gpu_tiles = make_cuda_tile_backend(Precision::FP32);
  auto cpu_tiles = make_cpu_tile_backend();
  EngineOptions opt;
  opt.scores = {Score::L2, Score::L1, Score::Alti, Score::AltiRollout, Score::HiddenAttn};
  opt.panel = panel;
  double err[5] = {0, 0, 0, 0, 0}, eps = 0;
  std::vector<float> ra, rb;
  for (std::size_t l = 0; l < rec.trace.size(); ++l) {
    const LayerFactors f = make_layer_factors(m.config, m.layers[l], rec.trace[l]);
    MemorySink a, b;
    a.T = b.T = static_cast<int64_t>(tokens.size());
    compute_layer_maps(static_cast<int>(l), f, *gpu_tiles, opt, a, &ra);
    compute_layer_maps(static_cast<int>(l), f, *cpu_tiles, opt, b, &rb);
    for (int s = 0; s < 5; ++s) err[s] = std::max(err[s], norm_error(a.maps[s], b.maps[s]));
    for (std::size_t i = 0; i < b.eps.size(); ++i) eps = std::max<double>(eps, std::abs(a.eps[i] - b.eps[i]));
  }
  for (Score s : opt.scores) rows.push_back({where, std::string("tile fp32: ") + to_string(s), err[static_cast<int>(s)], 1e-5});
  rows.push_back({where, "tile fp32: approx error (abs diff)", eps, 1e-5});
}

// tf32 / bf16 tile l2 against fp64 on a block of pairs that includes the diagonal.
void compare_low_precision(const std::string& where, const ModelWeights& m, const std::vector<int64_t>& tokens,
                           int64_t i0, int64_t ni, int64_t j0, int64_t nj, std::vector<Row>& rows) {
  auto cpu = make_backend("cpu");
  Recorder rec;
  rec.trace_layers = 1;
  cpu->forward(m, tokens, &rec);
  const LayerFactors f = make_layer_factors(m.config, m.layers[0], rec.trace[0]);
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t i = i0; i < i0 + ni; ++i)
    for (int64_t j = j0; j < j0 + nj && j <= i; ++j) pairs.emplace_back(i, j);
  std::vector<double> exact(pairs.size()), bf(pairs.size()), tf(pairs.size());
#pragma omp parallel for schedule(dynamic)
  for (std::size_t p = 0; p < pairs.size(); ++p) {
    exact[p] = reference_l2(f, pairs[p].first, pairs[p].second, 0);
    bf[p] = reference_l2(f, pairs[p].first, pairs[p].second, 7);
    tf[p] = reference_l2(f, pairs[p].first, pairs[p].second, 10);
  }
  for (auto [prec, plain, name] : {std::tuple{Precision::BF16, &bf, "bf16"}, std::tuple{Precision::TF32, &tf, "tf32"},
                                   std::tuple{Precision::FP32, &exact, "fp32"}}) {
    auto tiles = make_cuda_tile_backend(prec);
    TileScores t;
    t.i0 = i0;
    t.ni = ni;
    t.j0 = j0;
    t.nj = nj;
    ScoreSet which;
    which.l2 = true;
    tiles->compute_tile(f, which, t);
    std::vector<double> got(pairs.size());
    for (std::size_t p = 0; p < pairs.size(); ++p) got[p] = t.l2[(pairs[p].first - i0) * nj + (pairs[p].second - j0)];
    const double e = norm_error(got, exact);
    if (prec == Precision::FP32) {
      rows.push_back({where, "tile fp32 l2 vs fp64", e, 1e-5});
    } else {
      const double ep = norm_error(*plain, exact);
      rows.push_back({where, std::string("tile ") + name + " l2 vs fp64 (plain " + name + ": " +
                                 [&] { std::ostringstream o; o.precision(2); o << ep; return o.str(); }() + ")",
                      e, 2 * ep + 1e-7});
    }
  }
}

int parity(const std::string& data, const std::string& json) {
  std::vector<Row> rows;
  auto cuda32 = make_backend("cuda", Precision::FP32);
  const char* fixtures[] = {"mamba1_f32", "mamba1_bias_f16", "mamba1_ssm_padded", "mamba1_identity_f32",
                            "mamba2_f32", "mamba2_bf16_sharded", "mamba2_g2_f32", "mamba2_identity_f32"};
  for (const char* fx : fixtures) {
    const std::string dir = data + "/" + fx;
    const ModelWeights m = load_model(dir);
    const std::vector<int64_t> base = read_token_file(dir + "/tokens.txt", m.config.vocab_size);
    std::vector<int64_t> tokens(700);
    for (std::size_t k = 0; k < tokens.size(); ++k) tokens[k] = base[k % base.size()];
    compare_forward(std::string(fx) + " T=700", m, tokens, *cuda32, 1e-5, rows);
    tokens.resize(150);
    compare_maps(std::string(fx) + " T=150", m, tokens, 64, rows);
  }
  for (Family fam : {Family::Mamba1, Family::Mamba2}) {
    const std::string name = fam == Family::Mamba1 ? "random mamba-130m layers" : "random mamba2-130m layers";
    const ModelWeights m = random_model(shape_130m(fam, 2), 11);
    const auto tokens = random_tokens(1100, m.config.vocab_size);
    compare_forward(name + " T=1100", m, tokens, *cuda32, 1e-5, rows);
    for (Precision p : {Precision::TF32, Precision::BF16}) {
      auto low = make_backend("cuda", p);
      compare_forward(name + " T=1100 " + to_string(p) + " (info)", m, tokens, *low, INFINITY, rows);
    }
    auto short_tokens = tokens;
    short_tokens.resize(300);
    compare_maps(name + " T=300", m, short_tokens, 128, rows);
    compare_low_precision(name + " T=1100 tile [1000,1064)x[960,1024)", m, tokens, 1000, 64, 960, 64, rows);
  }
  std::printf("\n%-62s %-52s %10s %10s %s\n", "case", "what", "error", "bound", "");
  int bad = 0;
  std::ofstream js(json);
  js << "{\"rows\": [\n";
  for (std::size_t k = 0; k < rows.size(); ++k) {
    const Row& r = rows[k];
    bad += !r.ok();
    std::printf("%-62s %-52s %10.2e %10.2e %s\n", r.where.c_str(), r.what.c_str(), r.err, r.bound,
                std::isinf(r.bound) ? "info" : (r.ok() ? "ok" : "FAIL"));
    js << (k ? ",\n" : "") << "  {\"case\": \"" << r.where << "\", \"what\": \"" << r.what << "\", \"error\": " << r.err
       << ", \"bound\": " << (std::isinf(r.bound) ? std::string("null") : std::to_string(r.bound)) << "}";
  }
  js << "\n], \"failed\": " << bad << "}\n";
  std::printf("parity: %zu rows, %d failed\n", rows.size(), bad);
  return bad ? 1 : 0;
}

// ---------------------------------------------------------------- benchmarks
double cublas_bf16_tflops() {
  const int n = 8192;
  std::mt19937 g(1);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<uint16_t> h(static_cast<std::size_t>(n) * n);
  for (auto& x : h) {
    const float v = dist(g);
    uint32_t u;
    std::memcpy(&u, &v, 4);
    x = static_cast<uint16_t>(u >> 16);
  }
  void *a, *b, *c;
  cuda::check(cudaMalloc(&a, h.size() * 2), "bench alloc");
  cuda::check(cudaMalloc(&b, h.size() * 2), "bench alloc");
  cuda::check(cudaMalloc(&c, h.size() * 4), "bench alloc");
  cudaMemcpy(a, h.data(), h.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(b, h.data(), h.size() * 2, cudaMemcpyHostToDevice);
  cublasHandle_t handle;
  cublasCreate(&handle);
  const float one = 1.0f, zero = 0.0f;
  auto run = [&] {
    cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &zero, c,
                 CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  };
  for (int k = 0; k < 3; ++k) run();
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaEventRecord(e0);
  for (int k = 0; k < 10; ++k) run();
  cudaEventRecord(e1);
  cudaEventSynchronize(e1);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cublasDestroy(handle);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  return 2.0 * n * n * double(n) * 10 / (ms * 1e-3) / 1e12;
}

struct CountingSink : MapSink {
  void on_panel(int, Score, int64_t, int64_t, int64_t, const float*) override {}
  void on_approx_error(int, int64_t, int64_t, const float*) override {}
};

struct Json {
  std::ofstream out;
  bool first = true;
  explicit Json(const std::string& path) : out(path) { out << "{\"results\": [\n"; }
  void add(const std::string& obj) {
    out << (first ? "" : ",\n") << "  " << obj;
    first = false;
    out.flush();
  }
  void close(const std::string& tail) { out << "\n], " << tail << "}\n"; }
};

// A comma-separated list, each non-empty item through `parse`.
template <class Parse>
auto parse_list(const std::string& s, Parse parse) {
  std::vector<decltype(parse(s))> v;
  std::stringstream ss(s);
  for (std::string part; std::getline(ss, part, ',');)
    if (!part.empty()) v.push_back(parse(part));
  return v;
}
std::vector<int64_t> parse_ints(const std::string& s) {
  return parse_list(s, [](const std::string& x) { return int64_t{std::stoll(x)}; });
}
std::vector<Precision> parse_precisions(const std::string& s) { return parse_list(s, parse_precision); }

int run_benchmarks(const std::vector<int64_t>& forward_T, const std::vector<int64_t>& latim_T, int64_t tile, int layers,
                   const std::string& json_path, const std::string& what, const std::string& family,
                   const std::vector<Precision>& forward_precisions, const std::vector<Precision>& latim_precisions) {
  Json js(json_path);
  const double peak = cublas_bf16_tflops();
  std::printf("cuBLAS bf16 8192^3: %.0f TFLOP/s (reference rate for the tile kernel)\n", peak);
  std::printf("\n%-7s %-22s %7s %14s %14s %10s %10s %8s\n", "family", "what", "T", "tok/s", "pairs|tok/s", "seconds",
              "dev GiB", "TC frac");
  for (Family fam : {Family::Mamba1, Family::Mamba2}) {
    const char* fname = fam == Family::Mamba1 ? "mamba1" : "mamba2";
    if (family != "all" && family != fname) continue;
    if (what != "latim" && !forward_T.empty()) {
      const ModelWeights m = random_model(shape_130m(fam, layers), 1);
      for (Precision p : forward_precisions) {
        auto be = make_backend("cuda", p);
        {  // -c: 2 layers at T = 2048 against the CPU backend before timing
          ModelWeights small = m;
          small.layers.resize(std::min<std::size_t>(2, m.layers.size()));
          small.config.n_layer = static_cast<int64_t>(small.layers.size());
          const auto tk = random_tokens(2048, m.config.vocab_size, 3);
          auto cpu = make_backend("cpu");
          const double e = norm_error(be->forward(small, tk, nullptr).final_hidden, cpu->forward(small, tk, nullptr).final_hidden);
          const double bound = p == Precision::FP32 ? 1e-5 : (p == Precision::TF32 ? 2e-2 : 1e-1);
          std::printf("check %s forward %s vs CPU: %.2e (bound %.0e)%s\n", fname, to_string(p), e, bound,
                      e <= bound ? "" : "  FAILED");
          if (!(e <= bound)) return 1;
        }
        for (int64_t T : forward_T) {
          const auto tk = random_tokens(T, m.config.vocab_size);
          be->forward(m, tk, nullptr);  // warm-up at this length (workspaces, cuBLAS plans)
          double best = INFINITY, best_dev = INFINITY;
          for (int rep = 0; rep < 3; ++rep) {
            const double t0 = now();
            be->forward(m, tk, nullptr);
            best = std::min(best, now() - t0);
            best_dev = std::min(best_dev, cuda_forward_device_seconds(*be));
          }
          const double gib = device_used_gib();
          std::printf("%-7s %-22s %7lld %14.0f %14.0f %10.3f %10.2f %8s   (tok/s: end to end, device)\n", fname,
                      (std::string("forward ") + to_string(p)).c_str(), (long long)T, T / best, T / best_dev, best,
                      gib, "-");
          std::ostringstream o;
          o << "{\"family\": \"" << fname << "\", \"what\": \"forward\", \"precision\": \"" << to_string(p)
            << "\", \"layers\": " << layers << ", \"T\": " << T << ", \"tok_per_s\": " << T / best
            << ", \"device_tok_per_s\": " << T / best_dev << ", \"seconds\": " << best
            << ", \"device_seconds\": " << best_dev << ", \"device_used_gib\": " << gib << "}";
          js.add(o.str());
        }
      }
    }
    if (what == "forward") continue;
    for (int64_t T : latim_T) {
      const ModelWeights m = random_model(shape_130m(fam, 1), 2);
      auto fwd = make_backend("cuda", Precision::FP32);
      Recorder rec;
      rec.trace_layers = 1;
      fwd->forward(m, random_tokens(T, m.config.vocab_size), &rec);
      const LayerFactors f = make_layer_factors(m.config, m.layers[0], rec.trace[0]);
      const double pairs = double(T) * (T + 1) / 2, flops = pairs * 2.0 * m.config.d_inner * m.config.d_model;
      auto cpu_tiles = make_cpu_tile_backend();
      for (Precision p : latim_precisions) {
        {  // -c: one diagonal tile of 128 rows against the CPU engine
          TileScores a, b;
          a.i0 = b.i0 = T - 128;
          a.j0 = b.j0 = T - 256;
          a.ni = b.ni = 128;
          a.nj = b.nj = 256;
          ScoreSet which;
          which.l2 = true;
          auto tiles = make_cuda_tile_backend(p);
          tiles->compute_tile(f, which, a);
          cpu_tiles->compute_tile(f, which, b);
          const double e = norm_error(a.l2, b.l2);
          const double bound = p == Precision::FP32 ? 1e-5 : 1e-2;
          std::printf("check %s tile %s vs CPU: %.2e (bound %.0e)%s\n", fname, to_string(p), e, bound,
                      e <= bound ? "" : "  FAILED");
          if (!(e <= bound)) return 1;
        }
        // The bare kernel over the whole triangle, tile by tile, on the device.
        DeviceLayerFactors dev(p);
        dev.upload(f);
        const int64_t d = m.config.d_model;
        cuda::DeviceArray<float> partial, hattn, l2;
        cuda::DeviceArray<double> contrib;
        partial.reserve(cuda::latim_tile_partial_size(tile, tile, d), "bench partial");
        hattn.reserve(tile * tile, "bench hattn");
        l2.reserve(tile * tile, "bench l2");
        contrib.reserve(tile * d, "bench contrib");
        // all: the kernel also sums the l1 and ALTI partials (what --scores l1/alti cost).
        // In bf16 `latim run` takes ε from the surrogate scan and the tiles skip the
        // Σ_j T_i(x_j) sums (TileBackend::prefers_approx_error_all_rows): so does the sweep.
        double* const sums = p == Precision::BF16 ? nullptr : contrib.get();
        auto sweep = [&](bool all) {
          for (int64_t i0 = 0; i0 < T; i0 += tile) {
            const int64_t ni = std::min(tile, T - i0);
            for (int64_t j0 = 0; j0 < i0 + ni; j0 += tile) {
              const int64_t nj = std::min(tile, i0 + ni - j0);
              cuda::latim_tile(dev.get(), dev.precision(), i0, ni, j0, nj, false, all, partial.get(), hattn.get(),
                               sums, nullptr, 0);
              cuda::latim_tile_finalize(i0, ni, j0, nj, d, partial.get(), hattn.get(), l2.get(), nullptr, nullptr,
                                        nullptr, nullptr, 0);
            }
          }
        };
        auto timed = [&](bool all) {  // seconds of one sweep after a warm-up
          sweep(all);
          cuda::check(cudaDeviceSynchronize(), "bench warm-up");
          cudaEvent_t e0, e1;
          cudaEventCreate(&e0);
          cudaEventCreate(&e1);
          cudaEventRecord(e0);
          sweep(all);
          cudaEventRecord(e1);
          cuda::check(cudaEventSynchronize(e1), "bench sweep");
          float ms = 0;
          cudaEventElapsedTime(&ms, e0, e1);
          cudaEventDestroy(e0);
          cudaEventDestroy(e1);
          return ms * 1e-3;
        };
        if (p == Precision::BF16) {
          const double ka = timed(true);
          std::printf("%-7s %-22s %7lld %14s %14.3e %10.3f %10.2f %8.3f\n", fname, "latim-all kernel bf16",
                      (long long)T, "-", pairs / ka, ka, device_used_gib(), flops / ka / (peak * 1e12));
        }
        const double seconds = timed(false);
        const double ks = seconds, frac = flops / ks / (peak * 1e12);
        const double gib = device_used_gib();
        std::printf("%-7s %-22s %7lld %14s %14.3e %10.3f %10.2f %8.3f\n", fname,
                    (std::string("latim-l2 kernel ") + to_string(p)).c_str(), (long long)T, "-", pairs / ks, ks, gib,
                    frac);
        std::ostringstream o;
        o << "{\"family\": \"" << fname << "\", \"what\": \"latim-l2-kernel\", \"precision\": \"" << to_string(p)
          << "\", \"T\": " << T << ", \"tile\": " << tile << ", \"pairs_per_s\": " << pairs / ks << ", \"seconds\": " << ks
          << ", \"tensor_core_fraction\": " << frac << ", \"device_used_gib\": " << gib << "}";
        js.add(o.str());
        if (p != Precision::BF16 && T > 4096) continue;  // end to end only where it is quick
        // End to end: the panel driver with host scores, as `latim run` uses it.
        auto tiles = make_cuda_tile_backend(p);
        EngineOptions opt;
        opt.scores = {Score::L2};
        opt.panel = tile;
        CountingSink sink;
        const double t0 = now();
        compute_layer_maps(0, f, *tiles, opt, sink, nullptr);
        const double s = now() - t0;
        std::printf("%-7s %-22s %7lld %14s %14.3e %10.3f %10.2f %8s\n", fname,
                    (std::string("latim-l2 driver ") + to_string(p)).c_str(), (long long)T, "-", pairs / s, s,
                    device_used_gib(), "-");
        std::ostringstream o2;
        o2 << "{\"family\": \"" << fname << "\", \"what\": \"latim-l2-driver\", \"precision\": \"" << to_string(p)
           << "\", \"T\": " << T << ", \"tile\": " << tile << ", \"pairs_per_s\": " << pairs / s << ", \"seconds\": " << s
           << "}";
        js.add(o2.str());
      }
    }
  }
  std::ostringstream tail;
  tail << "\"cublas_bf16_tflops\": " << peak << ", \"peak_host_gib\": " << peak_rss_gib();
  js.close(tail.str());
  std::printf("peak host memory %.2f GiB; results in %s\n", peak_rss_gib(), json_path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each row as it is measured, also into a pipe or a log
  try {
    if (argc < 2) {
      std::fprintf(stderr, "usage: cuda_bench parity|bench [options]  (see the top of bench/cuda_bench.cpp)\n");
      return 2;
    }
    const std::string mode = argv[1];
    std::string data = "tests/data", json = "cuda_" + mode + ".json", what = "all", family = "all";
    std::vector<int64_t> forward_T{4096, 16384, 65536}, latim_T{4096, 16384};
    std::vector<Precision> forward_precisions{Precision::FP32, Precision::TF32, Precision::BF16};
    std::vector<Precision> latim_precisions{Precision::BF16, Precision::TF32, Precision::FP32};
    int64_t tile = 4096;
    int layers = 24;
    for (int i = 2; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) fail(a, " needs a value");
        return argv[++i];
      };
      if (a == "--data") data = next();
      else if (a == "--json") json = next();
      else if (a == "--forward-T") forward_T = parse_ints(next());
      else if (a == "--latim-T") latim_T = parse_ints(next());
      else if (a == "--tile") tile = std::stoll(next());
      else if (a == "--layers") layers = std::stoi(next());
      else if (a == "--only") what = next();  // forward | latim | all
      else if (a == "--family") family = next();  // mamba1 | mamba2 | all
      else if (a == "--forward-precision") forward_precisions = parse_precisions(next());
      else if (a == "--latim-precision") latim_precisions = parse_precisions(next());
      else fail("unknown option ", a);
    }
    if (!cuda_available()) {
      std::fprintf(stderr, "cuda_bench: no CUDA device visible\n");
      return 2;
    }
    if (mode == "parity") return parity(data, json);
    if (mode == "bench")
      return run_benchmarks(forward_T, latim_T, tile, layers, json, what, family, forward_precisions,
                            latim_precisions);
    fail("unknown mode ", mode, " (parity or bench)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cuda_bench: %s\n", e.what());
    return 1;
  }
}
