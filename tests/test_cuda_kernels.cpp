// Each forward kernel of kernels/ against a plain host loop (fp64 where it matters) on
// fresh random data, with lengths that span several scan chunks and a ragged last chunk.
// Outputs are poisoned with NaN before each launch, so an unwritten element fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "causal_conv.hpp"
#include "conv_xproj.hpp"
#include "device_buffer.hpp"
#include "linear.hpp"
#include "model/cpu_ops.hpp"
#include "pointwise.hpp"
#include "rmsnorm.hpp"
#include "selective_scan.hpp"
#include "sequence_shard.hpp"
#include "ssd_scan.hpp"
#include "ssd_wgmma.hpp"
#include "latim_tile_swizzle.hpp"
#include "tile_reduce.hpp"
#include "latim/latim.hpp"
#include "test_cuda_util.hpp"
#include "test_util.hpp"

namespace latim {
namespace {

using cudatest::norm_error;
using cudatest::random_vector;
using cudatest::ScopedEnv;

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

// bf16 bits of x, rounded to nearest even (finite x), as __float2bfloat16_rn.
uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float from_bf16(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// Exact equality of two float arrays (NaN never equal), with the first mismatch in the message.
::testing::AssertionResult same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes " << a.size() << " and " << b.size();
  for (std::size_t k = 0; k < a.size(); ++k)
    if (std::memcmp(&a[k], &b[k], 4) != 0 || std::isnan(a[k]))
      return ::testing::AssertionFailure() << "element " << k << ": " << a[k] << " vs " << b[k];
  return ::testing::AssertionSuccess();
}
::testing::AssertionResult same_bits(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  if (a != b) {
    std::size_t k = 0;
    while (k < a.size() && k < b.size() && a[k] == b[k]) ++k;
    return ::testing::AssertionFailure() << "bf16 element " << k << " of " << a.size() << " differs";
  }
  return ::testing::AssertionSuccess();
}

std::vector<uint16_t> to_bf16_host(const std::vector<float>& v) {
  std::vector<uint16_t> b(v.size());
  for (std::size_t k = 0; k < v.size(); ++k) b[k] = bf16_bits(v[k]);
  return b;
}
// The bf16 values widened back to floats (exact).
std::vector<float> from_bf16_host(const std::vector<uint16_t>& b) {
  std::vector<float> v(b.size());
  for (std::size_t k = 0; k < b.size(); ++k) v[k] = from_bf16(b[k]);
  return v;
}

// One unit in bf16's last place at v (8 significant bits), v != 0.
double bf16_ulp(double v) { return std::ldexp(1.0, std::ilogb(v) - 7); }

// bf16 values each within one bf16 unit in the last place of the fp32 values `want`: what a
// kernel gives when it rounds to bf16 a result computed with a fast SiLU (a few fp32 ulps
// from the exact one), which can land on the other side of a rounding midpoint.
::testing::AssertionResult within_one_bf16_ulp(const std::vector<uint16_t>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "sizes differ";
  int64_t equal = 0;
  for (std::size_t k = 0; k < got.size(); ++k) {
    const double w = want[k], ulp = w == 0.0 ? 1e-38 : bf16_ulp(w);
    if (std::abs(from_bf16(got[k]) - w) > ulp)
      return ::testing::AssertionFailure() << "element " << k << ": " << from_bf16(got[k]) << " vs " << w;
    equal += got[k] == bf16_bits(want[k]);
  }
  if (equal < static_cast<int64_t>(got.size()) * 95 / 100)  // a midpoint now and then, not a different rounding
    return ::testing::AssertionFailure() << "only " << equal << " of " << got.size() << " round as the fp32 values";
  return ::testing::AssertionSuccess();
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

// Mamba-1's conv and x_proj in one kernel: the conv output has the bits of the bf16 conv
// kernel, and the product is within fp32 rounding of the fp64 product of those bits with W.
// Lengths that end mid-block (1000, 130, 1), widths of 1 to 24 channel slices, the three
// x_proj widths the kernel takes, and a conv without bias or SiLU.
TEST_F(CudaKernels, ConvXprojMatchesConvThenProduct) {
  struct Case {
    int64_t T, D, out;
    bool silu, bias;
  };
  for (const auto [T, D, out, silu, with_bias] : {Case{1000, 128, 80, true, true}, Case{130, 1536, 96, true, true},
                                                 Case{1, 64, 128, true, true}, Case{257, 192, 80, false, false}}) {
    const int64_t lda = 2 * D + 8, K = 4;
    const std::vector<uint16_t> in = to_bf16_host(random_vector(rng, T * lda, -2, 2));
    const auto w = random_vector(rng, D * K, -1, 1), b = random_vector(rng, D, -0.5, 0.5);
    const std::vector<uint16_t> W = to_bf16_host(random_vector(rng, out * D, -0.2f, 0.2f));
    auto din = to_device(in), dW = to_device(W);
    auto dw = to_device(w), db = to_device(b);
    const float* bp = with_bias ? db.get() : nullptr;
    auto x_ref = poisoned<uint16_t>(T * D), x = poisoned<uint16_t>(T * D);
    auto proj = poisoned<float>(T * out);
    cuda::causal_conv_with_halo(din.get(), T, D, lda, dw.get(), K, bp, silu, nullptr, x_ref.get(), nullptr, 0);
    ASSERT_TRUE(cuda::conv_xproj_fits(D, lda, K, out, din.get(), x.get(), dW.get(), dw.get(), bp));
    cuda::conv_xproj(din.get(), T, D, lda, dw.get(), K, bp, silu, dW.get(), out, x.get(), proj.get(), out, nullptr, 0);
    const std::vector<uint16_t> xr = to_host(x_ref, T * D);
    const std::string at = "T=" + std::to_string(T) + " D=" + std::to_string(D) + " out=" + std::to_string(out);
    EXPECT_TRUE(same_bits(to_host(x, T * D), xr)) << at << ": conv output";
    std::vector<double> want(T * out, 0.0);
    const std::vector<float> xf = from_bf16_host(xr), Wf = from_bf16_host(W);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < out; ++o) {
        double acc = 0;
        for (int64_t c = 0; c < D; ++c) acc += static_cast<double>(xf[t * D + c]) * Wf[o * D + c];
        want[t * out + o] = acc;
      }
    EXPECT_LE(norm_error(to_host(proj, T * out), want), 1e-5) << at << ": x_proj";
  }
  EXPECT_FALSE(cuda::conv_xproj_fits(130, 264, 4, 80, nullptr, nullptr, nullptr, nullptr, nullptr));
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
      cuda::gated_rmsnorm(dy.get(), dz.get(), ldz, T, D, G, dw.get(), 1e-5, before, gate.get(), gamma.get(), nullptr,
                          nullptr, 0);
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
  // The column sums alone (a sharded forward's untraced layers): the last row.
  auto total = poisoned<double>(W);
  cuda::column_sums(dd.get(), T, W, total.get(), work.get(), nullptr, 0);
  EXPECT_LE(norm_error(to_host(total, W), std::vector<double>(want.end() - W, want.end())), 1e-12);
}

// The prefixes that join sequence slices, against host loops: the (decay, state) prefix
// entering each rank from a carried state and the state after all ranks (in place, the
// chunked forward's carry), and the Δ-sum offsets from a carried base, added in rank order.
TEST_F(CudaKernels, SlicePrefixesStartFromTheCarry) {
  const int S = 3;
  const int64_t n = 96, per = 8, nd = n / per, W = 5;
  const auto all = random_vector(rng, S * (nd + n), 0.1f, 0.9f);
  const auto carry = random_vector(rng, n, -1, 1);
  std::vector<double> totals(S * W), base(W);
  for (auto& v : totals) v = std::uniform_real_distribution<double>(0, 100)(rng);
  for (auto& v : base) v = std::uniform_real_distribution<double>(0, 1e4)(rng);
  auto d_all = to_device(all);
  auto d_tot = to_device(totals);
  for (int r = 0; r <= S; ++r) {
    for (const bool with_carry : {false, true}) {
      std::vector<float> h(n);
      for (int64_t k = 0; k < n; ++k) {
        float x = with_carry ? carry[k] : 0.0f;
        for (int q = 0; q < r; ++q) x = all[q * (nd + n) + k / per] * x + all[q * (nd + n) + nd + k];
        h[k] = x;
      }
      std::vector<double> off(W);
      for (int64_t k = 0; k < W; ++k) {
        double x = with_carry ? base[k] : 0.0;
        for (int q = 0; q < r; ++q) x += totals[q * W + k];
        off[k] = x;
      }
      // In place on the carry, as the chunked forward leaves it for the next chunk.
      auto state = with_carry ? to_device(carry) : poisoned<float>(n);
      auto sums = with_carry ? to_device(base) : poisoned<double>(W);
      cuda::chain_state_prefix(d_all.get(), S, r, n, per, with_carry ? state.get() : nullptr, state.get(), nullptr, 0);
      cuda::sum_prefix(d_tot.get(), S, r, W, with_carry ? sums.get() : nullptr, sums.get(), nullptr, 0);
      EXPECT_LE(norm_error(to_host(state, n), std::vector<double>(h.begin(), h.end())), 1e-6) << "r " << r;
      EXPECT_EQ(to_host(sums, W), off) << "r " << r;  // the same additions in the same order
    }
  }
}

// The incoming state's share of a slice's outputs, against fp64 host loops: Mamba-2
// (heads in 2 groups, ragged row and channel tiles) and Mamba-1 (per channel and state).
TEST_F(CudaKernels, IncomingStateMatchesHostLoop) {
  {
    const int64_t T = 150, H = 4, P = 72, N = 48, G = 2, ldc = G * N + 5, D = H * P;
    const auto C = random_vector(rng, T * ldc, -1, 1);
    const auto h_in = random_vector(rng, H * P * N, -1, 1);
    const auto A = random_vector(rng, H, -2, -0.1f);
    const auto y0 = random_vector(rng, T * D, -1, 1);
    std::vector<double> S(T * H);
    for (int64_t hh = 0; hh < H; ++hh)
      for (int64_t t = 0; t < T; ++t) S[t * H + hh] = (t ? S[(t - 1) * H + hh] : 0.0) + 0.05 * (1 + (t + hh) % 3);
    std::vector<double> want(y0.begin(), y0.end());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t hh = 0; hh < H; ++hh) {
        const double decay = std::exp(static_cast<double>(A[hh]) * S[t * H + hh]);
        const int64_t g = hh / (H / G);
        for (int64_t p = 0; p < P; ++p) {
          double acc = 0;
          for (int64_t k = 0; k < N; ++k) acc += static_cast<double>(C[t * ldc + g * N + k]) * h_in[(hh * P + p) * N + k];
          want[t * D + hh * P + p] += decay * acc;
        }
      }
    auto y = to_device(y0);
    auto dC = to_device(C), dh = to_device(h_in), dA = to_device(A);
    auto dS = to_device(S);
    cuda::add_incoming_state_mamba2(y.get(), dC.get(), ldc, dS.get(), dA.get(), dh.get(), T, H, P, N, G, nullptr, 0);
    EXPECT_LE(norm_error(to_host(y, T * D), want), 1e-5) << "Mamba-2";
  }
  {
    const int64_t T = 100, D = 130, N = 16, ldc = N + 3;
    const auto C = random_vector(rng, T * ldc, -1, 1);
    const auto h_in = random_vector(rng, D * N, -1, 1);
    const auto A = random_vector(rng, D * N, -2, -0.1f);
    const auto y0 = random_vector(rng, T * D, -1, 1);
    std::vector<double> S(T * D);
    for (int64_t c = 0; c < D; ++c)
      for (int64_t t = 0; t < T; ++t) S[t * D + c] = (t ? S[(t - 1) * D + c] : 0.0) + 0.02 * (1 + (t + c) % 5);
    std::vector<double> want(y0.begin(), y0.end());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < D; ++c)
        for (int64_t k = 0; k < N; ++k)
          want[t * D + c] += static_cast<double>(C[t * ldc + k]) * std::exp(static_cast<double>(A[c * N + k]) * S[t * D + c]) *
                             h_in[c * N + k];
    auto y = to_device(y0);
    auto dC = to_device(C), dh = to_device(h_in), dA = to_device(A);
    auto dS = to_device(S);
    cuda::add_incoming_state_mamba1(y.get(), dC.get(), ldc, dS.get(), dA.get(), dh.get(), T, D, N, nullptr, 0);
    EXPECT_LE(norm_error(to_host(y, T * D), want), 1e-5) << "Mamba-1";
  }
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

// The last two cases have decays from 1 down to far below 2^-126 in one step (A in [-16, -8],
// Δ up to 8): the scan's exponentials (ex2.approx.ftz) over their whole range, flushed to
// zero at the end. Widths that are multiples of 8 (40, 8, 24, 256) stage Δ, x and z by
// 16-byte copies, the others (130, 3) by plain loads; N = 5 stages B and C by plain loads;
// T = 1100 with D = 256 has two channel blocks and a last chunk that ends mid-stage.
// T = 50 is one short chunk, N = 8 takes the 8-state instantiation, and D = 1536 (the 130m
// width, 12 channel blocks) runs 8 chunks.
TEST_F(CudaKernels, SelectiveScanMatchesFp64AcrossChunks) {
  struct Case {
    int64_t T, D, N;
    float dt_lo, dt_hi, a_lo, a_hi;
  };
  for (const auto [T, D, N, dt_lo, dt_hi, a_lo, a_hi] :
       {Case{1000, 40, 16, 0.001f, 0.5f, -3, -0.1f}, Case{300, 130, 5, 0.001f, 0.5f, -3, -0.1f},
        Case{257, 8, 40, 0.001f, 0.5f, -3, -0.1f}, Case{1, 3, 16, 0.001f, 0.5f, -3, -0.1f},
        Case{700, 40, 16, 0.0001f, 8.0f, -16, -8}, Case{300, 24, 32, 0.0001f, 8.0f, -16, -8},
        Case{1100, 256, 16, 0.001f, 0.5f, -3, -0.1f}, Case{50, 48, 16, 0.001f, 0.5f, -3, -0.1f},
        Case{500, 64, 8, 0.001f, 0.5f, -3, -0.1f}, Case{2000, 1536, 16, 0.001f, 0.5f, -3, -0.1f}}) {
    const auto x = random_vector(rng, T * D, -2, 2), dt = random_vector(rng, T * D, dt_lo, dt_hi),
               A = random_vector(rng, D * N, a_lo, a_hi), B = random_vector(rng, T * N, -1, 1),
               C = random_vector(rng, T * N, -1, 1), Ds = random_vector(rng, D, 0, 1);
    std::vector<double> want, want_h;
    scan_reference(T, D, N, x, dt, A, B, C, Ds, want, want_h);
    auto dx = to_device(x), ddt = to_device(dt), dA = to_device(A), dB = to_device(B), dC = to_device(C),
         dDs = to_device(Ds);
    auto y = poisoned<float>(T * D), hf = poisoned<float>(D * N);
    cuda::DeviceArray<float> work;
    work.reserve(cuda::selective_scan_work(T, D, N), "work");
    cuda::selective_scan(dx.get(), ddt.get(), nullptr, false, dA.get(), dB.get(), N, dC.get(), N, dDs.get(), T, D, N,
                         y.get(), hf.get(), work.get(), nullptr, 0);
    const std::vector<float> got = to_host(y, T * D);
    EXPECT_LE(norm_error(got, want), 1e-5) << "T=" << T << " D=" << D << " N=" << N;
    EXPECT_LE(norm_error(to_host(hf, D * N), want_h), 1e-5) << "T=" << T << " final state";
    EXPECT_TRUE(same_bits(to_host(ddt, T * D), dt)) << "T=" << T << ": a finished delta is left as it was";

    // The scan finishing Δ itself from dt_proj's raw output (with a bias, and without), on
    // fp32 x and on bf16 x: the bits of softplus_rows then the scan on Δ, and on rounded x.
    const auto raw = random_vector(rng, T * D, -4, 3), bias = random_vector(rng, D, -1, 1);
    const std::vector<uint16_t> x16 = to_bf16_host(x);
    const std::vector<float> xr = from_bf16_host(x16);
    auto dx16 = to_device(x16);
    auto dxr = to_device(xr);
    for (const bool with_bias : {true, false}) {
      auto db = to_device(bias);
      const float* bp = with_bias ? db.get() : nullptr;
      auto delta_ref = to_device(raw);
      cuda::softplus_rows(delta_ref.get(), T, D, D, bp, nullptr, 0);
      const std::vector<float> delta_want = to_host(delta_ref, T * D);
      for (const bool bf16_x : {false, true}) {
        auto y_ref = poisoned<float>(T * D), y_fused = poisoned<float>(T * D);
        auto h_ref = poisoned<float>(D * N), h_fused = poisoned<float>(D * N);
        auto delta_in = to_device(delta_want);
        cuda::selective_scan(dxr.get(), delta_in.get(), nullptr, false, dA.get(), dB.get(), N, dC.get(), N, dDs.get(), T,
                             D, N, y_ref.get(), h_ref.get(), work.get(), nullptr, 0);
        auto delta_raw = to_device(raw);
        if (bf16_x)
          cuda::selective_scan(dx16.get(), delta_raw.get(), bp, true, dA.get(), dB.get(), N, dC.get(), N, dDs.get(), T, D,
                               N, y_fused.get(), h_fused.get(), work.get(), nullptr, 0);
        else
          cuda::selective_scan(dxr.get(), delta_raw.get(), bp, true, dA.get(), dB.get(), N, dC.get(), N, dDs.get(), T, D,
                               N, y_fused.get(), h_fused.get(), work.get(), nullptr, 0);
        const std::string at = "T=" + std::to_string(T) + (with_bias ? " bias" : " no bias") + (bf16_x ? " bf16 x" : "");
        EXPECT_TRUE(same_bits(to_host(delta_raw, T * D), delta_want)) << at << ": delta finished in place";
        EXPECT_TRUE(same_bits(to_host(y_fused, T * D), to_host(y_ref, T * D))) << at << " y";
        EXPECT_TRUE(same_bits(to_host(h_fused, D * N), to_host(h_ref, D * N))) << at << " final state";
        if (!bf16_x) continue;
        // The gate in the output pass: the bits silu_gate writes from the scan's y.
        const std::vector<uint16_t> z16 = to_bf16_host(random_vector(rng, T * 2 * D, -3, 3));
        auto dz = to_device(z16);
        auto g_ref = poisoned<uint16_t>(T * D), g_fused = poisoned<uint16_t>(T * D);
        cuda::silu_gate(y_ref.get(), dz.get() + D, 2 * D, T, D, nullptr, g_ref.get(), nullptr, 0);
        auto delta_raw2 = to_device(raw);
        auto y_untouched = poisoned<float>(T * D);
        cuda::selective_scan(dx16.get(), delta_raw2.get(), bp, true, dA.get(), dB.get(), N, dC.get(), N, dDs.get(), T, D,
                             N, y_untouched.get(), h_fused.get(), work.get(), nullptr, 0,
                             cuda::ScanGate{dz.get() + D, 2 * D, g_fused.get()});
        EXPECT_TRUE(same_bits(to_host(g_fused, T * D), to_host(g_ref, T * D))) << at << " gated in the scan";
        // dt_proj's raw output in bf16: finished in place into Δ rounded to bf16 (the fast
        // softplus: within a bf16 ulp of the exact softplus, mostly the same rounding), which
        // every pass uses: the bits of the fp32 scan given those Δ values, with and without a
        // final state (one chunk without one takes the single-launch path), and with the gate.
        const std::vector<uint16_t> raw16 = to_bf16_host(raw);
        std::vector<float> exact(raw16.size());  // softplus_rows on the rounded raw dt
        {
          const std::vector<float> rawr = from_bf16_host(raw16);
          auto fin = to_device(rawr);
          cuda::softplus_rows(fin.get(), T, D, D, bp, nullptr, 0);
          exact = to_host(fin, T * D);
        }
        auto g_rounded = poisoned<uint16_t>(T * D);  // the gate of the scan on the device's Δ
        for (const bool final_state : {true, false}) {
          auto draw16 = to_device(raw16);
          auto y_r = poisoned<float>(T * D), y_b = poisoned<float>(T * D);
          auto h_r = poisoned<float>(D * N), h_b = poisoned<float>(D * N);
          cuda::selective_scan(dx16.get(), draw16.get(), bp, dA.get(), dB.get(), N, dC.get(), N, dDs.get(), T, D, N,
                               y_b.get(), final_state ? h_b.get() : nullptr, work.get(), nullptr, 0);
          const std::vector<uint16_t> d16 = to_host(draw16, T * D);
          const std::string at2 = at + (final_state ? " bf16 dt" : " bf16 dt, no final state");
          EXPECT_TRUE(within_one_bf16_ulp(d16, exact)) << at2 << ": Δ finished in place, bf16";
          const std::vector<float> d16f = from_bf16_host(d16);
          auto ddr = to_device(d16f);
          cuda::selective_scan(dx16.get(), ddr.get(), nullptr, false, dA.get(), dB.get(), N, dC.get(), N, dDs.get(), T,
                               D, N, y_r.get(), final_state ? h_r.get() : nullptr, work.get(), nullptr, 0);
          EXPECT_TRUE(same_bits(to_host(y_b, T * D), to_host(y_r, T * D))) << at2 << " y";
          if (final_state) EXPECT_TRUE(same_bits(to_host(h_b, D * N), to_host(h_r, D * N))) << at2 << " final state";
          if (final_state) cuda::silu_gate(y_r.get(), dz.get() + D, 2 * D, T, D, nullptr, g_rounded.get(), nullptr, 0);
        }
        auto g_b = poisoned<uint16_t>(T * D);
        auto draw16 = to_device(raw16);
        cuda::selective_scan(dx16.get(), draw16.get(), bp, dA.get(), dB.get(), N, dC.get(), N, dDs.get(), T, D, N,
                             y_untouched.get(), h_fused.get(), work.get(), nullptr, 0,
                             cuda::ScanGate{dz.get() + D, 2 * D, g_b.get()});
        EXPECT_TRUE(same_bits(to_host(g_b, T * D), to_host(g_rounded, T * D))) << at << " bf16 dt, gated in the scan";
      }
    }
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
  work.reserve(cuda::ssd_scan_work(k.T, k.H, k.P, k.N, k.G), "work");
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


// The tensor-core scan on bf16 x, B and C (the bf16 mode's conv output) gives the bits of the
// fp32 version on the rounded values: the 8-byte staging path (aligned) and the scalar one
// (pad 3), across slices of 32768 positions, with a final state; and with a bf16 output, that
// output rounded to bf16.
TEST_F(CudaKernels, SsdScanOnBf16InputsIsTheScanOfTheRoundedInputs) {
  // The mma.sync output pass (on a Hopper GPU the wgmma one runs by default: tested below).
  const ScopedEnv mma("LATIM_SSD_KERNEL", "mma");
  const int64_t launches = cuda::ssd_output_wgmma_launches();
  for (const SsdCase k : {SsdCase{1100, 24, 64, 128, 1, 0, 0.5f, -3, -0.1f}, SsdCase{600, 4, 16, 128, 2, 3, 0.5f, -3, -0.1f},
                          SsdCase{33000, 2, 64, 128, 1, 0, 0.1f, -1, -0.1f}, SsdCase{5, 1, 64, 16, 1, 4, 0.5f, -3, -0.1f}}) {
    const int64_t D = k.H * k.P, GN = k.G * k.N, ldx = D + 2 * GN + k.pad;
    const std::vector<uint16_t> x16 = to_bf16_host(random_vector(rng, k.T * ldx, -2, 2));
    const std::vector<float> xr = from_bf16_host(x16);
    const auto dt = random_vector(rng, k.T * k.H, 0.001f, k.dt_hi), A = random_vector(rng, k.H, k.a_lo, k.a_hi),
               Ds = random_vector(rng, k.H, 0, 1);
    auto d16 = to_device(x16);
    auto dxr = to_device(xr);
    auto ddt = to_device(dt), dA = to_device(A), dDs = to_device(Ds);
    auto y16 = poisoned<float>(k.T * D), y32 = poisoned<float>(k.T * D);
    auto h16 = poisoned<float>(k.H * k.P * k.N), h32 = poisoned<float>(k.H * k.P * k.N);
    cuda::DeviceArray<float> work;
    work.reserve(cuda::ssd_scan_work(k.T, k.H, k.P, k.N, k.G), "work");
    ASSERT_TRUE(cuda::ssd_scan_takes_bf16(k.P, k.N));
    cuda::ssd_scan(d16.get(), ldx, ddt.get(), dA.get(), d16.get() + D, d16.get() + D + GN, ldx, dDs.get(), k.T, k.H,
                   k.P, k.N, k.G, y16.get(), nullptr, h16.get(), work.get(), nullptr, 0);
    cuda::ssd_scan(dxr.get(), ldx, ddt.get(), dA.get(), dxr.get() + D, dxr.get() + D + GN, ldx, dDs.get(), k.T, k.H,
                   k.P, k.N, k.G, y32.get(), h32.get(), work.get(), true, nullptr, 0);
    const std::string at = "T=" + std::to_string(k.T) + " H=" + std::to_string(k.H) + " pad=" + std::to_string(k.pad);
    const std::vector<float> y32h = to_host(y32, k.T * D);
    EXPECT_TRUE(same_bits(to_host(y16, k.T * D), y32h)) << at << " y";
    // y written in bf16: the fp32 output rounded to nearest even; y itself untouched
    auto yb = poisoned<uint16_t>(k.T * D);
    auto ynone = poisoned<float>(1);
    cuda::ssd_scan(d16.get(), ldx, ddt.get(), dA.get(), d16.get() + D, d16.get() + D + GN, ldx, dDs.get(), k.T, k.H,
                   k.P, k.N, k.G, ynone.get(), yb.get(), nullptr, work.get(), nullptr, 0);
    EXPECT_TRUE(same_bits(to_host(yb, k.T * D), to_bf16_host(y32h))) << at << " y in bf16";
    EXPECT_TRUE(std::isnan(to_host(ynone, 1)[0])) << at << " fp32 y not written";
    EXPECT_TRUE(same_bits(to_host(h16, k.H * k.P * k.N), to_host(h32, k.H * k.P * k.N))) << at << " final state";
  }
  EXPECT_FALSE(cuda::ssd_scan_takes_bf16(128, 128));
  EXPECT_EQ(cuda::ssd_output_wgmma_launches(), launches) << "LATIM_SSD_KERNEL=mma still ran the wgmma kernel";
}

// Mamba-2 SSD as a plain bf16 implementation computes it (mamba_ssm's chunked kernels), here
// in fp64 with the roundings such an implementation makes: chunks of 64 positions, the products
// on bf16 operands: the chunk's entering state rounded to bf16 for C·H, the decayed and masked
// C·B rounded to bf16 for its product with x, w_j B_j (w_j = exp(L_last - L_j) Δ_j) rounded to
// bf16 in the chunk's state update. Inputs as ssd_reference takes them.
void ssd_plain_bf16(int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, int64_t ldx, const std::vector<float>& x,
                    const std::vector<float>& dt, const std::vector<float>& A, const std::vector<float>& Ds,
                    std::vector<double>& y, std::vector<double>& final_state) {
  const auto rb = [](double v) { return static_cast<double>(from_bf16(bf16_bits(static_cast<float>(v)))); };
  const int64_t D = H * P, GN = G * N, Q = 64;
  y.assign(T * D, 0.0);
  final_state.assign(H * P * N, 0.0);
  for (int64_t h = 0; h < H; ++h) {
    const int64_t g = h / (H / G);
    std::vector<double> st(P * N, 0.0), L(Q), sb(P * N), wb(Q * N), m(Q * Q);
    for (int64_t t0 = 0; t0 < T; t0 += Q) {
      const int64_t len = std::min(Q, T - t0);
      double acc = 0;
      for (int64_t j = 0; j < len; ++j) L[j] = acc += static_cast<double>(dt[(t0 + j) * H + h]) * A[h];
      const auto xv = [&](int64_t j, int64_t p) { return static_cast<double>(x[(t0 + j) * ldx + h * P + p]); };
      const auto bv = [&](int64_t j, int64_t n) { return static_cast<double>(x[(t0 + j) * ldx + D + g * N + n]); };
      const auto cv = [&](int64_t j, int64_t n) { return static_cast<double>(x[(t0 + j) * ldx + D + GN + g * N + n]); };
      for (int64_t k = 0; k < P * N; ++k) sb[k] = rb(st[k]);
      for (int64_t i = 0; i < len; ++i)
        for (int64_t j = 0; j <= i; ++j) {
          double cb = 0;
          for (int64_t n = 0; n < N; ++n) cb += cv(i, n) * bv(j, n);
          m[i * Q + j] = rb(cb * std::exp(L[i] - L[j]) * dt[(t0 + j) * H + h]);
        }
      for (int64_t i = 0; i < len; ++i)
        for (int64_t p = 0; p < P; ++p) {
          double ch = 0, mx = 0;
          for (int64_t n = 0; n < N; ++n) ch += cv(i, n) * sb[p * N + n];
          for (int64_t j = 0; j <= i; ++j) mx += m[i * Q + j] * xv(j, p);
          y[(t0 + i) * D + h * P + p] = std::exp(L[i]) * ch + mx + Ds[h] * xv(i, p);
        }
      for (int64_t j = 0; j < len; ++j)
        for (int64_t n = 0; n < N; ++n)
          wb[j * N + n] = rb(std::exp(L[len - 1] - L[j]) * dt[(t0 + j) * H + h] * bv(j, n));
      for (int64_t p = 0; p < P; ++p)
        for (int64_t n = 0; n < N; ++n) {
          double s = std::exp(L[len - 1]) * st[p * N + n];
          for (int64_t j = 0; j < len; ++j) s += xv(j, p) * wb[j * N + n];
          st[p * N + n] = s;
        }
    }
    std::copy(st.begin(), st.end(), final_state.begin() + h * P * N);
  }
}

// The Hopper chunk-state and output passes (wgmma, bf16 operands, fp32 sums) on bf16 inputs,
// against the fp64 scan of the same (rounded) inputs: y's error and the final state's at most
// twice those of the plain bf16 implementation above, with y in fp32 and in bf16 (then both
// rounded to bf16), across groups, slices (262144 positions), a partial last chunk, a sequence
// shorter than one chunk and one of exactly one, two groups of heads and strong decays.
// Skips where the kernel does not run (not an sm_90a build, or not a Hopper GPU).
TEST_F(CudaKernels, SsdScanWgmmaOutputPassIsWithinTwicePlainBf16) {
  struct Case {
    SsdCase k;
    bool bf16_out;
  };
  for (const Case cs : {Case{SsdCase{1100, 24, 64, 128, 1, 0, 0.5f, -3, -0.1f}, false},
                        Case{SsdCase{1100, 24, 64, 128, 1, 0, 0.5f, -3, -0.1f}, true},
                        Case{SsdCase{1100, 8, 64, 128, 1, 0, 0.1f, -16, -1}, false},
                        Case{SsdCase{601, 4, 64, 128, 2, 8, 0.5f, -1, -0.1f}, true},
                        Case{SsdCase{263000, 1, 64, 128, 1, 0, 0.1f, -1, -0.1f}, false},
                        Case{SsdCase{40, 3, 64, 128, 1, 0, 0.5f, -3, -0.1f}, true},
                        Case{SsdCase{64, 2, 64, 128, 1, 0, 0.5f, -3, -0.1f}, false}}) {
    const SsdCase k = cs.k;
    const int64_t D = k.H * k.P, GN = k.G * k.N, ldx = D + 2 * GN + k.pad;
    const std::vector<uint16_t> x16 = to_bf16_host(random_vector(rng, k.T * ldx, -2, 2));
    const std::vector<float> xr = from_bf16_host(x16);
    const auto dt = random_vector(rng, k.T * k.H, 0.001f, k.dt_hi), A = random_vector(rng, k.H, k.a_lo, k.a_hi),
               Ds = random_vector(rng, k.H, 0, 1);
    std::vector<double> exact, st, plain, plain_st;
    ssd_reference(k.T, k.H, k.P, k.N, k.G, ldx, xr, dt, A, Ds, exact, st);
    ssd_plain_bf16(k.T, k.H, k.P, k.N, k.G, ldx, xr, dt, A, Ds, plain, plain_st);
    auto d16 = to_device(x16);
    auto ddt = to_device(dt), dA = to_device(A), dDs = to_device(Ds);
    cuda::DeviceArray<float> work;
    work.reserve(cuda::ssd_scan_work(k.T, k.H, k.P, k.N, k.G), "work");
    const int64_t before = cuda::ssd_output_wgmma_launches();
    std::vector<double> got;
    auto hf = poisoned<float>(k.H * k.P * k.N);
    if (cs.bf16_out) {
      auto yb = poisoned<uint16_t>(k.T * D);
      cuda::ssd_scan(d16.get(), ldx, ddt.get(), dA.get(), d16.get() + D, d16.get() + D + GN, ldx, dDs.get(), k.T, k.H,
                     k.P, k.N, k.G, nullptr, yb.get(), hf.get(), work.get(), nullptr, 0);
      const std::vector<float> v = from_bf16_host(to_host(yb, k.T * D));
      got.assign(v.begin(), v.end());
      for (double& v : plain) v = from_bf16(bf16_bits(static_cast<float>(v)));
    } else {
      auto y = poisoned<float>(k.T * D);
      cuda::ssd_scan(d16.get(), ldx, ddt.get(), dA.get(), d16.get() + D, d16.get() + D + GN, ldx, dDs.get(), k.T, k.H,
                     k.P, k.N, k.G, y.get(), nullptr, hf.get(), work.get(), nullptr, 0);
      const std::vector<float> v = to_host(y, k.T * D);
      got.assign(v.begin(), v.end());
    }
    if (cuda::ssd_output_wgmma_launches() == before) GTEST_SKIP() << "the wgmma output pass does not run here";
    const std::string at = "T=" + std::to_string(k.T) + " H=" + std::to_string(k.H) + " G=" + std::to_string(k.G) +
                           (cs.bf16_out ? " bf16 y" : " fp32 y");
    const double e = norm_error(got, exact), ep = norm_error(plain, exact);
    EXPECT_LE(e, 2 * ep) << at << " (plain bf16: " << ep << ")";
    EXPECT_GT(e, 1e-5) << at << ": no bf16 rounding seen";
    const double eh = norm_error(to_host(hf, k.H * k.P * k.N), st), ehp = norm_error(plain_st, st);
    EXPECT_LE(eh, 2 * ehp) << at << " final state (plain bf16: " << ehp << ")";
    std::printf("[ wgmma SSD ] %s: error %.3g, plain bf16 %.3g; final state %.3g, plain %.3g\n", at.c_str(), e, ep,
                eh, ehp);
  }
}

// The fp64 sum of squares in the order of the original one-block-per-row norm kernels (which
// the fp32 results keep bit for bit): 256 threads summing elements t, t + 256, ... in turn, a
// xor-shuffle tree within each warp of 32, then the 8 warp sums in order.
template <class F>
double sum_squares_in_block_order(int64_t n, F value) {
  std::vector<double> th(256, 0.0);
  for (int64_t t = 0; t < 256; ++t)
    for (int64_t k = t; k < n; k += 256) th[t] += static_cast<double>(value(k)) * value(k);
  double total = 0.0;
  for (int w = 0; w < 8; ++w) {
    std::vector<double> lane(th.begin() + 32 * w, th.begin() + 32 * w + 32), next(32);
    for (int o = 16; o > 0; o >>= 1) {
      for (int l = 0; l < 32; ++l) next[l] = lane[l] + lane[l ^ o];
      lane = next;
    }
    total += lane[0];
  }
  return total;
}

// Host RMSNorm of one row with the device's rounding steps.
void rmsnorm_row_bits(const float* x, int64_t dim, const float* w, double eps, float* out) {
  const double ss = sum_squares_in_block_order(dim, [&](int64_t k) { return x[k]; });
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
  for (int64_t k = 0; k < dim; ++k) out[k] = w[k] * (x[k] * inv);
}

// rmsnorm_rows keeps the bits of the original kernel (its sum order), on the 16-byte path
// (widths multiple of 4, with fewer and more than the 8 steps kept in registers) and the
// scalar one (odd widths); residual_rmsnorm adds first (the same bits as residual_add) and
// writes the same rows, in bf16 rounded to nearest even where asked.
TEST_F(CudaKernels, RmsNormKeepsTheBitsOfTheOriginalOrder) {
  for (int64_t dim : {768, 40, 37, 2560, 3}) {
    const int64_t rows = 333;
    const auto in = random_vector(rng, rows * dim, -3, 3), o = random_vector(rng, rows * dim, -1, 1),
               w = random_vector(rng, dim, 0.5, 1.5);
    std::vector<float> want(rows * dim), sum(rows * dim), want_sum(rows * dim);
    for (int64_t k = 0; k < rows * dim; ++k) sum[k] = in[k] + o[k];
    for (int64_t r = 0; r < rows; ++r) {
      rmsnorm_row_bits(in.data() + r * dim, dim, w.data(), 1e-5, want.data() + r * dim);
      rmsnorm_row_bits(sum.data() + r * dim, dim, w.data(), 1e-5, want_sum.data() + r * dim);
    }
    auto din = to_device(in), dw = to_device(w), dout = poisoned<float>(rows * dim);
    cuda::rmsnorm_rows(din.get(), rows, dim, dw.get(), 1e-5, dout.get(), nullptr, 0);
    EXPECT_TRUE(same_bits(to_host(dout, rows * dim), want)) << "rmsnorm_rows dim=" << dim;

    auto dr = to_device(in), dlo = to_device(o), out = poisoned<float>(rows * dim);
    auto out16 = poisoned<uint16_t>(rows * dim);
    cuda::residual_rmsnorm(dr.get(), dlo.get(), rows, dim, dw.get(), 1e-5, out.get(), out16.get(), nullptr, 0);
    EXPECT_TRUE(same_bits(to_host(dr, rows * dim), sum)) << "residual dim=" << dim;
    EXPECT_TRUE(same_bits(to_host(out, rows * dim), want_sum)) << "residual_rmsnorm dim=" << dim;
    EXPECT_TRUE(same_bits(to_host(out16, rows * dim), to_bf16_host(want_sum))) << "bf16 dim=" << dim;

    // bf16 only, no residual: r is left as it was.
    auto dr2 = to_device(in);
    auto only16 = poisoned<uint16_t>(rows * dim);
    cuda::residual_rmsnorm(dr2.get(), nullptr, rows, dim, dw.get(), 1e-5, nullptr, only16.get(), nullptr, 0);
    EXPECT_TRUE(same_bits(to_host(dr2, rows * dim), in)) << "dim=" << dim;
    EXPECT_TRUE(same_bits(to_host(only16, rows * dim), to_bf16_host(want))) << "bf16 only dim=" << dim;
  }
}

// The gated norm keeps the original kernel's bits too: the host replays its rounding steps
// on the device's gate values (SiLU through the device's expf), for the 16-byte path
// (ldz multiple of 4), the scalar one, groups past the 8 steps kept in registers, and the
// bf16 output, which leaves y as it was.
TEST_F(CudaKernels, GatedRmsNormKeepsTheBitsOfTheOriginalOrder) {
  struct Case {
    int64_t T, D, G, ldz;
  };
  for (const Case k : {Case{129, 96, 1, 132}, Case{129, 96, 3, 132}, Case{129, 96, 2, 130}, Case{70, 3072, 1, 3076},
                       Case{70, 3072, 2, 6400}, Case{50, 30, 3, 31}})
    for (bool before : {false, true}) {
      const int64_t T = k.T, D = k.D, G = k.G, ldz = k.ldz, gs = D / G;
      const auto y = random_vector(rng, T * D, -2, 2), z = random_vector(rng, T * ldz, -3, 3),
                 w = random_vector(rng, D, 0.5, 1.5);
      auto dy = to_device(y), dz = to_device(z), dw = to_device(w);
      auto gate = poisoned<float>(T * D), gamma = poisoned<float>(T * D);
      cuda::gated_rmsnorm(dy.get(), dz.get(), ldz, T, D, G, dw.get(), 1e-5, before, gate.get(), gamma.get(), nullptr,
                          nullptr, 0);
      const std::vector<float> g = to_host(gate, T * D);
      std::vector<float> want(T * D), want_gamma(T * D);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t q = 0; q < G; ++q) {
          const int64_t k0 = t * D + q * gs;
          const double ss = sum_squares_in_block_order(
              gs, [&](int64_t i) { return before ? y[k0 + i] : y[k0 + i] * g[k0 + i]; });
          const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(gs) + 1e-5));
          for (int64_t i = 0; i < gs; ++i) {
            want_gamma[k0 + i] = w[q * gs + i] * inv;
            want[k0 + i] = want_gamma[k0 + i] * (y[k0 + i] * g[k0 + i]);
          }
        }
      const std::string at = "T=" + std::to_string(T) + " D=" + std::to_string(D) + " G=" + std::to_string(G) +
                             " ldz=" + std::to_string(ldz) + " before=" + std::to_string(before);
      EXPECT_TRUE(same_bits(to_host(dy, T * D), want)) << at;
      EXPECT_TRUE(same_bits(to_host(gamma, T * D), want_gamma)) << at;
      // The gate against SiLU in fp64 (the device's expf is not the host's).
      std::vector<double> silu(T * D);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < D; ++i) {
          const double zv = z[t * ldz + i];
          silu[t * D + i] = zv / (1 + std::exp(-zv));
        }
      EXPECT_LE(norm_error(g, silu), 1e-6) << at;

