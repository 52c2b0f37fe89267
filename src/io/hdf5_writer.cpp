// HDF5 output: chunked, shuffle + deflate datasets that h5py and HDF5.jl read without plugins.
#include "latim/hdf5_writer.hpp"

#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>

#include "io/chunk_codec.hpp"
#include "latim/error.hpp"

namespace latim {

namespace {


void check(herr_t status, const std::string& path, const std::string& what) {
  if (status < 0) fail(path, ": HDF5 failed to ", what);
}
hid_t check_id(hid_t id, const std::string& path, const std::string& what) {
  if (id < 0) fail(path, ": HDF5 failed to ", what);
  return id;
}

void write_string_attr(hid_t obj, const std::string& name, const std::string& value, const std::string& path) {
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, H5T_VARIABLE);
  H5Tset_cset(type, H5T_CSET_UTF8);
  hid_t space = H5Screate(H5S_SCALAR);
  if (H5Aexists(obj, name.c_str()) > 0) H5Adelete(obj, name.c_str());
  hid_t attr = check_id(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT), path,
                        "create attribute " + name);
  const char* p = value.c_str();
  herr_t st = H5Awrite(attr, type, &p);
  H5Aclose(attr);
  H5Sclose(space);
  H5Tclose(type);
  check(st, path, "write attribute " + name);
}

void write_int_attr(hid_t obj, const std::string& name, int64_t value, const std::string& path) {
  hid_t space = H5Screate(H5S_SCALAR);
  hid_t attr = -1;
  if (H5Aexists(obj, name.c_str()) > 0) {
    attr = H5Aopen(obj, name.c_str(), H5P_DEFAULT);
  } else {
    attr = H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
  }
  check_id(attr, path, "create attribute " + name);
  herr_t st = H5Awrite(attr, H5T_NATIVE_INT64, &value);
  H5Aclose(attr);
  H5Sclose(space);
  check(st, path, "write attribute " + name);
}

// A chunked dataset with shuffle + deflate and chunks allocated only when written.
hid_t create_chunked(hid_t loc, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
                     const std::vector<hsize_t>& chunk, const void* fill, const std::string& path) {
  hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data());
  H5Pset_shuffle(dcpl);
  H5Pset_deflate(dcpl, kDeflateLevel);
  H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_INCR);
  if (fill) {
    H5Pset_fill_value(dcpl, type, fill);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_IFSET);
  }
  hid_t ds = H5Dcreate2(loc, name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Pclose(dcpl);
  H5Sclose(space);
  return check_id(ds, path, "create dataset " + name);
}

void write_block(hid_t ds, const std::vector<hsize_t>& start, const std::vector<hsize_t>& count, hid_t memtype,
                 const void* data, const std::string& path, const std::string& what) {
  hid_t fspace = H5Dget_space(ds);
  H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
  hid_t mspace = H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr);
  herr_t st = H5Dwrite(ds, memtype, mspace, fspace, H5P_DEFAULT, data);
  H5Sclose(mspace);
  H5Sclose(fspace);
  check(st, path, "write " + what);
}

}  // namespace

std::string Hdf5InteractionWriter::layer_group_name(int layer) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "/layers/%03d", layer);
  return buf;
}

Hdf5InteractionWriter::Hdf5InteractionWriter(const std::string& path, int64_t T, int64_t map_chunk)
    : path_(path), T_(T), chunk_(std::max<int64_t>(1, std::min(map_chunk, T))) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors become one-line exceptions instead
  namespace fs = std::filesystem;
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty() && !fs::is_directory(parent))
    fail("--out ", path, ": directory ", parent.string(), " does not exist");
  file_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file_ < 0) fail("--out ", path, ": cannot create the output file (check permissions and the path)");
  write_string_attr(file_, "format", "latim-interactions", path_);
  write_int_attr(file_, "format_version", kFormatVersion, path_);
  write_int_attr(file_, "complete", 0, path_);
  write_int_attr(file_, "n_tokens", T_, path_);
  write_int_attr(file_, "map_chunk", chunk_, path_);
  check(H5Fflush(file_, H5F_SCOPE_GLOBAL), path_, "flush");
}

