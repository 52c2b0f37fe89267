// Collectives on device buffers between the ranks of a Group, over NCCL (one GPU per rank,
// bootstrapped through the Group's MPI communicator). Errors name the operation, the layer
// and the rank. Without NCCL in the build, constructing one fails with a clear message.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "latim/comm.hpp"

namespace latim {

class NcclGroup {
 public:
  explicit NcclGroup(const Group& g);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  std::intptr_t group_handle() const { return handle_; }

  // Calls between begin() and end() are issued together (one NCCL group).
  void begin();
  void end(const char* what, int layer);
  // Every rank's `bytes[q]` bytes land at recv + offset[q] (q's own part included; `send`
  // is this rank's part). counts and offsets in bytes, the same on every rank.
  void allgatherv(const void* send, void* recv, const std::vector<std::size_t>& bytes,
                  const std::vector<std::size_t>& offset, cudaStream_t stream, const char* what, int layer);
  // Equal parts of `bytes` from every rank, in rank order, into recv (size() * bytes).
  void allgather(const void* send, void* recv, std::size_t bytes, cudaStream_t stream, const char* what, int layer);
  // Sends `bytes` to rank + 1 (the last rank sends nothing) and receives `bytes` from
  // rank - 1 into recv (rank 0 receives nothing).
  void shift_down(const void* send, void* recv, std::size_t bytes, cudaStream_t stream, const char* what, int layer);
  // Point-to-point: `bytes` to or from rank `peer` (alone, or between begin() and end()).
  void send(const void* buf, std::size_t bytes, int peer, cudaStream_t stream, const char* what, int layer);
  void recv(void* buf, std::size_t bytes, int peer, cudaStream_t stream, const char* what, int layer);

  // Bytes this rank received from other ranks so far.
  int64_t bytes_received() const { return received_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
  std::intptr_t handle_ = 0;
  int64_t received_ = 0;
};

bool nccl_available();  // built with NCCL

}  // namespace latim