      auto dy2 = to_device(y);
      auto y16 = poisoned<uint16_t>(T * D);
      cuda::gated_rmsnorm(dy2.get(), dz.get(), ldz, T, D, G, dw.get(), 1e-5, before, nullptr, nullptr, y16.get(),
                          nullptr, 0);
      // The bf16 output alone takes the fast SiLU (see silu_fast).
      EXPECT_TRUE(within_one_bf16_ulp(to_host(y16, T * D), want)) << at << " bf16";
      EXPECT_TRUE(same_bits(to_host(dy2, T * D), y)) << at << " y untouched";
    }
}

// The Mamba-1 gate, on the 16-byte path and the scalar one, fp32 in place or bf16 (y kept).
// The gated norm with bf16 z and a bf16 output at the Mamba-2 width, norm after the gate
// (G = 1) and before it (G = 3): the warp-per-row kernel (groups of whole 256-value steps,
// rows 16-byte aligned: ldz 3352) and the block kernel (ldz 3353, or fp32 y off alignment)
// give the same bits, on bf16 y and on fp32 y holding the same values.
TEST_F(CudaKernels, GatedRmsNormOnBf16RowsKeepsTheBitsAtTheMamba2Width) {
  const int64_t T = 301, D = 1536;
  const auto gw = random_vector(rng, D, 0.5, 1.5), y = random_vector(rng, T * D, -2, 2);
  const std::vector<uint16_t> yb = to_bf16_host(y);
  const std::vector<float> yr = from_bf16_host(yb);
  auto dgw = to_device(gw);
  auto dyb = to_device(yb);
  for (const int64_t ld : {3352, 3353}) {
    const std::vector<uint16_t> z16 = to_bf16_host(random_vector(rng, T * ld, -4, 4));
    auto dz = to_device(z16);
    for (const int64_t G : {1, 3}) {
      auto dyr = to_device(yr);
      auto qb = poisoned<uint16_t>(T * D), qr = poisoned<uint16_t>(T * D);
      cuda::gated_rmsnorm(dyb.get(), dz.get(), ld, T, D, G, dgw.get(), 1e-5, G == 3, qb.get(), nullptr, 0);
      cuda::gated_rmsnorm(dyr.get(), dz.get(), ld, T, D, G, dgw.get(), 1e-5, G == 3, nullptr, nullptr, qr.get(),
                          nullptr, 0);
      EXPECT_TRUE(same_bits(to_host(qb, T * D), to_host(qr, T * D))) << "ldz " << ld << " G=" << G;
      // fp32 y one float off 16-byte alignment: the block kernel, against the warp kernels above
      std::vector<float> shifted(T * D + 1, 0.0f);
      std::copy(yr.begin(), yr.end(), shifted.begin() + 1);
      auto dys = to_device(shifted);
      auto qs = poisoned<uint16_t>(T * D);
      cuda::gated_rmsnorm(dys.get() + 1, dz.get(), ld, T, D, G, dgw.get(), 1e-5, G == 3, nullptr, nullptr, qs.get(),
                          nullptr, 0);
      EXPECT_TRUE(same_bits(to_host(qs, T * D), to_host(qr, T * D))) << "ldz " << ld << " G=" << G << " block kernel";
    }
  }
}

