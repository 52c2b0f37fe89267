// cuBLAS wrapper for the forward pass's matrix products.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "cuda_check.hpp"
#include "linear.hpp"
#include "pointwise.hpp"

namespace latim::cuda {

namespace {
void check_blas(cublasStatus_t s, const char* what, int layer) {
  if (s != CUBLAS_STATUS_SUCCESS)
    fail("cuBLAS error in ", what, layer >= 0 ? " (layer " + std::to_string(layer) + ")" : std::string(), ": ",
         cublasGetStatusString(s));
}
void check_dims(int64_t rows, int64_t in_dim, int64_t out_dim, int64_t lda, int64_t ldo, const char* what, int layer) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  if (rows > kMax || in_dim > kMax || out_dim > kMax || lda > kMax || ldo > kMax)
    fail(what, " (layer ", layer, "): matrix dimension above 2^31 - 1");
}
}  // namespace

Blas::Blas() {
  check_blas(cublasCreate(&h_), "cublasCreate", -1);
  int dev = 0, major = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  tf32_ = major >= 8;
}
Blas::~Blas() {
  if (h_) cublasDestroy(h_);
}
void Blas::set_stream(cudaStream_t s) { check_blas(cublasSetStream(h_, s), "cublasSetStream", -1); }

namespace {
// out^T [out_dim, rows] = W [out_dim, in_dim] · in^T, column-major view of the row-major
// out = in Wᵀ (add_to_out: out += in Wᵀ, cuBLAS's beta = 1), with operands of type `type`,
// output of type `out_type` (fp32 unless bf16), then the bias (fp32 outputs only).
void gemm(Blas& blas, const void* in, const void* W, cudaDataType_t type, cublasComputeType_t compute, int64_t rows,
          int64_t in_dim, int64_t lda, int64_t out_dim, const float* bias, void* out, cudaDataType_t out_type,
          int64_t ldo, cudaStream_t stream, const char* what, int layer, bool add_to_out = false) {
  if (rows == 0 || out_dim == 0) return;
  check_dims(rows, in_dim, out_dim, lda, ldo, what, layer);
  if ((bias || add_to_out) && out_type != CUDA_R_32F)
    fail(what, " (layer ", layer, "): internal: a bias or an accumulation on a bf16 output");
  const float alpha = 1.0f, beta = add_to_out ? 1.0f : 0.0f;
  blas.set_stream(stream);
  check_blas(cublasGemmEx(blas.handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out_dim), static_cast<int>(rows),
                          static_cast<int>(in_dim), &alpha, W, type, static_cast<int>(in_dim), in, type,
                          static_cast<int>(lda), &beta, out, out_type, static_cast<int>(ldo), compute,
                          CUBLAS_GEMM_DEFAULT),
             what, layer);
  if (bias) add_bias_rows(static_cast<float*>(out), rows, out_dim, ldo, bias, stream, layer);
}

constexpr int kSplitThreads = 256;

// The tf32 value nearest to a (ties away from zero, as cvt.rna.tf32.f32): fp32 with the low
// 13 mantissa bits cleared. Infinities and NaNs pass unchanged.
__device__ __forceinline__ float tf32_nearest(float a) {
  const uint32_t u = __float_as_uint(a);
  if ((u & 0x7f800000u) == 0x7f800000u) return a;
  return __uint_as_float((u + 0x1000u) & 0xffffe000u);
}

// out [rows, 3k]: three blocks of k columns, each a_hi = tf32(a) except block `lo`, which
// holds a_lo = tf32(a - a_hi) (a - a_hi is exact in fp32). The input side is split as
// [lo | hi | hi] and the weight side as [hi | lo | hi], so that the product over 3k sums
// a_lo b_hi + a_hi b_lo + a_hi b_hi: the small terms first. The tensor cores' fp32 sums
// truncate, each step losing up to an ulp of the running sum; while that sum only holds the
// small terms, those losses are about 2^-11 smaller. (H100, 65536 rows at the 130m in_proj
// and out_proj shapes: big term first, 7.5-11× the error of cuBLAS's fp32 product; small
// terms first, 1.7-2.8×.)
template <int lo, int V>
__global__ void split_tf32_kernel(const float* __restrict__ in, int64_t rows, int64_t k, int64_t ld,
                                  float* __restrict__ out) {
  const int64_t kv = k / V;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
    for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < kv; c += int64_t{gridDim.x} * blockDim.x) {
      float a[V], hi[V], lw[V];
      if constexpr (V == 4) {
        const float4 v = reinterpret_cast<const float4*>(in + r * ld)[c];
        a[0] = v.x, a[1] = v.y, a[2] = v.z, a[3] = v.w;
      } else {
        a[0] = in[r * ld + c];
      }
#pragma unroll
      for (int i = 0; i < V; ++i) {
        hi[i] = tf32_nearest(a[i]);
        lw[i] = tf32_nearest(a[i] - hi[i]);
      }
      float* o = out + r * 3 * k + c * V;
#pragma unroll
      for (int b = 0; b < 3; ++b) {
        const float* src = b == lo ? lw : hi;
        if constexpr (V == 4) *reinterpret_cast<float4*>(o + b * k) = make_float4(src[0], src[1], src[2], src[3]);
        else o[b * k] = src[0];
      }
    }
}

