// DistributedRun: the forward pass and the maps over a grid of ranks, S sequence shards x
// L layer stages, with the sequence cut into chunks that flow through the stages as a
// pipeline. One rank with one chunk is the plain case of the same code.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "io/output_service.hpp"
#include "latim/backend.hpp"
#include "latim/comm.hpp"
#include "latim/latim.hpp"
#include "latim/model.hpp"

namespace latim {

struct GridPlan {
  int seq_shards = 0;        // S (0: all ranks, divided by L)
  int layer_shards = 0;      // L (0: 1)
  int64_t chunk_tokens = 0;  // tokens per pipeline chunk (0: T when L = 1, else about T / 2L)
  // "sharded": the S ranks of a stage share the sequence; "replicated": every rank runs the
  // whole forward on its own device and the ranks share the map panels; "auto": replicated
  // for a device backend with one stage and one chunk, else sharded.
  std::string forward = "auto";
};

struct Grid {
  int S = 1, L = 1;
  int stage = 0, seq_rank = 0;
  int64_t layer_begin = 0, layer_end = 0;  // this stage's layers
  int64_t chunk_tokens = 0, n_chunks = 1;
  bool replicated = false;  // every rank runs the whole forward (see GridPlan::forward)
};

// Resolves the defaults and checks the layout against the rank count, the model and T.
// Errors name the flag at fault.
// `device_backend`: the forward runs on an accelerator (where "auto" replicates it).
Grid plan_grid(const GridPlan& plan, int world_size, int world_rank, int64_t n_layer, int64_t T, int64_t d_conv,
               bool device_backend = false);

struct RunRequest {
  std::vector<int> layers;  // layers to map (sorted)
  EngineOptions engine;
  int64_t map_chunk = 0;  // the [T, T] maps' HDF5 chunk edge, at most T (divides engine.panel)
  bool save_logits = false;
  bool progress = false;  // the progress line on world rank 0
  std::map<int, std::vector<uint8_t>> done_panels;  // from --resume: panels already in the file
  std::function<bool()> stop_signal;                 // this rank received SIGTERM/SIGUSR1
};

struct RunStats {
  double forward_seconds = 0, map_seconds = 0;
  double forward_device_seconds = -1;  // the backend's own device time of the forward (-1: none)
  int64_t bytes_communicated = 0;  // this rank's halo, state and trace exchanges
  int64_t link_bytes = 0;          // of which joining sequence slices (halos, state and Δ-sum prefixes)
  bool interrupted = false;        // stopped early by a signal; the file can be resumed
};

class DistributedRun {
 public:
  DistributedRun(const Comm& comm, const Grid& grid, const ModelWeights& model, ComputeBackend& backend,
                 OutputService& out);
  RunStats run(const std::vector<int64_t>& tokens, const RunRequest& req);

 private:
  const Comm& comm_;
  Grid grid_;
  const ModelWeights& model_;
  ComputeBackend& backend_;
  OutputService& out_;
};

}  // namespace latim
