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

#include "cuda_check.hpp"
#include "device_math.cuh"
#include "selective_scan.hpp"

namespace latim::cuda {

namespace {

constexpr int64_t kChunk = 256;  // positions per chunk
constexpr int kThreads = 128;    // channels per block
constexpr int kS = 32;           // positions per stage
constexpr int kStages = 2;       // stages in shared memory: s scanned while s + 1 lands
constexpr float kLog2e = 1.4426950408889634f;

// 16 bytes global -> shared, or 16 zero bytes when !ok (src is then not read).
__device__ __forceinline__ void cp16(void* dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                   static_cast<unsigned>(__cvta_generic_to_shared(dst))),
               "l"(src), "r"(ok ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Bytes of shared memory a launch needs: kStages stages of B (and C) rows [kS][NS] and of
// the Δ, x (and z) tiles [kS][kThreads].
// With dt_proj fused (rp > 0: its rank rounded up to 16), the stage holds dt_proj's input rows
// [kS][rp] in fp32 instead of a Δ tile, and one Δ tile (computed from the stage being scanned)
// has rows of kDtPad more channels (the product's fragments stored without bank conflicts).
constexpr int kDtPad = 8;
constexpr int kMaxFusedRank = 128;
template <int NS, bool kWriteY, class X, class DT>
int64_t smem_bytes(bool gated, int rp = 0) {
  const int64_t dt_tile = int64_t{kS} * (rp > 0 ? kThreads + kDtPad : kThreads) * int64_t(sizeof(DT));
  const int64_t stage = int64_t{kS} * NS * 4 * (kWriteY ? 2 : 1) +
                        int64_t{kS} * kThreads * int64_t(sizeof(X) + (kWriteY && gated ? 2 : 0)) +
                        (rp > 0 ? int64_t{kS} * rp * 4 : dt_tile);
  return kStages * stage + (rp > 0 ? dt_tile : 0);
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
      cp16(d + j * rows * kThreads, ok ? g + j * rows * ld : src, ok);
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
      cp16(dst + (r + j * rows) * NS + 4 * q, ok ? src + (r + j * rows) * ld + 4 * q : src, ok);
    }
  } else {
    for (int i = threadIdx.x; i < len * NS; i += kThreads) {
      const int p = i / NS, n = i % NS;
      dst[p * NS + n] = n < N ? src[p * ld + n] : 0.0f;
    }
  }
}

// bf16_bits by the packing conversion (F2FP, off the special-function unit): the same bits.
__device__ __forceinline__ uint16_t bf16_bits_packed(float x) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %1;" : "=r"(r) : "f"(x));
  return static_cast<uint16_t>(r);
}