Hdf5InteractionWriter::Hdf5InteractionWriter(const std::string& path, ResumeTag) : path_(path), T_(0), chunk_(0) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (!std::filesystem::exists(path)) fail("--resume: ", path, " does not exist (nothing to resume)");
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (file_ < 0) fail("--resume: cannot open ", path, " (damaged by a hard kill? remove it and start again)");
  read_header("--resume: ");
  if (get_int_attribute("format_version") != kFormatVersion)
    fail("--resume: ", path, " has format_version ", get_int_attribute("format_version"), ", expected ", kFormatVersion);
}

void Hdf5InteractionWriter::read_header(const std::string& who) {
  if (get_string_attribute("format") != "latim-interactions") fail(who, path_, " is not a latim output file");
  T_ = get_int_attribute("n_tokens");
  chunk_ = get_int_attribute("map_chunk");
}

Hdf5InteractionWriter::Hdf5InteractionWriter(const std::string& path, ReadOnlyTag) : path_(path), T_(0), chunk_(0) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (!std::filesystem::exists(path)) fail(path, " does not exist");
  const hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_file_locking(fapl, false, true);
  file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl);
  H5Pclose(fapl);
  if (file_ < 0) fail("cannot open ", path, " as an HDF5 file (not one, or damaged)");
  read_header("");
}

Hdf5InteractionWriter::~Hdf5InteractionWriter() { close_all(); }

std::vector<int> Hdf5InteractionWriter::layers_in_file() const {
  std::vector<int> out;
  if (H5Lexists(file_, "layers", H5P_DEFAULT) <= 0) return out;
  const hid_t g = H5Gopen2(file_, "layers", H5P_DEFAULT);
  if (g < 0) return out;
  H5G_info_t info{};
  if (H5Gget_info(g, &info) >= 0)
    for (hsize_t k = 0; k < info.nlinks; ++k) {
      char name[64] = {0};
      if (H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, k, name, sizeof name, H5P_DEFAULT) <= 0) continue;
      char* end = nullptr;
      const long v = std::strtol(name, &end, 10);
      if (end != name && *end == '\0' && v >= 0) out.push_back(static_cast<int>(v));
    }
  H5Gclose(g);
  std::sort(out.begin(), out.end());
  return out;
}

std::string Hdf5InteractionWriter::get_string_attribute(const std::string& name) const {
  if (H5Aexists(file_, name.c_str()) <= 0) return "";
  hid_t attr = H5Aopen(file_, name.c_str(), H5P_DEFAULT);
  hid_t type = H5Aget_type(attr);
  std::string out;
  if (H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) > 0) {
    char* p = nullptr;
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5T_CSET_UTF8);
    if (H5Aread(attr, mt, &p) >= 0 && p) {
      out = p;
      H5free_memory(p);
    }
    H5Tclose(mt);
  }
  H5Tclose(type);
  H5Aclose(attr);
  return out;
}

int64_t Hdf5InteractionWriter::get_int_attribute(const std::string& name) const {
  if (H5Aexists(file_, name.c_str()) <= 0) fail(path_, ": attribute '", name, "' is missing");
  hid_t attr = H5Aopen(file_, name.c_str(), H5P_DEFAULT);
  int64_t v = 0;
  herr_t st = H5Aread(attr, H5T_NATIVE_INT64, &v);
  H5Aclose(attr);
  check(st, path_, "read attribute " + name);
  return v;
}

namespace {

// The whole of a one-dimensional dataset (`name` is its path in the file).
template <class T>
std::vector<T> read_1d(hid_t file, const std::string& name, hid_t memtype, const std::string& path) {
  hid_t ds = check_id(H5Dopen2(file, name.c_str(), H5P_DEFAULT), path, "open " + name);
  hid_t sp = H5Dget_space(ds);
  hsize_t n = 0;
  H5Sget_simple_extent_dims(sp, &n, nullptr);
  std::vector<T> v(n);
  herr_t st = H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
  H5Sclose(sp);
  H5Dclose(ds);
  check(st, path, "read " + name);
  return v;
}

}  // namespace

std::vector<int64_t> Hdf5InteractionWriter::read_tokens() const {
  return read_1d<int64_t>(file_, "/tokens", H5T_NATIVE_INT64, path_);
}

