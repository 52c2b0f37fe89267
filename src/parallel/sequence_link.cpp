// Halo exchange and (decay, state) prefix combination across sequence shards and chunks.
#include "parallel/sequence_link.hpp"

#include <algorithm>
#include <cstring>

namespace latim {

namespace {
constexpr int kTagHalo = 101;
constexpr int kTagCarry = 102;
}  // namespace

ShardedSequenceLink::ShardedSequenceLink(const Group& seq, int n_layers) : seq_(seq), carry_(n_layers) {}

void ShardedSequenceLink::conv_halo(int layer, const float* tail, int64_t rows, int64_t width, float* prev) {
  Carry& c = carry_[layer];
  const std::size_t n = static_cast<std::size_t>(rows * width);
  const std::size_t bytes = n * sizeof(float);
  if (c.tail.size() != n) c.tail.assign(n, 0.0f);
  const int r = seq_.rank(), S = seq_.size();
  if (S == 1) {
    std::memcpy(prev, c.tail.data(), bytes);
    std::memcpy(c.tail.data(), tail, bytes);
    return;
  }
  // Tails move one rank down the sequence. Even ranks send first and odd ranks receive
  // first, so the blocking calls pair up without deadlock.
  auto send_next = [&] { if (r + 1 < S) { seq_.send(tail, bytes, r + 1, kTagHalo); bytes_ += bytes; } };
  auto recv_prev = [&] {
    if (r > 0) { seq_.recv(prev, bytes, r - 1, kTagHalo); bytes_ += bytes; }
    else std::memcpy(prev, c.tail.data(), bytes);
  };
  if (r % 2 == 0) { send_next(); recv_prev(); } else { recv_prev(); send_next(); }
  // The last rank's tail precedes the next chunk's first slice.
  if (r == S - 1) { seq_.send(tail, bytes, 0, kTagCarry); bytes_ += bytes; }
  if (r == 0) { seq_.recv(c.tail.data(), bytes, S - 1, kTagCarry); bytes_ += bytes; }
}

void ShardedSequenceLink::scan_prefix(int layer, const float* decay, const float* state, int64_t n, float* h_in) {
  Carry& c = carry_[layer];
  if (c.state.size() != static_cast<std::size_t>(n)) c.state.assign(n, 0.0f);
  const int r = seq_.rank(), S = seq_.size();
  std::vector<float> mine(2 * n), all(2 * n * S);
  std::copy(decay, decay + n, mine.begin());
  std::copy(state, state + n, mine.begin() + n);
  seq_.allgather(mine.data(), mine.size() * sizeof(float), all.data());
  if (S > 1) bytes_ += static_cast<int64_t>(all.size() * sizeof(float));
  // h <- decay_q * h + state_q over the ranks before this one, starting from the carry.
  std::vector<float> h = c.state;
  for (int q = 0; q < S; ++q) {
    if (q == r) std::copy(h.begin(), h.end(), h_in);
    const float* dq = all.data() + 2 * n * q;
    const float* sq = dq + n;
    for (int64_t k = 0; k < n; ++k) h[k] = dq[k] * h[k] + sq[k];
  }
  c.state.swap(h);
}

void ShardedSequenceLink::sum_prefix(int layer, const double* total, int64_t n, double* offset) {
  Carry& c = carry_[layer];
  if (c.sum.size() != static_cast<std::size_t>(n)) c.sum.assign(n, 0.0);
  const int r = seq_.rank(), S = seq_.size();
  std::vector<double> all(n * S);
  seq_.allgather(total, n * sizeof(double), all.data());
  std::vector<double> acc = c.sum;
  for (int q = 0; q < S; ++q) {
    if (q == r) std::copy(acc.begin(), acc.end(), offset);
    for (int64_t k = 0; k < n; ++k) acc[k] += all[n * q + k];
  }
  c.sum.swap(acc);
}

}  // namespace latim
