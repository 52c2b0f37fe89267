// Mamba-1 selective scan: one thread per channel holds the channel's N states in registers;
// a block of 128 channels takes one chunk of positions. Three launches: chunk states from
// zero, the chain over chunks, then the scan from each chunk's incoming state.
//
// A block stages its chunk kS positions at a time through shared memory: B (and C), Δ, x
// (and z) of stage s + 1 are copied (cp.async, 16-byte pieces) while stage s is scanned, so
// the scan's inner loop reads shared memory only and does no address arithmetic; shapes the
// 16-byte pieces do not fit (widths not a multiple of 8, B not 16-byte aligned) are staged by
// plain loads instead.
//
// The first launch can also finish Δ: given dt_proj's raw output and the bias, each thread
// turns its channel's values into softplus(dt + bias) as it reads them and writes them back,
// which saves softplus_rows' pass over [T, D]. x is fp32 or (bf16 mode) bf16. In the bf16
// mode's untraced, unsharded layers the raw dt comes in bf16 (dt_proj's bf16 output): the
// first pass writes Δ back in bf16 (softplus_fast, then rounded) and uses that rounded Δ
// itself, so both passes see the same Δ, and Δ never goes through memory in fp32.
#include <cstdint>
#include <type_traits>

#include "cp_async.cuh"
#include "cuda_check.hpp"
#include "device_buffer.hpp"
#include "device_math.cuh"
#include "selective_scan.hpp"

namespace latim::cuda {

namespace {

constexpr int64_t kChunk = 256;  // positions per chunk
constexpr int kThreads = 128;    // channels per block
constexpr int kS = 32;           // positions per stage
constexpr int kStages = 2;       // stages in shared memory: s scanned while s + 1 lands
constexpr float kLog2e = 1.4426950408889634f;

// Bytes of shared memory a launch needs: kStages stages of B (and C) rows [kS][NS] and of
// the Δ, x (and z) tiles [kS][kThreads].
template <int NS, bool kWriteY, class X, class DT>
int64_t smem_bytes(bool gated) {
  const int64_t stage = int64_t{kS} * NS * 4 * (kWriteY ? 2 : 1) +
                        int64_t{kS} * kThreads * int64_t(sizeof(DT) + sizeof(X) + (kWriteY && gated ? 2 : 0));
  return kStages * stage;
}

// Stages rows [len][kThreads] of a [.][ld] activation (src at the stage's first row and the
// block's first channel, `width` channels valid) into dst: 16-byte copies when `vec` (ld,
// width and the pointers multiples of 16 bytes), each thread taking fixed pieces of fixed
// rows, else plain loads and stores. Rows past len and channels past width are not read.
template <class T>
__device__ __forceinline__ void stage_tile(T* dst, const T* src, int64_t ld, int len, int64_t width, bool vec) {
  if (vec) {
    constexpr int per = 16 / int(sizeof(T));
    constexpr int pieces = kThreads / per;  // per row
    constexpr int rows = kThreads / pieces;  // per sweep of the block
    const int r = threadIdx.x / pieces, q = threadIdx.x % pieces;
    const bool col_ok = q * per < width;
    const T* const g = src + r * ld + q * per;
    T* const d = dst + r * kThreads + q * per;
#pragma unroll
    for (int j = 0; j < kS / rows; ++j) {
      const bool ok = col_ok && r + j * rows < len;
      cp_async16_or_zero(d + j * rows * kThreads, ok ? g + j * rows * ld : src, ok);
    }
  } else {
    const int c = threadIdx.x;
    for (int p = 0; p < len; ++p) dst[p * kThreads + c] = c < width ? src[p * ld + c] : T(0);
  }
}
// The same for rows [len][NS] of B or C (N of them valid; vec: N, ld and the pointer
// multiples of 4 floats).
template <int NS>
__device__ __forceinline__ void stage_rows(float* dst, const float* src, int64_t ld, int len, int N, bool vec) {
  if (vec) {
    constexpr int pieces = NS / 4;
    constexpr int rows = kThreads / pieces;
    const int r = threadIdx.x / pieces, q = threadIdx.x % pieces;
#pragma unroll
    for (int j = 0; j < (kS + rows - 1) / rows; ++j) {
      if (r + j * rows >= kS) break;
      const bool ok = r + j * rows < len && 4 * q < N;
      cp_async16_or_zero(dst + (r + j * rows) * NS + 4 * q, ok ? src + (r + j * rows) * ld + 4 * q : src, ok);
    }
  } else {
    for (int i = threadIdx.x; i < len * NS; i += kThreads) {
      const int p = i / NS, n = i % NS;
      dst[p * NS + n] = n < N ? src[p * ld + n] : 0.0f;
    }
  }
}

// DT: float or uint16_t (bf16 bits): Δ, or raw dt finished in place by the first pass (in
// bf16: rounded to bf16, and the rounded value used). chunk_len is always kChunk: passed at
// run time because the build with the compile-time constant measured 2 % slower (Mamba-1
// bf16 forward at 64K, H100, same call; not investigated further).
template <int NS, bool kFromState, bool kWriteY, bool kGated, class X, class DT>
__global__ void __launch_bounds__(kThreads, kWriteY ? 4 : 5)
    scan_chunk_kernel(const X* __restrict__ x, DT* __restrict__ delta, const float* __restrict__ dt_bias, bool raw_dt,
                      const float* __restrict__ A, const float* __restrict__ B, int64_t ldb,
                      const float* __restrict__ C, int64_t ldc, const float* __restrict__ Dskip, int64_t T,
                      int64_t D, int N, int64_t chunk_len, bool vec, bool vec_bc, float* __restrict__ state,
                      float* __restrict__ dsum, float* __restrict__ y, ScanGate gate) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr bool gated = kWriteY && kGated;
  float* const Bs = reinterpret_cast<float*>(smem);  // [kStages][kS][NS]
  float* const Cs = Bs + kStages * kS * NS;           // the same (kWriteY)
  DT* const dts = reinterpret_cast<DT*>(Cs + (kWriteY ? kStages * kS * NS : 0));  // [kStages][kS][kThreads]
  X* const xs = reinterpret_cast<X*>(dts + kStages * kS * kThreads);
  uint16_t* const zs = reinterpret_cast<uint16_t*>(xs + kStages * kS * kThreads);  // (gated)

