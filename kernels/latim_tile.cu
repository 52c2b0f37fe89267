// The fused LaTIM tile kernel. A block (16 warps) owns 8 targets x 16 sources (128 pairs) at
// a time; blocks are persistent (as many as are resident) and take such pair blocks in turn.
// For each pair block it runs the column blocks of W_out (256 output columns each) one after
// the other; each warp multiplies a 32 x 64 region. In the first pass, for each slab of 32
// inner channels, it
//   1. starts copying the slab of W_out^T into shared memory (cp.async),
//   2. (Mamba-1) computes M_{i,l}[c] for the block's (i, l) and the slab's channels,
//   3. builds u_{ij}[c] = Z_i[c] υ_{i←j}[c] for every pair from the conv taps and M, and
//      keeps the slab of u in the block's device scratch,
//   4. multiplies the [128 x 32] u slab by the [32 x 256] W_out slab (mma.sync or FFMA).
// The later passes stream u back from the scratch instead of rebuilding it, so u (and, for
// Mamba-1, the exponentials in M) is computed once per pair, not once per column block.
// The scratch holds at most (resident blocks) x 128 pairs x D values; the pairs x D operand
// of a tile is never formed as a whole. Each pass's epilogue reduces each pair's row of
// T_i(x_j) to ‖T‖², ‖T‖₁ and the ALTI term, and adds the per-target column sums to
// Σ_j T_i(x_j); latim_tile_finalize sums the column blocks in a fixed order.
#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>
#include <type_traits>

#include "cuda_check.hpp"
#include "device_math.cuh"
#include "device_buffer.hpp"
#include "latim_tile.hpp"
#include "latim_tile_common.cuh"
#include "latim_tile_wgmma.hpp"
#include "mma_sync.cuh"

namespace latim::cuda {

namespace {

using namespace nvcuda;
using namespace tile_common;

constexpr int kBN = 256;                           // output columns per block
constexpr int kBK = 32;                            // inner channels per slab (= warp size)
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kScrLd = 68;               // epilogue scratch row stride (floats)
// Row stride (floats) of the staged A·log2(e) rows of Mamba-1, [kBK channels][ns states]: 4
// more than the states, so that the 16-byte loads of 8 consecutive lanes (one channel each)
// fall on distinct banks. (Unpadded, a lane's row was 64 bytes from the next one's: the
// 4-byte loads were 16-way bank conflicts, a third of the kernel's shared-memory wavefronts.)
__host__ __device__ constexpr int a2_stride(int ns) { return ns + 4; }

// Operand types and shared-memory strides per precision: 0 fp32 (FFMA), 1 tf32, 2 bf16.
template <int PREC>
struct Prec {
  using T = float;
  static constexpr int lda = PREC == 0 ? kBK + 1 : kBK + 4;
  static constexpr int ldb = kBN + 4;
};
template <>
struct Prec<2> {
  using T = __nv_bfloat16;
  static constexpr int lda = kBK + 8;
  static constexpr int ldb = kBN + 8;
};

template <int PREC>
__device__ __forceinline__ typename Prec<PREC>::T to_operand(float x) {
  if constexpr (PREC == 2) return __float2bfloat16_rn(x);
  else if constexpr (PREC == 1) return wmma::__float_to_tf32(x);
  else return x;
}

struct SmemLayout {
  int64_t as, bs, zs, vs, cw, cbias, ms, cb, dsk, si, sl, dl, a2, hat, scr, part, yr, total;
  // Mamba-2 prologue staging: C_i, B_l, S_i, S_l, Δ_l rows, the C·B dots, unfolded M_{i,i}
  M2Offsets m2;
};


// Buffers with two slots (bs, zs, vs, cw, cbias, dsk, si, sl, dl, a2) hold the current and
// the next slab; `scr`, the epilogue scratch, reuses the operand buffers.

__host__ __device__ inline SmemLayout smem_layout(int prec, bool mamba2, int ns, int64_t H, int64_t GN = 0,
                                                  int64_t G = 1) {
  SmemLayout L{};
  int64_t off = 0;
  const int64_t esz = prec == 2 ? 2 : 4;
  const int64_t lda = prec == 2 ? kBK + 8 : (prec == 1 ? kBK + 4 : kBK + 1);
  const int64_t ldb = prec == 2 ? kBN + 8 : kBN + 4;
  L.as = take(off, 2 * kBM * lda * esz);  // two slots: passes after the first stream u in
  L.bs = take(off, 2 * kBK * ldb * esz);
  L.scr = L.as;
  const int64_t scr_end = L.scr + int64_t{kWarps} * 16 * kScrLd * 4;
  if (off < scr_end) off = (scr_end + 127) / 128 * 128;
  L.zs = take(off, 2 * kBI * kBK * 4);
  L.vs = take(off, 2 * kBJ * kBK * 4);
  L.cw = take(off, 2 * kBK * kKMax * 4);
  L.cbias = take(off, 2 * kBK * 4);
  if (mamba2) {
    L.ms = take(off, H * kMsHead * 4);
    L.cb = L.dsk = L.si = L.sl = L.dl = L.a2 = take(off, 0);  // Mamba-1 only
    L.m2 = m2_staging_layout(off, H, GN, G);
  } else {
    L.ms = take(off, int64_t{kBI} * kNL * kBK * 4);
    L.cb = take(off, int64_t{kBI} * kNL * ns * 4);
    L.dsk = take(off, 2 * kBK * 4);
    L.si = take(off, 2 * int64_t{kBI} * kBK * 8);
    L.sl = take(off, 2 * int64_t{kNL} * kBK * 8);
    L.dl = take(off, 2 * int64_t{kNL} * kBK * 4);
    L.a2 = take(off, 2 * int64_t{kBK} * a2_stride(ns) * 4);
  }
  L.hat = take(off, kBM * 4);
  L.part = take(off, 4 * kBM * 3 * 4);
  L.yr = take(off, int64_t{kWarps} * 128 * 4);
  L.total = off;
  return L;
}

// 2^x for Mamba-1's M (x <= 0): exp2f in the fp32 mode; in tf32/bf16 the bare MUFU.EX2
// (ex2.approx.ftz, 2 ulp, results below 2^-126 flushed to zero), whose error is far below
// the operands' rounding and which saves exp2f's range handling on the kernel's hottest loop.
template <int PREC>
__device__ __forceinline__ float exp2_mode(float x) {
  if constexpr (PREC == 0) {
    return exp2f(x);
  } else {
    return exp2_ftz(x);
  }
}

// tf32 tensor-core product of a warp's 32 x 64 region with mma.sync m16n8k8, fp32 accumulators.
// The operands are already rounded to tf32 in shared memory (u by to_operand, W_out by
// prepare_wout_kernel). The mma computes the region transposed, T^T[col][pair] = sum_c
// Ws[c][col] u[pair][c] (A = the W_out slab read as [column][channel], B = the u slab as
// [channel][pair]; M = 16 columns, N = 8 pairs, K = 8 channels), so that each operand load is one
// 64-bit LDS into the register pair the instruction wants (no moves, as SASS shows). PTX fragments of m16n8k8 .tf32, g = lane/4, q = lane%4:
//   A 16 x 8 (row): a0 (m g, k q), a1 (m g + 8, k q), a2 (m g, k q + 4), a3 (m g + 8, k q + 4);
//   B 8 x 8 (col):  b0 (k q, n g), b1 (k q + 4, n g);
//   C 16 x 8:       c0 (m g, n 2q), c1 (m g, n 2q + 1), c2 (m g + 8, n 2q), c3 (m g + 8, n 2q + 1).
// Mapping onto the shared tiles, for k step s (channels 8s..8s+7 of the slab), column tile mt
// (the warp's columns 16mt..16mt+15) and pair tile t (the warp's pairs 8t..8t+7):
//   k q -> channel 8s + 2q, k q + 4 -> 8s + 2q + 1 (A and B alike: the sum is only reordered);
//   m g -> column 16mt + 2g, m g + 8 -> 16mt + 2g + 1;
//   n g -> pair 8t + rho(g), rho(g) = 2 (g % 4) + g / 4.
// So {a0, a1} and {a2, a3} are adjacent columns of W_out rows 8s + 2q and 8s + 2q + 1, {b0, b1}
// adjacent channels of one u row, and acc[mt][t] = {c0..c3} holds columns 16mt + 2g + {0, 1} of
// pairs 8t + rho(2q) ({c0, c2}) and 8t + rho(2q + 1) ({c1, c3}).
// Banks (LDA = 36, LDB = 260, kScrLd = 68 words; a 64-bit access is served per half warp, i.e.
// g < 4 or g >= 4 with all q): W_out's 2-bank unit is (4q + g + 8mt + 2j) mod 16 and u's
// (2 rho(g) + q + 4s) mod 16, 16 distinct in each half warp: conflict-free. The epilogue's
// 64-bit stores, (2 rho(2q or 2q + 1) + g + 8mt) mod 16, are 2-way (once per chunk only).
struct MmaTf32Tile {
  static constexpr int LDA = Prec<1>::lda, LDB = Prec<1>::ldb;
  float acc[4][4][4];  // [column tile mt][pair tile t][c0..c3]

