// The LaTIM tile kernel (latim-method.md §3-5): for a block of targets I and sources J it
// builds Z_i ⊙ υ_{i←j} for every pair on the fly in shared memory, multiplies the stack by
// W_out on tensor cores (bf16 or tf32 inputs, fp32 sums) or CUDA cores (fp32), and reduces
// each product row to the scores in the epilogue. The pairs × d product never reaches device
// memory; of the pairs × D operand, only the 128-pair slices that the resident blocks are
// working on are kept in a scratch (reused across W_out's column blocks), never a tile's.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

enum class TilePrecision { FP32, TF32, BF16 };

// One layer's factors on the device (row-major, T positions).
struct TileFactors {
  bool mamba2 = false;
  bool silu = true;            // post-conv activation (else identity)
  int64_t T = 0, d = 0, D = 0, N = 0, K = 0, H = 0, P = 0, G = 1;
  int64_t ldv = 0, ldbc = 0;     // row strides of v and of B, C (they may be column slices
                                 // of the forward's projection buffers)
  const float* v = nullptr;      // [T, D] conv input of the x channels (row stride ldv)
  const float* Z = nullptr;      // [T, D] SiLU(z) (Mamba-1) or γ ⊙ SiLU(z) (Mamba-2)
  const double* S = nullptr;     // [T, D] (Mamba-1) or [T, H]: cumulative Δ
  const float* delta = nullptr;  // same shape as S
  const float* B = nullptr;      // [T, N] or [T, G N] (row stride ldbc)
  const float* C = nullptr;      // same as B
  const float* conv_w = nullptr; // [conv_channels, K]; the first D rows are the x channels
  const float* conv_b = nullptr; // [conv_channels] or null
  const float* A2 = nullptr;     // A · log2(e): [D, N] or [H]
  const float* Dskip = nullptr;  // [D] or [H]
  const float* yhat = nullptr;   // [T, d] r_in + o
  const float* r_in = nullptr;   // [T, d]
  const void* WoutT = nullptr;   // [Dpad, dpad] W_out transposed, zero padded, bf16 or fp32
};

// Padded sizes of the transposed W_out, and the number of column blocks.
int64_t latim_tile_Dpad(int64_t D);
int64_t latim_tile_dpad(int64_t d);
int64_t latim_tile_column_blocks(int64_t d);
// Elements of the buffer latim_prepare_wout fills: [Dpad, dpad] (W_out transposed), and in
// bf16 after it a second copy for the sm_90a kernel, tiled and swizzled as that kernel keeps
// it in shared memory (dpad x D rounded up to 64).
int64_t latim_tile_wout_elems(int64_t d, int64_t D, TilePrecision p);
// Floats of `partial` needed for a tile of ni x nj pairs.
int64_t latim_tile_partial_size(int64_t ni, int64_t nj, int64_t d);

// W [d, D] fp32 (device) -> out [Dpad, dpad] transposed, bf16 (BF16), tf32-rounded fp32
// (TF32) or fp32, zero padded; in bf16 also the sm_90a kernel's copy (latim_tile_wout_elems).
void latim_prepare_wout(const float* W, int64_t d, int64_t D, TilePrecision p, void* out, cudaStream_t stream,
                        int layer);
// yhat = r_in + o, n values.
void latim_yhat(const float* r_in, const float* o, int64_t n, float* yhat, cudaStream_t stream, int layer);
// Z = gamma ⊙ gate (Mamba-2) or gate (Mamba-1, gamma null), n values.
void latim_gate_factor(const float* gate, const float* gamma, int64_t n, float* Z, cudaStream_t stream, int layer);
// The approximation error of every row without the tiles (latim-method.md §3, as
// surrogate_approx_error on the host): the summed conv pieces
// x̃[l, ch] = Σ_{k<K, k<=l} act(conv_w[ch, K-1-k] v[l-k, ch] + [k = 0] conv_b[ch]) ([T, D],
// fp64 sums; v has row stride ldv; conv_b may be null) ...
void latim_surrogate_conv(const float* v, int64_t ldv, int64_t T, int64_t D, const float* conv_w, int64_t K,
                          const float* conv_b, bool silu_act, float* out, cudaStream_t stream, int layer);
// ... and, given the sums s = W_out (Z ⊙ ỹ) [T, d], eps[t] = ‖o_t − b − s_t‖ / ‖o_t − b‖
// (0 where o_t = b; b_out may be null), fp64 sums.
void latim_row_approx_error(const float* o, const float* b_out, const float* s, int64_t T, int64_t d, float* eps,
                            cudaStream_t stream, int layer);

// Pair scores of rows [i0, i0+ni) x columns [j0, j0+nj): per column block the partial sums
// of ‖T‖², ‖T‖₁ and ‖ŷ‖₁ − ‖ŷ − T̂‖₁ into `partial`, hidden attention into `hattn`
// ([ni, nj], when wanted), and Σ_j T_i(x_j) added into contrib ([ni, d], zeroed by the caller;
// null: not computed).
// With l1_alti false a kernel may leave the ‖T‖₁ and ALTI partials unwritten (the wgmma
// kernel does: its epilogue then runs without them); finalize must then not be asked for l1
// or alti.
void latim_tile(const TileFactors& f, TilePrecision p, int64_t i0, int64_t ni, int64_t j0, int64_t nj,
                bool hidden_attn, bool l1_alti, float* partial, float* hattn, double* contrib, cudaStream_t stream,
                int layer);
// Turns the partial sums into l2, l1, raw alti and hidden attention ([ni, nj] each, NaN for
// j > i); any output pointer may be null, and only the partials of the requested outputs are
// read.
void latim_tile_finalize(int64_t i0, int64_t ni, int64_t j0, int64_t nj, int64_t d, const float* partial,
                         const float* hattn, float* l2, float* l1, float* alti, float* hattn_out, cudaStream_t stream,
                         int layer);

}  // namespace latim::cuda