  const int tid = threadIdx.x;
  const int64_t c0 = blockIdx.x * int64_t{kThreads};
  const int64_t c = c0 + tid;
  const int64_t width = D - c0;
  const int64_t chunk = blockIdx.y;
  const int64_t t0 = chunk * chunk_len, t1 = min(T, t0 + chunk_len);
  const int nst = static_cast<int>((t1 - t0 + kS - 1) / kS);
  const bool active = c < D;

  const auto load = [&](int s) {
    const int64_t s0 = t0 + int64_t{s} * kS;
    const int len = static_cast<int>(min(int64_t{kS}, t1 - s0));
    const int b = s % kStages;
    stage_rows<NS>(Bs + b * kS * NS, B + s0 * ldb, ldb, len, N, vec_bc);
    if (kWriteY) stage_rows<NS>(Cs + b * kS * NS, C + s0 * ldc, ldc, len, N, vec_bc);
    stage_tile(dts + b * kS * kThreads, delta + s0 * D + c0, D, len, width, vec);
    stage_tile(xs + b * kS * kThreads, x + s0 * D + c0, D, len, width, vec);
    if (gated) stage_tile(zs + b * kS * kThreads, gate.z + s0 * gate.ldz + c0, gate.ldz, len, width, vec);
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nst) load(s);
    cp_async_commit();
  }

  float a[NS], h[NS];
#pragma unroll
  for (int n = 0; n < NS; ++n) {
    a[n] = (active && n < N) ? A[c * N + n] * kLog2e : 0.0f;
    h[n] = (kFromState && active && n < N) ? state[(chunk * D + c) * N + n] : 0.0f;
  }
  const float dskip = active ? Dskip[c] : 0.0f;
  // Δ from dt_proj's raw output (first launch only; the output pass reads the finished Δ).
  constexpr bool k16 = std::is_same_v<DT, uint16_t>;
  const bool finish = !kFromState && (k16 || raw_dt);  // bf16 dt is always dt_proj's raw output
  const float dtb = finish && active && dt_bias ? dt_bias[c] : 0.0f;
  float ds = 0.0f;