void Hdf5InteractionWriter::create_panel_flags(int layer, int64_t panels) {
  const hid_t g = ensure_layer_group(layer);
  const uint8_t zero = 0;
  const hsize_t n = static_cast<hsize_t>(panels);
  maps_[{layer, "panels_done"}] =
      create_chunked(g, "panels_done", H5T_STD_U8LE, {n}, {std::min<hsize_t>(n, 4096)}, &zero, path_);
}

void Hdf5InteractionWriter::mark_panel_done(int layer, int64_t panel) {
  const uint8_t one = 1;
  write_block(dataset(layer, "panels_done"), {static_cast<hsize_t>(panel)}, {1}, H5T_NATIVE_UINT8, &one, path_,
              layer_group_name(layer) + "/panels_done");
}

std::vector<uint8_t> Hdf5InteractionWriter::read_panel_flags(int layer) const {
  const std::string name = layer_group_name(layer) + "/panels_done";
  if (H5Lexists(file_, "layers", H5P_DEFAULT) <= 0 || H5Lexists(file_, layer_group_name(layer).c_str(), H5P_DEFAULT) <= 0 ||
      H5Lexists(file_, name.c_str(), H5P_DEFAULT) <= 0)
    fail("--resume: ", path_, " has no ", name, " (was it written with other --layers?)");
  return read_1d<uint8_t>(file_, name, H5T_NATIVE_UINT8, path_);
}

void Hdf5InteractionWriter::open_layer_datasets(int layer, const std::vector<std::string>& names) {
  for (const auto& n : names) {
    const std::string path = layer_group_name(layer) + "/" + n;
    if (H5Lexists(file_, path.c_str(), H5P_DEFAULT) <= 0)
      fail("--resume: ", path_, " has no ", path, " (was it written with other --scores?)");
    maps_[{layer, n}] = check_id(H5Dopen2(file_, path.c_str(), H5P_DEFAULT), path_, "open " + path);
  }
}

void Hdf5InteractionWriter::open_logits() {
  if (H5Lexists(file_, "logits", H5P_DEFAULT) <= 0) fail("--resume: ", path_, " has no /logits (add --save-logits only to new runs)");
  logits_ = check_id(H5Dopen2(file_, "logits", H5P_DEFAULT), path_, "open /logits");
}

void Hdf5InteractionWriter::flush() { check(H5Fflush(file_, H5F_SCOPE_GLOBAL), path_, "flush"); }

void Hdf5InteractionWriter::close_incomplete() {
  if (file_ >= 0) flush();
  close_all();
}

void Hdf5InteractionWriter::close_all() {
  for (auto& [k, id] : maps_) H5Dclose(id);
  maps_.clear();
  for (auto& [k, id] : layer_groups_) H5Gclose(id);
  layer_groups_.clear();
  if (logits_ >= 0) H5Dclose(logits_);
  logits_ = -1;
  if (file_ >= 0) H5Fclose(file_);
  file_ = -1;
}

void Hdf5InteractionWriter::set_string_attribute(const std::string& name, const std::string& value) {
  write_string_attr(file_, name, value, path_);
}
void Hdf5InteractionWriter::set_int_attribute(const std::string& name, int64_t value) {
  write_int_attr(file_, name, value, path_);
}

void Hdf5InteractionWriter::write_tokens(const std::vector<int64_t>& tokens) {
  const hsize_t n = tokens.size();
  hid_t ds = create_chunked(file_, "tokens", H5T_STD_I64LE, {n}, {std::min<hsize_t>(n, 1 << 16)}, nullptr, path_);
  write_block(ds, {0}, {n}, H5T_NATIVE_INT64, tokens.data(), path_, "/tokens");
  H5Dclose(ds);
}

void Hdf5InteractionWriter::create_logits(int64_t vocab) {
  const hsize_t T = T_, V = vocab;
  const hsize_t rows = std::min<hsize_t>(T, std::max<hsize_t>(1, (1 << 18) / std::min<hsize_t>(V, 1 << 14)));
  logits_ = create_chunked(file_, "logits", H5T_IEEE_F32LE, {T, V}, {rows, std::min<hsize_t>(V, 1 << 14)},
                           nullptr, path_);
}

