// cuBLAS wrapper for the forward pass's matrix products.
#include <limits>

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

Blas::Blas() { check_blas(cublasCreate(&h_), "cublasCreate", -1); }
Blas::~Blas() {
  if (h_) cublasDestroy(h_);
}
void Blas::set_stream(cudaStream_t s) { check_blas(cublasSetStream(h_, s), "cublasSetStream", -1); }

namespace {
// out^T [out_dim, rows] = W [out_dim, in_dim] · in^T, column-major view of the row-major
// out = in Wᵀ, with operands of type `type`, output of type `out_type` (fp32 unless bf16),
// then the bias (fp32 outputs only).
void gemm(Blas& blas, const void* in, const void* W, cudaDataType_t type, cublasComputeType_t compute, int64_t rows,
          int64_t in_dim, int64_t lda, int64_t out_dim, const float* bias, void* out, cudaDataType_t out_type,
          int64_t ldo, cudaStream_t stream, const char* what, int layer) {
  if (rows == 0 || out_dim == 0) return;
  check_dims(rows, in_dim, out_dim, lda, ldo, what, layer);
  const float alpha = 1.0f, beta = 0.0f;
  blas.set_stream(stream);
  check_blas(cublasGemmEx(blas.handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out_dim), static_cast<int>(rows),
                          static_cast<int>(in_dim), &alpha, W, type, static_cast<int>(in_dim), in, type,
                          static_cast<int>(lda), &beta, out, out_type, static_cast<int>(ldo), compute,
                          CUBLAS_GEMM_DEFAULT),
             what, layer);
  if (bias && out_type != CUDA_R_32F) fail(what, " (layer ", layer, "): internal: a bias on a bf16 output");
  if (bias) add_bias_rows(static_cast<float*>(out), rows, out_dim, ldo, bias, stream, layer);
}
}  // namespace

void linear(Blas& blas, MathMode mode, const float* in, int64_t rows, int64_t in_dim, int64_t lda, const float* W,
            int64_t out_dim, const float* bias, float* out, int64_t ldo, cudaStream_t stream, const char* what,
            int layer) {
  const cublasComputeType_t compute = mode == MathMode::FP32   ? CUBLAS_COMPUTE_32F
                                      : mode == MathMode::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                               : CUBLAS_COMPUTE_32F_FAST_16BF;
  gemm(blas, in, W, CUDA_R_32F, compute, rows, in_dim, lda, out_dim, bias, out, CUDA_R_32F, ldo, stream, what, layer);
}

void linear_bf16(Blas& blas, const uint16_t* in, int64_t rows, int64_t in_dim, int64_t lda, const uint16_t* W,
                 int64_t out_dim, const float* bias, float* out, int64_t ldo, cudaStream_t stream, const char* what,
                 int layer) {
  gemm(blas, in, W, CUDA_R_16BF, CUBLAS_COMPUTE_32F, rows, in_dim, lda, out_dim, bias, out, CUDA_R_32F, ldo, stream,
       what, layer);
}

void linear_bf16(Blas& blas, const uint16_t* in, int64_t rows, int64_t in_dim, int64_t lda, const uint16_t* W,
                 int64_t out_dim, uint16_t* out, int64_t ldo, cudaStream_t stream, const char* what, int layer) {
  gemm(blas, in, W, CUDA_R_16BF, CUBLAS_COMPUTE_32F, rows, in_dim, lda, out_dim, nullptr, out, CUDA_R_16BF, ldo,
       stream, what, layer);
}

}  // namespace latim::cuda
