// Mamba-2 scan. Two paths, both fp32 on CUDA cores (and a tf32 tensor-core variant of the
// chunked one for the tf32 and bf16 modes, described at ssd_tc_kernel below):
//
// Chunked SSD form (P <= 64, N <= 128, the Mamba-2 shapes; smaller P, N are zero-padded).
// Chunks of kQ = 64 positions, K (2..16, see plan()) consecutive chunks per group, the sequence
// cut into slices of kSliceChunks chunks (the wgmma passes: kWgSliceChunks) so that the work
// buffer stays bounded for any T. Per slice, three launches:
//  1. ssd_state_kernel, one block per (head, group): walks the group's chunks keeping the
//     head's [P, N] state in registers; per chunk state = exp(L_last) state + X_w^T B (an fp32
//     register-tiled product over the chunk's positions, X_w[j] = exp(L_last - L_j) Δ_j x_j),
//     and writes that group-local state after every chunk (E), plus the decay products.
//  2. ssd_group_chain_kernel: the sequential pass over groups (entering state of each group,
//     the carry to the next slice, h_final).
//  3. ssd_output_kernel, one block per (chunk, batch of heads of one group): C Bᵀ of the chunk
//     once (kept in registers), then per head
//        y = exp(L_i) C_i H_cᵀ + Σ_{j<=i} C_i·B_j exp(L_i - L_j) Δ_j x_j + D x_i,
//     with H_c = E_{c-1} + (decay since the group start) H_group assembled in shared memory.
// L is the chunk-local inclusive prefix sum of Δ A (log2 units); every exponent is <= 0.
//
// Recurrence (any other shape): a thread holds 16 states of two (head, p) rows: states
// n = 4 (slice + nsp kq) + e, so the `nsp` threads of a row pair (consecutive lanes) read
// consecutive 16-byte words of the staged B and C (one wavefront per load, shared by both rows),
// and reduce y with shuffles. B, C and the step decays of a stretch of positions are staged in
// shared memory; x of the next step is loaded one step ahead. Chunk states, chain, output pass.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cp_async.cuh"
#include "cuda_check.hpp"
#include "device_math.cuh"
#include "mma_sync.cuh"
#include "ssd_scan.hpp"
#include "ssd_wgmma.hpp"

namespace latim::cuda {

namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kFull = 0xffffffffu;

// ---------------------------------------------------------------------------------------------
// Chunked SSD path
// ---------------------------------------------------------------------------------------------

constexpr int kQ = 64;                            // positions per chunk
constexpr int kPP = 64;                           // head dim, padded
constexpr int kNP = 128;                          // state size, padded
constexpr int kThreads = 256;                     // both tiled kernels
constexpr int kCS = kQ + 4;                       // row stride of the transposed C and B tiles
constexpr int64_t kTile = int64_t{kNP} * kPP;     // floats of one padded state, layout [n][p]
constexpr int64_t kSliceChunks = 512;             // chunks per slice (32768 positions)
// Chunks per slice of the wgmma passes (262144 positions), whose chunk states take a slot per
// group, not per chunk: 256 groups of 16 chunks, within the work buffer of the other paths
// (work_layout).
constexpr int64_t kWgSliceChunks = 4096;
constexpr int kMaxHeadBatch = 8;                  // heads per output block
constexpr int kStateSmem = (kQ * kPP + kQ * kNP + kQ) * 4;
constexpr int kOutputSmem = (2 * kNP * kCS + kQ * kPP + kQ * kQ + kQ) * 4;
static_assert(kQ == 64 && kPP == 64 && kNP == 128 && kThreads == 256, "the thread maps below assume these");

struct Plan {
  int64_t nch;  // chunks in the slice
  int64_t K;    // chunks per group
  int64_t ng;   // groups launched (ceil(nch / K))
  int64_t cap;  // bound on ng, nondecreasing in the slice length (sizes the work buffer)
};

// About `blocks` (1536) state blocks per slice, groups of 2..16 chunks. The wgmma passes take
// 768: they keep more of a group's work in flight, and half the groups halve the group states
// that go through memory (about 50 MB per slice and way at 1536).
Plan plan(int64_t Ts, int64_t H, int64_t blocks = 1536) {
  Plan p{};
  p.nch = (Ts + kQ - 1) / kQ;
  p.cap = std::max<int64_t>(1, std::min((p.nch + 1) / 2, std::max((p.nch + 15) / 16, (blocks + H - 1) / H)));
  p.K = (p.nch + p.cap - 1) / p.cap;
  p.ng = (p.nch + p.K - 1) / p.K;
  return p;
}

bool fast_path(int64_t P, int64_t N) { return P >= 1 && P <= kPP && N >= 1 && N <= kNP; }

// Inclusive prefix sums of Δ a2 over a chunk (Δ in dts[0..kQ), zero past the chunk's end),
// computed by one warp: lane l returns positions 2l (L0) and 2l + 1 (L1).
__device__ __forceinline__ void chunk_cumsum(const float* dts, float a2, int lane, float& L0, float& L1) {
  const float2 d = reinterpret_cast<const float2*>(dts)[lane];
  warp_pair_cumsum(d.x * a2, d.y * a2, lane, L0, L1);
}

// The value of position q from a per-lane pair (positions 2l, 2l + 1); all lanes must call.
__device__ __forceinline__ float pick(float v0, float v1, int q) {
  const float a = __shfl_sync(kFull, v0, q >> 1), b = __shfl_sync(kFull, v1, q >> 1);
  return (q & 1) ? b : a;
}

__device__ __forceinline__ float4 ld4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// p[off] where ok, else 0; the load is always issued (from p[0] where !ok) so that unrolled
// loops keep several loads in flight without branches.
__device__ __forceinline__ float ld_or_zero(const float* __restrict__ p, int64_t off, bool ok) {
  const float v = __ldg(p + (ok ? off : 0));
  return ok ? v : 0.0f;
}

// One block per (head, group of K chunks). Thread (warp w, lane l) owns the state rows
// p0..p0+3 (p0 = 32 (w % 2) + 4 (l % 8)) and columns n0..n0+3, n0+16..n0+19
// (n0 = 32 (w / 2) + 4 (l / 8)).
__global__ void __launch_bounds__(kThreads, 2)
    ssd_state_kernel(const float* __restrict__ x, int64_t ldx, const float* __restrict__ delta,
                     const float* __restrict__ A, const float* __restrict__ B, int64_t ldbc, int64_t T, int H, int P,
                     int N, int hpg, int64_t nch, int64_t K, float* __restrict__ E, float* __restrict__ dcorr,
                     float* __restrict__ dgroup) {
  extern __shared__ __align__(16) float smem[];
  float* Xs = smem;               // [kQ][kPP]  Δ-and-decay weighted x
  float* Bs = Xs + kQ * kPP;      // [kQ][kNP]
  float* dts = Bs + kQ * kNP;     // [kQ]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int h = blockIdx.x;
  const int64_t grp = blockIdx.y;
  const int g = h / hpg;
  const int64_t c0 = grp * K, c1 = min(nch, c0 + K);
  const int p0 = 32 * (warp & 1) + 4 * (lane & 7);
  const int n0 = 32 * (warp >> 1) + 4 * (lane >> 3);
  const float a2 = A[h] * kLog2e;
  float st[4][8];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int e = 0; e < 8; ++e) st[r][e] = 0.0f;
  float run = 1.0f;  // product of the chunk decays of the group so far
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t t0 = c * kQ;
    const int len = static_cast<int>(min(int64_t{kQ}, T - t0));
    __syncthreads();  // the previous chunk's product is done with Xs, Bs, dts
    // x, B and Δ of the chunk into shared memory; x is scaled by its weight below.
    for (int it0 = 0; it0 < kQ * kPP / kThreads; it0 += 8) {
      float v[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const int idx = tid + kThreads * (it0 + k), j = idx / kPP, p = idx % kPP;
        v[k] = ld_or_zero(x, (t0 + j) * ldx + int64_t{h} * P + p, j < len && p < P);
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) Xs[tid + kThreads * (it0 + k)] = v[k];
    }
    for (int it0 = 0; it0 < kQ * kNP / kThreads; it0 += 8) {
      float v[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const int idx = tid + kThreads * (it0 + k), j = idx / kNP, n = idx % kNP;
        v[k] = ld_or_zero(B, (t0 + j) * ldbc + int64_t{g} * N + n, j < len && n < N);
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) Bs[tid + kThreads * (it0 + k)] = v[k];
    }
    if (tid < kQ) dts[tid] = (tid < len) ? delta[(t0 + tid) * H + h] : 0.0f;
    __syncthreads();
    float L0, L1;
    chunk_cumsum(dts, a2, lane, L0, L1);
    const float Llast = __shfl_sync(kFull, L1, 31);
    const float2 d2 = reinterpret_cast<const float2*>(dts)[lane];
    const float w0 = exp2f(fminf(Llast - L0, 0.0f)) * d2.x, w1 = exp2f(fminf(Llast - L1, 0.0f)) * d2.y;
#pragma unroll
    for (int it = 0; it < kQ * kPP / kThreads; ++it) {  // the elements this thread stored
      const int idx = tid + kThreads * it, j = idx / kPP;  // j is uniform over the warp
      Xs[idx] *= pick(w0, w1, j);
    }
    const float dc = exp2f(Llast);
    __syncthreads();
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int e = 0; e < 8; ++e) st[r][e] *= dc;
#pragma unroll 4
    for (int j = 0; j < len; ++j) {
      const float4 a = ld4(Xs + j * kPP + p0);
      const float4 b0 = ld4(Bs + j * kNP + n0), b1 = ld4(Bs + j * kNP + n0 + 16);
      const float av[4] = {a.x, a.y, a.z, a.w};
      const float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int e = 0; e < 8; ++e) st[r][e] = fmaf(av[r], bv[e], st[r][e]);
    }
    float* Ec = E + (c * H + h) * kTile;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int n = n0 + (e & 3) + 16 * (e >> 2);
      *reinterpret_cast<float4*>(Ec + n * kPP + p0) = make_float4(st[0][e], st[1][e], st[2][e], st[3][e]);
    }
    if (tid == 0) dcorr[c * H + h] = run;
    run *= dc;
  }
  if (tid == 0) dgroup[grp * H + h] = run;
}