  for (int s = 0; s < nst; ++s) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage s has landed for every thread; stage s - 1's buffer is free
    if (s + kStages - 1 < nst) load(s + kStages - 1);
    cp_async_commit();
    if (!active) continue;
    const int64_t s0 = t0 + int64_t{s} * kS;
    const int len = static_cast<int>(min(int64_t{kS}, t1 - s0));
    const int b = s % kStages;
    const float* const Bb = Bs + b * kS * NS;
    const float* const Cb = Cs + b * kS * NS;
    const DT* const dtb_s = dts + b * kS * kThreads + tid;
    const X* const xb = xs + b * kS * kThreads + tid;
    const uint16_t* const zb = zs + b * kS * kThreads + tid;
    DT* const dw = delta + s0 * D + c;  // Δ written back (first launch, raw dt)
    float* const yp = gated ? nullptr : y + s0 * D + c;
    uint16_t* const y16p = gated ? gate.y16 + s0 * D + c : nullptr;
    const auto position = [&](int p) {
      float dt = ld_act(dtb_s, p * kThreads);
      const float xv = ld_act(xb, p * kThreads);
      if (finish) {
        if constexpr (k16) {  // rounded to bf16 next: the fast form
          const uint16_t bits = bf16_bits_packed(softplus_fast(dt + dtb));
          dw[p * D] = bits;
          dt = bf16_float(bits);
        } else {
          dt = softplus(dt + dtb);
          dw[p * D] = dt;
        }
      }
      const float dx = dt * xv;
      ds += dt;
      float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // four short FMA chains instead of one long one
#pragma unroll
      for (int q = 0; q < NS / 4; ++q) {  // 16-byte loads of B and C (shared-memory broadcasts)
        const float4 b4 = reinterpret_cast<const float4*>(Bb + p * NS)[q];
        const float bq[4] = {b4.x, b4.y, b4.z, b4.w};
        float4 c4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (kWriteY) c4 = reinterpret_cast<const float4*>(Cb + p * NS)[q];
        const float cq[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int n = 4 * q + r;
          h[n] = exp2_ftz(dt * a[n]) * h[n] + dx * bq[r];
          if (kWriteY) part[r] += h[n] * cq[r];
        }
      }
      if (kWriteY) {
        const float yv = ((part[0] + part[1]) + (part[2] + part[3])) + dskip * xv;
        if (gated) y16p[p * D] = bf16_bits(yv * silu_fast(bf16_float(zb[p * kThreads])));  // silu_gate's bits
        else yp[p * D] = yv;
      }
    };
    if (len == kS) {
#pragma unroll 4
      for (int p = 0; p < kS; ++p) position(p);
    } else {
      for (int p = 0; p < len; ++p) position(p);
    }
  }
  cp_async_wait<0>();
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

template <int NS, bool kFromState, bool kWriteY, class X, class DT>
void launch(dim3 grid, cudaStream_t stream, bool gated, const X* x, DT* delta, const float* dt_bias, bool raw_dt,
            const float* A, const float* B, int64_t ldb, const float* C, int64_t ldc, const float* Dskip, int64_t T,
            int64_t D, int N, int64_t chunk_len, bool vec, bool vec_bc, float* state, float* dsum, float* y,
            const ScanGate& gate, int layer) {
  auto kernel = scan_chunk_kernel<NS, kFromState, kWriteY, false, X, DT>;
  if constexpr (kWriteY)
    if (gated) kernel = scan_chunk_kernel<NS, kFromState, kWriteY, true, X, DT>;
  const int64_t bytes = smem_bytes<NS, kWriteY, X, DT>(gated);
  if (bytes > 48 * 1024)  // above the default limit (as the other kernels do, at each launch)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
          "selective_scan (shared memory attribute)", layer);
  kernel<<<grid, kThreads, bytes, stream>>>(x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, N, chunk_len,
                                            vec, vec_bc, state, dsum, y, gate);
}

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
  const bool gated = gate.y16 != nullptr;
  const bool vec = D % 8 == 0 && aligned16(x) && aligned16(delta) &&
                   (!gated || (gate.ldz % 8 == 0 && aligned16(gate.z)));
  const bool vec_bc = N % 4 == 0 && ldb % 4 == 0 && ldc % 4 == 0 && aligned16(B) && aligned16(C);
  if (nchunks == 1 && !h_final) {
    launch<NS, false, true>(grid, stream, gated, x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, n, kChunk,
                            vec, vec_bc, state, dsum, y, gate, layer);
    check_launch("selective_scan", layer, stream);
    return;
  }
  launch<NS, false, false>(grid, stream, false, x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, n, kChunk,
                           vec, vec_bc, state, dsum, y, gate, layer);
  check_launch("selective_scan (chunk states)", layer, stream);
  chain_chunks_kernel<<<static_cast<unsigned>((D * N + 255) / 256), 256, 0, stream>>>(A, D, N, nchunks, state, dsum,
                                                                                      h_final);
  check_launch("selective_scan (chunk chain)", layer, stream);
  launch<NS, true, true>(grid, stream, gated, x, delta, nullptr, false, A, B, ldb, C, ldc, Dskip, T, D, n, kChunk, vec,
                         vec_bc, state, dsum, y, gate, layer);
  check_launch("selective_scan (output)", layer, stream);
}