TEST_F(CudaKernels, SiluGateFp32AndBf16) {
  for (auto [T, D, ldz] : {std::tuple<int64_t, int64_t, int64_t>{300, 96, 192}, {300, 30, 61}, {5, 1536, 3072}}) {
    const auto y = random_vector(rng, T * D, -2, 2), z = random_vector(rng, T * ldz, -3, 3);
    auto dy = to_device(y), dz = to_device(z), gate = poisoned<float>(T * D);
    cuda::silu_gate(dy.get(), dz.get(), ldz, T, D, gate.get(), nullptr, nullptr, 0);
    const std::vector<float> g = to_host(gate, T * D);
    std::vector<float> want(T * D);
    std::vector<double> silu(T * D);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < D; ++c) {
        const double zv = z[t * ldz + c];
        silu[t * D + c] = zv / (1 + std::exp(-zv));
        want[t * D + c] = y[t * D + c] * g[t * D + c];
      }
    const std::string at = "D=" + std::to_string(D) + " ldz=" + std::to_string(ldz);
    EXPECT_LE(norm_error(g, silu), 1e-6) << at;
    EXPECT_TRUE(same_bits(to_host(dy, T * D), want)) << at;
    auto dy2 = to_device(y);
    auto y16 = poisoned<uint16_t>(T * D);
    cuda::silu_gate(dy2.get(), dz.get(), ldz, T, D, nullptr, y16.get(), nullptr, 0);
    // The bf16 output alone takes the fast SiLU (see silu_fast).
    EXPECT_TRUE(within_one_bf16_ulp(to_host(y16, T * D), want)) << at << " bf16";
    EXPECT_TRUE(same_bits(to_host(dy2, T * D), y)) << at << " y untouched";
  }
}