// One thread per 4 consecutive p of one (head, n) of the padded state: the entering state of
// each group, then the carry (the state after the slice) and, on the last slice, h_final.
// A group's local state is in E's slot of its last chunk, or (e_by_group, the wgmma passes)
// in the slot of the group.
__global__ void ssd_group_chain_kernel(int64_t per4, int H, int P, int N, int64_t nch, int64_t K, int64_t ng,
                                       const float4* __restrict__ E, bool e_by_group, const float* __restrict__ dgroup,
                                       float4* __restrict__ Hg, float4* __restrict__ carry, bool from_carry,
                                       float* __restrict__ h_final) {
  const int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (k >= per4) return;
  constexpr int64_t kTile4 = kTile / 4;
  const int64_t h = k / kTile4;
  float4 cur = from_carry ? carry[k] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
  for (int64_t gi = 0; gi < ng; ++gi) {
    Hg[gi * per4 + k] = cur;
    const int64_t slot = e_by_group ? gi : min(nch, (gi + 1) * K) - 1;  // the group's, or its last chunk's
    const float4 e = E[slot * per4 + k];
    const float d = dgroup[gi * H + h];
    cur = make_float4(fmaf(d, cur.x, e.x), fmaf(d, cur.y, e.y), fmaf(d, cur.z, e.z), fmaf(d, cur.w, e.w));
  }
  carry[k] = cur;
  if (h_final) {
    const int64_t rem = k % kTile4;
    const int n = static_cast<int>(rem / (kPP / 4)), p = static_cast<int>(rem % (kPP / 4)) * 4;
    const float v[4] = {cur.x, cur.y, cur.z, cur.w};
    if (n < N)
      for (int e = 0; e < 4; ++e)
        if (p + e < P) h_final[(h * P + p + e) * N + n] = v[e];
  }
}

