// Matrix products of the forward pass through cuBLAS, in the precision the user chose:
// fp32, tf32 or bf16 tensor cores, with fp32 outputs and sums; inputs in fp32 or, for the
// bf16 mode's large products, already rounded to bf16.
//
// MathMode::FP32X3, near-fp32 accuracy from tf32 tensor cores (compute capability 8.0 and
// up, at widths where it pays: split_pays; MathMode::FP32 elsewhere), runs split products
// ("3×TF32"): each operand is split into two tf32 values, a = a_hi + a_lo, and
// a·b ≈ a_lo·b_hi + a_hi·b_lo + a_hi·b_hi with fp32 sums, as one tf32 cuBLAS product over
// three times the inner dimension. On an H100 at the 130m in_proj/out_proj shapes (65536
// rows) the product runs 2.3-2.6× faster than cuBLAS's fp32 product, 1.8-2.3× with the
// split pass. Only a_lo·b_lo (about 2^-22 of a·b) and the rounding of a_lo, b_lo are
// dropped; what is left is the tensor cores' fp32 sums, which truncate: up to an ulp of the
// running sum per step of 8 products (the tf32 k step), so at most (K/8)·2^-23 of the
// largest output. Measured against fp64 on an H100: 1-2.3·10^-6 at K = 768 and 2-5·10^-6 at
// K = 1536, where cuBLAS's fp32 product gives 0.5-2·10^-6 and fp32 inputs on plain tf32
// 3·10^-4. The GPU test LinearFp32SplitProductsHaveFp32Accuracy checks it against fp64.
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include "device_buffer.hpp"

namespace latim::cuda {

enum class MathMode { FP32, FP32X3, TF32, BF16 };

// The products run through cublasLt, one plan per shape (types, widths, rows, leading
// dimensions, operand alignments, accumulate or not). A plan's algorithm is chosen at its first
// product: cublasLt's heuristic proposes up to kGemmCandidates algorithms, each runs on the
// real operands (at most kGemmTuneRows rows of them) and the fastest whose output has the
// same bits as the heuristic's first choice is kept. Where out_dim is above 128 and no multiple
// of it, the columns up to the multiple of 128 and the rest, as two products, are a candidate
// too, under the same rule. The output so never depends on the timing (run to run, or rank
// to rank). On an H100 at the 130m shapes and 65536 rows this took in_proj from 509 to 483
// µs (Mamba-2; 425 + 40 µs split as 3328 + 24 columns) and from 427 to 391 µs (Mamba-1),
// out_proj from 294 to 261 µs; at 1M rows the first choice was as fast. Timing a model's
// products costs its first forward about 0.1 s, so the choices are kept in a cache file for
// the next runs (cache_path). LATIM_GEMM_TUNE=0 keeps the heuristic's first choice without
// timing.
constexpr int kGemmCandidates = 16;
constexpr int64_t kGemmTuneRows = 65536;

class Blas {
 public:
  Blas();
  ~Blas();
  Blas(const Blas&) = delete;
  Blas& operator=(const Blas&) = delete;
  cublasLtHandle_t lt() const { return lt_; }
  // Whether the device has tf32 tensor cores (MathMode::FP32X3 runs as split products).
  bool tf32_tensor_cores() const { return tf32_; }
  // Whether first products time the heuristic's candidates (LATIM_GEMM_TUNE not "0").
  bool tunes() const { return tune_; }
  // LATIM_GEMM_TUNE=split (tests): a product whose columns can split takes the split
  // whenever it has the first choice's bits, faster or not.
  bool forces_split() const { return force_split_; }
  // How many plans split their columns in two products.
  int split_plans() const;
  // The file that keeps tuned plans between runs, so that only a machine's first run of a
  // shape times its candidates: LATIM_GEMM_CACHE, else $XDG_CACHE_HOME/latim/gemm-plans.txt
  // or ~/.cache/latim/gemm-plans.txt; empty with LATIM_GEMM_CACHE=off. Each line is tagged
  // with the GPU's name, its compute capability and the cuBLAS version, and a plan read back
  // must pass cublasLt's check for its shape (cublasLt documents its algorithm descriptions
  // as reusable with the same library version). A file that cannot be read or written only
  // means tuning again.
  const std::string& cache_path() const { return cache_path_; }
  const std::string& device_tag() const { return device_tag_; }
  // Plans timed in this process, and plans read back from the cache file.
  int timed_plans() const;
  int cached_plans() const;

