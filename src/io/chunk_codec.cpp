// Shuffle + deflate encoding of float32 chunks (HDF5 filter ids 2 and 1, in that order).
#include "io/chunk_codec.hpp"

#include <zlib.h>

#include <cstring>

#include "latim/error.hpp"

namespace latim {

std::vector<unsigned char> encode_chunk(const float* data, std::size_t n) {
  const std::size_t bytes = n * sizeof(float);
  std::vector<unsigned char> shuffled(bytes);
  const auto* src = reinterpret_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t b = 0; b < sizeof(float); ++b) shuffled[b * n + i] = src[i * sizeof(float) + b];
  uLongf out_len = compressBound(static_cast<uLong>(bytes));
  std::vector<unsigned char> out(out_len);
  if (compress2(out.data(), &out_len, shuffled.data(), static_cast<uLong>(bytes), kDeflateLevel) != Z_OK)
    fail("deflate failed on a chunk of ", bytes, " bytes");
  out.resize(out_len);
  return out;
}

std::vector<float> decode_chunk(const unsigned char* bytes, std::size_t nbytes, std::size_t n) {
  std::vector<unsigned char> shuffled(n * sizeof(float));
  uLongf len = static_cast<uLongf>(shuffled.size());
  if (uncompress(shuffled.data(), &len, bytes, static_cast<uLong>(nbytes)) != Z_OK || len != shuffled.size())
    fail("inflate failed on a chunk of ", nbytes, " bytes");
  std::vector<float> out(n);
  auto* dst = reinterpret_cast<unsigned char*>(out.data());
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t b = 0; b < sizeof(float); ++b) dst[i * sizeof(float) + b] = shuffled[b * n + i];
  return out;
}

}  // namespace latim
