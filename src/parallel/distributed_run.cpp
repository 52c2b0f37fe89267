// The grid driver: sequence shards joined by ShardedSequenceLink, layer stages passing the
// residual stream chunk by chunk, per-layer traces gathered for the maps, map panels
// dealt out in balanced pairs, and everything written through the OutputService.
#include "parallel/distributed_run.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "io/chunk_codec.hpp"
#include "latim/error.hpp"
#include "parallel/sequence_link.hpp"

namespace latim {

namespace {

constexpr int kTagResidual = 300;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Encodes panels into HDF5 chunks on this rank and hands them to the output service.
class EncodingSink final : public MapSink {
  static constexpr auto F32 = Hdf5InteractionWriter::Type::F32;
  static constexpr auto I64 = Hdf5InteractionWriter::Type::I64;
  void rows(int layer, const std::string& name, Hdf5InteractionWriter::Type t, int64_t row0, int64_t n, const void* d,
            std::size_t bytes) {
    out_.put_layer_rows(layer, name, t, row0, n, d, bytes);
  }
  // Encodes the [nrows, ncols] block `data` (row stride ld, first row row0 of /layers/NNN/name)
  // into chunks of cr x cc, NaN beyond the block, in parallel, and posts them in row-major order.
  void put_chunks(int layer, const std::string& name, int64_t row0, int64_t nrows, int64_t ncols, const float* data,
                  int64_t ld, int64_t cr, int64_t cc) {
    const int64_t nr = (nrows + cr - 1) / cr, nq = (ncols + cc - 1) / cc;
    std::vector<std::vector<unsigned char>> encoded(static_cast<std::size_t>(nr * nq));
#pragma omp parallel for schedule(dynamic)
    for (int64_t k = 0; k < nr * nq; ++k) {
      const int64_t r0 = (k / nq) * cr, j0 = (k % nq) * cc;
      const int64_t mr = std::min(cr, nrows - r0), nj = std::min(cc, ncols - j0);
      std::vector<float> chunk(static_cast<std::size_t>(cr * cc), std::numeric_limits<float>::quiet_NaN());
      for (int64_t r = 0; r < mr; ++r) std::memcpy(&chunk[r * cc], data + (r0 + r) * ld + j0, nj * sizeof(float));
      encoded[k] = encode_chunk(chunk.data(), chunk.size());
    }
    for (int64_t k = 0; k < nr * nq; ++k)
      out_.put_chunk(layer, name, row0 + (k / nq) * cr, (k % nq) * cc, std::move(encoded[k]));
  }

 public:
  // chunk: the maps' chunk edge; n_rows: the number of --rows (the rows datasets' height).
  EncodingSink(OutputService& out, int64_t chunk, int64_t n_rows) : out_(out), c_(chunk), n_rows_(n_rows) {}
  void on_panel(int layer, Score score, int64_t i0, int64_t ni, int64_t ncols, const float* data) override {
    put_chunks(layer, to_string(score), i0, ni, ncols, data, ncols, c_, c_);
  }
  void on_approx_error(int layer, int64_t i0, int64_t ni, const float* eps) override {
    rows(layer, "approx_error", F32, i0, ni, eps, ni * sizeof(float));
  }
  void on_rows(int layer, Score s, int64_t first, int64_t n, int64_t T, const float* data) override {
    const std::string name = std::string("rows/") + to_string(s);
    const std::vector<int64_t> chunk = Hdf5InteractionWriter::layer_dataset_chunk({n_rows_, T});
    if (chunk[0] != 1) {  // short rows share chunks with other panels' rows: HDF5 encodes them
      rows(layer, name, F32, first, n, data, n * T * sizeof(float));
      return;
    }
    // Long rows (one row per chunk): encode the chunks here, as for the maps, so that the
    // writer thread only stores them.
    put_chunks(layer, name, first, n, T, data, T, 1, chunk[1]);
  }
  void on_rows_error(int layer, int64_t first, int64_t n, const float* eps) override {
    rows(layer, "rows/approx_error", F32, first, n, eps, n * sizeof(float));
  }
  void on_pool(int layer, Score s, int64_t b0, int64_t nb, int64_t P, const float* sum, const float* mx) override {
    rows(layer, std::string("pool/") + to_string(s) + "_sum", F32, b0, nb, sum, nb * P * sizeof(float));
    rows(layer, std::string("pool/") + to_string(s) + "_max", F32, b0, nb, mx, nb * P * sizeof(float));
  }
  void on_topk(int layer, Score s, int64_t i0, int64_t ni, int64_t K, const int64_t* idx, const float* val) override {
    rows(layer, std::string("topk/") + to_string(s) + "_index", I64, i0, ni, idx, ni * K * sizeof(int64_t));
    rows(layer, std::string("topk/") + to_string(s) + "_value", F32, i0, ni, val, ni * K * sizeof(float));
  }
  void on_window(int layer, Score s, int64_t i0, int64_t ni, int64_t W, const float* data) override {
    rows(layer, std::string("window/") + to_string(s), F32, i0, ni, data, ni * W * sizeof(float));
  }
  void on_panel_done(int layer, int64_t panel) override { out_.put_panel_done(layer, panel); }

