// Elementwise kernels of the forward pass and the chunked fp64 cumulative sum.
#include <cuda_bf16.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "cuda_check.hpp"
#include "device_math.cuh"
#include "pointwise.hpp"

namespace latim::cuda {

void check_launch(const char* kernel, int layer, cudaStream_t stream) {
  check(cudaGetLastError(), kernel, layer);
  static const bool sync = [] {
    const char* v = std::getenv("LATIM_CUDA_SYNC_CHECK");
    return v && std::strcmp(v, "0") != 0;
  }();
  if (sync) check(cudaStreamSynchronize(stream), kernel, layer);
}

namespace {

constexpr int kThreads = 256;

// Row-wise launches: x over columns, y (grid-stride) over rows; no 64-bit division.
dim3 grid_rows(int64_t rows, int64_t cols) {
  return dim3(static_cast<unsigned>((cols + kThreads - 1) / kThreads), static_cast<unsigned>(rows < 65535 ? rows : 65535));
}

// A null pointer counts as aligned (the kernels skip it).
bool aligned(const void* p, std::size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

unsigned grid_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 65536 * 8 ? b : 65536 * 8);  // grid-stride loops cover the rest
}

__global__ void add_bias_kernel(float* out, int64_t rows, int64_t cols, int64_t ld, const float* bias) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= cols) return;
  const float bc = bias[c];
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) out[r * ld + c] += bc;
}

__global__ void softplus_kernel(float* x, int64_t rows, int64_t cols, int64_t ld, const float* bias) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= cols) return;
  const float bc = bias ? bias[c] : 0.0f;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) x[r * ld + c] = softplus(x[r * ld + c] + bc);
}

template <class In>
__global__ void mamba2_delta_kernel(const In* dt, int64_t ld, int64_t T, int64_t H, const float* dt_bias,
                                    double dt_min, double dt_max, float* delta) {
  const int64_t n = T * H;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = k / H, h = k % H;
    const double v = softplus(ld_act(dt, t * ld + h) + dt_bias[h]);
    delta[k] = static_cast<float>(fmin(fmax(v, dt_min), dt_max));
  }
}

// kFast: the bf16 output alone (no gate for a trace), with silu_fast.
template <class Z, bool kFast>
__global__ void silu_gate_kernel(float* y, const Z* z, int64_t ldz, int64_t T, int64_t D, float* gate_out,
                                 uint16_t* y16) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= D) return;
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
    const float g = kFast ? silu_fast(ld_act(z, t * ldz + c)) : silu(ld_act(z, t * ldz + c));
    if (gate_out) gate_out[t * D + c] = g;
    if (y16) y16[t * D + c] = bf16_bits(y[t * D + c] * g);
    else y[t * D + c] *= g;
  }
}

// The same with 4 columns per thread and 16-byte accesses (D, ldz multiples of 4, aligned rows).
template <class Z, bool kFast>
__global__ void silu_gate_vec_kernel(float* y, const Z* z, int64_t ldz, int64_t T, int64_t D, float* gate_out,
                                     uint16_t* y16) {
  const int64_t c = 4 * (blockIdx.x * int64_t{blockDim.x} + threadIdx.x);
  if (c >= D) return;
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
    const float4 zv = ld_act4(z, t * ldz + c);
    const float4 g = kFast ? silu4_fast(zv) : silu4(zv);
    if (gate_out) *reinterpret_cast<float4*>(gate_out + t * D + c) = g;
    const float4 yv = *reinterpret_cast<const float4*>(y + t * D + c);
    const float4 out = make_float4(yv.x * g.x, yv.y * g.y, yv.z * g.z, yv.w * g.w);
    if (y16)
      *reinterpret_cast<uint2*>(y16 + t * D + c) =
          make_uint2(pack_bf16x2(out.x, out.y), pack_bf16x2(out.z, out.w));
    else
      *reinterpret_cast<float4*>(y + t * D + c) = out;
  }
}

__global__ void embed_kernel(const float* table, const int64_t* tokens, int64_t T, int64_t d, float* out) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= d) return;
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y) out[t * d + c] = table[tokens[t] * d + c];
}

__global__ void residual_add_kernel(float* r, const float* o, int64_t n) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += int64_t{gridDim.x} * blockDim.x)
    r[k] += o[k];
}

// n4 groups of 4 values with 16-byte accesses (aligned r and o); the caller adds the tail.
__global__ void residual_add_vec_kernel(float4* r, const float4* o, int64_t n4) {
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n4; k += int64_t{gridDim.x} * blockDim.x) {
    float4 a = r[k];
    const float4 b = o[k];
    a.x += b.x;
    a.y += b.y;
    a.z += b.z;
    a.w += b.w;
    r[k] = a;
  }
}

