// The compute backend seam: the forward pass and the LaTIM tile backend of one device kind.
// The backend is chosen once, by make_backend(); the rest of the program only sees this API.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "latim/comm.hpp"
#include "latim/forward.hpp"
#include "latim/latim.hpp"

namespace latim {

enum class Precision { FP32, TF32, BF16 };
const char* to_string(Precision p);
Precision parse_precision(const std::string& s);  // throws naming --precision

// One rank's part of the grid's forward (DistributedRun, on the host or through
// forward_stage()): the stage's layers over this rank's slice of each sequence chunk in turn,
// chunks in sequence order.
struct StagePlan {
  int64_t layer_begin = 0, layer_end = 0;  // the stage's layers
  std::vector<int64_t> chunks;             // chunk k is tokens [chunks[k], chunks[k + 1])
  int S = 1, seq_rank = 0;                 // the stage's sequence shards (its group) and this rank's place
  int prev_rank = -1, next_rank = -1;      // world ranks the residual comes from and goes to (-1: embed, final norm)
  // Slice q of chunk k: [c0 + len q / S, c0 + len (q + 1) / S) (q = S: the chunk's end).
  int64_t slice_begin(int64_t k, int q) const {
    const int64_t c0 = chunks[k], len = chunks[k + 1] - c0;
    return c0 + len * q / S;
  }
};

// What forward_stage() moved: bytes received joining the slices (halos, state and Δ-sum
// prefixes), gathering the traces, and passing the residual stream between stages.
struct StageOutput {
  int64_t link_bytes = 0, trace_bytes = 0, residual_bytes = 0;
};

class ComputeBackend {
 public:
  virtual ~ComputeBackend() = default;
  virtual std::string name() const = 0;         // "cpu", "cuda"
  virtual std::string device_name() const = 0;  // e.g. the CPU or GPU model, for the output file
  virtual ForwardOutput forward(const ModelWeights& model, const std::vector<int64_t>& tokens,
                                LayerObserver* observer) = 0;
  virtual TileBackend& tiles() = 0;
  virtual Precision precision() const { return Precision::FP32; }
  // Device time of the last forward pass (layers and final norm, collectives included, host
  // copies not); -1 where the backend does not measure it.
  virtual double forward_device_seconds() const { return -1.0; }

  // Layers [l0, l1) over a slice of T tokens, each as layer_forward_cpu(): r [T, d] (host)
  // is updated in place, `link` joins the slice to the tokens before it, and the observer
  // gets each layer's host trace when it wants one (the residual argument is empty). The
  // grid's layouts (layer stages, sequence chunks, sharded slices) run through this. The
  // default is the CPU reference.
  virtual void forward_layers(const ModelWeights& model, int64_t l0, int64_t l1, int64_t T, std::vector<float>& r,
                              SequenceLink* link, LayerObserver* observer);

  // Whether forward_shard() runs here: a sequence-sharded forward whose exchanges stay in
  // device memory (the CUDA backend with NCCL). Otherwise the grid runs the CPU forward per
  // slice and joins the slices over MPI.
  virtual bool has_sharded_forward() const { return false; }
  // The forward of tokens[bounds[q], bounds[q + 1]) on rank q of `group`, every rank of the
  // group calling it together (rank order is sequence order; bounds has size() + 1 entries).
  // The slices are joined by the conv halo and the (decay, state) prefix. The observer gets
  // each traced layer's whole-sequence trace, gathered from all ranks, and no residual. The
  // output holds this rank's rows of the final hidden state.
  virtual ForwardOutput forward_shard(const ModelWeights& model, const std::vector<int64_t>& tokens,
                                      const std::vector<int64_t>& bounds, const Group& group,
                                      LayerObserver* observer);

  // Whether forward_stage() runs here for this job: the grid's layouts (layer stages,
  // sequence chunks) with the residual stream, the joins and the traces in device memory
  // and the exchanges over NCCL. The CUDA backend with NCCL says yes when every rank of
  // `world` has a GPU of its own. Collective: every rank of `world` calls it.
  virtual bool has_device_grid(const Group& world);
  // The grid's forward on this rank, every rank of `world` calling it together (`stage`: the
  // ranks of this rank's stage, in sequence order). Stage 0 embeds its slices; later stages
  // receive the residual stream from plan.prev_rank; all but the last pass it on to
  // plan.next_rank; the last hands its rows of the final norm's output to `final_rows`
  // (rows [row0, row0 + n) of the sequence, [n, d]; skipped when empty). After the last
  // chunk the observer gets each traced layer's whole-sequence trace, in device memory,
  // in layer order.
  virtual StageOutput forward_stage(const ModelWeights& model, const std::vector<int64_t>& tokens,
                                    const StagePlan& plan, const Group& world, const Group& stage,
                                    LayerObserver* observer,
                                    const std::function<void(const float*, int64_t, int64_t)>& final_rows);
};

// "cpu", "cuda" or "auto" (cuda when built with it and a GPU is present, else cpu).
// `local_rank` (the rank's index on its node) picks the GPU: device local_rank mod count.
std::unique_ptr<ComputeBackend> make_backend(const std::string& name, Precision precision = Precision::FP32,
                                             int local_rank = 0);
bool cuda_available();  // built with CUDA and at least one device visible

}  // namespace latim
