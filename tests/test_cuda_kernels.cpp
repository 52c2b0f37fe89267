// Each forward kernel of kernels/ against a plain host loop (fp64 where it matters) on
// fresh random data, with lengths that span several scan chunks and a ragged last chunk.
// Outputs are poisoned with NaN before each launch, so an unwritten element fails.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "causal_conv.hpp"
#include "device_buffer.hpp"
#include "model/cpu_ops.hpp"
#include "pointwise.hpp"
#include "rmsnorm.hpp"
#include "selective_scan.hpp"
#include "ssd_scan.hpp"
#include "test_cuda_util.hpp"

namespace latim {
namespace {

using cudatest::norm_error;
using cudatest::random_vector;

template <class T>
cuda::DeviceArray<T> to_device(const std::vector<T>& v) {
  cuda::DeviceArray<T> a;
  a.upload(v.data(), static_cast<int64_t>(v.size()), "test input");
  return a;
}

template <class T>
cuda::DeviceArray<T> poisoned(int64_t n) {
  cuda::DeviceArray<T> a;
  a.reserve(n, "test output");
  cuda::check(cudaMemset(a.get(), 0xff, n * sizeof(T)), "poison");  // all-ones bits: NaN
  return a;
}

template <class T>
std::vector<T> to_host(const cuda::DeviceArray<T>& a, int64_t n) {
  std::vector<T> v(n);
  cuda::check(cudaDeviceSynchronize(), "test sync");
  cuda::check(cudaMemcpy(v.data(), a.get(), n * sizeof(T), cudaMemcpyDeviceToHost), "test download");
  return v;
}

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override { LATIM_SKIP_WITHOUT_GPU(); }
  std::mt19937 rng{std::random_device{}()};
};

TEST_F(CudaKernels, CausalConvMatchesCpu) {
  const int64_t T = 777, ch = 50, lda = 70, K = 4;
  for (bool silu : {true, false}) {
    const auto in = random_vector(rng, T * lda, -2, 2), w = random_vector(rng, ch * K, -1, 1),
               b = random_vector(rng, ch, -0.5, 0.5);
    std::vector<float> want(T * ch);
    cpu::causal_conv(in.data(), T, ch, lda, w.data(), K, b.data(), silu, want.data());
    auto din = to_device(in), dw = to_device(w), db = to_device(b);
    auto out = poisoned<float>(T * ch);
    cuda::causal_conv(din.get(), T, ch, lda, dw.get(), K, db.get(), silu, out.get(), nullptr, 0);
    EXPECT_LE(norm_error(to_host(out, T * ch), want), 1e-6) << "silu=" << silu;
  }
}

TEST_F(CudaKernels, RmsNormMatchesCpu) {
  const int64_t rows = 333, dim = 768;
  const auto in = random_vector(rng, rows * dim, -3, 3), w = random_vector(rng, dim, 0.5, 1.5);
  std::vector<float> want(rows * dim);
  cpu::rmsnorm_rows(in.data(), rows, dim, w.data(), 1e-5, want.data());
  auto din = to_device(in), dw = to_device(w);
  auto out = poisoned<float>(rows * dim);
  cuda::rmsnorm_rows(din.get(), rows, dim, dw.get(), 1e-5, out.get(), nullptr, 0);
  EXPECT_LE(norm_error(to_host(out, rows * dim), want), 1e-6);
}

TEST_F(CudaKernels, GatedRmsNormMatchesHostLoop) {
  const int64_t T = 129, D = 96, ldz = 130;
  for (int64_t G : {1, 2, 3})
    for (bool before : {false, true}) {
      const auto y = random_vector(rng, T * D, -2, 2), z = random_vector(rng, T * ldz, -3, 3),
                 w = random_vector(rng, D, 0.5, 1.5);
      std::vector<double> want(T * D), want_gamma(T * D);
      const int64_t gs = D / G;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t g = 0; g < G; ++g) {
          double ss = 0;
          for (int64_t k = g * gs; k < (g + 1) * gs; ++k) {
            const double gate = z[t * ldz + k] / (1 + std::exp(-static_cast<double>(z[t * ldz + k])));
            const double v = before ? y[t * D + k] : y[t * D + k] * gate;
            ss += v * v;
          }
          for (int64_t k = g * gs; k < (g + 1) * gs; ++k) {
            const double gate = z[t * ldz + k] / (1 + std::exp(-static_cast<double>(z[t * ldz + k])));
            want_gamma[t * D + k] = w[k] / std::sqrt(ss / gs + 1e-5);
            want[t * D + k] = want_gamma[t * D + k] * y[t * D + k] * gate;
          }
        }
      auto dy = to_device(y), dz = to_device(z), dw = to_device(w);
      auto gate = poisoned<float>(T * D), gamma = poisoned<float>(T * D);
      cuda::gated_rmsnorm(dy.get(), dz.get(), ldz, T, D, G, dw.get(), 1e-5, before, gate.get(), gamma.get(), nullptr, 0);
      EXPECT_LE(norm_error(to_host(dy, T * D), want), 1e-5) << "G=" << G << " before=" << before;
      EXPECT_LE(norm_error(to_host(gamma, T * D), want_gamma), 1e-5) << "G=" << G;
    }
}

