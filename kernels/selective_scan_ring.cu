// Mamba-1 selective scan in one pass: each decay exp(Δ A) is computed once, where the
// two-pass scan (selective_scan.cu) computes every one twice and is bound by the special-
// function unit that computes them.
//
// A pair of blocks (a thread-block cluster of 2, on two SMs) owns a group of CG channels for
// the whole sequence, which it walks in windows of W = 4 J positions; the two blocks take
// alternate windows. One block per SM: 384 threads at up to 168 registers. In a window, thread (c, j) owns channel c and the four positions of
// sub-chunk j, and all N <= 16 states of them:
//   1. it scans its four positions from a zero state, keeping the 64 decays in registers,
//      and leaves the sub-chunk's end state and its total decay in shared memory;
//   2. one thread per (channel, state) folds the J sub-chunks in order, starting from the
//      state entering the window, which the other block of the pair sent: that gives each
//      sub-chunk's entering state, and the state after the window, which it sends back to
//      the other block's shared memory (distributed shared memory, one 64-bit word per state
//      holding the value and the window's index, so that the receiver polls its own memory);
//   3. it scans its four positions again from the sub-chunk's entering state, on the kept
//      decays, and writes y (or, gated, y SiLU(z) in bf16).
// The chain between windows is one fold and one hop between SMs; while one block folds and
// writes its window, the other scans the next, so neither waits on the chain for long.
//
// Inputs are staged by 16-byte cp.async copies, a window ahead, as in the two-pass scan. Δ is
// finished from dt_proj's raw output in step 1, with the two-pass scan's formulas and bits.
// The results differ from the two-pass scan's in the last bits only: the entering states are
// the same sums, associated differently.
#include <cooperative_groups.h>

#include <type_traits>

#include "cp_async.cuh"
#include "cuda_check.hpp"
#include "device_buffer.hpp"
#include "device_math.cuh"
#include "selective_scan_ring.hpp"

