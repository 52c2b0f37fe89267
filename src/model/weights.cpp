// Loads and checks every tensor of a Mamba / Mamba-2 checkpoint against its config.
#include <cmath>
#include <filesystem>

#include "latim/error.hpp"
#include "latim/model.hpp"
#include "latim/safetensors.hpp"

namespace latim {

namespace {

class TensorLoader {
 public:
  TensorLoader(const Checkpoint& ck) : ck_(ck) {}

  std::vector<float> get(const std::string& name, std::vector<int64_t> shape) const {
    const TensorView* t = ck_.find(name);
    if (!t) fail(ck_.dir(), ": missing tensor '", name, "' (expected shape ", shape_str(shape), ")");
    if (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16 && t->dtype != DType::F64)
      fail(t->file, ": tensor '", name, "' has dtype ", to_string(t->dtype), ", expected F32, F16 or BF16");
    if (t->shape != shape)
      fail(t->file, ": tensor '", name, "' has shape ", t->shape_string(), ", expected ", shape_str(shape),
           " from config.json");
    return to_float32(*t);
  }
  bool has(const std::string& name) const { return ck_.find(name) != nullptr; }

 private:
  static std::string shape_str(const std::vector<int64_t>& s) {
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
  }
  const Checkpoint& ck_;
};

void check_finite(const std::vector<float>& v, const std::string& name, const std::string& dir) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) fail(dir, ": tensor '", name, "' holds a non-finite value at flat index ", i);
}

}  // namespace

ModelWeights load_model(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) fail(dir, ": model directory not found");
  ModelWeights m;
  m.config = load_model_config((fs::path(dir) / "config.json").string());
  const ModelConfig& c = m.config;
  Checkpoint ck(dir);
  TensorLoader L(ck);

  const int64_t d = c.d_model, D = c.d_inner, N = c.d_state, K = c.d_conv;
  const std::string emb = c.source_format == "hf" ? "backbone.embeddings.weight" : "backbone.embedding.weight";
  m.embedding = L.get(emb, {c.vocab_rows, d});
  m.norm_f = L.get("backbone.norm_f.weight", {d});
  if (!c.tie_embeddings) m.lm_head = L.get("lm_head.weight", {c.vocab_rows, d});

  m.layers.resize(static_cast<std::size_t>(c.n_layer));
  for (int64_t l = 0; l < c.n_layer; ++l) {
    const std::string p = "backbone.layers." + std::to_string(l) + ".";
    const std::string q = p + "mixer.";
    LayerWeights& w = m.layers[l];
    w.norm = L.get(p + "norm.weight", {d});
    w.in_proj = L.get(q + "in_proj.weight", {c.in_proj_rows(), d});
    if (c.use_bias) w.in_proj_b = L.get(q + "in_proj.bias", {c.in_proj_rows()});
    w.conv_w = L.get(q + "conv1d.weight", {c.conv_channels(), 1, K});
    if (c.use_conv_bias) w.conv_b = L.get(q + "conv1d.bias", {c.conv_channels()});
    w.out_proj = L.get(q + "out_proj.weight", {d, D});
    if (c.use_bias) w.out_proj_b = L.get(q + "out_proj.bias", {d});
    std::vector<float> A_log;
    if (c.family == Family::Mamba1) {
      w.x_proj = L.get(q + "x_proj.weight", {c.x_proj_rows(), D});
      w.dt_proj = L.get(q + "dt_proj.weight", {D, c.dt_rank});
      w.dt_proj_b = L.get(q + "dt_proj.bias", {D});
      A_log = L.get(q + "A_log", {D, N});
      w.D_skip = L.get(q + "D", {D});
    } else {
      w.dt_bias = L.get(q + "dt_bias", {c.n_heads});
      A_log = L.get(q + "A_log", {c.n_heads});
      w.D_skip = L.get(q + "D", {c.n_heads});
      w.gated_norm = L.get(q + "norm.weight", {D});
    }
    check_finite(A_log, q + "A_log", dir);
    w.A.resize(A_log.size());
    for (std::size_t i = 0; i < A_log.size(); ++i) w.A[i] = -std::exp(A_log[i]);
  }
  return m;
}

}  // namespace latim