// residual_add (16-byte path with a ragged tail, and an unaligned start) and to_bf16.
TEST_F(CudaKernels, ResidualAddAndBf16Copy) {
  const int64_t n = 100003;
  const auto r = random_vector(rng, n, -3, 3), o = random_vector(rng, n, -1, 1);
  for (int64_t off : {0, 1}) {
    auto dr = to_device(r), dlo = to_device(o);
    cuda::residual_add(dr.get() + off, dlo.get() + off, n - off, nullptr, 0);
    std::vector<float> want = r;
    for (int64_t k = off; k < n; ++k) want[k] = r[k] + o[k];
    EXPECT_TRUE(same_bits(to_host(dr, n), want)) << "offset " << off;
  }
  auto dr = to_device(r);
  auto b = poisoned<uint16_t>(n);
  cuda::to_bf16(dr.get(), n, b.get(), nullptr, "to_bf16 test", 0);
  EXPECT_TRUE(same_bits(to_host(b, n), to_bf16_host(r)));
  // rows of 48 out of 80 (Mamba-1's dt columns of the x_proj output) into a dense [rows, 48]
  const int64_t rows = n / 80, cols = 48;
  auto rb = poisoned<uint16_t>(rows * cols);
  cuda::to_bf16_rows(dr.get(), 80, rows, cols, rb.get(), nullptr, "to_bf16_rows test", 0);
  std::vector<float> sub(rows * cols);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) sub[i * cols + j] = r[i * 80 + j];
  EXPECT_TRUE(same_bits(to_host(rb, rows * cols), to_bf16_host(sub))) << "to_bf16_rows";
}

