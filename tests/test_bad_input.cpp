// Bad input: every case gets a one-line error naming what is wrong, a non-zero exit code,
// and no output file left behind.
#include <gtest/gtest.h>
#include <sched.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "latim/safetensors.hpp"
#include "test_util.hpp"

namespace latim {
namespace {

namespace fs = std::filesystem;

// A writable copy of the mamba1_f32 fixture whose tensors the test can edit.
class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = test::data_dir() + "/mamba1_f32";
    model_ = tmp_ / "model";
    fs::create_directories(model_);
    fs::copy_file(src_ + "/config.json", model_ + "/config.json");
    fs::copy_file(src_ + "/tokens.txt", tokens_);
    SafetensorsFile f(src_ + "/model.safetensors");
    for (const auto& [name, t] : f.tensors()) {
      test::RawTensor r{to_string(t.dtype), t.shape,
                        std::vector<char>(reinterpret_cast<const char*>(t.data),
                                          reinterpret_cast<const char*>(t.data) + t.nbytes)};
      tensors_[name] = r;
    }
    save();
  }
  void save(int64_t header_len = -1, std::size_t truncate = 0) {
    test::write_safetensors(model_ + "/model.safetensors", tensors_, header_len, truncate);
  }
  std::string args(const std::string& extra = "") const {
    return "run --model " + model_ + " --tokens " + tokens_ + " --out " + out_ + " --quiet " + extra;
  }
  // Runs latim, expects failure with a single-line message containing every `needle`.
  void expect_failure(const std::string& a, std::initializer_list<std::string> needles) {
    const test::RunResult r = test::run_latim(a);
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_LT(r.exit_code, 128) << "crashed: " << r.output;
    std::string msg = r.output;
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "expected one line, got:\n" << r.output;
    for (const auto& n : needles) EXPECT_NE(r.output.find(n), std::string::npos) << "missing '" << n << "' in: " << r.output;
    EXPECT_FALSE(fs::exists(out_)) << "a failed run left " << out_;
  }

  test::TempDir tmp_;
  std::string src_, model_;
  std::string tokens_ = tmp_ / "tokens.txt";
  std::string out_ = tmp_ / "out.h5";
  std::map<std::string, test::RawTensor> tensors_;
};

TEST_F(BadInput, ValidCopyRuns) {
  const test::RunResult r = test::run_latim(args("--no-maps"));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(out_));
}

TEST_F(BadInput, MissingModelDirectory) {
  expect_failure("run --model " + tmp_ / "nope" + " --tokens " + tokens_ + " --out " + out_, {"nope", "not found"});
}

TEST_F(BadInput, MissingSafetensorsFile) {
  fs::remove(model_ + "/model.safetensors");
  expect_failure(args(), {"model.safetensors"});
}

TEST_F(BadInput, MissingTokenFile) {
  expect_failure("run --model " + model_ + " --tokens " + tmp_ / "none.txt" + " --out " + out_, {"none.txt"});
}

TEST_F(BadInput, MissingTensor) {
  tensors_.erase("backbone.layers.1.mixer.x_proj.weight");
  save();
  expect_failure(args(), {"backbone.layers.1.mixer.x_proj.weight", "missing"});
}

TEST_F(BadInput, WrongShape) {
  auto& t = tensors_["backbone.layers.0.mixer.out_proj.weight"];
  std::swap(t.shape[0], t.shape[1]);
  save();
  expect_failure(args(), {"backbone.layers.0.mixer.out_proj.weight", "shape"});
}

TEST_F(BadInput, WrongDtype) {
  tensors_["backbone.norm_f.weight"].dtype = "I32";
  save();
  expect_failure(args(), {"backbone.norm_f.weight", "I32"});
}

TEST_F(BadInput, TruncatedSafetensors) {
  const auto size = fs::file_size(src_ + "/model.safetensors");
  save(-1, static_cast<std::size_t>(size / 2));
  expect_failure(args(), {"model.safetensors", "truncated"});
}

