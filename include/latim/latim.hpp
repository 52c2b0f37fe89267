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

namespace latim {

enum class Score { L2, L1, Alti, AltiRollout, HiddenAttn };
const char* to_string(Score s);
// Parses "l2,l1,alti"; throws naming the unknown score.
std::vector<Score> parse_scores(const std::string& spec);
// Parses "0,5-7" into sorted layer indices within [0, n_layer); throws naming the bad part.
std::vector<int> parse_layers(const std::string& spec, int64_t n_layer);

// What one layer exposes to the engine: the forward trace plus the layer's weights.
struct LayerFactors {
  const ModelConfig* config = nullptr;
  const LayerWeights* weights = nullptr;
  const LayerTrace* trace = nullptr;
  std::vector<float> Z;          // [T, D] SiLU(z) (Mamba-1) or gamma * SiLU(z) (Mamba-2)
  std::vector<double> yhat_l1;   // [T] ||r_i + o_i||_1 (ALTI)
  std::vector<double> o_norm;    // [T] ||o_i - b_out||_2 (approximation error)
};
LayerFactors make_layer_factors(const ModelConfig& c, const LayerWeights& w, const LayerTrace& tr);

// Raw per-tile results, row-major [ni, nj]; entries with j > i are NaN.
struct TileScores {
  int64_t i0 = 0, j0 = 0, ni = 0, nj = 0;
  std::vector<float> l2, l1, alti, hidden_attn;  // only the requested ones are filled
  std::vector<double> contrib_sum;               // [ni, d] sum over the tile's j of T_i(x_j)
};

struct ScoreSet {
  bool l2 = false, l1 = false, alti = false, hidden_attn = false;
};

class TileBackend {
 public:
  virtual ~TileBackend() = default;
  virtual const char* name() const = 0;
  virtual void compute_tile(const LayerFactors& f, const ScoreSet& which, TileScores& out) = 0;
};
std::unique_ptr<TileBackend> make_cpu_tile_backend();

// Receives finished row panels: rows [i0, i0 + ni) of every requested map of one layer,
// as row-major [ni, i0 + ni] blocks (columns 0 .. i0 + ni - 1), plus the panel's errors.
class MapSink {
 public:
  virtual ~MapSink() = default;
  virtual void on_panel(int layer, Score score, int64_t i0, int64_t ni, int64_t ncols, const float* data) = 0;
  virtual void on_approx_error(int layer, int64_t i0, int64_t ni, const float* eps) = 0;
};

struct EngineOptions {
  std::vector<Score> scores{Score::L2};
  int64_t panel = 256;  // target rows per panel (the output chunk size)
  bool progress = false;
  // Which panels (index = first row / panel) this rank computes; all when empty.
  std::function<bool(int64_t)> owns_panel;
  // Checked before each panel: true stops the layer early (a signal asked the run to stop).
  std::function<bool()> stop_requested;
};

// Computes the maps of one layer, panel by panel. `rollout_prev` carries alti-rollout
// between layers (dense lower-triangular [T, T]; empty before the first layer).
void compute_layer_maps(int layer, const LayerFactors& f, TileBackend& backend, const EngineOptions& opt,
                        MapSink& sink, std::vector<float>* rollout_prev);

}  // namespace latim
