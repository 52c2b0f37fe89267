// config.json -> ModelConfig, for HF Mamba/Mamba-2 and mamba_ssm configs, with every field
// checked for presence, type and range.
#include <cmath>

#include "io/json.hpp"
#include "latim/config.hpp"
#include "latim/error.hpp"

namespace latim {

const char* to_string(Family f) { return f == Family::Mamba1 ? "mamba1" : "mamba2"; }
const char* to_string(Activation a) { return a == Activation::SiLU ? "silu" : "identity"; }

int64_t ModelConfig::conv_channels() const {
  return family == Family::Mamba1 ? d_inner : d_inner + 2 * n_groups * d_state;
}
int64_t ModelConfig::in_proj_rows() const {
  return family == Family::Mamba1 ? 2 * d_inner : 2 * d_inner + 2 * n_groups * d_state + n_heads;
}

namespace {

struct Reader {
  const Json& j;
  std::string origin;
  std::string prefix;  // "ssm_cfg." for nested fields

  bool has(const std::string& k) const { return j.contains(k) && !j.at(k).is_null(); }
  const Json& at(const std::string& k) const {
    if (!has(k)) fail(origin, ": missing config field '", prefix, k, "'");
    return j.at(k);
  }
  int64_t integer(const std::string& k) const { return json_int(at(k), prefix + k, origin); }
  int64_t integer(const std::string& k, int64_t dflt) const { return has(k) ? integer(k) : dflt; }
  double number(const std::string& k, double dflt) const {
    return has(k) ? json_number(at(k), prefix + k, origin) : dflt;
  }
  bool boolean(const std::string& k, bool dflt) const {
    return has(k) ? json_bool(at(k), prefix + k, origin) : dflt;
  }
  std::string string(const std::string& k, const std::string& dflt) const {
    if (!has(k)) return dflt;
    if (!at(k).is_string()) fail(origin, ": field '", prefix, k, "' must be a string");
    return at(k).get<std::string>();
  }
};

Activation parse_activation(const std::string& name, const std::string& field,
                            const std::string& origin) {
  if (name == "silu" || name == "swish") return Activation::SiLU;
  if (name == "identity" || name == "linear" || name == "none") return Activation::Identity;
  fail(origin, ": field '", field, "' = '", name, "' is not supported (use silu or identity)");
}

void parse_dt_limit(const Json& v, const std::string& field, const std::string& origin,
                    ModelConfig& c) {
  if (!v.is_array() || v.size() != 2)
    fail(origin, ": field '", field, "' must be a list of two numbers");
  c.dt_min = json_number(v[0], field + "[0]", origin);
  c.dt_max = json_number(v[1], field + "[1]", origin);
  if (std::isnan(c.dt_min) || std::isnan(c.dt_max) || c.dt_min > c.dt_max)
    fail(origin, ": field '", field, "' must be [min, max] with min <= max");
}

void parse_hf(const Reader& r, const std::string& model_type, ModelConfig& c) {
  c.source_format = "hf";
  c.family = model_type == "mamba" ? Family::Mamba1 : Family::Mamba2;
  c.d_model = r.integer("hidden_size");
  c.n_layer = r.integer("num_hidden_layers");
  c.vocab_size = r.integer("vocab_size");
  c.vocab_rows = c.vocab_size;  // HF stores the padded vocabulary as vocab_size
  c.d_state = r.integer("state_size");
  c.d_conv = r.integer("conv_kernel", 4);
  const int64_t expand = r.integer("expand", 2);
  c.use_bias = r.boolean("use_bias", false);
  c.use_conv_bias = r.boolean("use_conv_bias", true);
  c.residual_in_fp32 = r.boolean("residual_in_fp32", true);
  c.norm_eps = r.number("layer_norm_epsilon", 1e-5);
  c.gated_norm_eps = c.norm_eps;
  const std::string act = r.string("hidden_act", "silu");
  if (act != "silu") fail(r.origin, ": field 'hidden_act' = '", act, "' is not supported (silu)");
  c.activation = parse_activation(r.string("conv_activation", "silu"), "conv_activation", r.origin);
  if (c.family == Family::Mamba1) {
    c.tie_embeddings = r.boolean("tie_word_embeddings", true);
    c.d_inner = r.integer("intermediate_size", expand * c.d_model);
    if (r.has("time_step_rank") && r.at("time_step_rank").is_string()) {
      const auto s = r.at("time_step_rank").get<std::string>();
      if (s != "auto") fail(r.origin, ": field 'time_step_rank' must be an integer or \"auto\"");
      c.dt_rank = (c.d_model + 15) / 16;
    } else {
      c.dt_rank = r.integer("time_step_rank", (c.d_model + 15) / 16);
    }
  } else {
    c.tie_embeddings = r.boolean("tie_word_embeddings", false);
    c.d_inner = expand * c.d_model;
    c.n_heads = r.integer("num_heads");
    c.head_dim = r.integer("head_dim");
    c.n_groups = r.integer("n_groups", 1);
    c.norm_before_gate = r.boolean("norm_before_gate", false);
    if (!r.boolean("rms_norm", true))
      fail(r.origin, ": field 'rms_norm' = false (ungated norm) is not supported");
    if (r.has("time_step_limit")) parse_dt_limit(r.at("time_step_limit"), "time_step_limit", r.origin, c);
  }
}

void parse_mamba_ssm(const Reader& r, ModelConfig& c) {
  c.source_format = "mamba_ssm";
  c.d_model = r.integer("d_model");
  c.n_layer = r.integer("n_layer");
  c.vocab_size = r.integer("vocab_size");
  const int64_t pad = r.integer("pad_vocab_size_multiple", 8);
  if (pad <= 0) fail(r.origin, ": field 'pad_vocab_size_multiple' must be positive");
  c.vocab_rows = (c.vocab_size + pad - 1) / pad * pad;
  c.tie_embeddings = r.boolean("tie_embeddings", true);
  c.residual_in_fp32 = r.boolean("residual_in_fp32", true);
  c.norm_eps = r.number("norm_epsilon", 1e-5);
  c.gated_norm_eps = 1e-5;  // mamba_ssm's RMSNormGated default
  if (!r.boolean("rms_norm", true))
    fail(r.origin, ": field 'rms_norm' = false (LayerNorm blocks) is not supported");
  if (r.integer("d_intermediate", 0) != 0)
    fail(r.origin, ": field 'd_intermediate' != 0 (MLP blocks) is not supported");
  if (r.has("attn_layer_idx") && r.at("attn_layer_idx").is_array() && !r.at("attn_layer_idx").empty())
    fail(r.origin, ": field 'attn_layer_idx' is not empty (hybrid attention models are not supported)");

  static const Json kEmpty = Json::object();
  const Json& ssm = r.has("ssm_cfg") ? r.at("ssm_cfg") : kEmpty;
  if (!ssm.is_object()) fail(r.origin, ": field 'ssm_cfg' must be an object");
  Reader s{ssm, r.origin, "ssm_cfg."};
  const std::string layer = s.string("layer", "Mamba1");
  if (layer == "Mamba1") {
    c.family = Family::Mamba1;
  } else if (layer == "Mamba2") {
    c.family = Family::Mamba2;
  } else {
    fail(r.origin, ": field 'ssm_cfg.layer' = '", layer, "' is not supported (Mamba1 or Mamba2)");
  }
  c.activation = parse_activation(s.string("activation", "silu"), "ssm_cfg.activation", r.origin);
  if (r.has("conv_activation"))
    c.activation = parse_activation(r.string("conv_activation", "silu"), "conv_activation", r.origin);
  c.d_conv = s.integer("d_conv", 4);
  const int64_t expand = s.integer("expand", 2);
  c.d_inner = expand * c.d_model;
  c.use_bias = s.boolean("bias", false);
  c.use_conv_bias = s.boolean("conv_bias", true);
  if (c.family == Family::Mamba1) {
    c.d_state = s.integer("d_state", 16);
    if (s.has("dt_rank") && s.at("dt_rank").is_string()) {
      if (s.at("dt_rank").get<std::string>() != "auto")
        fail(r.origin, ": field 'ssm_cfg.dt_rank' must be an integer or \"auto\"");
      c.dt_rank = (c.d_model + 15) / 16;
    } else {
      c.dt_rank = s.integer("dt_rank", (c.d_model + 15) / 16);
    }
  } else {
    c.d_state = s.integer("d_state", 128);
    c.head_dim = s.integer("headdim", 64);
    c.n_groups = s.integer("ngroups", 1);
    c.norm_before_gate = s.boolean("norm_before_gate", false);
    if (!s.boolean("rmsnorm", true))
      fail(r.origin, ": field 'ssm_cfg.rmsnorm' = false is not supported");
    if (s.integer("d_ssm", c.d_inner) != c.d_inner)
      fail(r.origin, ": field 'ssm_cfg.d_ssm' != expand*d_model is not supported");
    if (s.boolean("D_has_hdim", false))
      fail(r.origin, ": field 'ssm_cfg.D_has_hdim' = true is not supported");
    if (c.head_dim <= 0 || c.d_inner % c.head_dim != 0)
      fail(r.origin, ": ssm_cfg.headdim = ", c.head_dim, " does not divide d_inner = ", c.d_inner);
    c.n_heads = c.d_inner / c.head_dim;
    if (s.has("dt_limit")) parse_dt_limit(s.at("dt_limit"), "ssm_cfg.dt_limit", r.origin, c);
  }
}

void validate(const ModelConfig& c, const std::string& origin) {
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0) fail(origin, ": ", name, " must be positive, found ", v);
  };
  positive(c.d_model, "d_model/hidden_size");
  positive(c.n_layer, "the number of layers");
  positive(c.vocab_size, "vocab_size");
  positive(c.d_inner, "d_inner");
  positive(c.d_state, "d_state/state_size");
  positive(c.d_conv, "d_conv/conv_kernel");
  if (c.family == Family::Mamba1) {
    positive(c.dt_rank, "time_step_rank");
  } else {
    positive(c.n_heads, "num_heads");
    positive(c.head_dim, "head_dim");
    positive(c.n_groups, "n_groups");
    if (c.n_heads * c.head_dim != c.d_inner)
      fail(origin, ": num_heads * head_dim = ", c.n_heads * c.head_dim,
           " does not equal expand * hidden_size = ", c.d_inner);
    if (c.n_heads % c.n_groups != 0)
      fail(origin, ": n_groups = ", c.n_groups, " does not divide num_heads = ", c.n_heads);
  }
  if (!(c.norm_eps > 0) || !(c.gated_norm_eps > 0)) fail(origin, ": layer_norm_epsilon must be positive");
  if (c.d_model > (int64_t{1} << 24) || c.d_inner > (int64_t{1} << 26))
    fail(origin, ": widths are implausibly large (d_model = ", c.d_model, ")");
}

}  // namespace

