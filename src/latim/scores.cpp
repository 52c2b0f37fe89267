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

// The order of --topk: the larger score first; ties go to the nearer (larger) source index,
// so that the result does not depend on how a row was split into tiles.
inline bool better(float va, int64_t a, float vb, int64_t b) { return va > vb || (va == vb && a > b); }

// The fp64 sum and the maximum of m's rows [ra, rb) x columns [ca, cb) (row stride ld), row r
// taking columns below cols(r) only; false when no entry qualifies.
template <class Cols>
bool pool_block(const float* m, int64_t ld, int64_t ra, int64_t rb, int64_t ca, int64_t cb, Cols cols, float& sum,
                float& mx) {
  double acc = 0.0;
  float best = -std::numeric_limits<float>::infinity();
  bool any = false;
  for (int64_t r = ra; r < rb; ++r)
    for (int64_t c = ca; c < std::min(cb, cols(r)); ++c) {
      const float v = m[r * ld + c];
      acc += v;
      best = std::max(best, v);
      any = true;
    }
  if (any) {
    sum = static_cast<float>(acc);
    mx = best;
  }
  return any;
}

// The n best entries of row[0, len) under better(), best first, as indices j0 + c and values.
void row_topk(const float* row, int64_t len, int64_t n, int64_t j0, int64_t* idx, float* val) {
  auto cmp = [row](int64_t a, int64_t b) { return better(row[a], a, row[b], b); };
  // One pass with the n best so far in a heap whose top is the worst of them.
  std::vector<int64_t> best;
  best.reserve(static_cast<std::size_t>(n));
  for (int64_t c = 0; c < len; ++c) {
    if (static_cast<int64_t>(best.size()) < n) {
      best.push_back(c);
      std::push_heap(best.begin(), best.end(), cmp);
    } else if (cmp(c, best.front())) {
      std::pop_heap(best.begin(), best.end(), cmp);
      best.back() = c;
      std::push_heap(best.begin(), best.end(), cmp);
    }
  }
  std::sort(best.begin(), best.end(), cmp);
  for (std::size_t k = 0; k < best.size(); ++k) {
    idx[k] = j0 + best[k];
    val[k] = row[best[k]];
  }
}

int score_slot(Score s) {
  switch (s) {
    case Score::L2: return 0;
    case Score::L1: return 1;
    case Score::Alti: return 2;
    case Score::HiddenAttn: return 3;
    case Score::AltiRollout: break;
  }
  return -1;
}

}  // namespace

void reduce_tile(const TileReduce& red, TileScores& t) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const int64_t ni = t.ni, nj = t.nj;
  // Sources of row r in the tile: columns [0, nvalid(r)).
  auto nvalid = [&](int64_t r) { return std::clamp<int64_t>(t.i0 + r - t.j0 + 1, 0, nj); };
  for (int s = 0; s < 4; ++s) {
    std::vector<float>& m = t.matrix(s);
    TileReduced& out = t.reduced[s];
    out.pool_sum.clear();
    out.pool_max.clear();
    out.top_index.clear();
    out.top_value.clear();
    out.window.clear();
    if (m.empty()) continue;
    if (red.pool > 0) {
      const int64_t P = red.pool, nb = (ni + P - 1) / P, nq = (nj + P - 1) / P;
      out.pool_sum.assign(nb * nq, nan);
      out.pool_max.assign(nb * nq, nan);
#pragma omp parallel for schedule(dynamic)
      for (int64_t b = 0; b < nb; ++b)
        for (int64_t q = 0; q < nq; ++q)
          pool_block(m.data(), nj, b * P, std::min(ni, (b + 1) * P), q * P, std::min(nj, (q + 1) * P), nvalid,
                     out.pool_sum[b * nq + q], out.pool_max[b * nq + q]);
    }
    if (red.topk > 0) {
      const int64_t K = red.topk;
      out.top_index.assign(ni * K, -1);
      out.top_value.assign(ni * K, nan);
#pragma omp parallel for schedule(dynamic)
      for (int64_t r = 0; r < ni; ++r)
        row_topk(m.data() + r * nj, nvalid(r), std::min(K, nvalid(r)), t.j0, out.top_index.data() + r * K,
                 out.top_value.data() + r * K);
    }
    if (red.window > 0) {
      const int64_t W = red.window;
      out.window.assign(ni * W, nan);
      for (int64_t r = 0; r < ni; ++r)
        for (int64_t w = 0; w < W; ++w) {
          const int64_t c = t.i0 + r - w - t.j0;
          if (c >= 0 && c < nvalid(r)) out.window[r * W + w] = m[r * nj + c];
        }
    }
    m.clear();
  }
}

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

