// Per-layer LaTIM factors derived once from the forward trace (latim-method.md §3, §5).
#include <algorithm>
#include <cmath>

#include "latim/error.hpp"
#include "latim/latim.hpp"

namespace latim {

LayerFactors make_layer_factors(const ModelConfig& c, const LayerWeights& w, const LayerTrace& tr) {
  LayerFactors f;
  f.config = &c;
  f.weights = &w;
  f.trace = &tr;
  const int64_t T = tr.T, D = c.d_inner, d = c.d_model;
  if (tr.device) {
    f.read_o = [dev = tr.device](int64_t i0, int64_t n, float* dst) { dev->read_o(i0, n, dst); };
    return f;
  }
  f.read_o = [&tr, d](int64_t i0, int64_t n, float* dst) { std::copy_n(tr.o.data() + i0 * d, n * d, dst); };
  if (static_cast<int64_t>(tr.gate.size()) != T * D || static_cast<int64_t>(tr.o.size()) != T * d)
    fail("internal: layer trace is incomplete (T = ", T, ")");
  f.Z.resize(T * D);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < T * D; ++k)
    f.Z[k] = c.family == Family::Mamba1 ? tr.gate[k] : tr.gamma[k] * tr.gate[k];
  f.yhat_l1.assign(T, 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < T; ++i) {
    double l1 = 0.0;
    for (int64_t k = 0; k < d; ++k) l1 += std::abs(static_cast<double>(tr.r_in[i * d + k]) + tr.o[i * d + k]);
    f.yhat_l1[i] = l1;
  }
  return f;
}

}  // namespace latim
