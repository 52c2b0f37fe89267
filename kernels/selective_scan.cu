// Mamba-1 selective scan: one thread per channel holds the channel's N states in registers;
// a block stages B and C of a stretch of positions in shared memory. Three launches: chunk
// states from zero, the chain over chunks, then the scan from each chunk's incoming state.
// The first launch can also finish Δ: given dt_proj's raw output and the bias, each thread
// turns its channel's values into softplus(dt + bias) as it reads them and writes them back,
// which saves softplus_rows' pass over [T, D]. x is fp32 or (bf16 mode) bf16. In the bf16
// mode's untraced, unsharded layers the raw dt comes in bf16 (dt_proj's bf16 output): the
// first pass writes Δ back in bf16 (softplus_fast, then rounded) and uses that rounded Δ
// itself, so both passes see the same Δ, and Δ never goes through memory in fp32.
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "cuda_check.hpp"
#include "device_math.cuh"
#include "selective_scan.hpp"

namespace latim::cuda {

namespace {

constexpr int64_t kChunk = 256;  // positions per chunk
constexpr int kStage = 64;       // positions of B, C staged at a time
constexpr int kThreads = 128;    // channels per block
constexpr float kLog2e = 1.4426950408889634f;

// DT: float or uint16_t (bf16 bits): Δ, or raw dt finished in place by the first pass (in
// bf16: rounded to bf16, and the rounded value used).
template <int NS, bool kFromState, bool kWriteY, class X, class DT>
__global__ void __launch_bounds__(kThreads, 5) scan_chunk_kernel(const X* __restrict__ x, DT* __restrict__ delta,
                                                              const float* __restrict__ dt_bias, bool raw_dt,
                                                              const float* __restrict__ A, const float* __restrict__ B,
                                                              int64_t ldb, const float* __restrict__ C, int64_t ldc,
                                                              const float* __restrict__ Dskip, int64_t T, int64_t D,
                                                              int N, float* __restrict__ state,
                                                              float* __restrict__ dsum, float* __restrict__ y,
                                                              ScanGate gate) {
  __shared__ float Bs[kStage][NS];
  __shared__ float Cs[kWriteY ? kStage : 1][NS];
  const int64_t c = blockIdx.x * int64_t{kThreads} + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t t0 = chunk * kChunk, t1 = min(T, t0 + kChunk);
  const bool active = c < D;
  float a[NS], h[NS];
#pragma unroll
  for (int n = 0; n < NS; ++n) {
    a[n] = (active && n < N) ? A[c * N + n] * kLog2e : 0.0f;
    h[n] = (kFromState && active && n < N) ? state[(chunk * D + c) * N + n] : 0.0f;
  }
  const float dskip = active ? Dskip[c] : 0.0f;
  // Δ from dt_proj's raw output (first launch only; the output pass reads the finished Δ).
  constexpr bool k16 = std::is_same_v<DT, uint16_t>;
  const bool finish = !kFromState && raw_dt;
  const float dtb = finish && active && dt_bias ? dt_bias[c] : 0.0f;
  float ds = 0.0f;
  for (int64_t s0 = t0; s0 < t1; s0 += kStage) {
    const int len = static_cast<int>(t1 - s0 < kStage ? t1 - s0 : kStage);
    __syncthreads();
    for (int idx = threadIdx.x; idx < kStage * NS; idx += kThreads) {
      const int p = idx / NS, n = idx % NS;
      const bool ok = p < len && n < N;
      Bs[p][n] = ok ? B[(s0 + p) * ldb + n] : 0.0f;
      if (kWriteY) Cs[p][n] = ok ? C[(s0 + p) * ldc + n] : 0.0f;
    }
    __syncthreads();
    if (!active) continue;
    const bool gated = kWriteY && gate.y16 != nullptr;
    // Δ, x (and z) of the next kAhead positions are loaded while the current kAhead are
    // scanned: a step is short next to a global load's latency. Rows are reached by pointer
    // steps (64-bit index products would cost more instructions than the step itself).
    constexpr int kAhead = 4;
    DT* dp = delta + s0 * D + c;  // position s0 + p0 of this channel, advanced per group
    const X* xp = x + s0 * D + c;
    const uint16_t* zp = gated ? gate.z + s0 * gate.ldz + c : nullptr;
    const int64_t zstep = gated ? gate.ldz : 0;
    float dtq[kAhead], xq[kAhead], zq[kAhead];
    const auto fetch = [&](int p0) {  // positions p0 .. p0 + kAhead - 1, at dp + kAhead D ...
#pragma unroll
      for (int i = 0; i < kAhead; ++i) {
        const bool ok = p0 + i < len;
        dtq[i] = ok ? ld_act(dp, i * D) : 0.0f;
        xq[i] = ok ? ld_act(xp, i * D) : 0.0f;
        zq[i] = ok && gated ? bf16_float(zp[i * zstep]) : 0.0f;
      }
    };
    fetch(0);
    float* yp = y + s0 * D + c;
    uint16_t* y16p = gated ? gate.y16 + s0 * D + c : nullptr;
    for (int p0 = 0; p0 < len; p0 += kAhead) {
      float dtc[kAhead], xc[kAhead], zc[kAhead];
#pragma unroll
      for (int i = 0; i < kAhead; ++i) {
        dtc[i] = dtq[i];
        xc[i] = xq[i];
        zc[i] = zq[i];
      }
      DT* const dcur = dp;
      dp += kAhead * D;
      xp += kAhead * D;
      zp += kAhead * zstep;
      fetch(p0 + kAhead);
#pragma unroll
      for (int i = 0; i < kAhead; ++i) {
        const int p = p0 + i;
        if (p >= len) break;
        float dt = dtc[i];
        const float xv = xc[i];
        if (finish) {
          if constexpr (k16) {  // rounded to bf16 next: the fast form
            const uint16_t b = bf16_bits(softplus_fast(dt + dtb));
            dcur[i * D] = b;
            dt = bf16_float(b);
          } else {
            dt = softplus(dt + dtb);
            dcur[i * D] = dt;
          }
        }
        const float dx = dt * xv;
        ds += dt;
        float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // four short FMA chains instead of one long one
#pragma unroll
        for (int n = 0; n < NS; ++n) {
          h[n] = exp2_ftz(dt * a[n]) * h[n] + dx * Bs[p][n];
          if (kWriteY) part[n % 4] += h[n] * Cs[p][n];
        }
        if (kWriteY) {
          const float yv = ((part[0] + part[1]) + (part[2] + part[3])) + dskip * xv;
          if (gated) y16p[i * D] = bf16_bits(yv * silu_fast(zc[i]));  // silu_gate's bits (its bf16 path)
          else yp[i * D] = yv;
        }
      }
      yp += kAhead * D;
      if (gated) y16p += kAhead * D;
    }
  }
  if (!kWriteY && active) {
#pragma unroll
    for (int n = 0; n < NS; ++n)
      if (n < N) state[(chunk * D + c) * N + n] = h[n];
    dsum[chunk * D + c] = ds;
  }
}

// Replaces each chunk's end state (from zero) by its incoming state; the state after the
// last chunk goes to h_final.
__global__ void chain_chunks_kernel(const float* __restrict__ A, int64_t D, int64_t N, int64_t nchunks,
                                    float* __restrict__ state, const float* __restrict__ dsum,
                                    float* __restrict__ h_final) {
  const int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (k >= D * N) return;
  const int64_t c = k / N;
  const float a = A[k] * kLog2e;
  // The chain is sequential in q, its loads are not: each batch's loads are all issued
  // before its stores (one memory latency per batch instead of one per chunk).
  constexpr int kBatch = 16;
  float carry = 0.0f;
  for (int64_t q0 = 0; q0 < nchunks; q0 += kBatch) {
    float end[kBatch], dec[kBatch];
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int64_t q = q0 + i;
      end[i] = q < nchunks ? state[q * D * N + k] : 0.0f;
      dec[i] = q < nchunks ? dsum[q * D + c] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kBatch; ++i) {
      const int64_t q = q0 + i;
      if (q >= nchunks) break;
      state[q * D * N + k] = carry;
      carry = exp2f(a * dec[i]) * carry + end[i];
    }
  }
  if (h_final) h_final[k] = carry;
}

// ---------------------------------------------------------------------------------------
// One pass (N <= 16): each exponential computed once. An item is 32 channels (one per lane)
// by 32 positions; a block's 8 warps are 2 sub-chunks of 16 positions by 4 quarters of the
// 16 states. A thread scans its 16 positions and 4 states from a zero state, keeping the 64
// decays e = 2^(Δ a) in registers. The item's end state from zero and its Δ sum are
// published (a decoupled look-back: Merrill & Garland, "Single-pass parallel prefix scan
// with decoupled look-back", 2016); the item takes its entering state from the nearest of
// its 4 predecessors that has published its inclusive state, through the end states of
// those in between, and publishes its own. The decays it kept then carry that entering
// state through its positions (y += C·(Π e) h_in): the exponentials are not computed again.
//
// Determinism: an inclusive state is always fmaf(2^(a S_k), h_in(k), h0_k), with S_k and h0_k
// what item k published and h_in(k) its predecessor's inclusive state, whichever item
// worked it out: the result does not depend on the timing, and equals the sequential chain.
//
// Items are taken in ticket order (an atomic counter), so an item only waits on items
// already running. The published states live in a ring of R items per channel group, each
// word tagged with its item's index (and whether it is inclusive): a reader accepts only
// its item's tag, so a word not yet written or already replaced is never read as valid. R
// is far above the items in flight per group; a reader that finds its item's word replaced
// (it fell R items behind) stops the kernel (a trap) rather than wait for ever.
namespace onepass {

constexpr int kCh = 32;                 // channels per item, one per lane
constexpr int kQ = 4;                   // quarters of the states, 4 each
constexpr int kSub = 16;                // positions per thread
constexpr int kSubs = 2;                // sub-chunks per item
constexpr int kPos = kSub * kSubs;      // positions per item
constexpr int kWarps = kQ * kSubs;      // warp w: quarter w % 4 of sub-chunk w / 4
constexpr int kThreads = kWarps * 32;
constexpr int kNS = 16;                 // states held (N <= 16; the rest are zero)
constexpr int kWindow = 4;              // predecessors read per look-back
constexpr uint32_t kUnset = 0xffffffffu;

struct Shared {
  float d[kCh * kPos];   // Δ, [channel][position], 16-byte chunks swizzled by channel
  float dx[kCh * kPos];  // Δ x
  float sk[kCh * kPos];  // Dskip x
  float B[kPos][kNS], C[kPos][kNS];
  float4 hl[kSubs][kQ][kCh];  // each sub-chunk's end state from zero
  float S[kSubs][kCh];        // each sub-chunk's Δ sum
  float he[kNS][kCh];         // the item's entering state
  float y[kSubs][kQ][kCh][kSub];  // each quarter's share of y, then summed
  unsigned long long ticket;
};

__device__ __forceinline__ int cp(int c, int p) { return c * kPos + ((((p >> 2) ^ (c & 7)) << 2) | (p & 3)); }
__device__ __forceinline__ int yq(int c, int p) { return ((((p >> 2) ^ ((c >> 1) & 3)) << 2) | (p & 3)); }

__device__ __forceinline__ uint64_t ld_word(const uint64_t* p) {
  uint64_t v;
  asm volatile("ld.relaxed.gpu.global.b64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_word(uint64_t* p, float v, uint32_t tag) {
  const uint64_t w = (static_cast<uint64_t>(tag) << 32) | __float_as_uint(v);
  asm volatile("st.relaxed.gpu.global.b64 [%0], %1;" ::"l"(p), "l"(w) : "memory");
}
__device__ __forceinline__ uint32_t tag_of(uint64_t w) { return static_cast<uint32_t>(w >> 32); }
__device__ __forceinline__ float val_of(uint64_t w) { return __uint_as_float(static_cast<uint32_t>(w)); }

struct Ring {
  uint64_t* h;  // [G][R][kCh][kNS]: end state from zero, or inclusive state
  uint64_t* s;  // [G][R][kCh]: the item's Δ sum
  int64_t R;
};

template <class X, class DT>
__global__ void __launch_bounds__(kThreads, 2)
    onepass_kernel(const X* __restrict__ x, DT* __restrict__ delta, const float* __restrict__ dt_bias, bool raw_dt,
                   const float* __restrict__ A, const float* __restrict__ B, int64_t ldb, const float* __restrict__ C,
                   int64_t ldc, const float* __restrict__ Dskip, int64_t T, int64_t D, int N, float* __restrict__ y,
                   float* __restrict__ h_final, ScanGate gate, Ring ring, unsigned long long* counter, bool dbg_nochain) {
  __shared__ Shared sm;
  constexpr bool k16 = std::is_same_v<DT, uint16_t>;
  const int warp = threadIdx.x >> 5, c = threadIdx.x & 31;
  const int q = warp % kQ, s = warp / kQ;
  const int64_t G = (D + kCh - 1) / kCh, J = (T + kPos - 1) / kPos;
  const unsigned long long items = static_cast<unsigned long long>(G * J);
  // The counter starts at all ones (the ring's fill): the first ticket is 0.
  if (threadIdx.x == 0) sm.ticket = atomicAdd(counter, 1ull) + 1ull;
  __syncthreads();
  for (;;) {
    const unsigned long long ticket = sm.ticket;
    if (ticket >= items) break;
    const int64_t g = static_cast<int64_t>(ticket % G), j = static_cast<int64_t>(ticket / G);
    const int64_t c0 = g * kCh, t0 = j * kPos, ch = c0 + c;
    const bool active = ch < D;

    // Stage Δ (finished from the raw dt where asked), Δ x, Dskip x, B and C. Every load is
    // issued before the first store (a store to delta would otherwise keep the next loads
    // behind it): one memory latency per item.
    constexpr int kPer = kCh * kPos / kThreads, kPerBC = kPos * kNS / kThreads;
    static_assert(kPer * kThreads == kCh * kPos && kPerBC * kThreads == kPos * kNS);
    float dtr[kPer], xr[kPer], bv[kPerBC], cv[kPerBC];
    const int cc = threadIdx.x & 31, p0 = threadIdx.x >> 5;  // channel cc, positions p0 + 8 i
    const int64_t chc = c0 + cc;
    const bool cok = chc < D;
    const float bias_c = raw_dt && dt_bias && cok ? dt_bias[chc] : 0.0f;
    const float dsk_c = cok ? Dskip[chc] : 0.0f;
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int64_t t = t0 + p0 + (kThreads / 32) * i;
      const bool ok = t < T && cok;
      dtr[i] = ok ? ld_act(delta, t * D + chc) : 0.0f;
      xr[i] = ok ? ld_act(x, t * D + chc) : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kPerBC; ++i) {
      const int idx = threadIdx.x + kThreads * i, p = idx / kNS, n = idx % kNS;
      const int64_t t = t0 + p;
      const bool ok = t < T && n < N;
      bv[i] = ok ? B[t * ldb + n] : 0.0f;
      cv[i] = ok ? C[t * ldc + n] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kPer; ++i) {
      const int p = p0 + (kThreads / 32) * i;
      const int64_t t = t0 + p;
      const bool ok = t < T && cok;
      float dt = dtr[i];
      if (raw_dt && ok) {
        if constexpr (k16) {
          const uint16_t bits = bf16_bits(softplus_fast(dt + bias_c));
          delta[t * D + chc] = bits;
          dt = bf16_float(bits);
        } else {
          dt = softplus(dt + bias_c);
          delta[t * D + chc] = dt;
        }
      }
      sm.d[cp(cc, p)] = dt;
      sm.dx[cp(cc, p)] = dt * xr[i];
      sm.sk[cp(cc, p)] = dsk_c * xr[i];
    }
#pragma unroll
    for (int i = 0; i < kPerBC; ++i) {
      const int idx = threadIdx.x + kThreads * i;
      sm.B[idx / kNS][idx % kNS] = bv[i];
      sm.C[idx / kNS][idx % kNS] = cv[i];
    }
    __syncthreads();
    unsigned long long next = 0;
    if (threadIdx.x == 0) next = atomicAdd(counter, 1ull) + 1ull;

    // This thread's 16 positions and 4 states, from a zero state.
    float a[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int n = 4 * q + i;
      a[i] = active && n < N ? A[ch * N + n] * kLog2e : 0.0f;
    }
    float e[kSub][4], h[4] = {0.0f, 0.0f, 0.0f, 0.0f}, S = 0.0f;
#pragma unroll
    for (int r = 0; r < kSub / 4; ++r) {
      const int pc = s * kSub + 4 * r;
      const float4 d4 = *reinterpret_cast<const float4*>(&sm.d[cp(c, pc)]);
      const float4 x4 = *reinterpret_cast<const float4*>(&sm.dx[cp(c, pc)]);
      const float dv[4] = {d4.x, d4.y, d4.z, d4.w}, dxv[4] = {x4.x, x4.y, x4.z, x4.w};
      float yv[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int p = 4 * r + u;
        const float4 b = *reinterpret_cast<const float4*>(&sm.B[pc + u][4 * q]);
        const float4 cc = *reinterpret_cast<const float4*>(&sm.C[pc + u][4 * q]);
        const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          e[p][i] = exp2_ftz(dv[u] * a[i]);
          h[i] = e[p][i] * h[i] + dxv[u] * bv[i];
        }
        yv[u] = fmaf(cc.w, h[3], fmaf(cc.z, h[2], fmaf(cc.y, h[1], cc.x * h[0])));
        S += dv[u];
      }
      *reinterpret_cast<float4*>(&sm.y[s][q][c][yq(c, 4 * r)]) = make_float4(yv[0], yv[1], yv[2], yv[3]);
    }
    sm.hl[s][q][c] = make_float4(h[0], h[1], h[2], h[3]);
    if (q == 0) sm.S[s][c] = S;
    __syncthreads();

    // The item's end state from zero, published; then its entering state. This thread
    // takes states 4q + 2s and 4q + 2s + 1.
    {
      const float S0 = sm.S[0][c], S1 = sm.S[1][c], Si = S0 + S1;
      const float4 l0 = sm.hl[0][q][c], l1 = sm.hl[1][q][c];
      const float h0v[2] = {s ? l0.z : l0.x, s ? l0.w : l0.y}, h1v[2] = {s ? l1.z : l1.x, s ? l1.w : l1.y};
      const float al[2] = {s ? a[2] : a[0], s ? a[3] : a[1]};
      const int n0 = 4 * q + 2 * s;
      const int64_t slot = j % ring.R;
      uint64_t* hw = ring.h + ((g * ring.R + slot) * kCh + c) * kNS + n0;
      float hi[2], Pi[2], hin[2] = {0.0f, 0.0f};
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        hi[i] = fmaf(exp2_ftz(al[i] * S1), h0v[i], h1v[i]);
        Pi[i] = exp2_ftz(al[i] * Si);
      }
      const uint32_t tj = static_cast<uint32_t>(j) << 1;
      if (j > 0 && !dbg_nochain) {
        st_word(hw, hi[0], tj);
        st_word(hw + 1, hi[1], tj);
        if (n0 == 0) st_word(ring.s + (g * ring.R + slot) * kCh + c, Si, tj);
        const int kmax = j < kWindow ? static_cast<int>(j) : kWindow;
        bool done[2] = {false, false};
        for (;;) {
          uint64_t wh[kWindow][2], ws[kWindow];
#pragma unroll
          for (int k = 0; k < kWindow; ++k) {
            if (k < kmax) {
              const int64_t it = j - 1 - k, sl = it % ring.R;
              const uint64_t* p = ring.h + ((g * ring.R + sl) * kCh + c) * kNS + n0;
              wh[k][0] = ld_word(p);
              wh[k][1] = ld_word(p + 1);
              ws[k] = ld_word(ring.s + (g * ring.R + sl) * kCh + c);
            }
          }
#pragma unroll
          for (int i = 0; i < 2; ++i) {
            if (done[i]) continue;
            int found = -1;
            bool stop = false;
#pragma unroll
            for (int k = 0; k < kWindow; ++k) {
              if (found >= 0 || stop || k >= kmax) continue;
              const uint32_t it = static_cast<uint32_t>(j - 1 - k);
              const uint32_t tg = tag_of(wh[k][i]);
              if (tg != kUnset && (tg >> 1) > it) __trap();  // replaced: the reader fell R items behind
              if ((tg >> 1) != it) { stop = true; continue; }
              if (tg & 1u) { found = k; continue; }
              if ((tag_of(ws[k]) >> 1) != it) stop = true;  // its Δ sum not there yet
            }
            if (found < 0) continue;
            float v = 0.0f;
#pragma unroll
            for (int k = kWindow - 1; k >= 0; --k) {
              if (k > found) continue;
              if (k == found) v = val_of(wh[k][i]);
              else v = fmaf(exp2_ftz(al[i] * val_of(ws[k])), v, val_of(wh[k][i]));
            }
            hin[i] = v;
            done[i] = true;
          }
          if (done[0] && done[1]) break;
          __nanosleep(64);
        }
      }
      float inc[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        inc[i] = fmaf(Pi[i], hin[i], hi[i]);
        sm.he[n0 + i][c] = hin[i];
      }
      st_word(hw, inc[0], tj | 1u);
      st_word(hw + 1, inc[1], tj | 1u);
      if (h_final && j == J - 1 && active) {
#pragma unroll
        for (int i = 0; i < 2; ++i)
          if (n0 + i < N) h_final[ch * N + n0 + i] = inc[i];
      }
    }
    __syncthreads();