TEST_F(CudaKernels, CumulativeSumIsFp64) {
  const int64_t T = 1000, W = 37;
  const auto delta = random_vector(rng, T * W, 0, 2);
  std::vector<double> want(T * W);
  for (int64_t c = 0; c < W; ++c) {
    double acc = 0;
    for (int64_t t = 0; t < T; ++t) want[t * W + c] = acc += delta[t * W + c];
  }
  auto dd = to_device(delta);
  auto S = poisoned<double>(T * W);
  cuda::DeviceArray<double> work;
  work.reserve(cuda::cumulative_sum_work(T, W), "work");
  cuda::cumulative_sum(dd.get(), T, W, S.get(), work.get(), nullptr, 0);
  EXPECT_LE(norm_error(to_host(S, T * W), want), 1e-12);
}

// Mamba-1 scan in fp64 on the host.
void scan_reference(int64_t T, int64_t D, int64_t N, const std::vector<float>& x, const std::vector<float>& dt,
                    const std::vector<float>& A, const std::vector<float>& B, const std::vector<float>& C,
                    const std::vector<float>& Ds, std::vector<double>& y, std::vector<double>& hf) {
  y.assign(T * D, 0.0);
  hf.assign(D * N, 0.0);
  for (int64_t c = 0; c < D; ++c)
    for (int64_t t = 0; t < T; ++t) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) {
        double& h = hf[c * N + n];
        h = std::exp(static_cast<double>(dt[t * D + c]) * A[c * N + n]) * h +
            static_cast<double>(dt[t * D + c]) * x[t * D + c] * B[t * N + n];
        acc += h * C[t * N + n];
      }
      y[t * D + c] = acc + static_cast<double>(Ds[c]) * x[t * D + c];
    }
}

TEST_F(CudaKernels, SelectiveScanMatchesFp64AcrossChunks) {
  for (auto [T, D, N] : {std::tuple<int64_t, int64_t, int64_t>{1000, 40, 16}, {300, 130, 5}, {257, 8, 40}, {1, 3, 16}}) {
    const auto x = random_vector(rng, T * D, -2, 2), dt = random_vector(rng, T * D, 0.001f, 0.5f),
               A = random_vector(rng, D * N, -3, -0.1f), B = random_vector(rng, T * N, -1, 1),
               C = random_vector(rng, T * N, -1, 1), Ds = random_vector(rng, D, 0, 1);
    std::vector<double> want, want_h;
    scan_reference(T, D, N, x, dt, A, B, C, Ds, want, want_h);
    auto dx = to_device(x), ddt = to_device(dt), dA = to_device(A), dB = to_device(B), dC = to_device(C),
         dDs = to_device(Ds);
    auto y = poisoned<float>(T * D), hf = poisoned<float>(D * N);
    cuda::DeviceArray<float> work;
    work.reserve(cuda::selective_scan_work(T, D, N), "work");
    cuda::selective_scan(dx.get(), ddt.get(), dA.get(), dB.get(), N, dC.get(), N, dDs.get(), T, D, N, y.get(), hf.get(),
                         work.get(), nullptr, 0);
    EXPECT_LE(norm_error(to_host(y, T * D), want), 1e-5) << "T=" << T << " D=" << D << " N=" << N;
    EXPECT_LE(norm_error(to_host(hf, D * N), want_h), 1e-5) << "T=" << T << " final state";
  }
}

// Mamba-2 scan in fp64 on the host: x, B and C side by side in one buffer of leading
// dimension ldx (x, then B at column D, C at D + G N), as in the conv output.
void ssd_reference(int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, int64_t ldx, const std::vector<float>& x,
                   const std::vector<float>& dt, const std::vector<float>& A, const std::vector<float>& Ds,
                   std::vector<double>& y, std::vector<double>& st) {
  const int64_t D = H * P, GN = G * N;
  y.assign(T * D, 0.0);
  st.assign(H * P * N, 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / G);
      const double dA = std::exp(static_cast<double>(dt[t * H + h]) * A[h]);
      for (int64_t p = 0; p < P; ++p) {
        const double xv = x[t * ldx + h * P + p];
        double acc = 0;
        for (int64_t n = 0; n < N; ++n) {
          double& s = st[(h * P + p) * N + n];
          s = dA * s + dt[t * H + h] * xv * x[t * ldx + D + g * N + n];
          acc += s * x[t * ldx + D + GN + g * N + n];
        }
        y[t * D + h * P + p] = acc + Ds[h] * xv;
      }
    }
}

