// Model weights in fp32, loaded from a checkpoint after every tensor's presence, dtype and
// shape has been checked against the config.
#pragma once
#include <string>
#include <vector>

#include "latim/config.hpp"

namespace latim {

// One mixer layer. Matrices are row-major [out, in], as PyTorch stores nn.Linear weights.
struct LayerWeights {
  std::vector<float> norm;       // [d]      block RMSNorm scale
  std::vector<float> in_proj;    // [in_proj_rows, d]
  std::vector<float> in_proj_b;  // [in_proj_rows] or empty
  std::vector<float> conv_w;     // [conv_channels, K], tap K-1-s multiplies the token s steps back
  std::vector<float> conv_b;     // [conv_channels] or empty
  std::vector<float> A;          // -exp(A_log): [D, N] (Mamba-1) or [H] (Mamba-2)
  std::vector<float> D_skip;     // [D] (Mamba-1) or [H] (Mamba-2)
  std::vector<float> out_proj;   // [d, D]
  std::vector<float> out_proj_b; // [d] or empty
  // Mamba-1 only
  std::vector<float> x_proj;     // [R + 2N, D]
  std::vector<float> dt_proj;    // [D, R]
  std::vector<float> dt_proj_b;  // [D]
  // Mamba-2 only
  std::vector<float> dt_bias;    // [H]
  std::vector<float> gated_norm; // [D]
};

struct ModelWeights {
  ModelConfig config;
  std::vector<float> embedding;  // [vocab_rows, d]
  std::vector<float> norm_f;     // [d]
  std::vector<float> lm_head;    // [vocab_rows, d], empty when tied to the embedding
  std::vector<LayerWeights> layers;

  const std::vector<float>& output_matrix() const { return lm_head.empty() ? embedding : lm_head; }
};

// Loads DIR/config.json and the safetensors weights. Throws latim::Error naming the file,
// tensor and expected vs found shape/dtype on any mismatch.
ModelWeights load_model(const std::string& dir);

}  // namespace latim
