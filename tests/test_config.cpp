// config.json parsing: both families, both styles, non-finite numbers, and clear errors.
#include <gtest/gtest.h>

#include <cmath>

#include "latim/config.hpp"
#include "latim/error.hpp"

namespace latim {
namespace {

std::string error_of(const std::string& json) {
  try {
    parse_model_config(json, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, HuggingFaceMamba1AutoRank) {
  const auto c = parse_model_config(
      R"({"model_type":"mamba","hidden_size":768,"num_hidden_layers":24,"vocab_size":50280,
          "state_size":16,"time_step_rank":"auto","expand":2})", "cfg");
  EXPECT_EQ(c.family, Family::Mamba1);
  EXPECT_EQ(c.dt_rank, 48);
  EXPECT_EQ(c.d_inner, 1536);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.activation, Activation::SiLU);
}

TEST(Config, HuggingFaceMamba2WithBareInfinity) {
  const auto c = parse_model_config(
      R"({"model_type":"mamba2","hidden_size":768,"num_hidden_layers":24,"vocab_size":50288,
          "state_size":128,"num_heads":24,"head_dim":64,"expand":2,"n_groups":1,
          "time_step_limit":[0.0, Infinity],"tie_word_embeddings":true})", "cfg");
  EXPECT_EQ(c.family, Family::Mamba2);
  EXPECT_TRUE(std::isinf(c.dt_max));
  EXPECT_EQ(c.dt_min, 0.0);
}

TEST(Config, TaggedInfinityFromTransformers5) {
  const auto c = parse_model_config(
      R"({"model_type":"mamba2","hidden_size":32,"num_hidden_layers":2,"vocab_size":64,"state_size":8,
          "num_heads":4,"head_dim":16,"time_step_limit":[0.0, {"__float__":"Infinity"}]})", "cfg");
  EXPECT_TRUE(std::isinf(c.dt_max));
}

TEST(Config, InfinityInsideStringsIsLeftAlone) {
  const auto c = parse_model_config(
      R"({"model_type":"mamba","hidden_size":32,"num_hidden_layers":2,"vocab_size":64,"state_size":8,
          "note":"Infinity and NaN"})", "cfg");
  EXPECT_EQ(c.d_model, 32);
}

TEST(Config, MambaSsmStylePadsVocabulary) {
  const auto c = parse_model_config(
      R"({"d_model":768,"n_layer":24,"vocab_size":50277,"ssm_cfg":{"layer":"Mamba2"},
          "pad_vocab_size_multiple":16,"tie_embeddings":true})", "cfg");
  EXPECT_EQ(c.family, Family::Mamba2);
  EXPECT_EQ(c.vocab_size, 50277);
  EXPECT_EQ(c.vocab_rows, 50288);
  EXPECT_EQ(c.d_state, 128);
  EXPECT_EQ(c.n_heads, 24);
  EXPECT_EQ(c.source_format, "mamba_ssm");
}

TEST(Config, IdentityActivationBothSpellings) {
  auto a = parse_model_config(R"({"d_model":32,"n_layer":1,"vocab_size":10,"ssm_cfg":{"activation":"identity"}})", "c");
  EXPECT_EQ(a.activation, Activation::Identity);
  auto b = parse_model_config(
      R"({"model_type":"mamba","hidden_size":32,"num_hidden_layers":1,"vocab_size":10,"state_size":4,
          "conv_activation":"identity"})", "c");
  EXPECT_EQ(b.activation, Activation::Identity);
}

TEST(Config, Errors) {
  EXPECT_NE(error_of("{").find("invalid JSON"), std::string::npos);
  EXPECT_NE(error_of("[1,2]").find("JSON object"), std::string::npos);
  EXPECT_NE(error_of(R"({"model_type":"mamba","hidden_size":32})").find("num_hidden_layers"), std::string::npos);
  EXPECT_NE(error_of(R"({"model_type":"llama"})").find("llama"), std::string::npos);
  EXPECT_NE(error_of(R"({"model_type":"mamba","hidden_size":"big","num_hidden_layers":1,"vocab_size":3,"state_size":4})")
                .find("hidden_size"), std::string::npos);
  EXPECT_NE(error_of(R"({"model_type":"mamba2","hidden_size":32,"num_hidden_layers":1,"vocab_size":3,"state_size":4,
                        "num_heads":3,"head_dim":16})").find("num_heads"), std::string::npos);
  EXPECT_NE(error_of(R"({"d_model":32,"n_layer":1,"vocab_size":10,"ssm_cfg":{"activation":"gelu"}})").find("gelu"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"d_model":32,"n_layer":1,"vocab_size":10,"d_intermediate":64})").find("d_intermediate"),
            std::string::npos);
}

}  // namespace
}  // namespace latim
