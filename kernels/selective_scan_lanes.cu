// Mamba-1 selective scan in one pass, the sequence across the lanes: each decay 2^(Δa) is
// computed once (the chunked scan in selective_scan.cu computes each twice, and two passes
// on the special-function unit are what bounds it).
//
// A warp owns one channel for the whole sequence and walks it in chunks of 512 positions;
// lane l takes positions 16l .. 16l + 15 of the chunk. For each state n in turn a lane:
//   - computes its 16 decays and inputs (dA_i = 2^(Δ_i a_n), b_i = Δ_i x_i B_i[n]) and keeps
//     them in registers;
//   - scans them from a zero state: its segment's end state H and decay A = 2^(a_n ΣΔ_i);
//   - takes part in a warp scan of the (A, H) pairs (Kogge-Stone, 5 shuffle steps), lane 0
//     having folded in the state carried from the previous chunk, so that each lane ends with
//     the true state at the end of its segment;
//   - rescans its 16 positions from the state its left neighbour ended with, summing C·h into
//     y. The last lane's end state is the carry into the next chunk.
// Lane n keeps state n's carry and a_n (one register each, read by shuffles).
//
// A block is W warps (W channels, a multiple of 4 up to 12: about one block per SM at the 130m
// width). It stages each chunk through shared memory while the previous one is scanned
// (cp.async, two buffers): B and C from a transposed copy [2N][T] (a small kernel writes it
// first), in rows padded by 16 bytes every 32 positions so that the lanes' 16-byte reads do
// not conflict; raw dt, x and z as [512][W] bf16 tiles with two padding words per 16 rows, by
// 8-byte copies. The gated output goes back through the dt tile and out in 8-byte row pieces.
//
// Measured slower than the chunked scan on the H100 (docs/performance-cuda.md, twentieth
// session): with 3 warps per scheduler, its chains (the 16-step segment scans, 5 shuffle
// steps a state) leave the issue slots 42 % busy.
#include <algorithm>

#include "cp_async.cuh"
#include "cuda_check.hpp"
#include "device_buffer.hpp"
#include "device_math.cuh"
#include "selective_scan.hpp"

namespace latim::cuda {

namespace {

constexpr int kP = 16;        // positions per lane
constexpr int kL = 32 * kP;   // positions per chunk
constexpr int kNS = 16;       // the largest N (B and C rows staged per chunk)
constexpr int kMaxW = 12;     // warps (channels) per block
constexpr float kLog2e = 1.4426950408889634f;

// Floats of a staged B or C row, and the index of position p (0 .. kL-1) in it: 16 bytes of
// padding after every 2 lanes' 16 positions, so that the 8 lanes of a quarter warp reading
// their 16-byte piece j start 80 or 64 bytes apart and touch 8 different groups of 4 banks.
constexpr int kRow = kL + kL / 32 * 4;
__host__ __device__ constexpr int bc_index(int p) { return p + (p >> 5) * 4; }
// Words of one bf16 tile [kL][W] (pw = W/2 words a row, two padding words after every 16
// rows: 8-byte aligned rows, and a lane's 16 rows 16 pw + 2 words after its neighbour's).
__host__ __device__ constexpr int tile_words(int pw) { return kL * pw + kL / 8; }
// Words of one staging buffer: B and C [2][kNS][kRow] floats, then the dt, x (and z) tiles;
// rounded to 4 words so that the next buffer's B starts 16-byte aligned.
__host__ __device__ constexpr int buffer_words(int pw) { return (2 * kNS * kRow + 3 * tile_words(pw) + 3) / 4 * 4; }


// B and C side by side, transposed: out[j][t] = B[t][j] (j < N), C[t][j - N] (j >= N), zero
// for t in [T, Tp). Tiles of 32 positions by 2N <= 32 columns.
__global__ void bc_transpose_kernel(const float* __restrict__ B, int64_t ldb, const float* __restrict__ C, int64_t ldc,
                                    int64_t T, int64_t Tp, int N, float* __restrict__ out) {
  __shared__ float tile[32][33];
  const int64_t t0 = blockIdx.x * int64_t{32};
  const int j = threadIdx.x;
  for (int r = threadIdx.y; r < 32; r += blockDim.y) {
    const int64_t t = t0 + r;
    float v = 0.0f;
    if (t < T && j < 2 * N) v = j < N ? B[t * ldb + j] : C[t * ldc + (j - N)];
    tile[r][j] = v;
  }
  __syncthreads();
  for (int jj = threadIdx.y; jj < 2 * N; jj += blockDim.y) {
    const int64_t t = t0 + threadIdx.x;
    if (t < Tp) out[jj * Tp + t] = tile[threadIdx.x][jj];
  }
}

__device__ __forceinline__ void cp_async8_or_zero(void* dst, const void* src, bool ok) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(d), "l"(src), "r"(ok ? 8 : 0) : "memory");
}