// linear_bf16 against fp64 products of the bf16-rounded operands (round to nearest even):
// only the fp32 sums may differ. Ragged sizes, a bias, a leading dimension. (cuBLAS's
// COMPUTE_32F_FAST_16BF on fp32 operands, the bf16 mode before linear_bf16, is measurably
// more accurate than this on an H100, 2.2e-4 against 1.5-2.6e-3, so it is not plain bf16
// rounding and is not compared here.)
TEST_F(CudaKernels, LinearOnBf16OperandsIsPlainBf16) {
  cuda::Blas blas;
  for (auto [rows, in_dim, out_dim] :
       {std::tuple<int64_t, int64_t, int64_t>{1000, 768, 3352}, {333, 1536, 768}, {77, 40, 96}, {5, 37, 11}}) {
    const int64_t lda = in_dim + (in_dim % 8 == 0 ? 8 : 0);
    const auto in = random_vector(rng, rows * lda, -2, 2), W = random_vector(rng, out_dim * in_dim, -0.1f, 0.1f),
               bias = random_vector(rng, out_dim, -0.5, 0.5);
    const std::vector<uint16_t> in16 = to_bf16_host(in), W16 = to_bf16_host(W);
    std::vector<double> want(rows * out_dim);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < out_dim; ++c) {
        double acc = bias[c];
        for (int64_t k = 0; k < in_dim; ++k)
          acc += static_cast<double>(from_bf16(in16[r * lda + k])) * from_bf16(W16[c * in_dim + k]);
        want[r * out_dim + c] = acc;
      }
    auto db = to_device(bias);
    auto din16 = to_device(in16), dW16 = to_device(W16);
    auto out = poisoned<float>(rows * out_dim);
    cuda::linear_bf16(blas, din16.get(), rows, in_dim, lda, dW16.get(), out_dim, db.get(), out.get(), out_dim, nullptr,
                      "linear_bf16 test", 0);
    const std::vector<float> a = to_host(out, rows * out_dim);
    const std::string at = std::to_string(rows) + "x" + std::to_string(in_dim) + "x" + std::to_string(out_dim);
    // fp32 sums on tensor cores: ~1e-6 here; a different rounding of the operands (e.g.
    // truncation) would show as ~1e-3.
    EXPECT_LE(norm_error(a, want), 5e-5) << at;
  }
}


// The split product's row blocks (no GPU needed): within the workspace bound, multiples of
// 128 rows, as few as the bound allows, and of equal size but the last.
TEST(LinearSplit, RowBlocksAreBoundedAndEven) {
  for (int64_t in_dim : {37, 768, 1536, 5120, 1 << 20})
    for (int64_t rows : {1, 127, 128, 7000, 65536, 65537, 1000003}) {
      const int64_t b = cuda::split_rows(rows, in_dim), cap = cuda::split_rows(int64_t{1} << 40, in_dim);
      const std::string at = std::to_string(rows) + " rows of " + std::to_string(in_dim);
      EXPECT_EQ(b % 128, 0) << at;
      EXPECT_LE(b, cap) << at;
      EXPECT_TRUE(3 * in_dim * 4 * cap <= cuda::kSplitBytes || cap == 128) << at;
      const int64_t blocks = (rows + b - 1) / b, fewest = (rows + cap - 1) / cap;
      EXPECT_EQ(blocks, fewest) << at;
      EXPECT_LT(blocks * b - rows, 128 * blocks) << at << ": the last block is not much shorter";
    }
  // the 130m products: in_proj and out_proj split, Mamba-1's x_proj and dt_proj do not
  EXPECT_TRUE(cuda::split_pays(768, 3352));
  EXPECT_TRUE(cuda::split_pays(1536, 768));
  EXPECT_FALSE(cuda::split_pays(1536, 80));
  EXPECT_FALSE(cuda::split_pays(48, 1536));
}

