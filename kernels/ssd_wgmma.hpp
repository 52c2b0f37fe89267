// The Mamba-2 SSD output pass on Hopper warpgroup products (ssd_wgmma.cu): bf16 inputs, the
// mamba2 shapes (head dim 64, state 128). Called by ssd_scan's chunked path for its bf16 mode.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

// The output pass of one slice (see ssd_scan.cu): per (head, group of K chunks) it walks the
// group from its entering state Hg ([ng][H][128][64], layout [n][p]) and writes y, with C·Bᵀ
// of every chunk and group from CB ([nch][G][64][64]). Returns false without doing anything
// where it does not apply: not built for sm_90a, a GPU other than compute capability 9.0,
// P != 64 or N != 128, rows of x, B, C not 16-byte aligned, or LATIM_SSD_KERNEL=mma in the
// environment (the mma.sync kernel then runs).
bool ssd_output_wgmma(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
                      const uint16_t* C, int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N,
                      int64_t G, int64_t nch, int64_t K, int64_t ng, const float* Hg, const float* CB, float* y,
                      cudaStream_t stream, int layer);
bool ssd_output_wgmma(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
                      const uint16_t* C, int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N,
                      int64_t G, int64_t nch, int64_t K, int64_t ng, const float* Hg, const float* CB, uint16_t* y,
                      cudaStream_t stream, int layer);
// Launches of the kernel in this process (so that a test can tell which kernel ran).
int64_t ssd_output_wgmma_launches();

}  // namespace latim::cuda
