// The LaTIM engine (latim-method.md §3-4): per-layer factors, the tile computation and the
// panel driver that turns tiles into maps. Backends implement TileBackend; the driver,
// the scores' normalisation and the output are shared.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "latim/forward.hpp"
#include "latim/progress.hpp"

namespace latim {

enum class Score { L2, L1, Alti, AltiRollout, HiddenAttn };
const char* to_string(Score s);
// Parses "l2,l1,alti"; throws naming the unknown score.
std::vector<Score> parse_scores(const std::string& spec);
// Parses "5,9-12" into sorted, unique indices in [0, limit); errors name `flag` and the part.
std::vector<int64_t> parse_index_list(const std::string& spec, int64_t limit, const std::string& flag,
                                      const std::string& noun);
// Parses "0,5-7" (or "all") into sorted layer indices within [0, n_layer).
std::vector<int> parse_layers(const std::string& spec, int64_t n_layer);

// What one layer exposes to the engine: the forward trace plus the layer's weights.
struct LayerFactors {
  const ModelConfig* config = nullptr;
  const LayerWeights* weights = nullptr;
  const LayerTrace* trace = nullptr;
  // Host factors for the CPU tile engine (empty when the trace is device-resident):
  std::vector<float> Z;          // [T, D] SiLU(z) (Mamba-1) or gamma * SiLU(z) (Mamba-2)
  std::vector<double> yhat_l1;   // [T] ||r_i + o_i||_1 (ALTI)
  // Rows [i0, i0 + n) of the mixer output o into dst [n, d] (the approximation error).
  std::function<void(int64_t i0, int64_t n, float* dst)> read_o;
};
LayerFactors make_layer_factors(const ModelConfig& c, const LayerWeights& w, const LayerTrace& tr);

// Reductions of a tile's scores that a backend can compute where the scores are, so that only
// they leave it (the driver asks for them when the plan needs no whole rows: --pool, --topk,
// --window without --full, --rows or ALTI). Pairs with j > i take no part.
struct TileReduce {
  int64_t pool = 0;    // sums and maxima over pool x pool blocks (tile origins are multiples of pool)
  int64_t topk = 0;    // the K best sources of each row within the tile
  int64_t window = 0;  // the scores of sources i - w, w < W, that lie in the tile
  bool any() const { return pool > 0 || topk > 0 || window > 0; }
};

// One score's reductions of one tile.
struct TileReduced {
  // [ceil(ni / pool), ceil(nj / pool)]: the fp64-accumulated sum and the maximum of each
  // block's pairs j <= i; NaN for a block without such pairs.
  std::vector<float> pool_sum, pool_max;
  // [ni, K]: the row's best sources in the tile, in no particular order; "best" is the
  // larger score, then the larger source index. Rows with fewer than K sources in the tile
  // end in index -1 (value NaN).
  std::vector<int64_t> top_index;
  std::vector<float> top_value;
  // [ni, W]: column w holds source i - w where it lies in the tile; other entries are
  // unspecified.
  std::vector<float> window;
};

// Raw per-tile results, row-major [ni, nj]; entries with j > i are NaN.
struct TileScores {
  int64_t i0 = 0, j0 = 0, ni = 0, nj = 0;
  std::vector<float> l2, l1, alti, hidden_attn;  // only the requested ones are filled
  std::vector<double> contrib_sum;               // [ni, d] sum over the tile's j of T_i(x_j)
  // With a TileReduce: the reductions of l2, l1, alti, hidden_attn (in that order, the
  // requested ones filled) instead of the matrices above, which are then empty.
  TileReduced reduced[4];
  // The score matrix of a slot (ScoreSet::at's order: l2, l1, alti, hidden_attn).
  std::vector<float>& matrix(int slot) {
    std::vector<float>* m[4] = {&l2, &l1, &alti, &hidden_attn};
    return *m[slot];
  }
};
// Fills t.reduced from t's score matrices and empties the matrices (the host reduction,
// which backends that reduce on the device must match).
void reduce_tile(const TileReduce& r, TileScores& t);

struct ScoreSet {
  bool l2 = false, l1 = false, alti = false, hidden_attn = false;
  // Σ_j T_i(x_j) per row (TileScores::contrib_sum, for ε). false: contrib_sum is left empty.
  bool contrib = true;
  // By slot: 0 l2, 1 l1, 2 alti, 3 hidden_attn (the order of TileScores::reduced).
  bool at(int slot) const {
    const bool v[4] = {l2, l1, alti, hidden_attn};
    return v[slot];
  }
};

class TileBackend {
 public:
  virtual ~TileBackend() = default;
  virtual const char* name() const = 0;
  virtual void compute_tile(const LayerFactors& f, const ScoreSet& which, TileScores& out) = 0;
  // The tiles at `where` (only i0, ni, j0, nj are read), in order, handing each result to
  // `done` in that order; with reduce.any(), each as its reductions (TileScores::reduced).
  // A backend may compute a tile while `done` handles the one before it (the CUDA backend
  // does, and reduces on the device); this default computes them one after the other and
  // reduces on the host.
  virtual void compute_tiles(const LayerFactors& f, const ScoreSet& which, const TileReduce& reduce,
                             const std::vector<TileScores>& where,
                             const std::function<void(const TileScores&)>& done) {
    TileScores t;
    for (const TileScores& w : where) {
      t.i0 = w.i0;
      t.ni = w.ni;
      t.j0 = w.j0;
      t.nj = w.nj;
      compute_tile(f, which, t);
      if (reduce.any()) reduce_tile(reduce, t);
      done(t);
    }
  }
  // ε of every row (eps [T]) from the surrogate's whole-sequence sum, for plans whose tiles
  // skip sources (--window alone). false where the backend cannot (ε then stays NaN past the
  // band); this default computes it on the host from a host trace, the CUDA tile backend on
  // the device from a device trace.
  virtual bool approx_error_all_rows(const LayerFactors& f, std::vector<float>& eps);
  // Whether ε of every row costs less from approx_error_all_rows than from the tiles' sums
  // (the CUDA tile backend in bf16: the kernel's fp64 atomics cost more than one scan per
  // layer). The engine then takes ε from there and asks the tiles for no sums.
  virtual bool prefers_approx_error_all_rows(const LayerFactors&) const { return false; }
};
std::unique_ptr<TileBackend> make_cpu_tile_backend();

// The approximation error ε_i of every row without the tiles: W_out (Z_i ⊙ ỹ_i), ỹ being the
// layer's scan (frozen Δ, B, C) of the summed conv pieces x̃_l = Σ_j x_{l←j} plus the skip,
// against o_i − b_out; fp64 on the host. false for a device-resident trace.
bool surrogate_approx_error(const LayerFactors& f, std::vector<float>& eps);
// ε of one row: ‖o − b_out − sum‖ / ‖o − b_out‖ (0 when o = b_out), o and sum [d]; b_out may
// be empty.
float approx_error_of_row(const float* o, const std::vector<float>& b_out, const double* sum, int64_t d);

// What to compute from the maps in one pass over the tiles (latim run's query plans).
struct MapPlan {
  bool full = true;               // --full: the whole [T, T] map
  std::vector<int64_t> rows;      // --rows: selected target positions (sorted, unique)
  int64_t pool = 0;               // --pool B: [T/B, T/B] block sums and maxima
  int64_t topk = 0;               // --topk K: the K largest sources of every row
  int64_t window = 0;             // --window W: the W most recent sources of every row
  bool needs_every_row() const { return full || pool > 0 || topk > 0 || window > 0; }
  bool needs_every_source() const { return full || pool > 0 || topk > 0 || !rows.empty(); }
};

// Receives finished row panels of one layer. A panel covers target rows [i0, i0 + ni) and
// source columns [0, i0 + ni); each output of the plan arrives once per panel, then
// on_panel_done. Rows of `data` are ncols wide; entries with j > i are NaN.
class MapSink {
 public:
  virtual ~MapSink() = default;
  virtual void on_panel(int layer, Score score, int64_t i0, int64_t ni, int64_t ncols, const float* data) = 0;
  virtual void on_approx_error(int layer, int64_t i0, int64_t ni, const float* eps) = 0;
  // --rows: the selected rows of this panel; `first` = index of the first one in the row list.
  virtual void on_rows(int layer, Score score, int64_t first, int64_t n, int64_t T, const float* data) {}
  virtual void on_rows_error(int layer, int64_t first, int64_t n, const float* eps) {}
  // --pool: pooled rows [b0, b0 + nb) of the [P, P] block maps (P = ceil(T / B)).
  virtual void on_pool(int layer, Score score, int64_t b0, int64_t nb, int64_t P, const float* sum, const float* max) {}
  // --topk: [ni, K] source indices (-1 where a row has fewer sources) and scores.
  virtual void on_topk(int layer, Score score, int64_t i0, int64_t ni, int64_t K, const int64_t* index, const float* value) {}
  // --window: [ni, W], column w = source i - w.
  virtual void on_window(int layer, Score score, int64_t i0, int64_t ni, int64_t W, const float* data) {}
  virtual void on_panel_done(int layer, int64_t panel) {}
};

struct EngineOptions {
  std::vector<Score> scores{Score::L2};
  int64_t panel = 256;  // target rows per panel (the output chunk size)
  // Which panels (index = first row / panel) this rank computes; all when empty.
  std::function<bool(int64_t)> owns_panel;
  // Checked before each panel: true stops the layer early (a signal asked the run to stop).
  std::function<bool()> stop_requested;
  MapPlan plan;
  Progress* progress_line = nullptr;  // shared by every layer of the run (rank 0)

};

// Tiles one layer will compute on this rank under `opt` (for the progress line's ETA).
int64_t planned_tiles(int64_t T, const EngineOptions& opt);

// Computes the maps of one layer, panel by panel. `rollout_prev` carries alti-rollout
// between layers (dense lower-triangular [T, T]; empty before the first layer).
void compute_layer_maps(int layer, const LayerFactors& f, TileBackend& backend, const EngineOptions& opt,
                        MapSink& sink, std::vector<float>* rollout_prev);

}  // namespace latim