ModelConfig parse_model_config(const std::string& text, const std::string& origin) {
  const Json j = parse_json_lenient(text, origin);
  if (!j.is_object()) fail(origin, ": expected a JSON object at the top level");
  Reader r{j, origin, ""};
  ModelConfig c;
  const std::string model_type = r.string("model_type", "");
  if (model_type == "mamba" || model_type == "mamba2") {
    parse_hf(r, model_type, c);
  } else if (model_type.empty() && r.has("d_model")) {
    parse_mamba_ssm(r, c);
  } else if (model_type.empty()) {
    fail(origin, ": missing config field 'model_type' (or 'd_model' for mamba_ssm configs)");
  } else {
    fail(origin, ": model_type '", model_type, "' is not supported (mamba, mamba2)");
  }
  validate(c, origin);
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  return parse_model_config(read_text_file(path, "model config"), path);
}

std::string ModelConfig::to_json() const {
  Json j;
  j["family"] = to_string(family);
  j["source_format"] = source_format;
  j["d_model"] = d_model;
  j["n_layer"] = n_layer;
  j["vocab_size"] = vocab_size;
  j["vocab_rows"] = vocab_rows;
  j["d_inner"] = d_inner;
  j["d_state"] = d_state;
  j["d_conv"] = d_conv;
  if (family == Family::Mamba1) {
    j["dt_rank"] = dt_rank;
  } else {
    j["n_heads"] = n_heads;
    j["head_dim"] = head_dim;
    j["n_groups"] = n_groups;
    j["norm_before_gate"] = norm_before_gate;
    j["gated_norm_eps"] = gated_norm_eps;
    j["time_step_limit"] = {dt_min, std::isinf(dt_max) ? Json("Infinity") : Json(dt_max)};
  }
  j["use_bias"] = use_bias;
  j["use_conv_bias"] = use_conv_bias;
  j["residual_in_fp32"] = residual_in_fp32;
  j["tie_embeddings"] = tie_embeddings;
  j["norm_eps"] = norm_eps;
  j["activation"] = to_string(activation);
  return j.dump();
}

}  // namespace latim
