#pragma once
// Where the wgmma tile kernel's input slots keep 16-byte chunk `ch` of a slab's row (64 fp32
// = 16 chunks) or of its conv taps (64 channels, one chunk of K = 4 taps each). A consumer
// thread t reads chunks 2 (t % 8) and 2 (t % 8) + 1 of one Z row and of the bias, of the v
// rows of sources 4w .. 4w + 3 (w = t / 32 within its warpgroup), and the taps of channels
// 8 (t % 8) .. + 7. Stored as is, threads t % 8 and t % 8 + 4 (and the four sources) read
// the same banks; swizzled, each load of a warp touches every bank equally often (Nsight
// Compute counted 6.5-way conflicts on the unswizzled loads). Host-callable so that the
// tests check these claims without a GPU.
#if defined(__CUDACC__)
#define LATIM_SWIZZLE_FN __host__ __device__ __forceinline__ constexpr
#else
#define LATIM_SWIZZLE_FN inline constexpr
#endif

namespace latim::cuda::slot_swizzle {

// Z rows and the bias: the chunks of the row's second half swap with their neighbours.
LATIM_SWIZZLE_FN int row_chunk(int ch) { return ch ^ ((ch >> 3) & 1); }
// v rows: chunk ch of source row `row` (0 .. 15 within the pair block).
LATIM_SWIZZLE_FN int v_chunk(int ch, int row) { return ch ^ (row & 7); }
// Conv taps: channel 8a + b at 8a + (a ^ b).
LATIM_SWIZZLE_FN int tap_chunk(int ch) { return (ch & ~7) | ((ch ^ (ch >> 3)) & 7); }

}  // namespace latim::cuda::slot_swizzle

#undef LATIM_SWIZZLE_FN
