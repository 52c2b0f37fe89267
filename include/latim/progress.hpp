// A progress line for long work: done/total, rate and ETA, redrawn at most once a second.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace latim {

class Progress {
 public:
  Progress(std::string what, int64_t total, std::string unit, bool enabled);
  void add(int64_t n, int64_t pairs = 0);
  void finish();

 private:
  void print(bool final);
  std::string what_, unit_;
  int64_t total_, done_ = 0, pairs_ = 0;
  bool enabled_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace latim
