// ShardedSequenceLink joins slices of the sequence across the ranks of one pipeline stage
// and across sequence chunks: conv halos by point-to-point messages, scan states and Δ
// sums by an all-gather of per-rank summaries and a local exclusive scan. What the last
// slice of a chunk leaves (tail, state, sums) is carried into the next chunk.
#pragma once
#include <vector>

#include "latim/comm.hpp"
#include "latim/forward.hpp"

namespace latim {

class ShardedSequenceLink final : public SequenceLink {
 public:
  ShardedSequenceLink(const Group& seq, int n_layers);
  void conv_halo(int layer, const float* tail, int64_t rows, int64_t width, float* prev) override;
  void scan_prefix(int layer, const float* decay, const float* state, int64_t n, float* h_in) override;
  void sum_prefix(int layer, const double* total, int64_t n, double* offset) override;

  // Bytes this rank sent or received for the scan and halo exchanges (for the benchmark).
  int64_t bytes_communicated() const { return bytes_; }

 private:
  struct Carry {
    std::vector<float> tail, state;
    std::vector<double> sum;
  };
  const Group& seq_;
  std::vector<Carry> carry_;
  int64_t bytes_ = 0;
};

}  // namespace latim
