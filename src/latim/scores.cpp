// Score names, layer selections, and the panel driver that assembles tiles into maps,
// normalises ALTI rows, chains the rollout and measures the approximation error.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <future>
#include <limits>
#include <sstream>

#include "latim/error.hpp"
#include "latim/latim.hpp"

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

std::vector<int64_t> parse_index_list(const std::string& spec, int64_t limit, const std::string& flag,
                                      const std::string& noun) {
  std::vector<int64_t> out;
  std::stringstream ss(spec);
  std::string part;
  auto number = [&](const std::string& s) -> int64_t {
    int64_t v = -1;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size() || v < 0)
      fail(flag, ": '", part, "' is not a ", noun, " or a range like 5-7");
    if (v >= limit) fail(flag, ": ", noun, " ", v, " is outside [0, ", limit, ")");
    return v;
  };
  while (std::getline(ss, part, ',')) {
    const auto dash = part.find('-');
    const int64_t a = number(dash == std::string::npos ? part : part.substr(0, dash));
    const int64_t b = dash == std::string::npos ? a : number(part.substr(dash + 1));
    if (b < a) fail(flag, ": range '", part, "' is empty");
    for (int64_t i = a; i <= b; ++i) out.push_back(i);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  if (out.empty()) fail(flag, ": no ", noun, " given");
  return out;
}

std::vector<int> parse_layers(const std::string& spec, int64_t n_layer) {
  std::vector<int> out;
  if (spec.empty() || spec == "all") {
    for (int64_t l = 0; l < n_layer; ++l) out.push_back(static_cast<int>(l));
  } else {
    for (int64_t l : parse_index_list(spec, n_layer, "--layers", "layer")) out.push_back(static_cast<int>(l));
  }
  return out;
}

namespace {

// The source columns a panel needs: all of [0, p0 + pn) unless only a window is asked
// for (and no score needs whole rows, as ALTI's normalisation does).
int64_t first_source(int64_t p0, const EngineOptions& opt, bool whole_rows) {
  if (whole_rows || opt.plan.needs_every_source() || opt.plan.window <= 0) return 0;
  return std::max<int64_t>(0, p0 - opt.plan.window + 1);
}

// The target rows of panel [p0, p0 + pn) to compute, as [begin, end) runs.
std::vector<std::pair<int64_t, int64_t>> panel_rows(int64_t p0, int64_t pn, const MapPlan& plan) {
  if (plan.needs_every_row()) return {{p0, p0 + pn}};
  std::vector<std::pair<int64_t, int64_t>> runs;
  auto it = std::lower_bound(plan.rows.begin(), plan.rows.end(), p0);
  for (; it != plan.rows.end() && *it < p0 + pn; ++it) {
    if (!runs.empty() && runs.back().second == *it) runs.back().second++;
    else runs.push_back({*it, *it + 1});
  }
  return runs;
}

bool owns(const EngineOptions& opt, int64_t p) { return !opt.owns_panel || opt.owns_panel(p); }

}  // namespace

int64_t planned_tiles(int64_t T, const EngineOptions& opt) {
  const int64_t B = std::max<int64_t>(1, opt.panel);
  const bool whole = std::any_of(opt.scores.begin(), opt.scores.end(),
                                 [](Score s) { return s == Score::Alti || s == Score::AltiRollout; });
  int64_t tiles = 0;
  for (int64_t p0 = 0; p0 < T; p0 += B) {
    if (!owns(opt, p0 / B)) continue;
    const int64_t pn = std::min(B, T - p0);
    if (panel_rows(p0, pn, opt.plan).empty()) continue;
    tiles += (p0 + pn - first_source(p0, opt, whole) / B * B + B - 1) / B;
  }
  return tiles;
}