    // The gate's z for the positions this thread writes (loaded now, used at the end).
    float zv[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int64_t t = t0 + s * kSub + 4 * q + u;
      zv[u] = gate.y16 && active && t < T ? bf16_float(gate.z[t * gate.ldz + ch]) : 0.0f;
    }
    // The entering state carried through the kept decays.
    {
      float gs[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) gs[i] = sm.he[4 * q + i][c];
      if (s == 1) {
        const float S0 = sm.S[0][c];
        const float4 l0 = sm.hl[0][q][c];
        const float lv[4] = {l0.x, l0.y, l0.z, l0.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) gs[i] = fmaf(exp2_ftz(a[i] * S0), gs[i], lv[i]);
      }
#pragma unroll
      for (int r = 0; r < kSub / 4; ++r) {
        float4& yr = *reinterpret_cast<float4*>(&sm.y[s][q][c][yq(c, 4 * r)]);
        const float4 yl = yr;
        float yo[4] = {yl.x, yl.y, yl.z, yl.w};
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int p = 4 * r + u;
          const float4 cc = *reinterpret_cast<const float4*>(&sm.C[s * kSub + p][4 * q]);
#pragma unroll
          for (int i = 0; i < 4; ++i) gs[i] *= e[p][i];
          yo[u] += fmaf(cc.w, gs[3], fmaf(cc.z, gs[2], fmaf(cc.y, gs[1], cc.x * gs[0])));
        }
        yr = make_float4(yo[0], yo[1], yo[2], yo[3]);
      }
    }
    __syncthreads();