// Flat over rows x cols (rows are short: a row per block would leave most threads idle).
__global__ void to_bf16_rows_kernel(const float* in, int64_t ld, int64_t rows, int64_t cols, uint16_t* out) {
  const int64_t n = rows * cols;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = k / cols, c = k - r * cols;
    out[k] = bf16_bits(in[r * ld + c]);
  }
}

// Cumulative sums in three steps over chunks of kChunk positions: chunk totals, an
// exclusive scan of the totals per channel, then each chunk from its offset.
constexpr int64_t kChunk = 256;

__global__ void chunk_totals_kernel(const float* delta, int64_t T, int64_t W, double* totals) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x, chunk = blockIdx.y;
  if (c >= W) return;
  const int64_t t0 = chunk * kChunk, t1 = min(T, t0 + kChunk);
  double s = 0.0;
  for (int64_t t = t0; t < t1; ++t) s += delta[t * W + c];
  totals[chunk * W + c] = s;
}

__global__ void chunk_offsets_kernel(double* totals, int64_t nchunks, int64_t W) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= W) return;
  double acc = 0.0;
  for (int64_t k = 0; k < nchunks; ++k) {
    const double v = totals[k * W + c];
    totals[k * W + c] = acc;
    acc += v;
  }
}

__global__ void chunk_sum_kernel(const double* totals, int64_t nchunks, int64_t W, double* out) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (c >= W) return;
  double acc = 0.0;
  for (int64_t k = 0; k < nchunks; ++k) acc += totals[k * W + c];
  out[c] = acc;
}

__global__ void chunk_scan_kernel(const float* delta, int64_t T, int64_t W, const double* offsets, double* S) {
  const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x, chunk = blockIdx.y;
  if (c >= W) return;
  const int64_t t0 = chunk * kChunk, t1 = min(T, t0 + kChunk);
  double acc = offsets[chunk * W + c];
  for (int64_t t = t0; t < t1; ++t) {
    acc += delta[t * W + c];
    S[t * W + c] = acc;
  }
}

}  // namespace

void add_bias_rows(float* out, int64_t rows, int64_t cols, int64_t ld, const float* bias, cudaStream_t stream,
                   int layer) {
  if (!bias || rows * cols == 0) return;
  add_bias_kernel<<<grid_rows(rows, cols), kThreads, 0, stream>>>(out, rows, cols, ld, bias);
  check_launch("add_bias_rows", layer, stream);
}

void softplus_rows(float* x, int64_t rows, int64_t cols, int64_t ld, const float* bias, cudaStream_t stream, int layer) {
  if (rows * cols == 0) return;
  softplus_kernel<<<grid_rows(rows, cols), kThreads, 0, stream>>>(x, rows, cols, ld, bias);
  check_launch("softplus_rows", layer, stream);
}

namespace {
template <class In>
void launch_delta(const In* dt, int64_t ld, int64_t T, int64_t H, const float* dt_bias, double dt_min, double dt_max,
                  float* delta, cudaStream_t stream, int layer) {
  if (T * H == 0) return;
  mamba2_delta_kernel<<<grid_for(T * H), kThreads, 0, stream>>>(dt, ld, T, H, dt_bias, dt_min, dt_max, delta);
  check_launch("mamba2_delta", layer, stream);
}
template <class Z>
void launch_gate(float* y, const Z* z, int64_t ldz, int64_t T, int64_t D, float* gate_out, uint16_t* y16,
                 cudaStream_t stream, int layer) {
  if (T * D == 0) return;
  const bool vec = D % 4 == 0 && ldz % 4 == 0 && aligned(y, 16) && aligned(z, 4 * sizeof(Z)) &&
                   aligned(gate_out, 16) && aligned(y16, 8);
  const auto launch = [&](auto fast) {
    if (vec)
      silu_gate_vec_kernel<Z, decltype(fast)::value><<<grid_rows(T, D / 4), kThreads, 0, stream>>>(y, z, ldz, T, D,
                                                                                                    gate_out, y16);
    else
      silu_gate_kernel<Z, decltype(fast)::value><<<grid_rows(T, D), kThreads, 0, stream>>>(y, z, ldz, T, D, gate_out,
                                                                                            y16);
  };
  if (y16 && !gate_out) launch(std::true_type{});
  else launch(std::false_type{});
  check_launch("silu_gate", layer, stream);
}
}  // namespace

void mamba2_delta(const float* dt, int64_t ld, int64_t T, int64_t H, const float* dt_bias, double dt_min,
                  double dt_max, float* delta, cudaStream_t stream, int layer) {
  launch_delta(dt, ld, T, H, dt_bias, dt_min, dt_max, delta, stream, layer);
}
void mamba2_delta(const uint16_t* dt, int64_t ld, int64_t T, int64_t H, const float* dt_bias, double dt_min,
                  double dt_max, float* delta, cudaStream_t stream, int layer) {
  launch_delta(dt, ld, T, H, dt_bias, dt_min, dt_max, delta, stream, layer);
}

