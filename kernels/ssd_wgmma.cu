// Mamba-2 SSD output pass on Hopper warpgroup products (sm_90a), for bf16 x, B and C with
// head dim 64 and state size 128 (the Mamba-2 shapes). It computes what ssd_tc_kernel<true>
// in ssd_scan.cu computes (see there for the chunked form and the slices, groups and chain
// around it), with the rounding a plain bf16 implementation makes (mamba_ssm's chunked
// kernels): the products take bf16 operands and sum in fp32, so the entering state is
// rounded to bf16 for C·Hᵀ, the decayed and masked C·Bᵀ (M) for M·x, and w_j B_j for the
// state update. Every exponent, the decays, the state itself and y's sums stay fp32.
//
// One warpgroup (128 threads) per (head, group of chunks) walks the group's chunks of 64
// positions, the head's [64 p, 128 n] state in fp32 wgmma accumulators (64 per thread). Per
// chunk:
//   1. x, B and C of the chunk are in shared memory (asynchronous copies issued during the
//      chunk before); x and B are transposed with ldmatrix.trans into the K-major tiles the
//      products read (Xt [p][t], and Bw [n][t] = w_t B[t][n], w_t = exp(L_last - L_t) Δ_t).
//   2. Y = C Hᵀ (m64n64k16, both operands from shared memory: C and the bf16 state copy),
//      while the warps build M = C·Bᵀ ⊙ exp(L_i - L_j) Δ_j (j <= i) from ssd_cb_kernel's
//      tiles, in registers, in the layout of wgmma's A fragment.
//   3. Y = exp(L_i) Y + M x (m64n64k16, A from registers), then the state update
//      H = exp(L_last) H + Xtᵀ... (m64n128k16, A = Xt, B = Bw), both in flight while the
//      epilogue writes y = Y + D x.
//   4. The new state goes to shared memory in bf16 for the next chunk's C Hᵀ.
// All tiles use the 128-byte swizzled K-major layout the descriptors describe (rows of 64
// bf16, 16-byte chunk c of row r at chunk c ^ (r % 8)); the staging copies of x and B use it
// too, which keeps ldmatrix free of bank conflicts.
#include "ssd_wgmma.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "cuda_check.hpp"
#include "device_math.cuh"
#include "wgmma_common.cuh"