  __device__ static int rho(int g) { return 2 * (g & 3) + (g >> 2); }

  __device__ void init() {
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
      for (int t = 0; t < 4; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][t][e] = 0.0f;
  }
  __device__ void step(const float* As, const float* Bs, int wm, int wn, int lane) {
    const int g = lane >> 2, q = lane & 3;
    const unsigned w_base = static_cast<unsigned>(__cvta_generic_to_shared(Bs)) +
                            static_cast<unsigned>(2 * q * LDB + wn * 64 + 2 * g) * 4u;
    const unsigned u_base = static_cast<unsigned>(__cvta_generic_to_shared(As)) +
                            static_cast<unsigned>((wm * 32 + rho(g)) * LDA + 2 * q) * 4u;
#pragma unroll
    for (int s = 0; s < kBK / 8; ++s) {
      unsigned a[4][4], b[4][2];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int j = 0; j < 2; ++j)
          asm volatile("ld.shared.v2.b32 {%0, %1}, [%2];\n"
                       : "=r"(a[mt][2 * j]), "=r"(a[mt][2 * j + 1])
                       : "r"(w_base + static_cast<unsigned>((8 * s + j) * LDB + 16 * mt) * 4u));
#pragma unroll
      for (int t = 0; t < 4; ++t)
        asm volatile("ld.shared.v2.b32 {%0, %1}, [%2];\n"
                     : "=r"(b[t][0]), "=r"(b[t][1])
                     : "r"(u_base + static_cast<unsigned>(8 * t * LDA + 8 * s) * 4u));
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int t = 0; t < 4; ++t)
          mma_tf32(acc[mt][t], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[t][0], b[t][1]);
    }
  }
  // Rows 16r..16r+15 of the warp's region (pair tiles 2r, 2r + 1) into scr [16][kScrLd], row-major.
  __device__ void store_chunk(int r, float* scr, int lane) {
    const int g = lane >> 2, q = lane & 3;
    float* const p0 = scr + rho(2 * q) * kScrLd + 2 * g;
    float* const p1 = scr + rho(2 * q + 1) * kScrLd + 2 * g;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
      if (t / 2 != r) continue;
      const int off = (t % 2) * 8 * kScrLd;
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        *reinterpret_cast<float2*>(p0 + off + 16 * mt) = make_float2(acc[mt][t][0], acc[mt][t][2]);
        *reinterpret_cast<float2*>(p1 + off + 16 * mt) = make_float2(acc[mt][t][1], acc[mt][t][3]);
      }
    }
  }
};

// bf16 tensor-core product of a warp's 32 x 64 region with mma.sync m16n8k16: operands come
// from shared memory through ldmatrix (the .trans form turns the row-major W_out slab into
// the column fragments), fp32 accumulators. acc[h][t][e]: rows 16h.., columns 8t.., and e as
// in the PTX accumulator layout (rows g and g + 8, columns 2q and 2q + 1; g = lane/4, q = lane%4).
struct MmaBf16Tile {
  static constexpr int LDA = Prec<2>::lda, LDB = Prec<2>::ldb;
  float acc[2][8][4];