  // Workspaces of the split products: the weight's split copy [out_dim, 3 in_dim] and one
  // block of split input rows [split_rows(rows, in_dim), 3 in_dim].
  DeviceArray<float> split_w, split_in;
  // cublasLt's workspace, and the output of the candidates timed for an accumulating product
  // (released after each choice).
  DeviceArray<uint8_t> lt_work, tune_out;

  struct Plans;  // the plans made so far (linear.cu)
  Plans& plans() { return *plans_; }

 private:
  cublasLtHandle_t lt_ = nullptr;
  bool tf32_ = false, tune_ = true, force_split_ = false;
  std::string cache_path_, device_tag_;
  std::unique_ptr<Plans> plans_;
};

// Whether the split product beats cuBLAS's fp32 one for these widths. Splitting moves about
// 28 bytes per input value (read 4, write 12, the product reads 12); cuBLAS's fp32 product
// spends 2 out_dim FLOPs on it at about 50 TFLOP/s (H100). With about 3 TB/s that breaks
// even near out_dim = 370: the 130m in_proj (3072-3352) and out_proj (768) split, Mamba-1's
// x_proj (80 outputs; its split pass alone took 0.53 ms per layer at 64K) and dt_proj (48
// inputs) do not.
inline bool split_pays(int64_t in_dim, int64_t out_dim) { return out_dim >= 512 && in_dim >= 128; }

// Rows of the input split at a time in the split fp32 product: its workspace (3 in_dim
// floats per row) stays within kSplitBytes whatever T is, in blocks of equal size (a
// multiple of 128 rows). At the 130m shapes and T = 64K: in_proj in one block, out_proj in
// two of 32K rows. (Fixed blocks of 8K rows were 3-6 % slower, and a 7K-row tail block
// after a 58K one cost about 1 %.)
constexpr int64_t kSplitBytes = int64_t{768} << 20;
inline int64_t split_rows(int64_t rows, int64_t in_dim) {
  int64_t cap = kSplitBytes / (3 * in_dim * static_cast<int64_t>(sizeof(float)));
  cap = cap < 128 ? 128 : cap / 128 * 128;
  const int64_t blocks = (rows + cap - 1) / cap;
  const int64_t even = (rows + blocks - 1) / blocks;
  return std::min(cap, (even + 127) / 128 * 128);
}

// out[r, o] = sum_k in[r, k] W[o, k] (+ bias[o]); in has leading dimension lda, out ldo.
// W is row-major [out_dim, in_dim] (nn.Linear layout). `what` names the product in errors.
// add_to_out: out[r, o] += the product instead (cuBLAS's beta = 1, one fp32 rounding of the
// sum), e.g. out_proj straight into the residual stream.
void linear(Blas& blas, MathMode mode, const float* in, int64_t rows, int64_t in_dim, int64_t lda, const float* W,
            int64_t out_dim, const float* bias, float* out, int64_t ldo, cudaStream_t stream, const char* what,
            int layer, bool add_to_out = false);

// The same product on bf16 operands (bit patterns of __nv_bfloat16: the input and a bf16 copy
// of W), with fp32 sums and output: a plain bf16 product. (MathMode::BF16 on fp32 operands
// is not the same thing: for it cuBLAS chose tf32 kernels on the H100.)
void linear_bf16(Blas& blas, const uint16_t* in, int64_t rows, int64_t in_dim, int64_t lda, const uint16_t* W,
                 int64_t out_dim, const float* bias, float* out, int64_t ldo, cudaStream_t stream, const char* what,
                 int layer, bool add_to_out = false);
// The same with the output rounded to bf16 (fp32 sums; no bias): the bf16 mode's in_proj,
// whose output only the kernels after it read.
void linear_bf16(Blas& blas, const uint16_t* in, int64_t rows, int64_t in_dim, int64_t lda, const uint16_t* W,
                 int64_t out_dim, uint16_t* out, int64_t ldo, cudaStream_t stream, const char* what, int layer);

}  // namespace latim::cuda
