// `latim run`: checks every input, runs the forward pass, computes the requested maps
// layer by layer, and writes the HDF5 file, which is marked complete only at the very end.
#include <boost/program_options.hpp>
#include <omp.h>
#include <sched.h>

#include <charconv>
#include <chrono>
#include <sstream>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <memory>
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
#include "io/output_service.hpp"
#include "parallel/distributed_run.hpp"
#include "model/cpu_ops.hpp"

namespace po = boost::program_options;

namespace latim::cli {

namespace {

struct RunOptions {
  std::string model, tokens, out, scores = "l2", layers = "all", backend = "auto", precision = "fp32";
  bool save_logits = false, no_maps = false, quiet = false, resume = false;
  int64_t tile = 256;
  int64_t map_chunk = 0;  // 0: auto_map_chunk(tile)
  int threads = 0;
  GridPlan grid;
  std::string rows;
  int64_t pool = 0, topk = 0, window = 0;
  bool full = false;
};

// The [T, T] maps' chunk edge when --map-chunk is not given: the tile up to 512 (1 MiB
// chunks, what a reader's default 1 MiB chunk cache holds), else the tile's largest divisor
// in [128, 512]. Chunks of whole GPU-sized tiles (8192: 256 MiB) made every small read
// decompress the whole chunk, again for each read.
int64_t auto_map_chunk(int64_t tile) {
  if (tile <= 512) return tile;
  for (int64_t c = 512; c >= 128; --c)
    if (tile % c == 0) return c;
  return tile;
}

std::string join_command_line(int argc, char** argv) {
  std::string s = "latim";
  for (int i = 0; i < argc; ++i) s += std::string(" ") + argv[i];
  return s;
}

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

// --rows SPEC: last:N, A-B (inclusive), a comma list, or @file of whitespace-separated positions.
std::vector<int64_t> parse_rows(const std::string& spec, int64_t T) {
  if (spec.rfind("last:", 0) == 0) {
    int64_t n = 0;
    const char* first = spec.data() + 5;
    const auto [end, ec] = std::from_chars(first, spec.data() + spec.size(), n);
    if (ec != std::errc() || end != spec.data() + spec.size() || n <= 0)
      fail("--rows: '", spec, "' needs a positive count, as in last:64");
    std::vector<int64_t> rows;
    for (int64_t i = std::max<int64_t>(0, T - n); i < T; ++i) rows.push_back(i);
    return rows;
  }
  if (!spec.empty() && spec[0] == '@') {
    std::stringstream ss(read_text_file(spec.substr(1), "--rows file"));
    std::string list, tok;
    while (ss >> tok) list += (list.empty() ? "" : ",") + tok;
    return parse_index_list(list, T, "--rows " + spec, "position");
  }
  return parse_index_list(spec, T, "--rows", "position");
}

MapPlan parse_plan(const RunOptions& o, int64_t T) {
  MapPlan p;
  if (o.pool < 0 || o.topk < 0 || o.window < 0) fail("--pool, --topk and --window must be positive");
  p.pool = o.pool;
  p.topk = o.topk;
  p.window = o.window;
  if (!o.rows.empty()) p.rows = parse_rows(o.rows, T);
  p.full = o.full || (p.rows.empty() && !p.pool && !p.topk && !p.window);
  if (p.pool && o.tile % p.pool != 0)
    fail("--pool ", p.pool, " must divide --tile ", o.tile, " (set --tile to a multiple of it)");
  if (p.topk > T) p.topk = T;
  if (p.window > T) p.window = T;
  return p;
}

std::string plan_json(const MapPlan& p) {
  Json j;
  j["full"] = p.full;
  j["rows"] = p.rows.size();
  j["pool"] = p.pool;
  j["topk"] = p.topk;
  j["window"] = p.window;
  return j.dump();
}

struct DatasetSpec {
  std::string name;
  Hdf5InteractionWriter::Type type;
  std::vector<int64_t> dims;
};

// The per-layer datasets of a plan besides the full maps.
std::vector<DatasetSpec> plan_datasets(const MapPlan& p, const std::vector<Score>& scores, int64_t T) {
  using Ty = Hdf5InteractionWriter::Type;
  std::vector<DatasetSpec> out;
  if (p.needs_every_row()) out.push_back({"approx_error", Ty::F32, {T}});
  const int64_t R = static_cast<int64_t>(p.rows.size()), P = p.pool ? (T + p.pool - 1) / p.pool : 0;
  if (R) out.push_back({"rows/approx_error", Ty::F32, {R}});
  for (Score s : scores) {
    const std::string n = to_string(s);
    if (R) out.push_back({"rows/" + n, Ty::F32, {R, T}});
    if (P) {
      out.push_back({"pool/" + n + "_sum", Ty::F32, {P, P}});
      out.push_back({"pool/" + n + "_max", Ty::F32, {P, P}});
    }
    if (p.topk) {
      out.push_back({"topk/" + n + "_index", Ty::I64, {T, p.topk}});
      out.push_back({"topk/" + n + "_value", Ty::F32, {T, p.topk}});
    }
    if (p.window) out.push_back({"window/" + n, Ty::F32, {T, p.window}});
  }
  return out;
}

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  g_stop_signal = sig;
  std::signal(sig, SIG_DFL);  // a second signal ends the process at once
}

// SLURM sends SIGTERM (or the --signal of the job) before the time limit: finish the
// panels in flight, flush, and leave a file that --resume continues.
void install_stop_handlers() {
  for (int sig : {SIGTERM, SIGUSR1, SIGINT}) std::signal(sig, on_stop_signal);
}

// What must match for --resume to continue a file: everything that shapes its content.
std::string resume_key(const RunOptions& o, const std::vector<Score>& scores, const std::vector<int>& layers,
                       const MapPlan& plan) {
  Json j;
  std::vector<std::string> s;
  for (Score x : scores) s.push_back(to_string(x));
  j["scores"] = s;
  j["layers"] = layers;
  j["tile"] = o.tile;
  j["save_logits"] = o.save_logits;
  j["plan"] = Json::parse(plan_json(plan));
  return j.dump();
}

// srun without MPI wiring starts N independent one-rank processes: each would write the
// same file. Catch that before anything is computed.
void check_launcher(const Comm& comm) {
  const char* step_tasks = std::getenv("SLURM_STEP_NUM_TASKS");
  if (!step_tasks || !std::getenv("SLURM_PROCID")) return;
  const long n = std::strtol(step_tasks, nullptr, 10);
  if (n > 0 && n != comm.size())
    fail("SLURM started ", n, " tasks but MPI sees ", comm.size(),
         " rank(s): the launcher did not wire MPI (use srun --mpi=pmix, or mpirun inside the allocation)");
}

// A launcher that binds each rank to one core (mpirun's default for 1-2 ranks) leaves the
// host work of every OpenMP thread on that core. Warn once, on rank 0.
void check_affinity(const Comm& comm) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return;
  const int cores = CPU_COUNT(&set), threads = omp_get_max_threads();
  if (comm.is_root() && threads > cores)
    std::fprintf(stderr,
                 "latim run: warning: %d OpenMP threads but this rank may run on only %d core(s) (process "
                 "affinity); launch with mpirun --bind-to none or srun --cpus-per-task=%d\n",
                 threads, cores, threads);
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
      ("full", po::bool_switch(&o.full), "the whole [T, T] maps (the default when no other plan is given)")
      ("rows", po::value(&o.rows), "only these target rows, all sources: last:64, 1000-1100, 5,9,12 or @file")
      ("pool", po::value(&o.pool)->default_value(0), "block-pooled maps [T/B, T/B], sum and max (B divides --tile)")
      ("topk", po::value(&o.topk)->default_value(0), "the K strongest sources of every row: indices and scores")
      ("window", po::value(&o.window)->default_value(0), "the W most recent sources of every row [T, W]")
      ("save-logits", po::bool_switch(&o.save_logits), "also write /logits [T, vocab]")
      ("tile", po::value(&o.tile)->default_value(256), "tile edge in tokens (the unit of work; larger on GPUs)")
      ("map-chunk", po::value(&o.map_chunk)->default_value(0),
       "HDF5 chunk edge of the [T, T] maps, dividing --tile (0 = the tile up to 512)")
      ("backend", po::value(&o.backend)->default_value("auto"), "cpu, cuda, or auto (cuda when a GPU is present)")
      ("precision", po::value(&o.precision)->default_value("fp32"),
       "precision on cuda: fp32, tf32, bf16 (bf16: bf16 products, and bf16 activations in layers not mapped; "
       "fp32: split tf32 products, near-fp32 accuracy, in layers not mapped)")
      ("threads", po::value(&o.threads)->default_value(0), "CPU threads per rank (0 = all cores)")
      ("seq-shards", po::value(&o.grid.seq_shards)->default_value(0), "ranks sharing the sequence (0 = ranks / layer-shards)")
      ("layer-shards", po::value(&o.grid.layer_shards)->default_value(0), "pipeline stages of consecutive layers (0 = 1)")
      ("chunk-tokens", po::value(&o.grid.chunk_tokens)->default_value(0), "tokens per pipeline chunk (0 = automatic)")
      ("forward", po::value(&o.grid.forward)->default_value("auto"),
       "sharded (ranks share the sequence), replicated (each rank runs the whole forward; ranks share the map "
       "panels) or auto (replicated on GPUs)")
      ("resume", po::bool_switch(&o.resume), "continue an interrupted run into its existing --out file")
      ("quiet,q", po::bool_switch(&o.quiet), "no progress line");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  po::notify(vm);