// Split tf32 products (FP32X3, see linear.hpp) against fp64: within the bound of truncating
// fp32 sums, and far more accurate than plain tf32 (which shows the comparison can tell
// them apart). Ragged sizes, leading dimensions, a
// bias, more rows than one split block (checked on the rows around the block's end and
// at the end), and the scalar split path (an inner dimension not a multiple of 4). Only
// widths where split_pays says yes take it.
TEST_F(CudaKernels, LinearFp32SplitProductsHaveFp32Accuracy) {
  cuda::Blas blas;
  if (!blas.tf32_tensor_cores()) GTEST_SKIP() << "no tf32 tensor cores: FP32X3 is cuBLAS's fp32 product there";
  struct Case {
    int64_t rows, in_dim, out_dim, lda, ldo;
  };
  // split_rows' cap for in_dim = 1536: a case just above it runs in two blocks
  const int64_t cap = cuda::split_rows(int64_t{1} << 40, 1536);
  for (const Case& k : {Case{512, 768, 1024, 768, 1024}, Case{333, 1536, 768, 1544, 771},
                        Case{cap + 808, 1536, 512, 1536, 512}, Case{5, 130, 600, 130, 600}}) {
    ASSERT_TRUE(cuda::split_pays(k.in_dim, k.out_dim)) << "a case that would not take the split product";
    const auto in = random_vector(rng, k.rows * k.lda, -2, 2), W = random_vector(rng, k.out_dim * k.in_dim, -0.1f, 0.1f),
               bias = random_vector(rng, k.out_dim, -0.5, 0.5);
    const int64_t block = cuda::split_rows(k.rows, k.in_dim);
    std::vector<int64_t> rows;  // the rows compared: all, or 64 at each end of a split block
    for (int64_t r = 0; r < k.rows; ++r)
      if (k.rows <= 2048 || r < 64 || std::abs(r - block) <= 64 || r >= k.rows - 64) rows.push_back(r);
    std::vector<double> want;
    for (int64_t r : rows)
      for (int64_t c = 0; c < k.out_dim; ++c) {
        double acc = bias[c];
        for (int64_t i = 0; i < k.in_dim; ++i) acc += static_cast<double>(in[r * k.lda + i]) * W[c * k.in_dim + i];
        want.push_back(acc);
      }
    auto din = to_device(in), dW = to_device(W), db = to_device(bias);
    const auto run = [&](cuda::MathMode mode) {
      auto out = poisoned<float>(k.rows * k.ldo);
      cuda::linear(blas, mode, din.get(), k.rows, k.in_dim, k.lda, dW.get(), k.out_dim, db.get(), out.get(), k.ldo,
                   nullptr, "linear fp32 test", 0);
      const std::vector<float> o = to_host(out, k.rows * k.ldo);
      std::vector<float> a;
      for (int64_t r : rows)
        for (int64_t c = 0; c < k.out_dim; ++c) a.push_back(o[r * k.ldo + c]);
      return norm_error(a, want);
    };
    const double split = run(cuda::MathMode::FP32X3), plain = run(cuda::MathMode::FP32),
                 tf32 = run(cuda::MathMode::TF32);
    const std::string at = std::to_string(k.rows) + "x" + std::to_string(k.in_dim) + "x" + std::to_string(k.out_dim);
    // The tensor cores' fp32 sums truncate: each step of 8 products can lose up to an ulp of
    // the running sum (2^-23 relative), so K/8 · 2^-23 of the largest output bounds the error,
    // plus 1e-6 for the dropped a_lo·b_lo terms and the rounding of a_lo and b_lo. Measured
    // (H100): 1-2.3e-6 at K = 768, 2-5e-6 at K = 1536; cuBLAS's fp32 product 0.5-2e-6.
    const double bound = static_cast<double>(k.in_dim) / 8 * std::ldexp(1.0, -23) + 1e-6;
    EXPECT_LE(split, bound) << at << ": cuBLAS fp32 " << plain;
    EXPECT_GE(tf32, 20 * split) << at << ": plain tf32 " << tf32 << ", split " << split;
  }
}

// linear_bf16 with a bf16 output (the bf16 mode's in_proj) against fp64 products of the
// bf16 operands: every element within one bf16 rounding of the exact product (half a unit
// in bf16's last place, plus a slack for the fp32 sums that can move a value across a
// rounding midpoint). Rounding twice, or truncating, breaks it on a large share of elements.
TEST_F(CudaKernels, LinearWithBf16OutputIsOneRoundingOfThePlainProduct) {
  cuda::Blas blas;
  for (auto [rows, in_dim, out_dim] : {std::tuple<int64_t, int64_t, int64_t>{1000, 768, 3352}, {77, 40, 96}, {5, 37, 11}}) {
    const auto in = random_vector(rng, rows * in_dim, -2, 2), W = random_vector(rng, out_dim * in_dim, -0.1f, 0.1f);
    const std::vector<uint16_t> in16 = to_bf16_host(in), W16 = to_bf16_host(W);
    auto din16 = to_device(in16), dW16 = to_device(W16);
    auto out = poisoned<uint16_t>(rows * out_dim);
    cuda::linear_bf16(blas, din16.get(), rows, in_dim, in_dim, dW16.get(), out_dim, out.get(), out_dim, nullptr,
                      "linear_bf16 test", 0);
    const std::vector<uint16_t> got = to_host(out, rows * out_dim);
    int64_t bad = 0;
    double worst = 0.0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < out_dim; ++c) {
        double acc = 0.0;
        for (int64_t k = 0; k < in_dim; ++k)
          acc += static_cast<double>(from_bf16(in16[r * in_dim + k])) * from_bf16(W16[c * in_dim + k]);
        const double err = std::abs(from_bf16(got[r * out_dim + c]) - acc);
        const double half_ulp = acc == 0.0 ? 0.0 : bf16_ulp(acc) / 2;
        worst = std::max(worst, err / (half_ulp + 1e-30));
        if (err > half_ulp + 2e-5) ++bad;
      }
    EXPECT_EQ(bad, 0) << rows << "x" << in_dim << "x" << out_dim << " worst error in half bf16 ulps " << worst;
  }
}

// A Blas made with LATIM_GEMM_TUNE set to `mode` (null: unset, tuning on).
std::unique_ptr<cuda::Blas> blas_with_tuning(const char* mode) {
  const ScopedEnv tune("LATIM_GEMM_TUNE", mode);
  return std::make_unique<cuda::Blas>();
}

// The products' algorithm choice (linear.hpp, Blas): a tuned Blas, which times cublasLt's
// candidates at each new shape, and one that splits the columns wherever it can
// (LATIM_GEMM_TUNE=split), give the bits of one that keeps the heuristic's first choice
// (LATIM_GEMM_TUNE=0). Shapes with more rows than the tuning runs on, accumulating products
// (whose candidates must not touch the output), the bf16 and fp32 outputs, widths that are
// multiples of 128 and widths that are not, and operands aligned to 2 and 4 bytes only.
// Sampled rows are also checked against fp64.
TEST_F(CudaKernels, TunedProductsKeepTheBitsOfTheHeuristicsFirstChoice) {
  const ScopedEnv no_cache("LATIM_GEMM_CACHE", "off");  // every plan timed here (the cache has its own test)
  const auto plain_ptr = blas_with_tuning("0"), split_ptr = blas_with_tuning("split"),
             tuned_ptr = blas_with_tuning(nullptr);
  cuda::Blas &plain = *plain_ptr, &split = *split_ptr, &tuned = *tuned_ptr;
  ASSERT_FALSE(plain.tunes());
  ASSERT_TRUE(tuned.tunes() && split.tunes() && split.forces_split());
  struct Case {
    int64_t rows, in_dim, out_dim, in_off, out_off;
    bool bf16_out, accumulate;
  };
  const int64_t big = cuda::kGemmTuneRows + 4464;
  int splittable = 0;
  for (const Case& k : {Case{big, 768, 3352, 0, 0, true, false}, Case{big, 1536, 768, 0, 0, false, true},
                        Case{333, 768, 3352, 1, 1, true, false}, Case{333, 1536, 770, 1, 1, false, true},
                        Case{1000, 48, 1536, 0, 0, true, false}, Case{1000, 1536, 898, 0, 0, false, true}}) {
    splittable += k.out_dim % 128 != 0;
    const std::string at = std::to_string(k.rows) + "x" + std::to_string(k.in_dim) + "x" + std::to_string(k.out_dim) +
                           (k.in_off ? " (unaligned)" : "") + (k.accumulate ? " (accumulating)" : "");
    const int64_t lda = k.in_dim + k.in_off, ldo = k.out_dim + k.out_off;
    const std::vector<uint16_t> in16 = to_bf16_host(random_vector(rng, k.rows * lda + k.in_off, -2, 2)),
                                W16 = to_bf16_host(random_vector(rng, k.out_dim * k.in_dim, -0.1f, 0.1f));
    const std::vector<float> init = random_vector(rng, k.rows * ldo + k.out_off, -1, 1);
    auto din = to_device(in16), dW = to_device(W16);
    const auto run = [&](cuda::Blas& blas) {
      if (k.bf16_out) {
        auto out = to_device(std::vector<uint16_t>(k.rows * ldo + k.out_off, 0));
        cuda::linear_bf16(blas, din.get() + k.in_off, k.rows, k.in_dim, lda, dW.get(), k.out_dim,
                          out.get() + k.out_off, ldo, nullptr, "tuned product test", 0);
        std::vector<float> o;
        for (uint16_t b : to_host(out, k.rows * ldo + k.out_off)) o.push_back(from_bf16(b));
        return o;
      }
      auto out = to_device(init);
      cuda::linear_bf16(blas, din.get() + k.in_off, k.rows, k.in_dim, lda, dW.get(), k.out_dim, nullptr,
                        out.get() + k.out_off, ldo, nullptr, "tuned product test", 0, k.accumulate);
      return to_host(out, k.rows * ldo + k.out_off);
    };
    const std::vector<float> a = run(plain), b = run(tuned), b2 = run(tuned);  // b2: the plan made by b
    ASSERT_TRUE(same_bits(a, b)) << at;
    ASSERT_TRUE(same_bits(b, b2)) << at;
    const int splits = split.split_plans();
    ASSERT_TRUE(same_bits(a, run(split))) << at << " (split columns)";
    ASSERT_TRUE(same_bits(a, run(split))) << at << " (split columns, the plan made)";
    // A split only where the width is no multiple of 128 (and the parts have the whole's bits)
    if (k.out_dim % 128 == 0) EXPECT_EQ(split.split_plans(), splits) << at;
    std::vector<float> got;
    std::vector<double> want;
    for (int64_t r = 0; r < k.rows; r += r < 16 || r >= k.rows - 16 ? 1 : 997)
      for (int64_t c = 0; c < k.out_dim; ++c) {
        double acc = k.accumulate ? init[k.out_off + r * ldo + c] : 0.0;
        for (int64_t i = 0; i < k.in_dim; ++i)
          acc += static_cast<double>(from_bf16(in16[k.in_off + r * lda + i])) * from_bf16(W16[c * k.in_dim + i]);
        want.push_back(acc);
        got.push_back(a[k.out_off + r * ldo + c]);
      }
    // fp32 sums (~1e-6), one bf16 rounding of the output (~2e-3 relative); a wrong product is O(1)
    EXPECT_LE(norm_error(got, want), k.bf16_out ? 4e-3 : 5e-5) << at;
  }
  // The split path ran: on an H100 the bf16-output cases split (the fp32 accumulating ones,
  // 770 and 898 wide, need not: their parts may sum in another order, and are then refused).
  EXPECT_GE(split.split_plans(), 1) << "no split reproduced the whole product's bits on this GPU";
  EXPECT_EQ(splittable, 4);
}

