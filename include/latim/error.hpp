// latim::Error is the one exception type for bad input and runtime failures; its message
// names the file, tensor, argument or rank at fault and fits on one line.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace latim {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw Error(os.str());
}

}  // namespace latim