// Two floats rounded to bf16 and packed (lo in the low half).
__device__ __forceinline__ uint32_t pack2_bf16(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// D += A B on tensor cores: m16n8k16, bf16 operands, fp32 sums.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Stages rows [len][rp] of dt_proj's fp32 input (R valid columns, the rest zero).
__device__ __forceinline__ void stage_dt_low(float* dst, const float* src, int64_t ld, int len, int R, int rp,
                                             bool vec) {
  if (vec) {  // R, ld and the pointer multiples of 4 floats
    const int pieces = rp / 4;
    for (int i = threadIdx.x; i < kS * pieces; i += kThreads) {
      const int p = i / pieces, q = i % pieces;
      const bool ok = p < len && 4 * q < R;
      cp16(dst + p * rp + 4 * q, ok ? src + p * ld + 4 * q : src, ok);
    }
  } else {
    for (int i = threadIdx.x; i < len * rp; i += kThreads) {
      const int p = i / rp, k = i % rp;
      dst[p * rp + k] = k < R ? src[p * ld + k] : 0.0f;
    }
  }
}

// dt_proj's raw output for one stage: [kS][kThreads] = L [kS][rp] · W[c0 .. c0 + 127][0 .. R)ᵀ
// with bf16 operands (L rounded to bf16, W given in bf16) and fp32 sums, rounded to bf16
// (what dt_proj's bf16 product writes) into dst (rows of kThreads + kDtPad). Warp w takes
// channels 32w .. 32w + 31; channels from D on give zeros.
__device__ __forceinline__ void dt_proj_stage(uint16_t* dst, const float* L, int rp, const uint16_t* __restrict__ W,
                                              int R, int64_t c0, int64_t D) {
  constexpr int ld = kThreads + kDtPad;
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int mt = 0; mt < kS / 16; ++mt) {
    const int r0 = mt * 16 + g;
#pragma unroll 1
    for (int j = 0; j < 4; ++j) {  // one 8-channel tile at a time: 4 accumulators live, not 16
      const int64_t ch = c0 + 32 * w + 8 * j + g;
      const uint16_t* wr = W + ch * R;
      const bool ok = ch < D;
      float acc[4] = {};
      for (int k0 = 0; k0 < rp; k0 += 16) {
        const float2 v00 = *reinterpret_cast<const float2*>(L + r0 * rp + k0 + 2 * t4);
        const float2 v10 = *reinterpret_cast<const float2*>(L + (r0 + 8) * rp + k0 + 2 * t4);
        const float2 v01 = *reinterpret_cast<const float2*>(L + r0 * rp + k0 + 8 + 2 * t4);
        const float2 v11 = *reinterpret_cast<const float2*>(L + (r0 + 8) * rp + k0 + 8 + 2 * t4);
        const uint32_t a[4] = {pack2_bf16(v00.x, v00.y), pack2_bf16(v10.x, v10.y), pack2_bf16(v01.x, v01.y),
                               pack2_bf16(v11.x, v11.y)};
        const uint32_t b0 = ok && k0 + 2 * t4 < R ? __ldg(reinterpret_cast<const unsigned*>(wr + k0 + 2 * t4)) : 0u;
        const uint32_t b1 =
            ok && k0 + 8 + 2 * t4 < R ? __ldg(reinterpret_cast<const unsigned*>(wr + k0 + 8 + 2 * t4)) : 0u;
        mma_bf16(acc, a, b0, b1);
      }
      const int col = 32 * w + 8 * j + 2 * t4;
      *reinterpret_cast<uint32_t*>(dst + r0 * ld + col) = pack2_bf16(acc[0], acc[1]);
      *reinterpret_cast<uint32_t*>(dst + (r0 + 8) * ld + col) = pack2_bf16(acc[2], acc[3]);
    }
  }
}

// dt_proj fused into the first pass (bf16 mode): its fp32 input rows (ld apart), its bf16
// weight [D][R] (R even), R rounded up to 16; vec: the input rows staged by 16-byte copies.
struct FusedDtProj {
  const float* low = nullptr;
  int64_t ld = 0;
  const uint16_t* w = nullptr;
  int R = 0, rp = 0;
  bool vec = false;
};

__device__ __forceinline__ float widen(float v) { return v; }
__device__ __forceinline__ float widen(uint16_t v) { return bf16_float(v); }