// Tuned plans kept in the cache file (LATIM_GEMM_CACHE) are read back by the next Blas: no
// timing, the same bits. Lines that are not plans, or of another device, are ignored; a
// directory that does not exist yet is made.
TEST_F(CudaKernels, TunedPlansAreReadBackFromTheCacheFile) {
  test::TempDir dir;
  const std::string path = dir / "cache/plans.txt";
  std::optional<ScopedEnv> cache_env(std::in_place, "LATIM_GEMM_CACHE", path.c_str());
  const int64_t rows = 3000;
  const std::vector<uint16_t> in16 = to_bf16_host(random_vector(rng, rows * 1536, -2, 2)),
                              Wa = to_bf16_host(random_vector(rng, 3352 * 768, -0.1f, 0.1f)),
                              Wb = to_bf16_host(random_vector(rng, 770 * 1536, -0.1f, 0.1f));
  const std::vector<float> init = random_vector(rng, rows * 770, -1, 1);
  auto din = to_device(in16), dWa = to_device(Wa), dWb = to_device(Wb);
  const auto run = [&](cuda::Blas& blas) {
    auto a = to_device(std::vector<uint16_t>(rows * 3352, 0));
    cuda::linear_bf16(blas, din.get(), rows, 768, 768, dWa.get(), 3352, a.get(), 3352, nullptr, "cache test", 0);
    auto b = to_device(init);
    cuda::linear_bf16(blas, din.get(), rows, 1536, 1536, dWb.get(), 770, nullptr, b.get(), 770, nullptr, "cache test",
                      0, true);
    return std::make_pair(to_host(a, rows * 3352), to_host(b, rows * 770));
  };
  const auto plan_lines = [&](const std::string& tag) {
    std::ifstream f(path);
    int n = 0;
    for (std::string line; std::getline(f, line);) n += line.rfind("latim-gemm-plan 1 " + tag + " ", 0) == 0;
    return n;
  };
  std::filesystem::create_directories(dir / "cache");
  {
    std::ofstream f(path);
    f << "not a plan\nlatim-gemm-plan 1 Another_GPU/sm00/cublasLt1 1 2 3\n";
  }
  cuda::Blas first;
  const auto want = run(first);
  EXPECT_EQ(first.timed_plans(), 2);
  EXPECT_EQ(first.cached_plans(), 0);
  EXPECT_EQ(plan_lines(first.device_tag()), 2) << path;
  cuda::Blas second;
  const auto got = run(second);
  EXPECT_EQ(second.timed_plans(), 0);
  EXPECT_EQ(second.cached_plans(), 2);
  EXPECT_TRUE(same_bits(want.first, got.first));
  EXPECT_TRUE(same_bits(want.second, got.second));
  const auto first_choice = run(*blas_with_tuning("0"));
  EXPECT_TRUE(same_bits(want.first, first_choice.first));
  EXPECT_TRUE(same_bits(want.second, first_choice.second));
  // A cache directory that cannot be made: the plans are timed, and the products still run.
  cache_env.reset();
  cache_env.emplace("LATIM_GEMM_CACHE", (dir / "cache/plans.txt/below-a-file/plans.txt").c_str());
  cuda::Blas unwritable;
  const auto again = run(unwritable);
  EXPECT_EQ(unwritable.timed_plans(), 2);
  EXPECT_TRUE(same_bits(want.first, again.first));
}

// The kernels that read in_proj's bf16 output (conv, Mamba-2 Δ, the Mamba-1 gate, the gated
// norm, the conv halo's copy) widen it exactly: the same bits as the fp32 kernels on the
// rounded values, on the vector paths and the scalar ones.
TEST_F(CudaKernels, Bf16InputsGiveTheBitsOfTheRoundedFp32Inputs) {
  for (const int64_t ld : {3352, 3353}) {  // row stride of the in_proj output: aligned, and not
    const int64_t T = 301, ch = 200, K = 4, H = 24, D = 96;
    const std::vector<uint16_t> in16 = to_bf16_host(random_vector(rng, T * ld, -3, 3));
    const std::vector<float> in = from_bf16_host(in16);
    const auto w = random_vector(rng, ch * K, -1, 1), b = random_vector(rng, ch, -0.5, 0.5),
               halo = random_vector(rng, (K - 1) * ch, -2, 2), dtb = random_vector(rng, H, -1, 1),
               gw = random_vector(rng, D, 0.5, 1.5), y = random_vector(rng, T * D, -2, 2);
    auto d16 = to_device(in16);
    auto d32 = to_device(in);
    auto dw = to_device(w), db = to_device(b), dh = to_device(halo), ddtb = to_device(dtb), dgw = to_device(gw);
    const std::string at = "ld=" + std::to_string(ld);
    {
      auto o16 = poisoned<float>(T * ch), o32 = poisoned<float>(T * ch);
      cuda::causal_conv_with_halo(d16.get() + 5, T, ch, ld, dw.get(), K, db.get(), true, dh.get(), o16.get(), nullptr, 0);
      cuda::causal_conv_with_halo(d32.get() + 5, T, ch, ld, dw.get(), K, db.get(), true, dh.get(), o32.get(), nullptr, 0);
      EXPECT_TRUE(same_bits(to_host(o16, T * ch), to_host(o32, T * ch))) << at << " conv";
      // With a bf16 output (and its fast SiLU): within one bf16 rounding of the fp32 result.
      auto q16 = poisoned<uint16_t>(T * ch);
      cuda::causal_conv_with_halo(d16.get() + 5, T, ch, ld, dw.get(), K, db.get(), true, dh.get(), q16.get(), nullptr, 0);
      const std::vector<uint16_t> q = to_host(q16, T * ch);
      const std::vector<float> f = to_host(o32, T * ch);
      int64_t off_by_more = 0;
      for (int64_t i = 0; i < T * ch; ++i) {
        const double half_ulp = f[i] == 0.0f ? 1e-30 : bf16_ulp(f[i]) / 2;
        if (std::abs(from_bf16(q[i]) - static_cast<double>(f[i])) > half_ulp * 1.01 + 1e-30) ++off_by_more;
      }
      EXPECT_EQ(off_by_more, 0) << at << " conv with a bf16 output";
      // Two channels per thread (even start, 4-byte aligned rows: ld 3352) and one (odd start,
      // or ld 3353), on the same inputs: the same bits.
      for (const int64_t off : {6, 7}) {
        auto even = poisoned<uint16_t>(T * ch + 2);
        cuda::causal_conv_with_halo(d16.get() + off, T, ch, ld, dw.get(), K, db.get(), true, dh.get(), even.get(),
                                    nullptr, 0);
        auto odd = poisoned<uint16_t>(T * ch + 2);  // output one element in: 2-byte aligned, the 1-channel kernel
        cuda::causal_conv_with_halo(d16.get() + off, T, ch, ld, dw.get(), K, db.get(), true, dh.get(), odd.get() + 1,
                                    nullptr, 0);
        std::vector<uint16_t> a = to_host(even, T * ch + 2), o = to_host(odd, T * ch + 2);
        a.resize(T * ch);
        o.erase(o.begin());
        o.resize(T * ch);
        EXPECT_TRUE(same_bits(a, o)) << at << " offset " << off << ": 2-channel and 1-channel kernels";
      }
    }
    {
      auto o16 = poisoned<float>(T * H), o32 = poisoned<float>(T * H);
      cuda::mamba2_delta(d16.get() + 7, ld, T, H, ddtb.get(), 1e-3, 0.1, o16.get(), nullptr, 0);
      cuda::mamba2_delta(d32.get() + 7, ld, T, H, ddtb.get(), 1e-3, 0.1, o32.get(), nullptr, 0);
      EXPECT_TRUE(same_bits(to_host(o16, T * H), to_host(o32, T * H))) << at << " delta";
    }
    for (const int64_t off : {0, 1, 4}) {  // z's start: the vector paths (0, 4) and the scalar ones (1)
      auto y16 = to_device(y), y32 = to_device(y);
      auto g16 = poisoned<float>(T * D), g32 = poisoned<float>(T * D);
      cuda::silu_gate(y16.get(), d16.get() + off, ld, T, D, g16.get(), nullptr, nullptr, 0);
      cuda::silu_gate(y32.get(), d32.get() + off, ld, T, D, g32.get(), nullptr, nullptr, 0);
      EXPECT_TRUE(same_bits(to_host(y16, T * D), to_host(y32, T * D))) << at << " silu_gate y";
      EXPECT_TRUE(same_bits(to_host(g16, T * D), to_host(g32, T * D))) << at << " silu_gate gate";
      for (const int64_t G : {1, 3}) {
        auto n16 = to_device(y), n32 = to_device(y);
        auto q16 = poisoned<uint16_t>(T * D), q32 = poisoned<uint16_t>(T * D);
        cuda::gated_rmsnorm(n16.get(), d16.get() + off, ld, T, D, G, dgw.get(), 1e-5, G == 3, nullptr, nullptr,
                            q16.get(), nullptr, 0);
        cuda::gated_rmsnorm(n32.get(), d32.get() + off, ld, T, D, G, dgw.get(), 1e-5, G == 3, nullptr, nullptr,
                            q32.get(), nullptr, 0);
        EXPECT_TRUE(same_bits(to_host(q16, T * D), to_host(q32, T * D))) << at << " gated_rmsnorm G=" << G;
        // y in bf16 too (the SSD scan's bf16 output): the fp32 kernel's bits on the rounded y
        const std::vector<uint16_t> yb = to_bf16_host(y);
        const std::vector<float> yr = from_bf16_host(yb);
        auto dyb = to_device(yb);
        auto dyr = to_device(yr);
        auto qb = poisoned<uint16_t>(T * D), qr = poisoned<uint16_t>(T * D);
        cuda::gated_rmsnorm(dyb.get(), d16.get() + off, ld, T, D, G, dgw.get(), 1e-5, G == 3, qb.get(), nullptr, 0);
        cuda::gated_rmsnorm(dyr.get(), d16.get() + off, ld, T, D, G, dgw.get(), 1e-5, G == 3, nullptr, nullptr,
                            qr.get(), nullptr, 0);
        EXPECT_TRUE(same_bits(to_host(qb, T * D), to_host(qr, T * D))) << at << " gated_rmsnorm, bf16 y, G=" << G;
      }
    }
    {
      auto c16 = poisoned<float>(3 * ch), c32 = poisoned<float>(3 * ch);
      cuda::copy_rows(d16.get() + 1, ld, 3, ch, c16.get(), nullptr, 0);
      cuda::copy_rows(d32.get() + 1, ld, 3, ch, c32.get(), nullptr, 0);
      EXPECT_TRUE(same_bits(to_host(c16, 3 * ch), to_host(c32, 3 * ch))) << at << " copy_rows";
    }
  }
}


