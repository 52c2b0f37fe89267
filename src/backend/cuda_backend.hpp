// The CUDA backend's pieces, for make_backend() and for the CUDA tests and benchmark:
// the forward pass on the device and the device tile backend.
#pragma once
#include <memory>

#include "latim/backend.hpp"

namespace latim {

bool cuda_device_present();
std::unique_ptr<ComputeBackend> make_cuda_backend(Precision precision);
// A tile backend computing on the current CUDA device in the given projection precision.
std::unique_ptr<TileBackend> make_cuda_tile_backend(Precision precision);

}  // namespace latim