// DT: float or uint16_t (bf16 bits): Δ, or raw dt finished in place by the first pass (in
// bf16: rounded to bf16, and the rounded value used).
template <int NS, bool kFromState, bool kWriteY, bool kGated, bool kFused, class X, class DT>
__global__ void __launch_bounds__(kThreads, kWriteY ? 4 : 5)
    scan_chunk_kernel(const X* __restrict__ x, DT* __restrict__ delta, const float* __restrict__ dt_bias, bool raw_dt,
                      const float* __restrict__ A, const float* __restrict__ B, int64_t ldb,
                      const float* __restrict__ C, int64_t ldc, const float* __restrict__ Dskip, int64_t T,
                      int64_t D, int N, int64_t chunk_len, bool vec, bool vec_bc, float* __restrict__ state,
                      float* __restrict__ dsum, float* __restrict__ y, ScanGate gate, FusedDtProj fd) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr bool gated = kWriteY && kGated;
  constexpr bool fused = kFused && !kFromState && std::is_same_v<DT, uint16_t>;
  constexpr int kDtRow = fused ? kThreads + kDtPad : kThreads;  // Δ tile row
  float* const Bs = reinterpret_cast<float*>(smem);  // [kStages][kS][NS]
  float* const Cs = Bs + kStages * kS * NS;           // the same (kWriteY)
  constexpr int kDtTiles = fused ? 1 : kStages;  // fused: the one being scanned
  DT* const dts = reinterpret_cast<DT*>(Cs + (kWriteY ? kStages * kS * NS : 0));  // [kDtTiles][kS][kDtRow]
  X* const xs = reinterpret_cast<X*>(dts + kDtTiles * kS * kDtRow);
  uint16_t* const zs = reinterpret_cast<uint16_t*>(xs + kStages * kS * kThreads);  // (gated)
  float* const ls = reinterpret_cast<float*>(zs + (gated ? kStages * kS * kThreads : 0));  // [kStages][kS][rp] (fused)

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
    if constexpr (fused)
      stage_dt_low(ls + b * kS * fd.rp, fd.low + s0 * fd.ld, fd.ld, len, fd.R, fd.rp, fd.vec);
    else
      stage_tile(dts + b * kS * kThreads, delta + s0 * D + c0, D, len, width, vec);
    stage_tile(xs + b * kS * kThreads, x + s0 * D + c0, D, len, width, vec);
    if (gated) stage_tile(zs + b * kS * kThreads, gate.z + s0 * gate.ldz + c0, gate.ldz, len, width, vec);
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nst) load(s);
    cp_commit();
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
    cp_wait<kStages - 2>();
    __syncthreads();  // stage s has landed for every thread; stage s - 1's buffer is free
    if (s + kStages - 1 < nst) load(s + kStages - 1);
    cp_commit();
    if constexpr (fused) {  // dt_proj's raw output for this stage, into the Δ tile
      if constexpr (std::is_same_v<DT, uint16_t>)
        dt_proj_stage(dts, ls + (s % kStages) * kS * fd.rp, fd.rp, fd.w, fd.R, c0, D);
      __syncthreads();
    }
    if (!active) continue;
    const int64_t s0 = t0 + int64_t{s} * kS;
    const int len = static_cast<int>(min(int64_t{kS}, t1 - s0));
    const int b = s % kStages;
    const float* const Bb = Bs + b * kS * NS;
    const float* const Cb = Cs + b * kS * NS;
    const DT* const dtb_s = dts + (fused ? 0 : b) * kS * kDtRow + tid;
    const X* const xb = xs + b * kS * kThreads + tid;
    const uint16_t* const zb = zs + b * kS * kThreads + tid;
    DT* const dw = delta + s0 * D + c;  // Δ written back (first launch, raw dt)
    float* const yp = gated ? nullptr : y + s0 * D + c;
    uint16_t* const y16p = gated ? gate.y16 + s0 * D + c : nullptr;
    const auto position = [&](int p) {
      float dt = widen(dtb_s[p * kDtRow]);
      const float xv = widen(xb[p * kThreads]);
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
  cp_wait<0>();
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
            const ScanGate& gate, const FusedDtProj& fd, int layer) {
  gated = kWriteY && gated;
  auto kernel = scan_chunk_kernel<NS, kFromState, kWriteY, false, false, X, DT>;
  if constexpr (kWriteY)
    if (gated) kernel = scan_chunk_kernel<NS, kFromState, kWriteY, true, false, X, DT>;
  const bool fused = !kFromState && std::is_same_v<DT, uint16_t> && fd.rp > 0;
  if constexpr (!kFromState && std::is_same_v<DT, uint16_t>)
    if (fused)
      kernel = gated ? scan_chunk_kernel<NS, kFromState, kWriteY, kWriteY, true, X, DT>
                     : scan_chunk_kernel<NS, kFromState, kWriteY, false, true, X, DT>;
  const int64_t bytes = smem_bytes<NS, kWriteY, X, DT>(gated, fused ? fd.rp : 0);
  if (bytes > 48 * 1024) {  // above the default limit: raised to the most a launch asks for
    static int64_t raised[2][2][64] = {};  // [gated][fused][device]
    int dev = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice (selective_scan)", layer);
    if (dev < 0 || dev >= 64 || raised[gated][fused][dev] < bytes) {
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
            "cudaFuncSetAttribute (selective_scan shared memory)", layer);
      if (dev >= 0 && dev < 64) raised[gated][fused][dev] = bytes;
    }
  }
  kernel<<<grid, kThreads, bytes, stream>>>(x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, N, chunk_len,
                                            vec, vec_bc, state, dsum, y, gate, fd);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

