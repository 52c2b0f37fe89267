// MPI start-up, groups and the few collectives latim uses; one-rank stand-ins without MPI.
#include "latim/comm.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "latim/error.hpp"

#ifdef LATIM_HAVE_MPI
#include <mpi.h>
#endif

namespace latim {

#ifdef LATIM_HAVE_MPI
namespace {
static_assert(sizeof(MPI_Comm) <= sizeof(std::intptr_t), "MPI_Comm must fit an intptr_t");
MPI_Comm as_comm(std::intptr_t h) {
  MPI_Comm c;
  std::memcpy(&c, &h, sizeof c);  // a pointer in Open MPI, an int in MPICH
  return c;
}
std::intptr_t as_handle(MPI_Comm c) {
  std::intptr_t h = 0;
  std::memcpy(&h, &c, sizeof c);
  return h;
}
void check_count(std::size_t bytes) {
  if (bytes > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    fail("MPI message of ", bytes, " bytes is above the 2 GiB limit of one call; use more ranks or smaller tiles");
}
}  // namespace
#endif

void Group::barrier() const {
#ifdef LATIM_HAVE_MPI
  if (size_ > 1) MPI_Barrier(as_comm(handle_));
#endif
}

void Group::allgather(const void* in, std::size_t bytes, void* out) const {
#ifdef LATIM_HAVE_MPI
  if (size_ > 1) {
    check_count(bytes);
    MPI_Allgather(in, static_cast<int>(bytes), MPI_BYTE, out, static_cast<int>(bytes), MPI_BYTE, as_comm(handle_));
    return;
  }
#endif
  std::memcpy(out, in, bytes);
}

void Group::allgatherv(const void* in, std::size_t bytes, std::vector<char>& out, std::vector<std::size_t>& counts) const {
  counts.assign(static_cast<std::size_t>(size_), 0);
  const uint64_t mine = bytes;
  std::vector<uint64_t> all(static_cast<std::size_t>(size_));
  allgather(&mine, sizeof mine, all.data());
  std::size_t total = 0;
  for (int r = 0; r < size_; ++r) total += (counts[r] = all[r]);
  out.resize(total);
#ifdef LATIM_HAVE_MPI
  if (size_ > 1) {
    check_count(total);
    std::vector<int> c(size_), displ(size_);
    std::size_t off = 0;
    for (int r = 0; r < size_; ++r) {
      c[r] = static_cast<int>(counts[r]);
      displ[r] = static_cast<int>(off);
      off += counts[r];
    }
    MPI_Allgatherv(in, static_cast<int>(bytes), MPI_BYTE, out.data(), c.data(), displ.data(), MPI_BYTE,
                   as_comm(handle_));
    return;
  }
#endif
  if (bytes) std::memcpy(out.data(), in, bytes);
}

void Group::send(const void* data, std::size_t bytes, int to, int tag) const {
#ifdef LATIM_HAVE_MPI
  check_count(bytes);
  MPI_Send(data, static_cast<int>(bytes), MPI_BYTE, to, tag, as_comm(handle_));
#else
  (void)data, (void)bytes, (void)to, (void)tag;
  fail("internal: send on a one-rank build");
#endif
}

void Group::recv(void* data, std::size_t bytes, int from, int tag) const {
#ifdef LATIM_HAVE_MPI
  check_count(bytes);
  MPI_Recv(data, static_cast<int>(bytes), MPI_BYTE, from, tag, as_comm(handle_), MPI_STATUS_IGNORE);
#else
  (void)data, (void)bytes, (void)from, (void)tag;
  fail("internal: recv on a one-rank build");
#endif
}

void Group::bcast(void* data, std::size_t bytes, int root) const {
#ifdef LATIM_HAVE_MPI
  if (size_ > 1) {
    check_count(bytes);
    MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, as_comm(handle_));
  }
#else
  (void)data, (void)bytes, (void)root;
#endif
}

bool Group::iprobe(int tag, int* source, std::size_t* bytes) const {
#ifdef LATIM_HAVE_MPI
  if (size_ > 1) {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, tag, as_comm(handle_), &flag, &st);
    if (!flag) return false;
    int count = 0;
    MPI_Get_count(&st, MPI_BYTE, &count);
    *source = st.MPI_SOURCE;
    *bytes = static_cast<std::size_t>(count);
    return true;
  }
#endif
  (void)tag, (void)source, (void)bytes;
  return false;
}