float approx_error_of_row(const float* o, const std::vector<float>& b_out, const double* sum, int64_t d) {
  double ss = 0.0, norm = 0.0;
  for (int64_t k = 0; k < d; ++k) {
    const double target = static_cast<double>(o[k]) - (b_out.empty() ? 0.0 : b_out[k]);
    const double diff = target - sum[k];
    ss += diff * diff;
    norm += target * target;
  }
  return norm > 0 ? static_cast<float>(std::sqrt(ss / norm)) : 0.0f;
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
  // A plan of reductions only (no whole rows wanted anywhere): the backend reduces each tile
  // where it computed it, and the panel keeps only the reductions.
  TileReduce reduce;
  if (!plan.full && plan.rows.empty() && !whole_rows) {
    reduce.pool = plan.pool;
    reduce.topk = plan.topk;
    reduce.window = plan.window;
  }
  const bool reduced = reduce.any();
  const int64_t P = plan.pool > 0 ? (T + plan.pool - 1) / plan.pool : 0;  // pooled map side

  std::vector<float> rollout_next;
  if (rollout) rollout_next.assign(static_cast<std::size_t>(T * T), 0.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::future<void> pending;  // the previous panel's outputs
  // Two sets of panel buffers, used in turn: the worker thread reads one while the next
  // panel fills the other. They are reserved for the largest panel, so that memory is
  // touched once per set rather than once per panel (first touch of fresh pages is slow on
  // some hosts, and the GPU idles meanwhile).
  struct PanelReduced {  // one score's reductions of a panel, filled tile by tile
    std::vector<float> sum, mx;         // [nb, P] pooled rows
    std::vector<float> top_value;       // [pn, K], best first (merged as tiles arrive)
    std::vector<int64_t> top_index;
    std::vector<float> window;          // [pn, W]
  };
  struct PanelScores {
    std::vector<float> l2, l1, alti, hattn;
    PanelReduced red[4];  // by score_slot(); with `reduced` instead of the matrices
  };
  PanelScores sets[2];
  if (!reduced) {
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
  std::vector<float> eps_all;  // ε of every row without the tiles (plans that skip sources)
  int eps_all_state = 0;       // 0: not asked yet, 1: made, -1: the backend cannot
  // Where the backend prefers it, ε of every row comes from approx_error_all_rows and the
  // tiles skip their Σ_j T_i(x_j) sums.
  if (backend.prefers_approx_error_all_rows(f)) eps_all_state = backend.approx_error_all_rows(f, eps_all) ? 1 : -1;
  ScoreSet tile_which = which;
  tile_which.contrib = eps_all_state <= 0;
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
    if (!reduced) {
      alloc(which.l2, l2);
      alloc(which.l1, l1);
      alloc(which.alti, alti);
      alloc(which.hidden_attn, hattn);
    } else {
      for (int k = 0; k < 4; ++k) {
        PanelReduced& pr = ps.red[k];
        const int64_t nb = plan.pool > 0 ? (pn + plan.pool - 1) / plan.pool : 0;
        pr.sum.assign(which.at(k) ? nb * P : 0, nan);
        pr.mx.assign(which.at(k) ? nb * P : 0, nan);
        pr.top_value.assign(which.at(k) ? pn * plan.topk : 0, nan);
        pr.top_index.assign(which.at(k) ? pn * plan.topk : 0, -1);
        pr.window.assign(which.at(k) ? pn * plan.window : 0, nan);
      }
    }
    std::vector<double> contrib(tile_which.contrib ? nbuf * d : 0, 0.0);
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
    // A tile's reductions into the panel's: pooled blocks lie in one tile each; a row's top-k
    // is merged with the tile's candidates; the window takes the sources in the tile.
    auto merge = [&](const TileScores& tile) {
      const int64_t r0 = tile.i0 - p0;
      for (int k = 0; k < 4; ++k) {
        if (!which.at(k)) continue;
        const TileReduced& tr = tile.reduced[k];
        PanelReduced& pr = ps.red[k];
        if (plan.pool > 0) {
          const int64_t pb = plan.pool, nb = (tile.ni + pb - 1) / pb, nq = (tile.nj + pb - 1) / pb;
          for (int64_t b = 0; b < nb; ++b)
            for (int64_t q = 0; q < nq; ++q) {
              const int64_t at = (r0 / pb + b) * P + tile.j0 / pb + q;
              pr.sum[at] = tr.pool_sum[b * nq + q];
              pr.mx[at] = tr.pool_max[b * nq + q];
            }
        }
        if (plan.topk > 0) {
          const int64_t K = plan.topk;
#pragma omp parallel if (tile.ni >= 256)
          {
            std::vector<std::pair<float, int64_t>> c;  // one candidate list per thread, reused
            c.reserve(static_cast<std::size_t>(2 * K));
#pragma omp for schedule(static)
            for (int64_t r = 0; r < tile.ni; ++r) {
              float* bv = pr.top_value.data() + (r0 + r) * K;
              int64_t* bi = pr.top_index.data() + (r0 + r) * K;
              const float* tv = tr.top_value.data() + r * K;
              const int64_t* ti = tr.top_index.data() + r * K;
              // Both lists' valid entries, the best K of them, best first.
              c.clear();
              for (int64_t k2 = 0; k2 < K; ++k2) {
                if (bi[k2] >= 0) c.push_back({bv[k2], bi[k2]});
                if (ti[k2] >= 0) c.push_back({tv[k2], ti[k2]});
              }
              const auto by = [](const auto& a, const auto& b) { return better(a.first, a.second, b.first, b.second); };
              const std::size_t keep = std::min<std::size_t>(c.size(), static_cast<std::size_t>(K));
              std::partial_sort(c.begin(), c.begin() + keep, c.end(), by);
              for (std::size_t k2 = 0; k2 < keep; ++k2) {
                bv[k2] = c[k2].first;
                bi[k2] = c[k2].second;
              }
            }
          }
        }
        if (plan.window > 0) {
          const int64_t W = plan.window;
          for (int64_t r = 0; r < tile.ni; ++r)
            for (int64_t w = 0; w < W; ++w) {
              const int64_t j = tile.i0 + r - w;
              if (j >= tile.j0 && j < tile.j0 + tile.nj)
                pr.window[(r0 + r) * W + w] = tr.window[r * W + w];
            }
        }
      }
    };
    backend.compute_tiles(f, tile_which, reduce, where, [&](const TileScores& tile) {
      const int64_t s0 = slot[tile.i0 - p0], j0 = tile.j0;
      auto place = [&](const std::vector<float>& src, std::vector<float>& dst) {
        if (dst.empty()) return;
        for (int64_t r = 0; r < tile.ni; ++r)
          std::copy_n(src.data() + r * tile.nj, tile.nj, dst.data() + (s0 + r) * ncols + j0);
      };
      if (reduced) {
        merge(tile);
      } else {
        place(tile.l2, l2);
        place(tile.l1, l1);
        place(tile.alti, alti);
        place(tile.hidden_attn, hattn);
      }
      if (tile_which.contrib)
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
    // It needs every source's T_i(x_j): where the panel's tiles start after source 0 (a plan of
    // only --window skips the sources before the band), it comes from the surrogate's
    // whole-sequence sum (once per layer), or stays NaN where the backend cannot make it.
    std::vector<float> eps(static_cast<std::size_t>(pn), nan);
    const auto& bout = f.weights->out_proj_b;
    if (jlo > 0 || !tile_which.contrib) {
      if (eps_all_state == 0) eps_all_state = backend.approx_error_all_rows(f, eps_all) ? 1 : -1;
      if (eps_all_state > 0)
        for (const auto& [ra, rb] : runs)
          for (int64_t i = ra; i < rb; ++i) eps[i - p0] = eps_all[i];
    }
    if (jlo == 0 && tile_which.contrib)
      for (const auto& [ra, rb] : runs) {
        std::vector<float> o(static_cast<std::size_t>((rb - ra) * d));
        f.read_o(ra, rb - ra, o.data());
        for (int64_t i = ra; i < rb; ++i)
          eps[i - p0] = approx_error_of_row(o.data() + (i - ra) * d, bout, contrib.data() + slot[i - p0] * d, d);
      }
    // The panel's host reductions and outputs run on a worker thread while the next panel's
    // tiles compute. One panel at a time, so the sink sees panels in order, each ending with
    // on_panel_done.
    if (pending.valid()) pending.get();
    pending = std::async(std::launch::async, [&, &l2 = ps.l2, &l1 = ps.l1, &alti = ps.alti, &hattn = ps.hattn,
                                              &red = ps.red, p0, pn, ncols, eps = std::move(eps),
                                              slot = std::move(slot)]() {
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
          const int64_t b0 = p0 / plan.pool;
          const int64_t nb = (pn + plan.pool - 1) / plan.pool;
          std::vector<float> sum(static_cast<std::size_t>(nb * P), nan), mx(static_cast<std::size_t>(nb * P), nan);
#pragma omp parallel for schedule(dynamic)
          for (int64_t b = 0; b < nb; ++b)
            for (int64_t q = 0; q <= b0 + b; ++q)
              pool_block(m.data(), ncols, b * plan.pool, std::min(pn, (b + 1) * plan.pool), q * plan.pool,
                         std::min(ncols, (q + 1) * plan.pool), [p0](int64_t r) { return p0 + r + 1; }, sum[b * P + q],
                         mx[b * P + q]);
          sink.on_pool(layer, s, b0, nb, P, sum.data(), mx.data());
        }
        if (plan.topk > 0) {
          const int64_t K = plan.topk;
          std::vector<int64_t> idx(static_cast<std::size_t>(pn * K), -1);
          std::vector<float> val(static_cast<std::size_t>(pn * K), nan);
#pragma omp parallel for schedule(dynamic)
          for (int64_t r = 0; r < pn; ++r)
            row_topk(m.data() + r * ncols, p0 + r + 1, std::min(K, p0 + r + 1), 0, idx.data() + r * K,
                     val.data() + r * K);
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
      // The same outputs from the reductions of the panel's tiles.
      auto emit_reduced = [&](Score s) {
        const PanelReduced& pr = red[score_slot(s)];
        if (plan.pool > 0) sink.on_pool(layer, s, p0 / plan.pool, (pn + plan.pool - 1) / plan.pool, P, pr.sum.data(),
                                        pr.mx.data());
        if (plan.topk > 0) sink.on_topk(layer, s, p0, pn, plan.topk, pr.top_index.data(), pr.top_value.data());
        if (plan.window > 0) sink.on_window(layer, s, p0, pn, plan.window, pr.window.data());
      };
      if (reduced) {
        for (Score s : {Score::L2, Score::L1, Score::HiddenAttn})
          if (wants(s)) emit_reduced(s);
      } else {
        if (wants(Score::L2)) emit(Score::L2, l2);
        if (wants(Score::L1)) emit(Score::L1, l1);
        if (wants(Score::Alti)) emit(Score::Alti, alti);
        if (rollout && wants(Score::AltiRollout)) emit(Score::AltiRollout, rollout_panel);
        if (wants(Score::HiddenAttn)) emit(Score::HiddenAttn, hattn);
      }
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