    // y of positions 4q .. 4q + 3 of sub-chunk s: the quarters' shares, the skip, the gate.
    {
      const float4 y0 = *reinterpret_cast<const float4*>(&sm.y[s][0][c][yq(c, 4 * q)]);
      const float4 y1 = *reinterpret_cast<const float4*>(&sm.y[s][1][c][yq(c, 4 * q)]);
      const float4 y2 = *reinterpret_cast<const float4*>(&sm.y[s][2][c][yq(c, 4 * q)]);
      const float4 y3 = *reinterpret_cast<const float4*>(&sm.y[s][3][c][yq(c, 4 * q)]);
      const float4 sk = *reinterpret_cast<const float4*>(&sm.sk[cp(c, s * kSub + 4 * q)]);
      const float tot[4] = {((y0.x + y1.x) + y2.x) + y3.x + sk.x, ((y0.y + y1.y) + y2.y) + y3.y + sk.y,
                            ((y0.z + y1.z) + y2.z) + y3.z + sk.z, ((y0.w + y1.w) + y2.w) + y3.w + sk.w};
      if (active) {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int64_t t = t0 + s * kSub + 4 * q + u;
          if (t >= T) break;
          if (gate.y16) gate.y16[t * D + ch] = bf16_bits(tot[u] * silu_fast(zv[u]));
          else y[t * D + ch] = tot[u];
        }
      }
    }
    if (threadIdx.x == 0) sm.ticket = next;
    __syncthreads();
  }
}