// kGated: y16 = bf16(y SiLU(z)) (the bits of the chunked scan's gated output given the same
// y); else y in fp32 (a test's view of the scan itself).
template <bool kGated>
__global__ void __launch_bounds__(32 * kMaxW, 1)
    scan_lanes_kernel(const uint16_t* __restrict__ x, const uint16_t* __restrict__ dt, const float* __restrict__ dt_bias,
                      const float* __restrict__ A, const float* __restrict__ bct, int64_t Tp,
                      const float* __restrict__ Dskip, int64_t T, int64_t D, int N, const uint16_t* __restrict__ z,
                      int64_t ldz, uint16_t* __restrict__ y16, float* __restrict__ y, float* __restrict__ h_final) {
  extern __shared__ __align__(16) uint32_t sm[];
  const int W = blockDim.x >> 5, pw = W >> 1;
  const int tw = tile_words(pw), bw = buffer_words(pw);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t c0 = blockIdx.x * int64_t{W};
  const int64_t c = c0 + warp;
  const bool active = c < D;  // warp-uniform
  const int64_t nchunks = (T + kL - 1) / kL;
  constexpr unsigned kAll = 0xffffffffu;

  // Staging: B and C rows by warps (row r by warp r % W, lane l its 16-byte pieces l + 32 j);
  // the bf16 tiles by 8-byte pieces (4 channels), thread (q, r0) copying piece q of rows
  // r0 + 128 k (32W threads, W/4 pieces a row: 128 rows a sweep).
  const int q = tid % (W / 4), r0 = tid / (W / 4);
  const bool col_ok = c0 + 4 * q < D;
  const int64_t goff = r0 * D + c0 + 4 * q;
  const auto load = [&](int64_t k) {
    uint32_t* const buf = sm + (k & 1) * bw;
    const int64_t t0 = k * kL;
    float* const bc = reinterpret_cast<float*>(buf);
    for (int row = warp; row < 2 * N; row += W) {
      const int srow = row < N ? row : kNS + row - N;
      const float* const src = bct + row * Tp + t0;
#pragma unroll
      for (int j = 0; j < kL / 128; ++j) {
        const int u = lane + 32 * j;
        const bool ok = t0 + 4 * u < Tp;
        cp_async16_or_zero(bc + srow * kRow + bc_index(4 * u), ok ? src + 4 * u : bct, ok);
      }
    }
    uint32_t* const tdt = buf + 2 * kNS * kRow;
    uint32_t* const tx = tdt + tw;
    uint32_t* const tz = tx + tw;
    const int64_t g0 = t0 * D + goff;
#pragma unroll
    for (int kk = 0; kk < kL / 128; ++kk) {
      const int r = r0 + 128 * kk;
      const bool ok = col_ok && t0 + r < T;
      const int w = r * pw + 2 * (r >> 4) + 2 * q;
      const int64_t g = g0 + 128 * kk * D;
      cp_async8_or_zero(tdt + w, ok ? dt + g : dt, ok);
      cp_async8_or_zero(tx + w, ok ? x + g : x, ok);
      if (kGated) cp_async8_or_zero(tz + w, ok ? z + (t0 + r) * ldz + c0 + 4 * q : z, ok);
    }
  };

  const float dtb = active && dt_bias ? dt_bias[c] : 0.0f;
  const float dsk = active ? Dskip[c] : 0.0f;
  const float a_reg = active && lane < N ? A[c * N + lane] * kLog2e : 0.0f;  // lane n: a_n
  float carry_reg = 0.0f;                                                    // lane n: state n's carry
  // Halfword index of (row 16 lane + i, this warp's channel) in a bf16 tile: rows 16 lane ..
  // 16 lane + 15 sit after 2 lane padding words.
  const int hbase = 2 * ((16 * lane) * pw + 2 * lane) + warp;
  const int hstep = 2 * pw;
  const int bc_lane = bc_index(16 * lane);  // this lane's 16 positions in a staged B or C row

  load(0);
  cp_async_commit();
  for (int64_t k = 0; k < nchunks; ++k) {
    cp_async_wait<0>();
    __syncthreads();  // chunk k has landed; every thread is done with the other buffer
    if (k + 1 < nchunks) load(k + 1);
    cp_async_commit();
    uint32_t* const buf = sm + (k & 1) * bw;
    const float* const Bs = reinterpret_cast<const float*>(buf);
    const float* const Cs = Bs + kNS * kRow;
    uint16_t* const hdt = reinterpret_cast<uint16_t*>(buf + 2 * kNS * kRow);
    const uint16_t* const hx = reinterpret_cast<const uint16_t*>(buf + 2 * kNS * kRow + tw);
    const uint16_t* const hz = reinterpret_cast<const uint16_t*>(buf + 2 * kNS * kRow + 2 * tw);
    const int64_t tl = k * kL + 16 * lane;  // this lane's first position
    float yv[kP];
    if (active) {
      float d[kP], dx[kP];
      float sumd = 0.0f;
#pragma unroll
      for (int i = 0; i < kP; ++i) {
        const float raw = bf16_float(hdt[hbase + i * hstep]);
        const float xv = bf16_float(hx[hbase + i * hstep]);
        // Δ rounded to bf16, the chunked scan's bits; positions past T are identity steps.
        float dv = bf16_float(bf16_bits_packed(softplus_fast(raw + dtb)));
        if (tl + i >= T) dv = 0.0f;
        d[i] = dv;
        dx[i] = dv * xv;
        sumd += dv;
        yv[i] = 0.0f;
      }
#pragma unroll 1  // (unrolled by 2: 1.74 ms against 1.62 per layer at 64K, H100)
      for (int n = 0; n < N; ++n) {
        const float a = __shfl_sync(kAll, a_reg, n);
        const float carry = __shfl_sync(kAll, carry_reg, n);
        float dA[kP], b[kP];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float4 b4 = *reinterpret_cast<const float4*>(Bs + n * kRow + bc_lane + 4 * j);
          const float bq[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            dA[4 * j + r] = exp2_ftz(d[4 * j + r] * a);
            b[4 * j + r] = dx[4 * j + r] * bq[r];
          }
        }
        // This segment from a zero state, then the warp's scan of (decay, end state).
        float H = b[0];
#pragma unroll
        for (int i = 1; i < kP; ++i) H = fmaf(dA[i], H, b[i]);
        float Ad = exp2_ftz(a * sumd);
        H = fmaf(Ad, lane == 0 ? carry : 0.0f, H);
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {  // (A, H) after (A', H'): (A A', A H' + H)
          const bool in = lane >= o;
          const float Hp = __shfl_up_sync(kAll, H, o);
          if (o < 16) {  // the last step needs no decay
            const float Ap = __shfl_up_sync(kAll, Ad, o);
            H = fmaf(Ad, in ? Hp : 0.0f, H);
            Ad = in ? Ad * Ap : Ad;
          } else {
            H = fmaf(Ad, in ? Hp : 0.0f, H);
          }
        }
        float h = __shfl_up_sync(kAll, H, 1);
        if (lane == 0) h = carry;
        const float next = __shfl_sync(kAll, H, 31);
        if (lane == n) carry_reg = next;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const float4 c4 = *reinterpret_cast<const float4*>(Cs + n * kRow + bc_lane + 4 * j);
          const float cq[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
          for (int r = 0; r < 4; ++r) {
            h = fmaf(dA[4 * j + r], h, b[4 * j + r]);
            yv[4 * j + r] = fmaf(cq[r], h, yv[4 * j + r]);
          }
        }
      }
#pragma unroll
      for (int i = 0; i < kP; ++i) yv[i] += dsk * bf16_float(hx[hbase + i * hstep]);
    }
    // The output, staged in shared memory and stored as row pieces.
    if constexpr (kGated) {
      if (active) {
#pragma unroll
        for (int i = 0; i < kP; ++i)  // this lane's own dt slots, read above
          hdt[hbase + i * hstep] = bf16_bits(yv[i] * silu_fast(bf16_float(hz[hbase + i * hstep])));
      }
      __syncthreads();
      const uint32_t* const tdt = buf + 2 * kNS * kRow;
#pragma unroll
      for (int kk = 0; kk < kL / 128; ++kk) {
        const int r = r0 + 128 * kk;
        const int64_t t = k * kL + r;
        if (col_ok && t < T)
          *reinterpret_cast<uint2*>(y16 + t * D + c0 + 4 * q) = *reinterpret_cast<const uint2*>(tdt + r * pw + 2 * (r >> 4) + 2 * q);
      }
    } else {
      __syncthreads();  // the fp32 tile [kL][W] overlays the dt and x tiles, which x's reads above used
      float* const ty = reinterpret_cast<float*>(buf + 2 * kNS * kRow);
      if (active) {
#pragma unroll
        for (int i = 0; i < kP; ++i) ty[(16 * lane + i) * W + 2 * lane + warp] = yv[i];
      }
      __syncthreads();
      for (int e = tid; e < kL * W; e += blockDim.x) {
        const int r = e / W, w = e % W;
        const int64_t t = k * kL + r;
        if (t < T && c0 + w < D) y[t * D + c0 + w] = ty[r * W + 2 * (r >> 4) + w];
      }
    }
  }
  cp_async_wait<0>();
  if (active && h_final && lane < N) h_final[c * N + lane] = carry_reg;
}

}  // namespace