namespace latim::cuda::detail {

#if defined(LATIM_SM90A)
namespace {

namespace cg = cooperative_groups;

constexpr int kS = 4;             // positions per thread and window (their decays stay in registers)
constexpr int kMaxThreads = 384;  // one block per SM, up to 168 registers a thread
constexpr int NS = 16;            // states per channel (N <= 16; the states past N stay zero)
constexpr float kLog2e = 1.4426950408889634f;

template <int CG, class X, class DT, bool kGated>
struct Shape {
  static constexpr int J = kMaxThreads / CG;  // sub-chunks per window
  static constexpr int NT = CG * J;           // threads per block
  static constexpr int W = kS * J;            // positions per window
  static constexpr int CN = CG * NS;          // (channel, state) pairs: the folding threads
  // Shared memory: sub-chunk decays and states [J][CN] (the states replaced by the entering
  // ones in the fold), the mailbox [CN] of 64-bit words, and two buffers of staged inputs,
  // each B and C rows [W][NS] (fp32), then the Δ, x (and z) tiles [W][CG].
  static constexpr int64_t kAgg = 2 * int64_t{J} * CN * 4;
  static constexpr int64_t kMailbox = int64_t{CN} * 8;
  static constexpr int64_t kBuffer =
      2 * int64_t{W} * NS * 4 + int64_t{W} * CG * int64_t(sizeof(DT) + sizeof(X) + (kGated ? 2 : 0));
  static constexpr int64_t kBytes = kAgg + kMailbox + 2 * kBuffer;
  static_assert(CG % 8 == 0 && NT <= kMaxThreads, "channel group");
  static_assert(kBuffer % 16 == 0, "16-byte staging");
};

// Rows [rows][CG] of a [.][ld] activation (src at the window's first row and the group's
// first channel, `cols` channels valid, a multiple of 8) into dst [W][CG] by 16-byte copies;
// rows past `rows` and channels past `cols` are zero.
template <int NT, int W, int CG, class T>
__device__ __forceinline__ void stage_tile(T* dst, const T* src, int64_t ld, int rows, int cols) {
  constexpr int per = 16 / int(sizeof(T)), pieces = CG / per;
#pragma unroll
  for (int i = threadIdx.x; i < W * pieces; i += NT) {
    const int r = i / pieces, q = i % pieces;
    const bool ok = r < rows && q * per < cols;
    cp_async16_or_zero(dst + r * CG + q * per, ok ? src + r * ld + q * per : src, ok);
  }
}
// Rows [rows][N] of B or C (N a multiple of 4) into dst [W][NS]; the rest zero.
template <int NT, int W>
__device__ __forceinline__ void stage_rows(float* dst, const float* src, int64_t ld, int rows, int N) {
  constexpr int pieces = NS / 4;
#pragma unroll
  for (int i = threadIdx.x; i < W * pieces; i += NT) {
    const int r = i / pieces, q = i % pieces;
    const bool ok = r < rows && 4 * q < N;
    cp_async16_or_zero(dst + r * NS + 4 * q, ok ? src + r * ld + 4 * q : src, ok);
  }
}

__device__ __forceinline__ void store_word(unsigned long long* p, unsigned long long v) {
  *reinterpret_cast<volatile unsigned long long*>(p) = v;  // one 8-byte store: value and tag together
}
__device__ __forceinline__ unsigned long long load_word(const unsigned long long* p) {
  return *reinterpret_cast<const volatile unsigned long long*>(p);
}

template <int CG, class X, class DT, bool kGated>
__global__ void __cluster_dims__(2, 1, 1) __launch_bounds__(Shape<CG, X, DT, kGated>::NT, 1)
    scan_ring_kernel(const X* __restrict__ x, DT* __restrict__ delta, const float* __restrict__ dt_bias, bool raw_dt,
                     const float* __restrict__ A, const float* __restrict__ B, int64_t ldb,
                     const float* __restrict__ C, int64_t ldc, const float* __restrict__ Dskip, int64_t T,
                     int64_t D, int N, float* __restrict__ y, float* __restrict__ h_final, ScanGate gate) {
  using S = Shape<CG, X, DT, kGated>;
  constexpr int J = S::J, NT = S::NT, W = S::W, CN = S::CN;
  extern __shared__ __align__(16) unsigned char smem[];
  float* const Pagg = reinterpret_cast<float*>(smem);  // [J][CN] sub-chunk decays
  float* const Hagg = Pagg + J * CN;                    // [J][CN] end states, then entering states
  unsigned long long* const mailbox = reinterpret_cast<unsigned long long*>(Hagg + J * CN);  // [CN]
  unsigned char* const buffers = smem + S::kAgg + S::kMailbox;

  cg::cluster_group cluster = cg::this_cluster();
  const unsigned rank = cluster.block_rank();
  unsigned long long* const peer_mailbox = cluster.map_shared_rank(mailbox, rank ^ 1u);

  const int tid = threadIdx.x;
  const int c = tid % CG, j = tid / CG;
  const int64_t c0 = int64_t{blockIdx.x >> 1} * CG;
  const int64_t ch = c0 + c;
  const bool active = ch < D;
  const int cols = static_cast<int>(min(int64_t{CG}, D - c0));
  const int64_t nw = (T + W - 1) / W;
  const int64_t nk = nw > rank ? (nw - rank + 1) / 2 : 0;  // this block's windows: rank, rank + 2, ...

  for (int i = tid; i < CN; i += NT) mailbox[i] = ~0ull;  // no window's tag
  cluster.sync();  // both mailboxes cleared before either block writes to the other's

  const auto buffer = [&](int b) { return buffers + b * S::kBuffer; };
  const auto load = [&](int64_t k, int b) {
    const int64_t t0 = (rank + 2 * k) * W;
    const int rows = static_cast<int>(min(int64_t{W}, T - t0));
    float* const Bs = reinterpret_cast<float*>(buffer(b));
    float* const Cs = Bs + W * NS;
    DT* const dts = reinterpret_cast<DT*>(Cs + W * NS);
    X* const xs = reinterpret_cast<X*>(dts + W * CG);
    stage_rows<NT, W>(Bs, B + t0 * ldb, ldb, rows, N);
    stage_rows<NT, W>(Cs, C + t0 * ldc, ldc, rows, N);
    stage_tile<NT, W, CG>(dts, delta + t0 * D + c0, D, rows, cols);
    stage_tile<NT, W, CG>(xs, x + t0 * D + c0, D, rows, cols);
    if (kGated)
      stage_tile<NT, W, CG>(reinterpret_cast<uint16_t*>(xs + W * CG), gate.z + t0 * gate.ldz + c0, gate.ldz, rows,
                            cols);
  };
  if (nk > 0) load(0, 0);
  cp_async_commit();

  float a[NS];
#pragma unroll
  for (int n = 0; n < NS; ++n) a[n] = (active && n < N) ? A[ch * N + n] * kLog2e : 0.0f;
  const float dskip = active ? Dskip[ch] : 0.0f;
  constexpr bool k16 = std::is_same_v<DT, uint16_t>;
  const bool finish = k16 || raw_dt;  // bf16 dt is always dt_proj's raw output
  const float dtb = finish && active && dt_bias ? dt_bias[ch] : 0.0f;

  for (int64_t k = 0; k < nk; ++k) {
    const int64_t w = rank + 2 * k;
    const int64_t t0 = w * W;
    const int b = static_cast<int>(k & 1);
    cp_async_wait<0>();
    __syncthreads();  // window k has landed for every thread, and every thread is done with k - 1
    if (k + 1 < nk) load(k + 1, b ^ 1);
    cp_async_commit();
    const float* const Bs = reinterpret_cast<const float*>(buffer(b));
    const float* const Cs = Bs + W * NS;
    DT* const dts = reinterpret_cast<DT*>(const_cast<float*>(Cs + W * NS));
    const X* const xs = reinterpret_cast<const X*>(dts + W * CG);
    const uint16_t* const zs = reinterpret_cast<const uint16_t*>(xs + W * CG);

    // 1. The sub-chunk from a zero state; its decays kept.
    float dA[kS][NS], h[NS];
#pragma unroll
    for (int n = 0; n < NS; ++n) h[n] = 0.0f;
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      const int p = j * kS + s;
      const int64_t t = t0 + p;
      float dt = ld_act(dts, p * CG + c);
      const float xv = ld_act(xs, p * CG + c);
      if (finish) {  // Δ from the raw dt, back to memory and to the tile (step 3 reads it)
        if (active && t < T) {
          if constexpr (k16) {
            const uint16_t bits = bf16_bits_packed(softplus_fast(dt + dtb));
            delta[t * D + ch] = bits;
            dts[p * CG + c] = bits;
            dt = bf16_float(bits);
          } else {
            dt = softplus(dt + dtb);
            delta[t * D + ch] = dt;
            dts[p * CG + c] = dt;
          }
        } else {
          dt = 0.0f;  // past T or D: no decay, no input
          dts[p * CG + c] = DT(0);
        }
      }
      const float dx = dt * xv;
#pragma unroll
      for (int q = 0; q < NS / 4; ++q) {
        const float4 b4 = reinterpret_cast<const float4*>(Bs + p * NS)[q];
        const float bq[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int n = 4 * q + r;
          dA[s][n] = exp2_ftz(dt * a[n]);
          h[n] = fmaf(dA[s][n], h[n], dx * bq[r]);
        }
      }
    }
#pragma unroll
    for (int q = 0; q < NS / 4; ++q) {
      float P[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int n = 4 * q + r;
        P[r] = dA[0][n];
#pragma unroll
        for (int s = 1; s < kS; ++s) P[r] *= dA[s][n];
      }
      reinterpret_cast<float4*>(Pagg + j * CN + c * NS)[q] = make_float4(P[0], P[1], P[2], P[3]);
      reinterpret_cast<float4*>(Hagg + j * CN + c * NS)[q] = make_float4(h[4 * q], h[4 * q + 1], h[4 * q + 2], h[4 * q + 3]);
    }
    __syncthreads();

    // 2. The fold over the sub-chunks, from the state entering the window.
    for (int f = tid; f < CN; f += NT) {
      float H = 0.0f;
      if (w > 0) {
        unsigned long long v;
        do v = load_word(mailbox + f);
        while (static_cast<unsigned>(v >> 32) != static_cast<unsigned>(w));
        H = __uint_as_float(static_cast<unsigned>(v));
      }
#pragma unroll 8
      for (int i = 0; i < J; ++i) {
        const float hi = Hagg[i * CN + f], pi = Pagg[i * CN + f];
        Hagg[i * CN + f] = H;
        H = fmaf(pi, H, hi);
      }
      if (w + 1 < nw) {
        store_word(peer_mailbox + f, static_cast<unsigned long long>(w + 1) << 32 | __float_as_uint(H));
      } else if (h_final) {
        const int64_t cc = c0 + f / NS;
        const int n = f % NS;
        if (cc < D && n < N) h_final[cc * N + n] = H;
      }
    }
    __syncthreads();

    // 3. The sub-chunk again from its entering state, on the kept decays.
#pragma unroll
    for (int q = 0; q < NS / 4; ++q) {
      const float4 e = reinterpret_cast<const float4*>(Hagg + j * CN + c * NS)[q];
      h[4 * q] = e.x, h[4 * q + 1] = e.y, h[4 * q + 2] = e.z, h[4 * q + 3] = e.w;
    }
#pragma unroll
    for (int s = 0; s < kS; ++s) {
      const int p = j * kS + s;
      const int64_t t = t0 + p;
      const float dt = ld_act(dts, p * CG + c);
      const float xv = ld_act(xs, p * CG + c);
      const float dx = dt * xv;
      float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int q = 0; q < NS / 4; ++q) {
        const float4 b4 = reinterpret_cast<const float4*>(Bs + p * NS)[q];
        const float4 c4 = reinterpret_cast<const float4*>(Cs + p * NS)[q];
        const float bq[4] = {b4.x, b4.y, b4.z, b4.w}, cq[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int n = 4 * q + r;
          h[n] = fmaf(dA[s][n], h[n], dx * bq[r]);
          part[r] += h[n] * cq[r];
        }
      }
      if (active && t < T) {
        const float yv = ((part[0] + part[1]) + (part[2] + part[3])) + dskip * xv;
        if constexpr (kGated)
          gate.y16[t * D + ch] = bf16_bits(yv * silu_fast(bf16_float(zs[p * CG + c])));  // silu_gate's bits
        else
          y[t * D + ch] = yv;
      }
    }
  }
  cp_async_wait<0>();
  cluster.sync();  // neither block leaves while the other may still write to its mailbox
}