template <int NS, class X, class DT>
void run(const X* x, DT* delta, const float* dt_bias, bool raw_dt, const float* A, const float* B, int64_t ldb,
         const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N, float* y, float* h_final, float* work,
         cudaStream_t stream, int layer, const ScanGate& gate, const FusedDtProj& fd) {
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
                            vec, vec_bc, state, dsum, y, gate, fd, layer);
    check_launch("selective_scan", layer, stream);
    return;
  }
  launch<NS, false, false>(grid, stream, false, x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, n, kChunk,
                           vec, vec_bc, state, dsum, y, gate, fd, layer);
  check_launch("selective_scan (chunk states)", layer, stream);
  chain_chunks_kernel<<<static_cast<unsigned>((D * N + 255) / 256), 256, 0, stream>>>(A, D, N, nchunks, state, dsum,
                                                                                      h_final);
  check_launch("selective_scan (chunk chain)", layer, stream);
  launch<NS, true, true>(grid, stream, gated, x, delta, nullptr, false, A, B, ldb, C, ldc, Dskip, T, D, n, kChunk, vec,
                         vec_bc, state, dsum, y, gate, FusedDtProj{}, layer);
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
              float* h_final, float* work, cudaStream_t stream, int layer, const ScanGate& gate,
              const FusedDtProj& fd = {}) {
  if (T == 0 || D == 0) return;
  const auto go = [&](auto ns) {
    run<decltype(ns)::value>(x, delta, dt_bias, raw_dt, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, work, stream,
                             layer, gate, fd);
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

bool selective_scan_fuses_dt_proj(int64_t R) { return R > 0 && R % 2 == 0 && R <= kMaxFusedRank; }

void selective_scan(const uint16_t* x, const float* dt_in, int64_t ld_in, const uint16_t* w_dt16, int64_t R,
                    uint16_t* delta16, const float* dt_bias, const float* A, const float* B, int64_t ldb,
                    const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D, int64_t N, float* y,
                    float* h_final, float* work, cudaStream_t stream, int layer, const ScanGate& gate) {
  if (!selective_scan_fuses_dt_proj(R))
    fail("selective_scan (layer ", layer, "): dt_rank = ", R, " cannot be fused (an even rank up to ", kMaxFusedRank,
         ")");
  if ((reinterpret_cast<uintptr_t>(w_dt16) & 3) != 0)
    fail("selective_scan (layer ", layer, "): dt_proj's bf16 weight is not 4-byte aligned");
  FusedDtProj fd;
  fd.low = dt_in;
  fd.ld = ld_in;
  fd.w = w_dt16;
  fd.R = static_cast<int>(R);
  fd.rp = static_cast<int>((R + 15) / 16 * 16);
  fd.vec = R % 4 == 0 && ld_in % 4 == 0 && (reinterpret_cast<uintptr_t>(dt_in) & 15) == 0;
  dispatch(x, delta16, dt_bias, true, A, B, ldb, C, ldc, Dskip, T, D, N, y, h_final, work, stream, layer, gate, fd);
}

}  // namespace latim::cuda
