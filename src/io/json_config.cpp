// Lenient JSON parsing (non-finite numbers) and typed field access with clear errors.
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "io/json.hpp"
#include "latim/error.hpp"

namespace latim {
namespace {

constexpr const char* kPosInf = "\x01+inf";
constexpr const char* kNegInf = "\x01-inf";
constexpr const char* kNaN = "\x01nan";

// Rewrites the bare tokens Infinity, -Infinity and NaN (outside strings) into sentinel strings.
std::string rewrite_nonfinite(const std::string& in) {
  std::string out;
  out.reserve(in.size());
  bool in_string = false;
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < in.size()) {
        out += in[++i];
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    auto starts = [&](const char* tok) { return in.compare(i, std::strlen(tok), tok) == 0; };
    if (starts("-Infinity")) {
      out += std::string("\"") + "\\u0001-inf\"";
      i += 8;
    } else if (starts("Infinity")) {
      out += std::string("\"") + "\\u0001+inf\"";
      i += 7;
    } else if (starts("NaN")) {
      out += std::string("\"") + "\\u0001nan\"";
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string read_text_file(const std::string& path, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(what, " not found or unreadable: ", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Json parse_json_lenient(const std::string& text, const std::string& origin) {
  try {
    return Json::parse(rewrite_nonfinite(text));
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is an offset in the rewritten text; close enough to locate the fault.
    std::string msg = e.what();
    auto pos = msg.find("parse error");
    fail(origin, ": invalid JSON: ", pos == std::string::npos ? msg : msg.substr(pos));
  }
}

double json_number(const Json& j, const std::string& field, const std::string& origin) {
  if (j.is_number()) return j.get<double>();
  // transformers >= 5 writes non-finite floats as {"__float__": "Infinity"}.
  if (j.is_object() && j.size() == 1 && j.contains("__float__") && j["__float__"].is_string()) {
    const auto& s = j["__float__"].get_ref<const std::string&>();
    if (s == "Infinity" || s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-Infinity" || s == "-inf") return -std::numeric_limits<double>::infinity();
    if (s == "NaN" || s == "nan") return std::numeric_limits<double>::quiet_NaN();
  }
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    if (s == kPosInf) return std::numeric_limits<double>::infinity();
    if (s == kNegInf) return -std::numeric_limits<double>::infinity();
    if (s == kNaN) return std::numeric_limits<double>::quiet_NaN();
  }
  fail(origin, ": field '", field, "' must be a number, found ", j.dump());
}

int64_t json_int(const Json& j, const std::string& field, const std::string& origin) {
  if (j.is_number_integer()) return j.get<int64_t>();
  if (j.is_number_float()) {
    double v = j.get<double>();
    if (std::floor(v) == v && std::abs(v) < 9e15) return static_cast<int64_t>(v);
  }
  fail(origin, ": field '", field, "' must be an integer, found ", j.dump());
}

bool json_bool(const Json& j, const std::string& field, const std::string& origin) {
  if (j.is_boolean()) return j.get<bool>();
  fail(origin, ": field '", field, "' must be true or false, found ", j.dump());
}

}  // namespace latim