  __device__ void init() {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int t = 0; t < 8; ++t)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[h][t][e] = 0.0f;
  }
  __device__ void step(const __nv_bfloat16* As, const __nv_bfloat16* Bs, int wm, int wn, int lane) {
    const unsigned a_base = static_cast<unsigned>(__cvta_generic_to_shared(As));
    const unsigned b_base = static_cast<unsigned>(__cvta_generic_to_shared(Bs));
#pragma unroll
    for (int k = 0; k < kBK; k += 16) {
      unsigned a[2][4], b[8][2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = wm * 32 + h * 16 + (lane & 15), col = k + (lane >> 4) * 8;
        ldmatrix_x4(a[h][0], a[h][1], a[h][2], a[h][3], a_base + static_cast<unsigned>(row * LDA + col) * 2u);
      }
#pragma unroll
      for (int t2 = 0; t2 < 4; ++t2) {
        const int krow = k + (lane & 7) + ((lane >> 3) & 1) * 8, ncol = wn * 64 + t2 * 16 + (lane >> 4) * 8;
        ldmatrix_x4_trans(b[2 * t2][0], b[2 * t2][1], b[2 * t2 + 1][0], b[2 * t2 + 1][1],
                          b_base + static_cast<unsigned>(krow * LDB + ncol) * 2u);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int t = 0; t < 8; ++t)
          mma_bf16(acc[h][t], a[h][0], a[h][1], a[h][2], a[h][3], b[t][0], b[t][1]);
    }
  }
  // Rows 16r..16r+15 of the warp's region into scr [16][kScrLd].
  __device__ void store_chunk(int r, float* scr, int lane) {
    const int g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (h != r) continue;
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        const int col = t * 8 + 2 * q;
        scr[g * kScrLd + col] = acc[h][t][0];
        scr[g * kScrLd + col + 1] = acc[h][t][1];
        scr[(g + 8) * kScrLd + col] = acc[h][t][2];
        scr[(g + 8) * kScrLd + col + 1] = acc[h][t][3];
      }
    }
  }
};

// fp32 product on CUDA cores: lane (lr, lc) owns rows lr*4..lr*4+3 and columns
// lc*4 + 16q + e of the warp's 32 x 64 region.
struct FfmaTile {
  static constexpr int LDA = Prec<0>::lda, LDB = Prec<0>::ldb;
  float acc[4][16];
  __device__ void init() {
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int c = 0; c < 16; ++c) acc[r][c] = 0.0f;
  }
  __device__ void step(const float* As, const float* Bs, int wm, int wn, int lane) {
    const int lr = lane / 4, lc = lane % 4;
#pragma unroll 4
    for (int k = 0; k < kBK; ++k) {
      float a[4], b[16];
#pragma unroll
      for (int r = 0; r < 4; ++r) a[r] = As[(wm * 32 + lr * 4 + r) * LDA + k];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float4 v = *reinterpret_cast<const float4*>(Bs + k * LDB + wn * 64 + lc * 4 + 16 * q);
        b[4 * q] = v.x;
        b[4 * q + 1] = v.y;
        b[4 * q + 2] = v.z;
        b[4 * q + 3] = v.w;
      }
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int c = 0; c < 16; ++c) acc[r][c] = fmaf(a[r], b[c], acc[r][c]);
    }
  }
  __device__ void store_chunk(int r, float* scr, int lane) {
    const int lr = lane / 4, lc = lane % 4;
    if (lr / 4 != r) return;
#pragma unroll
    for (int rr = 0; rr < 4; ++rr)
#pragma unroll
      for (int q = 0; q < 4; ++q)
#pragma unroll
        for (int e = 0; e < 4; ++e) scr[((lr % 4) * 4 + rr) * kScrLd + lc * 4 + 16 * q + e] = acc[rr][4 * q + e];
  }
};