// A corrupt byte in the header: the parser's message quotes it, and the error line shows it
// escaped instead of writing the raw byte to the terminal.
TEST_F(BadInput, CorruptHeaderByteIsEscaped) {
  auto node = tensors_.extract("backbone.norm_f.weight");
  node.key() = "backbone.norm_f@";
  tensors_.insert(std::move(node));
  save();
  std::fstream f(model_ + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto at = bytes.find("norm_f@");
  ASSERT_NE(at, std::string::npos);
  f.seekp(static_cast<std::streamoff>(at + 6));
  f.put('\xc1');  // not valid UTF-8 inside the header's JSON
  f.close();
  expect_failure(args(), {"model.safetensors", "\\xc1"});
  EXPECT_EQ(test::run_latim(args()).output.find('\xc1'), std::string::npos);
}

TEST_F(BadInput, HeaderLengthLargerThanFile) {
  save(int64_t{1} << 40);
  expect_failure(args(), {"model.safetensors", "header length"});
}

TEST_F(BadInput, InvalidConfigJson) {
  test::write_text(model_ + "/config.json", "{\"model_type\": \"mamba\", \"hidden_size\": 32,,}");
  expect_failure(args(), {"config.json", "invalid JSON"});
}

TEST_F(BadInput, MissingConfigField) {
  test::write_text(model_ + "/config.json", "{\"model_type\": \"mamba\", \"hidden_size\": 32, \"num_hidden_layers\": 3}");
  expect_failure(args(), {"config.json", "vocab_size"});
}

TEST_F(BadInput, EmptyTokenFile) {
  test::write_text(tokens_, "  \n\t ");
  expect_failure(args(), {"tokens.txt", "empty"});
}

TEST_F(BadInput, TokenOutsideVocabulary) {
  test::write_text(tokens_, "1 2 3 100000 4");
  expect_failure(args(), {"tokens.txt", "token 3", "100000"});
}

TEST_F(BadInput, NegativeToken) {
  test::write_text(tokens_, "1 -2 3");
  expect_failure(args(), {"tokens.txt", "token 1"});
}

TEST_F(BadInput, TokenNotAnInteger) {
  test::write_text(tokens_, "1 2 three 4");
  expect_failure(args(), {"tokens.txt", "token 2", "three"});
}

TEST_F(BadInput, UnknownScore) { expect_failure(args("--scores l2,l7"), {"--scores", "l7"}); }

TEST_F(BadInput, LayerOutsideModel) { expect_failure(args("--layers 0,5-7"), {"--layers", "5"}); }

TEST_F(BadInput, MalformedLayerRange) { expect_failure(args("--layers 2-x"), {"--layers", "2-x"}); }

TEST_F(BadInput, UnwritableOutput) {
  out_ = tmp_ / "no_such_dir/out.h5";
  expect_failure(args(), {"--out", "no_such_dir"});
}

TEST_F(BadInput, OutputIsADirectory) {
  fs::create_directories(tmp_ / "adir");
  const test::RunResult r = test::run_latim("run --model " + model_ + " --tokens " + tokens_ + " --out " + tmp_ / "adir");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--out"), std::string::npos) << r.output;
}

TEST_F(BadInput, RowsOutsideSequence) { expect_failure(args("--rows 5,100000"), {"--rows", "100000"}); }

TEST_F(BadInput, RowsNotAPosition) { expect_failure(args("--rows last:x"), {"--rows", "x"}); }

TEST_F(BadInput, PoolMustDivideTile) { expect_failure(args("--pool 48 --tile 64"), {"--pool", "--tile"}); }

TEST_F(BadInput, RolloutNeedsWholeMaps) {
  expect_failure(args("--rows last:4 --scores alti-rollout"), {"alti-rollout", "--rows"});
}

TEST_F(BadInput, ResumeWithoutFile) { expect_failure(args("--resume"), {"--resume", "does not exist"}); }

TEST_F(BadInput, TooManyLayerShards) { expect_failure(args("--layer-shards 9"), {"--layer-shards", "9"}); }

TEST_F(BadInput, WarnsWhenThreadsOutnumberCores) {
  // A launcher that pins a rank to one core (mpirun's default binding) makes every OpenMP
  // thread share it; latim says so instead of running slowly in silence.
  if (std::system("command -v taskset >/dev/null 2>&1") != 0) GTEST_SKIP() << "taskset is not installed";
  const std::string run = "run --model " + model_ + " --tokens " + tokens_ + " --out " + out_ + " --no-maps";
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  int cpu = 0;
  while (cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &set)) ++cpu;  // one core this test may use
  const test::RunResult pinned = test::run_latim_with("OMP_NUM_THREADS=2 taskset -c " + std::to_string(cpu), run);
  EXPECT_EQ(pinned.exit_code, 0) << pinned.output;
  EXPECT_NE(pinned.output.find("warning: 2 OpenMP threads but this rank may run on only 1 core"), std::string::npos)
      << pinned.output;
  const test::RunResult free = test::run_latim_with("OMP_NUM_THREADS=1", run);
  EXPECT_EQ(free.output.find("warning"), std::string::npos) << free.output;
}