void Group::allreduce_sum(float* data, std::size_t n) const {
#ifdef LATIM_HAVE_MPI
  if (size_ > 1) {
    const std::size_t step = std::size_t{1} << 28;  // stay under the int count limit
    for (std::size_t off = 0; off < n; off += step)
      MPI_Allreduce(MPI_IN_PLACE, data + off, static_cast<int>(std::min(step, n - off)), MPI_FLOAT, MPI_SUM,
                    as_comm(handle_));
  }
#endif
  (void)data, (void)n;
}

double Group::allreduce_max(double v) const {
#ifdef LATIM_HAVE_MPI
  if (size_ > 1) {
    double out = v;
    MPI_Allreduce(&v, &out, 1, MPI_DOUBLE, MPI_MAX, as_comm(handle_));
    return out;
  }
#endif
  return v;
}

int64_t Group::allreduce_sum(int64_t v) const {
#ifdef LATIM_HAVE_MPI
  if (size_ > 1) {
    int64_t out = v;
    MPI_Allreduce(&v, &out, 1, MPI_INT64_T, MPI_SUM, as_comm(handle_));
    return out;
  }
#endif
  return v;
}

Group Group::split(int colour, int key) const {
  Group g;
#ifdef LATIM_HAVE_MPI
  if (size_ > 1) {
    MPI_Comm c;
    MPI_Comm_split(as_comm(handle_), colour, key, &c);
    MPI_Comm_rank(c, &g.rank_);
    MPI_Comm_size(c, &g.size_);
    g.handle_ = as_handle(c);
    return g;
  }
#endif
  (void)colour, (void)key;
  return g;
}

#ifdef LATIM_HAVE_MPI
namespace {
// Whether a launcher (mpirun/mpiexec, srun with PMI/PMIx, hydra) started this process. A
// process started by hand runs as one rank without initialising MPI: Open MPI's singleton
// start needs its daemon on PATH, which a plain `latim run` should never depend on.
bool started_by_mpi_launcher() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS",
                        "HYDRA_CONTROL_FD", "MV2_COMM_WORLD_SIZE", "I_MPI_HYDRA_UUID"})
    if (std::getenv(v)) return true;
  return false;
}
}  // namespace
#endif

Comm::Comm(int* argc, char*** argv) {
#ifdef LATIM_HAVE_MPI
  if (!started_by_mpi_launcher() && !std::getenv("LATIM_FORCE_MPI_INIT")) {
    thread_multiple_ = true;
    return;  // one rank; MPI stays uninitialised
  }
  int initialised = 0;
  MPI_Initialized(&initialised);
  int provided = MPI_THREAD_SINGLE;
  if (!initialised) {
    MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
    owns_mpi_ = true;
  } else {
    MPI_Query_thread(&provided);
  }
  thread_multiple_ = provided >= MPI_THREAD_MULTIPLE;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_.rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &world_.size_);
  world_.handle_ = as_handle(MPI_COMM_WORLD);
  // Errors in MPI calls come back as codes rather than killing the job silently.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_.rank_, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, &local_rank_);
  MPI_Comm_size(node, &local_size_);
  MPI_Comm_free(&node);
#else
  (void)argc;
  (void)argv;
  thread_multiple_ = true;
#endif
}

Comm::~Comm() {
#ifdef LATIM_HAVE_MPI
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (owns_mpi_ && !finalised) MPI_Finalize();
#endif
}

void Comm::abort(int code, const std::string& message) const {
  std::fprintf(stderr, "latim: error (rank %d of %d): %s\n", rank(), size(), printable(message).c_str());
  std::fflush(stderr);
#ifdef LATIM_HAVE_MPI
  if (size() > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace latim