// One block per (chunk, batch of heads of one group). Thread (warp w, lane l) owns the output
// rows i0..i0+3 (i0 = 16 (w / 2) + 4 (l / 8)) and columns p0..p0+3 (p0 = 32 (w % 2) + 4 (l % 8));
// the same map over (i, j) gives its 4 x 4 tile of C Bᵀ.
__global__ void __launch_bounds__(kThreads, 2)
    ssd_output_kernel(const float* __restrict__ x, int64_t ldx, const float* __restrict__ delta,
                      const float* __restrict__ A, const float* __restrict__ B, const float* __restrict__ C,
                      int64_t ldbc, const float* __restrict__ Dskip, int64_t T, int H, int P, int N, int hpg,
                      int nbatch, int HB, int64_t K, const float* __restrict__ E, const float* __restrict__ dcorr,
                      const float* __restrict__ Hg, float* __restrict__ y, bool y_vec) {
  extern __shared__ __align__(16) float smem[];
  float* Ct = smem;               // [kNP][kCS]  C of the chunk, transposed
  float* HBs = Ct + kNP * kCS;    // [kNP][kCS]  B transposed (prologue), then the state [kNP][kPP]
  float* Xs = HBs + kNP * kCS;    // [kQ][kPP]   raw x
  float* Mt = Xs + kQ * kPP;      // [kQ][kQ]    Mt[j][i] = C_i·B_j exp(L_i - L_j) Δ_j, j <= i
  float* dts = Mt + kQ * kQ;      // [kQ]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t c = blockIdx.y;
  const int gg = blockIdx.x / nbatch, b = blockIdx.x % nbatch;
  const int h_begin = gg * hpg + b * HB, h_end = min(gg * hpg + hpg, h_begin + HB);
  const int64_t t0 = c * kQ;
  const int len = static_cast<int>(min(int64_t{kQ}, T - t0));
  const int wi = warp >> 1, wp = warp & 1;
  const int i0 = 16 * wi + 4 * (lane >> 3), p0 = 32 * wp + 4 * (lane & 7);
  const int nk = (N + 3) & ~3;

  // C and B of the chunk, transposed: 8 consecutive n of 4 positions per warp and load, so the
  // global reads are 32-byte runs and the stores (stride kCS = 4 mod 32 banks) conflict-free.
  auto stage_t = [&](const float* __restrict__ src, float* dst) {
    for (int it0 = 0; it0 < kQ * kNP / kThreads; it0 += 8) {
      float v[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const int idx = tid + kThreads * (it0 + k);
        const int n = ((idx >> 5) & 15) * 8 + (idx & 7), i = (idx >> 9) * 4 + ((idx >> 3) & 3);
        v[k] = ld_or_zero(src, (t0 + i) * ldbc + int64_t{gg} * N + n, i < len && n < N);
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const int idx = tid + kThreads * (it0 + k);
        const int n = ((idx >> 5) & 15) * 8 + (idx & 7), i = (idx >> 9) * 4 + ((idx >> 3) & 3);
        dst[n * kCS + i] = v[k];
      }
    }
  };
  stage_t(C, Ct);
  stage_t(B, HBs);
  __syncthreads();
  float cb[4][4];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int e = 0; e < 4; ++e) cb[r][e] = 0.0f;
  if (wp == 0 || wi >= 2) {  // warp tiles entirely above the diagonal stay zero
#pragma unroll 4
    for (int n = 0; n < nk; ++n) {
      const float4 a = ld4(Ct + n * kCS + i0), bb = ld4(HBs + n * kCS + p0);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {bb.x, bb.y, bb.z, bb.w};
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int e = 0; e < 4; ++e) cb[r][e] = fmaf(av[r], bv[e], cb[r][e]);
    }
  }

  const bool first = c % K == 0;
  const int64_t grp = c / K;
  const int64_t D = int64_t{H} * P;
  for (int h = h_begin; h < h_end; ++h) {
    __syncthreads();  // done with B (prologue) or with the previous head's Xs, Mt, state, dts
    // The entering state H_c = E_{c-1} + dcorr H_group (padded [kNP][kPP]), x and Δ.
    const float dc = dcorr[c * H + h];
    const float4* Gp = reinterpret_cast<const float4*>(Hg + (grp * H + h) * kTile);
    const float4* Ep = reinterpret_cast<const float4*>(E + ((first ? c : c - 1) * H + h) * kTile);
#pragma unroll 4
    for (int it = 0; it < kTile / 4 / kThreads; ++it) {
      const int idx = tid + kThreads * it;
      const float4 gv = Gp[idx];
      const float4 ev = first ? make_float4(0.0f, 0.0f, 0.0f, 0.0f) : Ep[idx];
      reinterpret_cast<float4*>(HBs)[idx] =
          make_float4(fmaf(dc, gv.x, ev.x), fmaf(dc, gv.y, ev.y), fmaf(dc, gv.z, ev.z), fmaf(dc, gv.w, ev.w));
    }
    for (int it0 = 0; it0 < kQ * kPP / kThreads; it0 += 8) {
      float v[8];
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const int idx = tid + kThreads * (it0 + k), j = idx / kPP, p = idx % kPP;
        v[k] = ld_or_zero(x, (t0 + j) * ldx + int64_t{h} * P + p, j < len && p < P);
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) Xs[tid + kThreads * (it0 + k)] = v[k];
    }
    if (tid < kQ) dts[tid] = (tid < len) ? delta[(t0 + tid) * H + h] : 0.0f;
    __syncthreads();

    // Decays (every warp runs the 64-position scan) and the masked matrix.
    float L0, L1;
    chunk_cumsum(dts, A[h] * kLog2e, lane, L0, L1);
    float Li[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) Li[r] = pick(L0, L1, i0 + r);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = p0 + e;
      const float Lj = pick(L0, L1, j), dj = dts[j];
      float m[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) m[r] = (j <= i0 + r) ? cb[r][e] * exp2f(fminf(Li[r] - Lj, 0.0f)) * dj : 0.0f;
      *reinterpret_cast<float4*>(Mt + j * kQ + i0) = make_float4(m[0], m[1], m[2], m[3]);
    }
    __syncthreads();

    // y = exp(L_i) C_i H_cᵀ + M X + D x.
    float acc[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[r][e] = 0.0f;
#pragma unroll 4
    for (int n = 0; n < nk; ++n) {
      const float4 a = ld4(Ct + n * kCS + i0), bb = ld4(HBs + n * kPP + p0);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {bb.x, bb.y, bb.z, bb.w};
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[r][e] = fmaf(av[r], bv[e], acc[r][e]);
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const float s = exp2f(Li[r]);
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[r][e] *= s;
    }
    const int jend = min(16 * wi + 16, len);  // M is zero above the diagonal and past the chunk
#pragma unroll 4
    for (int j = 0; j < jend; ++j) {
      const float4 a = ld4(Mt + j * kQ + i0), bb = ld4(Xs + j * kPP + p0);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {bb.x, bb.y, bb.z, bb.w};
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[r][e] = fmaf(av[r], bv[e], acc[r][e]);
    }
    const float dskip = Dskip[h];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int i = i0 + r;
      if (i >= len) break;
      const float4 xv = ld4(Xs + i * kPP + p0);
      const float xs[4] = {xv.x, xv.y, xv.z, xv.w};
      float* yt = y + (t0 + i) * D + int64_t{h} * P + p0;
      if (y_vec) {  // P % 4 == 0 and y 16-byte aligned: whole float4 inside the head's row
        if (p0 < P)
          *reinterpret_cast<float4*>(yt) = make_float4(fmaf(dskip, xs[0], acc[r][0]), fmaf(dskip, xs[1], acc[r][1]),
                                                       fmaf(dskip, xs[2], acc[r][2]), fmaf(dskip, xs[3], acc[r][3]));
      } else {
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (p0 + e < P) yt[e] = fmaf(dskip, xs[e], acc[r][e]);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Chunked SSD path on tensor cores (tf32 and bf16 modes): the matrix products through
// mma.sync.m16n8k8 with tf32 operands (rounded to nearest) and fp32 sums; decays, the causal
// mask and every exponent stay fp32 (exponents <= 0), as above. Per slice: ssd_tc_kernel<false>
// (group-local chunk states, only the group's last one stored), ssd_group_chain_kernel (entering
// state of every group), ssd_cb_kernel (C·Bᵀ of every chunk, once per group: it does not depend
// on the head), ssd_tc_kernel<true> (walks each group again from its entering state,
// recomputing the chunk states, and writes y), so the per-chunk states never go to memory.
// ---------------------------------------------------------------------------------------------

// Shared tiles are unpadded and swizzled: element (r, c) of a tile of `width` floats per row
// sits at r width + (c ^ 8 s(r)), s(r) = (r ^ (r >> 2)) & 3, which keeps pairs (2k, 2k + 1)
// and each aligned run of 8 columns together. With it the fragment loads below are free of
// bank conflicts: 64-bit loads of rows b + g (any 4 consecutive rows from a multiple of 4 give
// 4 distinct s) and columns 8s + 2q, scalar loads of rows 8s + q (or + 4) and columns b + g,
// scalar loads of rows b + 2q (or + 1), and the 64-bit state stores of rows b + 2g (or + 1).
__device__ __forceinline__ int swz(int r, int c, int width) { return r * width + (c ^ (((r ^ (r >> 2)) & 3) << 3)); }

// fp32 -> tf32, round to nearest (one F2FP instruction on sm_90; three integer ops for .rna).
__device__ __forceinline__ uint32_t to_tf32(float v) {
  uint32_t r;
#if __CUDA_ARCH__ >= 900
  asm("cvt.rn.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
#else
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
#endif
  return r;
}

__device__ __forceinline__ float tf32f(float v) { return __uint_as_float(to_tf32(v)); }

__device__ __forceinline__ float2 lds2(const float* base, int off) {
  return *reinterpret_cast<const float2*>(base + off);
}
// The same at a byte offset, and a float at a byte offset.
__device__ __forceinline__ float2 lds2b(const float* base, int boff) {
  return *reinterpret_cast<const float2*>(reinterpret_cast<const char*>(base) + boff);
}
__device__ __forceinline__ float ldsb(const float* base, int boff) {
  return *reinterpret_cast<const float*>(reinterpret_cast<const char*>(base) + boff);
}
template <class V>
__device__ __forceinline__ V* atb(float* base, int boff) {
  return reinterpret_cast<V*>(reinterpret_cast<char*>(base) + boff);
}

constexpr int kTcStateSmem = (kQ * kNP + kQ * kPP + 3 * kQ) * 4;               // Bs, Xs, Ls, ws, dts
constexpr int kTcOutputSmem = kTcStateSmem + (kQ * kNP + kPP * kNP) * 4;      // + Cs, Hs: 115456 bytes

// One block per (head, group of K chunks), walking the group's chunks with the head's padded
// [P, N] state in mma accumulators: state = exp(L_last) state + Xᵀ (w ⊙ B), w_j =
// exp(L_last - L_j) Δ_j. Warp w holds the state rows p = 32 (w % 2) + [0, 32) and columns
// n = 32 (w / 2) + [0, 32): per k step (positions 8s..8s+7, k q -> j = 8s + q, k q + 4 -> 8s + q + 4)
// and row tile mt, the A fragment is (w ⊙ x)ᵀ with rows m g -> p 2g, m g + 8 -> p 2g + 1 (so
// {a0, a1} and {a2, a3} are 64-bit loads of x), the B fragment B[j][n] (b0, b1 scalar loads);
// accumulator (mt, nt) holds p = p0 + 16 mt + 2g + {0 (c0, c1), 1 (c2, c3)},
// n = n0 + 8 nt + 2q + {0 (c0, c2), 1 (c1, c3)}.
//  - kOut = false (chunk states): starts from zero, writes the group-local state after the
//    group's last chunk into E (slot of that chunk, layout [n][p]) and the group's decay.
//  - kOut = true (outputs): starts from the group's entering state Hg and per chunk computes
//        y = exp(L_i) C_i H_cᵀ + Σ_{j<=i} C_i·B_j exp(L_i - L_j) Δ_j x_j + D x_i.
//    Warp w computes the output rows of the row tiles w % 2 and 3 - w % 2 (16 rows each: a
//    short and a long share of the masked products) and the columns p = 16 (w / 2) + [0, 16):
//    C H_cᵀ with k over n (k q -> n 8s + 2q, k q + 4 -> 8s + 2q + 1: 64-bit loads of C rows
//    and of the state copy Hs rows). The 20 tiles of C Bᵀ on or below the diagonal blocks come
//    from ssd_cb_kernel (once per chunk and group, for all of the group's heads), spread over
//    the warps, masked and decayed, and stored over Hs as M; with the same k map over j its
//    rows are the A fragment of M x.
//    B and C are rounded to tf32 once in shared memory, x at use (the skip term takes it exact).
template <bool kOut, class In, class Y = float>  // Y: y in fp32, or bf16 bits (the bf16 mode's untraced layers)
__global__ void __launch_bounds__(kThreads, kOut ? 2 : 3)
    ssd_tc_kernel(const In* __restrict__ x, int64_t ldx, const float* __restrict__ delta,
                  const float* __restrict__ A, const In* __restrict__ B, const In* __restrict__ C, int64_t ldbc,
                  const float* __restrict__ Dskip, int64_t T, int H, int P, int N, int hpg, int64_t nch, int64_t K,
                  float* __restrict__ E, float* __restrict__ dgroup, const float* __restrict__ Hg,
                  const float* __restrict__ CB, int G, Y* __restrict__ y, bool vec, bool y_vec) {
  extern __shared__ __align__(16) float smem[];
  float* Bs = smem;             // [kQ][kNP]  B, tf32
  float* Xs = Bs + kQ * kNP;    // [kQ][kPP]  x, fp32 (kOut); tf32 of w_j x_j (chunk states)
  float* Ls = Xs + kQ * kPP;    // [kQ]       chunk-local inclusive prefix sums of Δ A (log2) (kOut)
  float* ws = Ls + kQ;          // [kQ]       state weights w_j = exp2(L_last - L_j) Δ_j (kOut)
  float* dts = ws + kQ;         // [kQ]       Δ (kOut)
  float* Cs = dts + kQ;         // [kQ][kNP]  C, tf32 (kOut)
  float* Hs = Cs + kQ * kNP;    // [kPP][kNP] entering state, tf32 (kOut)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, q = lane & 3;
  const int h = blockIdx.x;
  const int64_t grp = blockIdx.y;
  const int gg = h / hpg;
  const In* __restrict__ xh = x + int64_t{h} * P;  // this head's columns of x, its group's of B and C
  const In* __restrict__ Bg = B + int64_t{gg} * N;
  const In* __restrict__ Cg = kOut ? C + int64_t{gg} * N : nullptr;
  const int64_t c0 = grp * K, c1 = min(nch, c0 + K);
  const float a2 = A[h] * kLog2e;
  const int sp0 = 32 * (warp & 1), sn0 = 32 * (warp >> 1);  // state tile
  const int64_t D = int64_t{H} * P;
  // Per-lane tile offsets in bytes: with the swizzle every fragment access below is
  // base ^ const + imm (one LOP3 and an immediate), e.g. 4 swz(r0, 8s + 2q) = o_c0 ^ 32s; the
  // forms were checked against swz for every lane and index.
  const int sr0 = tid >> 5, sc4 = (tid & 31) * 4, xr0 = tid >> 4, xc4 = (tid & 15) * 4;  // 16-byte staging
  // Rows 8 further on: (o ^ 64) + 8 rows (the swizzle's s(r) flips its bit 1).
  int o_xa = 4 * swz(q, sp0 + 2 * g, kPP), o_bs = 4 * swz(q, sn0 + g, kNP);
  int o_hw = 4 * swz(sp0 + 2 * g, sn0 + 2 * q, kNP);

  float st[2][4][4];
  if (kOut) {
    const float* Gp = Hg + (grp * H + h) * kTile;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt) {
        const int p = sp0 + 16 * mt + 2 * g, n = sn0 + 8 * nt + 2 * q;
        const float2 u = *reinterpret_cast<const float2*>(Gp + n * kPP + p);
        const float2 v = *reinterpret_cast<const float2*>(Gp + (n + 1) * kPP + p);
        st[mt][nt][0] = u.x;
        st[mt][nt][1] = v.x;
        st[mt][nt][2] = u.y;
        st[mt][nt][3] = v.y;
      }
  } else {
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[mt][nt][e] = 0.0f;
  }
  float run = 1.0f;  // product of the chunk decays of the group so far

  // A [kQ][width] tile of src (rows t0.., columns col0 + [0, ncols), zero elsewhere) into dst
  // by asynchronous copies: 16 bytes each where vec (ld, col0, ncols multiples of 4 and src
  // 16-byte aligned), else 4. From bf16 (the bf16 mode's conv output) the same tile, each
  // value widened exactly to fp32: 8-byte loads of 4 values where vec (src 8-byte aligned),
  // all of a thread's loads issued before its stores.
  auto stage = [&](const In* __restrict__ src, int64_t ld, int64_t col0, int ncols, int len, int64_t t0, float* dst,
                   int width, int o_st) {
    if constexpr (!std::is_same_v<In, float>) {
      if (vec) {
        const bool wide = width == kNP;
        const int r0 = wide ? sr0 : xr0, c4 = wide ? sc4 : xc4, step = wide ? 8 : 16;
        const bool colok = c4 < ncols;
        const In* p = src + (t0 + r0) * ld + col0 + c4;
        constexpr int kMax = kQ / 8;
        uint2 v[kMax];
#pragma unroll
        for (int k = 0; k < kMax; ++k) {
          const bool ok = (wide || k < kQ / 16) && colok && r0 + step * k < len;
          v[k] = ok ? __ldg(reinterpret_cast<const uint2*>(p + step * k * ld)) : make_uint2(0u, 0u);
        }
#pragma unroll
        for (int k = 0; k < kMax; ++k) {
          if (!wide && k >= kQ / 16) break;
          *atb<float4>(dst, wide ? (o_st ^ (64 * (k & 1))) + 4096 * k : o_st + 4096 * k) = widen_bf16x4(v[k]);
        }
      } else {
#pragma unroll 1
        for (int idx = tid; idx < kQ * width; idx += kThreads) {
          const int r = idx / width, cc = idx % width;
          const bool ok = r < len && cc < ncols;
          dst[swz(r, cc, width)] = ok ? ld_act(src, (t0 + r) * ld + col0 + cc) : 0.0f;
        }
      }
      return;
    } else if (vec) {
      if (width == kNP) {
        const bool colok = sc4 < ncols;
        const float* p = src + (t0 + sr0) * ld + col0 + sc4;
#pragma unroll
        for (int k = 0; k < kQ / 8; ++k) {
          const bool ok = colok && sr0 + 8 * k < len;
          cp_async16_global_or_zero(atb<float>(dst, (o_st ^ (64 * (k & 1))) + 4096 * k), ok ? p + 8 * k * ld : src,
                                    ok);
        }
      } else {
        const bool colok = xc4 < ncols;
        const float* p = src + (t0 + xr0) * ld + col0 + xc4;
#pragma unroll
        for (int k = 0; k < kQ / 16; ++k) {
          const bool ok = colok && xr0 + 16 * k < len;
          cp_async16_global_or_zero(atb<float>(dst, o_st + 4096 * k), ok ? p + 16 * k * ld : src, ok);
        }
      }
    } else {
#pragma unroll 1
      for (int idx = tid; idx < kQ * width; idx += kThreads) {
        const int r = idx / width, cc = idx % width;
        const bool ok = r < len && cc < ncols;
        cp_async4_global_or_zero(dst + swz(r, cc, width), src + (ok ? (t0 + r) * ld + col0 + cc : 0), ok);
      }
    }
  };
  // Rounds this thread's staged elements of a [kQ][kNP] tile to tf32 in place.
  auto round_tile = [&](float* dst, int o_st) {
    if (vec) {
#pragma unroll
      for (int k = 0; k < kQ / 8; ++k) {
        float4* v = atb<float4>(dst, (o_st ^ (64 * (k & 1))) + 4096 * k);
        const float4 u = *v;
        *v = make_float4(tf32f(u.x), tf32f(u.y), tf32f(u.z), tf32f(u.w));
      }
    } else {
#pragma unroll 1
      for (int idx = tid; idx < kQ * kNP; idx += kThreads) {
        float* v = dst + swz(idx / kNP, idx % kNP, kNP);
        *v = tf32f(*v);
      }
    }
  };

  for (int64_t c = c0; c < c1; ++c) {
    const int64_t t0 = c * kQ;
    const int len = static_cast<int>(min(int64_t{kQ}, T - t0));
    const bool update = !kOut || c + 1 < c1;  // the outputs pass needs no state after its group
    // Keeps the offsets derived from these (invariant over chunks) from being hoisted into registers.
    int tcopy = tid;
    asm volatile("" : "+r"(tcopy));
    const int o_st128 = 4 * swz(tcopy >> 5, (tcopy & 31) * 4, kNP), o_st64 = 4 * swz(tcopy >> 4, (tcopy & 15) * 4, kPP);
    asm volatile("" : "+r"(o_xa), "+r"(o_bs), "+r"(o_hw));
    __syncthreads();  // the previous chunk is done with every tile
    stage(xh, ldx, 0, P, len, t0, Xs, kPP, o_st64);
    stage(Bg, ldbc, 0, N, len, t0, Bs, kNP, o_st128);
    if (kOut) stage(Cg, ldbc, 0, N, len, t0, Cs, kNP, o_st128);
    if (kOut) {  // the state entering this chunk, tf32, layout [p][n]
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          *atb<float2>(Hs, (o_hw ^ (32 * nt)) + 8192 * mt) = make_float2(tf32f(st[mt][nt][0]), tf32f(st[mt][nt][1]));
          *atb<float2>(Hs, (o_hw ^ (32 * nt) ^ 32) + 512 + 8192 * mt) =
              make_float2(tf32f(st[mt][nt][2]), tf32f(st[mt][nt][3]));
        }
    }
    // Decays of the chunk: lane l holds positions 2l, 2l + 1 (every warp for the chunk states,
    // which weight x in place below; warp 0 into shared memory for the outputs).
    float Llast = 0.0f, w0 = 0.0f, w1 = 0.0f;
    if (!kOut || warp == 0) {
      const int j0 = 2 * lane, j1 = 2 * lane + 1;
      const float d0 = j0 < len ? delta[(t0 + j0) * H + h] : 0.0f, d1 = j1 < len ? delta[(t0 + j1) * H + h] : 0.0f;
      float L0, L1;
      warp_pair_cumsum(d0 * a2, d1 * a2, lane, L0, L1);
      Llast = __shfl_sync(kFull, L1, 31);
      w0 = exp2f(fminf(Llast - L0, 0.0f)) * d0;
      w1 = exp2f(fminf(Llast - L1, 0.0f)) * d1;
      if (kOut) {
        reinterpret_cast<float2*>(Ls)[lane] = make_float2(L0, L1);
        reinterpret_cast<float2*>(dts)[lane] = make_float2(d0, d1);
        reinterpret_cast<float2*>(ws)[lane] = make_float2(w0, w1);
      }
    }
    cp_async_commit();
    cp_async_wait_all();
    constexpr bool kRound = std::is_same_v<In, float>;  // bf16 values are tf32 values already
    if (kRound) round_tile(Bs, o_st128);
    if (kOut) {
      if (kRound) round_tile(Cs, o_st128);
    } else if (vec) {  // x -> tf32(w_j x_j), this thread's rows xr0 + 16k
#pragma unroll
      for (int k = 0; k < kQ / 16; ++k) {
        float4* v = atb<float4>(Xs, o_st64 + 4096 * k);
        const float w = pick(w0, w1, xr0 + 16 * k);
        const float4 u = *v;
        *v = make_float4(tf32f(w * u.x), tf32f(w * u.y), tf32f(w * u.z), tf32f(w * u.w));
      }
    } else {
#pragma unroll 1
      for (int idx = tid; idx < kQ * kPP; idx += kThreads) {  // the row is uniform over the warp
        float* v = Xs + swz(idx / kPP, idx % kPP, kPP);
        *v = tf32f(pick(w0, w1, idx / kPP) * *v);
      }
    }
    __syncthreads();

    if (kOut) {
      // Warp w computes the outputs of the row tiles Ra = w % 2 and Rb = 3 - Ra (16 rows each)
      // and the columns p = 16 (w / 2) + [0, 16): pairing a short and a long row tile gives
      // every warp the same share of the masked products. The 20 tiles (16 rows x 8 columns) of
      // C Bᵀ on or below the diagonal blocks (read from ssd_cb_kernel's output) are spread over
      // the warps (tile t to warp t % 8), decayed and masked in registers, and go through
      // shared memory (over the state copy, once every warp is done with it) to the warps
      // that multiply them by x.
      const int Ra = warp & 1, Rb = 3 - Ra, pq = warp >> 1;
      // Byte offsets (see above): o_g is row g, column 2q of a tile 128 wide (C, B, Hs); a tile
      // of 16 rows further on adds 8192, its rows + 8 are (o ^ 64) + 4096, columns + 8s are
      // o ^ 32s. o_m is the same for the 64-wide M (16 rows: 4096; rows + 8: (o ^ 64) + 2048),
      // o_x rows 2q, column g of x (rows + 8: (o ^ 64) + 2048, row + 1: (o ^ 32) + 256, columns
      // + 8k: o ^ 32k).
      const int o_g = 4 * swz(g, 2 * q, kNP), o_g8 = (o_g ^ 64) + 4096;
      const int o_m = 4 * swz(g, 2 * q, kPP), o_m8 = (o_m ^ 64) + 2048;
      const int o_x = 4 * swz(2 * q, g, kPP), o_x8 = (o_x ^ 64) + 2048;
      const int nt_ok = (len + 7) >> 3;  // column tiles of j that hold positions of the chunk
      float sc[3][4];
#pragma unroll
      for (int k = 0; k < 3; ++k) {  // this warp's tiles of C Bᵀ: t = warp + 8k
        const int t = warp + 8 * k;
        const int rt = t < 2 ? 0 : t < 6 ? 1 : t < 12 ? 2 : 3;
        const int jt = t - (rt == 0 ? 0 : rt == 1 ? 2 : rt == 2 ? 6 : 12);
#pragma unroll
        for (int e = 0; e < 4; ++e) sc[k][e] = 0.0f;
        if (t >= 20 || 16 * rt >= len || jt >= nt_ok) continue;  // warp-uniform
        // The tile from the chunk's C·Bᵀ (ssd_cb_kernel), in accumulator layout: rows g and
        // g + 8 of the tile, columns 2q and 2q + 1.
        const float* cb = CB + (c * G + gg) * (kQ * kQ) + (16 * rt + g) * kQ + 8 * jt + 2 * q;
        const float2 u = *reinterpret_cast<const float2*>(cb), v = *reinterpret_cast<const float2*>(cb + 8 * kQ);
        sc[k][0] = u.x;
        sc[k][1] = u.y;
        sc[k][2] = v.x;
        sc[k][3] = v.y;
      }
      // C H_cᵀ for both row tiles; k over n as for C Bᵀ.
      float acc[2][2][4];
#pragma unroll
      for (int rr = 0; rr < 2; ++rr)
#pragma unroll
        for (int pt = 0; pt < 2; ++pt)
#pragma unroll
          for (int e = 0; e < 4; ++e) acc[rr][pt][e] = 0.0f;
      {
        const int oa = o_g + 8192 * Ra, oa8 = o_g8 + 8192 * Ra, ob = o_g + 8192 * Rb, ob8 = o_g8 + 8192 * Rb;
        const int oh = o_g + 8192 * pq, oh8 = o_g8 + 8192 * pq;
#pragma unroll 2
        for (int s2 = 0; s2 < kNP / 8; ++s2) {
          const float2 h0 = lds2b(Hs, oh ^ (32 * s2)), h1 = lds2b(Hs, oh8 ^ (32 * s2));
          const float2 ca = lds2b(Cs, oa ^ (32 * s2)), ca8 = lds2b(Cs, oa8 ^ (32 * s2));
          const float2 cb = lds2b(Cs, ob ^ (32 * s2)), cb8 = lds2b(Cs, ob8 ^ (32 * s2));
          const uint32_t A0[4] = {__float_as_uint(ca.x), __float_as_uint(ca8.x), __float_as_uint(ca.y),
                                  __float_as_uint(ca8.y)};
          const uint32_t A1[4] = {__float_as_uint(cb.x), __float_as_uint(cb8.x), __float_as_uint(cb.y),
                                  __float_as_uint(cb8.y)};
          mma_tf32(acc[0][0], A0[0], A0[1], A0[2], A0[3], __float_as_uint(h0.x), __float_as_uint(h0.y));
          mma_tf32(acc[0][1], A0[0], A0[1], A0[2], A0[3], __float_as_uint(h1.x), __float_as_uint(h1.y));
          mma_tf32(acc[1][0], A1[0], A1[1], A1[2], A1[3], __float_as_uint(h0.x), __float_as_uint(h0.y));
          mma_tf32(acc[1][1], A1[0], A1[1], A1[2], A1[3], __float_as_uint(h1.x), __float_as_uint(h1.y));
        }
      }
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int R = rr ? Rb : Ra;
        const float e0 = exp2_ftz(Ls[16 * R + g]), e1 = exp2_ftz(Ls[16 * R + g + 8]);
#pragma unroll
        for (int pt = 0; pt < 2; ++pt) {
          acc[rr][pt][0] *= e0;
          acc[rr][pt][1] *= e0;
          acc[rr][pt][2] *= e1;
          acc[rr][pt][3] *= e1;
        }
      }
      __syncthreads();  // every warp is done with Hs: M goes over it
      float* Ms = Hs;   // [kQ][kQ] M[i][j] = C_i·B_j exp(L_i - L_j) Δ_j (j <= i), tf32
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int t = warp + 8 * k;
        const int rt = t < 2 ? 0 : t < 6 ? 1 : t < 12 ? 2 : 3;
        const int jt = t - (rt == 0 ? 0 : rt == 1 ? 2 : rt == 2 ? 6 : 12);
        if (t >= 20 || 16 * rt >= len || jt >= nt_ok) continue;
        const int i0r = 16 * rt + g, i1r = i0r + 8, j0 = 8 * jt + 2 * q, j1 = j0 + 1;
        const float Li0 = Ls[i0r], Li1 = Ls[i1r];
        const float2 Lj = lds2(Ls, j0), dj = lds2(dts, j0);
        const float m00 = j0 <= i0r ? sc[k][0] * exp2_ftz(fminf(Li0 - Lj.x, 0.0f)) * dj.x : 0.0f;
        const float m01 = j1 <= i0r ? sc[k][1] * exp2_ftz(fminf(Li0 - Lj.y, 0.0f)) * dj.y : 0.0f;
        const float m10 = j0 <= i1r ? sc[k][2] * exp2_ftz(fminf(Li1 - Lj.x, 0.0f)) * dj.x : 0.0f;
        const float m11 = j1 <= i1r ? sc[k][3] * exp2_ftz(fminf(Li1 - Lj.y, 0.0f)) * dj.y : 0.0f;
        *atb<float2>(Ms, (o_m ^ (32 * jt)) + 4096 * rt) = make_float2(tf32f(m00), tf32f(m01));
        *atb<float2>(Ms, (o_m8 ^ (32 * jt)) + 4096 * rt) = make_float2(tf32f(m10), tf32f(m11));
      }
      __syncthreads();
      // + M x over the column tiles of j on or below each row tile's diagonal block.
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int R = rr ? Rb : Ra;
        const int jend = min(2 * R + 2, nt_ok);
        const int om = o_m + 4096 * R, om8 = o_m8 + 4096 * R;
#pragma unroll 2
        for (int jt = 0; jt < jend; ++jt) {
          const float2 ma = lds2b(Ms, om ^ (32 * jt)), mb = lds2b(Ms, om8 ^ (32 * jt));
          const int ox = (jt & 1 ? o_x8 : o_x) + 4096 * (jt >> 1);
#pragma unroll
          for (int pt = 0; pt < 2; ++pt) {
            const int oxp = ox ^ (32 * (2 * pq + pt));
            mma_tf32(acc[rr][pt], __float_as_uint(ma.x), __float_as_uint(mb.x), __float_as_uint(ma.y),
                     __float_as_uint(mb.y), to_tf32(ldsb(Xs, oxp)), to_tf32(ldsb(Xs, (oxp ^ 32) + 256)));
          }
        }
      }
      // Skip term and the store.
      const float dskip = Dskip[h];
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int R = rr ? Rb : Ra;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int i = 16 * R + g + 8 * half;
          if (i >= len) continue;
          Y* yt = y + (t0 + i) * D + int64_t{h} * P;
#pragma unroll
          for (int pt = 0; pt < 2; ++pt) {
            const int p = 16 * pq + 8 * pt + 2 * q;
            const float2 xv = lds2(Xs, swz(i, p, kPP));
            const float v0 = fmaf(dskip, xv.x, acc[rr][pt][2 * half]);
            const float v1 = fmaf(dskip, xv.y, acc[rr][pt][2 * half + 1]);
            if constexpr (std::is_same_v<Y, float>) {
              if (y_vec) {
                if (p < P) *reinterpret_cast<float2*>(yt + p) = make_float2(v0, v1);
              } else {
                if (p < P) yt[p] = v0;
                if (p + 1 < P) yt[p + 1] = v1;
              }
            } else if (y_vec) {
              if (p < P) *reinterpret_cast<uint32_t*>(yt + p) = pack_bf16x2(v0, v1);
            } else {
              if (p < P) yt[p] = bf16_bits(v0);
              if (p + 1 < P) yt[p + 1] = bf16_bits(v1);
            }
          }
        }
      }
    }

    if (update) {  // state = exp(L_last) state + Σ_j (w_j x_j) B_jᵀ, k over the chunk's positions
      const float dc = exp2f(kOut ? Ls[kQ - 1] : Llast);
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) st[mt][nt][e] *= dc;
#pragma unroll 2
      for (int s = 0; s < kQ / 8; ++s) {
        uint32_t a[2][4];
        const float wa = kOut ? ws[8 * s + q] : 0.0f, wb = kOut ? ws[8 * s + q + 4] : 0.0f;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          const int o = (o_xa ^ (64 * ((s & 1) ^ mt))) + 2048 * s;
          const float2 u = lds2b(Xs, o), v = lds2b(Xs, (o ^ 32) + 1024);
          if (kOut) {
            a[mt][0] = to_tf32(wa * u.x);
            a[mt][1] = to_tf32(wa * u.y);
            a[mt][2] = to_tf32(wb * v.x);
            a[mt][3] = to_tf32(wb * v.y);
          } else {
            a[mt][0] = __float_as_uint(u.x);
            a[mt][1] = __float_as_uint(u.y);
            a[mt][2] = __float_as_uint(v.x);
            a[mt][3] = __float_as_uint(v.y);
          }
        }
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const int o = (o_bs ^ (32 * nt) ^ (64 * (s & 1))) + 4096 * s;
          const uint32_t b0 = __float_as_uint(ldsb(Bs, o)), b1 = __float_as_uint(ldsb(Bs, (o ^ 32) + 2048));
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) mma_tf32(st[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b0, b1);
        }
      }
      run *= dc;
    }
    if (!kOut && c + 1 == c1) {  // the group-local state after the group, layout [n][p]
      float* Ec = E + (c * H + h) * kTile;
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
          const int p = sp0 + 16 * mt + 2 * g, n = sn0 + 8 * nt + 2 * q;
          *reinterpret_cast<float2*>(Ec + n * kPP + p) = make_float2(st[mt][nt][0], st[mt][nt][2]);
          *reinterpret_cast<float2*>(Ec + (n + 1) * kPP + p) = make_float2(st[mt][nt][1], st[mt][nt][3]);
        }
    }
  }
  if (!kOut && tid == 0) dgroup[grp * H + h] = run;
}