namespace latim::cuda {

namespace {

using namespace wgmma;

constexpr int kQ = 64;          // positions per chunk
constexpr int kP = 64;          // head dim
constexpr int kN = 128;         // state size
constexpr int kThreads = 128;   // one warpgroup
constexpr int64_t kTile = int64_t{kN} * kP;
constexpr float kLog2e = 1.4426950408889634f;

// Shared memory, byte offsets from a 1024-aligned base.
constexpr unsigned kOffC = 0;        // C   [2 k-blocks][64 i][64 n]
constexpr unsigned kOffH = 16384;    // H   [2 k-blocks][64 p][64 n], bf16 copy of the state
constexpr unsigned kOffBw = 32768;   // Bw  [128 n][64 t]
constexpr unsigned kOffXt = 49152;   // Xt  [64 p][64 t]
constexpr unsigned kOffBn = 57344;   // B staged as it is: [2 k-blocks][64 t][64 n]
constexpr unsigned kOffXn = 73728;   // x staged as it is: [64 t][64 p]
constexpr unsigned kOffL = 81920;    // L [64], Δ [64], w [64] (fp32)
constexpr int kSmem = static_cast<int>(kOffL) + 3 * kQ * 4 + 1024;  // + slack to align the base

#ifdef LATIM_WGMMA_DEVICE
// d (+)= A B, m64n64k16, A and B from shared memory (K-major descriptors), fp32 accumulators.
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(scale_d));
}
// d (+)= A B, m64n64k16, A from registers (bf16 pairs in the accumulator layout), B from
// shared memory (K-major descriptor), fp32 accumulators.
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}
// d (+)= A B, m64n128k16, A and B from shared memory (K-major descriptors), fp32 accumulators.
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(scale_d));
}
template <int M>
__device__ __forceinline__ void fence_acc(float (&d)[M]) {
#pragma unroll
  for (int k = 0; k < M; ++k) asm volatile("" : "+f"(d[k])::"memory");
}
// 16 bytes global -> shared (dst a shared-space address), or 16 zero bytes where !ok (src is
// then not read).
__device__ __forceinline__ void cp16(unsigned dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
// Four 8 x 8 bf16 matrices, transposed: lanes 8m .. 8m + 7 give the row addresses of matrix
// m; r[m] holds (row 2 (lane % 4), column lane / 4) in its low half and row + 1 in its high.
__device__ __forceinline__ void ldsm_x4_trans(unsigned addr, uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void sts32(unsigned addr, uint32_t v) {
  asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ float lds_bf16(unsigned addr) {
  unsigned short v;
  asm volatile("ld.shared.u16 %0, [%1];\n" : "=h"(v) : "r"(addr) : "memory");
  return bf16_float(v);
}
__device__ __forceinline__ void store_pair(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = make_float2(a, b); }
__device__ __forceinline__ void store_pair(uint16_t* p, float a, float b) {
  *reinterpret_cast<uint32_t*>(p) = pack_bf16x2(a, b);
}
#endif  // LATIM_WGMMA_DEVICE

template <class Y>
__global__ void __launch_bounds__(kThreads, 2)
    ssd_output_wgmma_kernel(const uint16_t* __restrict__ x, int64_t ldx, const float* __restrict__ delta,
                            const float* __restrict__ A, const uint16_t* __restrict__ B,
                            const uint16_t* __restrict__ C, int64_t ldbc, const float* __restrict__ Dskip, int64_t T,
                            int H, int hpg, int64_t nch, int64_t K, const float* __restrict__ Hg,
                            const float* __restrict__ CB, int G, Y* __restrict__ y) {
#ifdef LATIM_WGMMA_DEVICE
  extern __shared__ __align__(1024) uint8_t smem_raw[];
  const unsigned raw = smem_u32(smem_raw);
  const unsigned base = (raw + 1023u) & ~1023u;
  float* const Lsm = reinterpret_cast<float*>(smem_raw + (base - raw) + kOffL);  // L, then Δ, then w
  const unsigned sC = base + kOffC, sH = base + kOffH, sBw = base + kOffBw, sXt = base + kOffXt, sBn = base + kOffBn,
                 sXn = base + kOffXn;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, q = lane & 3;
  const int h = blockIdx.x;
  const int64_t grp = blockIdx.y;
  const int gg = h / hpg;
  const int64_t c0 = grp * K, c1 = min(nch, c0 + K);
  const int64_t D = int64_t{H} * kP;
  const uint16_t* __restrict__ xh = x + int64_t{h} * kP;
  const uint16_t* __restrict__ Bg = B + int64_t{gg} * kN;
  const uint16_t* __restrict__ Cg = C + int64_t{gg} * kN;
  const float a2 = A[h] * kLog2e;
  const float dskip = Dskip[h];
  const int i0 = 16 * warp + g, i1 = i0 + 8;  // this thread's accumulator rows (i for Y, p for H)

  // Asynchronous copies of a chunk's rows (zeros past the slice's end): x into Xn, B into Bn,
  // C into C, as 16-byte chunks (x: 8 per row, B and C: 16 per row in two k-blocks).
  const auto stage_xb = [&](int64_t c) {
    const int64_t t0 = c * kQ;
    const int len = static_cast<int>(min(int64_t{kQ}, T - t0));
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int idx = tid + kThreads * k, r = idx >> 3, ch = idx & 7;
      const bool ok = r < len;
      cp16(sXn + sw128(r, ch), ok ? xh + (t0 + r) * ldx + 8 * ch : xh, ok);
    }
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int idx = tid + kThreads * k, r = idx >> 4, ch = idx & 15;
      const bool ok = r < len;
      cp16(sBn + 8192u * (ch >> 3) + sw128(r, ch & 7), ok ? Bg + (t0 + r) * ldbc + 8 * ch : Bg, ok);
    }
  };
  const auto stage_c = [&](int64_t c) {
    const int64_t t0 = c * kQ;
    const int len = static_cast<int>(min(int64_t{kQ}, T - t0));
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int idx = tid + kThreads * k, r = idx >> 4, ch = idx & 15;
      const bool ok = r < len;
      cp16(sC + 8192u * (ch >> 3) + sw128(r, ch & 7), ok ? Cg + (t0 + r) * ldbc + 8 * ch : Cg, ok);
    }
  };
  // The state's bf16 copy, layout [p][n] in two k-blocks of n: accumulator element 4 nt + e
  // is (p = i0 + 8 (e / 2), n = 8 nt + 2 q + e % 2).
  float hacc[64];
  const auto store_state = [&]() {
#pragma unroll
    for (int nt = 0; nt < 16; ++nt) {
      const unsigned blk = sH + 8192u * (nt >> 3);
      sts32(blk + sw128(i0, nt & 7) + 4 * q, pack_bf16x2(hacc[4 * nt], hacc[4 * nt + 1]));
      sts32(blk + sw128(i1, nt & 7) + 4 * q, pack_bf16x2(hacc[4 * nt + 2], hacc[4 * nt + 3]));
    }
  };
  {
    const float* Gp = Hg + (grp * H + h) * kTile;  // layout [n][p]
#pragma unroll
    for (int nt = 0; nt < 16; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) hacc[4 * nt + e] = Gp[(8 * nt + 2 * q + (e & 1)) * kP + (e < 2 ? i0 : i1)];
  }
  store_state();
  stage_xb(c0);
  stage_c(c0);
  cp_commit();
  // Δ of the next chunk, loaded a chunk ahead by warp 0 (lane l: positions 2l, 2l + 1).
  float dn0 = 0.0f, dn1 = 0.0f;
  const auto load_dt = [&](int64_t c) {
    const int64_t t0 = c * kQ;
    const int64_t j0 = t0 + 2 * lane, j1 = j0 + 1;
    dn0 = j0 < T ? delta[j0 * H + h] : 0.0f;
    dn1 = j1 < T ? delta[j1 * H + h] : 0.0f;
  };
  if (warp == 0) load_dt(c0);

  float yacc[32];
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t t0 = c * kQ;
    const int len = static_cast<int>(min(int64_t{kQ}, T - t0));
    const bool last = c + 1 == c1;  // no state needed after the group's last chunk
    if (warp == 0) {  // L (log2 units, inclusive), Δ and the state weights w of the chunk
      const float d0 = dn0, d1 = dn1;
      if (!last) load_dt(c + 1);
      float L0, L1;
      warp_pair_cumsum(d0 * a2, d1 * a2, lane, L0, L1);
      const float Ll = __shfl_sync(0xffffffffu, L1, 31);
      reinterpret_cast<float2*>(Lsm)[lane] = make_float2(L0, L1);
      reinterpret_cast<float2*>(Lsm + kQ)[lane] = make_float2(d0, d1);
      reinterpret_cast<float2*>(Lsm + 2 * kQ)[lane] =
          make_float2(exp2f(fminf(Ll - L0, 0.0f)) * d0, exp2f(fminf(Ll - L1, 0.0f)) * d1);
    }
    cp_wait_all();
    fence_proxy_async();  // the copies and the state copy -> visible to the products
    __syncthreads();      // S1: x, B, C, L, Δ, w and the state copy of this chunk are in place

    // x -> Xt [p][t]: warp w transposes the 8 x 8 blocks 16 w .. 16 w + 15 (block b: rows
    // 8 (b / 8) of t, columns 8 (b % 8) of p).
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      uint32_t r[4];
      const int b = 16 * warp + 4 * k + (lane >> 3);
      ldsm_x4_trans(sXn + sw128(8 * (b >> 3) + (lane & 7), b & 7), r);
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        const int bm = 16 * warp + 4 * k + m;
        sts32(sXt + sw128(8 * (bm & 7) + (lane >> 2), bm >> 3) + 4 * q, r[m]);
      }
    }
    if (!last) {  // B -> Bw [n][t] = w_t B[t][n] in bf16: blocks 32 w .. 32 w + 31
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        uint32_t r[4];
        const int b = 32 * warp + 4 * k + (lane >> 3), bb = b & 63;
        ldsm_x4_trans(sBn + 8192u * (b >> 6) + sw128(8 * (bb >> 3) + (lane & 7), bb & 7), r);
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          const int bm = 32 * warp + 4 * k + m, bbm = bm & 63, rb = bbm >> 3;
          const int n = 64 * (bm >> 6) + 8 * (bbm & 7) + (lane >> 2);
          const float2 w = reinterpret_cast<const float2*>(Lsm + 2 * kQ)[4 * rb + q];  // t = 8 rb + 2 q, + 1
          const float2 v = widen_bf16x2(r[m]);
          sts32(sBw + sw128(n, rb) + 4 * q, pack_bf16x2(w.x * v.x, w.y * v.y));
        }
      }
    }
    // What this thread needs of L and Δ, read before S3 (warp 0 rewrites them for the next chunk).
    const float Li0 = Lsm[i0], Li1 = Lsm[i1], Llast = Lsm[kQ - 1];
    fence_proxy_async();
    __syncthreads();  // S2: Xt and Bw are in place; the staging tiles are free
    if (!last) stage_xb(c + 1);

    // Y = C Hᵀ: k over n in two k-blocks of 64.
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
      const unsigned off = 8192u * (kk >> 2) + 32u * (kk & 3);
      wgmma_m64n64k16_ss(yacc, sw128_desc(sC + off), sw128_desc(sH + off), kk > 0);
    }
    wgmma_commit();
    // M in the A-fragment layout: for k step kk, a[0] (row i0, columns 16 kk + 2q, + 1),
    // a[1] (row i1, same columns), a[2] and a[3] the same 8 columns further on. Warp w's rows
    // are 16 w .. 16 w + 15, so the steps kk > w are zero and kk = w holds the diagonal.
    uint32_t ma[4][4];
    {
      const float* cb = CB + (c * G + gg) * (kQ * kQ);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int j = 16 * kk + 8 * half + 2 * q;
          if (kk > warp) {
            ma[kk][2 * half] = ma[kk][2 * half + 1] = 0u;
            continue;
          }
          const float2 u = *reinterpret_cast<const float2*>(cb + i0 * kQ + j);
          const float2 v = *reinterpret_cast<const float2*>(cb + i1 * kQ + j);
          const float2 Lj = reinterpret_cast<const float2*>(Lsm)[j >> 1];
          const float2 dj = reinterpret_cast<const float2*>(Lsm + kQ)[j >> 1];
          const float m00 = j <= i0 ? u.x * exp2_ftz(fminf(Li0 - Lj.x, 0.0f)) * dj.x : 0.0f;
          const float m01 = j + 1 <= i0 ? u.y * exp2_ftz(fminf(Li0 - Lj.y, 0.0f)) * dj.y : 0.0f;
          const float m10 = j <= i1 ? v.x * exp2_ftz(fminf(Li1 - Lj.x, 0.0f)) * dj.x : 0.0f;
          const float m11 = j + 1 <= i1 ? v.y * exp2_ftz(fminf(Li1 - Lj.y, 0.0f)) * dj.y : 0.0f;
          ma[kk][2 * half] = pack_bf16x2(m00, m01);
          ma[kk][2 * half + 1] = pack_bf16x2(m10, m11);
        }
      }
    }
    wgmma_wait<0>();
    fence_acc(yacc);
    __syncthreads();  // S3: every warp is done with C and the state copy
    if (!last) stage_c(c + 1);
    cp_commit();
    {
      const float e0 = exp2_ftz(Li0), e1 = exp2_ftz(Li1);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        yacc[4 * nt] *= e0;
        yacc[4 * nt + 1] *= e0;
        yacc[4 * nt + 2] *= e1;
        yacc[4 * nt + 3] *= e1;
      }
    }
    if (!last) {
      const float dc = exp2f(Llast);
#pragma unroll
      for (int k = 0; k < 64; ++k) hacc[k] *= dc;
    }
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wgmma_m64n64k16_rs(yacc, ma[kk], sw128_desc(sXt + 32u * kk), 1);
    wgmma_commit();
    if (!last) {  // H = exp(L_last) H + Σ_t x_t (w_t B_t)ᵀ: A = Xt (rows p, k over t), B = Bw
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma_m64n128k16_ss(hacc, sw128_desc(sXt + 32u * kk), sw128_desc(sBw + 32u * kk), 1);
      wgmma_commit();
      wgmma_wait<1>();
    } else {
      wgmma_wait<0>();
    }
    fence_acc(yacc);
    // y = Y + D x; x from Xt (element (p, t) at row p, chunk t / 8).
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int i = half ? i1 : i0;
      if (i >= len) continue;
      Y* yt = y + (t0 + i) * D + int64_t{h} * kP;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        const int p = 8 * nt + 2 * q;
        const float x0 = lds_bf16(sXt + sw128(p, i >> 3) + 2 * (i & 7));
        const float x1 = lds_bf16(sXt + sw128(p + 1, i >> 3) + 2 * (i & 7));
        store_pair(yt + p, fmaf(dskip, x0, yacc[4 * nt + 2 * half]), fmaf(dskip, x1, yacc[4 * nt + 2 * half + 1]));
      }
    }
    if (!last) {
      wgmma_wait<0>();
      fence_acc(hacc);
      store_state();  // S1 of the next chunk orders it before that chunk's C Hᵀ
    }
  }