bool selective_scan_lanes_fits(int64_t D, int64_t N, const uint16_t* x, const uint16_t* dt16, const ScanGate& gate) {
  return N >= 1 && N <= kNS && D % 4 == 0 && aligned8(x) && aligned8(dt16) &&
         (!gate.y16 || (gate.ldz % 4 == 0 && aligned8(gate.z) && aligned8(gate.y16)));
}

int64_t selective_scan_lanes_work(int64_t T, int64_t N) { return 2 * N * ((T + 3) / 4 * 4); }

void selective_scan_lanes(const uint16_t* x, const uint16_t* dt16, const float* dt_bias, const float* A, const float* B,
                          int64_t ldb, const float* C, int64_t ldc, const float* Dskip, int64_t T, int64_t D,
                          int64_t N, float* y, float* h_final, float* work, cudaStream_t stream, int layer,
                          const ScanGate& gate) {
  if (T == 0 || D == 0) return;
  if (!selective_scan_lanes_fits(D, N, x, dt16, gate) || !aligned16(work))
    fail("selective_scan_lanes (layer ", layer, "): shapes or alignment it does not take (D = ", D, ", N = ", N, ")");
  const int64_t Tp = (T + 3) / 4 * 4;
  bc_transpose_kernel<<<static_cast<unsigned>((Tp + 31) / 32), dim3(32, 8), 0, stream>>>(B, ldb, C, ldc, T, Tp,
                                                                                          static_cast<int>(N), work);
  check_launch("selective_scan_lanes (B and C transposed)", layer, stream);
  int dev = 0, sms = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice", layer);
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute", layer);
  // About one block per SM: W channels a block, a multiple of 4 up to 12.
  const int W = std::clamp(static_cast<int>((D + sms - 1) / sms + 3) / 4 * 4, 4, kMaxW);
  const int64_t bytes = int64_t{2} * buffer_words(W / 2) * 4;
  const unsigned grid = static_cast<unsigned>((D + W - 1) / W);
  const auto go = [&](auto kernel) {
    if (bytes > 48 * 1024)
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
            "selective_scan_lanes (shared memory attribute)", layer);
    kernel<<<grid, 32 * W, bytes, stream>>>(x, dt16, dt_bias, A, work, Tp, Dskip, T, D, static_cast<int>(N), gate.z,
                                             gate.ldz, gate.y16, y, h_final);
  };
  if (gate.y16) go(scan_lanes_kernel<true>);
  else go(scan_lanes_kernel<false>);
  check_launch("selective_scan_lanes", layer, stream);
}

}  // namespace latim::cuda
