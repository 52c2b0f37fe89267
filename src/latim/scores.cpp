// Score names, layer selections, and the panel driver that assembles tiles into maps,
// normalises ALTI rows, chains the rollout and measures the approximation error.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "latim/error.hpp"
#include "latim/latim.hpp"
#include "latim/progress.hpp"

namespace latim {

const char* to_string(Score s) {
  switch (s) {
    case Score::L2: return "l2";
    case Score::L1: return "l1";
    case Score::Alti: return "alti";
    case Score::AltiRollout: return "alti-rollout";
    case Score::HiddenAttn: return "hidden-attn";
  }
  return "?";
}

std::vector<Score> parse_scores(const std::string& spec) {
  std::vector<Score> out;
  std::stringstream ss(spec);
  std::string name;
  while (std::getline(ss, name, ',')) {
    Score s;
    if (name == "l2") s = Score::L2;
    else if (name == "l1") s = Score::L1;
    else if (name == "alti") s = Score::Alti;
    else if (name == "alti-rollout") s = Score::AltiRollout;
    else if (name == "hidden-attn") s = Score::HiddenAttn;
    else fail("--scores: unknown score '", name, "' (choose from l2, l1, alti, alti-rollout, hidden-attn)");
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  if (out.empty()) fail("--scores: no score given");
  return out;
}

std::vector<int> parse_layers(const std::string& spec, int64_t n_layer) {
  if (spec.empty() || spec == "all") {
    std::vector<int> all(static_cast<std::size_t>(n_layer));
    for (int64_t l = 0; l < n_layer; ++l) all[l] = static_cast<int>(l);
    return all;
  }
  std::vector<int> out;
  std::stringstream ss(spec);
  std::string part;
  auto number = [&](const std::string& s) -> int64_t {
    if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
      fail("--layers: '", part, "' is not a layer index or range like 5-7");
    const int64_t v = std::stoll(s);
    if (v >= n_layer) fail("--layers: layer ", v, " is outside the model's layers 0-", n_layer - 1);
    return v;
  };
  while (std::getline(ss, part, ',')) {
    const auto dash = part.find('-');
    int64_t a, b;
    if (dash == std::string::npos) {
      a = b = number(part);
    } else {
      a = number(part.substr(0, dash));
      b = number(part.substr(dash + 1));
      if (b < a) fail("--layers: range '", part, "' is empty");
    }
    for (int64_t l = a; l <= b; ++l) out.push_back(static_cast<int>(l));
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  if (out.empty()) fail("--layers: no layer given");
  return out;
}

void compute_layer_maps(int layer, const LayerFactors& f, TileBackend& backend, const EngineOptions& opt,
                        MapSink& sink, std::vector<float>* rollout_prev) {
  const ModelConfig& c = *f.config;
  const int64_t T = f.trace->T, d = c.d_model, B = std::max<int64_t>(1, opt.panel);
  auto wants = [&](Score s) { return std::find(opt.scores.begin(), opt.scores.end(), s) != opt.scores.end(); };
  const bool rollout = wants(Score::AltiRollout) && rollout_prev != nullptr;
  ScoreSet which;
  which.l2 = wants(Score::L2);
  which.l1 = wants(Score::L1);
  which.alti = wants(Score::Alti) || rollout;
  which.hidden_attn = wants(Score::HiddenAttn);

  std::vector<float> rollout_next;
  if (rollout) rollout_next.assign(static_cast<std::size_t>(T * T), 0.0f);
  const int64_t npanels = (T + B - 1) / B;
  int64_t my_tiles = 0;
  for (int64_t p = 0; p < npanels; ++p)
    if (!opt.owns_panel || opt.owns_panel(p)) my_tiles += p + 1;
  Progress progress("layer " + std::to_string(layer), my_tiles, "tiles", opt.progress);

  const float nan = std::numeric_limits<float>::quiet_NaN();
  TileScores tile;
  for (int64_t p0 = 0; p0 < T; p0 += B) {
    if (opt.owns_panel && !opt.owns_panel(p0 / B)) continue;
    if (opt.stop_requested && opt.stop_requested()) break;
    const int64_t pn = std::min(B, T - p0), ncols = p0 + pn;
    std::vector<float> l2, l1, alti, hattn;
    auto alloc = [&](bool on, std::vector<float>& v) { if (on) v.assign(pn * ncols, nan); };
    alloc(which.l2, l2);
    alloc(which.l1, l1);
    alloc(which.alti, alti);
    alloc(which.hidden_attn, hattn);
    std::vector<double> contrib(pn * d, 0.0);
    for (int64_t j0 = 0; j0 < ncols; j0 += B) {
      tile.i0 = p0;
      tile.ni = pn;
      tile.j0 = j0;
      tile.nj = std::min(B, ncols - j0);
      backend.compute_tile(f, which, tile);
      auto place = [&](const std::vector<float>& src, std::vector<float>& dst) {
        if (dst.empty()) return;
        for (int64_t r = 0; r < pn; ++r)
          std::copy_n(src.data() + r * tile.nj, tile.nj, dst.data() + r * ncols + j0);
      };
      place(tile.l2, l2);
      place(tile.l1, l1);
      place(tile.alti, alti);
      place(tile.hidden_attn, hattn);
      for (int64_t k = 0; k < pn * d; ++k) contrib[k] += tile.contrib_sum[k];
      const int64_t pairs = j0 + tile.nj <= p0 ? pn * tile.nj : pn * (pn + 1) / 2;
      progress.add(1, pairs);
    }
    // ALTI rows are normalised to sum to 1 over j <= i (spec §4).
    if (which.alti) {
      for (int64_t r = 0; r < pn; ++r) {
        const int64_t i = p0 + r;
        double s = 0.0;
        for (int64_t j = 0; j <= i; ++j) s += alti[r * ncols + j];
        if (s > 0)
          for (int64_t j = 0; j <= i; ++j) alti[r * ncols + j] = static_cast<float>(alti[r * ncols + j] / s);
      }
    }
    // Approximation error of the decomposition, per target row.
    std::vector<float> eps(static_cast<std::size_t>(pn));
    const auto& bout = f.weights->out_proj_b;
    for (int64_t r = 0; r < pn; ++r) {
      const int64_t i = p0 + r;
      double ss = 0.0;
      for (int64_t k = 0; k < d; ++k) {
        const double target = static_cast<double>(f.trace->o[i * d + k]) - (bout.empty() ? 0.0 : bout[k]);
        const double diff = target - contrib[r * d + k];
        ss += diff * diff;
      }
      eps[r] = f.o_norm[i] > 0 ? static_cast<float>(std::sqrt(ss) / f.o_norm[i]) : 0.0f;
    }
    if (rollout) {
      // R^(l)[i, :] = sum_k S^(l)[i, k] R^(l-1)[k, :], with R^(0) = S^(0).
#pragma omp parallel for schedule(dynamic)
      for (int64_t r = 0; r < pn; ++r) {
        const int64_t i = p0 + r;
        float* out = rollout_next.data() + i * T;
        if (rollout_prev->empty()) {
          for (int64_t j = 0; j <= i; ++j) out[j] = alti[r * ncols + j];
        } else {
          std::vector<double> acc(static_cast<std::size_t>(i + 1), 0.0);
          for (int64_t k = 0; k <= i; ++k) {
            const double a = alti[r * ncols + k];
            if (a == 0.0) continue;
            const float* prow = rollout_prev->data() + k * T;
            for (int64_t j = 0; j <= k; ++j) acc[j] += a * prow[j];
          }
          for (int64_t j = 0; j <= i; ++j) out[j] = static_cast<float>(acc[j]);
        }
      }
      if (wants(Score::AltiRollout)) {
        std::vector<float> panel(pn * ncols, nan);
        for (int64_t r = 0; r < pn; ++r)
          std::copy_n(rollout_next.data() + (p0 + r) * T, p0 + r + 1, panel.data() + r * ncols);
        sink.on_panel(layer, Score::AltiRollout, p0, pn, ncols, panel.data());
      }
    }
    if (wants(Score::L2)) sink.on_panel(layer, Score::L2, p0, pn, ncols, l2.data());
    if (wants(Score::L1)) sink.on_panel(layer, Score::L1, p0, pn, ncols, l1.data());
    if (wants(Score::Alti)) sink.on_panel(layer, Score::Alti, p0, pn, ncols, alti.data());
    if (wants(Score::HiddenAttn)) sink.on_panel(layer, Score::HiddenAttn, p0, pn, ncols, hattn.data());
    sink.on_approx_error(layer, p0, pn, eps.data());
  }
  progress.finish();
  if (rollout) rollout_prev->swap(rollout_next);
}

}  // namespace latim
