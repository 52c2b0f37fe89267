// Mamba-1 selective scan: one thread per channel holds the channel's N states in registers;
// a block stages B and C of a stretch of positions in shared memory. Three launches: chunk
// states from zero, the chain over chunks, then the scan from each chunk's incoming state.
// The first launch can also finish Δ: given dt_proj's raw output and the bias, each thread
// turns its channel's values into softplus(dt + bias) as it reads them and writes them back,
// which saves softplus_rows' pass over [T, D]. x is fp32 or (bf16 mode) bf16. In the bf16
// mode's untraced, unsharded layers the raw dt comes in bf16 (dt_proj's bf16 output): the
// first pass writes Δ back in bf16 (softplus_fast, then rounded) and uses that rounded Δ
// itself, so both passes see the same Δ, and Δ never goes through memory in fp32.
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
