// Mamba-1's causal conv (width 4, SiLU) and x_proj in one pass over the in_proj output.
//
// A block of 4 warps owns 64 positions and walks the channels 64 at a time. For each slice
// it stages 67 input rows (the 3 before its first position too), the conv's taps and bias
// and the slice of x_proj's weight [out_dim][64] by cp.async, a slice ahead; each thread
// convolves a run of 16 positions of a channel pair (conv_pair_bf16, as the bf16x2 conv
// kernel does: the same bits), writes them to memory for the scan and to a shared tile, and each warp then multiplies its 16 rows of the tile by the weight slice on
// mma.sync (bf16, fp32 sums). The conv output is written once and not read back: the
// separate kernels wrote it, then x_proj read all of it again (H100, 64K positions, 130m
// widths: 146 + 84 µs per layer, 199 µs here). Runs of 8 positions on 8 warps (twice the
// warps per SM) measured 221 µs.
#include "conv_xproj.hpp"

#include "cp_async.cuh"
#include "cuda_check.hpp"
#include "device_buffer.hpp"
#include "device_math.cuh"
#include "mma_sync.cuh"

namespace latim::cuda {

namespace {

constexpr int kBK = 64;       // channels per slice
constexpr int kK = 4;         // conv width
constexpr int kLd = kBK + 8;  // shared row length in bf16 (144 bytes: ldmatrix rows on distinct banks)
constexpr int kBM = 64;       // positions per block
constexpr int kRun = 16;      // positions per thread in the conv
constexpr int kThreads = 128;  // 4 warps: a thread per channel pair and run in the conv, a warp per 16 rows in the product

template <int OUT>
struct Smem {
  static constexpr int kRows = kBM + kK - 1;
  static constexpr int kX = kRows * kLd, kW = OUT * kLd, kA = kBM * kLd;  // bf16 elements
  static constexpr int kTaps = kBK * kK + kBK;                               // floats: taps, bias
  static constexpr int64_t kBytes = int64_t{2} * (2 * kX + 2 * kW + kA) + int64_t{4} * 2 * kTaps;
};

template <int OUT>
__global__ void __launch_bounds__(kThreads, 4)
    conv_xproj_kernel(const uint16_t* __restrict__ in, int64_t T, int64_t channels, int64_t lda,
                      const float* __restrict__ w, const float* __restrict__ b, bool act,
                      const uint16_t* __restrict__ W, uint16_t* __restrict__ x_out, float* __restrict__ proj,
                      int64_t ldp) {
  using S = Smem<OUT>;
  constexpr int kRows = S::kRows;
  constexpr int NT = OUT / 8;  // n-tiles of the product (even)
  static_assert(kThreads == 32 * (kBM / kRun) && kBM == 16 * (kThreads / 32) && NT % 2 == 0, "block shape");
  extern __shared__ __align__(16) uint16_t sm[];
  uint16_t* const Xs = sm;               // [2][kRows][kLd]
  uint16_t* const Ws = Xs + 2 * S::kX;   // [2][OUT][kLd]
  uint16_t* const As = Ws + 2 * S::kW;   // [kBM][kLd]
  float* const Ts = reinterpret_cast<float*>(As + S::kA);  // [2][kBK][kK] taps, then [2][kBK] bias

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t m0 = int64_t{blockIdx.x} * kBM;
  const int nslices = static_cast<int>(channels / kBK);

  const auto load = [&](int s, int buf) {
    const int64_t k0 = int64_t{s} * kBK;
    uint16_t* const xd = Xs + buf * S::kX;
    for (int i = tid; i < kRows * (kBK / 8); i += kThreads) {
      const int r = i / (kBK / 8), q = i % (kBK / 8);
      const int64_t t = m0 - (kK - 1) + r;
      const bool ok = t >= 0 && t < T;
      cp_async16_or_zero(xd + r * kLd + q * 8, ok ? in + t * lda + k0 + q * 8 : in, ok);
    }
    float* const td = Ts + buf * S::kTaps;
    for (int i = tid; i < kBK * kK / 4 + kBK / 4; i += kThreads) {
      if (i < kBK * kK / 4) {
        cp_async16(td + 4 * i, w + k0 * kK + 4 * i);
      } else {
        const int q = i - kBK * kK / 4;
        cp_async16_or_zero(td + kBK * kK + 4 * q, b ? b + k0 + 4 * q : w, b != nullptr);
      }
    }
    uint16_t* const wd = Ws + buf * S::kW;
    for (int i = tid; i < OUT * (kBK / 8); i += kThreads) {
      const int r = i / (kBK / 8), q = i % (kBK / 8);
      cp_async16(wd + r * kLd + q * 8, W + r * channels + k0 + q * 8);
    }
  };
  load(0, 0);
  cp_async_commit();

  float acc[NT][4];
#pragma unroll
  for (int t = 0; t < NT; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[t][e] = 0.0f;

  const int cp = tid % 32, run = tid / 32;  // the conv's channel pair and run of positions
  const unsigned a_base = static_cast<unsigned>(__cvta_generic_to_shared(As));

  for (int s = 0; s < nslices; ++s) {
    const int buf = s & 1;
    cp_async_wait_all();
    __syncthreads();  // slice s has landed; the tile and the other buffer are free
    if (s + 1 < nslices) load(s + 1, buf ^ 1);
    cp_async_commit();

    // The conv: positions kRun run .. kRun run + kRun - 1 of channels c, c + 1.
    {
      const int64_t c = int64_t{s} * kBK + 2 * cp;
      const float* const ts = Ts + buf * S::kTaps;
      float tap[2][kK];
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int q = 0; q < kK; ++q) tap[j][q] = ts[(2 * cp + j) * kK + (kK - 1 - q)];
      const float bias0 = ts[kBK * kK + 2 * cp], bias1 = ts[kBK * kK + 2 * cp + 1];
      uint16_t* xo = x_out + (m0 + run * kRun) * channels + c;
      const uint16_t* const xb = Xs + buf * S::kX + 2 * cp;
      float2 win[kK];  // win[q] = input q steps back
#pragma unroll
      for (int q = 1; q < kK; ++q)
        win[q] = widen_bf16x2(*reinterpret_cast<const uint32_t*>(xb + (run * kRun + kK - 1 - q) * kLd));
#pragma unroll
      for (int i = 0; i < kRun; ++i) {
        const int r = run * kRun + i;
        win[0] = widen_bf16x2(*reinterpret_cast<const uint32_t*>(xb + (r + kK - 1) * kLd));
        const uint32_t v = conv_pair_bf16(tap, bias0, bias1, win, act);
        *reinterpret_cast<uint32_t*>(As + r * kLd + 2 * cp) = v;
        if (m0 + r < T) *reinterpret_cast<uint32_t*>(xo) = v;
        xo += channels;
#pragma unroll
        for (int q = kK - 1; q > 0; --q) win[q] = win[q - 1];
      }
    }
    __syncthreads();  // the tile is complete

    // The product: the warp's rows 16 warp .. 16 warp + 15 of the tile times the slice of W,
    // whose [n][k] rows ldmatrix reads as four 8 x 8 matrices per two n-tiles (k low and
    // high halves each).
    const unsigned w_base = static_cast<unsigned>(__cvta_generic_to_shared(Ws + buf * S::kW));
#pragma unroll
    for (int k = 0; k < kBK; k += 16) {
      unsigned a[4];
      {
        const int row = warp * 16 + (lane & 15), col = k + (lane >> 4) * 8;
        ldmatrix_x4(a[0], a[1], a[2], a[3], a_base + static_cast<unsigned>(row * kLd + col) * 2u);
      }
      const int id = lane >> 3;
#pragma unroll
      for (int tp = 0; tp < NT / 2; ++tp) {
        const int n = tp * 16 + (id >> 1) * 8 + (lane & 7), kc = k + (id & 1) * 8;
        unsigned b0, b1, b2, b3;
        ldmatrix_x4(b0, b1, b2, b3, w_base + static_cast<unsigned>(n * kLd + kc) * 2u);
        mma_bf16(acc[2 * tp], a[0], a[1], a[2], a[3], b0, b1);
        mma_bf16(acc[2 * tp + 1], a[0], a[1], a[2], a[3], b2, b3);
      }
    }
  }

  // Accumulators: rows g and g + 8 of the warp's 16, columns 8t + 2q and 8t + 2q + 1.
  const int g = lane >> 2, q = lane & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t t = m0 + warp * 16 + g + 8 * h;
    if (t >= T) continue;
#pragma unroll
    for (int n = 0; n < NT; ++n)
      *reinterpret_cast<float2*>(proj + t * ldp + 8 * n + 2 * q) = make_float2(acc[n][2 * h], acc[n][2 * h + 1]);
  }
}

template <int OUT>
void launch(const uint16_t* in, int64_t T, int64_t channels, int64_t lda, const float* w, const float* b, bool silu,
            const uint16_t* W, uint16_t* x_out, float* proj, int64_t ldp, cudaStream_t stream, int layer) {
  const auto kernel = conv_xproj_kernel<OUT>;
  constexpr int64_t bytes = Smem<OUT>::kBytes;
  if (bytes > 48 * 1024)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
          "conv_xproj (shared memory attribute)", layer);
  const int64_t blocks = (T + kBM - 1) / kBM;
  kernel<<<static_cast<unsigned>(blocks), kThreads, bytes, stream>>>(in, T, channels, lda, w, b, silu, W, x_out, proj,
                                                                   ldp);
  check_launch("conv_xproj (conv and x_proj)", layer, stream);
}

}  // namespace

