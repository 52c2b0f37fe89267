// cuBLAS wrapper for the forward pass's matrix products.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
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

// One product over the output columns [col0, col0 + cols): its layouts and algorithm.
struct Part {
  int64_t col0 = 0, cols = 0;
  cublasLtMatrixLayout_t w = nullptr, out = nullptr;
  cublasLtMatmulAlgo_t algo{};
  std::size_t workspace = 0;
};

// A product's cublasLt descriptors and chosen algorithms: one part, or two when the columns
// up to a multiple of 128 and the rest ran faster as two products (see plan_for).
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t in = nullptr;
  Part part[2];
  int parts = 0;
};

void destroy(Part& p) {
  if (p.w) cublasLtMatrixLayoutDestroy(p.w);
  if (p.out) cublasLtMatrixLayoutDestroy(p.out);
  p = Part{};
}

// A tuned plan as the cache file keeps it: its parts' columns and algorithms.
struct Cached {
  int parts = 0;
  int64_t col0[2] = {0, 0}, cols[2] = {0, 0};
  cublasLtMatmulAlgo_t algo[2]{};
};

}  // namespace

struct Blas::Plans {
  std::map<PlanKey, Plan> map;
  std::map<PlanKey, Cached> cached;  // this device's lines of the cache file
  bool cache_read = false;
  int split = 0, timed = 0, from_cache = 0;  // plans split, timed, read back
  static void destroy(Plan& p) {
    for (Part& q : p.part) latim::cuda::destroy(q);
    if (p.in) cublasLtMatrixLayoutDestroy(p.in);
    if (p.op) cublasLtMatmulDescDestroy(p.op);
    p = Plan{};
  }
  ~Plans() {
    for (auto& [key, p] : map) destroy(p);
  }
};

Blas::Blas() : plans_(std::make_unique<Plans>()) {
  check_blas(cublasLtCreate(&lt_), "cublasLtCreate", -1);
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
  tf32_ = prop.major >= 8;
  if (const char* e = std::getenv("LATIM_GEMM_TUNE")) {
    tune_ = std::strcmp(e, "0") != 0;
    force_split_ = std::strcmp(e, "split") == 0;
  }
  if (const char* e = std::getenv("LATIM_GEMM_CACHE"); e && *e) {
    if (std::strcmp(e, "off") != 0) cache_path_ = e;
  } else if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) {
    cache_path_ = std::string(x) + "/latim/gemm-plans.txt";
  } else if (const char* h = std::getenv("HOME"); h && *h) {
    cache_path_ = std::string(h) + "/.cache/latim/gemm-plans.txt";
  }
  std::string name = prop.name;
  for (char& c : name)
    if (c == ' ' || c == '\t') c = '_';
  device_tag_ = name + "/sm" + std::to_string(prop.major) + std::to_string(prop.minor) + "/cublasLt" +
                std::to_string(cublasLtGetVersion());
}
Blas::~Blas() {
  plans_.reset();
  if (lt_) cublasLtDestroy(lt_);
}
int Blas::split_plans() const { return plans_->split; }
int Blas::timed_plans() const { return plans_->timed; }
int Blas::cached_plans() const { return plans_->from_cache; }

namespace {
// cublasLt's workspace: what cuBLAS itself reserves on Hopper.
constexpr std::size_t kLtWorkspace = std::size_t{32} << 20;

int alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  int al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

int type_bytes(int t) { return t == CUDA_R_16BF ? 2 : 4; }

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

// A product's operands and its first-use state: makes the parts' layouts and heuristics and,
// with tuning, times the candidates on the first min(rows, kGemmTuneRows) rows. A plain
// product's output is overwritten by the product that follows; an accumulating one's
// candidates write a scratch output and read `out` as C.
class Planner {
 public:
  Planner(Blas& blas, const PlanKey& key, Plan& plan, const void* W, const void* in, void* out, const float* alpha,
          const float* beta, cudaStream_t stream, const char* what, int layer)
      : blas_(blas), k_(key), p_(plan), W_(static_cast<const uint8_t*>(W)), in_(in),
        out_(static_cast<uint8_t*>(out)), alpha_(alpha), beta_(beta), stream_(stream), what_(what), layer_(layer) {}
  ~Planner() {
    if (e0_) cudaEventDestroy(e0_);
    if (e1_) cudaEventDestroy(e1_);
    if (lin_) cublasLtMatrixLayoutDestroy(lin_);
    for (auto* l : lout_)
      if (l) cublasLtMatrixLayoutDestroy(l);
    blas_.tune_out.release();
  }

