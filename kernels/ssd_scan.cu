// Mamba-2 scan. Two paths, both fp32 on CUDA cores:
//
// Chunked SSD form (P <= 64, N <= 128, the Mamba-2 shapes; smaller P, N are zero-padded).
// Chunks of kQ = 64 positions, K (2..16, see plan()) consecutive chunks per group, the sequence
// cut into slices of kSliceChunks chunks so that the work buffer stays bounded for any T.
// Per slice, three launches:
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

#include "cuda_check.hpp"
#include "ssd_scan.hpp"

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

// About 1536 state blocks per slice, groups of 2..16 chunks.
Plan plan(int64_t Ts, int64_t H) {
  Plan p{};
  p.nch = (Ts + kQ - 1) / kQ;
  p.cap = std::max<int64_t>(1, std::min((p.nch + 1) / 2, std::max((p.nch + 15) / 16, (1536 + H - 1) / H)));
  p.K = (p.nch + p.cap - 1) / p.cap;
  p.ng = (p.nch + p.K - 1) / p.K;
  return p;
}

bool fast_path(int64_t P, int64_t N) { return P >= 1 && P <= kPP && N >= 1 && N <= kNP; }

// Inclusive prefix sums of Δ a2 over a chunk (Δ in dts[0..kQ), zero past the chunk's end),
// computed by one warp: lane l returns positions 2l (L0) and 2l + 1 (L1).
__device__ __forceinline__ void chunk_cumsum(const float* dts, float a2, int lane, float& L0, float& L1) {
  const float2 d = reinterpret_cast<const float2*>(dts)[lane];
  const float v0 = d.x * a2, v1 = d.y * a2;
  float s = v0 + v1;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float t = __shfl_up_sync(kFull, s, o);
    if (lane >= o) s += t;
  }
  float excl = __shfl_up_sync(kFull, s, 1);
  if (lane == 0) excl = 0.0f;
  L0 = excl + v0;
  L1 = L0 + v1;
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
__global__ void ssd_group_chain_kernel(int64_t per4, int H, int P, int N, int64_t nch, int64_t K, int64_t ng,
                                       const float4* __restrict__ E, const float* __restrict__ dgroup,
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
    const int64_t last = min(nch, (gi + 1) * K) - 1;
    const float4 e = E[last * per4 + k];
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

int64_t chunked_work(int64_t T, int64_t H) {
  const Plan cap = plan(std::min(T, kSliceChunks * kQ), H);
  return (cap.nch + cap.cap + 1) * H * kTile + (cap.nch + cap.cap) * H;
}

void chunked_scan(const float* x, int64_t ldx, const float* delta, const float* A, const float* B, const float* C,
                  int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, float* y,
                  float* h_final, float* work, cudaStream_t stream, int layer) {
  if (reinterpret_cast<std::uintptr_t>(work) % 16 != 0) fail("ssd_scan (layer ", layer, "): work buffer not 16-byte aligned");
  if (G < 1 || H % G != 0) fail("ssd_scan (layer ", layer, "): ", H, " heads do not split into ", G, " groups");
  const int64_t slice_T = kSliceChunks * kQ;
  const Plan cap = plan(std::min(T, slice_T), H);
  float* E = work;
  float* Hg = E + cap.nch * H * kTile;
  float* carry = Hg + cap.cap * H * kTile;
  float* dcorr = carry + H * kTile;
  float* dgroup = dcorr + cap.nch * H;
  const int64_t hpg = H / G;
  const int64_t nbatch = (hpg + kMaxHeadBatch - 1) / kMaxHeadBatch;
  const int64_t HB = (hpg + nbatch - 1) / nbatch;
  check(cudaFuncSetAttribute(ssd_state_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kStateSmem),
        "ssd_scan attribute", layer);
  check(cudaFuncSetAttribute(ssd_output_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kOutputSmem),
        "ssd_scan attribute", layer);
  const int64_t per4 = H * kTile / 4;
  const int Hi = static_cast<int>(H), Pi = static_cast<int>(P), Ni = static_cast<int>(N), hpgi = static_cast<int>(hpg);
  for (int64_t tb = 0; tb < T; tb += slice_T) {
    const int64_t Ts = std::min(slice_T, T - tb);
    const Plan pl = plan(Ts, H);
    const float* xs = x + tb * ldx;
    const float* ds = delta + tb * H;
    const float* Bs = B + tb * ldbc;
    const float* Cs = C + tb * ldbc;
    float* ys = y + tb * H * P;
    const bool y_vec = P % 4 == 0 && reinterpret_cast<std::uintptr_t>(ys) % 16 == 0;
    ssd_state_kernel<<<dim3(static_cast<unsigned>(H), static_cast<unsigned>(pl.ng)), kThreads, kStateSmem, stream>>>(
        xs, ldx, ds, A, Bs, ldbc, Ts, Hi, Pi, Ni, hpgi, pl.nch, pl.K, E, dcorr, dgroup);
    check_launch("ssd_scan (SSD chunk states)", layer, stream);
    const bool last = tb + slice_T >= T;
    ssd_group_chain_kernel<<<static_cast<unsigned>((per4 + 255) / 256), 256, 0, stream>>>(
        per4, Hi, Pi, Ni, pl.nch, pl.K, pl.ng, reinterpret_cast<const float4*>(E), dgroup,
        reinterpret_cast<float4*>(Hg), reinterpret_cast<float4*>(carry), tb > 0, last ? h_final : nullptr);
    check_launch("ssd_scan (SSD group chain)", layer, stream);
    ssd_output_kernel<<<dim3(static_cast<unsigned>(G * nbatch), static_cast<unsigned>(pl.nch)), kThreads, kOutputSmem,
                        stream>>>(xs, ldx, ds, A, Bs, Cs, ldbc, Dskip, Ts, Hi, Pi, Ni, hpgi, static_cast<int>(nbatch),
                                  static_cast<int>(HB), pl.K, E, dcorr, Hg, ys, y_vec);
    check_launch("ssd_scan (SSD output)", layer, stream);
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

int64_t ssd_scan_work(int64_t T, int64_t H, int64_t P, int64_t N) {
  return fast_path(P, N) ? chunked_work(T, H) : recurrence_work(T, H, P, N);
}

void ssd_scan(const float* x, int64_t ldx, const float* delta, const float* A, const float* B, const float* C,
              int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, float* y,
              float* h_final, float* work, cudaStream_t stream, int layer) {
  if (T == 0 || H == 0) return;
  if (fast_path(P, N))
    chunked_scan(x, ldx, delta, A, B, C, ldbc, Dskip, T, H, P, N, G, y, h_final, work, stream, layer);
  else
    recurrence_scan(x, ldx, delta, A, B, C, ldbc, Dskip, T, H, P, N, G, y, h_final, work, stream, layer);
}

}  // namespace latim::cuda