#endif  // LATIM_WGMMA_DEVICE
}

std::atomic<int64_t> g_launches{0};

template <class Y>
bool launch(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B, const uint16_t* C,
            int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, int64_t nch,
            int64_t K, int64_t ng, const float* Hg, const float* CB, Y* y, cudaStream_t stream, int layer) {
#ifndef LATIM_SM90A
  (void)x, (void)ldx, (void)delta, (void)A, (void)B, (void)C, (void)ldbc, (void)Dskip, (void)T, (void)H, (void)P,
      (void)N, (void)G, (void)nch, (void)K, (void)ng, (void)Hg, (void)CB, (void)y, (void)stream, (void)layer;
  return false;
#else
  if (P != kP || N != kN || ldx % 8 != 0 || ldbc % 8 != 0) return false;
  const auto addr = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
  if (((addr(x) | addr(B) | addr(C)) & 15) != 0 || (addr(y) & (2 * sizeof(Y) - 1)) != 0) return false;
  if (const char* e = std::getenv("LATIM_SSD_KERNEL"); e && std::strcmp(e, "mma") == 0) return false;
  int dev = 0, major = 0, minor = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice", layer);
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute", layer);
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "cudaDeviceGetAttribute", layer);
  if (major != 9 || minor != 0) return false;  // wgmma is sm_90a only
  check(cudaFuncSetAttribute(ssd_output_wgmma_kernel<Y>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem),
        "ssd_scan (SSD output, wgmma: shared memory attribute)", layer);
  const dim3 grid(static_cast<unsigned>(H), static_cast<unsigned>(ng));
  ssd_output_wgmma_kernel<Y><<<grid, kThreads, kSmem, stream>>>(x, ldx, delta, A, B, C, ldbc, Dskip, T,
                                                                static_cast<int>(H), static_cast<int>(H / G), nch, K,
                                                                Hg, CB, static_cast<int>(G), y);
  check_launch("ssd_scan (SSD output, wgmma)", layer, stream);
  ++g_launches;
  return true;
#endif
}

}  // namespace

bool ssd_output_wgmma(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
                      const uint16_t* C, int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N,
                      int64_t G, int64_t nch, int64_t K, int64_t ng, const float* Hg, const float* CB, float* y,
                      cudaStream_t stream, int layer) {
  return launch(x, ldx, delta, A, B, C, ldbc, Dskip, T, H, P, N, G, nch, K, ng, Hg, CB, y, stream, layer);
}
bool ssd_output_wgmma(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
                      const uint16_t* C, int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N,
                      int64_t G, int64_t nch, int64_t K, int64_t ng, const float* Hg, const float* CB, uint16_t* y,
                      cudaStream_t stream, int layer) {
  return launch(x, ldx, delta, A, B, C, ldbc, Dskip, T, H, P, N, G, nch, K, ng, Hg, CB, y, stream, layer);
}
int64_t ssd_output_wgmma_launches() { return g_launches.load(); }

}  // namespace latim::cuda