  // Up to kGemmCandidates algorithms for columns [col0, col0 + cols) into `part` (its
  // layouts made); the number found.
  int heuristics(Part& part, int64_t col0, int64_t cols, cublasLtMatmulHeuristicResult_t* cand) {
    part.col0 = col0, part.cols = cols;
    const auto type = static_cast<cudaDataType_t>(k_.type), out_type = static_cast<cudaDataType_t>(k_.out_type);
    check_blas(cublasLtMatrixLayoutCreate(&part.w, type, k_.in_dim, cols, k_.in_dim), "cublasLtMatrixLayoutCreate",
               layer_);
    check_blas(cublasLtMatrixLayoutCreate(&part.out, out_type, cols, k_.rows, k_.ldo), "cublasLtMatrixLayoutCreate",
               layer_);
    cublasLtMatmulPreference_t pref = nullptr;
    check_blas(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate", layer_);
    const std::size_t ws = kLtWorkspace;
    const uint32_t aw = std::min(k_.align_w, alignment(w(part))), ai = k_.align_in,
                   ao = std::min(k_.align_out, alignment(out_ + col0 * type_bytes(k_.out_type)));
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aw, sizeof aw);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ai, sizeof ai);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ao, sizeof ao);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ao, sizeof ao);
    int found = 0;
    const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(blas_.lt(), p_.op, part.w, p_.in, part.out, part.out,
                                                             pref, kGemmCandidates, cand, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    return hs == CUBLAS_STATUS_SUCCESS ? found : 0;
  }

  // Sets up the timing: the input layout and output buffers over the tuning rows.
  void start_timing() {
    rows_ = std::min(k_.rows, kGemmTuneRows);
    const int ob = type_bytes(k_.out_type);
    check_blas(cublasLtMatrixLayoutCreate(&lin_, static_cast<cudaDataType_t>(k_.type), k_.in_dim, rows_, k_.lda),
               "cublasLtMatrixLayoutCreate", layer_);
    const std::string scratch = std::string("product timing scratch (") + what_ + ")";
    uint8_t* tmp = blas_.tune_out.reserve((k_.accumulate ? ((rows_ - 1) * k_.ldo + k_.out_dim) * ob : 0) + 256,
                                          scratch, layer_);
    sum_ = reinterpret_cast<unsigned long long*>(tmp);
    d_ = k_.accumulate ? tmp + 256 : out_;
    work_ = blas_.lt_work.reserve(static_cast<int64_t>(kLtWorkspace), "cuBLAS workspace", layer_);
    check(cudaEventCreate(&e0_), "cudaEventCreate", layer_);
    check(cudaEventCreate(&e1_), "cudaEventCreate", layer_);
  }

  // Part `i`'s product with `algo` over the tuning rows; false where the algorithm refuses.
  bool run(int i, const Part& part, const cublasLtMatmulAlgo_t& algo) {
    if (!lout_[i])
      check_blas(cublasLtMatrixLayoutCreate(&lout_[i], static_cast<cudaDataType_t>(k_.out_type), part.cols, rows_,
                                            k_.ldo),
                 "cublasLtMatrixLayoutCreate", layer_);
    const int64_t off = part.col0 * type_bytes(k_.out_type);
    return cublasLtMatmul(blas_.lt(), p_.op, alpha_, w(part), part.w, in_, lin_, beta_, out_ + off, lout_[i], d_ + off,
                          lout_[i], &algo, work_, kLtWorkspace, stream_) == CUBLAS_STATUS_SUCCESS;
  }

  // The digest of the whole output over the tuning rows.
  unsigned long long digest() {
    check(cudaMemsetAsync(sum_, 0, sizeof *sum_, stream_), "cudaMemsetAsync (product digest)", layer_);
    const int64_t blocks = std::min<int64_t>((rows_ * k_.out_dim + 255) / 256, 2048);
    digest_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream_>>>(d_, rows_, k_.out_dim, k_.ldo,
                                                                       type_bytes(k_.out_type), sum_);
    check_launch("digest_kernel", layer_, stream_);
    unsigned long long h = 0;
    check(cudaMemcpyAsync(&h, sum_, sizeof h, cudaMemcpyDeviceToHost, stream_), what_, layer_);
    check(cudaStreamSynchronize(stream_), what_, layer_);
    return h;
  }

  // Milliseconds per run of part `i` with `algo` (run once before), over `reps_` runs: 3,
  // or 1 where the first candidate timed took more than 0.3 ms (a long product times
  // reliably in one run, and its tuning would otherwise cost hundreds of its runs).
  float time(int i, const Part& part, const cublasLtMatmulAlgo_t& algo) {
    const int reps = reps_ ? reps_ : 1;
    check(cudaEventRecord(e0_, stream_), "cudaEventRecord", layer_);
    for (int r = 0; r < reps; ++r) run(i, part, algo);
    check(cudaEventRecord(e1_, stream_), "cudaEventRecord", layer_);
    check(cudaEventSynchronize(e1_), what_, layer_);
    float ms = 0;
    check(cudaEventElapsedTime(&ms, e0_, e1_), "cudaEventElapsedTime", layer_);
    if (!reps_) {
      reps_ = ms > 0.3f ? 1 : 3;
      if (reps_ > 1) return time(i, part, algo);
    }
    return ms / reps;
  }

  // Runs part `i`'s candidates (the other parts' outputs already in place) and keeps in it
  // the fastest whose whole output has the reference digest (the first candidate run's, the
  // heuristic's first choice for the whole product). The time of the kept one, or a negative
  // number if none was.
  float choose(int i, Part& part, const cublasLtMatmulHeuristicResult_t* cand, int found) {
    float best = -1;
    for (int c = 0; c < found; ++c) {
      if (!run(i, part, cand[c].algo)) continue;
      const unsigned long long h = digest();
      if (!ref_) ref_ = h;
      else if (h != *ref_) continue;  // another order of sums: never chosen
      const float ms = time(i, part, cand[c].algo);
      if (best < 0 || ms < best) best = ms, part.algo = cand[c].algo, part.workspace = cand[c].workspaceSize;
    }
    if (best >= 0) run(i, part, part.algo);  // leave the kept algorithm's output in place
    return best;
  }

  // Where out_dim is above 128 and no multiple of it: the columns up to the multiple and the
  // rest as two products, each part's fastest candidate with the reference digest, kept in
  // the plan if together faster than `whole` (ms, the whole product's best).
  void try_split(float whole) {
    const int64_t main_cols = k_.out_dim / 128 * 128;
    if (main_cols == 0 || main_cols == k_.out_dim) return;
    cublasLtMatmulHeuristicResult_t cand[kGemmCandidates], rest[kGemmCandidates];
    Part split[2];
    const int found_main = heuristics(split[0], 0, main_cols, cand);
    const int found_rest = heuristics(split[1], main_cols, k_.out_dim - main_cols, rest);
    // The rest's first candidate in place, then each part's fastest.
    float t_main = -1, t_rest = -1;
    if (found_main > 0 && found_rest > 0 && run(2, split[1], rest[0].algo)) {
      split[1].algo = rest[0].algo, split[1].workspace = rest[0].workspaceSize;
      t_main = choose(1, split[0], cand, found_main);
      if (t_main >= 0) t_rest = choose(2, split[1], rest, found_rest);
    }
    if (t_main >= 0 && t_rest >= 0 && (t_main + t_rest < whole || blas_.forces_split())) {
      destroy(p_.part[0]);
      p_.part[0] = split[0], p_.part[1] = split[1], p_.parts = 2;
      ++blas_.plans().split;
    } else {
      destroy(split[0]);
      destroy(split[1]);
    }
  }

 private:
  const uint8_t* w(const Part& part) const { return W_ + part.col0 * k_.in_dim * type_bytes(k_.type); }

  Blas& blas_;
  const PlanKey& k_;
  Plan& p_;
  const uint8_t* W_;
  const void* in_;
  uint8_t* out_;
  const float *alpha_, *beta_;
  cudaStream_t stream_;
  const char* what_;
  int layer_;
  int64_t rows_ = 0;
  int reps_ = 0;  // runs per timing, set by the first (0: not yet)
  std::optional<unsigned long long> ref_;  // the reference digest
  cublasLtMatrixLayout_t lin_ = nullptr, lout_[3] = {nullptr, nullptr, nullptr};
  uint8_t* d_ = nullptr;
  void* work_ = nullptr;
  unsigned long long* sum_ = nullptr;
  cudaEvent_t e0_ = nullptr, e1_ = nullptr;
};

