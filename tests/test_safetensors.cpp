// safetensors parsing and dtype conversion, including malformed files.
#include <gtest/gtest.h>

#include <bit>
#include <cstring>

#include "latim/error.hpp"
#include "latim/safetensors.hpp"
#include "test_util.hpp"

namespace latim {
namespace {

test::RawTensor f32(std::vector<int64_t> shape, std::vector<float> v) {
  test::RawTensor t{"F32", shape, std::vector<char>(v.size() * 4)};
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

TEST(Safetensors, ConvertsHalfAndBfloat16) {
  test::TempDir tmp;
  // 1.0, -2.0, 0.5, a subnormal (2^-24) and inf in IEEE half; 1.0 and -3.5 in bf16.
  const uint16_t half[] = {0x3c00, 0xc000, 0x3800, 0x0001, 0x7c00};
  const uint16_t bf[] = {0x3f80, 0xc060};
  test::RawTensor h{"F16", {5}, std::vector<char>(10)};
  std::memcpy(h.bytes.data(), half, 10);
  test::RawTensor b{"BF16", {2}, std::vector<char>(4)};
  std::memcpy(b.bytes.data(), bf, 4);
  test::write_safetensors(tmp / "m.safetensors", {{"h", h}, {"b", b}, {"f", f32({2, 1}, {3.0f, 4.0f})}});
  SafetensorsFile f(tmp / "m.safetensors");
  const auto hv = to_float32(f.at("h"));
  EXPECT_EQ(hv[0], 1.0f);
  EXPECT_EQ(hv[1], -2.0f);
  EXPECT_EQ(hv[2], 0.5f);
  EXPECT_EQ(hv[3], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(hv[4]));
  const auto bv = to_float32(f.at("b"));
  EXPECT_EQ(bv[0], 1.0f);
  EXPECT_EQ(bv[1], -3.5f);
  EXPECT_EQ(f.at("f").shape_string(), "[2, 1]");
  EXPECT_EQ(to_float32(f.at("f"))[1], 4.0f);
}

std::string open_error(const std::string& path) {
  try {
    SafetensorsFile f(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, MalformedFilesAreNamed) {
  test::TempDir tmp;
  const auto good = f32({4}, {1, 2, 3, 4});
  test::write_safetensors(tmp / "trunc.safetensors", {{"w", good}});
  const auto full = std::filesystem::file_size(tmp / "trunc.safetensors");
  test::write_safetensors(tmp / "trunc.safetensors", {{"w", good}}, -1, full - 4);
  EXPECT_NE(open_error(tmp / "trunc.safetensors").find("outside the file"), std::string::npos);
  test::write_safetensors(tmp / "hdr.safetensors", {{"w", good}}, 1 << 30);
  EXPECT_NE(open_error(tmp / "hdr.safetensors").find("header length"), std::string::npos);
  test::write_text(tmp / "tiny.safetensors", "abc");
  EXPECT_NE(open_error(tmp / "tiny.safetensors").find("truncated"), std::string::npos);
  auto bad = good;
  bad.shape = {5};
  test::write_safetensors(tmp / "shape.safetensors", {{"w", bad}});
  EXPECT_NE(open_error(tmp / "shape.safetensors").find("'w'"), std::string::npos);
  auto odd = good;
  odd.dtype = "F8_E4M3";
  test::write_safetensors(tmp / "dtype.safetensors", {{"w", odd}});
  EXPECT_NE(open_error(tmp / "dtype.safetensors").find("F8_E4M3"), std::string::npos);
  EXPECT_NE(open_error(tmp / "missing.safetensors").find("missing.safetensors"), std::string::npos);
}

TEST(Safetensors, ShardedCheckpointIndexesAllShards) {
  Checkpoint ck(test::data_dir() + "/mamba2_bf16_sharded");
  EXPECT_NE(ck.find("backbone.embeddings.weight"), nullptr);
  EXPECT_NE(ck.find("backbone.norm_f.weight"), nullptr);
  EXPECT_EQ(ck.find("backbone.layers.0.mixer.A_log")->dtype, DType::BF16);
}

}  // namespace
}  // namespace latim
