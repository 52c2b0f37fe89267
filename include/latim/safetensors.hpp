// Memory-mapped safetensors files and multi-shard checkpoints (model.safetensors or
// model.safetensors.index.json). Tensors are validated against the file size on open.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace latim {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };
const char* to_string(DType d);
std::size_t dtype_size(DType d);

struct TensorView {
  std::string name;
  std::string file;  // the shard it lives in, for error messages
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  std::size_t nbytes = 0;
  int64_t numel() const;
  std::string shape_string() const;  // "[2, 3]"
};

class MappedFile;

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const TensorView* find(const std::string& name) const;
  const TensorView& at(const std::string& name) const;  // throws naming file and tensor

 private:
  std::string path_;
  std::unique_ptr<MappedFile> map_;
  std::map<std::string, TensorView> tensors_;
};

// Converts any floating tensor to fp32 (F32, F16, BF16, F64).
std::vector<float> to_float32(const TensorView& t);
// Converts an integer tensor to int64 (I64, I32, I16, I8, U8).
std::vector<int64_t> to_int64(const TensorView& t);

// All shards of one checkpoint directory, indexed by tensor name.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);
  const std::string& dir() const { return dir_; }
  const TensorView* find(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::map<std::string, const TensorView*> index_;
};

}  // namespace latim