// Ring slots per channel group: far above the items in flight per group (at most the
// resident blocks, 2 per SM, each holding one item and the next ticket), and no more than
// the group's items.
int64_t ring_slots(int64_t T, int64_t D) {
  static int sms_cached[64] = {};
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  int sms = dev < 64 ? sms_cached[dev] : 0;
  if (sms == 0) {
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    if (dev < 64) sms_cached[dev] = sms;
  }
  const int64_t G = (D + kCh - 1) / kCh, J = (T + kPos - 1) / kPos;
  const int64_t in_flight = 4 * int64_t{sms};  // 2 blocks per SM, an item and a ticket each
  int64_t R = 8 * ((in_flight + G - 1) / G);
  if (R < 64) R = 64;
  return R < J ? R : J;
}

int64_t work_floats(int64_t T, int64_t D) {
  const int64_t G = (D + kCh - 1) / kCh, R = ring_slots(T, D);
  return 2 * (1 + G * R * kCh * kNS + G * R * kCh);  // counter, then the words (8 bytes each)
}

bool wanted(int64_t N) {
  static const bool off = [] {
    const char* v = std::getenv("LATIM_SCAN_KERNEL");
    return v && std::strcmp(v, "twopass") == 0;
  }();
  return N <= kNS && !off;
}