// The cache file's lines: "latim-gemm-plan 1 <device tag> <the 12 key fields> <parts>", then
// per part "<col0> <cols> <the algorithm's 8 words in hex>".
void read_cache(Blas& blas) {
  auto& P = blas.plans();
  if (P.cache_read) return;
  P.cache_read = true;
  if (blas.cache_path().empty()) return;
  std::ifstream f(blas.cache_path());
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::string magic, tag;
    int version = 0;
    PlanKey k{};
    Cached c;
    int acc = 0;
    if (!(in >> magic >> version >> tag) || magic != "latim-gemm-plan" || version != 1 || tag != blas.device_tag())
      continue;
    if (!(in >> k.type >> k.out_type >> k.compute >> k.rows >> k.in_dim >> k.out_dim >> k.lda >> k.ldo >> acc >>
          k.align_w >> k.align_in >> k.align_out >> c.parts) ||
        c.parts < 1 || c.parts > 2)
      continue;
    k.accumulate = acc != 0;
    bool ok = true;
    for (int i = 0; i < c.parts && ok; ++i) {
      ok = static_cast<bool>(in >> c.col0[i] >> c.cols[i]);
      for (int w = 0; w < 8 && ok; ++w) ok = static_cast<bool>(in >> std::hex >> c.algo[i].data[w] >> std::dec);
    }
    if (ok) P.cached[k] = c;  // a later line for the same shape wins
  }
}

