// cuBLAS wrapper for the forward pass's matrix products.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <tuple>

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

namespace {
// A product's shape as far as the choice of algorithm goes: operand and output types, the
// compute type, widths, rows, leading dimensions, whether it accumulates into its output,
// and the alignment (bytes, up to 256) of each pointer, which bounds the algorithms that may
// run (cublasLt's heuristic assumes 256 unless told).
struct PlanKey {
  int type, out_type, compute;
  int64_t rows, in_dim, out_dim, lda, ldo;
  bool accumulate;
  int align_w, align_in, align_out;
  auto tie() const {
    return std::tie(type, out_type, compute, rows, in_dim, out_dim, lda, ldo, accumulate, align_w, align_in,
                    align_out);
  }
  bool operator<(const PlanKey& o) const { return tie() < o.tie(); }
};

// A product's cublasLt descriptors and chosen algorithm.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w = nullptr, in = nullptr, out = nullptr;
  cublasLtMatmulAlgo_t algo{};
  std::size_t workspace = 0;
};

}  // namespace

struct Blas::Plans {
  std::map<PlanKey, Plan> map;
  static void destroy(Plan& p) {
    if (p.w) cublasLtMatrixLayoutDestroy(p.w);
    if (p.in) cublasLtMatrixLayoutDestroy(p.in);
    if (p.out) cublasLtMatrixLayoutDestroy(p.out);
    if (p.op) cublasLtMatmulDescDestroy(p.op);
    p = Plan{};
  }
  ~Plans() {
    for (auto& [key, p] : map) destroy(p);
  }
};

Blas::Blas() : plans_(std::make_unique<Plans>()) {
  check_blas(cublasLtCreate(&lt_), "cublasLtCreate", -1);
  int dev = 0, major = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
  tf32_ = major >= 8;
  if (const char* e = std::getenv("LATIM_GEMM_TUNE"); e && std::strcmp(e, "0") == 0) tune_ = false;
}
Blas::~Blas() {
  plans_.reset();
  if (lt_) cublasLtDestroy(lt_);
}

namespace {
// cublasLt's workspace: what cuBLAS itself reserves on Hopper.
constexpr std::size_t kLtWorkspace = std::size_t{32} << 20;

int alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

// An order-independent 64-bit digest of the bits of a [rows, cols] output (leading dimension
// ld, elements of `bytes` bytes), to tell whether two algorithms gave the same output.
__global__ void digest_kernel(const uint8_t* __restrict__ out, int64_t rows, int64_t cols, int64_t ld, int bytes,
                              unsigned long long* __restrict__ sum) {
  unsigned long long h = 0;
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / cols, c = i % cols, at = (r * ld + c) * bytes;
    uint64_t v = bytes == 2 ? *reinterpret_cast<const uint16_t*>(out + at) : *reinterpret_cast<const uint32_t*>(out + at);
    v = (v << 34) ^ static_cast<uint64_t>(i);  // splitmix64 of (bits, position)
    v += 0x9e3779b97f4a7c15ull;
    v = (v ^ (v >> 30)) * 0xbf58476d1ce4e5b9ull;
    v = (v ^ (v >> 27)) * 0x94d049bb133111ebull;
    h += v ^ (v >> 31);
  }
  for (int o = 16; o > 0; o /= 2) h += __shfl_xor_sync(0xffffffffu, h, o);
  if ((threadIdx.x & 31) == 0) atomicAdd(sum, h);
}

unsigned long long digest(const void* out, int64_t rows, int64_t cols, int64_t ld, int bytes, cudaStream_t stream,
                          unsigned long long* d, const char* what, int layer) {
  check(cudaMemsetAsync(d, 0, sizeof *d, stream), "cudaMemsetAsync (product digest)", layer);
  const int64_t blocks = std::min<int64_t>((rows * cols + 255) / 256, 2048);
  digest_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(static_cast<const uint8_t*>(out), rows, cols, ld,
                                                                   bytes, d);
  check_launch("digest_kernel", layer, stream);
  unsigned long long h = 0;
  check(cudaMemcpyAsync(&h, d, sizeof h, cudaMemcpyDeviceToHost, stream), what, layer);
  check(cudaStreamSynchronize(stream), what, layer);
  return h;
}

