// Per-layer LaTIM factors derived once from the forward trace (latim-method.md §3, §5).
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
  if (static_cast<int64_t>(tr.gate.size()) != T * D || static_cast<int64_t>(tr.o.size()) != T * d)
    fail("internal: layer trace is incomplete (T = ", T, ")");
  f.Z.resize(T * D);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < T * D; ++k)
    f.Z[k] = c.family == Family::Mamba1 ? tr.gate[k] : tr.gamma[k] * tr.gate[k];
  f.yhat_l1.assign(T, 0.0);
  f.o_norm.assign(T, 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < T; ++i) {
    double l1 = 0.0, ss = 0.0;
    for (int64_t k = 0; k < d; ++k) {
      const double o = tr.o[i * d + k];
      l1 += std::abs(static_cast<double>(tr.r_in[i * d + k]) + o);
      const double ob = o - (w.out_proj_b.empty() ? 0.0 : w.out_proj_b[k]);
      ss += ob * ob;
    }
    f.yhat_l1[i] = l1;
    f.o_norm[i] = std::sqrt(ss);
  }
  return f;
}

}  // namespace latim