void Hdf5InteractionWriter::write_logits_rows(int64_t row0, int64_t nrows, const float* data) {
  hsize_t dims[2];
  hid_t sp = H5Dget_space(logits_);
  H5Sget_simple_extent_dims(sp, dims, nullptr);
  H5Sclose(sp);
  write_block(logits_, {static_cast<hsize_t>(row0), 0}, {static_cast<hsize_t>(nrows), dims[1]}, H5T_NATIVE_FLOAT,
              data, path_, "/logits");
}

int64_t Hdf5InteractionWriter::ensure_layer_group(int layer) {
  auto it = layer_groups_.find(layer);
  if (it != layer_groups_.end()) return it->second;
  if (H5Lexists(file_, "layers", H5P_DEFAULT) <= 0) {
    hid_t g = check_id(H5Gcreate2(file_, "layers", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), path_, "create /layers");
    H5Gclose(g);
  }
  const std::string name = layer_group_name(layer);
  if (H5Lexists(file_, name.c_str(), H5P_DEFAULT) > 0) {
    hid_t g = check_id(H5Gopen2(file_, name.c_str(), H5P_DEFAULT), path_, "open " + name);
    layer_groups_[layer] = g;
    return g;
  }
  hid_t g = check_id(H5Gcreate2(file_, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), path_, "create " + name);
  write_int_attr(g, "layer", layer, path_);
  layer_groups_[layer] = g;
  return g;
}

void Hdf5InteractionWriter::create_map(int layer, const std::string& score) {
  const hid_t g = ensure_layer_group(layer);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const hsize_t T = T_, c = chunk_;
  maps_[{layer, score}] = create_chunked(g, score, H5T_IEEE_F32LE, {T, T}, {c, c}, &nan, path_);
}

int64_t Hdf5InteractionWriter::dataset(int layer, const std::string& name) const {
  auto it = maps_.find({layer, name});
  if (it == maps_.end()) fail(path_, ": dataset ", layer_group_name(layer), "/", name, " was not created");
  return it->second;
}

void Hdf5InteractionWriter::write_map_tile(int layer, const std::string& score, int64_t i0, int64_t j0, int64_t ni,
                                           int64_t nj, const float* data) {
  write_block(dataset(layer, score), {static_cast<hsize_t>(i0), static_cast<hsize_t>(j0)},
              {static_cast<hsize_t>(ni), static_cast<hsize_t>(nj)}, H5T_NATIVE_FLOAT, data, path_,
              layer_group_name(layer) + "/" + score);
}

void Hdf5InteractionWriter::write_encoded_chunk(int layer, const std::string& score, int64_t row0, int64_t col0,
                                                const std::vector<unsigned char>& bytes) {
  const hsize_t offset[2] = {static_cast<hsize_t>(row0), static_cast<hsize_t>(col0)};
  if (H5Dwrite_chunk(dataset(layer, score), H5P_DEFAULT, 0, offset, bytes.size(), bytes.data()) < 0)
    fail(path_, ": HDF5 failed to write a chunk of ", layer_group_name(layer), "/", score, " at (", row0, ", ", col0,
         ") (disk full?)");
}

std::vector<int64_t> Hdf5InteractionWriter::layer_dataset_chunk(const std::vector<int64_t>& dims) {
  std::vector<int64_t> chunk(dims.size());
  const int64_t width = dims.size() > 1 ? std::min<int64_t>(dims[1], 1 << 16) : 1;
  if (dims.size() > 1) chunk[1] = width;
  chunk[0] = std::max<int64_t>(1, std::min<int64_t>(dims[0], (1 << 16) / width));
  return chunk;
}