// ---------------------------------------------------------------------------------------
// The one-pass scan (bf16 mode, untraced layers): each (channel, state) is one lane, which
// scans the whole sequence in order, so every decay is computed once. The two passes above
// compute each twice and, bound by the special-function unit, cannot reach the forward's
// target (docs/performance-cuda.md, eleventh session). A block takes 6 · 32 / NS channels
// and has four kinds of warps, each in its own loop over the stages of kS positions, handing
// stages over through mbarriers so that no warp waits on another's latency:
//   - one copy warp: cp.async of the raw stage (dt, x, z tiles [kS][kCB] in bf16, B and C
//     rows [kS][NS] in fp32) into a ring of kRaw slots;
//   - two prep warps: Δ and Δx of the stage (the two-pass scan's bits: softplus_fast, rounded
//     to bf16) into [channel][kS] rows, kPrep slots;
//   - six scan warps (32 / NS channels each, one state per lane): per position one
//     exponential, h = 2^(Δa) h + Δx B, and h into a [kS][channels × NS] tile, kHs slots;
//   - three output warps: per (position, channel) the sum of C·h over the states (the
//     two-pass scan's order of sums), D·x, the gate, the store.
// With one block per SM the four schedulers hold 2 scan + 1 prep (0 and 1), 1 scan + the
// copy warp + 1 output (2), and 1 scan + 2 output warps (3). Any T; channels past D and
// states past N scan zeros.
namespace onepass {

constexpr int kScanWarps = 6;
constexpr int kThreads = 32 * 12;  // 6 scan, copy, output, 2 prep, 2 output
constexpr int kCopyWarp = 6;
constexpr int kPrepThreads = 64, kOutThreads = 96;
constexpr int kS = 32;    // positions per stage
constexpr int kRaw = 8;   // raw input slots
constexpr int kPrep = 4;  // Δ, Δx slots
constexpr int kHs = 3;    // state tiles
// Warp -> role index: prep warps 8, 9 -> 0, 1; output warps 7, 10, 11 -> 0, 1, 2.
__device__ __forceinline__ int prep_index(int warp) { return warp == 8 ? 0 : warp == 9 ? 1 : -1; }
__device__ __forceinline__ int out_index(int warp) { return warp == 7 ? 0 : warp == 10 ? 1 : warp == 11 ? 2 : -1; }

template <int NS>
struct Geo {
  static constexpr int kCW = 32 / NS;                // channels per scan warp
  static constexpr int kCB = kScanWarps * kCW;       // channels per block
  static constexpr int kPerPrep = kCB / 2;           // channels per prep thread and position
  static constexpr int kPerOut = kCB / 3;            // channels per output thread and position
  static constexpr int kBRow = NS + 4;               // B and C rows (floats; 16-byte multiples)
  static constexpr int kHRow = kCB * NS + 4;         // state rows: [position][channel, state]
  static constexpr int kPRow = kS + 4;               // Δ and Δx rows: [channel][position]
  static constexpr int kRows = kS * kBRow * 4;       // bytes of one B or C tile
  static constexpr int kAct = kS * kCB * 2;          // bytes of one bf16 tile
  static constexpr int kRawBytes = 2 * kRows + 3 * kAct;
  static constexpr int kPrepFloats = 2 * kCB * kPRow;
  static constexpr int kHFloats = kS * kHRow;
  static constexpr int kBars = 2 * kRaw + 2 * kPrep + 2 * kHs;
  static constexpr int kSmem = kRaw * kRawBytes + (kPrep * kPrepFloats + kHs * kHFloats) * 4 + 8 * kBars;
  static_assert(kRows % 16 == 0 && kRawBytes % 16 == 0 && kHRow % 4 == 0 && kPerOut % 2 == 0);
};

__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(void* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_arrive(void* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(void* bar, unsigned parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1, %2;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(smem_addr(bar)),
      "r"(parity), "r"(0x989680)
      : "memory");
}
// The barrier's next arrival happens when this thread's earlier cp.async copies have landed.
__device__ __forceinline__ void mbar_arrive_on_copies(void* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
// 4 or 8 bytes global -> shared through L1, zeros where !ok (src then not read).
template <int kBytes>
__device__ __forceinline__ void cp_small_or_zero(void* dst, const void* src, bool ok) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(smem_addr(dst)), "l"(src), "n"(kBytes),
               "r"(ok ? kBytes : 0)
               : "memory");
}

// How the helpers copy the bf16 tiles: pieces of 8 or 4 bytes (cp.async), or plain loads
// (odd widths, unaligned rows).
enum class Copy { k8, k4, kPlain };

// One raw stage: B and C rows, then the dt, x (and z) tiles, by the copy warp's lane ht.
template <int NS, bool kGated>
__device__ __forceinline__ void stage_raw(unsigned char* slot, int ht, int64_t s0, int len, int64_t c0, int64_t D,
                                          int N, const uint16_t* x, const uint16_t* dt, const float* B, int64_t ldb,
                                          const float* C, int64_t ldc, const ScanGate& gate, Copy mode, bool vec_bc) {
  using G = Geo<NS>;
  float* const Bs = reinterpret_cast<float*>(slot);
  float* const Cs = reinterpret_cast<float*>(slot + G::kRows);
  uint16_t* const tiles = reinterpret_cast<uint16_t*>(slot + 2 * G::kRows);  // dt, x, z
  const auto rows = [&](float* dst, const float* src, int64_t ld) {
    if (vec_bc) {
      constexpr int per = NS / 4;
      for (int i = ht; i < kS * per; i += 32) {
        const int r = i / per, q = i % per;
        const bool ok = r < len && 4 * q < N;
        cp_async16_or_zero(dst + r * G::kBRow + 4 * q, ok ? src + (s0 + r) * ld + 4 * q : src, ok);
      }
    } else {
      for (int i = ht; i < kS * NS; i += 32) {
        const int r = i / NS, n = i % NS;
        const bool ok = r < len && n < N;
        cp_small_or_zero<4>(dst + r * G::kBRow + n, ok ? src + (s0 + r) * ld + n : src, ok);
      }
    }
  };
  rows(Bs, B, ldb);
  rows(Cs, C, ldc);
  const auto tile = [&](uint16_t* dst, const uint16_t* src, int64_t ld) {
    if (mode == Copy::kPlain) {
      for (int i = ht; i < kS * G::kCB; i += 32) {
        const int r = i / G::kCB, c = i % G::kCB;
        dst[i] = r < len && c0 + c < D ? src[(s0 + r) * ld + c0 + c] : uint16_t{0};
      }
      return;
    }
    const auto pieces = [&](auto bytes) {
      constexpr int b = decltype(bytes)::value, per = b / 2, n = G::kCB / per;
      for (int i = ht; i < kS * n; i += 32) {
        const int r = i / n, q = i % n;
        const bool ok = r < len && c0 + q * per < D;
        cp_small_or_zero<b>(dst + r * G::kCB + q * per, ok ? src + (s0 + r) * ld + c0 + q * per : src, ok);
      }
    };
    if constexpr (G::kCB % 4 == 0)
      if (mode == Copy::k8) return pieces(std::integral_constant<int, 8>{});
    pieces(std::integral_constant<int, 4>{});
  };
  tile(tiles, dt, D);
  tile(tiles + kS * G::kCB, x, D);
  if (kGated) tile(tiles + 2 * kS * G::kCB, gate.z, gate.ldz);
}

// The copy warp's pieces of a whole stage (every position inside T) where B and C take
// 16-byte copies and the bf16 tiles kTB-byte ones: the same pieces for every stage, so each
// lane keeps their offsets from the stage's first row and issues each copy with one add:
// about 3 instructions a copy, where stage_raw's general loops took 12.
template <int NS, int kTB>
struct WholeStage {
  using G = Geo<NS>;
  static constexpr int kRowB = NS / 4, kNB = kS * kRowB / 32;    // B (and C) pieces per lane
  static constexpr int kPer = kTB / 2, kRowT = G::kCB / kPer, kNT = kS * kRowT / 32;  // per tile
  static_assert(kS * kRowB % 32 == 0 && kS * kRowT % 32 == 0 && G::kCB % kPer == 0);
  int ob[kNB], oc[kNB], ot[kNT], oz[kNT];  // source offsets (elements) from the stage's first row
  unsigned short db[kNB], dtl[kNT];        // destination offsets (bytes) in the B and tile areas
  __device__ WholeStage(int lane, int64_t ldb, int64_t ldc, int64_t D, int64_t ldz) {
#pragma unroll
    for (int j = 0; j < kNB; ++j) {
      const int i = lane + 32 * j, r = i / kRowB, q = i % kRowB;
      ob[j] = static_cast<int>(r * ldb + 4 * q);
      oc[j] = static_cast<int>(r * ldc + 4 * q);
      db[j] = static_cast<unsigned short>((r * G::kBRow + 4 * q) * 4);
    }
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
      const int i = lane + 32 * j, r = i / kRowT, q = i % kRowT;
      ot[j] = static_cast<int>(r * D + q * kPer);
      oz[j] = static_cast<int>(r * ldz + q * kPer);
      dtl[j] = static_cast<unsigned short>((r * G::kCB + q * kPer) * 2);
    }
  }
  template <bool kGated>
  __device__ __forceinline__ void issue(unsigned char* slot, int64_t s0, int64_t c0, const uint16_t* x,
                                        const uint16_t* dt, const float* B, int64_t ldb, const float* C, int64_t ldc,
                                        int64_t D, const ScanGate& gate) const {
    const float* const b0 = B + s0 * ldb;
    const float* const cc0 = C + s0 * ldc;
#pragma unroll
    for (int j = 0; j < kNB; ++j) {
      cp_async16(slot + db[j], b0 + ob[j]);
      cp_async16(slot + G::kRows + db[j], cc0 + oc[j]);
    }
    unsigned char* const tiles = slot + 2 * G::kRows;
    const uint16_t* const d0 = dt + s0 * D + c0;
    const uint16_t* const x0 = x + s0 * D + c0;
    const uint16_t* const z0 = kGated ? gate.z + s0 * gate.ldz + c0 : nullptr;
#pragma unroll
    for (int j = 0; j < kNT; ++j) {
      cp_small_or_zero<kTB>(tiles + dtl[j], d0 + ot[j], true);
      cp_small_or_zero<kTB>(tiles + G::kAct + dtl[j], x0 + ot[j], true);
      if (kGated) cp_small_or_zero<kTB>(tiles + 2 * G::kAct + dtl[j], z0 + oz[j], true);
    }
  }
};