 private:
  OutputService& out_;
  int64_t c_, n_rows_;
};

struct NullSink final : MapSink {
  void on_panel(int, Score, int64_t, int64_t, int64_t, const float*) override {}
  void on_approx_error(int, int64_t, int64_t, const float*) override {}
};

template <class T>
void gather_rows(const Group& g, const std::vector<T>& local, int64_t local_rows, int64_t total_rows, int64_t row0,
                 std::vector<T>& global, int64_t& bytes) {
  if (local.empty()) return;
  const std::size_t width = local.size() / static_cast<std::size_t>(local_rows);
  global.resize(static_cast<std::size_t>(total_rows) * width);
  if (g.size() == 1) {  // one rank: straight into place (no staging copy)
    std::memcpy(global.data() + static_cast<std::size_t>(row0) * width, local.data(), local.size() * sizeof(T));
    return;
  }
  std::vector<char> all;
  std::vector<std::size_t> counts;
  g.allgatherv(local.data(), local.size() * sizeof(T), all, counts);
  if (g.size() > 1) bytes += static_cast<int64_t>(all.size());
  std::memcpy(global.data() + static_cast<std::size_t>(row0) * width, all.data(), all.size());
}

// Appends this chunk's slices of every rank into the global trace at rows [row0, ...).
void gather_trace(const Group& g, const LayerTrace& local, int64_t T, int64_t row0, LayerTrace& global, int64_t& bytes) {
  const int64_t n = local.T;
  global.T = T;
  gather_rows(g, local.r_in, n, T, row0, global.r_in, bytes);
  gather_rows(g, local.o, n, T, row0, global.o, bytes);
  gather_rows(g, local.v, n, T, row0, global.v, bytes);
  gather_rows(g, local.x, n, T, row0, global.x, bytes);
  gather_rows(g, local.delta, n, T, row0, global.delta, bytes);
  gather_rows(g, local.S, n, T, row0, global.S, bytes);
  gather_rows(g, local.B, n, T, row0, global.B, bytes);
  gather_rows(g, local.C, n, T, row0, global.C, bytes);
  gather_rows(g, local.gate, n, T, row0, global.gate, bytes);
  gather_rows(g, local.gamma, n, T, row0, global.gamma, bytes);
}

}  // namespace

Grid plan_grid(const GridPlan& plan, int world_size, int world_rank, int64_t n_layer, int64_t T, int64_t d_conv,
               bool device_backend) {
  Grid g;
  if (plan.forward != "auto" && plan.forward != "sharded" && plan.forward != "replicated")
    fail("--forward: '", plan.forward, "' is not one of auto, sharded, replicated");
  if (plan.layer_shards < 0 || plan.seq_shards < 0) fail("--seq-shards and --layer-shards must be positive");
  g.L = plan.layer_shards ? plan.layer_shards : 1;
  if (g.L > n_layer) fail("--layer-shards ", g.L, " exceeds the model's ", n_layer, " layers");
  if (world_size % g.L != 0 && !plan.seq_shards)
    fail("--layer-shards ", g.L, " does not divide the ", world_size, " ranks of this job");
  g.S = plan.seq_shards ? plan.seq_shards : world_size / g.L;
  if (g.S * g.L != world_size)
    fail("--seq-shards ", g.S, " x --layer-shards ", g.L, " = ", g.S * g.L, " ranks, but the job has ", world_size);
  g.stage = world_rank / g.S;
  g.seq_rank = world_rank % g.S;
  g.layer_begin = g.stage * n_layer / g.L;
  g.layer_end = (g.stage + 1) * n_layer / g.L;
  if (plan.chunk_tokens < 0) fail("--chunk-tokens must be positive");
  g.chunk_tokens = plan.chunk_tokens ? plan.chunk_tokens : (g.L == 1 ? T : (T + 2 * g.L - 1) / (2 * g.L));
  g.n_chunks = std::max<int64_t>(1, (T + g.chunk_tokens - 1) / g.chunk_tokens);
  if (plan.forward == "replicated" && (g.L > 1 || g.n_chunks > 1))
    fail("--forward replicated runs whole sequences through every layer: it needs --layer-shards 1 and no "
         "--chunk-tokens below T");
  g.replicated = plan.forward == "replicated" || (plan.forward == "auto" && device_backend && g.L == 1 &&
                                                  g.n_chunks == 1 && world_size > 1);
  if (!g.replicated && (g.S > 1 || g.n_chunks > 1)) {
    const int64_t min_slice = (T / g.n_chunks) / g.S;
    if (min_slice < std::max<int64_t>(1, d_conv - 1))
      fail("T = ", T, " tokens is too short for ", g.S, " sequence shard(s) x ", g.n_chunks,
           " chunk(s): every slice needs at least ", std::max<int64_t>(1, d_conv - 1),
           " tokens (use fewer --seq-shards or a larger --chunk-tokens)");
  }
  return g;
}

DistributedRun::DistributedRun(const Comm& comm, const Grid& grid, const ModelWeights& model, ComputeBackend& backend,
                               OutputService& out)
    : comm_(comm), grid_(grid), model_(model), backend_(backend), out_(out) {}

RunStats DistributedRun::run(const std::vector<int64_t>& tokens, const RunRequest& req) {
  RunStats stats;
  const ModelConfig& c = model_.config;
  const int64_t T = static_cast<int64_t>(tokens.size()), d = c.d_model;
  const Grid& g = grid_;
  const Group stage_group = comm_.world().split(g.stage, g.seq_rank);
  const std::set<int> selected(req.layers.begin(), req.layers.end());
  const bool rollout =
      std::find(req.engine.scores.begin(), req.engine.scores.end(), Score::AltiRollout) != req.engine.scores.end();
  const int last_selected = req.layers.empty() ? -1 : req.layers.back();
  if (rollout && g.L > 1) fail("--scores alti-rollout chains every layer and needs --layer-shards 1");
  auto wants_trace = [&](int l) { return selected.count(l) > 0 || (rollout && l <= last_selected); };

  EncodingSink sink(out_, req.map_chunk, static_cast<int64_t>(req.engine.plan.rows.size()));
  NullSink null_sink;
  std::vector<float> rollout_state;
  double map_time = 0;

  // Ranks of a stage agree to stop at layer boundaries, so none is left in a collective.
  auto agree_stop = [&]() {
    const bool mine = req.stop_signal && req.stop_signal();
    return stage_group.allreduce_max(mine ? 1.0 : 0.0) > 0.0;
  };
  // The engine options of layer l on this rank: its panels, minus those already done.
  auto layer_options = [&](int l) {
    EngineOptions opt = req.engine;
    const bool is_selected = selected.count(l) > 0;
    if (!is_selected) {  // feeds the rollout only
      opt.scores = {Score::Alti, Score::AltiRollout};
      opt.plan = MapPlan{};
    }
    const int64_t npanels = (T + opt.panel - 1) / opt.panel;
    const int S = stage_group.size(), me = stage_group.rank();
    // Panel p costs p + 1 tiles: pairing p with npanels - 1 - p evens out the triangle.
    const std::vector<uint8_t>* done = nullptr;
    if (auto it = req.done_panels.find(l); it != req.done_panels.end()) done = &it->second;
    opt.owns_panel = [=](int64_t p) {
      if (done && p < static_cast<int64_t>(done->size()) && (*done)[p]) return false;  // already in the file
      return S == 1 || std::min(p, npanels - 1 - p) % S == me;
    };
    opt.stop_requested = req.stop_signal;
    return opt;
  };
  // One progress line on world rank 0 for all of its layers: tiles, pairs/s and ETA.
  std::unique_ptr<Progress> progress;
  if (req.progress && comm_.is_root()) {
    int64_t total = 0;
    for (int64_t l = g.layer_begin; l < g.layer_end; ++l)
      if (wants_trace(static_cast<int>(l))) total += planned_tiles(T, layer_options(static_cast<int>(l)));
    // Rank 0 counts its own tiles: with several ranks sharing the panels, say so.
    const std::string what = stage_group.size() > 1 ? "maps (rank 0's share of " + std::to_string(stage_group.size()) +
                                                          " ranks)"
                                                    : "maps";
    progress = std::make_unique<Progress>(what, total, "tiles", true);
  }
  // LATIM_TEST_FAIL_RANK=r makes rank r fail at its first mapped layer, while the others go
  // on into the next exchange (the fault test: every rank must end, none may hang).
  static const int fail_rank = [] {
    const char* v = std::getenv("LATIM_TEST_FAIL_RANK");
    return v ? std::atoi(v) : -1;
  }();
  auto map_layer = [&](int l, const LayerTrace& tr) {
    if (comm_.rank() == fail_rank) fail("injected failure at layer ", l, " (LATIM_TEST_FAIL_RANK)");
    if (stats.interrupted || agree_stop()) {
      stats.interrupted = true;
      return;
    }
    const double t0 = now();
    const LayerFactors f = make_layer_factors(c, model_.layers[l], tr);
    EngineOptions opt = layer_options(l);
    opt.progress_line = progress.get();
    compute_layer_maps(l, f, backend_.tiles(), opt, selected.count(l) ? static_cast<MapSink&>(sink) : null_sink,
                       rollout ? &rollout_state : nullptr);
    if (rollout && stage_group.size() > 1) stage_group.allreduce_sum(rollout_state.data(), rollout_state.size());
    map_time += now() - t0;
  };

  // Logits of normed hidden rows [row0, row0 + n), sent in blocks of about 64 MiB.
  auto put_logits = [&](const float* h, int64_t row0, int64_t n) {
    const int64_t rows = std::max<int64_t>(1, (int64_t{1} << 24) / c.vocab_size);
    std::vector<float> buf;
    for (int64_t r0 = 0; r0 < n; r0 += rows) {
      const int64_t m = std::min(rows, n - r0);
      buf.resize(static_cast<std::size_t>(m * c.vocab_size));
      logits_rows(model_, h + r0 * d, m, buf.data());
      out_.put_logits_rows(row0 + r0, m, buf);
    }
  };

  // Hands each traced layer the backend's forward produces to `take` (by default, maps it
  // on the same backend, so the trace may stay in device memory); the residual is not read.
  struct Observer final : LayerObserver {
    std::function<bool(int)> want;
    std::function<void(int, const LayerTrace&)> take;
    const bool* interrupted = nullptr;
    bool logits = true;
    bool wants_trace(int l) const override { return want(l); }
    bool accepts_device_trace(int) const override { return true; }
    bool wants_residual(int) const override { return false; }
    bool wants_final_hidden() const override { return logits; }
    bool stopped() const override { return *interrupted; }
    void on_layer(int l, const LayerWeights&, const LayerTrace* tr, const std::vector<float>&) override {
      if (tr) take(l, *tr);
    }
  } obs;
  obs.want = wants_trace;
  obs.take = map_layer;
  obs.interrupted = &stats.interrupted;
  obs.logits = req.save_logits;

  // After a forward made in one backend call: the times, and the logits of this rank's rows
  // [a, b) (fwd holds the rows from `first` on).
  auto finish = [&](double t0, const ForwardOutput& fwd, int64_t first, int64_t a, int64_t b) {
    stats.forward_seconds = now() - t0 - map_time;
    stats.forward_device_seconds = backend_.forward_device_seconds();
    if (req.save_logits && !stats.interrupted) put_logits(fwd.final_hidden.data() + (a - first) * d, a, b - a);
    stats.map_seconds = map_time;
    if (progress) progress->finish();
    return stats;
  };

  // One rank and one chunk, or a replicated forward: the backend's own forward pass (CPU or
  // CUDA) over the whole sequence, with this rank's share of the map panels per layer.
  if ((comm_.size() == 1 && g.n_chunks == 1) || g.replicated) {
    const double t0 = now();
    const ForwardOutput fwd = backend_.forward(model_, tokens, &obs);
    // Each rank writes its share of the logits rows.
    return finish(t0, fwd, 0, T * comm_.rank() / comm_.size(), T * (comm_.rank() + 1) / comm_.size());
  }

  // Sequence shards of one stage and one chunk on a backend that joins them in device memory
  // (CUDA over NCCL): each rank runs its slice, and every rank gets each traced layer's
  // whole trace for its share of the panels.
  if (g.S > 1 && g.L == 1 && g.n_chunks == 1 && backend_.has_sharded_forward()) {
    std::vector<int64_t> bounds(static_cast<std::size_t>(g.S) + 1);
    for (int q = 0; q <= g.S; ++q) bounds[q] = T * q / g.S;
    const double t0 = now();
    const ForwardOutput fwd = backend_.forward_shard(model_, tokens, bounds, stage_group, &obs);
    stats.bytes_communicated += fwd.link_bytes + fwd.trace_bytes;
    stats.link_bytes = fwd.link_bytes;
    const int64_t a = bounds[g.seq_rank];
    return finish(t0, fwd, a, a, bounds[g.seq_rank + 1]);
  }

  // This rank's part of the grid: its stage's layers over its slice of each chunk, the
  // residual stream coming from the stage before and going to the stage after.
  StagePlan plan;
  plan.layer_begin = g.layer_begin;
  plan.layer_end = g.layer_end;
  for (int64_t k = 0; k <= g.n_chunks; ++k) plan.chunks.push_back(T * k / g.n_chunks);
  plan.S = g.S;
  plan.seq_rank = g.seq_rank;
  plan.prev_rank = g.stage > 0 ? comm_.rank() - g.S : -1;
  plan.next_rank = g.stage + 1 < g.L ? comm_.rank() + g.S : -1;

  // The grid on a backend that keeps it in device memory (CUDA over NCCL, one GPU per rank):
  // the residual stream, the joins and the traces stay on the GPUs; the traced layers come
  // back whole after the last chunk and are mapped then.
  if (backend_.has_device_grid(comm_.world())) {
    obs.take = map_layer;
    std::function<void(const float*, int64_t, int64_t)> final_rows;
    if (req.save_logits) final_rows = put_logits;
    const double t0 = now();
    const StageOutput so = backend_.forward_stage(model_, tokens, plan, comm_.world(), stage_group, &obs, final_rows);
    stats.forward_seconds = now() - t0 - map_time;
    stats.forward_device_seconds = backend_.forward_device_seconds();
    stats.map_seconds = map_time;
    stats.bytes_communicated += so.link_bytes + so.trace_bytes + so.residual_bytes;
    stats.link_bytes = so.link_bytes;
    if (progress) progress->finish();
    return stats;
  }

  // The grid elsewhere: each stage runs its layers per slice on the backend (forward_layers),
  // the slices joined across ranks and chunks by the host link.
  if (req.progress && comm_.is_root() && backend_.name() != "cpu")
    std::fprintf(stderr, "latim run: note: %s, so the layer stages and sequence chunks join through host memory\n",
                 backend_.has_sharded_forward() ? "ranks share a GPU (NCCL needs one GPU per rank)"
                                                : "this build has no NCCL");
  const bool immediate = g.L == 1 && g.n_chunks == 1;
  std::unique_ptr<ShardedSequenceLink> link = std::make_unique<ShardedSequenceLink>(stage_group, c.n_layer);
  std::map<int, LayerTrace> global_traces;
  const double t_start = now();
  for (int64_t k = 0; k < g.n_chunks; ++k) {
    const int64_t c0 = plan.chunks[k];
    const int64_t a = plan.slice_begin(k, g.seq_rank), b = plan.slice_begin(k, g.seq_rank + 1), n = b - a;
    std::vector<float> r;
    if (plan.prev_rank < 0) {
      r = embed_tokens(model_, std::vector<int64_t>(tokens.begin() + a, tokens.begin() + b), a);
    } else {
      r.resize(static_cast<std::size_t>(n * d));
      comm_.world().recv(r.data(), r.size() * sizeof(float), plan.prev_rank, kTagResidual);
    }
    // Each traced layer of the slice: mapped now (one stage, one chunk) or gathered for later.
    // (Only mapping sets stats.interrupted, so the stage stops early only in the first case.)
    obs.take = [&](int li, const LayerTrace& local) {
      if (immediate && stage_group.size() == 1) {
        map_layer(li, local);
      } else if (immediate) {
        LayerTrace global;
        gather_trace(stage_group, local, T, c0, global, stats.bytes_communicated);
        map_layer(li, global);
      } else {
        gather_trace(stage_group, local, T, c0, global_traces[li], stats.bytes_communicated);
      }
    };
    backend_.forward_layers(model_, g.layer_begin, g.layer_end, n, r, link.get(), &obs);
    if (stats.interrupted) break;
    if (plan.next_rank >= 0) {
      comm_.world().send(r.data(), r.size() * sizeof(float), plan.next_rank, kTagResidual);
      stats.bytes_communicated += static_cast<int64_t>(r.size() * sizeof(float));
    } else if (req.save_logits) {
      put_logits(final_norm(model_, r).data(), a, n);
    }
  }
  stats.forward_seconds = now() - t_start - map_time;
  for (auto& [l, tr] : global_traces) {
    map_layer(l, tr);
    tr = LayerTrace{};
  }
  stats.map_seconds = map_time;
  stats.bytes_communicated += link->bytes_communicated();
  stats.link_bytes = link->bytes_communicated();
  if (progress) progress->finish();
  return stats;
}

}  // namespace latim
