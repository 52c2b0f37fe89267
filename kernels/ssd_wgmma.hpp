// The Mamba-2 SSD chunk-state and output passes on Hopper warpgroup products (ssd_wgmma.cu):
// bf16 inputs, the Mamba-2 shapes (head dim 64, state 128). ssd_scan's chunked path uses them
// for its bf16 mode where they apply.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

// Whether the wgmma passes take this scan: built for sm_90a, a GPU of compute capability 9.0,
// P = 64 and N = 128, rows of x, B and C 16-byte aligned (ldx, ldbc multiples of 8), y aligned
// for pairs (y_elem: 4 for fp32, 2 for bf16), and LATIM_SSD_KERNEL not "mma" in the
// environment (that keeps the mma.sync kernels).
bool ssd_wgmma_applies(const uint16_t* x, int64_t ldx, const uint16_t* B, const uint16_t* C, int64_t ldbc, int64_t P,
                       int64_t N, const void* y, int y_elem, int layer);

// One slice (see ssd_scan.cu): chunks of 64 positions, groups of K chunks, ng groups.
// States: per (head, group) the group-local state after the group's last chunk into E (slot of
// the group, [ng][H][128][64], layout [n][p]) and the product of the group's chunk decays
// into dgroup [ng][H].
void ssd_states_wgmma(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
                      int64_t ldbc, int64_t T, int64_t H, int64_t G, int64_t nch, int64_t K, int64_t ng, float* E,
                      float* dgroup, cudaStream_t stream, int layer);
// Outputs: per (head, group) the group's chunks from its entering state Hg ([ng][H][128][64],
// layout [n][p]), y = C h + D x.
void ssd_output_wgmma(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
                      const uint16_t* C, int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t G,
                      int64_t nch, int64_t K, int64_t ng, const float* Hg, float* y, cudaStream_t stream, int layer);
void ssd_output_wgmma(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
                      const uint16_t* C, int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t G,
                      int64_t nch, int64_t K, int64_t ng, const float* Hg, uint16_t* y, cudaStream_t stream,
                      int layer);
// Launches of the output kernel in this process (so that a test can tell which kernel ran).
int64_t ssd_output_wgmma_launches();

}  // namespace latim::cuda