template <int NS, bool kGated>
__global__ void __launch_bounds__(kThreads, 1)
    scan_onepass_kernel(const uint16_t* __restrict__ x, const uint16_t* __restrict__ dt,
                        const float* __restrict__ dt_bias, const float* __restrict__ A, const float* __restrict__ B,
                        int64_t ldb, const float* __restrict__ C, int64_t ldc, const float* __restrict__ Dskip,
                        int64_t T, int64_t D, int N, Copy mode, bool vec_bc, bool pairs, float* __restrict__ y,
                        float* __restrict__ h_final, ScanGate gate) {
  using G = Geo<NS>;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* const raw = smem;                                          // [kRaw][kRawBytes]
  float* const prep = reinterpret_cast<float*>(smem + kRaw * G::kRawBytes);  // [kPrep][Δ, Δx][kCB][kPRow]
  float* const hs = prep + kPrep * G::kPrepFloats;                           // [kHs][kS][kHRow]
  uint64_t* const full = reinterpret_cast<uint64_t*>(hs + kHs * G::kHFloats);  // raw slot landed
  uint64_t* const rfree = full + kRaw;                                           // raw slot read
  uint64_t* const ready = rfree + kRaw;                                          // Δ, Δx written
  uint64_t* const pfree = ready + kPrep;                                         // Δ, Δx read
  uint64_t* const done = pfree + kPrep;                                          // states written
  uint64_t* const hfree = done + kHs;                                            // states read
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t c0 = blockIdx.x * int64_t{G::kCB};
  const int nst = static_cast<int>((T + kS - 1) / kS);
  const auto slot = [&](int s) { return raw + (s % kRaw) * G::kRawBytes; };
  // Waits for stage s's use of a ring barrier (slot s % ring), and for the one before it.
  const auto wait_use = [](uint64_t* bars, int ring, int s) { mbar_wait(&bars[s % ring], (s / ring) & 1); };
  if (threadIdx.x == 0) {
    for (int i = 0; i < kRaw; ++i) mbar_init(&full[i], 32), mbar_init(&rfree[i], kOutThreads);
    for (int i = 0; i < kPrep; ++i) mbar_init(&ready[i], kPrepThreads), mbar_init(&pfree[i], 32 * kScanWarps);
    for (int i = 0; i < kHs; ++i) mbar_init(&done[i], 32 * kScanWarps), mbar_init(&hfree[i], kOutThreads);
  }
  __syncthreads();

  if (warp < kScanWarps) {
    const int cl = warp * G::kCW + lane / NS, n = lane % NS;
    const int64_t c = c0 + cl;
    const float a = c < D && n < N ? A[c * N + n] * kLog2e : 0.0f;
    float h = 0.0f;
    for (int s = 0; s < nst; ++s) {
      wait_use(ready, kPrep, s);
      wait_use(full, kRaw, s);  // (already waited by the prep warps)
      if (s >= kHs) wait_use(hfree, kHs, s - kHs);
      const float* const dl = prep + (s % kPrep) * G::kPrepFloats + cl * G::kPRow;
      const float* const dxl = dl + G::kCB * G::kPRow;
      const float* const Bs = reinterpret_cast<const float*>(slot(s)) + n;
      float* const hp = hs + (s % kHs) * G::kHFloats + cl * NS + n;
      // The stage's Δ, Δx and B into registers first: the compiler cannot move loads past
      // the state stores (all shared memory), so loads between them would each wait.
      float dv[kS], xv[kS], bv[kS];
#pragma unroll
      for (int p = 0; p < kS; p += 4) {
        const float4 d4 = *reinterpret_cast<const float4*>(dl + p);
        const float4 x4 = *reinterpret_cast<const float4*>(dxl + p);
        dv[p] = d4.x, dv[p + 1] = d4.y, dv[p + 2] = d4.z, dv[p + 3] = d4.w;
        xv[p] = x4.x, xv[p + 1] = x4.y, xv[p + 2] = x4.z, xv[p + 3] = x4.w;
      }
#pragma unroll
      for (int p = 0; p < kS; ++p) bv[p] = Bs[p * G::kBRow];
      mbar_arrive(&pfree[s % kPrep]);
#pragma unroll
      for (int p = 0; p < kS; ++p) {
        h = exp2_ftz(dv[p] * a) * h + xv[p] * bv[p];
        hp[p * G::kHRow] = h;
      }
      mbar_arrive(&done[s % kHs]);
    }
    if (h_final && c < D && n < N) h_final[c * N + n] = h;
    return;
  }

  if (warp == kCopyWarp) {
    // Whole stages of whole pieces by the fast path; the last stage, and shapes the 16-byte B
    // and C copies or the tile pieces do not fit, by stage_raw's general loops.
    constexpr int kTB = G::kCB % 4 == 0 ? 8 : 4;
    const bool fast = vec_bc && (mode == Copy::k8 || (mode == Copy::k4 && kTB == 4)) && c0 + G::kCB <= D;
    const WholeStage<NS, kTB> whole(lane, ldb, ldc, D, kGated ? gate.ldz : 0);
    for (int s = 0; s < nst; ++s) {
      if (s >= kRaw) wait_use(rfree, kRaw, s - kRaw);
      const int64_t s0 = int64_t{s} * kS;
      if (fast && s0 + kS <= T)
        whole.template issue<kGated>(slot(s), s0, c0, x, dt, B, ldb, C, ldc, D, gate);
      else
        stage_raw<NS, kGated>(slot(s), lane, s0, static_cast<int>(min(int64_t{kS}, T - s0)), c0, D, N, x, dt, B, ldb,
                              C, ldc, gate, mode, vec_bc);
      if (mode == Copy::kPlain) {  // plain stores beside the copies: wait, then a release
        cp_async_wait<0>();
        mbar_arrive(&full[s % kRaw]);
      } else {
        mbar_arrive_on_copies(&full[s % kRaw]);
      }
    }
    cp_async_wait<0>();
    return;
  }

  const int t = lane;
  if (const int pw = prep_index(warp); pw >= 0) {
    constexpr int kPer = G::kPerPrep;
    const int cb = pw * kPer;
    float bias[kPer];
#pragma unroll
    for (int k = 0; k < kPer; ++k) bias[k] = c0 + cb + k < D && dt_bias ? dt_bias[c0 + cb + k] : 0.0f;
    for (int s = 0; s < nst; ++s) {
      wait_use(full, kRaw, s);
      if (s >= kPrep) wait_use(pfree, kPrep, s - kPrep);
      const bool tin = int64_t{s} * kS + t < T;
      const uint16_t* const tiles = reinterpret_cast<const uint16_t*>(slot(s) + 2 * G::kRows);
      float* const dl = prep + (s % kPrep) * G::kPrepFloats;
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        // The two-pass scan's Δ bits; Δ = 0 past T (x is 0 there, so Δx is too).
        const int cl = cb + k;
        const float d = bf16_float(bf16_bits_packed(softplus_fast(bf16_float(tiles[t * G::kCB + cl]) + bias[k])));
        dl[cl * G::kPRow + t] = tin ? d : 0.0f;
        dl[G::kCB * G::kPRow + cl * G::kPRow + t] = d * bf16_float(tiles[kS * G::kCB + t * G::kCB + cl]);
      }
      mbar_arrive(&ready[s % kPrep]);
    }
    return;
  }

  const int ow = out_index(warp);
  constexpr int kPer = G::kPerOut;
  const int cb = ow * kPer;
  float dskip[kPer];
  bool cok[kPer];