// The device reductions of the query plans against latim::reduce_tile on the same scores:
// tiles on, below and across the diagonal, ragged block edges, K above a row's sources, many
// ties (values on a coarse grid, so the index tie-break decides) and negative scores.
TEST_F(CudaKernels, TileReductionsMatchTheHostReduction) {
  struct Case {
    int64_t i0, ni, j0, nj, pool, K, W;
  };
  const Case cases[] = {{64, 96, 64, 96, 16, 5, 7},     // diagonal tile
                        {200, 77, 0, 130, 16, 9, 40},   // below the diagonal, ragged blocks
                        {96, 64, 32, 200, 32, 300, 3},  // crosses it; K above every row's sources
                        {512, 40, 0, 3000, 64, 33, 1}};  // long rows: several passes per thread
  for (const Case& c : cases)
    for (int grid : {4, 0}) {  // values on a grid of 4 levels (ties), or continuous
      std::vector<float> m = random_vector(rng, c.ni * c.nj, -1.0f, 1.0f);
      if (grid > 0)
        for (float& v : m) v = std::round(v * grid) / grid;
      for (int64_t r = 0; r < c.ni; ++r)  // the tile kernels' NaN above the diagonal
        for (int64_t j = 0; j < c.nj; ++j)
          if (c.j0 + j > c.i0 + r) m[r * c.nj + j] = std::numeric_limits<float>::quiet_NaN();
      TileScores host;
      host.i0 = c.i0;
      host.ni = c.ni;
      host.j0 = c.j0;
      host.nj = c.nj;
      host.l2 = m;
      TileReduce red;
      red.pool = c.pool;
      red.topk = c.K;
      red.window = c.W;
      reduce_tile(red, host);
      const TileReduced& want = host.reduced[0];

      auto dm = to_device(m);
      const int64_t nbq = static_cast<int64_t>(want.pool_sum.size());
      auto sum = poisoned<float>(nbq), mx = poisoned<float>(nbq), val = poisoned<float>(c.ni * c.K),
           win = poisoned<float>(c.ni * c.W);
      auto col = poisoned<int32_t>(c.ni * c.K);
      cuda::tile_pool(dm.get(), c.i0, c.ni, c.j0, c.nj, c.pool, sum.get(), mx.get(), nullptr, 0);
      cuda::tile_topk(dm.get(), c.i0, c.ni, c.j0, c.nj, c.K, val.get(), col.get(), nullptr, 0);
      cuda::tile_window(dm.get(), c.i0, c.ni, c.j0, c.nj, c.W, win.get(), nullptr, 0);
      const std::string at = "tile " + std::to_string(c.i0) + "+" + std::to_string(c.ni) + " x " +
                             std::to_string(c.j0) + "+" + std::to_string(c.nj) + (grid ? " with ties" : "");
      const auto gs = to_host(sum, nbq), gm = to_host(mx, nbq), gv = to_host(val, c.ni * c.K),
                 gw = to_host(win, c.ni * c.W);
      const auto gc = to_host(col, c.ni * c.K);
      for (int64_t b = 0; b < nbq; ++b) {
        ASSERT_EQ(std::isnan(gs[b]), std::isnan(want.pool_sum[b])) << at << " pool block " << b;
        if (std::isnan(gs[b])) continue;
        EXPECT_NEAR(gs[b], want.pool_sum[b], 1e-6 * std::max(1.0f, std::abs(want.pool_sum[b]))) << at << " block " << b;
        EXPECT_EQ(gm[b], want.pool_max[b]) << at << " pool max, block " << b;
      }
      for (int64_t r = 0; r < c.ni; ++r) {
        // The device's K in any order; the host's best first. Same set, same order once sorted.
        std::vector<std::pair<float, int64_t>> got;
        for (int64_t k = 0; k < c.K; ++k)
          if (gc[r * c.K + k] >= 0) got.push_back({gv[r * c.K + k], c.j0 + gc[r * c.K + k]});
        std::sort(got.begin(), got.end(), [](const auto& a, const auto& b) {
          return a.first > b.first || (a.first == b.first && a.second > b.second);
        });
        std::vector<std::pair<float, int64_t>> exp;
        for (int64_t k = 0; k < c.K; ++k)
          if (want.top_index[r * c.K + k] >= 0) exp.push_back({want.top_value[r * c.K + k], want.top_index[r * c.K + k]});
        ASSERT_EQ(got, exp) << at << " top-k of row " << r;
        for (int64_t w = 0; w < c.W; ++w) {
          const int64_t j = c.i0 + r - w;
          if (j < c.j0 || j >= c.j0 + c.nj) continue;  // unspecified outside the tile
          EXPECT_EQ(gw[r * c.W + w], want.window[r * c.W + w]) << at << " window row " << r << " w " << w;
        }
      }
    }
}

// The wgmma kernel's input-slot swizzles (host arithmetic, no GPU needed): each is a
// permutation of a row's chunks, and every 16-byte shared load a consumer warp issues in
// the u build takes the fewest wavefronts its distinct addresses allow.
TEST(WgmmaSlotSwizzle, PermutesChunksAndSpreadsEachWarpLoadOverAllBanks) {
  using namespace cuda::slot_swizzle;
  const auto is_permutation = [](auto f, int n) {
    std::vector<int> seen(static_cast<size_t>(n), 0);
    for (int i = 0; i < n; ++i) {
      const int v = f(i);
      if (v < 0 || v >= n || seen[static_cast<size_t>(v)]++) return false;
    }
    return true;
  };
  EXPECT_TRUE(is_permutation(row_chunk, 16));
  for (int row = 0; row < 16; ++row)
    EXPECT_TRUE(is_permutation([row](int ch) { return v_chunk(ch, row); }, 16)) << "v row " << row;
  EXPECT_TRUE(is_permutation(tap_chunk, 64));

  // A 16-byte chunk at index a (from a 128-byte aligned base) lies on banks 4 (a % 8) ..
  // + 3. Lanes reading the same address share it; the load takes as many wavefronts as the
  // most distinct addresses that fall on one group of banks.
  const auto wavefronts = [](const std::vector<int>& chunks) {
    std::map<int, std::set<int>> by_group;
    for (const int a : chunks) by_group[a % 8].insert(a);
    size_t most = 0;
    for (const auto& [group, addrs] : by_group) most = std::max(most, addrs.size());
    return most;
  };
  for (int w = 0; w < 4; ++w) {
    for (int half = 0; half < 2; ++half) {
      std::vector<int> z, z_plain, v, v_plain;
      for (int lane = 0; lane < 32; ++lane) {
        const int t = 32 * w + lane, jj = t >> 3, cc = t & 7, ch = 2 * cc + half;
        z.push_back(row_chunk(ch));  // one Z row, or the bias
        z_plain.push_back(ch);
        v.push_back(16 * jj + v_chunk(ch, jj));  // v rows are 16 chunks long
        v_plain.push_back(16 * jj + ch);
      }
      EXPECT_EQ(wavefronts(z), 1u) << "warp " << w;  // 8 distinct addresses: one wavefront
      EXPECT_EQ(wavefronts(v), 4u) << "warp " << w;  // 32 distinct addresses: four
      EXPECT_EQ(wavefronts(z_plain), 2u);  // unswizzled, t % 8 and t % 8 + 4 collide
      EXPECT_EQ(wavefronts(v_plain), 8u);
    }
  }
  for (int e = 0; e < 8; ++e) {
    std::vector<int> taps, taps_plain;
    for (int cc = 0; cc < 8; ++cc) {
      taps.push_back(tap_chunk(8 * cc + e));
      taps_plain.push_back(8 * cc + e);
    }
    EXPECT_EQ(wavefronts(taps), 1u) << "tap chunk " << e;
    EXPECT_EQ(wavefronts(taps_plain), 8u);
  }
}

}  // namespace
}  // namespace latim
