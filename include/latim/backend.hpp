// The compute backend seam: the forward pass and the LaTIM tile backend of one device kind.
// The backend is chosen once, by make_backend(); the rest of the program only sees this API.
#pragma once
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
};

// "cpu", "cuda" or "auto" (cuda when built with it and a GPU is present, else cpu).
// `local_rank` (the rank's index on its node) picks the GPU: device local_rank mod count.
std::unique_ptr<ComputeBackend> make_backend(const std::string& name, Precision precision = Precision::FP32,
                                             int local_rank = 0);
bool cuda_available();  // built with CUDA and at least one device visible

}  // namespace latim