template <class X, class DT>
void run(const X* x, DT* delta, const float* dt_bias, bool raw_dt, const float* A, const float* B, int64_t ldb,
         const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N, float* y, float* h_final,
         float* work, cudaStream_t stream, int layer, const ScanGate& gate) {
  const int64_t G = (D + kCh - 1) / kCh, J = (T + kPos - 1) / kPos, R = ring_slots(T, D);
  if (J >= (int64_t{1} << 30)) fail("selective_scan: T = ", T, " exceeds the supported ", (int64_t{1} << 30) * kPos, " tokens");
  auto* words = reinterpret_cast<uint64_t*>(work);
  const int64_t nwords = 1 + G * R * kCh * kNS + G * R * kCh;
  check(cudaMemsetAsync(words, 0xff, static_cast<size_t>(nwords) * 8, stream), "selective_scan (ring reset)", layer);
  Ring ring{words + 1, words + 1 + G * R * kCh * kNS, R};
  static int per_sm_cached[64] = {};
  int dev = 0, sms = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice", layer);
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute", layer);
  int per_sm = dev < 64 ? per_sm_cached[dev] : 0;
  if (per_sm == 0) {
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, onepass_kernel<X, DT>, kThreads, 0),
          "selective_scan (occupancy)", layer);
    if (per_sm < 1) per_sm = 1;
    if (per_sm > 2) per_sm = 2;  // what ring_slots assumed
    if (dev < 64) per_sm_cached[dev] = per_sm;
  }
  const int64_t items = G * J, resident = int64_t{sms} * per_sm;
  const int64_t grid = items < resident ? items : resident;
  onepass_kernel<X, DT><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(
      x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, static_cast<int>(N), y, h_final, gate, ring,
      reinterpret_cast<unsigned long long*>(words), std::getenv("LATIM_SCAN_NOCHAIN") != nullptr);
  check_launch("selective_scan (one pass)", layer, stream);
}

}  // namespace onepass