template <int PREC, bool M2, int NS>
__global__ void __launch_bounds__(kThreads, 1)
    latim_tile_kernel(TileFactors f, int64_t i0, int64_t ni, int64_t j0, int64_t nj, int ncb, bool want_hattn,
                      float* __restrict__ partial, float* __restrict__ hattn, double* __restrict__ contrib,
                      void* __restrict__ scratch) {
  using TA = typename Prec<PREC>::T;
  constexpr int LDA = Prec<PREC>::lda, LDB = Prec<PREC>::ldb;
  extern __shared__ __align__(128) unsigned char smem[];
  const SmemLayout L = smem_layout(PREC, M2, NS, f.H, f.G * f.N, f.G);
  TA* As = reinterpret_cast<TA*>(smem + L.as);
  TA* Bs0 = reinterpret_cast<TA*>(smem + L.bs);
  float* Zs0 = reinterpret_cast<float*>(smem + L.zs);
  float* Vs0 = reinterpret_cast<float*>(smem + L.vs);
  float* CW0 = reinterpret_cast<float*>(smem + L.cw);
  float* CBias0 = reinterpret_cast<float*>(smem + L.cbias);
  float* Ms = reinterpret_cast<float*>(smem + L.ms);
  float* CB = reinterpret_cast<float*>(smem + L.cb);
  float* Dsk0 = reinterpret_cast<float*>(smem + L.dsk);
  double* Si0 = reinterpret_cast<double*>(smem + L.si);
  double* Sl0 = reinterpret_cast<double*>(smem + L.sl);
  float* Dl0 = reinterpret_cast<float*>(smem + L.dl);
  float* A20 = reinterpret_cast<float*>(smem + L.a2);
  float* hat = reinterpret_cast<float*>(smem + L.hat);
  float* part = reinterpret_cast<float*>(smem + L.part);

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = warp / 4, wn = warp % 4;
  const int64_t njb = (nj + kBJ - 1) / kBJ;
  const int64_t T = f.T, D = f.D, d = f.d, N = f.N;
  const int K = static_cast<int>(f.K);
  const int64_t iend = i0 + ni, jend = j0 + nj;
  const int64_t dpad = int64_t{ncb} * kBN;
  const int64_t nslabs = (D + kBK - 1) / kBK;
  const int64_t npb = ((ni + kBI - 1) / kBI) * njb;
  // This block's u, [slab][kBM][kBK], written in the first column pass, read in the others.
  TA* const ublk = static_cast<TA*>(scratch) + int64_t{blockIdx.x} * nslabs * kBM * kBK;

  std::conditional_t<PREC == 0, FfmaTile, std::conditional_t<PREC == 2, MmaBf16Tile, MmaTf32Tile>> mma;

  // Persistent blocks: each takes pair blocks (kBI targets x kBJ sources) in turn and runs
  // the column blocks of W_out over them one after the other. The first pass builds u
  // and keeps it in `ublk`; the later passes stream it back instead of rebuilding it.
  for (int64_t pb = blockIdx.x; pb < npb; pb += gridDim.x) {
  const int64_t ib = i0 + (pb / njb) * kBI, jb = j0 + (pb % njb) * kBJ;
  if (jb > ib + kBI - 1) continue;  // every pair of the block has j > i
  for (int cbk = 0; cbk < ncb; ++cbk) {
  const bool first = cbk == 0;
  const int64_t n0 = int64_t{cbk} * kBN;

  // Issues the copies of slab `sl` (channels sl*kBK ..) into buffer slot sl & 1.
  auto prefetch = [&](int64_t slab) {
    const int b = static_cast<int>(slab & 1);
    const int64_t c0 = slab * kBK, cavail = D - c0 < kBK ? D - c0 : kBK;
    if (!first) {  // u of this slab, built by the first pass
      constexpr int per = 16 / static_cast<int>(sizeof(TA));
      constexpr int rc = kBK / per;  // 16-byte chunks per row
      const TA* src = ublk + slab * kBM * kBK;
      TA* dst = As + b * kBM * LDA;
      for (int idx = tid; idx < kBM * rc; idx += kThreads) {
        const int row = idx / rc, ch = idx % rc;
        stage_chunk(dst + row * LDA, src + row * kBK, ch, kBK);
      }
    }
    {
      constexpr int per_row = kBN * static_cast<int>(sizeof(TA)) / 16;
      constexpr int per_chunk = 16 / static_cast<int>(sizeof(TA));
      const TA* src = static_cast<const TA*>(f.WoutT);
      TA* Bs = Bs0 + b * kBK * LDB;
      for (int idx = tid; idx < kBK * per_row; idx += kThreads) {
        const int row = idx / per_row, ch = idx % per_row;
        cp_async16(Bs + row * LDB + ch * per_chunk, src + (c0 + row) * dpad + n0 + ch * per_chunk);
      }
    }
    constexpr int fc = kBK / 4;  // 16-byte chunks in a row of kBK floats
    if (first) {
    for (int idx = tid; idx < (kBI + kBJ) * fc; idx += kThreads) {
      const int row = idx / fc, ch = idx % fc;
      if (row < kBI) {
        const int64_t i = ib + row;
        stage_chunk(Zs0 + (b * kBI + row) * kBK, f.Z + i * D + c0, ch, i < T ? cavail : 0);
      } else {
        const int64_t j = jb + row - kBI;
        stage_chunk(Vs0 + (b * kBJ + row - kBI) * kBK, f.v + j * f.ldv + c0, ch, j < T ? cavail : 0);
      }
    }
    for (int ch = tid; ch < K * fc; ch += kThreads) stage_chunk(CW0 + b * kBK * kKMax, f.conv_w + c0 * K, ch, cavail * K);
    if (tid < fc) stage_chunk(CBias0 + b * kBK, f.conv_b ? f.conv_b + c0 : f.v, tid, f.conv_b ? cavail : 0);
    if constexpr (!M2) {
      if (tid < fc) stage_chunk(Dsk0 + b * kBK, f.Dskip + c0, tid, cavail);
      constexpr int dc = kBK / 2;  // 16-byte chunks in a row of kBK doubles
      for (int idx = tid; idx < (kBI + kNL) * dc; idx += kThreads) {
        const int row = idx / dc, ch = idx % dc;
        if (row < kBI) {
          const int64_t i = ib + row;
          stage_chunk(Si0 + (b * kBI + row) * kBK, f.S + i * D + c0, ch, i < T ? cavail : 0);
        } else {
          const int64_t l = jb + row - kBI;
          stage_chunk(Sl0 + (b * kNL + row - kBI) * kBK, f.S + l * D + c0, ch, l < T ? cavail : 0);
        }
      }
      for (int idx = tid; idx < kNL * fc; idx += kThreads) {
        const int row = idx / fc, ch = idx % fc;
        const int64_t l = jb + row;
        stage_chunk(Dl0 + (b * kNL + row) * kBK, f.delta + l * D + c0, ch, l < T ? cavail : 0);
      }
      constexpr int AP = a2_stride(NS);
      for (int idx = tid; idx < kBK * (NS / 4); idx += kThreads) {  // rows of N, zero to NS
        const int row = idx / (NS / 4), q = idx % (NS / 4);
        stage_chunk(A20 + (b * kBK + row) * AP, f.A2 + (c0 + row) * N, q, row < cavail ? N : 0);
      }
    }
    }  // first
    cp_async_commit();
  };

  prefetch(0);
  if (first) {

  // Prologue: Mamba-2's M for every head (it does not depend on the channel slab), with the
  // skip term D[h] folded into M_{i,i}, and the hidden attention; Mamba-1's C_i[n] B_l[n].
  if constexpr (M2) {
    // Stage the rows the block needs, then compute from shared memory (waits for slab 0 too).
    mamba2_block_m(f, ib, jb, T, m2_staging(smem, L.m2), Ms, tid, kThreads, [] { __syncthreads(); });
  } else {
    for (int idx = tid; idx < kBM; idx += kThreads) hat[idx] = 0.0f;  // summed over the slabs
    for (int idx = tid; idx < kBI * kNL * NS; idx += kThreads) {
      const int n = idx % NS, q = idx / NS, ii = q / kNL, ll = q % kNL;
      const int64_t i = ib + ii, l = jb + ll;
      CB[idx] = (i < T && l < T && n < N) ? f.C[i * f.ldbc + n] * f.B[l * f.ldbc + n] : 0.0f;
    }
  }

  }  // first: prologue
  mma.init();

  for (int64_t slab = 0; slab < nslabs; ++slab) {
    const int b = static_cast<int>(slab & 1);
    cp_async_wait_all();  // slab `slab` (the only copies in flight) has landed in slot b
    __syncthreads();      // visible to all; every warp is done with slab - 1 (slot b ^ 1, As)
    if (slab + 1 < nslabs) prefetch(slab + 1);  // overlaps this slab's work
    TA* const Ab = As + b * kBM * LDA;
    if (first) {
    const int64_t c = slab * kBK + lane;
    const bool cok = c < D;

    if constexpr (!M2) {
      // M_{i,l}[c] for the block's (i, l) and this slab, with D[c] folded into M_{i,i}.
      const double* Si = Si0 + b * kBI * kBK;
      const double* Sl = Sl0 + b * kNL * kBK;
      const float* Dl = Dl0 + b * kNL * kBK;
      const float4* A2s = reinterpret_cast<const float4*>(A20 + (b * kBK + lane) * a2_stride(NS));
      float a2[NS];  // zero past N (staged so)
#pragma unroll
      for (int q = 0; q < NS / 4; ++q) {
        const float4 v = A2s[q];
        a2[4 * q] = v.x, a2[4 * q + 1] = v.y, a2[4 * q + 2] = v.z, a2[4 * q + 3] = v.w;
      }
      const float dsk = Dsk0[b * kBK + lane];
      for (int q = warp; q < kBI * kNL; q += kWarps) {
        const int ii = q / kNL, ll = q % kNL;
        const int64_t i = ib + ii, l = jb + ll;
        float m = 0.0f;
        const bool ok = i < T && l < T && l <= i;
        if (ok && cok) {
          const float gap = static_cast<float>(Si[ii * kBK + lane] - Sl[ll * kBK + lane]);  // >= 0
          const float* cbq = CB + q * NS;
          float sum = 0.0f;
#pragma unroll
          for (int n = 0; n < NS; ++n) sum += cbq[n] * exp2_mode<PREC>(a2[n] * gap);
          m = sum * Dl[ll * kBK + lane];
        }
        if (want_hattn && cbk == 0 && ll < kBJ) {
          const float hs = warp_sum(m);
          if (lane == 0) hat[ii * kBJ + ll] += hs;
        }
        Ms[q * kBK + lane] = ok && l == i ? m + dsk : m;
      }
      __syncthreads();
    }

    // u_{ij}[c] = Z_i[c] sum_k M'_{i,j+k} x_{j+k<-j}[c]: lane = channel, warp = source.
    {
      const float* Zs = Zs0 + b * kBI * kBK;
      const float* Vs = Vs0 + b * kBJ * kBK;
      const float* CW = CW0 + b * kBK * kKMax;
      float wk[kKMax];
#pragma unroll
      for (int kk = 0; kk < kKMax; ++kk) wk[kk] = kk < K ? CW[lane * K + (K - 1 - kk)] : 0.0f;
      const float bias = CBias0[b * kBK + lane];
      float z[kBI];
#pragma unroll
      for (int ii = 0; ii < kBI; ++ii) z[ii] = Zs[ii * kBK + lane];
      const int h = M2 ? (cok ? static_cast<int>(c) / static_cast<int>(f.P) : 0) : 0;  // 32-bit division
      {
        const int jj = warp;
        const int64_t j = jb + jj;
        const float vj = Vs[jj * kBK + lane];
        float tap[kKMax];
#pragma unroll
        for (int kk = 0; kk < kKMax; ++kk) {
          // Mamba-1 in tf32 and bf16 takes the fast SiLU (a few fp32 ulps, far below the
          // operand's rounding next): 3 % more pairs/s. Mamba-2's tf32 kernel measured 3.5 %
          // slower with it (4.518e7 -> 4.362e7 pairs/s at 16K, H100) and keeps the exact form.
          const float pre = wk[kk] * vj + (kk == 0 ? bias : 0.0f);
          tap[kk] = f.silu ? (PREC == 0 || M2 ? silu(pre) : silu_fast(pre)) : pre;
        }
        const bool jok = j < jend;
#pragma unroll
        for (int ii = 0; ii < kBI; ++ii) {
          float u = 0.0f;
          if (jok && ib + ii < iend) {
            const float* Mrow = M2 ? Ms + h * kMsHead + ii * kNL + jj : Ms + (ii * kNL + jj) * kBK + lane;
            constexpr int step = M2 ? 1 : kBK;
            float sum = 0.0f;
#pragma unroll
            for (int kk = 0; kk < kKMax; ++kk)
              if (kk < K) sum += Mrow[kk * step] * tap[kk];
            u = z[ii] * sum;
          }
          Ab[(ii * kBJ + jj) * LDA + lane] = to_operand<PREC>(u);
        }
      }
    }
    __syncthreads();
    // Keep u for the later column passes (16-byte copies where the rows allow them).
    if constexpr ((LDA * sizeof(TA)) % 16 == 0) {
      constexpr int per = 16 / static_cast<int>(sizeof(TA)), rc = kBK / per;
      for (int idx = tid; idx < kBM * rc; idx += kThreads) {
        const int row = idx / rc, ch = idx % rc;
        *reinterpret_cast<uint4*>(ublk + (slab * kBM + row) * kBK + ch * per) =
            *reinterpret_cast<const uint4*>(Ab + row * LDA + ch * per);
      }
    } else {
      for (int idx = tid; idx < kBM * kBK; idx += kThreads)
        ublk[slab * kBM * kBK + idx] = Ab[(idx / kBK) * LDA + idx % kBK];
    }
    }  // first: build u
    mma.step(Ab, Bs0 + b * kBK * LDB, wm, wn, lane);
  }
  __syncthreads();  // the epilogue's scratch reuses As

  // Epilogue, 16 rows (one target, 16 sources) of the warp's region at a time.
  float* scr = reinterpret_cast<float*>(smem + L.scr) + warp * 16 * kScrLd;
  float* ys = reinterpret_cast<float*>(smem + L.yr) + warp * 128;
  float* rs = ys + 64;
  for (int r = 0; r < 2; ++r) {
    mma.store_chunk(r, scr, lane);
    const int ii = wm * 2 + r;
    const int64_t i = ib + ii;
    for (int col = lane; col < 64; col += 32) {
      const int64_t n = n0 + wn * 64 + col;
      const bool ok = i < T && n < d;
      ys[col] = ok ? f.yhat[i * d + n] : 0.0f;
      rs[col] = ok ? f.r_in[i * d + n] : 0.0f;
    }
    __syncwarp();
    const int row = lane & 15, half = lane >> 4;
    const bool diag = i == jb + row;
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f;
#pragma unroll 8
    for (int cc = 0; cc < 32; ++cc) {
      const int col = 2 * cc + half;
      const float t = scr[row * kScrLd + col];
      const float yh = ys[col];
      const float th = diag ? t + rs[col] : t;
      s0 += t * t;
      s1 += fabsf(t);
      s2 += fabsf(yh) - fabsf(yh - th);
    }
    s0 += __shfl_xor_sync(0xffffffffu, s0, 16);
    s1 += __shfl_xor_sync(0xffffffffu, s1, 16);
    s2 += __shfl_xor_sync(0xffffffffu, s2, 16);
    if (half == 0) {
      float* pp = part + (wn * kBM + ii * kBJ + row) * 3;
      pp[0] = s0;
      pp[1] = s1;
      pp[2] = s2;
    }
    if (contrib && i < iend) {  // (null: the sums are not wanted)
      for (int col = lane; col < 64; col += 32) {
        const int64_t n = n0 + wn * 64 + col;
        if (n >= d) continue;
        float s = 0.0f;
#pragma unroll
        for (int r2 = 0; r2 < 16; ++r2) s += scr[r2 * kScrLd + col];
        if (s != 0.0f) atomicAdd(contrib + (i - i0) * d + n, static_cast<double>(s));
      }
    }
    __syncwarp();
  }
  __syncthreads();
  if (tid < kBM) {
    const int ii = tid / kBJ, jj = tid % kBJ;
    const int64_t i = ib + ii, j = jb + jj;
    if (i < iend && j < jend && j <= i) {
      const int64_t nn = ni * nj, idx = (i - i0) * nj + (j - j0);
#pragma unroll
      for (int s = 0; s < 3; ++s) {
        float v = 0.0f;
        for (int w = 0; w < 4; ++w) v += part[(w * kBM + tid) * 3 + s];
        partial[(int64_t{s} * ncb + cbk) * nn + idx] = v;
      }
      if (want_hattn && cbk == 0) {
        float hv;
        if constexpr (M2) {
          const float* diag = m2_staging(smem, L.m2).diag;
          float sum = 0.0f;
          for (int64_t hh = 0; hh < f.H; ++hh) sum += i == j ? diag[ii * f.H + hh] : Ms[hh * kMsHead + ii * kNL + jj];
          hv = sum / static_cast<float>(f.H);
        } else {
          hv = hat[tid] / static_cast<float>(D);
        }
        hattn[idx] = hv;
      }
    }
  }
  __syncthreads();  // part, Ms and the scratch are reused by the next pass or pair block
  }  // cbk
  }  // pb
}