#pragma unroll
  for (int k = 0; k < kPer; ++k) {
    cok[k] = c0 + cb + k < D;
    dskip[k] = cok[k] ? Dskip[c0 + cb + k] : 0.0f;
  }
  for (int s = 0; s < nst; ++s) {
    wait_use(done, kHs, s);
    wait_use(full, kRaw, s);  // (already waited by the prep warps)
    const int64_t s0 = int64_t{s} * kS;
    const unsigned char* const sl = slot(s);
    const float4* const cr = reinterpret_cast<const float4*>(sl + G::kRows) + t * (G::kBRow / 4);
    float cq[NS];
#pragma unroll
    for (int q = 0; q < NS / 4; ++q) {
      const float4 v = cr[q];
      cq[4 * q] = v.x, cq[4 * q + 1] = v.y, cq[4 * q + 2] = v.z, cq[4 * q + 3] = v.w;
    }
    const uint16_t* const tiles = reinterpret_cast<const uint16_t*>(sl + 2 * G::kRows);
    const float* const hrow = hs + (s % kHs) * G::kHFloats + t * G::kHRow;
    float yv[kPer], xv[kPer], zv[kPer];
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int cl = cb + k;
      const float4* const h4 = reinterpret_cast<const float4*>(hrow + cl * NS);
      float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // the two-pass scan's order of sums
#pragma unroll
      for (int q = 0; q < NS / 4; ++q) {
        const float4 v = h4[q];
        part[0] += v.x * cq[4 * q];
        part[1] += v.y * cq[4 * q + 1];
        part[2] += v.z * cq[4 * q + 2];
        part[3] += v.w * cq[4 * q + 3];
      }
      xv[k] = bf16_float(tiles[kS * G::kCB + t * G::kCB + cl]);
      zv[k] = kGated ? bf16_float(tiles[2 * kS * G::kCB + t * G::kCB + cl]) : 0.0f;
      yv[k] = ((part[0] + part[1]) + (part[2] + part[3])) + dskip[k] * xv[k];
    }
    mbar_arrive(&hfree[s % kHs]);
    mbar_arrive(&rfree[s % kRaw]);
    if (s0 + t >= T) continue;
    if (kGated) {
      uint16_t g[kPer];
#pragma unroll
      for (int k = 0; k < kPer; ++k) g[k] = bf16_bits(yv[k] * silu_fast(zv[k]));
      uint16_t* const out = gate.y16 + (s0 + t) * D + c0 + cb;
      if (pairs) {  // whole pairs of channels, 4-byte aligned
#pragma unroll
        for (int k = 0; k < kPer; k += 2)
          if (cok[k]) *reinterpret_cast<uint32_t*>(out + k) = g[k] | uint32_t{g[k + 1]} << 16;
      } else {
#pragma unroll
        for (int k = 0; k < kPer; ++k)
          if (cok[k]) out[k] = g[k];
      }
    } else {
      float* const out = y + (s0 + t) * D + c0 + cb;
#pragma unroll
      for (int k = 0; k < kPer; ++k)
        if (cok[k]) out[k] = yv[k];
    }
  }
}

