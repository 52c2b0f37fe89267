// Hdf5InteractionWriter: the output file of `latim run` (docs/hdf5-format.md). Maps are
// chunked [T, T] float32 datasets with shuffle + deflate; only chunks on or below the
// diagonal are ever written, so the upper triangle costs no storage and reads as NaN.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace latim {

class Hdf5InteractionWriter {
 public:
  static constexpr int kFormatVersion = 1;

  // Creates (truncates) `path`; the root attribute `complete` is 0 until finish().
  Hdf5InteractionWriter(const std::string& path, int64_t T, int64_t map_chunk = 256);
  // Opens an incomplete file of an earlier run to resume it (datasets are opened, not created).
  struct ResumeTag {};
  Hdf5InteractionWriter(const std::string& path, ResumeTag);
  // Opens a file read-only, to report on it (`latim info --file`); also one that a running
  // job is still writing (HDF5 file locking off: what it shows may lag the writer).
  struct ReadOnlyTag {};
  Hdf5InteractionWriter(const std::string& path, ReadOnlyTag);
  ~Hdf5InteractionWriter();
  Hdf5InteractionWriter(const Hdf5InteractionWriter&) = delete;
  Hdf5InteractionWriter& operator=(const Hdf5InteractionWriter&) = delete;

  const std::string& path() const { return path_; }
  int64_t map_chunk() const { return chunk_; }

  void set_string_attribute(const std::string& name, const std::string& value);
  void set_int_attribute(const std::string& name, int64_t value);
  std::string get_string_attribute(const std::string& name) const;  // "" when absent
  int64_t get_int_attribute(const std::string& name) const;          // throws when absent
  std::vector<int64_t> read_tokens() const;
  int64_t n_tokens() const { return T_; }

  // /layers/NNN/panels_done, uint8 [panels]: which row panels of the layer are complete
  // (their chunks and error rows written). What --resume reads to skip finished work.
  void create_panel_flags(int layer, int64_t panels);
  void mark_panel_done(int layer, int64_t panel);
  std::vector<uint8_t> read_panel_flags(int layer) const;
  // The layers that have a group /layers/NNN, in order.
  std::vector<int> layers_in_file() const;
  // Opens the datasets of an existing layer for writing (resume).
  void open_layer_datasets(int layer, const std::vector<std::string>& names);
  void open_logits();
  void flush();
  // Closes the file without marking it complete (an interrupted run that can resume).
  void close_incomplete();

  void write_tokens(const std::vector<int64_t>& tokens);
  void create_logits(int64_t vocab);
  void write_logits_rows(int64_t row0, int64_t nrows, const float* data);

  // /layers/NNN/<score>, [T, T]. Tiles are row-major [ni, nj] blocks at (i0, j0).
  void create_map(int layer, const std::string& score);
  void write_map_tile(int layer, const std::string& score, int64_t i0, int64_t j0, int64_t ni,
                      int64_t nj, const float* data);
  // Stores one already shuffle+deflate-encoded chunk of /layers/NNN/<score> whose first
  // element is (row0, col0); see io/chunk_codec.hpp.
  void write_encoded_chunk(int layer, const std::string& score, int64_t row0, int64_t col0,
                           const std::vector<unsigned char>& bytes);
  // A chunked, compressed dataset /layers/NNN/<name> (name may contain one subgroup, e.g.
  // "topk/l2_index"), float32 (fill NaN) or int64 (fill -1), written in row blocks.
  enum class Type { F32, I64 };
  void create_layer_dataset(int layer, const std::string& name, Type type, std::vector<int64_t> dims);
  // The chunk shape create_layer_dataset gives dims: about 256 KiB, whole short rows or
  // 64K-wide slices of long ones.
  static std::vector<int64_t> layer_dataset_chunk(const std::vector<int64_t>& dims);
  void write_layer_rows(int layer, const std::string& name, Type type, int64_t row0, int64_t nrows, const void* data);
  // A root dataset of int64 values (e.g. /rows).
  void write_root_int64(const std::string& name, const std::vector<int64_t>& values);

  // /layers/NNN/<name>: [rows] when width == 0, else [rows, width]
  void write_layer_array(int layer, const std::string& name, const float* data, int64_t rows, int64_t width = 0);
  void set_layer_string_attribute(int layer, const std::string& name, const std::string& value);

  void finish();   // flushes and sets complete = 1
  void abandon();  // closes and removes the file (a failed run leaves nothing behind)

  static std::string layer_group_name(int layer);  // "/layers/007"

 private:
  int64_t ensure_layer_group(int layer);
  int64_t dataset(int layer, const std::string& name) const;
  void close_all();
  // Checks the format attribute and reads T and the chunk edge of an opened file; `who`
  // prefixes the error (the option that opened it).
  void read_header(const std::string& who);

  std::string path_;
  int64_t T_;
  int64_t chunk_;
  int64_t file_ = -1;
  int64_t logits_ = -1;
  std::map<int, int64_t> layer_groups_;
  std::map<std::pair<int, std::string>, int64_t> maps_;
  bool finished_ = false;
};

}  // namespace latim
