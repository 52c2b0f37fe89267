// Mamba-2 SSD chunk states and outputs on Hopper warpgroup products (sm_90a), for bf16 x, B
// and C with head dim 64 and state size 128 (the Mamba-2 shapes). They compute what
// ssd_tc_kernel and ssd_cb_kernel in ssd_scan.cu compute (see there for the chunked form and
// the slices, groups and chain around them), with the roundings a plain bf16 implementation
// makes (mamba_ssm's chunked kernels): the products take bf16 operands and sum in fp32, so
// the entering state is rounded to bf16 for C·Hᵀ, the decayed and masked C·Bᵀ (M) for M·x,
// and the weighted input w_j x_j (w_j = exp(L_last - L_j) Δ_j) for the state update (where
// mamba_ssm weights B instead). Every exponent, the decays, the state itself and y's sums
// stay fp32.
//
// One warpgroup (128 threads) per (head, group of chunks) walks the group's chunks of 64
// positions with the head's [64 p, 128 n] state in fp32 wgmma accumulators (64 per thread).
// x, B and C are copied into shared memory as they are (rows of 128 bytes, 128-byte swizzle),
// the next chunk's while the current one is computed, and the products read them there
// through descriptors: C and B as K-major operands (C Bᵀ, C Hᵀ), x and B as MN-major ones
// (M x, and the state update (w x)ᵀ B). Per chunk:
//   states:  H = exp(L_last) H + (w x)ᵀ B                                   (m64n128k16)
//   outputs: S = C Bᵀ and Y = C Hᵀ (m64n64k16, both in flight while the warps weight x),
//            M = S ⊙ exp(L_i - L_j) Δ_j (j <= i) in registers as wgmma's A fragment,
//            Y = exp(L_i) Y + M x (m64n64k16, A from registers), the state update as above
//            (except after the group's last chunk), y = Y + D x, and the state's bf16 copy
//            for the next chunk's C Hᵀ.
#include "ssd_wgmma.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "cp_async.cuh"
#include "cuda_check.hpp"
#include "device_math.cuh"
#include "wgmma_common.cuh"

namespace latim::cuda {

namespace {

using namespace wgmma;

constexpr int kQ = 64;         // positions per chunk
constexpr int kP = 64;         // head dim
constexpr int kN = 128;        // state size
constexpr int kThreads = 128;  // one warpgroup
constexpr int64_t kTile = int64_t{kN} * kP;
constexpr float kLog2e = 1.4426950408889634f;

// Shared memory, byte offsets from a 1024-aligned base. The outputs pass adds C and the
// state's bf16 copy in front of what the states pass uses, and keeps one B buffer (b_step 0)
// so that three blocks fit on a multiprocessor (3 x 76,288 bytes).
struct Smem {
  unsigned c, h, xw, b, b_step, x, l, total;
};
constexpr Smem smem_layout(bool out) {
  // C [2 blocks of n][64 i][64 n]; H [2 blocks of n][64 p][64 n]; w x [64 t][64 p];
  // B [1 or 2 buffers][2 blocks of n][64 t][64 n]; x [2 buffers][64 t][64 p]; [2 buffers] L, Δ, w [64] each.
  const unsigned front = out ? 32768u : 0u, b_bytes = out ? 16384u : 32768u;
  const unsigned x = front + 8192u + b_bytes, l = x + 16384u;
  return Smem{0u, 16384u, front, front + 8192u, out ? 0u : 16384u, x, l, l + 2 * 3 * kQ * 4 + 1024u};
}

#ifdef LATIM_WGMMA_DEVICE
// MN-major operand, 128-byte swizzle: rows of 64 consecutive MN elements (one k each), 8-row
// atoms 1024 bytes apart along k, blocks of 64 MN elements `lbo` bytes apart.
__device__ __forceinline__ uint64_t sw128_desc_mn(unsigned addr, unsigned lbo) {
  return static_cast<uint64_t>((addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>(lbo >> 4) << 16) |
         (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}
// d (+)= A B, m64n64k16: A and B from shared memory, each MN-major (kTransA, kTransB) or
// K-major; fp32 accumulators.
template <int kTransA, int kTransB>
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %35, %36;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(scale_d), "n"(kTransA), "n"(kTransB));
}
// d (+)= A B, m64n64k16: A from registers (bf16 pairs in the accumulator layout), B from shared
// memory, MN-major (kTransB) or K-major; fp32 accumulators.
template <int kTransB>
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d), "n"(kTransB));
}
// d (+)= A B, m64n128k16: A and B from shared memory, each MN-major (kTransA, kTransB) or
// K-major; fp32 accumulators.
template <int kTransA, int kTransB>
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, %67, %68;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(scale_d), "n"(kTransA), "n"(kTransB));
}
template <int M>
__device__ __forceinline__ void fence_acc(float (&d)[M]) {
#pragma unroll
  for (int k = 0; k < M; ++k) asm volatile("" : "+f"(d[k])::"memory");
}
__device__ __forceinline__ void sts32(unsigned addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t lds32(unsigned addr) {
  uint32_t v;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ uint4 lds128(unsigned addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr)
               : "memory");
  return v;
}
__device__ __forceinline__ void sts128(unsigned addr, const uint4& v) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
__device__ __forceinline__ uint32_t scale_bf16x2(uint32_t u, float w) {
  const float2 v = widen_bf16x2(u);
  return pack_bf16x2(w * v.x, w * v.y);
}
__device__ __forceinline__ void store_pair(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }
__device__ __forceinline__ void store_pair(uint16_t* p, float a, float b) {
  *reinterpret_cast<uint32_t*>(p) = pack_bf16x2(a, b);
}
#endif  // LATIM_WGMMA_DEVICE