  Comm comm(&argc, &argv);
  check_launcher(comm);
  if (o.tile < 16 || o.tile > 8192) fail("--tile: ", o.tile, " is outside [16, 8192]");
  if (o.map_chunk != 0 && (o.map_chunk < 16 || o.map_chunk > o.tile || o.tile % o.map_chunk != 0))
    fail("--map-chunk ", o.map_chunk, " must divide --tile ", o.tile, " and be at least 16");
  const int64_t map_chunk = o.map_chunk ? o.map_chunk : auto_map_chunk(o.tile);
  // The OpenMP runtime crashes when it cannot create the threads asked for (100,000 did).
  constexpr int kMaxThreads = 4096;
  if (o.threads < 0 || o.threads > kMaxThreads) fail("--threads: ", o.threads, " is outside [0, ", kMaxThreads, "]");
  if (o.threads > 0) omp_set_num_threads(o.threads);
  // Threads made before main (by libraries) did not inherit the mode: set it on each.
#pragma omp parallel
  cpu::flush_denormals_to_zero();

  const auto t0 = std::chrono::steady_clock::now();
  // Every input is checked on every rank before the output file exists; the lowest failing
  // rank reports, and every rank exits with an error.
  std::vector<Score> scores;
  ModelWeights model;
  std::vector<int> layers;
  std::vector<int64_t> tokens;
  Grid grid;
  MapPlan plan;
  std::unique_ptr<ComputeBackend> backend;
  std::string error;
  try {
    scores = parse_scores(o.scores);
    model = load_model(o.model);
    layers = o.no_maps ? std::vector<int>{} : parse_layers(o.layers, model.config.n_layer);
    tokens = read_token_file(o.tokens, model.config.vocab_size);
    const int64_t T = static_cast<int64_t>(tokens.size());
    if (std::find(scores.begin(), scores.end(), Score::AltiRollout) != scores.end() && T > 16384 && !layers.empty())
      fail("--scores alti-rollout keeps a dense T x T map per rank; T = ", T, " is above its limit of 16384");
    plan = parse_plan(o, T);
    if (std::find(scores.begin(), scores.end(), Score::AltiRollout) != scores.end() && !plan.needs_every_row())
      fail("--scores alti-rollout chains whole maps: combine it with --full, --pool, --topk or --window, not --rows alone");
    backend = make_backend(o.backend, parse_precision(o.precision), comm.local_rank());
    grid = plan_grid(o.grid, comm.size(), comm.rank(), model.config.n_layer, T, model.config.d_conv,
                     backend->name() != "cpu");
    if (comm.size() > 1 && !comm.thread_multiple())
      fail("the MPI library does not provide MPI_THREAD_MULTIPLE, which the output writer needs");
  } catch (const Error& e) {
    error = e.what();
  }
  const double worst = comm.world().allreduce_max(error.empty() ? 0.0 : double(comm.size() - comm.rank()));
  if (worst > 0) {
    if (comm.size() - comm.rank() == static_cast<int>(worst)) {
      if (comm.size() > 1) throw Error(error + " (rank " + std::to_string(comm.rank()) + ")");
      throw Error(error);
    }
    return 1;
  }
  // Every rank must compute on the same kind of device: `--backend auto` on a job whose nodes
  // differ (GPUs on some, none on others) would otherwise mix backends, and the layouts and
  // collectives that follow depend on the backend.
  const int64_t device_ranks = comm.world().allreduce_sum(int64_t{backend->name() != "cpu"});
  if (device_ranks != 0 && device_ranks != comm.size()) {
    if (comm.is_root())
      throw Error("--backend " + o.backend + " chose a GPU on " + std::to_string(device_ranks) + " of " +
                  std::to_string(comm.size()) + " ranks and the CPU on the others: pass --backend cpu, or run on "
                  "nodes that all have GPUs");
    return 1;
  }
  // After the inputs are checked, so that a bad argument gets its one error line alone.
  if (!o.quiet) check_affinity(comm);
  // A GPU left at the CPU's default tile: each launch and download covers only tile x tile
  // pairs. The GPU measurements in docs/performance*.md all use tiles of 4096 or 8192.
  if (!o.quiet && comm.is_root() && backend->name() != "cpu" && vm["tile"].defaulted() && !layers.empty())
    std::fprintf(stderr,
                 "latim run: note: --tile %lld is the CPU's default; GPU runs are measured with --tile 4096 to "
                 "8192 (docs/performance.md)\n",
                 static_cast<long long>(o.tile));
  const ModelConfig& c = model.config;
  const int64_t T = static_cast<int64_t>(tokens.size());
  const int64_t chunk = std::min(map_chunk, T);  // a sequence shorter than the edge is one chunk

