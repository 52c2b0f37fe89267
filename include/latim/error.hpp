// latim::Error is the one exception type for bad input and runtime failures; its message
// names the file, tensor, argument or rank at fault and fits on one line.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

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

// `message` as it may go to a terminal or a log: valid UTF-8 is kept, and control
// characters (newlines included) and bytes that are not valid UTF-8 (pieces of a corrupt
// file that a parser quotes) become \xNN, so that an error stays one readable line.
inline std::string printable(std::string_view message) {
  std::string out;
  out.reserve(message.size());
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(message[i]); };
  const auto escape = [&](unsigned char b) {
    static const char hex[] = "0123456789abcdef";
    out += "\\x";
    out += hex[b >> 4];
    out += hex[b & 15];
  };
  for (std::size_t i = 0; i < message.size();) {
    const unsigned char b = byte(i);
    if (b < 0x80) {
      if (b < 0x20 || b == 0x7f)
        escape(b);
      else
        out += static_cast<char>(b);
      ++i;
      continue;
    }
    // A multi-byte sequence: its length from the lead byte, then continuation bytes, no
    // overlong forms, surrogates or code points above U+10FFFF.
    const std::size_t len = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    bool ok = len > 0 && i + len <= message.size();
    for (std::size_t k = 1; ok && k < len; ++k) ok = (byte(i + k) & 0xc0) == 0x80;
    if (ok && len >= 3) {
      const unsigned char b1 = byte(i + 1);
      if ((b == 0xe0 && b1 < 0xa0) || (b == 0xed && b1 >= 0xa0) || (b == 0xf0 && b1 < 0x90) || (b == 0xf4 && b1 >= 0x90))
        ok = false;
    }
    if (!ok) {
      escape(b);
      ++i;
      continue;
    }
    out.append(message.substr(i, len));
    i += len;
  }
  return out;
}

}  // namespace latim
