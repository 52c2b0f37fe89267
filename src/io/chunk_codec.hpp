// Encodes HDF5 chunks exactly as the shuffle + deflate filter pipeline would, so ranks can
// compress their own chunks in parallel and one writer stores the bytes unchanged.
#pragma once
#include <cstdint>
#include <vector>

namespace latim {

constexpr int kDeflateLevel = 4;

// float32 chunk -> shuffle (byte planes) -> zlib deflate.
std::vector<unsigned char> encode_chunk(const float* data, std::size_t n);
// The inverse, for tests and for resuming from a partial file.
std::vector<float> decode_chunk(const unsigned char* bytes, std::size_t nbytes, std::size_t n);

}  // namespace latim