bool conv_xproj_fits(int64_t channels, int64_t lda, int K, int64_t out_dim, const void* in, const void* x_out,
                     const void* W, const float* w, const float* b) {
  return in && x_out && W && w && aligned16(w) && aligned16(b) && K == kK && channels > 0 && channels % kBK == 0 && lda % 8 == 0 &&
         (out_dim == 80 || out_dim == 96 || out_dim == 128) && aligned16(in) && aligned16(x_out) && aligned16(W);
}

bool conv_xproj_pays(int64_t T) {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
    return false;
  return (T + kBM - 1) / kBM >= 2 * int64_t{sms};
}

void conv_xproj(const uint16_t* in, int64_t T, int64_t channels, int64_t lda, const float* w, int K, const float* b,
                bool silu, const uint16_t* W, int64_t out_dim, uint16_t* x_out, float* proj, int64_t ldp,
                cudaStream_t stream, int layer) {
  if (!conv_xproj_fits(channels, lda, K, out_dim, in, x_out, W, w, b) || ldp % 2 != 0 || !aligned8(proj))
    fail("conv_xproj (layer ", layer, "): shapes or alignment it does not take (channels ", channels, ", x_proj rows ",
         out_dim, ", conv width ", K, ")");
  if (T == 0) return;
  if (T > int64_t{kBM} * 0x7fffffff) fail("conv_xproj (layer ", layer, "): T = ", T, " is too long");
  switch (out_dim) {
    case 80: launch<80>(in, T, channels, lda, w, b, silu, W, x_out, proj, ldp, stream, layer); break;
    case 96: launch<96>(in, T, channels, lda, w, b, silu, W, x_out, proj, ldp, stream, layer); break;
    default: launch<128>(in, T, channels, lda, w, b, silu, W, x_out, proj, ldp, stream, layer); break;
  }
}

}  // namespace latim::cuda