__global__ void finalize_kernel(int64_t i0, int64_t ni, int64_t j0, int64_t nj, int ncb,
                                const float* __restrict__ partial, const float* __restrict__ hattn, float* l2,
                                float* l1, float* alti, float* hout) {
  const int64_t nn = ni * nj;
  const float nan = __int_as_float(0x7fc00000);
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < nn; idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = i0 + idx / nj, j = j0 + idx % nj;
    if (j > i) {
      if (l2) l2[idx] = nan;
      if (l1) l1[idx] = nan;
      if (alti) alti[idx] = nan;
      if (hout) hout[idx] = nan;
      continue;
    }
    double s0 = 0.0, s1 = 0.0, s2 = 0.0;
    for (int cb = 0; cb < ncb; ++cb) {
      s0 += partial[(0 * int64_t{ncb} + cb) * nn + idx];
      if (l1) s1 += partial[(1 * int64_t{ncb} + cb) * nn + idx];
      if (alti) s2 += partial[(2 * int64_t{ncb} + cb) * nn + idx];
    }
    if (l2) l2[idx] = static_cast<float>(sqrt(s0));
    if (l1) l1[idx] = static_cast<float>(s1);
    if (alti) alti[idx] = static_cast<float>(s2 > 0.0 ? s2 : 0.0);
    if (hout) hout[idx] = hattn[idx];
  }
}