void compute_layer_maps(int layer, const LayerFactors& f, TileBackend& backend, const EngineOptions& opt,
                        MapSink& sink, std::vector<float>* rollout_prev) {
  const ModelConfig& c = *f.config;
  const MapPlan& plan = opt.plan;
  const int64_t T = f.trace->T, d = c.d_model, B = std::max<int64_t>(1, opt.panel);
  auto wants = [&](Score s) { return std::find(opt.scores.begin(), opt.scores.end(), s) != opt.scores.end(); };
  const bool rollout = wants(Score::AltiRollout) && rollout_prev != nullptr;
  if (plan.pool > 0 && B % plan.pool != 0) fail("--pool ", plan.pool, " must divide --tile ", B);
  ScoreSet which;
  which.l2 = wants(Score::L2);
  which.l1 = wants(Score::L1);
  which.alti = wants(Score::Alti) || rollout;
  which.hidden_attn = wants(Score::HiddenAttn);
  const bool whole_rows = which.alti;  // ALTI rows are normalised over every source

  std::vector<float> rollout_next;
  if (rollout) rollout_next.assign(static_cast<std::size_t>(T * T), 0.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::future<void> pending;  // the previous panel's outputs
  // Two sets of panel buffers, used in turn: the worker thread reads one while the next
  // panel fills the other. They are reserved for the largest panel, so that memory is
  // touched once per set rather than once per panel (first touch of fresh pages is slow on
  // some hosts, and the GPU idles meanwhile).
  struct PanelScores {
    std::vector<float> l2, l1, alti, hattn;
  };
  PanelScores sets[2];
  {
    int64_t most = 0;
    for (int64_t p0 = 0; p0 < T; p0 += B) {
      if (!owns(opt, p0 / B)) continue;
      const int64_t pn = std::min(B, T - p0);
      int64_t rows = 0;
      for (const auto& [ra, rb] : panel_rows(p0, pn, plan)) rows += rb - ra;
      most = std::max(most, rows * (p0 + pn));
    }
    for (PanelScores& ps : sets) {
      if (which.l2) ps.l2.reserve(most);
      if (which.l1) ps.l1.reserve(most);
      if (which.alti) ps.alti.reserve(most);
      if (which.hidden_attn) ps.hattn.reserve(most);
    }
  }
  int64_t npanels = 0;
  for (int64_t p0 = 0; p0 < T; p0 += B) {
    if (!owns(opt, p0 / B)) continue;
    if (opt.stop_requested && opt.stop_requested()) break;
    const int64_t pn = std::min(B, T - p0), ncols = p0 + pn;
    const auto runs = panel_rows(p0, pn, plan);
    if (runs.empty()) continue;
    const int64_t jlo = first_source(p0, opt, whole_rows) / B * B;
    // Buffers hold only the rows computed: slot[r] is panel row r's buffer row (or -1).
    std::vector<int64_t> slot(static_cast<std::size_t>(pn), -1);
    int64_t nbuf = 0;
    for (const auto& [ra, rb] : runs)
      for (int64_t i = ra; i < rb; ++i) slot[i - p0] = nbuf++;
    PanelScores& ps = sets[npanels++ % 2];  // free: the worker that read it (two panels ago) is done
    std::vector<float>&l2 = ps.l2, &l1 = ps.l1, &alti = ps.alti, &hattn = ps.hattn;
    auto alloc = [&](bool on, std::vector<float>& v) { if (on) v.assign(nbuf * ncols, nan); };
    alloc(which.l2, l2);
    alloc(which.l1, l1);
    alloc(which.alti, alti);
    alloc(which.hidden_attn, hattn);
    std::vector<double> contrib(nbuf * d, 0.0);
    std::vector<TileScores> where;
    for (const auto& [ra, rb] : runs)
      for (int64_t j0 = jlo; j0 < rb; j0 += B) {  // rb: the sources of the run's last row
        TileScores w;
        w.i0 = ra;
        w.ni = rb - ra;
        w.j0 = j0;
        w.nj = std::min(B, rb - j0);
        where.push_back(std::move(w));
      }
    backend.compute_tiles(f, which, where, [&](const TileScores& tile) {
      const int64_t s0 = slot[tile.i0 - p0], j0 = tile.j0;
      auto place = [&](const std::vector<float>& src, std::vector<float>& dst) {
        if (dst.empty()) return;
        for (int64_t r = 0; r < tile.ni; ++r)
          std::copy_n(src.data() + r * tile.nj, tile.nj, dst.data() + (s0 + r) * ncols + j0);
      };
      place(tile.l2, l2);
      place(tile.l1, l1);
      place(tile.alti, alti);
      place(tile.hidden_attn, hattn);
      for (int64_t k = 0; k < tile.ni * d; ++k) contrib[s0 * d + k] += tile.contrib_sum[k];
      if (opt.progress_line) {
        int64_t pairs = 0;
        for (int64_t i = tile.i0; i < tile.i0 + tile.ni; ++i)
          pairs += std::max<int64_t>(0, std::min(i + 1, j0 + tile.nj) - j0);
        opt.progress_line->add(1, pairs);
      }
    });
    // ALTI rows are normalised to sum to 1 over j <= i (spec §4).
    if (which.alti) {
      for (const auto& [ra, rb] : runs)
        for (int64_t i = ra; i < rb; ++i) {
          float* row = alti.data() + slot[i - p0] * ncols;
          double s = 0.0;
          for (int64_t j = 0; j <= i; ++j) s += row[j];
          if (s > 0)
            for (int64_t j = 0; j <= i; ++j) row[j] = static_cast<float>(row[j] / s);
        }
    }
    // Approximation error of the decomposition, per computed target row: ‖o_i − b − Σ_j T_i(x_j)‖ / ‖o_i − b‖.
    std::vector<float> eps(static_cast<std::size_t>(pn), nan);
    const auto& bout = f.weights->out_proj_b;
    for (const auto& [ra, rb] : runs) {
      std::vector<float> o(static_cast<std::size_t>((rb - ra) * d));
      f.read_o(ra, rb - ra, o.data());
      for (int64_t i = ra; i < rb; ++i) {
        const int64_t r = i - p0, s = slot[r];
        double ss = 0.0, norm = 0.0;
        for (int64_t k = 0; k < d; ++k) {
          const double target = static_cast<double>(o[(i - ra) * d + k]) - (bout.empty() ? 0.0 : bout[k]);
          const double diff = target - contrib[s * d + k];
          ss += diff * diff;
          norm += target * target;
        }
        eps[r] = norm > 0 ? static_cast<float>(std::sqrt(ss / norm)) : 0.0f;
      }
    }
    // The panel's host reductions and outputs run on a worker thread while the next panel's
    // tiles compute. One panel at a time, so the sink sees panels in order, each ending with
    // on_panel_done.
    if (pending.valid()) pending.get();
    pending = std::async(std::launch::async, [&, &l2 = ps.l2, &l1 = ps.l1, &alti = ps.alti, &hattn = ps.hattn, p0, pn,
                                              ncols, eps = std::move(eps), slot = std::move(slot)]() {
      std::vector<float> rollout_panel;
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
          rollout_panel.assign(pn * ncols, nan);
          for (int64_t r = 0; r < pn; ++r)
            std::copy_n(rollout_next.data() + (p0 + r) * T, p0 + r + 1, rollout_panel.data() + r * ncols);
        }
      }

      // Hand every requested score of the panel to the plan's outputs.
      auto emit = [&](Score s, const std::vector<float>& m) {
        if (plan.full) sink.on_panel(layer, s, p0, pn, ncols, m.data());
        if (!plan.rows.empty()) {
          auto lo = std::lower_bound(plan.rows.begin(), plan.rows.end(), p0);
          auto hi = std::lower_bound(plan.rows.begin(), plan.rows.end(), p0 + pn);
          if (lo != hi) {
            const int64_t n = hi - lo;
            std::vector<float> rows(static_cast<std::size_t>(n * T), nan);
            for (int64_t k = 0; k < n; ++k) std::copy_n(m.data() + slot[lo[k] - p0] * ncols, ncols, rows.data() + k * T);
            sink.on_rows(layer, s, lo - plan.rows.begin(), n, T, rows.data());
          }
        }
        if (plan.pool > 0) {
          const int64_t P = (T + plan.pool - 1) / plan.pool, b0 = p0 / plan.pool;
          const int64_t nb = (pn + plan.pool - 1) / plan.pool;
          std::vector<float> sum(static_cast<std::size_t>(nb * P), nan), mx(static_cast<std::size_t>(nb * P), nan);
#pragma omp parallel for schedule(dynamic)
          for (int64_t b = 0; b < nb; ++b)
            for (int64_t q = 0; q <= b0 + b; ++q) {
              double acc = 0.0;
              float best = -std::numeric_limits<float>::infinity();
              const int64_t r_end = std::min(pn, (b + 1) * plan.pool), j_end = std::min(ncols, (q + 1) * plan.pool);
              for (int64_t r = b * plan.pool; r < r_end; ++r)
                for (int64_t j = q * plan.pool; j < std::min(j_end, p0 + r + 1); ++j) {
                  const float v = m[r * ncols + j];
                  acc += v;
                  best = std::max(best, v);
                }
              sum[b * P + q] = static_cast<float>(acc);
              mx[b * P + q] = best;
            }
          sink.on_pool(layer, s, b0, nb, P, sum.data(), mx.data());
        }
        if (plan.topk > 0) {
          const int64_t K = plan.topk;
          std::vector<int64_t> idx(static_cast<std::size_t>(pn * K), -1);
          std::vector<float> val(static_cast<std::size_t>(pn * K), nan);
#pragma omp parallel for schedule(dynamic)
          for (int64_t r = 0; r < pn; ++r) {
            const int64_t i = p0 + r, n = std::min(K, i + 1);
            const float* row = m.data() + r * ncols;
            // Largest first; ties go to the nearer (larger) source index, deterministically.
            auto better = [row](int64_t a, int64_t b) { return row[a] > row[b] || (row[a] == row[b] && a > b); };
            // One pass over the row with the n best so far in a heap whose top is the worst of them.
            std::vector<int64_t> best;
            best.reserve(static_cast<std::size_t>(n));
            for (int64_t j = 0; j <= i; ++j) {
              if (static_cast<int64_t>(best.size()) < n) {
                best.push_back(j);
                std::push_heap(best.begin(), best.end(), better);
              } else if (better(j, best.front())) {
                std::pop_heap(best.begin(), best.end(), better);
                best.back() = j;
                std::push_heap(best.begin(), best.end(), better);
              }
            }
            std::sort(best.begin(), best.end(), better);
            for (int64_t k = 0; k < n; ++k) {
              idx[r * K + k] = best[k];
              val[r * K + k] = row[best[k]];
            }
          }
          sink.on_topk(layer, s, p0, pn, K, idx.data(), val.data());
        }
        if (plan.window > 0) {
          const int64_t W = plan.window;
          std::vector<float> win(static_cast<std::size_t>(pn * W), nan);
          for (int64_t r = 0; r < pn; ++r)
            for (int64_t w = 0; w < W && w <= p0 + r; ++w) win[r * W + w] = m[r * ncols + (p0 + r - w)];
          sink.on_window(layer, s, p0, pn, W, win.data());
        }
      };
      if (wants(Score::L2)) emit(Score::L2, l2);
      if (wants(Score::L1)) emit(Score::L1, l1);
      if (wants(Score::Alti)) emit(Score::Alti, alti);
      if (rollout && wants(Score::AltiRollout)) emit(Score::AltiRollout, rollout_panel);
      if (wants(Score::HiddenAttn)) emit(Score::HiddenAttn, hattn);
      if (plan.needs_every_row()) {
        sink.on_approx_error(layer, p0, pn, eps.data());
      }
      if (!plan.rows.empty()) {
        auto lo = std::lower_bound(plan.rows.begin(), plan.rows.end(), p0);
        auto hi = std::lower_bound(plan.rows.begin(), plan.rows.end(), p0 + pn);
        std::vector<float> e;
        for (auto it = lo; it != hi; ++it) e.push_back(eps[*it - p0]);
        if (!e.empty()) sink.on_rows_error(layer, lo - plan.rows.begin(), static_cast<int64_t>(e.size()), e.data());
      }
      sink.on_panel_done(layer, p0 / B);
    });
  }
  if (pending.valid()) pending.get();
  if (rollout) rollout_prev->swap(rollout_next);
}

}  // namespace latim
