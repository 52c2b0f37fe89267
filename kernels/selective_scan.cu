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

}  // namespace latim::cuda