struct SsdCase {
  int64_t T, H, P, N, G;
  int64_t pad;  // ldx = D + 2 G N + pad
  float dt_hi, a_lo, a_hi;
};

// Runs cuda::ssd_scan on fresh random data; returns the normalised errors of y and h_final
// against ssd_reference.
std::pair<double, double> ssd_errors(std::mt19937& rng, const SsdCase& k, bool tensor_cores) {
  const int64_t D = k.H * k.P, GN = k.G * k.N, ldx = D + 2 * GN + k.pad;
  const auto x = random_vector(rng, k.T * ldx, -2, 2), dt = random_vector(rng, k.T * k.H, 0.001f, k.dt_hi),
             A = random_vector(rng, k.H, k.a_lo, k.a_hi), Ds = random_vector(rng, k.H, 0, 1);
  std::vector<double> want, st;
  ssd_reference(k.T, k.H, k.P, k.N, k.G, ldx, x, dt, A, Ds, want, st);
  auto dx = to_device(x), ddt = to_device(dt), dA = to_device(A), dDs = to_device(Ds);
  auto y = poisoned<float>(k.T * D), hf = poisoned<float>(k.H * k.P * k.N);
  cuda::DeviceArray<float> work;
  work.reserve(cuda::ssd_scan_work(k.T, k.H, k.P, k.N), "work");
  cuda::ssd_scan(dx.get(), ldx, ddt.get(), dA.get(), dx.get() + D, dx.get() + D + GN, ldx, dDs.get(), k.T, k.H, k.P,
                 k.N, k.G, y.get(), hf.get(), work.get(), tensor_cores, nullptr, 0);
  return {norm_error(to_host(y, k.T * D), want), norm_error(to_host(hf, k.H * k.P * k.N), st)};
}

TEST_F(CudaKernels, SsdScanMatchesFp64AcrossChunks) {
  for (const SsdCase k :
       {SsdCase{1000, 3, 8, 20, 1, 3, 0.5f, -3, -0.1f}, SsdCase{600, 4, 16, 128, 2, 3, 0.5f, -3, -0.1f},
        SsdCase{300, 2, 24, 8, 1, 3, 0.5f, -3, -0.1f}, SsdCase{5, 1, 64, 16, 1, 3, 0.5f, -3, -0.1f}}) {
    const auto [ey, eh] = ssd_errors(rng, k, false);
    EXPECT_LE(ey, 1e-5) << "T=" << k.T << " H=" << k.H << " N=" << k.N;
    EXPECT_LE(eh, 1e-5) << "T=" << k.T << " final state";
  }
}

// The tf32 tensor-core variant (tf32 and bf16 modes) against the same fp64 recurrence: the
// shapes above (4-byte staging copies, ldx odd), aligned ones (16-byte copies) and the
// mamba2-130m shape with uniform and with long-memory decays (A in [-16, -1] or [-1, -0.1],
// Δ up to 0.1). The lower bound shows that tf32 products really ran (the fp32 path is ~1e-7).
TEST_F(CudaKernels, SsdScanTensorCoresMatchFp64AcrossChunks) {
  for (const SsdCase k :
       {SsdCase{1000, 3, 8, 20, 1, 3, 0.5f, -3, -0.1f}, SsdCase{600, 4, 16, 128, 2, 3, 0.5f, -3, -0.1f},
        SsdCase{300, 2, 24, 8, 1, 3, 0.5f, -3, -0.1f}, SsdCase{5, 1, 64, 16, 1, 3, 0.5f, -3, -0.1f},
        SsdCase{600, 4, 16, 128, 2, 0, 0.5f, -3, -0.1f}, SsdCase{1100, 24, 64, 128, 1, 0, 0.5f, -3, -0.1f},
        SsdCase{1100, 24, 64, 128, 1, 0, 0.1f, -16, -1}, SsdCase{1100, 24, 64, 128, 1, 0, 0.1f, -1, -0.1f}}) {
    const auto [ey, eh] = ssd_errors(rng, k, true);
    EXPECT_LE(ey, 2e-3) << "T=" << k.T << " H=" << k.H << " P=" << k.P << " N=" << k.N << " pad=" << k.pad;
    EXPECT_LE(eh, 2e-3) << "T=" << k.T << " H=" << k.H << " final state";
    EXPECT_GT(ey, 1e-6) << "T=" << k.T << ": no tf32 rounding seen, the fp32 path ran";
  }
}

}  // namespace
}  // namespace latim
