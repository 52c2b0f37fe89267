// The process group: MPI when built with it, otherwise a single rank. Everything above this
// layer asks rank() / size() and never calls MPI directly.
#pragma once
#include <string>

namespace latim {

class Comm {
 public:
  // Initialises MPI (when built with it) for the lifetime of the object.
  Comm(int* argc, char*** argv);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  void barrier() const;
  // Ends every rank at once with `code`, after printing `message` (which names this rank).
  [[noreturn]] void abort(int code, const std::string& message) const;

 private:
  int rank_ = 0;
  int size_ = 1;
  bool owns_mpi_ = false;
};

}  // namespace latim
