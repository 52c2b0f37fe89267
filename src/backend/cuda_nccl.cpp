// NcclGroup: device-buffer collectives over NCCL, bootstrapped through MPI.
#include "backend/cuda_nccl.hpp"

#include <string>

#include "latim/error.hpp"

#ifdef LATIM_HAVE_NCCL
#include <nccl.h>
#endif

namespace latim {

#ifdef LATIM_HAVE_NCCL

bool nccl_available() { return true; }

struct NcclGroup::Impl {
  ncclComm_t comm = nullptr;
};

namespace {
void check_nccl(ncclResult_t r, const char* what, int layer, int rank, ncclComm_t comm = nullptr) {
  if (r == ncclSuccess) return;
  const char* last = comm ? ncclGetLastError(comm) : nullptr;
  fail("NCCL error in ", what, layer >= 0 ? " (layer " + std::to_string(layer) + ")" : std::string(), " on rank ",
       rank, ": ", ncclGetErrorString(r), last && *last ? std::string(" (") + last + ")" : std::string());
}
}  // namespace

NcclGroup::NcclGroup(const Group& g) : impl_(std::make_unique<Impl>()), rank_(g.rank()), size_(g.size()),
                                       handle_(g.handle()) {
  ncclUniqueId id{};
  if (g.is_root()) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId", -1, rank_);
  g.bcast(&id, sizeof id, 0);
  check_nccl(ncclCommInitRank(&impl_->comm, size_, id, rank_), "ncclCommInitRank", -1, rank_);
  // NCCL sets up its connections on their first use: make that here, with a small
  // all-gather and a send to the next rank, so the forward's first layer does not pay it.
  void* buf = nullptr;
  const std::size_t n = 64;
  if (cudaMalloc(&buf, n * (size_ + 2)) != cudaSuccess) fail("NCCL warm-up: cudaMalloc failed on rank ", rank_);
  char* b = static_cast<char*>(buf);
  allgather(b, b + n, n, nullptr, "NCCL warm-up", -1);
  shift_down(b, b + n, n, nullptr, "NCCL warm-up", -1);
  const cudaError_t e = cudaDeviceSynchronize();
  cudaFree(buf);
  if (e != cudaSuccess) fail("NCCL warm-up on rank ", rank_, ": ", cudaGetErrorString(e));
  received_ = 0;
}

NcclGroup::~NcclGroup() {
  if (impl_ && impl_->comm) ncclCommDestroy(impl_->comm);
}

void NcclGroup::begin() { check_nccl(ncclGroupStart(), "ncclGroupStart", -1, rank_); }
void NcclGroup::end(const char* what, int layer) { check_nccl(ncclGroupEnd(), what, layer, rank_, impl_->comm); }

void NcclGroup::allgatherv(const void* send, void* recv, const std::vector<std::size_t>& bytes,
                           const std::vector<std::size_t>& offset, cudaStream_t stream, const char* what, int layer) {
  if (static_cast<int>(bytes.size()) != size_ || static_cast<int>(offset.size()) != size_)
    fail("internal: ", what, " has ", bytes.size(), " parts for ", size_, " ranks");
  begin();
  for (int q = 0; q < size_; ++q) {
    char* dst = static_cast<char*>(recv) + offset[q];
    check_nccl(ncclBroadcast(q == rank_ ? send : dst, dst, bytes[q], ncclUint8, q, impl_->comm, stream), what, layer,
               rank_, impl_->comm);
    if (q != rank_) received_ += static_cast<int64_t>(bytes[q]);
  }
  end(what, layer);
}

void NcclGroup::allgather(const void* send, void* recv, std::size_t bytes, cudaStream_t stream, const char* what,
                          int layer) {
  check_nccl(ncclAllGather(send, recv, bytes, ncclUint8, impl_->comm, stream), what, layer, rank_, impl_->comm);
  received_ += static_cast<int64_t>(bytes) * (size_ - 1);
}

void NcclGroup::shift_down(const void* send, void* recv, std::size_t bytes, cudaStream_t stream, const char* what,
                           int layer) {
  if (size_ == 1 || bytes == 0) return;
  begin();
  if (rank_ + 1 < size_) check_nccl(ncclSend(send, bytes, ncclUint8, rank_ + 1, impl_->comm, stream), what, layer, rank_);
  if (rank_ > 0) {
    check_nccl(ncclRecv(recv, bytes, ncclUint8, rank_ - 1, impl_->comm, stream), what, layer, rank_);
    received_ += static_cast<int64_t>(bytes);
  }
  end(what, layer);
}

void NcclGroup::send(const void* buf, std::size_t bytes, int peer, cudaStream_t stream, const char* what, int layer) {
  if (bytes == 0) return;
  check_nccl(ncclSend(buf, bytes, ncclUint8, peer, impl_->comm, stream), what, layer, rank_, impl_->comm);
}

void NcclGroup::recv(void* buf, std::size_t bytes, int peer, cudaStream_t stream, const char* what, int layer) {
  if (bytes == 0) return;
  check_nccl(ncclRecv(buf, bytes, ncclUint8, peer, impl_->comm, stream), what, layer, rank_, impl_->comm);
  received_ += static_cast<int64_t>(bytes);
}

#else

bool nccl_available() { return false; }

struct NcclGroup::Impl {};

NcclGroup::NcclGroup(const Group& g) : rank_(g.rank()), size_(g.size()), handle_(g.handle()) {
  fail("a sequence-sharded GPU forward needs NCCL, and this build has none (configure with MPI and a CUDA toolkit "
       "that ships NCCL, or use --forward replicated)");
}
NcclGroup::~NcclGroup() = default;
void NcclGroup::begin() {}
void NcclGroup::end(const char*, int) {}
void NcclGroup::allgatherv(const void*, void*, const std::vector<std::size_t>&, const std::vector<std::size_t>&,
                           cudaStream_t, const char*, int) {}
void NcclGroup::allgather(const void*, void*, std::size_t, cudaStream_t, const char*, int) {}
void NcclGroup::shift_down(const void*, void*, std::size_t, cudaStream_t, const char*, int) {}
void NcclGroup::send(const void*, std::size_t, int, cudaStream_t, const char*, int) {}
void NcclGroup::recv(void*, std::size_t, int, cudaStream_t, const char*, int) {}

#endif

}  // namespace latim
