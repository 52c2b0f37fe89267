// Token files: whitespace-separated integer ids.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace latim {

// Reads ids from `path`; each must be an integer in [0, vocab_size). Errors name the file,
// the token's position (0-based) and its text.
std::vector<int64_t> read_token_file(const std::string& path, int64_t vocab_size);

}  // namespace latim
