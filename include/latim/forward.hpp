// The CPU forward pass (the reference backend). It runs layer by layer over the whole
// sequence and hands each layer's LaTIM factors to an observer, so the interaction engine
// reads them once, tile by tile, without recomputing the model.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "latim/model.hpp"

namespace latim {

// A layer's trace kept in an accelerator's memory, for that backend's own tile backend
// (no round trip through the host). The host can read rows of the mixer output.
class DeviceTrace {
 public:
  virtual ~DeviceTrace() = default;
  // Rows [i0, i0 + n) of o (b_out included) into dst, [n, d].
  virtual void read_o(int64_t i0, int64_t n, float* dst) const = 0;
};

// Per-layer quantities of latim-method.md §3, for all T positions. Row-major [T, width].
// A backend may hand over `device` instead of the host vectors (then only T is set); it
// stays valid until the observer's on_layer returns.
struct LayerTrace {
  int64_t T = 0;
  std::shared_ptr<const DeviceTrace> device;
  std::vector<float> r_in;   // [T, d]  residual stream entering the layer
  std::vector<float> o;      // [T, d]  mixer output, b_out included
  std::vector<float> v;      // [T, D]  conv input of the x channels (pre-conv)
  std::vector<float> x;      // [T, D]  post-activation conv output (the SSM input)
  std::vector<float> delta;  // [T, D] (Mamba-1) or [T, H] (Mamba-2)
  std::vector<double> S;     // cumulative sum of delta over positions, same shape; fp64
                             // because S_i - S_l is taken between far-apart positions
  std::vector<float> B;      // [T, N] (Mamba-1) or [T, G, N] (Mamba-2)
  std::vector<float> C;      // same as B
  std::vector<float> gate;   // [T, D]  SiLU(z)
  std::vector<float> gamma;  // [T, D]  Mamba-2 gated-norm scale, weight included
};

class LayerObserver {
 public:
  virtual ~LayerObserver() = default;
  // Whether on_layer wants the full trace of this layer (else only residual outputs).
  virtual bool wants_trace(int layer) const { return false; }
  // Whether the trace may stay in device memory (the maps run on the same backend).
  virtual bool accepts_device_trace(int layer) const { return false; }
  // Whether on_layer reads `residual` (else a device backend may pass it empty).
  virtual bool wants_residual(int layer) const { return true; }
  // Whether the caller reads ForwardOutput::final_hidden (else it may be left empty, which
  // saves a device backend the download of T x d values).
  virtual bool wants_final_hidden() const { return true; }
  // Whether the caller needs no more layers (it was stopped by a signal): a backend running
  // a stage's layers (ComputeBackend::forward_layers) returns early, its output unused.
  virtual bool stopped() const { return false; }
  // Called after layer `layer`, with `residual` = the residual stream after it, [T, d].
  virtual void on_layer(int layer, const LayerWeights& w, const LayerTrace* trace,
                        const std::vector<float>& residual) = 0;
};

// How a slice of the sequence joins the tokens before it: the conv halo and the scans'
// incoming state (latim-method.md §1-2). Implemented over MPI ranks and over sequence
// chunks with carried state (src/parallel/); a pass over the whole sequence needs none.
class SequenceLink {
 public:
  virtual ~SequenceLink() = default;
  // Gives this slice's last `rows` rows of conv input (tail, [rows, width]) to the next
  // slice and returns the `rows` rows before this slice in `prev` (zeros at the start).
  virtual void conv_halo(int layer, const float* tail, int64_t rows, int64_t width, float* prev) = 0;
  // Scan summaries of this slice from a zero state: `decay` (the product of the step
  // decays) and the final `state`, n values each. Returns the incoming state in h_in.
  virtual void scan_prefix(int layer, const float* decay, const float* state, int64_t n, float* h_in) = 0;
  // Sums of Δ over this slice (n channels or heads); returns the sums over all earlier tokens.
  virtual void sum_prefix(int layer, const double* total, int64_t n, double* offset) = 0;
};

// One layer on a slice of T_local tokens: r [T_local, d] is updated in place (r += o).
// `trace` (optional) receives the slice's LayerTrace, with S offset to global positions.
void layer_forward_cpu(const ModelConfig& c, const LayerWeights& w, int layer, int64_t T_local,
                       std::vector<float>& r, LayerTrace* trace, SequenceLink* link);

// Embedding rows for tokens (ids checked against the vocabulary; `first_position` names
// the position of tokens[0] in errors).
std::vector<float> embed_tokens(const ModelWeights& model, const std::vector<int64_t>& tokens,
                                int64_t first_position = 0);
// The final RMSNorm of the residual stream [T, d].
std::vector<float> final_norm(const ModelWeights& model, const std::vector<float>& residual);
// logits for the rows of normed hidden states h [nrows, d] -> out [nrows, vocab_size].
void logits_rows(const ModelWeights& model, const float* h, int64_t nrows, float* out);

struct ForwardOutput {
  int64_t T = 0;
  std::vector<float> final_hidden;  // [T, d] after the final RMSNorm
  // A sharded forward's bytes received from other ranks: joining the slices (conv halos,
  // scan and Δ-sum summaries) and gathering the traced layers' factors.
  int64_t link_bytes = 0, trace_bytes = 0;
};

ForwardOutput forward_cpu(const ModelWeights& model, const std::vector<int64_t>& tokens,
                          LayerObserver* observer = nullptr);

// logits[r, :] for rows [row0, row0 + nrows) of final_hidden, [nrows, vocab_size].
void compute_logits(const ModelWeights& model, const ForwardOutput& fwd, int64_t row0,
                    int64_t nrows, float* out);

}  // namespace latim
