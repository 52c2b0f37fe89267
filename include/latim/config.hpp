// Model configuration, normalised from Hugging Face (MambaForCausalLM, Mamba2ForCausalLM)
// or mamba_ssm config.json files into one struct with every switch the forward pass honours.
#pragma once
#include <cstdint>
#include <limits>
#include <string>

namespace latim {

enum class Family { Mamba1, Mamba2 };
enum class Activation { SiLU, Identity };

const char* to_string(Family f);
const char* to_string(Activation a);

struct ModelConfig {
  Family family = Family::Mamba1;
  std::string source_format;  // "hf" or "mamba_ssm": decides the tensor names
  int64_t d_model = 0;        // d
  int64_t n_layer = 0;
  int64_t vocab_size = 0;     // logit columns and the valid token id range
  int64_t vocab_rows = 0;     // rows of the embedding (>= vocab_size with padding)
  int64_t d_inner = 0;        // D = expand * d
  int64_t d_state = 0;        // N
  int64_t d_conv = 0;         // K
  int64_t dt_rank = 0;        // R (Mamba-1)
  int64_t n_heads = 0;        // H (Mamba-2)
  int64_t head_dim = 0;       // P (Mamba-2)
  int64_t n_groups = 1;       // G (Mamba-2)
  bool use_bias = false;      // in_proj / out_proj bias
  bool use_conv_bias = true;
  bool residual_in_fp32 = true;
  bool tie_embeddings = true;
  bool norm_before_gate = false;  // Mamba-2 gated norm: normalise y, then gate
  double norm_eps = 1e-5;         // block and final RMSNorm
  double gated_norm_eps = 1e-5;   // Mamba-2 gated RMSNorm
  double dt_min = 0.0;            // Mamba-2 time_step_limit
  double dt_max = std::numeric_limits<double>::infinity();
  Activation activation = Activation::SiLU;  // after the conv

  // Widths derived from the above.
  int64_t conv_channels() const;  // D (Mamba-1) or D + 2GN (Mamba-2)
  int64_t in_proj_rows() const;   // 2D (Mamba-1) or 2D + 2GN + H (Mamba-2)
  int64_t x_proj_rows() const { return dt_rank + 2 * d_state; }

  // The normalised configuration as a JSON string (stored in output files).
  std::string to_json() const;
};

// Reads and validates a config.json. Errors name the file and the field.
ModelConfig load_model_config(const std::string& path);
// Same, from text already in memory (`origin` names it in errors).
ModelConfig parse_model_config(const std::string& json_text, const std::string& origin);

}  // namespace latim