// kOut = false: the chunk states (E, dgroup); true: the outputs (y) from Hg.
template <bool kOut, class Y>
__global__ void __launch_bounds__(kThreads, 3)
    ssd_wgmma_kernel(const uint16_t* __restrict__ x, int64_t ldx, const float* __restrict__ delta,
                     const float* __restrict__ A, const uint16_t* __restrict__ B, const uint16_t* __restrict__ C,
                     int64_t ldbc, const float* __restrict__ Dskip, int64_t T, int H, int hpg, int64_t nch, int64_t K,
                     const float* __restrict__ Hg, float* __restrict__ E, float* __restrict__ dgroup,
                     Y* __restrict__ y) {
#ifdef LATIM_WGMMA_DEVICE
  constexpr Smem S = smem_layout(kOut);
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const unsigned raw = smem_u32(smem_raw);
  const unsigned base = (raw + 1023u) & ~1023u;
  float* const Lbuf = reinterpret_cast<float*>(smem_raw + (base - raw) + S.l);  // [2][L [64], Δ [64], w [64]]
  const unsigned sC = base + S.c, sH = base + S.h, sXw = base + S.xw;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, q = lane & 3;
  const int h = blockIdx.x;
  const int64_t grp = blockIdx.y;
  const int gg = h / hpg;
  const int64_t c0 = grp * K, c1 = min(nch, c0 + K);
  const int64_t D = int64_t{H} * kP;
  const uint16_t* __restrict__ xh = x + int64_t{h} * kP;
  const uint16_t* __restrict__ Bg = B + int64_t{gg} * kN;
  const uint16_t* __restrict__ Cg = kOut ? C + int64_t{gg} * kN : nullptr;
  const float a2 = A[h] * kLog2e;
  const int i0 = 16 * warp + g, i1 = i0 + 8;  // this thread's accumulator rows (i for Y, p for H)

  // Asynchronous copies of chunk c's rows (zeros past the slice's end), as 16-byte chunks: x 8
  // per row, B and C 16 per row. x, and in the states pass B, go into buffer `buf`, which the
  // chunk two back used; C, and in the outputs pass B, into their one buffer.
  const auto stage_x = [&](int64_t c, int buf) {
    const int64_t t0 = c * kQ;
    const int len = static_cast<int>(min(int64_t{kQ}, T - t0));
    const unsigned sX = base + S.x + 8192u * buf;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int idx = tid + kThreads * k, r = idx >> 3, ch = idx & 7;
      const bool ok = r < len;
      cp_async16_or_zero(sX + sw128(r, ch), ok ? xh + (t0 + r) * ldx + 8 * ch : xh, ok);
    }
  };
  // B or C rows of chunk c into the tile at dst (two blocks of 64 n).
  const auto stage_bc = [&](const uint16_t* __restrict__ src, unsigned dst, int64_t c) {
    const int64_t t0 = c * kQ;
    const int len = static_cast<int>(min(int64_t{kQ}, T - t0));
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int idx = tid + kThreads * k, r = idx >> 4, ch = idx & 15;
      const bool ok = r < len;
      cp_async16_or_zero(dst + 8192u * (ch >> 3) + sw128(r, ch & 7), ok ? src + (t0 + r) * ldbc + 8 * ch : src, ok);
    }
  };
  const auto stage_b = [&](int64_t c, int buf) { stage_bc(Bg, base + S.b + S.b_step * buf, c); };
  const auto stage_c = [&](int64_t c) { stage_bc(Cg, sC, c); };
  // Accumulator element 4 nt + e of the state is (p = i0 + 8 (e / 2), n = 8 nt + 2 q + e % 2).
  float hacc[64];
  // The state's bf16 copy, layout [p][n] in two blocks of n (K-major for C Hᵀ).
  const auto store_state = [&]() {
#pragma unroll
    for (int nt = 0; nt < 16; ++nt) {
      const unsigned blk = sH + 8192u * (nt >> 3);
      sts32(blk + sw128(i0, nt & 7) + 4 * q, pack_bf16x2(hacc[4 * nt], hacc[4 * nt + 1]));
      sts32(blk + sw128(i1, nt & 7) + 4 * q, pack_bf16x2(hacc[4 * nt + 2], hacc[4 * nt + 3]));
    }
  };
  if constexpr (kOut) {
    const float* Gp = Hg + (grp * H + h) * kTile;  // layout [n][p]
#pragma unroll
    for (int nt = 0; nt < 16; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) hacc[4 * nt + e] = Gp[(8 * nt + 2 * q + (e & 1)) * kP + (e < 2 ? i0 : i1)];
    store_state();
  } else {
#pragma unroll
    for (int k = 0; k < 64; ++k) hacc[k] = 0.0f;
  }
  stage_x(c0, 0);
  stage_b(c0, 0);
  if (kOut) stage_c(c0);
  cp_async_commit();
  // Warp 0 computes a chunk's L (log2 units, inclusive), Δ and weights w one chunk ahead, while
  // the tensor cores run the chunk before, into the other of two buffers (lane l: positions
  // 2l, 2l + 1); their Δ is loaded a chunk before that.
  float dn0 = 0.0f, dn1 = 0.0f;
  const auto load_dt = [&](int64_t c) {
    const int64_t j0 = c * kQ + 2 * lane, j1 = j0 + 1;
    dn0 = j0 < T ? delta[j0 * H + h] : 0.0f;
    dn1 = j1 < T ? delta[j1 * H + h] : 0.0f;
  };
  const auto chunk_decays = [&](float* L) {
    const float d0 = dn0, d1 = dn1;
    float L0, L1;
    warp_pair_cumsum(d0 * a2, d1 * a2, lane, L0, L1);
    const float Ll = __shfl_sync(0xffffffffu, L1, 31);
    reinterpret_cast<float2*>(L)[lane] = make_float2(L0, L1);
    reinterpret_cast<float2*>(L + kQ)[lane] = make_float2(d0, d1);
    reinterpret_cast<float2*>(L + 2 * kQ)[lane] =
        make_float2(exp2f(fminf(Ll - L0, 0.0f)) * d0, exp2f(fminf(Ll - L1, 0.0f)) * d1);
  };
  if (warp == 0) {
    load_dt(c0);
    chunk_decays(Lbuf);
    if (c0 + 1 < c1) load_dt(c0 + 1);
  }
  const float dskip = kOut ? Dskip[h] : 0.0f;
  float run = 1.0f;  // product of the group's chunk decays (states)

  float yacc[kOut ? 32 : 1], sacc[kOut ? 32 : 1];
  // acc = C Kᵀ for a K-major [64][128] tile at sK (B: C·Bᵀ; the state copy: C·Hᵀ), k over n
  // in two blocks of 64, committed as one group.
  const auto c_times = [&](float(&acc)[kOut ? 32 : 1], unsigned sK) {
    if constexpr (kOut) {
      fence_acc(acc);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) {
        const unsigned off = 8192u * (kk >> 2) + 32u * (kk & 3);
        wgmma_m64n64k16_ss<0, 0>(acc, sw128_desc(sC + off), sw128_desc(sK + off), kk > 0);
      }
      wgmma_commit();
    }
  };
  for (int64_t c = c0; c < c1; ++c) {
    const int buf = static_cast<int>((c - c0) & 1);
    const unsigned sX = base + S.x + 8192u * buf, sB = base + S.b + S.b_step * buf;
    const int64_t t0 = c * kQ;
    const int len = static_cast<int>(min(int64_t{kQ}, T - t0));
    const bool last = c + 1 == c1;
    const bool update = !kOut || !last;  // the outputs need no state after the group's last chunk
    float* const Lsm = Lbuf + 3 * kQ * buf;
    cp_async_wait_all();
    fence_proxy_async();  // the copies and the state copy -> visible to the products
    __syncthreads();      // S1: x, B, C, L, Δ, w and the state copy of this chunk are in place
    // The next chunk's x (and B in the states pass): their buffer was last read by the chunk
    // before (its products are complete, its epilogue was before S1).
    if (!last) {
      stage_x(c + 1, buf ^ 1);
      if (!kOut) stage_b(c + 1, buf ^ 1);  // (the outputs pass's one B buffer: after its last product)
    }

    // S = C Bᵀ, k over n in two blocks of 64. Y = C Hᵀ follows once M is built from S: with
    // both in flight the accumulators did not fit beside the state and ptxas serialised
    // every product.
    if constexpr (kOut) {
      c_times(sacc, sB);
    }
    if (update) {  // w x -> Xw: 16-byte chunks (8 values of one position) tid + 128 k
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int idx = tid + kThreads * k, r = idx >> 3;
        const unsigned off = sw128(r, idx & 7);
        const float w = Lsm[2 * kQ + r];
        const uint4 v = lds128(sX + off);
        sts128(sXw + off, make_uint4(scale_bf16x2(v.x, w), scale_bf16x2(v.y, w), scale_bf16x2(v.z, w),
                                     scale_bf16x2(v.w, w)));
      }
      fence_proxy_async();
    }
    const float Llast = Lsm[kQ - 1];
    float Li0 = 0.0f, Li1 = 0.0f;
    uint32_t ma[4][4];  // M as the A fragment of k step kk (see below)
    if constexpr (kOut) {
      Li0 = Lsm[i0];
      Li1 = Lsm[i1];
      wgmma_wait<0>();
      fence_acc(sacc);
      // S element 4 nt + e is (i = i0 + 8 (e / 2), j = 8 nt + 2 q + e % 2); A-fragment register
      // r of step kk holds columns 16 kk + 8 (r / 2) + 2 q, + 1 of row r % 2 ? i1 : i0, i.e.
      // elements 8 kk + 4 (r / 2) + 2 (r % 2), + 1. Warp w's rows are 16 w .. 16 w + 15: the
      // steps kk > w are zero and kk = w holds the diagonal.
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int e = 8 * kk + 4 * (r >> 1) + 2 * (r & 1);
          const int i = (r & 1) ? i1 : i0, j = 16 * kk + 8 * (r >> 1) + 2 * q;
          if (kk > warp) {
            ma[kk][r] = 0u;
            continue;
          }
          const float Li = (r & 1) ? Li1 : Li0;
          const float2 Lj = reinterpret_cast<const float2*>(Lsm)[j >> 1];
          const float2 dj = reinterpret_cast<const float2*>(Lsm + kQ)[j >> 1];
          const float m0 = j <= i ? sacc[e] * exp2_ftz(fminf(Li - Lj.x, 0.0f)) * dj.x : 0.0f;
          const float m1 = j + 1 <= i ? sacc[e + 1] * exp2_ftz(fminf(Li - Lj.y, 0.0f)) * dj.y : 0.0f;
          ma[kk][r] = pack_bf16x2(m0, m1);
        }
      c_times(yacc, sH);
      wgmma_wait<0>();
      fence_acc(yacc);
    }
    __syncthreads();  // S2: C and the state copy are read, w x is in place
    if (kOut && !last) stage_c(c + 1);
    cp_async_commit();
    if constexpr (kOut) {
      const float e0 = exp2_ftz(Li0), e1 = exp2_ftz(Li1);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        yacc[4 * nt] *= e0;
        yacc[4 * nt + 1] *= e0;
        yacc[4 * nt + 2] *= e1;
        yacc[4 * nt + 3] *= e1;
      }
    }
    if (update) {
      const float dc = exp2f(Llast);
      run *= dc;
#pragma unroll
      for (int k = 0; k < 64; ++k) hacc[k] *= dc;
    }
    // The scalings above stay before the fence (register arithmetic could otherwise sink past it).
    if constexpr (kOut) fence_acc(yacc);
    fence_acc(hacc);
    wgmma_fence();
    if constexpr (kOut) {  // Y += M x: B = x (k over j, MN-major over p)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) wgmma_m64n64k16_rs<1>(yacc, ma[kk], sw128_desc_mn(sX + 2048u * kk, 8192u), 1);
      wgmma_commit();
    }
    if (update) {  // H += (w x)ᵀ B: A = w x (k over t, MN-major over p), B = B (MN-major over n)
      if constexpr (kOut) wgmma_fence();  // (after a branch: ptxas wants its own)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma_m64n128k16_ss<1, 1>(hacc, sw128_desc_mn(sXw + 2048u * kk, 8192u), sw128_desc_mn(sB + 2048u * kk, 8192u),
                                  1);
      wgmma_commit();
    }
    // The next chunk's decays (its buffer was last read before S2 of the chunk before).
    if (warp == 0 && !last) {
      chunk_decays(Lbuf + 3 * kQ * (buf ^ 1));
      if (c + 2 < c1) load_dt(c + 2);
    }
    wgmma_wait<0>();  // (reading y's accumulators with the state's products in flight made ptxas serialise all)
    fence_acc(hacc);
    if (kOut && !last) {  // B is read by no product now: the next chunk's, once every warp is here
      __syncthreads();
      stage_b(c + 1, 0);
      cp_async_commit();
    }
    if constexpr (kOut) {
      fence_acc(yacc);
      // y = Y + D x, x from the staged rows (element (i, p) at row i, chunk p / 8).
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = half ? i1 : i0;
        if (i >= len) continue;
        Y* yt = y + (t0 + i) * D + int64_t{h} * kP;
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
          const float2 xv = widen_bf16x2(lds32(sX + sw128(i, nt) + 4 * q));
          store_pair(yt + 8 * nt + 2 * q, fmaf(dskip, xv.x, yacc[4 * nt + 2 * half]),
                     fmaf(dskip, xv.y, yacc[4 * nt + 2 * half + 1]));
        }
      }
    }
    if (kOut && update) store_state();  // S1 of the next chunk orders it before that chunk's C Hᵀ
  }
  if constexpr (!kOut) {  // the group-local state after the group, layout [n][p], and its decay
    float* Ec = E + (grp * H + h) * kTile;
#pragma unroll
    for (int nt = 0; nt < 16; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) Ec[(8 * nt + 2 * q + (e & 1)) * kP + (e < 2 ? i0 : i1)] = hacc[4 * nt + e];
    if (tid == 0) dgroup[grp * H + h] = run;
  }
