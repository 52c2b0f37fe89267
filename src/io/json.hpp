// JSON reading for config files. Python's json module writes Infinity, -Infinity and NaN
// (HF stores time_step_limit = [0.0, Infinity]); the parser here accepts them.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace latim {

using Json = nlohmann::json;

// Parses `text`; `origin` (a file name) prefixes the error message with line and column.
Json parse_json_lenient(const std::string& text, const std::string& origin);
std::string read_text_file(const std::string& path, const std::string& what);

// Accessors that name `origin` and the field on a wrong type. Numbers may be the
// non-finite sentinels produced by parse_json_lenient.
double json_number(const Json& j, const std::string& field, const std::string& origin);
int64_t json_int(const Json& j, const std::string& field, const std::string& origin);
bool json_bool(const Json& j, const std::string& field, const std::string& origin);

}  // namespace latim