void Hdf5InteractionWriter::create_layer_dataset(int layer, const std::string& name, Type type,
                                                 std::vector<int64_t> dims) {
  hid_t g = ensure_layer_group(layer);
  std::string leaf = name;
  hid_t sub = -1;
  if (const auto slash = name.find('/'); slash != std::string::npos) {
    const std::string group = name.substr(0, slash);
    leaf = name.substr(slash + 1);
    sub = H5Lexists(g, group.c_str(), H5P_DEFAULT) > 0 ? H5Gopen2(g, group.c_str(), H5P_DEFAULT)
                                                      : H5Gcreate2(g, group.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    check_id(sub, path_, "create group " + layer_group_name(layer) + "/" + group);
  }
  const std::vector<hsize_t> d(dims.begin(), dims.end());
  const std::vector<int64_t> c = layer_dataset_chunk(dims);
  const std::vector<hsize_t> chunk(c.begin(), c.end());
  const float nanf = std::numeric_limits<float>::quiet_NaN();
  const int64_t minus1 = -1;
  const hid_t ftype = type == Type::F32 ? H5T_IEEE_F32LE : H5T_STD_I64LE;
  const void* fill = type == Type::F32 ? static_cast<const void*>(&nanf) : static_cast<const void*>(&minus1);
  maps_[{layer, name}] = create_chunked(sub >= 0 ? sub : g, leaf, ftype, d, chunk, fill, path_);
  if (sub >= 0) H5Gclose(sub);
}

void Hdf5InteractionWriter::write_layer_rows(int layer, const std::string& name, Type type, int64_t row0,
                                             int64_t nrows, const void* data) {
  const hid_t ds = dataset(layer, name);
  hid_t sp = H5Dget_space(ds);
  hsize_t dims[2] = {0, 0};
  const int rank = H5Sget_simple_extent_dims(sp, dims, nullptr);
  H5Sclose(sp);
  std::vector<hsize_t> start{static_cast<hsize_t>(row0)}, count{static_cast<hsize_t>(nrows)};
  if (rank == 2) {
    start.push_back(0);
    count.push_back(dims[1]);
  }
  write_block(ds, start, count, type == Type::F32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT64, data, path_,
              layer_group_name(layer) + "/" + name);
}

void Hdf5InteractionWriter::write_root_int64(const std::string& name, const std::vector<int64_t>& values) {
  const hsize_t n = std::max<std::size_t>(values.size(), 1);
  hid_t ds = create_chunked(file_, name, H5T_STD_I64LE, {values.size()}, {std::min<hsize_t>(n, 1 << 16)}, nullptr, path_);
  if (!values.empty()) write_block(ds, {0}, {values.size()}, H5T_NATIVE_INT64, values.data(), path_, "/" + name);
  H5Dclose(ds);
}

void Hdf5InteractionWriter::write_layer_array(int layer, const std::string& name, const float* data, int64_t rows,
                                              int64_t width) {
  const hid_t g = ensure_layer_group(layer);
  std::vector<hsize_t> dims{static_cast<hsize_t>(rows)}, chunk{static_cast<hsize_t>(std::min<int64_t>(rows, 1 << 16))};
  if (width > 0) {
    dims.push_back(width);
    chunk = {static_cast<hsize_t>(std::min<int64_t>(rows, std::max<int64_t>(1, (1 << 16) / width))),
             static_cast<hsize_t>(width)};
  }
  hid_t ds = create_chunked(g, name, H5T_IEEE_F32LE, dims, chunk, nullptr, path_);
  std::vector<hsize_t> start(dims.size(), 0);
  write_block(ds, start, dims, H5T_NATIVE_FLOAT, data, path_, layer_group_name(layer) + "/" + name);
  H5Dclose(ds);
}

void Hdf5InteractionWriter::set_layer_string_attribute(int layer, const std::string& name, const std::string& value) {
  write_string_attr(ensure_layer_group(layer), name, value, path_);
}

void Hdf5InteractionWriter::finish() {
  for (auto& [k, id] : maps_) H5Dclose(id);
  maps_.clear();
  if (logits_ >= 0) H5Dclose(logits_);
  logits_ = -1;
  check(H5Fflush(file_, H5F_SCOPE_GLOBAL), path_, "flush");
  // Only now, with every dataset written and flushed, does the file claim to be complete.
  write_int_attr(file_, "complete", 1, path_);
  check(H5Fflush(file_, H5F_SCOPE_GLOBAL), path_, "flush");
  close_all();
  finished_ = true;
}

void Hdf5InteractionWriter::abandon() {
  close_all();
  std::error_code ec;
  std::filesystem::remove(path_, ec);
}

}  // namespace latim