void write_cache(Blas& blas, const PlanKey& k, const Plan& p) {
  if (blas.cache_path().empty()) return;
  std::ostringstream o;
  o << "latim-gemm-plan 1 " << blas.device_tag() << ' ' << k.type << ' ' << k.out_type << ' ' << k.compute << ' '
    << k.rows << ' ' << k.in_dim << ' ' << k.out_dim << ' ' << k.lda << ' ' << k.ldo << ' ' << (k.accumulate ? 1 : 0)
    << ' ' << k.align_w << ' ' << k.align_in << ' ' << k.align_out << ' ' << p.parts;
  for (int i = 0; i < p.parts; ++i) {
    o << ' ' << p.part[i].col0 << ' ' << p.part[i].cols;
    for (int w = 0; w < 8; ++w) o << ' ' << std::hex << p.part[i].algo.data[w] << std::dec;
  }
  o << '\n';
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(blas.cache_path()).parent_path(), ec);
  std::ofstream f(blas.cache_path(), std::ios::app);
  f << o.str();  // one line in one write: ranks appending at once do not interleave lines
}

// Takes a plan read back from the cache file where its parts cover the columns and cublasLt
// accepts its algorithms for this shape.
bool adopt(Blas& blas, Planner& planner, Plan& p, const Cached& c) {
  const int64_t out_dim = p.part[0].cols;
  if (c.col0[0] != 0 || (c.parts == 1 && c.cols[0] != out_dim) ||
      (c.parts == 2 && (c.col0[1] != c.cols[0] || c.cols[0] + c.cols[1] != out_dim || c.cols[1] <= 0)))
    return false;
  const auto fits = [&](Part& q, const cublasLtMatmulAlgo_t& a) {
    cublasLtMatmulHeuristicResult_t res{};
    if (cublasLtMatmulAlgoCheck(blas.lt(), p.op, q.w, p.in, q.out, q.out, &a, &res) != CUBLAS_STATUS_SUCCESS ||
        res.workspaceSize > kLtWorkspace)
      return false;
    q.algo = a, q.workspace = res.workspaceSize;
    return true;
  };
  if (c.parts == 1) return fits(p.part[0], c.algo[0]);
  Part q[2];
  cublasLtMatmulHeuristicResult_t cand[kGemmCandidates];
  bool ok = true;
  for (int i = 0; i < 2 && ok; ++i)
    ok = planner.heuristics(q[i], c.col0[i], c.cols[i], cand) > 0 && fits(q[i], c.algo[i]);
  if (!ok) {
    destroy(q[0]);
    destroy(q[1]);
    return false;
  }
  destroy(p.part[0]);
  p.part[0] = q[0], p.part[1] = q[1], p.parts = 2;
  return true;
}