#endif  // LATIM_WGMMA_DEVICE
}

std::atomic<int64_t> g_launches{0};

template <bool kOut, class Y>
void launch(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B, const uint16_t* C,
            int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t G, int64_t nch, int64_t K, int64_t ng,
            const float* Hg, float* E, float* dgroup, Y* y, cudaStream_t stream, int layer) {
  constexpr int smem = static_cast<int>(smem_layout(kOut).total);
  auto kernel = ssd_wgmma_kernel<kOut, Y>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
        "ssd_scan (SSD wgmma: shared memory attribute)", layer);
  // Three blocks per multiprocessor need the largest shared-memory carveout.
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared),
        "ssd_scan (SSD wgmma: carveout attribute)", layer);
  const dim3 grid(static_cast<unsigned>(H), static_cast<unsigned>(ng));
  kernel<<<grid, kThreads, smem, stream>>>(x, ldx, delta, A, B, C, ldbc, Dskip, T, static_cast<int>(H),
                                           static_cast<int>(H / G), nch, K, Hg, E, dgroup, y);
  check_launch(kOut ? "ssd_scan (SSD output, wgmma)" : "ssd_scan (SSD chunk states, wgmma)", layer, stream);
  if (kOut) ++g_launches;
}

}  // namespace

bool ssd_wgmma_applies(const uint16_t* x, int64_t ldx, const uint16_t* B, const uint16_t* C, int64_t ldbc, int64_t P,
                       int64_t N, const void* y, int y_elem, int layer) {
#ifndef LATIM_SM90A
  (void)x, (void)ldx, (void)B, (void)C, (void)ldbc, (void)P, (void)N, (void)y, (void)y_elem, (void)layer;
  return false;
#else
  if (P != kP || N != kN || ldx % 8 != 0 || ldbc % 8 != 0) return false;
  const auto addr = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
  if (((addr(x) | addr(B) | addr(C)) & 15) != 0 || addr(y) % (2 * y_elem) != 0) return false;
  if (const char* e = std::getenv("LATIM_SSD_KERNEL"); e && std::strcmp(e, "mma") == 0) return false;
  int dev = 0, major = 0, minor = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice", layer);
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute", layer);
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "cudaDeviceGetAttribute", layer);
  return major == 9 && minor == 0;  // wgmma is sm_90a only