template <int CG, class X, class DT, bool kGated>
void launch(const X* x, DT* delta, const float* dt_bias, bool raw_dt, const float* A, const float* B, int64_t ldb,
            const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N, float* y,
            float* h_final, cudaStream_t stream, int layer, const ScanGate& gate) {
  using S = Shape<CG, X, DT, kGated>;
  const auto kernel = scan_ring_kernel<CG, X, DT, kGated>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(S::kBytes)),
        "selective_scan (one pass, shared memory attribute)", layer);
  const int64_t groups = (D + CG - 1) / CG;
  kernel<<<static_cast<unsigned>(2 * groups), S::NT, S::kBytes, stream>>>(
      x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, static_cast<int>(N), y, h_final, gate);
  check_launch("selective_scan (one pass)", layer, stream);
}

}  // namespace
#endif

template <class X, class DT>
bool selective_scan_ring(const X* x, DT* delta, const float* dt_bias, bool raw_dt, const float* A, const float* B,
                         int64_t ldb, const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N,
                         float* y, float* h_final, cudaStream_t stream, int layer, const ScanGate& gate) {
#if defined(LATIM_SM90A)
  const bool gated = gate.y16 != nullptr;
  if (N > NS || N % 4 != 0 || D % 8 != 0) return false;
  if (!aligned16(x) || !aligned16(delta) || (gated && (gate.ldz % 8 != 0 || !aligned16(gate.z)))) return false;
  if (ldb % 4 != 0 || ldc % 4 != 0 || !aligned16(B) || !aligned16(C)) return false;
  int dev = 0, major = 0, sms = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice", layer);
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute", layer);
  if (major < 9) return false;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute", layer);
  // The narrowest channel group whose pairs of blocks all fit on the GPU at once (one block
  // per SM): narrower groups mean longer windows, wider ones fewer blocks reading B and C.
  const auto fits = [&](int64_t cg) { return 2 * ((D + cg - 1) / cg) <= sms; };
  const auto go = [&](auto cg_) {
    constexpr int CG = decltype(cg_)::value;
    if (gated) launch<CG, X, DT, true>(x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, stream, layer, gate);
    else launch<CG, X, DT, false>(x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, stream, layer, gate);
  };
  if (fits(8)) go(std::integral_constant<int, 8>{});
  else if (fits(16)) go(std::integral_constant<int, 16>{});
  else if (fits(24)) go(std::integral_constant<int, 24>{});
  else go(std::integral_constant<int, 32>{});
  return true;
#else
  return false;
#endif
}

template bool selective_scan_ring(const float*, float*, const float*, bool, const float*, const float*, int64_t,
                                  const float*, int64_t, const float*, int64_t, int64_t, int64_t, float*, float*,
                                  cudaStream_t, int, const ScanGate&);
template bool selective_scan_ring(const uint16_t*, float*, const float*, bool, const float*, const float*, int64_t,
                                  const float*, int64_t, const float*, int64_t, int64_t, int64_t, float*, float*,
                                  cudaStream_t, int, const ScanGate&);
template bool selective_scan_ring(const uint16_t*, uint16_t*, const float*, bool, const float*, const float*, int64_t,
                                  const float*, int64_t, const float*, int64_t, int64_t, int64_t, float*, float*,
                                  cudaStream_t, int, const ScanGate&);

}  // namespace latim::cuda::detail