// A slice's plan: the wgmma passes take about kWgBlocks blocks (see plan()).
constexpr int64_t kWgBlocks = 768;
Plan slice_plan(int64_t Ts, int64_t H, bool wg) { return wg ? plan(Ts, H, kWgBlocks) : plan(Ts, H); }

// The work buffer's arrays (offsets in floats) and its size. Other paths: the group-local state
// after every chunk (E, [nch][H] states), each group's entering state (Hg), the carry, the
// decays (dcorr per chunk, dgroup per group) and (tensor-core path) C·Bᵀ of every chunk of a
// slice and group, [nch][G][kQ][kQ], 16-byte aligned. The wgmma passes (wg): E per group, no
// dcorr, no C·Bᵀ.
struct WorkLayout {
  int64_t E, Hg, carry, dcorr, dgroup, CB, total;
};
WorkLayout work_layout(int64_t T, int64_t H, int64_t G, bool wg) {
  const Plan cap = slice_plan(std::min(T, (wg ? kWgSliceChunks : kSliceChunks) * kQ), H, wg);
  WorkLayout w{};
  w.E = 0;
  w.Hg = (wg ? cap.cap : cap.nch) * H * kTile;
  w.carry = w.Hg + cap.cap * H * kTile;
  w.dcorr = w.carry + H * kTile;
  w.dgroup = w.dcorr + (wg ? 0 : cap.nch * H);
  const int64_t end = w.dgroup + cap.cap * H;
  w.CB = (end + 3) / 4 * 4;  // work is 16-byte aligned
  w.total = wg ? end : w.CB + cap.nch * G * kQ * kQ;
  return w;
}

