// safetensors reader: mmap, header validation, dtype conversion, and sharded checkpoints.
#include "latim/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "io/json.hpp"
#include "latim/error.hpp"

namespace latim {

namespace fs = std::filesystem;

class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDONLY);
    if (fd_ < 0) fail(path, ": cannot open: ", std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail(path, ": cannot stat: ", std::strerror(errno));
    if (S_ISDIR(st.st_mode)) fail(path, ": is a directory, expected a safetensors file");
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
      if (p == MAP_FAILED) fail(path, ": cannot mmap: ", std::strerror(errno));
      data_ = static_cast<const std::byte*>(p);
    }
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }
  const std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  int fd_ = -1;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

const char* to_string(DType d) {
  switch (d) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    default: return 1;
  }
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

std::string TensorView::shape_string() const {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

bool parse_dtype(const std::string& s, DType& d) {
  static const std::pair<const char*, DType> table[] = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::BOOL}};
  for (auto& [name, v] : table)
    if (s == name) { d = v; return true; }
  return false;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) { mant <<= 1; --exp; }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

template <class T>
T load_le(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // x86-64 and aarch64 are little-endian, as is the format
  return v;
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  map_ = std::make_unique<MappedFile>(path);
  const std::size_t size = map_->size();
  if (size < 8) fail(path, ": truncated safetensors file (", size, " bytes, no header length)");
  const uint64_t header_len = load_le<uint64_t>(map_->data());
  if (header_len > size - 8)
    fail(path, ": header length ", header_len, " is larger than the file (", size,
         " bytes): truncated or not a safetensors file");
  const std::string header(reinterpret_cast<const char*>(map_->data()) + 8, header_len);
  const Json j = parse_json_lenient(header, path + " (safetensors header)");
  if (!j.is_object()) fail(path, ": safetensors header is not a JSON object");
  const std::byte* base = map_->data() + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string where = path + ": tensor '" + it.key() + "'";
    const Json& e = it.value();
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
      fail(where, ": header entry needs dtype, shape and data_offsets");
    TensorView t;
    t.name = it.key();
    t.file = path;
    if (!e["dtype"].is_string() || !parse_dtype(e["dtype"].get<std::string>(), t.dtype))
      fail(where, ": unsupported dtype ", e["dtype"].dump());
    if (!e["shape"].is_array()) fail(where, ": shape is not a list");
    for (const auto& s : e["shape"]) {
      if (!s.is_number_integer() || s.get<int64_t>() < 0) fail(where, ": bad shape ", e["shape"].dump());
      t.shape.push_back(s.get<int64_t>());
    }
    const Json& off = e["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(where, ": data_offsets must be two non-negative integers");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > data_size)
      fail(where, ": data [", begin, ", ", end, ") lies outside the file's ", data_size,
           " data bytes (truncated file?)");
    const uint64_t expect = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype);
    if (end - begin != expect)
      fail(where, ": ", end - begin, " bytes stored but shape ", t.shape_string(), " of ",
           to_string(t.dtype), " needs ", expect);
    t.data = base + begin;
    t.nbytes = end - begin;
    tensors_.emplace(t.name, std::move(t));
  }
}

SafetensorsFile::~SafetensorsFile() = default;

const TensorView* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView& SafetensorsFile::at(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) fail(path_, ": missing tensor '", name, "'");
  return *t;
}

std::vector<float> to_float32(const TensorView& t) {
  const int64_t n = t.numel();
  std::vector<float> out(static_cast<std::size_t>(n));
  const std::byte* p = t.data;
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out.data(), p, n * sizeof(float));
      break;
    case DType::F64:
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(load_le<double>(p + 8 * i));
      break;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) out[i] = half_to_float(load_le<uint16_t>(p + 2 * i));
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i)
        out[i] = std::bit_cast<float>(static_cast<uint32_t>(load_le<uint16_t>(p + 2 * i)) << 16);
      break;
    default:
      fail(t.file, ": tensor '", t.name, "' has dtype ", to_string(t.dtype),
           ", expected a floating type (F32, F16, BF16)");
  }
  return out;
}

std::vector<int64_t> to_int64(const TensorView& t) {
  const int64_t n = t.numel();
  std::vector<int64_t> out(static_cast<std::size_t>(n));
  const std::byte* p = t.data;
  for (int64_t i = 0; i < n; ++i) {
    switch (t.dtype) {
      case DType::I64: out[i] = load_le<int64_t>(p + 8 * i); break;
      case DType::I32: out[i] = load_le<int32_t>(p + 4 * i); break;
      case DType::I16: out[i] = load_le<int16_t>(p + 2 * i); break;
      case DType::I8: out[i] = load_le<int8_t>(p + i); break;
      case DType::U8: out[i] = load_le<uint8_t>(p + i); break;
      default:
        fail(t.file, ": tensor '", t.name, "' has dtype ", to_string(t.dtype), ", expected an integer type");
    }
  }
  return out;
}

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) fail(dir, ": model directory not found");
  const fs::path single = d / "model.safetensors";
  const fs::path index = d / "model.safetensors.index.json";
  std::vector<std::string> files;
  if (fs::exists(index)) {
    const std::string origin = index.string();
    const Json j = parse_json_lenient(read_text_file(origin, "checkpoint index"), origin);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      fail(origin, ": missing 'weight_map' object");
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string()) fail(origin, ": weight_map entry '", it.key(), "' is not a file name");
      const std::string f = it.value().get<std::string>();
      if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
        fail(origin, ": weight_map entry '", it.key(), "' names a file outside the directory: ", f);
      if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
    }
    if (files.empty()) fail(origin, ": weight_map is empty");
  } else if (fs::exists(single)) {
    files.push_back("model.safetensors");
  } else {
    fail(dir, ": no model.safetensors or model.safetensors.index.json (convert a pytorch_model.bin "
              "with tools/convert_checkpoint.py)");
  }
  for (const auto& f : files) {
    const std::string path = (d / f).string();
    if (!fs::exists(path)) fail(path, ": checkpoint shard not found");
    shards_.push_back(std::make_unique<SafetensorsFile>(path));
    for (const auto& [name, view] : shards_.back()->tensors()) {
      auto [it, inserted] = index_.emplace(name, &view);
      if (!inserted)
        fail(path, ": tensor '", name, "' also appears in ", it->second->file);
    }
  }
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [n, v] : index_) out.push_back(n);
  return out;
}

}  // namespace latim
