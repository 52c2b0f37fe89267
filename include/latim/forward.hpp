// The CPU forward pass (the reference backend). It runs layer by layer over the whole
// sequence and hands each layer's LaTIM factors to an observer, so the interaction engine
// reads them once, tile by tile, without recomputing the model.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "latim/model.hpp"

namespace latim {

// Per-layer quantities of latim-method.md §3, for all T positions. Row-major [T, width].
struct LayerTrace {
  int64_t T = 0;
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
  // Called after layer `layer`, with `residual` = the residual stream after it, [T, d].
  virtual void on_layer(int layer, const LayerWeights& w, const LayerTrace* trace,
                        const std::vector<float>& residual) = 0;
};

struct ForwardOutput {
  int64_t T = 0;
  std::vector<float> final_hidden;  // [T, d] after the final RMSNorm
};

ForwardOutput forward_cpu(const ModelWeights& model, const std::vector<int64_t>& tokens,
                          LayerObserver* observer = nullptr);

// logits[r, :] for rows [row0, row0 + nrows) of final_hidden, [nrows, vocab_size].
void compute_logits(const ModelWeights& model, const ForwardOutput& fwd, int64_t row0,
                    int64_t nrows, float* out);

}  // namespace latim