// The plan for `key`, made at its first use. Untuned: the heuristic's first choice for the
// whole product. Tuned: the fastest of its candidates with the first choice's bits; and where
// out_dim is above 128 but no multiple of it, also the columns up to the multiple of 128 and
// the rest as two products (each part's fastest candidate with those bits), kept if the two
// together are faster. (H100, 3352 outputs at 65536 rows, Mamba-2 130m's in_proj before the
// backend padded its bf16 weight to whole tiles: 485 µs as one product, 425 + 40 µs as 3328
// and 24; padded to 3456, 444 µs.)
const Plan& plan_for(Blas& blas, const PlanKey& key, const void* W, const void* in, void* out, const float* alpha,
                     const float* beta, cudaStream_t stream, const char* what, int layer) {
  auto& map = blas.plans().map;
  if (auto it = map.find(key); it != map.end()) return it->second;
  Plan& p = map[key];  // owns the descriptors from here on
  // out^T [out_dim, rows] = W [out_dim, in_dim] · in^T in cuBLAS's column-major terms.
  check_blas(cublasLtMatmulDescCreate(&p.op, static_cast<cublasComputeType_t>(key.compute), CUDA_R_32F),
             "cublasLtMatmulDescCreate", layer);
  const cublasOperation_t t = CUBLAS_OP_T, n = CUBLAS_OP_N;
  check_blas(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &t, sizeof t),
             "cublasLtMatmulDescSetAttribute", layer);
  check_blas(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &n, sizeof n),
             "cublasLtMatmulDescSetAttribute", layer);
  check_blas(cublasLtMatrixLayoutCreate(&p.in, static_cast<cudaDataType_t>(key.type), key.in_dim, key.rows, key.lda),
             "cublasLtMatrixLayoutCreate", layer);

  Planner planner(blas, key, p, W, in, out, alpha, beta, stream, what, layer);
  cublasLtMatmulHeuristicResult_t cand[kGemmCandidates];
  const int found = planner.heuristics(p.part[0], 0, key.out_dim, cand);
  if (found == 0) {
    Blas::Plans::destroy(p);
    map.erase(key);
    fail("cuBLAS has no algorithm for ", what, " (layer ", layer, "), a ", key.rows, " × ", key.in_dim, " by ",
         key.in_dim, " × ", key.out_dim, " product");
  }
  p.parts = 1;
  p.part[0].algo = cand[0].algo;
  p.part[0].workspace = cand[0].workspaceSize;
  if (!blas.tunes()) return p;

  if (!blas.forces_split()) read_cache(blas);
  if (auto it = blas.plans().cached.find(key); it != blas.plans().cached.end() && adopt(blas, planner, p, it->second)) {
    ++blas.plans().from_cache;
    return p;
  }

  planner.start_timing();
  const float whole = planner.choose(0, p.part[0], cand, found);
  if (whole >= 0) planner.try_split(whole);
  ++blas.plans().timed;
  if (whole >= 0 && !blas.forces_split()) write_cache(blas, key, p);
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
  for (int i = 0; i < p.parts; ++i) {
    const Part& q = p.part[i];
    const auto* w = static_cast<const uint8_t*>(W) + q.col0 * in_dim * type_bytes(type);
    auto* o = static_cast<uint8_t*>(out) + q.col0 * type_bytes(out_type);
    void* work = q.workspace ? blas.lt_work.reserve(static_cast<int64_t>(kLtWorkspace), "cuBLAS workspace", layer)
                             : nullptr;
    check_blas(cublasLtMatmul(blas.lt(), p.op, &alpha, w, q.w, in, p.in, &beta, o, q.out, o, q.out, &q.algo, work,
                              q.workspace ? kLtWorkspace : 0, stream),
               what, layer);
  }
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
