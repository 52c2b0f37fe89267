// The CUDA backend's pieces, for make_backend() and for the CUDA tests and benchmark:
// the forward pass on the device, one layer's LaTIM factors on the device, and the device
// tile backend.
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "device_buffer.hpp"
#include "latim/backend.hpp"
#include "latim_tile.hpp"

namespace latim {

bool cuda_device_present();
// Uses GPU local_rank mod the number of visible devices.
std::unique_ptr<ComputeBackend> make_cuda_backend(Precision precision, int local_rank = 0);
// Device time of the last forward pass of a CUDA backend (embedding to final norm, without
// the host copies); -1 for another backend.
double cuda_forward_device_seconds(const ComputeBackend& backend);
// A tile backend computing on the current CUDA device in the given projection precision.
std::unique_ptr<TileBackend> make_cuda_tile_backend(Precision precision);

// Tells a CUDA tile backend how to find a layer's index from its weights, so that its
// errors name the layer (the TileBackend interface does not carry it).
void set_cuda_tile_layer_lookup(TileBackend& tiles, std::function<int(const LayerWeights*)> layer_of);

cuda::TilePrecision tile_precision(Precision p);

// The sizes of a layer's tile factors (no pointers; contiguous row strides).
cuda::TileFactors tile_shape(const ModelConfig& c, int64_t T);

// A layer's trace left in the CUDA forward's buffers: the tile kernel's factors point into
// them, valid until the observer's on_layer returns.
class CudaDeviceTrace final : public DeviceTrace {
 public:
  cuda::TileFactors factors;
  const float* o = nullptr;  // [T, d] mixer output
  // The layer's weights on the device, for the approximation error without the tiles
  // (approx_error_all_rows): A [D, N] or [H], W_out [d, D], its bias [d] or null.
  const float* A = nullptr;
  const float* Wout = nullptr;
  const float* bout = nullptr;
  int layer = -1;
  void read_o(int64_t i0, int64_t n, float* dst) const override;
};

// One layer's factors uploaded for the tile kernel. upload() is a no-op when the same
// layer data is already there (addresses can be reused by the next layer or sequence, so
// a sample of the values is part of the key).
class DeviceLayerFactors {
 public:
  explicit DeviceLayerFactors(Precision p) : prec_(tile_precision(p)) {}
  // Uploads f's host trace, or takes the device pointers of a CudaDeviceTrace.
  void upload(const LayerFactors& f, int layer = -1);
  const cuda::TileFactors& get() const { return dev_; }
  cuda::TilePrecision precision() const { return prec_; }

 private:
  struct Key {
    const void *trace = nullptr, *weights = nullptr, *z = nullptr;
    int64_t T = 0;
    std::vector<float> sample;
    bool operator==(const Key&) const = default;
  };
  static Key key_of(const LayerFactors& f);

  cuda::TilePrecision prec_;
  bool have_ = false;
  Key key_;
  cuda::TileFactors dev_;
  cuda::DeviceArray<float> v_, z_, delta_, b_, c_, conv_w_, conv_b_, a2_, dskip_, r_in_, yhat_, o_tmp_, w_tmp_, wout32_;
  cuda::DeviceArray<uint16_t> wout16_;
  cuda::DeviceArray<double> s_;
};

}  // namespace latim
