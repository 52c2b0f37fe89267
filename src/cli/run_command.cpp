// `latim run`: checks every input, runs the forward pass, computes the requested maps
// layer by layer, and writes the HDF5 file, which is marked complete only at the very end.
#include <boost/program_options.hpp>
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "cli/commands.hpp"
#include "io/json.hpp"
#include "latim/backend.hpp"
#include "latim/comm.hpp"
#include "latim/error.hpp"
#include "latim/hdf5_writer.hpp"
#include "latim/latim.hpp"
#include "latim/model.hpp"
#include "latim/tokens.hpp"
#include "latim/version.hpp"

namespace po = boost::program_options;

namespace latim::cli {

namespace {

struct RunOptions {
  std::string model, tokens, out, scores = "l2", layers = "all", backend = "auto", precision = "fp32";
  bool save_logits = false, no_maps = false, quiet = false;
  int64_t tile = 256;
  int threads = 0;
};

std::string join_command_line(int argc, char** argv) {
  std::string s = "latim";
  for (int i = 0; i < argc; ++i) s += std::string(" ") + argv[i];
  return s;
}

// Writes each finished panel straight into the file.
class WriterSink final : public MapSink {
 public:
  explicit WriterSink(Hdf5InteractionWriter& w) : w_(w) {}
  void on_panel(int layer, Score score, int64_t i0, int64_t ni, int64_t ncols, const float* data) override {
    w_.write_map_tile(layer, to_string(score), i0, 0, ni, ncols, data);
  }
  void on_approx_error(int layer, const std::vector<float>& eps) override {
    w_.write_layer_array(layer, "approx_error", eps.data(), static_cast<int64_t>(eps.size()));
  }

 private:
  Hdf5InteractionWriter& w_;
};

// Receives each layer from the forward pass and computes its maps while the trace is live.
class MapObserver final : public LayerObserver {
 public:
  MapObserver(const ModelWeights& m, const std::vector<int>& layers, const EngineOptions& opt,
              Hdf5InteractionWriter& w, TileBackend& backend)
      : m_(m), opt_(opt), writer_(w), sink_(w), backend_(backend) {
    for (int l : layers) selected_[l] = true;
    const bool rollout = std::find(opt.scores.begin(), opt.scores.end(), Score::AltiRollout) != opt.scores.end();
    last_ = layers.empty() ? -1 : layers.back();
    rollout_ = rollout;
  }
  bool wants_trace(int layer) const override {
    return selected(layer) || (rollout_ && layer <= last_);  // the rollout chains every layer up to the last
  }
  void on_layer(int layer, const LayerWeights& w, const LayerTrace* trace, const std::vector<float>&) override {
    if (!trace) return;
    const LayerFactors f = make_layer_factors(m_.config, w, *trace);
    EngineOptions opt = opt_;
    if (!selected(layer)) opt.scores = {Score::Alti};  // only feeds the rollout
    NullSink null;
    MapSink& sink = selected(layer) ? static_cast<MapSink&>(sink_) : null;
    if (selected(layer))
      for (Score s : opt.scores) writer_.create_map(layer, to_string(s));
    if (!selected(layer) && rollout_) opt.scores.push_back(Score::AltiRollout);
    compute_layer_maps(layer, f, backend_, opt, sink, rollout_ ? &rollout_state_ : nullptr);
    if (selected(layer) && !w.out_proj_b.empty())
      writer_.write_layer_array(layer, "out_bias", w.out_proj_b.data(), static_cast<int64_t>(w.out_proj_b.size()));
  }