// Either path's layout fits (the wgmma passes apply or not by pointers and device).
int64_t chunked_work(int64_t T, int64_t H, int64_t G) {
  return std::max(work_layout(T, H, G, false).total, work_layout(T, H, G, true).total);
}

// C·Bᵀ of each chunk and group of a slice, once for all the group's heads (the output pass
// reads its tiles instead of each head computing them): CB[c][g][i][j] = Σ_n C_i[n] B_j[n]
// for the chunk's positions i, j (zero past the slice's end), fp32 sums on CUDA cores of
// the staged values (fp32, or bf16 widened). One block per (chunk, group); thread (ti, tj)
// owns rows 4 ti .. 4 ti + 3 and columns 4 tj .. 4 tj + 3.
constexpr int kCbStride = kNP + 4;
constexpr int kCbSmem = 2 * kQ * kCbStride * 4;
template <class In>
__global__ void __launch_bounds__(kThreads) ssd_cb_kernel(const In* __restrict__ B, const In* __restrict__ C,
                                                          int64_t ldbc, int64_t T, int N, bool vec,
                                                          float* __restrict__ CB) {
  extern __shared__ __align__(16) float cbs[];
  float* Cs = cbs;                   // [kQ][kCbStride]
  float* Bs = cbs + kQ * kCbStride;  // [kQ][kCbStride]
  const int64_t c = blockIdx.x, g = blockIdx.y, t0 = c * kQ;
  const int len = static_cast<int>(min(int64_t{kQ}, T - t0));
  if (vec) {  // 4 values per access (N, ldbc multiples of 4, rows aligned)
    for (int idx = threadIdx.x; idx < kQ * kNP / 4; idx += kThreads) {
      const int r = idx / (kNP / 4), n = 4 * (idx % (kNP / 4));
      const bool ok = r < len && n < N;
      const int64_t off = (t0 + r) * ldbc + g * N + n;
      const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      *reinterpret_cast<float4*>(Cs + r * kCbStride + n) = ok ? ld_act4(C, off) : zero;
      *reinterpret_cast<float4*>(Bs + r * kCbStride + n) = ok ? ld_act4(B, off) : zero;
    }
  } else {
    for (int idx = threadIdx.x; idx < kQ * kNP; idx += kThreads) {
      const int r = idx / kNP, n = idx % kNP;
      const bool ok = r < len && n < N;
      const int64_t off = (t0 + r) * ldbc + g * N + n;
      Cs[r * kCbStride + n] = ok ? ld_act(C, off) : 0.0f;
      Bs[r * kCbStride + n] = ok ? ld_act(B, off) : 0.0f;
    }
  }
  __syncthreads();
  const int ti = threadIdx.x / 16, tj = threadIdx.x % 16;
  // The output pass reads the 16 x 8 tiles on or below the diagonal 16 x 16 blocks: columns up
  // to 16 (i / 16) + 15 of row i. Threads whose 4 x 4 tile lies past that have nothing to do.
  if (tj > 4 * (ti / 4) + 3) return;
  float acc[4][4] = {};
#pragma unroll 4
  for (int n = 0; n < kNP; n += 4) {
    float4 cv[4], bv[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      cv[r] = *reinterpret_cast<const float4*>(Cs + (4 * ti + r) * kCbStride + n);
      bv[r] = *reinterpret_cast<const float4*>(Bs + (4 * tj + r) * kCbStride + n);
    }
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int q = 0; q < 4; ++q)
        acc[r][q] += cv[r].x * bv[q].x + cv[r].y * bv[q].y + cv[r].z * bv[q].z + cv[r].w * bv[q].w;
  }
  float* out = CB + (c * gridDim.y + g) * (kQ * kQ);
