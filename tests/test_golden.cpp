// The CPU forward pass against Hugging Face transformers: logits and every layer's output
// for each fixture and T in {1, 7, 64, 300} (fixtures from tools/make_golden.py).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "latim/forward.hpp"
#include "latim/model.hpp"
#include "latim/safetensors.hpp"
#include "test_util.hpp"

namespace latim {
namespace {

constexpr double kTolerance = 1e-4;

const char* kFixtures[] = {"mamba1_f32",          "mamba1_bias_f16", "mamba1_ssm_padded", "mamba1_identity_f32",
                           "mamba2_f32",          "mamba2_bf16_sharded", "mamba2_g2_f32",   "mamba2_identity_f32"};
const int kLengths[] = {1, 7, 64, 300};

class RecordLayers : public LayerObserver {
 public:
  void on_layer(int layer, const LayerWeights&, const LayerTrace*, const std::vector<float>& residual) override {
    outputs.resize(layer + 1);
    outputs[layer] = residual;
  }
  std::vector<std::vector<float>> outputs;
};

struct GoldenCase {
  std::string fixture;
  int T;
};

class GoldenTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenTest, LogitsAndLayerOutputsMatchTransformers) {
  const auto& [fixture, T] = GetParam();
  const std::string dir = test::data_dir() + "/" + fixture;
  ASSERT_TRUE(std::filesystem::exists(dir + "/golden.safetensors")) << dir;
  const ModelWeights model = load_model(dir);
  SafetensorsFile golden(dir + "/golden.safetensors");
  const std::string suffix = "_T" + std::to_string(T);
  const std::vector<int64_t> tokens = to_int64(golden.at("tokens" + suffix));
  ASSERT_EQ(static_cast<int>(tokens.size()), T);

  RecordLayers rec;
  const ForwardOutput fwd = forward_cpu(model, tokens, &rec);
  const int64_t V = model.config.vocab_size, d = model.config.d_model;
  ASSERT_EQ(static_cast<int64_t>(rec.outputs.size()), model.config.n_layer);
  for (int64_t l = 0; l < model.config.n_layer; ++l) {
    const TensorView& ref = golden.at("hidden" + suffix + "_L" + std::to_string(l));
    ASSERT_EQ(ref.numel(), T * d) << "layer " << l;
    const std::vector<float> want = to_float32(ref);
    const double err = test::rel_error(rec.outputs[l].data(), want.data(), want.size());
    EXPECT_LE(err, kTolerance) << fixture << " T=" << T << ": output of layer " << l << " differs from HF";
  }
  std::vector<float> logits(T * V);
  compute_logits(model, fwd, 0, T, logits.data());
  const std::vector<float> want = to_float32(golden.at("logits" + suffix));
  ASSERT_EQ(want.size(), logits.size());
  EXPECT_LE(test::rel_error(logits.data(), want.data(), want.size()), kTolerance) << fixture << " T=" << T << ": logits";
}

std::vector<GoldenCase> all_cases() {
  std::vector<GoldenCase> out;
  for (const char* f : kFixtures)
    for (int T : kLengths) out.push_back({f, T});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GoldenTest, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<GoldenCase>& info) {
                           return info.param.fixture + "_T" + std::to_string(info.param.T);
                         });

}  // namespace
}  // namespace latim