void silu_gate(float* y, const float* z, int64_t ldz, int64_t T, int64_t D, float* gate_out, uint16_t* y16,
               cudaStream_t stream, int layer) {
  launch_gate(y, z, ldz, T, D, gate_out, y16, stream, layer);
}
void silu_gate(float* y, const uint16_t* z, int64_t ldz, int64_t T, int64_t D, float* gate_out, uint16_t* y16,
               cudaStream_t stream, int layer) {
  launch_gate(y, z, ldz, T, D, gate_out, y16, stream, layer);
}

void embed_rows(const float* table, const int64_t* tokens, int64_t T, int64_t d, float* out, cudaStream_t stream) {
  if (T * d == 0) return;
  embed_kernel<<<grid_rows(T, d), kThreads, 0, stream>>>(table, tokens, T, d, out);
  check_launch("embed_rows", -1, stream);
}

void residual_add(float* r, const float* o, int64_t n, cudaStream_t stream, int layer) {
  if (n == 0) return;
  if (aligned(r, 16) && aligned(o, 16)) {
    const int64_t n4 = n / 4, tail = n - 4 * n4;
    if (n4 > 0)
      residual_add_vec_kernel<<<grid_for(n4), kThreads, 0, stream>>>(reinterpret_cast<float4*>(r),
                                                                      reinterpret_cast<const float4*>(o), n4);
    if (tail > 0) residual_add_kernel<<<1, kThreads, 0, stream>>>(r + 4 * n4, o + 4 * n4, tail);
  } else {
    residual_add_kernel<<<grid_for(n), kThreads, 0, stream>>>(r, o, n);
  }
  check_launch("residual_add", layer, stream);
}

void to_bf16(const float* in, int64_t n, uint16_t* out, cudaStream_t stream, const char* what, int layer) {
  to_bf16_rows(in, n, 1, n, out, stream, what, layer);  // one row of n
}

void to_bf16_rows(const float* in, int64_t ld, int64_t rows, int64_t cols, uint16_t* out, cudaStream_t stream,
                  const char* what, int layer) {
  if (rows == 0 || cols == 0) return;
  to_bf16_rows_kernel<<<grid_for(rows * cols), kThreads, 0, stream>>>(in, ld, rows, cols, out);
  check_launch(what, layer, stream);
}

int64_t cumulative_sum_work(int64_t T, int64_t W) { return ((T + kChunk - 1) / kChunk) * W; }

void cumulative_sum(const float* delta, int64_t T, int64_t W, double* S, double* work, cudaStream_t stream,
                    int layer) {
  if (T * W == 0) return;
  const int64_t nchunks = (T + kChunk - 1) / kChunk;
  if (nchunks > 65535) fail("cumulative_sum: T = ", T, " exceeds the supported ", 65535 * kChunk, " tokens");
  const dim3 grid(static_cast<unsigned>((W + 127) / 128), static_cast<unsigned>(nchunks));
  chunk_totals_kernel<<<grid, 128, 0, stream>>>(delta, T, W, work);
  check_launch("cumulative_sum (chunk totals)", layer, stream);
  chunk_offsets_kernel<<<static_cast<unsigned>((W + 127) / 128), 128, 0, stream>>>(work, nchunks, W);
  check_launch("cumulative_sum (chunk offsets)", layer, stream);
  chunk_scan_kernel<<<grid, 128, 0, stream>>>(delta, T, W, work, S);
  check_launch("cumulative_sum (chunk scan)", layer, stream);
}

void column_sums(const float* delta, int64_t T, int64_t W, double* total, double* work, cudaStream_t stream,
                 int layer) {
  if (W == 0) return;
  if (T == 0) {
    check(cudaMemsetAsync(total, 0, W * sizeof(double), stream), "column_sums", layer);
    return;
  }
  const int64_t nchunks = (T + kChunk - 1) / kChunk;
  if (nchunks > 65535) fail("column_sums: T = ", T, " exceeds the supported ", 65535 * kChunk, " tokens");
  const dim3 grid(static_cast<unsigned>((W + 127) / 128), static_cast<unsigned>(nchunks));
  chunk_totals_kernel<<<grid, 128, 0, stream>>>(delta, T, W, work);
  check_launch("column_sums (chunk totals)", layer, stream);
  chunk_sum_kernel<<<static_cast<unsigned>((W + 127) / 128), 128, 0, stream>>>(work, nchunks, W, total);
  check_launch("column_sums", layer, stream);
}

}  // namespace latim::cuda