// Splits in [rows, k] (leading dimension ld) into out [rows, 3k] (see split_tf32_kernel).
template <int lo>
void split_tf32(const float* in, int64_t rows, int64_t k, int64_t ld, float* out, cudaStream_t stream, int layer) {
  if (rows == 0 || k == 0) return;
  const bool vec = k % 4 == 0 && ld % 4 == 0 && reinterpret_cast<uintptr_t>(in) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int64_t cols = vec ? k / 4 : k;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>((cols + kSplitThreads - 1) / kSplitThreads, 65535)),
                  static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  if (vec) split_tf32_kernel<lo, 4><<<grid, kSplitThreads, 0, stream>>>(in, rows, k, ld, out);
  else split_tf32_kernel<lo, 1><<<grid, kSplitThreads, 0, stream>>>(in, rows, k, ld, out);
  check_launch("split_tf32_kernel", layer, stream);
}

// The fp32 product as split tf32 products (see linear.hpp): the weight split once, then the
// input in blocks of split_rows(rows, in_dim) rows, each one tf32 cuBLAS product over 3 in_dim.
void linear_split_fp32(Blas& blas, const float* in, int64_t rows, int64_t in_dim, int64_t lda, const float* W,
                       int64_t out_dim, const float* bias, float* out, int64_t ldo, cudaStream_t stream,
                       const char* what, int layer, bool add_to_out) {
  if (rows == 0 || out_dim == 0) return;
  const int64_t k3 = 3 * in_dim;
  check_dims(rows, k3, out_dim, k3, ldo, what, layer);
  const std::string ws = std::string("split fp32 product workspace (") + what + ")";
  float* w3 = blas.split_w.reserve(out_dim * k3, ws, layer);
  split_tf32<1>(W, out_dim, in_dim, in_dim, w3, stream, layer);
  const int64_t block = std::min(rows, split_rows(rows, in_dim));
  float* a3 = blas.split_in.reserve(block * k3, ws, layer);
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t n = std::min(block, rows - r0);
    split_tf32<0>(in + r0 * lda, n, in_dim, lda, a3, stream, layer);
    gemm(blas, a3, w3, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, n, k3, k3, out_dim, bias, out + r0 * ldo, CUDA_R_32F,
         ldo, stream, what, layer, add_to_out);
  }
}

}  // namespace

void linear(Blas& blas, MathMode mode, const float* in, int64_t rows, int64_t in_dim, int64_t lda, const float* W,
            int64_t out_dim, const float* bias, float* out, int64_t ldo, cudaStream_t stream, const char* what,
            int layer, bool add_to_out) {
  if (mode == MathMode::FP32X3 && blas.tf32_tensor_cores() && split_pays(in_dim, out_dim)) {
    linear_split_fp32(blas, in, rows, in_dim, lda, W, out_dim, bias, out, ldo, stream, what, layer, add_to_out);
    return;
  }
  const cublasComputeType_t compute = mode == MathMode::FP32 || mode == MathMode::FP32X3 ? CUBLAS_COMPUTE_32F
                                      : mode == MathMode::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                               : CUBLAS_COMPUTE_32F_FAST_16BF;
  gemm(blas, in, W, CUDA_R_32F, compute, rows, in_dim, lda, out_dim, bias, out, CUDA_R_32F, ldo, stream, what, layer,
       add_to_out);
}

void linear_bf16(Blas& blas, const uint16_t* in, int64_t rows, int64_t in_dim, int64_t lda, const uint16_t* W,
                 int64_t out_dim, const float* bias, float* out, int64_t ldo, cudaStream_t stream, const char* what,
                 int layer, bool add_to_out) {
  gemm(blas, in, W, CUDA_R_16BF, CUBLAS_COMPUTE_32F, rows, in_dim, lda, out_dim, bias, out, CUDA_R_32F, ldo, stream,
       what, layer, add_to_out);
}

void linear_bf16(Blas& blas, const uint16_t* in, int64_t rows, int64_t in_dim, int64_t lda, const uint16_t* W,
                 int64_t out_dim, uint16_t* out, int64_t ldo, cudaStream_t stream, const char* what, int layer) {
  gemm(blas, in, W, CUDA_R_16BF, CUBLAS_COMPUTE_32F, rows, in_dim, lda, out_dim, nullptr, out, CUDA_R_16BF, ldo,
       stream, what, layer);
}

}  // namespace latim::cuda
