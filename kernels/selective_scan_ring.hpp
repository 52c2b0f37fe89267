// The one-pass Mamba-1 selective scan (selective_scan_ring.cu), which selective_scan uses
// where it applies; the two-pass scan in selective_scan.cu covers every other shape.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "selective_scan.hpp"

namespace latim::cuda::detail {

// Runs the scan in one pass and returns true, or returns false (nothing launched) where the
// one-pass kernel does not apply: N above 16, a build or a GPU without thread-block
// clusters, or operands the 16-byte copies do not fit (see selective_scan_ring.cu). The
// arguments are selective_scan's; `finish` is raw_dt (always true for bf16 dt).
template <class X, class DT>
bool selective_scan_ring(const X* x, DT* delta, const float* dt_bias, bool finish, const float* A, const float* B,
                         int64_t ldb, const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N,
                         float* y, float* h_final, cudaStream_t stream, int layer, const ScanGate& gate);

}  // namespace latim::cuda::detail
