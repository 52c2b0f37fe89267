// make_backend: the one place that decides which device computes.
#include <fstream>

#include "latim/backend.hpp"
#include "latim/error.hpp"

namespace latim {

#ifdef LATIM_HAVE_CUDA
std::unique_ptr<ComputeBackend> make_cuda_backend(Precision precision, int local_rank);  // src/backend/cuda_backend.cpp
bool cuda_device_present();
#endif

const char* to_string(Precision p) {
  switch (p) {
    case Precision::FP32: return "fp32";
    case Precision::TF32: return "tf32";
    case Precision::BF16: return "bf16";
  }
  return "?";
}

Precision parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::FP32;
  if (s == "tf32") return Precision::TF32;
  if (s == "bf16") return Precision::BF16;
  fail("--precision: '", s, "' is not one of fp32, tf32, bf16");
}

namespace {

class CpuBackend final : public ComputeBackend {
 public:
  std::string name() const override { return "cpu"; }
  std::string device_name() const override {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
      if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "cpu";
  }
  ForwardOutput forward(const ModelWeights& m, const std::vector<int64_t>& tokens, LayerObserver* obs) override {
    return forward_cpu(m, tokens, obs);
  }
  TileBackend& tiles() override { return *tiles_; }

 private:
  std::unique_ptr<TileBackend> tiles_ = make_cpu_tile_backend();
};

}  // namespace

bool cuda_available() {
#ifdef LATIM_HAVE_CUDA
  return cuda_device_present();
#else
  return false;
#endif
}

void ComputeBackend::forward_layers(const ModelWeights& model, int64_t l0, int64_t l1, int64_t T,
                                    std::vector<float>& r, SequenceLink* link, LayerObserver* observer) {
  LayerTrace trace;
  const std::vector<float> none;
  for (int64_t l = l0; l < l1 && !(observer && observer->stopped()); ++l) {
    const int li = static_cast<int>(l);
    const bool want = observer && observer->wants_trace(li);
    layer_forward_cpu(model.config, model.layers[l], li, T, r, want ? &trace : nullptr, link);
    if (observer) observer->on_layer(li, model.layers[l], want ? &trace : nullptr, none);
  }
}

ForwardOutput ComputeBackend::forward_shard(const ModelWeights&, const std::vector<int64_t>&,
                                           const std::vector<int64_t>&, const Group&, LayerObserver*) {
  fail("internal: the ", name(), " backend has no sharded device forward");
}

bool ComputeBackend::has_device_grid(const Group&) { return false; }

StageOutput ComputeBackend::forward_stage(const ModelWeights&, const std::vector<int64_t>&, const StagePlan&,
                                          const Group&, const Group&, LayerObserver*,
                                          const std::function<void(const float*, int64_t, int64_t)>&) {
  fail("internal: the ", name(), " backend has no device grid forward");
}

std::unique_ptr<ComputeBackend> make_backend(const std::string& name, Precision precision, int local_rank) {
  if (name == "cpu") {
    if (precision != Precision::FP32) fail("--precision ", to_string(precision), " needs --backend cuda; the CPU computes in fp32");
    return std::make_unique<CpuBackend>();
  }
  if (name == "cuda" || name == "auto") {
#ifdef LATIM_HAVE_CUDA
    if (cuda_device_present()) return make_cuda_backend(precision, local_rank);
    if (name == "cuda") fail("--backend cuda: no CUDA device is visible on this machine");
#else
    (void)local_rank;
    if (name == "cuda") fail("--backend cuda: this build has no CUDA support (configure with -DLATIM_CUDA=ON)");
#endif
    return make_backend("cpu", precision == Precision::FP32 ? precision : Precision::FP32);
  }
  fail("--backend: '", name, "' is not one of cpu, cuda, auto");
}

}  // namespace latim