template <int NS, class X, class DT>
void run(const X* x, DT* delta, const float* dt_bias, bool raw_dt, const float* A, const float* B, int64_t ldb,
         const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N, float* y, float* h_final, float* work,
         cudaStream_t stream, int layer, const ScanGate& gate) {
  const int64_t nchunks = (T + kChunk - 1) / kChunk;
  if (nchunks > 65535) fail("selective_scan: T = ", T, " exceeds the supported ", 65535 * kChunk, " tokens");
  const dim3 grid(static_cast<unsigned>((D + kThreads - 1) / kThreads), static_cast<unsigned>(nchunks));
  float* state = work;
  float* dsum = work + nchunks * D * N;
  const int n = static_cast<int>(N);
  if (nchunks == 1 && !h_final) {
    scan_chunk_kernel<NS, false, true><<<grid, kThreads, 0, stream>>>(x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc,
                                                                       Dskip, T, D, n, state, dsum, y, gate);
    check_launch("selective_scan", layer, stream);
    return;
  }
  scan_chunk_kernel<NS, false, false><<<grid, kThreads, 0, stream>>>(x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc,
                                                                      Dskip, T, D, n, state, dsum, y, gate);
  check_launch("selective_scan (chunk states)", layer, stream);
  chain_chunks_kernel<<<static_cast<unsigned>((D * N + 255) / 256), 256, 0, stream>>>(A, D, N, nchunks, state, dsum,
                                                                                      h_final);
  check_launch("selective_scan (chunk chain)", layer, stream);
  scan_chunk_kernel<NS, true, true><<<grid, kThreads, 0, stream>>>(x, delta, nullptr, false, A, B, ldb, C, ldc, Dskip,
                                                                    T, D, n, state, dsum, y, gate);
  check_launch("selective_scan (output)", layer, stream);
}

}  // namespace

