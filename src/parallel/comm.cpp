// MPI start-up and shutdown, or a one-rank stand-in when built without MPI.
#include "latim/comm.hpp"

#include <cstdio>
#include <cstdlib>

#ifdef LATIM_HAVE_MPI
#include <mpi.h>
#endif

namespace latim {

Comm::Comm(int* argc, char*** argv) {
#ifdef LATIM_HAVE_MPI
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    owns_mpi_ = true;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
#else
  (void)argc;
  (void)argv;
#endif
}

Comm::~Comm() {
#ifdef LATIM_HAVE_MPI
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (owns_mpi_ && !finalised) MPI_Finalize();
#endif
}

void Comm::barrier() const {
#ifdef LATIM_HAVE_MPI
  MPI_Barrier(MPI_COMM_WORLD);
#endif
}

void Comm::abort(int code, const std::string& message) const {
  std::fprintf(stderr, "latim: error (rank %d): %s\n", rank_, message.c_str());
  std::fflush(stderr);
#ifdef LATIM_HAVE_MPI
  if (size_ > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

}  // namespace latim
