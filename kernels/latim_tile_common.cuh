// Device code shared by the two LaTIM tile kernels (latim_tile.cu and latim_tile_wgmma.cu):
// the pair-block geometry, 16-byte staging of rows into shared memory, and the Mamba-2
// prologue that computes M_{i,l} for every head of a pair block.
#pragma once
#include <cstdint>

#include "cp_async.cuh"
#include "cuda_check.hpp"
#include "device_buffer.hpp"
#include "latim_tile.hpp"

namespace latim::cuda::tile_common {

constexpr int kBI = 8, kBJ = 16, kBM = kBI * kBJ;  // targets, sources, pairs per block
constexpr int kKMax = 4;                           // largest conv width supported
constexpr int kNL = kBJ + kKMax - 1;               // positions l a block's sources reach
// Floats between two heads of Mamba-2's M in shared memory ([H][kBI][kNL], one float of
// padding per head): the prologue's threads write consecutive heads, which an even stride
// (152) put on the same banks (8-way conflicts).
constexpr int kMsHead = kBI * kNL + 1;

__host__ __device__ inline int64_t round4(int64_t n) { return (n + 3) / 4 * 4; }

// Shared-memory layouts: the next piece of `bytes` at `off` rounded up to `align`; `off`
// moves past it.
__host__ __device__ inline int64_t take(int64_t& off, int64_t bytes, int64_t align = 128) {
  const int64_t o = (off + align - 1) / align * align;
  off = o + bytes;
  return o;
}

// The tile kernels' device scratch buffers, one of each kind per device (a stream runs one
// tile at a time): grow-only, kept for the life of the process.
enum class TileScratch { U, M1Taps, M1R };  // u of the resident blocks (both kernels); Mamba-1's conv taps; its R
inline void* tile_scratch(int dev, int64_t bytes, int layer, TileScratch which = TileScratch::U) {
  static DeviceArray<unsigned char>* buffers[3][64] = {};
  if (dev < 0 || dev >= 64) fail("latim_tile (layer ", layer, "): device index ", dev, " out of range");
  auto& b = buffers[static_cast<int>(which)][dev];
  if (!b) b = new DeviceArray<unsigned char>();  // never freed: outlives static teardown
  return b->reserve(bytes,
                    which == TileScratch::U        ? "LaTIM tile scratch (u of the resident blocks)"
                    : which == TileScratch::M1Taps ? "LaTIM tile scratch (Mamba-1 conv taps of the tile's sources)"
                                                   : "LaTIM tile scratch (Mamba-1 factored R of the tile's sources)",
                    layer);
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Stages chunk `chunk` (16 bytes) of a row (src) into shared memory (dst), the first `avail`
// elements of the row valid and the rest zero: cp.async where the chunk is whole and
// aligned, else plain copies.
template <class T>
__device__ __forceinline__ void stage_chunk(T* dst, const T* src, int chunk, int64_t avail) {
  constexpr int per = 16 / sizeof(T);
  const int e0 = chunk * per;
  if (e0 + per <= avail && ((reinterpret_cast<uintptr_t>(src + e0) | reinterpret_cast<uintptr_t>(dst + e0)) & 15) == 0) {
    cp_async16(dst + e0, src + e0);
  } else {
#pragma unroll
    for (int e = 0; e < per; ++e) dst[e0 + e] = e0 + e < avail ? src[e0 + e] : T(0);
  }
}

// Shared memory of the Mamba-2 prologue: C_i and B_l rows [.][round4(G N)], S_i and S_l
// rows [.][round4(H)] (fp64), Δ_l rows, the C·B dots [kBI * kNL][G] and M_{i,i} unfolded.
struct M2Staging {
  float* C;
  float* B;
  double* Si;
  double* Sl;
  float* Dl;
  float* dots;
  float* diag;
};

// Where M2Staging lives in a block's shared memory: byte offsets, laid out from `off`
// (advanced past them) in 128-byte aligned pieces.
struct M2Offsets {
  int64_t c, b, si, sl, dl, dots, diag;
};
__host__ __device__ inline M2Offsets m2_staging_layout(int64_t& off, int64_t H, int64_t GN, int64_t G) {
  M2Offsets o;
  o.c = take(off, kBI * round4(GN) * 4);
  o.b = take(off, kNL * round4(GN) * 4);
  o.si = take(off, kBI * round4(H) * 8);
  o.sl = take(off, kNL * round4(H) * 8);
  o.dl = take(off, kNL * round4(H) * 4);
  o.dots = take(off, kBI * kNL * G * 4);
  o.diag = take(off, kBI * H * 4);
  return o;
}
__device__ inline M2Staging m2_staging(unsigned char* smem, const M2Offsets& o) {
  return {reinterpret_cast<float*>(smem + o.c),   reinterpret_cast<float*>(smem + o.b),
          reinterpret_cast<double*>(smem + o.si), reinterpret_cast<double*>(smem + o.sl),
          reinterpret_cast<float*>(smem + o.dl),  reinterpret_cast<float*>(smem + o.dots),
          reinterpret_cast<float*>(smem + o.diag)};
}

// Mamba-2's M_{i,l} for every head of the pair block at (ib, jb), into Ms (head h, target ii,
// position ll at h kMsHead + ii kNL + ll), with the skip term D[h] folded into M_{i,i}
// (unfolded in s.diag, for the hidden attention).
// Rows i >= i_end get M = 0. Run by `nthreads` threads (thread `tid`, warps of 32), which
// `sync()` synchronises; it waits for every cp.async of those threads, its own and earlier.
template <class Sync>
__device__ void mamba2_block_m(const TileFactors& f, int64_t ib, int64_t jb, int64_t i_end, const M2Staging& s,
                               float* Ms, int tid, int nthreads, Sync sync) {
  const int64_t T = f.T, N = f.N, H = f.H, G = f.G, GN = G * N, GNp = round4(GN), Hp = round4(H);
  const int gc = static_cast<int>(GNp / 4), hc4 = static_cast<int>(Hp / 4), hc2 = static_cast<int>(Hp / 2);
  for (int idx = tid; idx < (kBI + kNL) * gc; idx += nthreads) {
    const int row = idx / gc, ch = idx % gc;
    if (row < kBI) {
      const int64_t i = ib + row;
      stage_chunk(s.C + row * GNp, f.C + (i < T ? i : 0) * f.ldbc, ch, i < T ? GN : 0);
    } else {
      const int64_t l = jb + row - kBI;
      stage_chunk(s.B + (row - kBI) * GNp, f.B + (l < T ? l : 0) * f.ldbc, ch, l < T ? GN : 0);
    }
  }
  for (int idx = tid; idx < (kBI + kNL) * hc2; idx += nthreads) {
    const int row = idx / hc2, ch = idx % hc2;
    if (row < kBI) {
      const int64_t i = ib + row;
      stage_chunk(s.Si + row * Hp, f.S + (i < T ? i : 0) * H, ch, i < T ? H : 0);
    } else {
      const int64_t l = jb + row - kBI;
      stage_chunk(s.Sl + (row - kBI) * Hp, f.S + (l < T ? l : 0) * H, ch, l < T ? H : 0);
    }
  }
  for (int idx = tid; idx < kNL * hc4; idx += nthreads) {
    const int row = idx / hc4, ch = idx % hc4;
    const int64_t l = jb + row;
    stage_chunk(s.Dl + row * Hp, f.delta + (l < T ? l : 0) * H, ch, l < T ? H : 0);
  }
  cp_async_commit();
  cp_async_wait_all();
  sync();
  const int warp = tid / 32, lane = tid % 32, nwarps = nthreads / 32;
  for (int q = warp; q < kBI * kNL; q += nwarps) {
    const int ii = q / kNL, ll = q % kNL;
    for (int g = 0; g < static_cast<int>(G); ++g) {
      float dot = 0.0f;
      const float* cr = s.C + ii * GNp + g * N;
      const float* br = s.B + ll * GNp + g * N;
      for (int n = lane; n < static_cast<int>(N); n += 32) dot += cr[n] * br[n];
      dot = warp_sum(dot);
      if (lane == 0) s.dots[q * G + g] = dot;
    }
  }
  sync();
  const int H32 = static_cast<int>(H), hpg32 = static_cast<int>(H / G);  // 32-bit: no 64-bit division
  for (int idx = tid; idx < kBI * kNL * H32; idx += nthreads) {
    const int h = idx % H32;
    const int q = idx / H32, ii = q / kNL, ll = q % kNL;
    const int64_t i = ib + ii, l = jb + ll;
    const bool ok = i < i_end && l < T && l <= i;
    float m = 0.0f;
    if (ok) {
      const float gap = static_cast<float>(s.Si[ii * Hp + h] - s.Sl[ll * Hp + h]);  // >= 0
      m = s.dots[q * G + h / hpg32] * exp2f(f.A2[h] * gap) * s.Dl[ll * Hp + h];
    }
    if (ok && l == i) {
      s.diag[ii * H + h] = m;
      m += f.Dskip[h];
    }
    Ms[h * kMsHead + ii * kNL + ll] = m;
  }
}

}  // namespace latim::cuda::tile_common
