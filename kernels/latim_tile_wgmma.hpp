// The Hopper LaTIM tile kernel (latim_tile_wgmma.cu): Mamba-2 and Mamba-1, bf16, wgmma.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "latim_tile.hpp"

namespace latim::cuda {

// Runs latim_tile's bf16 work for a Mamba-2 or Mamba-1 (d_state 16) layer on the
// warp-specialised wgmma kernel and returns true, or returns false without doing anything
// when that kernel does not apply:
// not built for sm_90a, a GPU other than compute capability 9.0, a layer shape it does not
// take (d_inner not a multiple of 64, head size not a multiple of 8, conv width above 4, M
// for all heads too large for shared memory, Z/v/conv rows not 16-byte aligned), or
// LATIM_TILE_KERNEL=mma in the environment. Mamba-1 without the hidden attention takes the
// factored launch (u from a per-source R, see the kernel's m1) unless LATIM_M1_FACTORED=0.
// f.WoutT must hold both layouts that latim_prepare_wout writes in bf16.
// With l1_alti false it writes only the ‖T‖² partials (see latim_tile).
bool latim_tile_wgmma(const TileFactors& f, int64_t i0, int64_t ni, int64_t j0, int64_t nj, bool hidden_attn,
                      bool l1_alti, float* partial, float* hattn, double* contrib, cudaStream_t stream, int layer);
// Whether this build has the kernel and the current GPU can run it (for tests and reports).
bool latim_tile_wgmma_supported();
// Launches of the kernel in this process (so that a test can tell which kernel ran).
int64_t latim_tile_wgmma_launches();
// Of those, the Mamba-1 launches that factored u (no hidden attention; see the kernel's m1).
int64_t latim_tile_wgmma_factored_launches();

}  // namespace latim::cuda