template <class TO>
__global__ void prepare_wout_kernel(const float* __restrict__ W, int64_t d, int64_t D, int64_t Dpad, int64_t dpad,
                                    bool tf32, TO* __restrict__ out) {
  const int64_t n_all = Dpad * dpad;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n_all;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = idx / dpad, n = idx % dpad;
    float v = (c < D && n < d) ? W[n * D + c] : 0.0f;
    if constexpr (std::is_same_v<TO, float>) {
      if (tf32) v = wmma::__float_to_tf32(v);
      out[idx] = v;
    } else {
      out[idx] = __float2bfloat16_rn(v);
    }
  }
}

// W_out for the wgmma kernel: per column block (256 rows n) and slab (64 channels c), a
// 32 KiB block holding the [256 x 64] bf16 tile exactly as that kernel keeps it in shared
// memory (K-major rows of 128 bytes, 16-byte chunk h of row r at chunk h ^ (r % 8)), so that
// one bulk copy loads it. Zero padded to dpad rows and a multiple of 64 channels.
__global__ void prepare_wout_image_kernel(const float* __restrict__ W, int64_t d, int64_t D, int64_t D64,
                                          int64_t dpad, __nv_bfloat16* __restrict__ out) {
  const int64_t n_all = dpad * D64, nslab = D64 / 64;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n_all;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t n = idx / D64, c = idx % D64;
    const int64_t r = n % 256, h = (c % 64) / 8;
    const int64_t dst = ((n / 256) * nslab + c / 64) * (256 * 64) + r * 64 + ((h ^ (r & 7)) * 8) + c % 8;
    out[dst] = __float2bfloat16_rn((c < D && n < d) ? W[n * D + c] : 0.0f);
  }
}

