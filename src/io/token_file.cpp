// Token file parsing with errors that point at the offending token.
#include <cctype>
#include <charconv>

#include "io/json.hpp"
#include "latim/error.hpp"
#include "latim/tokens.hpp"

namespace latim {

std::vector<int64_t> read_token_file(const std::string& path, int64_t vocab_size) {
  const std::string text = read_text_file(path, "token file");
  std::vector<int64_t> ids;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i >= text.size()) break;
    std::size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    const std::string_view tok(text.data() + i, j - i);
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
    if (ec != std::errc() || ptr != tok.data() + tok.size()) {
      std::string shown(tok.substr(0, 40));
      fail(path, ": token ", ids.size(), " ('", shown, "') is not an integer");
    }
    if (v < 0 || v >= vocab_size)
      fail(path, ": token ", ids.size(), " = ", v, " is outside the vocabulary [0, ", vocab_size, ")");
    ids.push_back(v);
    i = j;
  }
  if (ids.empty()) fail(path, ": token file is empty (expected whitespace-separated token ids)");
  return ids;
}

}  // namespace latim