#endif
}

void ssd_states_wgmma(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
                      int64_t ldbc, int64_t T, int64_t H, int64_t G, int64_t nch, int64_t K, int64_t ng, float* E,
                      float* dgroup, cudaStream_t stream, int layer) {
  launch<false, float>(x, ldx, delta, A, B, nullptr, ldbc, nullptr, T, H, G, nch, K, ng, nullptr, E, dgroup, nullptr,
                       stream, layer);
}
void ssd_output_wgmma(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
                      const uint16_t* C, int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t G,
                      int64_t nch, int64_t K, int64_t ng, const float* Hg, float* y, cudaStream_t stream, int layer) {
  launch<true>(x, ldx, delta, A, B, C, ldbc, Dskip, T, H, G, nch, K, ng, Hg, nullptr, nullptr, y, stream, layer);
}
void ssd_output_wgmma(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
                      const uint16_t* C, int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t G,
                      int64_t nch, int64_t K, int64_t ng, const float* Hg, uint16_t* y, cudaStream_t stream,
                      int layer) {
  launch<true>(x, ldx, delta, A, B, C, ldbc, Dskip, T, H, G, nch, K, ng, Hg, nullptr, nullptr, y, stream, layer);
}
int64_t ssd_output_wgmma_launches() { return g_launches.load(); }

}  // namespace latim::cuda