__global__ void yhat_kernel(const float* r, const float* o, int64_t n, float* y) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += int64_t{gridDim.x} * blockDim.x)
    y[k] = r[k] + o[k];
}

__global__ void gate_factor_kernel(const float* gate, const float* gamma, int64_t n, float* Z) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += int64_t{gridDim.x} * blockDim.x)
    Z[k] = gamma ? gamma[k] * gate[k] : gate[k];
}

// x̃[l, ch] = Σ_{k < K, k <= l} act(w[ch, K-1-k] v[l-k, ch] + [k = 0] b[ch]), summed in fp64.
__global__ void surrogate_conv_kernel(const float* __restrict__ v, int64_t ldv, int64_t T, int64_t D,
                                      const float* __restrict__ conv_w, int K, const float* __restrict__ conv_b,
                                      bool silu_act, float* __restrict__ out) {
  for (int64_t l = blockIdx.y; l < T; l += gridDim.y)
    for (int64_t ch = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; ch < D; ch += int64_t{gridDim.x} * blockDim.x) {
      double s = 0.0;
      for (int k = 0; k < K && k <= l; ++k) {
        float a = conv_w[ch * K + (K - 1 - k)] * v[(l - k) * ldv + ch];
        if (k == 0 && conv_b) a += conv_b[ch];
        s += silu_act ? silu(a) : a;
      }
      out[l * D + ch] = static_cast<float>(s);
    }
}

// eps[t] = ‖o_t − b − s_t‖ / ‖o_t − b‖ (0 where o_t = b), fp64 sums; one block per row.
__global__ void row_approx_error_kernel(const float* __restrict__ o, const float* __restrict__ b,
                                        const float* __restrict__ s, int64_t T, int64_t d, float* __restrict__ eps) {
  __shared__ double red[2][32];
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    double ss = 0.0, nn = 0.0;
    for (int64_t k = threadIdx.x; k < d; k += blockDim.x) {
      const double target = static_cast<double>(o[t * d + k]) - (b ? b[k] : 0.0f);
      const double diff = target - s[t * d + k];
      ss += diff * diff;
      nn += target * target;
    }
    for (int off = 16; off > 0; off >>= 1) {
      ss += __shfl_down_sync(0xffffffffu, ss, off);
      nn += __shfl_down_sync(0xffffffffu, nn, off);
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    if (lane == 0) red[0][warp] = ss, red[1][warp] = nn;
    __syncthreads();
    if (threadIdx.x == 0) {
      double a = 0.0, c = 0.0;
      for (int w = 0; w < nw; ++w) a += red[0][w], c += red[1][w];
      eps[t] = c > 0 ? static_cast<float>(sqrt(a / c)) : 0.0f;
    }
    __syncthreads();
  }
}

unsigned blocks_for(int64_t n) {
  const int64_t b = (n + 255) / 256;
  return static_cast<unsigned>(b < 4096 * 132 ? (b > 0 ? b : 1) : 4096 * 132);
}

template <int PREC, bool M2, int NS>
void launch(const TileFactors& f, int64_t i0, int64_t ni, int64_t j0, int64_t nj, bool hidden_attn, float* partial,
            float* hattn, double* contrib, cudaStream_t stream, int layer) {
  const int ncb = static_cast<int>(latim_tile_column_blocks(f.d));
  const int64_t nblocks = ((ni + kBI - 1) / kBI) * ((nj + kBJ - 1) / kBJ);
  if (nblocks > 0x7fffffff) fail("latim_tile (layer ", layer, "): tile of ", ni, " x ", nj, " pairs is too large");
  const SmemLayout L = smem_layout(PREC, M2, NS, f.H, f.G * f.N, f.G);
  auto kernel = latim_tile_kernel<PREC, M2, NS>;
  int max_smem = 0, dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice", layer);
  check(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute", layer);
  if (L.total > max_smem)
    fail("latim_tile (layer ", layer, "): needs ", L.total, " bytes of shared memory per block (", M2 ? "n_heads" : "d_state",
         " too large); the device allows ", max_smem);
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(L.total)),
        "latim_tile (shared memory attribute)", layer);
  // Persistent blocks, as many as fit on the device at once; each keeps its u in scratch.
  int sms = 0, per_sm = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute", layer);
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, L.total), "latim_tile (occupancy)",
        layer);
  const int64_t resident = int64_t{sms} * (per_sm > 0 ? per_sm : 1);
  const int64_t grid = nblocks < resident ? nblocks : resident;
  const int64_t nslabs = (f.D + kBK - 1) / kBK;
  const int64_t esz = PREC == 2 ? 2 : 4;
  void* scratch = tile_scratch(dev, grid * nslabs * kBM * kBK * esz, layer);
  kernel<<<static_cast<unsigned>(grid), kThreads, L.total, stream>>>(f, i0, ni, j0, nj, ncb, hidden_attn, partial,
                                                                     hattn, contrib, scratch);
  check_launch("latim_tile", layer, stream);
}

template <int PREC>
void dispatch(const TileFactors& f, int64_t i0, int64_t ni, int64_t j0, int64_t nj, bool hidden_attn, float* partial,
              float* hattn, double* contrib, cudaStream_t stream, int layer) {
  if (f.mamba2) return launch<PREC, true, 1>(f, i0, ni, j0, nj, hidden_attn, partial, hattn, contrib, stream, layer);
  if (f.N <= 16) return launch<PREC, false, 16>(f, i0, ni, j0, nj, hidden_attn, partial, hattn, contrib, stream, layer);
  if (f.N <= 64) return launch<PREC, false, 64>(f, i0, ni, j0, nj, hidden_attn, partial, hattn, contrib, stream, layer);
  fail("latim_tile (layer ", layer, "): d_state = ", f.N, " is above the CUDA kernel's Mamba-1 limit of 64");
}

}  // namespace

