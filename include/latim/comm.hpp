// Process groups: MPI when built with it, otherwise a single rank. Everything above this
// layer talks to Group and never calls MPI directly.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace latim {

// A set of ranks that communicate (MPI_COMM_WORLD or a split of it).
class Group {
 public:
  Group() = default;  // the one-rank group
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }

  void barrier() const;
  // Every rank contributes `bytes` bytes; out receives size() * bytes, in rank order.
  void allgather(const void* in, std::size_t bytes, void* out) const;
  // Variable-size version: out is resized to the total, counts[r] = bytes from rank r.
  void allgatherv(const void* in, std::size_t bytes, std::vector<char>& out, std::vector<std::size_t>& counts) const;
  void send(const void* data, std::size_t bytes, int to, int tag) const;
  void recv(void* data, std::size_t bytes, int from, int tag) const;
  void bcast(void* data, std::size_t bytes, int root) const;
  // Non-blocking check for a message with `tag` from any rank: its source and size.
  bool iprobe(int tag, int* source, std::size_t* bytes) const;
  void allreduce_sum(float* data, std::size_t n) const;  // in place
  double allreduce_max(double v) const;
  int64_t allreduce_sum(int64_t v) const;
  // Ranks with the same colour form a new group, ordered by key.
  Group split(int colour, int key) const;

  std::intptr_t handle() const { return handle_; }  // MPI_Comm as an integer (0 without MPI)

 private:
  friend class Comm;
  int rank_ = 0;
  int size_ = 1;
  std::intptr_t handle_ = 0;
};

// MPI start-up and shutdown for the lifetime of the object.
class Comm {
 public:
  Comm(int* argc, char*** argv);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  const Group& world() const { return world_; }
  int rank() const { return world_.rank(); }
  int size() const { return world_.size(); }
  bool is_root() const { return world_.is_root(); }
  bool thread_multiple() const { return thread_multiple_; }
  // This rank's index among the ranks on its node, and their number (one GPU per rank).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  void barrier() const { world_.barrier(); }
  // Ends every rank at once with `code`, after printing `message` (which names this rank).
  [[noreturn]] void abort(int code, const std::string& message) const;

 private:
  Group world_;
  bool owns_mpi_ = false;
  bool thread_multiple_ = false;
  int local_rank_ = 0, local_size_ = 1;
};

}  // namespace latim
