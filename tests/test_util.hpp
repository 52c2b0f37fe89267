// Helpers shared by the tests: temporary directories, writing safetensors files, running
// the latim binary and capturing its exit code and stderr.
#pragma once
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "latim/latim.hpp"

namespace latim::test {

namespace fs = std::filesystem;

// The fixtures: LATIM_TEST_DATA_DIR from the environment (a binary run on another machine),
// else the source tree's tests/data.
inline std::string data_dir() {
  const char* env = std::getenv("LATIM_TEST_DATA_DIR");
  return env && *env ? std::string(env) : std::string(LATIM_TEST_DATA_DIR);
}

struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("latim_test_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

struct RawTensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<char> bytes;
};

inline void write_safetensors(const std::string& path, const std::map<std::string, RawTensor>& tensors,
                              int64_t header_len_override = -1, std::size_t truncate_to = 0) {
  nlohmann::json h;
  std::vector<char> data;
  for (const auto& [name, t] : tensors) {
    h[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data.insert(data.end(), t.bytes.begin(), t.bytes.end());
  }
  std::string header = h.dump();
  while (header.size() % 8) header += ' ';
  uint64_t len = header_len_override >= 0 ? static_cast<uint64_t>(header_len_override) : header.size();
  std::string blob(reinterpret_cast<const char*>(&len), 8);
  blob += header;
  blob.append(data.begin(), data.end());
  if (truncate_to) blob.resize(truncate_to);
  std::ofstream(path, std::ios::binary).write(blob.data(), static_cast<std::streamsize>(blob.size()));
}

inline void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

struct RunResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

// The latim binary the tests run: LATIM_TEST_BINARY from the environment; else the one beside
// this test binary's directory (build/latim for build/tests/latim_tests), so that a build
// directory copied to another machine runs its own latim; else the build-time path.
inline std::string latim_binary() {
  if (const char* env = std::getenv("LATIM_TEST_BINARY"); env && *env) return env;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path beside = self.parent_path().parent_path() / fs::path(LATIM_BINARY).filename();
    if (fs::is_regular_file(beside, ec)) return beside.string();
  }
  return LATIM_BINARY;
}

// Runs `prefix latim args` (prefix: environment assignments and a wrapper such as taskset).
inline RunResult run_latim_with(const std::string& prefix, const std::string& args) {
  const std::string cmd = prefix + " \"" + latim_binary() + "\" " + args + " 2>&1";
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), p)) r.output += buf.data();
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return r;
}

inline RunResult run_latim(const std::string& args) { return run_latim_with("", args); }

// Relative error as the golden tests define it: max |a - b| / max |b|.
inline double rel_error(const float* a, const float* b, std::size_t n) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    num = std::max(num, std::abs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::abs(static_cast<double>(b[i])));
  }
  return den > 0 ? num / den : num;
}

// Collects the maps and errors of compute_layer_maps into dense [T, T] / [T] arrays,
// NaN where nothing was written.
struct MemorySink : MapSink {
  int64_t T = 0;
  std::map<std::pair<int, Score>, std::vector<float>> maps;
  std::map<int, std::vector<float>> eps;
  void on_panel(int layer, Score s, int64_t i0, int64_t ni, int64_t ncols, const float* data) override {
    auto& m = maps[{layer, s}];
    m.resize(T * T, std::numeric_limits<float>::quiet_NaN());
    for (int64_t r = 0; r < ni; ++r)
      for (int64_t j = 0; j < ncols; ++j) m[(i0 + r) * T + j] = data[r * ncols + j];
  }
  void on_approx_error(int layer, int64_t i0, int64_t ni, const float* e) override {
    auto& v = eps[layer];
    v.resize(T, std::numeric_limits<float>::quiet_NaN());
    std::copy(e, e + ni, v.begin() + i0);
  }
};

}  // namespace latim::test