int64_t latim_tile_Dpad(int64_t D) { return (D + kBK - 1) / kBK * kBK; }
int64_t latim_tile_dpad(int64_t d) { return latim_tile_column_blocks(d) * kBN; }
int64_t latim_tile_column_blocks(int64_t d) { return (d + kBN - 1) / kBN; }
int64_t latim_tile_wout_elems(int64_t d, int64_t D, TilePrecision p) {
  const int64_t base = latim_tile_Dpad(D) * latim_tile_dpad(d);
  return p == TilePrecision::BF16 ? base + (D + 63) / 64 * 64 * latim_tile_dpad(d) : base;
}
int64_t latim_tile_partial_size(int64_t ni, int64_t nj, int64_t d) { return 3 * latim_tile_column_blocks(d) * ni * nj; }

void latim_prepare_wout(const float* W, int64_t d, int64_t D, TilePrecision p, void* out, cudaStream_t stream,
                        int layer) {
  const int64_t Dpad = latim_tile_Dpad(D), dpad = latim_tile_dpad(d);
  if (p == TilePrecision::BF16) {
    auto* o16 = static_cast<__nv_bfloat16*>(out);
    prepare_wout_kernel<<<blocks_for(Dpad * dpad), 256, 0, stream>>>(W, d, D, Dpad, dpad, false, o16);
    const int64_t D64 = (D + 63) / 64 * 64;
    prepare_wout_image_kernel<<<blocks_for(D64 * dpad), 256, 0, stream>>>(W, d, D, D64, dpad, o16 + Dpad * dpad);
  } else
    prepare_wout_kernel<<<blocks_for(Dpad * dpad), 256, 0, stream>>>(W, d, D, Dpad, dpad, p == TilePrecision::TF32,
                                                                      static_cast<float*>(out));
  check_launch("latim_prepare_wout", layer, stream);
}

void latim_yhat(const float* r_in, const float* o, int64_t n, float* yhat, cudaStream_t stream, int layer) {
  yhat_kernel<<<blocks_for(n), 256, 0, stream>>>(r_in, o, n, yhat);
  check_launch("latim_yhat", layer, stream);
}

void latim_surrogate_conv(const float* v, int64_t ldv, int64_t T, int64_t D, const float* conv_w, int64_t K,
                          const float* conv_b, bool silu_act, float* out, cudaStream_t stream, int layer) {
  if (T == 0 || D == 0) return;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((D + 255) / 256, 65535)),
                  static_cast<unsigned>(std::min<int64_t>(T, 65535)));
  surrogate_conv_kernel<<<grid, 256, 0, stream>>>(v, ldv, T, D, conv_w, static_cast<int>(K), conv_b, silu_act, out);
  check_launch("latim_surrogate_conv", layer, stream);
}

void latim_row_approx_error(const float* o, const float* b_out, const float* s, int64_t T, int64_t d, float* eps,
                            cudaStream_t stream, int layer) {
  if (T == 0) return;
  row_approx_error_kernel<<<static_cast<unsigned>(std::min<int64_t>(T, 1 << 20)), 256, 0, stream>>>(o, b_out, s, T, d,
                                                                                                  eps);
  check_launch("latim_row_approx_error", layer, stream);
}

void latim_gate_factor(const float* gate, const float* gamma, int64_t n, float* Z, cudaStream_t stream, int layer) {
  gate_factor_kernel<<<blocks_for(n), 256, 0, stream>>>(gate, gamma, n, Z);
  check_launch("latim_gate_factor", layer, stream);
}

void latim_tile(const TileFactors& f, TilePrecision p, int64_t i0, int64_t ni, int64_t j0, int64_t nj,
                bool hidden_attn, bool l1_alti, float* partial, float* hattn, double* contrib, cudaStream_t stream,
                int layer) {
  if (ni <= 0 || nj <= 0) return;
  if (f.K > kKMax) fail("latim_tile (layer ", layer, "): conv width ", f.K, " is above the CUDA kernel's limit of ", kKMax);
  if (f.ldv < f.D || f.ldbc < (f.mamba2 ? f.G * f.N : f.N))
    fail("latim_tile (layer ", layer, "): internal: row strides of v or B/C are not set");
  if (i0 < 0 || j0 < 0 || i0 + ni > f.T || j0 + nj > f.T)
    fail("latim_tile (layer ", layer, "): tile [", i0, ", ", i0 + ni, ") x [", j0, ", ", j0 + nj,
         ") is outside the sequence of ", f.T);
  switch (p) {
    case TilePrecision::FP32: return dispatch<0>(f, i0, ni, j0, nj, hidden_attn, partial, hattn, contrib, stream, layer);
    case TilePrecision::TF32: return dispatch<1>(f, i0, ni, j0, nj, hidden_attn, partial, hattn, contrib, stream, layer);
    case TilePrecision::BF16:
      if (latim_tile_wgmma(f, i0, ni, j0, nj, hidden_attn, l1_alti, partial, hattn, contrib, stream, layer)) return;
      return dispatch<2>(f, i0, ni, j0, nj, hidden_attn, partial, hattn, contrib, stream, layer);
  }
}

void latim_tile_finalize(int64_t i0, int64_t ni, int64_t j0, int64_t nj, int64_t d, const float* partial,
                         const float* hattn, float* l2, float* l1, float* alti, float* hattn_out, cudaStream_t stream,
                         int layer) {
  if (ni * nj == 0) return;
  finalize_kernel<<<blocks_for(ni * nj), 256, 0, stream>>>(i0, ni, j0, nj, static_cast<int>(latim_tile_column_blocks(d)),
                                                           partial, hattn, l2, l1, alti, hattn_out);
  check_launch("latim_tile_finalize", layer, stream);
}

}  // namespace latim::cuda