int64_t selective_scan_work(int64_t T, int64_t D, int64_t N) {
  if (onepass::wanted(N)) return onepass::work_floats(T, D);
  const int64_t nchunks = (T + kChunk - 1) / kChunk;
  return nchunks * D * N + nchunks * D;
}

namespace {
template <class X, class DT>
void dispatch(const X* x, DT* delta, const float* dt_bias, bool raw_dt, const float* A, const float* B, int64_t ldb,
              const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N, float* y,
              float* h_final, float* work, cudaStream_t stream, int layer, const ScanGate& gate) {
  if (T == 0 || D == 0) return;
  if (onepass::wanted(N)) {
    onepass::run(x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, work, stream, layer, gate);
    return;
  }
  const auto go = [&](auto ns) {
    run<decltype(ns)::value>(x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, work, stream,
                             layer, gate);
  };
  if (N <= 8) go(std::integral_constant<int, 8>{});
  else if (N <= 16) go(std::integral_constant<int, 16>{});
  else if (N <= 32) go(std::integral_constant<int, 32>{});
  else if (N <= 64) go(std::integral_constant<int, 64>{});
  else fail("selective_scan (layer ", layer, "): d_state = ", N, " is above the CUDA kernel's limit of 64");
}
}  // namespace

void selective_scan(const float* x, float* delta, const float* dt_bias, bool raw_dt, const float* A, const float* B,
                    int64_t ldb, const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N,
                    float* y, float* h_final, float* work, cudaStream_t stream, int layer, const ScanGate& gate) {
  dispatch(x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, work, stream, layer, gate);
}

void selective_scan(const uint16_t* x, float* delta, const float* dt_bias, bool raw_dt, const float* A, const float* B,
                    int64_t ldb, const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N,
                    float* y, float* h_final, float* work, cudaStream_t stream, int layer, const ScanGate& gate) {
  dispatch(x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, work, stream, layer, gate);
}

void selective_scan(const uint16_t* x, uint16_t* dt16, const float* dt_bias, const float* A, const float* B,
                    int64_t ldb, const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N,
                    float* y, float* h_final, float* work, cudaStream_t stream, int layer, const ScanGate& gate) {
  dispatch(x, dt16, dt_bias, true, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, work, stream, layer, gate);
}

}  // namespace latim::cuda