template <int NS>
void run(const uint16_t* x, const uint16_t* dt, const float* dt_bias, const float* A, const float* B, int64_t ldb,
         const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N, float* y, float* h_final,
         cudaStream_t stream, int layer, const ScanGate& gate) {
  using G = Geo<NS>;
  const bool gated = gate.y16 != nullptr;
  const auto al = [](const void* p, int b) { return reinterpret_cast<uintptr_t>(p) % b == 0; };
  const auto fits = [&](int b) {
    const int per = b / 2;
    return G::kCB % per == 0 && D % per == 0 && al(x, b) && al(dt, b) &&
           (!gated || (gate.ldz % per == 0 && al(gate.z, b)));
  };
  const Copy mode = fits(8) ? Copy::k8 : fits(4) ? Copy::k4 : Copy::kPlain;
  const bool vec_bc = N % 4 == 0 && ldb % 4 == 0 && ldc % 4 == 0 && al(B, 16) && al(C, 16);
  const bool pairs = gated && D % 2 == 0 && al(gate.y16, 4);
  auto kernel = gated ? scan_onepass_kernel<NS, true> : scan_onepass_kernel<NS, false>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, G::kSmem),
        "selective_scan (one pass: shared memory attribute)", layer);
  const unsigned blocks = static_cast<unsigned>((D + G::kCB - 1) / G::kCB);
  kernel<<<blocks, kThreads, G::kSmem, stream>>>(x, dt, dt_bias, A, B, ldb, C, ldc, Dskip, T, D, static_cast<int>(N),
                                                 mode, vec_bc, pairs, y, h_final, gate);
  check_launch("selective_scan (one pass)", layer, stream);
}

}  // namespace onepass

}  // namespace

