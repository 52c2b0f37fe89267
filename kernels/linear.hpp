// Matrix products of the forward pass through cuBLAS, in the precision the user chose:
// fp32 (CUDA cores), tf32 or bf16 tensor cores, with fp32 outputs and sums; inputs in fp32
// or, for the bf16 mode's large products, already rounded to bf16.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace latim::cuda {

enum class MathMode { FP32, TF32, BF16 };

class Blas {
 public:
  Blas();
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  void set_stream(cudaStream_t s);
  cublasHandle_t handle() const { return h_; }

 private:
  cublasHandle_t h_ = nullptr;
};

// out[r, o] = sum_k in[r, k] W[o, k] (+ bias[o]); in has leading dimension lda, out ldo.
// W is row-major [out_dim, in_dim] (nn.Linear layout). `what` names the product in errors.
void linear(Blas& blas, MathMode mode, const float* in, int64_t rows, int64_t in_dim, int64_t lda, const float* W,
            int64_t out_dim, const float* bias, float* out, int64_t ldo, cudaStream_t stream, const char* what,
            int layer);

// The same product on bf16 operands (bit patterns of __nv_bfloat16: the input and a bf16 copy
// of W), with fp32 sums and output: a plain bf16 product. (MathMode::BF16 on fp32 operands
// is not the same thing: for it cuBLAS chose tf32 kernels on the H100.)
void linear_bf16(Blas& blas, const uint16_t* in, int64_t rows, int64_t in_dim, int64_t lda, const uint16_t* W,
                 int64_t out_dim, const float* bias, float* out, int64_t ldo, cudaStream_t stream, const char* what,
                 int layer);
// The same with the output rounded to bf16 (fp32 sums; no bias): the bf16 mode's in_proj,
// whose output only the kernels after it read.
void linear_bf16(Blas& blas, const uint16_t* in, int64_t rows, int64_t in_dim, int64_t lda, const uint16_t* W,
                 int64_t out_dim, uint16_t* out, int64_t ldo, cudaStream_t stream, const char* what, int layer);

}  // namespace latim::cuda