#pragma unroll
  for (int r = 0; r < 4; ++r)
    *reinterpret_cast<float4*>(out + (4 * ti + r) * kQ + 4 * tj) =
        make_float4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]);
}

// x, B and C in fp32, or (tensor cores only) bf16.
template <class In, class Y>
void chunked_scan(const In* x, int64_t ldx, const float* delta, const float* A, const In* B, const In* C, int64_t ldbc,
                  const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, Y* y, float* h_final,
                  float* work, bool tc, cudaStream_t stream, int layer) {
  constexpr bool kF32 = std::is_same_v<In, float>;
  if (!kF32 && !tc) fail("ssd_scan (layer ", layer, "): internal: bf16 inputs need the tensor-core path");
  if (reinterpret_cast<std::uintptr_t>(work) % 16 != 0) fail("ssd_scan (layer ", layer, "): work buffer not 16-byte aligned");
  if (G < 1 || H % G != 0) fail("ssd_scan (layer ", layer, "): ", H, " heads do not split into ", G, " groups");
  // bf16 inputs: the Hopper wgmma passes where they apply (C·Bᵀ computed inside them). Slices
  // start at multiples of 32768 rows, so their alignment is the whole arrays'.
  bool wg = false;
  if constexpr (!kF32) wg = ssd_wgmma_applies(x, ldx, B, C, ldbc, P, N, y, static_cast<int>(sizeof(Y)), layer);
  const int64_t slice_T = (wg ? kWgSliceChunks : kSliceChunks) * kQ;
  const WorkLayout L = work_layout(T, H, G, wg);
  float *E = work + L.E, *Hg = work + L.Hg, *carry = work + L.carry, *dcorr = work + L.dcorr,
        *dgroup = work + L.dgroup, *CB = work + L.CB;
  const int64_t hpg = H / G;
  const int64_t nbatch = (hpg + kMaxHeadBatch - 1) / kMaxHeadBatch;
  const int64_t HB = (hpg + nbatch - 1) / nbatch;
  if (tc) {
    check(cudaFuncSetAttribute(ssd_tc_kernel<false, In, float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               kTcStateSmem),
          "ssd_scan attribute", layer);
    check(cudaFuncSetAttribute(ssd_tc_kernel<true, In, Y>, cudaFuncAttributeMaxDynamicSharedMemorySize, kTcOutputSmem),
          "ssd_scan attribute", layer);
    check(cudaFuncSetAttribute(ssd_cb_kernel<In>, cudaFuncAttributeMaxDynamicSharedMemorySize, kCbSmem),
          "ssd_scan attribute", layer);
    for (const void* k : {reinterpret_cast<const void*>(ssd_tc_kernel<false, In, float>),
                          reinterpret_cast<const void*>(ssd_tc_kernel<true, In, Y>)})  // 3 and 2 blocks per SM
      check(cudaFuncSetAttribute(k, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared),
            "ssd_scan attribute", layer);
  } else if constexpr (kF32) {
    check(cudaFuncSetAttribute(ssd_state_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kStateSmem),
          "ssd_scan attribute", layer);
    check(cudaFuncSetAttribute(ssd_output_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kOutputSmem),
          "ssd_scan attribute", layer);
  }
  const int64_t per4 = H * kTile / 4;
  const int Hi = static_cast<int>(H), Pi = static_cast<int>(P), Ni = static_cast<int>(N), hpgi = static_cast<int>(hpg);
  for (int64_t tb = 0; tb < T; tb += slice_T) {
    const int64_t Ts = std::min(slice_T, T - tb);
    const Plan pl = slice_plan(Ts, H, wg);
    const In* xs = x + tb * ldx;
    const float* ds = delta + tb * H;
    const In* Bs = B + tb * ldbc;
    const In* Cs = C + tb * ldbc;
    Y* ys = y + tb * H * P;
    const dim3 grid(static_cast<unsigned>(H), static_cast<unsigned>(pl.ng));
    const bool last = tb + slice_T >= T;
    // The entering state of every group, the carry to the next slice, h_final after the last.
    const auto chain = [&] {
      ssd_group_chain_kernel<<<static_cast<unsigned>((per4 + 255) / 256), 256, 0, stream>>>(
          per4, Hi, Pi, Ni, pl.nch, pl.K, pl.ng, reinterpret_cast<const float4*>(E), wg, dgroup,
          reinterpret_cast<float4*>(Hg), reinterpret_cast<float4*>(carry), tb > 0, last ? h_final : nullptr);
      check_launch("ssd_scan (SSD group chain)", layer, stream);
    };
    if (tc) {  // chunk states, chain, then outputs from each group's entering state
      // Aligned for 4 values per access: 16 bytes of fp32, 8 of bf16.
      const auto al16 = [](const In* p) { return reinterpret_cast<std::uintptr_t>(p) % (4 * sizeof(In)) == 0; };
      const bool vec = ldx % 4 == 0 && ldbc % 4 == 0 && P % 4 == 0 && N % 4 == 0 && al16(xs) && al16(Bs) && al16(Cs);
      if constexpr (!kF32) {
        if (wg) {
          ssd_states_wgmma(xs, ldx, ds, A, Bs, ldbc, Ts, H, G, pl.nch, pl.K, pl.ng, E, dgroup, stream, layer);
          chain();
          ssd_output_wgmma(xs, ldx, ds, A, Bs, Cs, ldbc, Dskip, Ts, H, G, pl.nch, pl.K, pl.ng, Hg, ys, stream, layer);
          continue;
        }
      }
      ssd_tc_kernel<false, In, float><<<grid, kThreads, kTcStateSmem, stream>>>(
          xs, ldx, ds, A, Bs, nullptr, ldbc, nullptr, Ts, Hi, Pi, Ni, hpgi, pl.nch, pl.K, E, dgroup, nullptr, nullptr, 0,
          nullptr, vec, false);
      check_launch("ssd_scan (SSD chunk states, tensor cores)", layer, stream);
      chain();
      ssd_cb_kernel<In><<<dim3(static_cast<unsigned>(pl.nch), static_cast<unsigned>(G)), kThreads, kCbSmem, stream>>>(
          Bs, Cs, ldbc, Ts, Ni, vec, CB);
      check_launch("ssd_scan (SSD C·Bᵀ)", layer, stream);
      const bool y_vec2 = P % 2 == 0 && reinterpret_cast<std::uintptr_t>(ys) % (2 * sizeof(Y)) == 0;
      ssd_tc_kernel<true, In, Y><<<grid, kThreads, kTcOutputSmem, stream>>>(
          xs, ldx, ds, A, Bs, Cs, ldbc, Dskip, Ts, Hi, Pi, Ni, hpgi, pl.nch, pl.K, nullptr, nullptr, Hg, CB,
          static_cast<int>(G), ys, vec, y_vec2);
      check_launch("ssd_scan (SSD output, tensor cores)", layer, stream);
      continue;
    }
    if constexpr (kF32 && std::is_same_v<Y, float>) {
    const bool y_vec = P % 4 == 0 && reinterpret_cast<std::uintptr_t>(ys) % 16 == 0;
    ssd_state_kernel<<<dim3(static_cast<unsigned>(H), static_cast<unsigned>(pl.ng)), kThreads, kStateSmem, stream>>>(
        xs, ldx, ds, A, Bs, ldbc, Ts, Hi, Pi, Ni, hpgi, pl.nch, pl.K, E, dcorr, dgroup);
    check_launch("ssd_scan (SSD chunk states)", layer, stream);
    chain();
    ssd_output_kernel<<<dim3(static_cast<unsigned>(G * nbatch), static_cast<unsigned>(pl.nch)), kThreads, kOutputSmem,
                        stream>>>(xs, ldx, ds, A, Bs, Cs, ldbc, Dskip, Ts, Hi, Pi, Ni, hpgi, static_cast<int>(nbatch),
                                  static_cast<int>(HB), pl.K, E, dcorr, Hg, ys, y_vec);
    check_launch("ssd_scan (SSD output)", layer, stream);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Recurrence path (shapes the chunked path does not take)
// ---------------------------------------------------------------------------------------------

constexpr int64_t kChunk = 256;
constexpr int kStage = 32;
constexpr int kSlice = 16;  // states per thread and row

struct Shape {
  int64_t T, H, P, N, G, D;
  int nsp;  // threads per row pair, a power of two
  int pb;   // row pairs per block
};

template <bool kFromState, bool kWriteY>
__global__ void ssd_chunk_kernel(const float* __restrict__ x, int64_t ldx, const float* __restrict__ delta,
                                 const float* __restrict__ A, const float* __restrict__ B,
                                 const float* __restrict__ C, int64_t ldbc, const float* __restrict__ Dskip,
                                 Shape s, float* __restrict__ state, float* __restrict__ dsum,
                                 float* __restrict__ y) {
  extern __shared__ __align__(16) float smem[];
  const int npad = s.nsp * kSlice;
  float* Bs = smem;                       // [kStage][npad]
  float* Cs = Bs + kStage * npad;         // [kStage][npad]
  float* dts = Cs + kStage * npad;        // [kStage]
  float* dAs = dts + kStage;              // [kStage]
  const int64_t h = blockIdx.x, chunk = blockIdx.y;
  const int64_t p0 = (blockIdx.z * int64_t{s.pb} + threadIdx.x / s.nsp) * 2;
  const int sl = threadIdx.x % s.nsp;
  const int64_t g = h / (s.H / s.G);
  const int64_t t0 = chunk * kChunk, t1 = min(s.T, t0 + kChunk);
  const bool act[2] = {p0 < s.P, p0 + 1 < s.P};
  const float a = A[h] * kLog2e;
  float st[2][kSlice];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int k = 0; k < kSlice; ++k) {
      const int64_t n = 4 * (sl + int64_t{s.nsp} * (k / 4)) + k % 4;
      st[r][k] = (kFromState && act[r] && n < s.N) ? state[((chunk * s.H + h) * s.P + p0 + r) * s.N + n] : 0.0f;
    }
  const float dskip = Dskip[h];
  float ds = 0.0f;
  for (int64_t s0 = t0; s0 < t1; s0 += kStage) {
    const int len = static_cast<int>(t1 - s0 < kStage ? t1 - s0 : kStage);
    __syncthreads();
    for (int idx = threadIdx.x; idx < kStage * npad; idx += blockDim.x) {
      const int q = idx / npad, n = idx % npad;
      const bool ok = q < len && n < s.N;
      const int64_t off = (s0 + q) * ldbc + g * s.N + n;
      Bs[idx] = ok ? B[off] : 0.0f;
      if (kWriteY) Cs[idx] = ok ? C[off] : 0.0f;
    }
    for (int q = threadIdx.x; q < kStage; q += blockDim.x) {
      const float dt = q < len ? delta[(s0 + q) * s.H + h] : 0.0f;
      dts[q] = dt;
      dAs[q] = exp2f(dt * a);
    }
    __syncthreads();
    const float* xp = x + s0 * ldx + h * s.P + p0;
    float xn0 = act[0] ? xp[0] : 0.0f, xn1 = act[1] ? xp[1] : 0.0f;
    for (int q = 0; q < len; ++q) {
      const int64_t t = s0 + q;
      const float dt = dts[q], dA = dAs[q];
      const float xv0 = xn0, xv1 = xn1;
      if (q + 1 < len) {
        if (act[0]) xn0 = xp[(q + 1) * ldx];
        if (act[1]) xn1 = xp[(q + 1) * ldx + 1];
      }
      const float dx0 = dt * xv0, dx1 = dt * xv1;
      ds += dt;
      const float4* Bq = reinterpret_cast<const float4*>(Bs + q * npad) + sl;
      const float4* Cq = reinterpret_cast<const float4*>(Cs + q * npad) + sl;
      float part0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, part1[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // short FMA chains
#pragma unroll
      for (int kq = 0; kq < 4; ++kq) {
        const float4 b = Bq[kq * s.nsp];
        const float bb[4] = {b.x, b.y, b.z, b.w};
        float cc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (kWriteY) {
          const float4 c = Cq[kq * s.nsp];
          cc[0] = c.x;
          cc[1] = c.y;
          cc[2] = c.z;
          cc[3] = c.w;
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float& u0 = st[0][4 * kq + e];
          float& u1 = st[1][4 * kq + e];
          u0 = dA * u0 + dx0 * bb[e];
          u1 = dA * u1 + dx1 * bb[e];
          if (kWriteY) {
            part0[e] += u0 * cc[e];
            part1[e] += u1 * cc[e];
          }
        }
      }
      if (kWriteY) {
        float acc0 = (part0[0] + part0[1]) + (part0[2] + part0[3]);
        float acc1 = (part1[0] + part1[1]) + (part1[2] + part1[3]);
        for (int o = s.nsp / 2; o > 0; o >>= 1) {
          acc0 += __shfl_xor_sync(0xffffffffu, acc0, o);
          acc1 += __shfl_xor_sync(0xffffffffu, acc1, o);
        }
        if (sl == 0) {
          float* yt = y + t * s.D + h * s.P + p0;
          if (act[0]) yt[0] = acc0 + dskip * xv0;
          if (act[1]) yt[1] = acc1 + dskip * xv1;
        }
      }
    }
  }
  if (!kWriteY) {
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int k = 0; k < kSlice; ++k) {
        const int64_t n = 4 * (sl + int64_t{s.nsp} * (k / 4)) + k % 4;
        if (act[r] && n < s.N) state[((chunk * s.H + h) * s.P + p0 + r) * s.N + n] = st[r][k];
      }
    if (threadIdx.x == 0 && blockIdx.z == 0) dsum[chunk * s.H + h] = ds;
  }
}

__global__ void ssd_chain_kernel(const float* __restrict__ A, Shape s, int64_t nchunks, float* __restrict__ state,
                                 const float* __restrict__ dsum, float* __restrict__ h_final) {
  const int64_t per = s.H * s.P * s.N;
  const int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (k >= per) return;
  const int64_t h = k / (s.P * s.N);
  const float a = A[h] * kLog2e;
  float carry = 0.0f;
  for (int64_t q = 0; q < nchunks; ++q) {
    const float end = state[q * per + k];
    state[q * per + k] = carry;
    carry = exp2f(a * dsum[q * s.H + h]) * carry + end;
  }
  if (h_final) h_final[k] = carry;
}


int64_t recurrence_work(int64_t T, int64_t H, int64_t P, int64_t N) {
  const int64_t nchunks = (T + kChunk - 1) / kChunk;
  return nchunks * H * P * N + nchunks * H;
}

void recurrence_scan(const float* x, int64_t ldx, const float* delta, const float* A, const float* B, const float* C,
                     int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                     float* y, float* h_final, float* work, cudaStream_t stream, int layer) {
  Shape s{T, H, P, N, G, H * P, 1, 1};
  const int64_t slices = (N + kSlice - 1) / kSlice;
  while (s.nsp < slices) s.nsp *= 2;
  if (s.nsp > 32) fail("ssd_scan (layer ", layer, "): d_state = ", N, " is above the CUDA kernel's limit of 512");
  const int64_t pairs = (P + 1) / 2;
  s.pb = static_cast<int>(std::min<int64_t>(pairs, std::max(1, 256 / s.nsp)));
  s.pb = std::max(s.pb, 32 / s.nsp);  // whole warps, so the shuffles see every lane
  const int threads = s.pb * s.nsp;
  const int64_t nchunks = (T + kChunk - 1) / kChunk;
  if (nchunks > 65535) fail("ssd_scan: T = ", T, " exceeds the supported ", 65535 * kChunk, " tokens");
  const dim3 grid(static_cast<unsigned>(H), static_cast<unsigned>(nchunks), static_cast<unsigned>((pairs + s.pb - 1) / s.pb));
  const std::size_t smem = (2 * kStage * s.nsp * kSlice + 2 * kStage) * sizeof(float);
  if (smem > 48 * 1024) {
    check(cudaFuncSetAttribute(ssd_chunk_kernel<false, false>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "ssd_scan attribute", layer);
    check(cudaFuncSetAttribute(ssd_chunk_kernel<true, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "ssd_scan attribute", layer);
    check(cudaFuncSetAttribute(ssd_chunk_kernel<false, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "ssd_scan attribute", layer);
  }
  float* state = work;
  float* dsum = work + nchunks * H * P * N;
  if (nchunks == 1 && !h_final) {
    ssd_chunk_kernel<false, true><<<grid, threads, smem, stream>>>(x, ldx, delta, A, B, C, ldbc, Dskip, s, state, dsum, y);
    check_launch("ssd_scan", layer, stream);
    return;
  }
  ssd_chunk_kernel<false, false><<<grid, threads, smem, stream>>>(x, ldx, delta, A, B, C, ldbc, Dskip, s, state, dsum, y);
  check_launch("ssd_scan (chunk states)", layer, stream);
  const int64_t per = H * P * N;
  ssd_chain_kernel<<<static_cast<unsigned>((per + 255) / 256), 256, 0, stream>>>(A, s, nchunks, state, dsum, h_final);
  check_launch("ssd_scan (chunk chain)", layer, stream);
  ssd_chunk_kernel<true, true><<<grid, threads, smem, stream>>>(x, ldx, delta, A, B, C, ldbc, Dskip, s, state, dsum, y);
  check_launch("ssd_scan (output)", layer, stream);
}

}  // namespace

int64_t ssd_scan_work(int64_t T, int64_t H, int64_t P, int64_t N, int64_t G) {
  return fast_path(P, N) ? chunked_work(T, H, G) : recurrence_work(T, H, P, N);
}

void ssd_scan(const float* x, int64_t ldx, const float* delta, const float* A, const float* B, const float* C,
              int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, float* y,
              float* h_final, float* work, bool tensor_cores, cudaStream_t stream, int layer) {
  if (T == 0 || H == 0) return;
  if (fast_path(P, N))
    chunked_scan(x, ldx, delta, A, B, C, ldbc, Dskip, T, H, P, N, G, y, h_final, work, tensor_cores, stream, layer);
  else
    recurrence_scan(x, ldx, delta, A, B, C, ldbc, Dskip, T, H, P, N, G, y, h_final, work, stream, layer);
}

bool ssd_scan_takes_bf16(int64_t P, int64_t N) { return fast_path(P, N); }

void ssd_scan(const uint16_t* x, int64_t ldx, const float* delta, const float* A, const uint16_t* B,
              const uint16_t* C, int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N,
              int64_t G, float* y, uint16_t* y16, float* h_final, float* work, cudaStream_t stream, int layer) {
  if (T == 0 || H == 0) return;
  if (!fast_path(P, N))
    fail("ssd_scan (layer ", layer, "): internal: bf16 inputs with head dim ", P, " and state size ", N,
         " (the chunked path takes P <= 64, N <= 128)");
  if (y16) chunked_scan(x, ldx, delta, A, B, C, ldbc, Dskip, T, H, P, N, G, y16, h_final, work, true, stream, layer);
  else chunked_scan(x, ldx, delta, A, B, C, ldbc, Dskip, T, H, P, N, G, y, h_final, work, true, stream, layer);
}

}  // namespace latim::cuda