TEST_F(BadInput, MapChunkMustDivideTile) {
  expect_failure(args("--tile 256 --map-chunk 96"), {"--map-chunk", "96", "--tile"});
}

// `latim info --file`: where an output file stands, complete or interrupted.
TEST_F(BadInput, InfoReportsHowFarAnOutputGot) {
  const test::RunResult done = test::run_latim(args("--tile 32"));
  ASSERT_EQ(done.exit_code, 0) << done.output;
  test::RunResult r = test::run_latim("info --file " + out_);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(out_ + ": latim output, format_version 1, complete"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("tokens: 300"), std::string::npos) << r.output;
  const test::RunResult stopped = test::run_latim_with("LATIM_TEST_STOP_AFTER=5", args("--tile 32"));
  ASSERT_EQ(stopped.exit_code, 75) << stopped.output;
  r = test::run_latim("info --file " + out_);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("incomplete: 4 of 30 row panels written"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("layer 0: 4 of 10 row panels written"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("layer 2: 0 of 10 row panels written"), std::string::npos) << r.output;
}

TEST_F(BadInput, InfoOnFilesThatAreNotOutputs) {
  const std::string missing = tmp_ / "missing.h5";
  for (const std::string& what : {"info --file " + tokens_, "info --file " + missing, std::string("info")}) {
    const test::RunResult r = test::run_latim(what);
    EXPECT_EQ(r.exit_code, 1) << what << ": " << r.output;
    EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << what << ": expected one line, got " << r.output;
  }
  const test::RunResult plain = test::run_latim("info --file " + src_ + "/model.safetensors");
  EXPECT_NE(plain.output.find("as an HDF5 file"), std::string::npos) << plain.output;
}

TEST_F(BadInput, TooManyThreads) { expect_failure(args("--threads 100000"), {"--threads", "100000"}); }

TEST_F(BadInput, UnknownForwardMode) { expect_failure(args("--forward mirrored"), {"--forward", "mirrored"}); }

TEST_F(BadInput, ReplicatedForwardWithChunks) {
  expect_failure(args("--forward replicated --chunk-tokens 16"), {"--forward replicated", "--chunk-tokens"});
}

TEST_F(BadInput, CudaBackendWithoutGpu) {
  // On machines without a GPU, asking for one is an error, never a silent CPU run.
  const test::RunResult probe = test::run_latim(args("--backend cuda --no-maps"));
  if (probe.exit_code == 0) GTEST_SKIP() << "a CUDA device is present";
  std::filesystem::remove(out_);
  expect_failure(args("--backend cuda"), {"--backend cuda"});
}

TEST_F(BadInput, UnknownOption) {
  const test::RunResult r = test::run_latim(args("--bogus"));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("bogus"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace latim
