// Mamba-2 scan. A thread holds 16 states of one (head, p) row; the `nsp` threads of a row
// sit in consecutive lanes and reduce y with shuffles. B, C and the step decays of a stretch
// of positions are staged in shared memory.
#include <algorithm>

#include "cuda_check.hpp"
#include "ssd_scan.hpp"

namespace latim::cuda {

namespace {

constexpr int64_t kChunk = 256;
constexpr int kStage = 32;
constexpr int kSlice = 16;  // states per thread
constexpr float kLog2e = 1.4426950408889634f;

struct Shape {
  int64_t T, H, P, N, G, D;
  int nsp;  // threads per (head, p) row, a power of two
  int pb;   // rows per block
};

template <bool kFromState, bool kWriteY>
__global__ void ssd_chunk_kernel(const float* __restrict__ x, int64_t ldx, const float* __restrict__ delta,
                                 const float* __restrict__ A, const float* __restrict__ B,
                                 const float* __restrict__ C, int64_t ldbc, const float* __restrict__ Dskip,
                                 Shape s, float* __restrict__ state, float* __restrict__ dsum,
                                 float* __restrict__ y) {
  extern __shared__ float smem[];
  const int npad = s.nsp * kSlice;
  float* Bs = smem;                       // [kStage][npad]
  float* Cs = Bs + kStage * npad;         // [kStage][npad]
  float* dts = Cs + kStage * npad;        // [kStage]
  float* dAs = dts + kStage;              // [kStage]
  const int64_t h = blockIdx.x, chunk = blockIdx.y;
  const int64_t p = blockIdx.z * int64_t{s.pb} + threadIdx.x / s.nsp;
  const int sl = threadIdx.x % s.nsp;
  const int64_t g = h / (s.H / s.G);
  const int64_t t0 = chunk * kChunk, t1 = min(s.T, t0 + kChunk);
  const bool active = p < s.P;
  const float a = A[h] * kLog2e;
  const int n0 = sl * kSlice;
  float st[kSlice];
#pragma unroll
  for (int k = 0; k < kSlice; ++k) {
    const int64_t n = n0 + k;
    st[k] = (kFromState && active && n < s.N) ? state[((chunk * s.H + h) * s.P + p) * s.N + n] : 0.0f;
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
    for (int q = 0; q < len; ++q) {
      const int64_t t = s0 + q;
      const float dt = dts[q], dA = dAs[q];
      const float xv = active ? x[t * ldx + h * s.P + p] : 0.0f;
      const float dx = dt * xv;
      ds += dt;
      const float* Bq = Bs + q * npad + n0;
      const float* Cq = Cs + q * npad + n0;
      float acc = 0.0f;
#pragma unroll
      for (int k = 0; k < kSlice; ++k) {
        st[k] = dA * st[k] + dx * Bq[k];
        if (kWriteY) acc += st[k] * Cq[k];
      }
      if (kWriteY) {
        for (int o = s.nsp / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (sl == 0 && active) y[t * s.D + h * s.P + p] = acc + dskip * xv;
      }
    }
  }
  if (!kWriteY) {
    if (active) {
#pragma unroll
      for (int k = 0; k < kSlice; ++k) {
        const int64_t n = n0 + k;
        if (n < s.N) state[((chunk * s.H + h) * s.P + p) * s.N + n] = st[k];
      }
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

}  // namespace

int64_t ssd_scan_work(int64_t T, int64_t H, int64_t P, int64_t N) {
  const int64_t nchunks = (T + kChunk - 1) / kChunk;
  return nchunks * H * P * N + nchunks * H;
}

void ssd_scan(const float* x, int64_t ldx, const float* delta, const float* A, const float* B, const float* C,
              int64_t ldbc, const float* Dskip, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, float* y,
              float* h_final, float* work, cudaStream_t stream, int layer) {
  if (T == 0 || H == 0) return;
  Shape s{T, H, P, N, G, H * P, 1, 1};
  const int64_t slices = (N + kSlice - 1) / kSlice;
  while (s.nsp < slices) s.nsp *= 2;
  if (s.nsp > 32) fail("ssd_scan (layer ", layer, "): d_state = ", N, " is above the CUDA kernel's limit of 512");
  s.pb = static_cast<int>(std::min<int64_t>(P, std::max(1, 256 / s.nsp)));
  s.pb = std::max(s.pb, 32 / s.nsp);  // whole warps, so the shuffles see every lane
  const int threads = s.pb * s.nsp;
  const int64_t nchunks = (T + kChunk - 1) / kChunk;
  if (nchunks > 65535) fail("ssd_scan: T = ", T, " exceeds the supported ", 65535 * kChunk, " tokens");
  const dim3 grid(static_cast<unsigned>(H), static_cast<unsigned>(nchunks), static_cast<unsigned>((P + s.pb - 1) / s.pb));
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

}  // namespace latim::cuda