// Times cublasLt's candidates for a new plan on its first operands (see Blas in linear.hpp)
// and returns the index of the fastest whose output has candidate 0's bits. The candidates
// run on the first min(rows, kGemmTuneRows) rows. A plain product's output is overwritten by
// the product that follows; an accumulating one's candidates write a scratch output and
// read `out` as C.
int fastest(Blas& blas, const PlanKey& key, const Plan& p, const cublasLtMatmulHeuristicResult_t* cand, int found,
            const void* W, const void* in, void* out, const float* alpha, const float* beta, cudaStream_t stream,
            const char* what, int layer) {
  const int64_t rows = std::min(key.rows, kGemmTuneRows);
  const auto type = static_cast<cudaDataType_t>(key.type), out_type = static_cast<cudaDataType_t>(key.out_type);
  const int ob = out_type == CUDA_R_16BF ? 2 : 4;
  cublasLtMatrixLayout_t lin = nullptr, lout = nullptr;
  check_blas(cublasLtMatrixLayoutCreate(&lin, type, key.in_dim, rows, key.lda), "cublasLtMatrixLayoutCreate", layer);
  check_blas(cublasLtMatrixLayoutCreate(&lout, out_type, key.out_dim, rows, key.ldo), "cublasLtMatrixLayoutCreate",
             layer);
  const std::string scratch = std::string("product timing scratch (") + what + ")";
  uint8_t* tmp = blas.tune_out.reserve(
      (key.accumulate ? ((rows - 1) * key.ldo + key.out_dim) * ob : 0) + int64_t{256}, scratch, layer);
  auto* sum = reinterpret_cast<unsigned long long*>(tmp);
  void* d = key.accumulate ? tmp + 256 : out;
  void* work = blas.lt_work.reserve(static_cast<int64_t>(kLtWorkspace), "cuBLAS workspace", layer);
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  check(cudaEventCreate(&e0), "cudaEventCreate", layer);
  check(cudaEventCreate(&e1), "cudaEventCreate", layer);
  unsigned long long ref = 0;
  int best = 0;
  float best_ms = 0;
  for (int i = 0; i < found; ++i) {
    auto run = [&] {
      return cublasLtMatmul(blas.lt(), p.op, alpha, W, p.w, in, lin, beta, out, lout, d, lout, &cand[i].algo, work,
                            kLtWorkspace, stream);
    };
    if (run() != CUBLAS_STATUS_SUCCESS) {
      if (i == 0) break;  // no reference bits: keep candidate 0
      continue;
    }
    const unsigned long long h = digest(d, rows, key.out_dim, key.ldo, ob, stream, sum, what, layer);
    if (i == 0) ref = h;
    else if (h != ref) continue;  // another order of sums: never chosen
    constexpr int kReps = 3;
    check(cudaEventRecord(e0, stream), "cudaEventRecord", layer);
    for (int r = 0; r < kReps; ++r) run();
    check(cudaEventRecord(e1, stream), "cudaEventRecord", layer);
    check(cudaEventSynchronize(e1), what, layer);
    float ms = 0;
    check(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime", layer);
    if (i == 0 || ms < best_ms) best = i, best_ms = ms;
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cublasLtMatrixLayoutDestroy(lin);
  cublasLtMatrixLayoutDestroy(lout);
  blas.tune_out.release();
  return best;
}

// The plan for `key`, made (and with tuning timed on these operands) at its first use.
const Plan& plan_for(Blas& blas, const PlanKey& key, const void* W, const void* in, void* out, const float* alpha,
                     const float* beta, cudaStream_t stream, const char* what, int layer) {
  auto& map = blas.plans().map;
  if (auto it = map.find(key); it != map.end()) return it->second;
  const auto type = static_cast<cudaDataType_t>(key.type), out_type = static_cast<cudaDataType_t>(key.out_type);
  Plan& p = map[key];  // owns the descriptors from here on
  // out^T [out_dim, rows] = W [out_dim, in_dim] · in^T in cuBLAS's column-major terms.
  check_blas(cublasLtMatmulDescCreate(&p.op, static_cast<cublasComputeType_t>(key.compute), CUDA_R_32F),
             "cublasLtMatmulDescCreate", layer);
  const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  check_blas(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t),
             "cublasLtMatmulDescSetAttribute", layer);
  check_blas(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n),
             "cublasLtMatmulDescSetAttribute", layer);
  check_blas(cublasLtMatrixLayoutCreate(&p.w, type, key.in_dim, key.out_dim, key.in_dim), "cublasLtMatrixLayoutCreate",
             layer);
  check_blas(cublasLtMatrixLayoutCreate(&p.in, type, key.in_dim, key.rows, key.lda), "cublasLtMatrixLayoutCreate",
             layer);
  check_blas(cublasLtMatrixLayoutCreate(&p.out, out_type, key.out_dim, key.rows, key.ldo),
             "cublasLtMatrixLayoutCreate", layer);

  cublasLtMatmulPreference_t pref = nullptr;
  check_blas(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate", layer);
  const std::size_t ws = kLtWorkspace;
  const uint32_t aw = key.align_w, ai = key.align_in, ao = key.align_out;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw, sizeof aw);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ai, sizeof ai);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ao, sizeof ao);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ao, sizeof ao);
  cublasLtMatmulHeuristicResult_t cand[kGemmCandidates];
  int found = 0;
  const cublasStatus_t hs =
      cublasLtMatmulAlgoGetHeuristic(blas.lt(), p.op, p.w, p.in, p.out, p.out, pref, kGemmCandidates, cand, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (hs != CUBLAS_STATUS_SUCCESS || found == 0) {
    Blas::Plans::destroy(p);
    map.erase(key);
    fail("cuBLAS has no algorithm for ", what, " (layer ", layer, "), a ", key.rows, " × ", key.in_dim, " by ",
         key.in_dim, " × ", key.out_dim, " product",
         hs != CUBLAS_STATUS_SUCCESS ? std::string(": ") + cublasGetStatusString(hs) : std::string());
  }
  const int best = blas.tunes() && found > 1
                       ? fastest(blas, key, p, cand, found, W, in, out, alpha, beta, stream, what, layer)
                       : 0;
  p.algo = cand[best].algo;
  p.workspace = cand[best].workspaceSize;
  return p;
}

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
  const PlanKey key{type, out_type, compute,    rows,         in_dim,        out_dim,       lda,
                    ldo,  add_to_out, alignment(W), alignment(in), alignment(out)};
  const Plan& p = plan_for(blas, key, W, in, out, &alpha, &beta, stream, what, layer);
  void* work = p.workspace ? blas.lt_work.reserve(static_cast<int64_t>(kLtWorkspace), "cuBLAS workspace", layer)
                           : nullptr;
  check_blas(cublasLtMatmul(blas.lt(), p.op, &alpha, W, p.w, in, p.in, &beta, out, p.out, out, p.out, &p.algo, work,
                            p.workspace ? kLtWorkspace : 0, stream),
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