 private:
  struct NullSink final : MapSink {
    void on_panel(int, Score, int64_t, int64_t, int64_t, const float*) override {}
    void on_approx_error(int, const std::vector<float>&) override {}
  };
  bool selected(int l) const { auto it = selected_.find(l); return it != selected_.end() && it->second; }
  const ModelWeights& m_;
  EngineOptions opt_;
  Hdf5InteractionWriter& writer_;
  WriterSink sink_;
  TileBackend& backend_;
  std::map<int, bool> selected_;
  std::vector<float> rollout_state_;
  int last_ = -1;
  bool rollout_ = false;
};

std::string conventions_json(const ModelConfig& c, const std::vector<Score>& scores, const std::string& precision) {
  Json j;
  j["orientation"] = "row = target i, column = source j, j <= i; upper triangle NaN (not stored)";
  j["conv_bias"] = "folded into the current token's piece (l = j)";
  j["surrogate"] = std::string("activation of the model: ") + to_string(c.activation);
  j["frozen"] = c.family == Family::Mamba1 ? "delta, B, C, gate, final-norm scale"
                                           : "delta, B, C, gate, gamma (gated-norm scale), final-norm scale";
  if (c.family == Family::Mamba2)
    j["mamba2_norm"] = "grouped: " + std::to_string(c.n_groups) + " group(s) of " +
                       std::to_string(c.d_inner / c.n_groups) + " channels; " +
                       (c.norm_before_gate ? "normalise y, then gate (norm_before_gate)" : "gate, then normalise");
  std::string s;
  for (Score x : scores) s += (s.empty() ? "" : ",") + std::string(to_string(x));
  j["scores"] = s;
  j["normalisation"] = "l2, l1, hidden-attn raw; alti rows sum to 1; alti-rollout is the product of alti maps";
  j["precision"] = precision;
  j["out_bias"] = "not attributed to any token; stored as /layers/NNN/out_bias when present";
  return j.dump();
}

}  // namespace

int run_command(int argc, char** argv) {
  RunOptions o;
  po::options_description opts(
      "latim run: forward pass and LaTIM interaction maps, written to an HDF5 file\n\noptions");
  opts.add_options()
      ("help,h", "this help")
      ("model", po::value(&o.model)->required(), "model directory: config.json + model.safetensors (or a sharded index)")
      ("tokens", po::value(&o.tokens)->required(), "token file: whitespace-separated token ids")
      ("out", po::value(&o.out)->required(), "output HDF5 file (overwritten)")
      ("scores", po::value(&o.scores)->default_value("l2"), "comma list of l2, l1, alti, alti-rollout, hidden-attn")
      ("layers", po::value(&o.layers)->default_value("all"), "layers to map, e.g. 0,5-7, or all")
      ("no-maps", po::bool_switch(&o.no_maps), "skip the interaction maps (forward pass and logits only)")
      ("save-logits", po::bool_switch(&o.save_logits), "also write /logits [T, vocab]")
      ("tile", po::value(&o.tile)->default_value(256), "tile edge in tokens (also the HDF5 chunk edge)")
      ("backend", po::value(&o.backend)->default_value("auto"), "cpu, cuda, or auto (cuda when a GPU is present)")
      ("precision", po::value(&o.precision)->default_value("fp32"), "projection precision on cuda: fp32, tf32, bf16")
      ("threads", po::value(&o.threads)->default_value(0), "CPU threads (0 = all cores)")
      ("quiet,q", po::bool_switch(&o.quiet), "no progress line");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  po::notify(vm);

  Comm comm(&argc, &argv);
  if (comm.size() > 1)
    comm.abort(2, "latim run was launched on " + std::to_string(comm.size()) +
                      " ranks, but sequence/layer sharding is not in this version; run it on one rank");
  if (o.tile < 16 || o.tile > 8192) fail("--tile: ", o.tile, " is outside [16, 8192]");
  if (o.threads < 0) fail("--threads: must be >= 0");
  if (o.threads > 0) omp_set_num_threads(o.threads);

  const auto t0 = std::chrono::steady_clock::now();
  // Every input is checked before the output file exists.
  const std::vector<Score> scores = parse_scores(o.scores);
  const ModelWeights model = load_model(o.model);
  const ModelConfig& c = model.config;
  const std::vector<int> layers = o.no_maps ? std::vector<int>{} : parse_layers(o.layers, c.n_layer);
  const std::vector<int64_t> tokens = read_token_file(o.tokens, c.vocab_size);
  const int64_t T = static_cast<int64_t>(tokens.size());
  if (std::find(scores.begin(), scores.end(), Score::AltiRollout) != scores.end() && T > 65536)
    fail("--scores alti-rollout keeps a dense T x T map in memory; T = ", T, " is above the 65536 limit");

  const auto backend = make_backend(o.backend, parse_precision(o.precision));

  Hdf5InteractionWriter writer(o.out, T, o.tile);
  try {
    writer.set_string_attribute("program", "latim");
    writer.set_string_attribute("program_version", kVersion);
    writer.set_string_attribute("command_line", join_command_line(argc, argv));
    writer.set_string_attribute("model_config", c.to_json());
    writer.set_string_attribute("model_family", to_string(c.family));
    writer.set_string_attribute("backend", backend->name());
    writer.set_string_attribute("device", backend->device_name());
    const std::string conv = conventions_json(c, scores, to_string(backend->precision()));
    writer.set_string_attribute("conventions", conv);
    const Json conv_fields = Json::parse(conv);
    for (auto& [k, v] : conv_fields.items()) writer.set_string_attribute("convention_" + k, v.get<std::string>());
    std::string layer_list;
    for (int l : layers) layer_list += (layer_list.empty() ? "" : ",") + std::to_string(l);
    writer.set_string_attribute("layers", layer_list);
    writer.write_tokens(tokens);

    EngineOptions eopt;
    eopt.scores = scores;
    eopt.panel = writer.map_chunk();
    eopt.progress = !o.quiet && comm.is_root();
    MapObserver observer(model, layers, eopt, writer, backend->tiles());
    const ForwardOutput fwd = backend->forward(model, tokens, layers.empty() ? nullptr : &observer);

    if (o.save_logits) {
      writer.create_logits(c.vocab_size);
      const int64_t rows = std::max<int64_t>(1, (int64_t{1} << 24) / c.vocab_size);
      std::vector<float> buf;
      for (int64_t r0 = 0; r0 < T; r0 += rows) {
        const int64_t n = std::min(rows, T - r0);
        buf.resize(n * c.vocab_size);
        compute_logits(model, fwd, r0, n, buf.data());
        writer.write_logits_rows(r0, n, buf.data());
      }
    }
    writer.finish();
  } catch (...) {
    writer.abandon();
    throw;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!o.quiet && comm.is_root())
    std::fprintf(stderr, "latim run: %lld tokens, %zu layer(s) mapped, %.2f s -> %s\n", static_cast<long long>(T),
                 layers.size(), secs, o.out.c_str());
  return 0;
}

}  // namespace latim::cli
