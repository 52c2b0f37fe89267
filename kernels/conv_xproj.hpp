// Mamba-1's causal conv and x_proj in one kernel, for the bf16 mode's untraced, unsharded
// layers: the conv output goes to memory once (for the scan) and x_proj takes it from shared
// memory instead of reading it back.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

// Whether conv_xproj takes these shapes: channels a multiple of 64, out_dim (x_proj's rows)
// 80, 96 or 128, a conv of width 4, and 16-byte aligned operands (in, lda, x_out, W, the
// conv weight w [channels, 4] and its bias b, which may be null).
bool conv_xproj_fits(int64_t channels, int64_t lda, int K, int64_t out_dim, const void* in, const void* x_out,
                     const void* W, const float* w, const float* b);

// Whether it is faster than the two kernels for T positions on the current GPU: it runs a
// block per 64 positions, each walking all the channels, so it needs enough positions to
// fill the GPU (T >= 128 times the SM count: 16,896 on an H100, where it measured as fast
// at 16K and slower at 4K).
bool conv_xproj_pays(int64_t T);

// x_out[t, c] = the bits causal_conv_with_halo (bf16 in and out, no halo) writes, and
// proj[t, o] = sum_c x_out[t, c] W[o, c] (W bf16 [out_dim, channels], fp32 sums; ldp the
// leading dimension of proj), as linear_bf16 computes it up to the order of the sums.
// Requires conv_xproj_fits.
void conv_xproj(const uint16_t* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K, const float* b,
                bool silu, const uint16_t* W, int64_t out_dim, uint16_t* x_out, float* proj, int64_t ldp,
                cudaStream_t stream, int layer);

}  // namespace latim::cuda
