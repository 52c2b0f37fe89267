// RMSNorm kernels: one block per row; the sum of squares is reduced in fp64, as on the CPU.
#include "cuda_check.hpp"
#include "rmsnorm.hpp"

namespace latim::cuda {

namespace {

constexpr int kThreads = 256;

__device__ double block_sum(double v, double* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  double s = 0.0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) s += shared[w];
  return s;
}

__global__ void rmsnorm_kernel(const float* __restrict__ in, int64_t dim, const float* __restrict__ w, double eps,
                               float* __restrict__ out) {
  __shared__ double red[kThreads / 32];
  const int64_t row = blockIdx.x;
  const float* x = in + row * dim;
  double ss = 0.0;
  for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) ss += static_cast<double>(x[k]) * x[k];
  ss = block_sum(ss, red);
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(dim) + eps));
  float* y = out + row * dim;
  for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) y[k] = w[k] * (x[k] * inv);
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

__global__ void gated_rmsnorm_kernel(float* __restrict__ y, const float* __restrict__ z, int64_t ldz, int64_t D,
                                     int64_t G, const float* __restrict__ w, double eps, bool norm_before_gate,
                                     float* __restrict__ gate_out, float* __restrict__ gamma_out) {
  __shared__ double red[kThreads / 32];
  const int64_t t = blockIdx.x;
  float* yt = y + t * D;
  const float* zt = z + t * ldz;
  const int64_t gs = D / G;
  for (int64_t g = 0; g < G; ++g) {
    double ss = 0.0;
    for (int64_t k = g * gs + threadIdx.x; k < (g + 1) * gs; k += blockDim.x) {
      const double v = norm_before_gate ? yt[k] : yt[k] * silu(zt[k]);
      ss += v * v;
    }
    ss = block_sum(ss, red);
    const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(gs) + eps));
    for (int64_t k = g * gs + threadIdx.x; k < (g + 1) * gs; k += blockDim.x) {
      const float gate = silu(zt[k]);
      const float gamma = w[k] * inv;
      if (gate_out) gate_out[t * D + k] = gate;
      if (gamma_out) gamma_out[t * D + k] = gamma;
      yt[k] = gamma * (yt[k] * gate);
    }
  }
}

}  // namespace

void rmsnorm_rows(const float* in, int64_t rows, int64_t dim, const float* w, double eps, float* out,
                  cudaStream_t stream, int layer) {
  if (rows == 0) return;
  rmsnorm_kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(in, dim, w, eps, out);
  check_launch("rmsnorm_rows", layer, stream);
}

void gated_rmsnorm(float* y, const float* z, int64_t ldz, int64_t T, int64_t D, int64_t G, const float* w,
                   double eps, bool norm_before_gate, float* gate_out, float* gamma_out, cudaStream_t stream,
                   int layer) {
  if (T == 0) return;
  gated_rmsnorm_kernel<<<static_cast<unsigned>(T), kThreads, 0, stream>>>(y, z, ldz, D, G, w, eps, norm_before_gate,
                                                                         gate_out, gamma_out);
  check_launch("gated_rmsnorm", layer, stream);
}

}  // namespace latim::cuda