int64_t selective_scan_work(int64_t T, int64_t D, int64_t N) {
  const int64_t nchunks = (T + kChunk - 1) / kChunk;
  return nchunks * D * N + nchunks * D;
}

namespace {
template <class X, class DT>
void dispatch(const X* x, DT* delta, const float* dt_bias, bool raw_dt, const float* A, const float* B, int64_t ldb,
              const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N, float* y,
              float* h_final, float* work, cudaStream_t stream, int layer, const ScanGate& gate) {
  if (T == 0 || D == 0) return;
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

bool selective_scan_one_pass_pays(int64_t D, int64_t N) {
  if (N > 32 || D <= 0) return false;
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return false;
  const int64_t per_block = onepass::kScanWarps * (N <= 8 ? 4 : N <= 16 ? 2 : 1);
  return 2 * ((D + per_block - 1) / per_block) >= sms;
}

void selective_scan_one_pass(const uint16_t* x, const uint16_t* dt16, const float* dt_bias, const float* A,
                             const float* B, int64_t ldb, const float* C, int64_t ldc, const float* Dskip, int64_t T,
                             int64_t D, int64_t N, float* y, float* h_final, cudaStream_t stream, int layer,
                             const ScanGate& gate) {
  if (T == 0 || D == 0) return;
  if (N <= 8) onepass::run<8>(x, dt16, dt_bias, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, stream, layer, gate);
  else if (N <= 16) onepass::run<16>(x, dt16, dt_bias, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, stream, layer, gate);
  else if (N <= 32) onepass::run<32>(x, dt16, dt_bias, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, stream, layer, gate);
  else fail("selective_scan (one pass, layer ", layer, "): d_state = ", N, " is above its limit of 32");
}

}  // namespace latim::cuda
