// Mamba-2 scan. A thread holds 16 states of two (head, p) rows: states n = 4 (slice + nsp kq) + e,
// so the `nsp` threads of a row pair (consecutive lanes) read consecutive 16-byte words of
// the staged B and C (one wavefront per load, shared by both rows), and reduce y with
// shuffles. B, C and the step decays of a stretch of positions are staged in shared memory;
// x of the next step is loaded one step ahead.
#include <algorithm>

#include "cuda_check.hpp"
#include "ssd_scan.hpp"

namespace latim::cuda {

namespace {

constexpr int64_t kChunk = 256;
constexpr int kStage = 32;
constexpr int kSlice = 16;  // states per thread and row
constexpr float kLog2e = 1.4426950408889634f;

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

}  // namespace latim::cuda