  install_stop_handlers();
  const int64_t npanels = (T + std::min<int64_t>(o.tile, T) - 1) / std::min<int64_t>(o.tile, T);
  std::unique_ptr<Hdf5InteractionWriter> writer;
  std::vector<uint8_t> done_flat(layers.size() * npanels, 0);
  int64_t already_complete = 0;
  std::string resume_error;
  if (comm.is_root() && o.resume) {
    try {
      writer = std::make_unique<Hdf5InteractionWriter>(o.out, Hdf5InteractionWriter::ResumeTag{});
      if (writer->get_int_attribute("complete") == 1) {
        already_complete = 1;
      } else {
        if (writer->read_tokens() != tokens) fail("--resume: ", o.out, " was computed for other tokens");
        if (plan.full && writer->map_chunk() != chunk)
          fail("--resume: ", o.out, " has map chunks of ", writer->map_chunk(), "; resume with --map-chunk ",
               writer->map_chunk());
        if (writer->get_string_attribute("model_config") != c.to_json())
          fail("--resume: ", o.out, " was computed with another model configuration");
        if (writer->get_string_attribute("resume_key") != resume_key(o, scores, layers, plan))
          fail("--resume: ", o.out, " was written with other --scores, --layers, --tile or --save-logits (",
               writer->get_string_attribute("resume_key"), ")");
        for (std::size_t k = 0; k < layers.size(); ++k) {
          std::vector<std::string> names{"panels_done"};
          if (plan.full)
            for (Score sc : scores) names.push_back(to_string(sc));
          for (const auto& ds : plan_datasets(plan, scores, T)) names.push_back(ds.name);
          writer->open_layer_datasets(layers[k], names);
          const auto flags = writer->read_panel_flags(layers[k]);
          if (static_cast<int64_t>(flags.size()) != npanels) fail("--resume: panel count of ", o.out, " differs");
          std::copy(flags.begin(), flags.end(), done_flat.begin() + k * npanels);
        }
        if (o.save_logits) writer->open_logits();
        writer->set_string_attribute("command_line", join_command_line(argc, argv));
      }
    } catch (const Error& e) {
      resume_error = e.what();
      writer.reset();
    }
  } else if (comm.is_root()) {
    writer = std::make_unique<Hdf5InteractionWriter>(o.out, T, chunk);
    try {
      writer->set_string_attribute("program", "latim");
      writer->set_string_attribute("program_version", kVersion);
      writer->set_string_attribute("command_line", join_command_line(argc, argv));
      writer->set_string_attribute("model_config", c.to_json());
      writer->set_string_attribute("model_family", to_string(c.family));
      writer->set_string_attribute("backend", backend->name());
      writer->set_string_attribute("device", backend->device_name());
      writer->set_string_attribute("resume_key", resume_key(o, scores, layers, plan));
      const std::string conv = conventions_json(c, scores, to_string(backend->precision()));
      writer->set_string_attribute("conventions", conv);
      const Json conv_fields = Json::parse(conv);
      for (auto& [k, v] : conv_fields.items()) writer->set_string_attribute("convention_" + k, v.get<std::string>());
      std::string layer_list;
      for (int l : layers) layer_list += (layer_list.empty() ? "" : ",") + std::to_string(l);
      writer->set_string_attribute("layers", layer_list);
      writer->write_tokens(tokens);
      // Every dataset exists before the writer thread starts: it only fills chunks.
      if (!plan.rows.empty()) writer->write_root_int64("rows", plan.rows);
      writer->set_string_attribute("plan", plan_json(plan));
      for (int l : layers) {
        if (plan.full)
          for (Score s : scores) writer->create_map(l, to_string(s));
        for (const auto& ds : plan_datasets(plan, scores, T)) writer->create_layer_dataset(l, ds.name, ds.type, ds.dims);
        writer->create_panel_flags(l, npanels);
        const auto& b = model.layers[l].out_proj_b;
        if (!b.empty()) writer->write_layer_array(l, "out_bias", b.data(), static_cast<int64_t>(b.size()));
      }
      if (o.save_logits) writer->create_logits(c.vocab_size);
      writer->flush();
    } catch (...) {
      writer->abandon();
      throw;
    }
  }
  // Rank 0's verdict on --resume reaches every rank before any work starts.
  int64_t resume_failed = resume_error.empty() ? 0 : 1;
  comm.world().bcast(&resume_failed, sizeof resume_failed, 0);
  if (resume_failed) {
    if (comm.is_root()) throw Error(resume_error);
    return 1;
  }
  comm.world().bcast(&already_complete, sizeof already_complete, 0);
  if (already_complete) {
    if (comm.is_root()) std::fprintf(stderr, "latim run: %s is already complete; nothing to do\n", o.out.c_str());
    return 0;
  }
  if (!done_flat.empty()) comm.world().bcast(done_flat.data(), done_flat.size(), 0);
  const Group output_group = comm.world().split(0, comm.rank());  // a communicator of its own
  RunStats stats;
  try {
    OutputService out(output_group, writer.get());
    RunRequest req;
    req.layers = layers;
    req.engine.scores = scores;
    req.engine.panel = std::min<int64_t>(o.tile, T);
    req.map_chunk = chunk;
    req.engine.plan = plan;
    req.progress = !o.quiet;
    req.save_logits = o.save_logits;
    // LATIM_TEST_STOP_AFTER=N simulates a signal after N stop checks (the resume tests).
    const char* test_stop = std::getenv("LATIM_TEST_STOP_AFTER");
    auto checks = std::make_shared<int64_t>(test_stop ? std::strtoll(test_stop, nullptr, 10) : -1);
    req.stop_signal = [checks] {
      if (*checks >= 0 && (*checks)-- == 0) g_stop_signal = SIGTERM;
      return g_stop_signal != 0;
    };
    for (std::size_t k = 0; k < layers.size(); ++k)
      req.done_panels[layers[k]].assign(done_flat.begin() + k * npanels, done_flat.begin() + (k + 1) * npanels);
    DistributedRun run(comm, grid, model, *backend, out);
    stats = run.run(tokens, req);
    out.finish();
    if (writer) {
      if (stats.interrupted) writer->close_incomplete();
      else writer->finish();
    }
  } catch (const std::exception& e) {
    if (comm.size() > 1) comm.abort(1, e.what());  // the file stays marked incomplete
    if (writer) {
      if (o.resume) writer->close_incomplete();  // keep the earlier runs' work
      else writer->abandon();
    }
    throw;
  }
  // Every rank reaches this point, interrupted or not, so the collective is safe here.
  const int64_t comm_bytes = comm.world().allreduce_sum(stats.bytes_communicated);
  const int64_t link_bytes = comm.world().allreduce_sum(stats.link_bytes);
  const double device_secs = comm.world().allreduce_max(stats.forward_device_seconds);
  // The slowest rank's forward (in a pipeline of stages, the last stage finishes last).
  const double forward_secs = comm.world().allreduce_max(stats.forward_seconds);
  if (stats.interrupted) {
    if (comm.is_root())
      std::fprintf(stderr, "latim run: stopped by signal %d; %s is incomplete: rerun the same command with --resume\n",
                   static_cast<int>(g_stop_signal), o.out.c_str());
    return 75;  // EX_TEMPFAIL: the job scripts requeue on it
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!o.quiet && comm.is_root()) {
    char device[64] = "", exchange[128] = "";
    if (device_secs >= 0 && layers.empty())  // with maps, the device time includes theirs
      std::snprintf(device, sizeof device, ", %.2f s of it on the device", device_secs);
    if (comm.size() > 1)
      std::snprintf(exchange, sizeof exchange,
                    ", %.1f MB exchanged between ranks, %.1f kB per layer of it joining sequence slices",
                    comm_bytes / 1e6, link_bytes / 1e3 / static_cast<double>(model.config.n_layer));
    std::fprintf(stderr, "latim run: %lld tokens, %zu layer(s) mapped, %d rank(s), %.2f s (forward %.2f s%s, maps %.2f s%s) -> %s\n",
                 static_cast<long long>(T), layers.size(), comm.size(), secs, forward_secs, device,
                 stats.map_seconds, exchange, o.out.c_str());
  }
  return 0;
}

}  // namespace latim::cli
