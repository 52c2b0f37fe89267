// Progress line on stderr: "layer 3: 120/528 tiles  2.1e+05 pairs/s  ETA 00:01:12".
#include "latim/progress.hpp"

#include <cstdio>

namespace latim {

Progress::Progress(std::string what, int64_t total, std::string unit, bool enabled)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total), enabled_(enabled) {
  start_ = last_ = std::chrono::steady_clock::now();
}

void Progress::add(int64_t n, int64_t pairs) {
  done_ += n;
  pairs_ += pairs;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ >= std::chrono::seconds(1)) {
    last_ = now;
    print(false);
  }
}

void Progress::finish() {
  if (enabled_ && std::chrono::steady_clock::now() - start_ >= std::chrono::seconds(1)) print(true);
}

void Progress::print(bool final) {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = secs > 0 ? done_ / secs : 0.0;
  const double eta = rate > 0 ? (total_ - done_) / rate : 0.0;
  const int e = static_cast<int>(eta);
  std::fprintf(stderr, "\r%s: %lld/%lld %s  %.3g pairs/s  %s %02d:%02d:%02d%s", what_.c_str(),
               static_cast<long long>(done_), static_cast<long long>(total_), unit_.c_str(),
               secs > 0 ? pairs_ / secs : 0.0, final ? "took" : "ETA", final ? int(secs) / 3600 : e / 3600,
               final ? (int(secs) / 60) % 60 : (e / 60) % 60, final ? int(secs) % 60 : e % 60, final ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace latim
