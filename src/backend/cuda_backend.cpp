// The CUDA compute backend: the forward pass of Mamba-1/Mamba-2 on the device (weights
// uploaded once per model) and the device tile backend. It gives a LayerObserver exactly
// the callbacks of the CPU forward: the residual after each layer and, when asked, the
// layer's trace, both on the host.
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "backend/cuda_backend.hpp"
#include "backend/cuda_nccl.hpp"
#include "causal_conv.hpp"
#include "conv_xproj.hpp"
#include "device_buffer.hpp"
#include "latim/error.hpp"
#include "latim_tile.hpp"
#include "linear.hpp"
#include "pointwise.hpp"
#include "rmsnorm.hpp"
#include "selective_scan.hpp"
#include "sequence_shard.hpp"
#include "ssd_scan.hpp"

namespace latim {

bool cuda_device_present() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();  // a machine without a driver leaves an error behind; clear it
  return ok;
}

namespace {

using cuda::DeviceArray;

cuda::MathMode math_mode(Precision p) {
  switch (p) {
    case Precision::FP32: return cuda::MathMode::FP32;
    case Precision::TF32: return cuda::MathMode::TF32;
    case Precision::BF16: return cuda::MathMode::BF16;
  }
  return cuda::MathMode::FP32;
}

struct DeviceLayer {
  DeviceArray<float> norm, in_proj, in_proj_b, conv_w, conv_b, A, D_skip, out_proj, out_proj_b, x_proj, dt_proj,
      dt_proj_b, dt_bias, gated_norm;
  // bf16 copies of the products' weights, for their bf16 operands (bf16 mode only).
  DeviceArray<uint16_t> in_proj16, out_proj16, x_proj16, dt_proj16;
  // For device-resident traces: A · log2(e) and W_out transposed in the tile precision
  // (prepared on first use).
  DeviceArray<float> A2, wout_tile32;
  DeviceArray<uint16_t> wout_tile16;
  const void* wout_tile = nullptr;
};

template <class T>
const T* put(DeviceArray<T>& a, const std::vector<T>& v, const std::string& what, int layer) {
  if (v.empty()) return nullptr;
  return a.upload(v.data(), static_cast<int64_t>(v.size()), what, layer);
}

const float* ptr(const DeviceArray<float>& a) { return a.size() ? a.get() : nullptr; }

// Page-locked staging for device-to-host copies (grow-only, up to kMaxPinned bytes; larger
// copies go straight to pageable memory).
class PinnedStage {
 public:
  ~PinnedStage() {
    if (ptr_) cudaFreeHost(ptr_);
  }
  template <class T>
  void download(std::vector<T>& dst, const T* src, int64_t rows, int64_t cols, int64_t ld, const char* what, int layer) {
    const std::size_t n = static_cast<std::size_t>(rows * cols), bytes = n * sizeof(T);
    if (n == 0) {
      dst.clear();
      return;
    }
    if (bytes > kMaxPinned || !reserve(bytes)) {
      dst.resize(n);
      cuda::check(cudaMemcpy2D(dst.data(), cols * sizeof(T), src, ld * sizeof(T), cols * sizeof(T), rows,
                               cudaMemcpyDeviceToHost),
                  what, layer);
      return;
    }
    T* stage = static_cast<T*>(ptr_);
    cuda::check(cudaMemcpy2D(stage, cols * sizeof(T), src, ld * sizeof(T), cols * sizeof(T), rows, cudaMemcpyDeviceToHost),
                what, layer);
    dst.assign(stage, stage + n);
  }
  // n values from host memory to the device, through the page-locked buffer when it fits.
  template <class T>
  void upload(T* dst, const T* src, int64_t n, const char* what, int layer = -1) {
    const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(T);
    if (bytes == 0) return;
    if (bytes > kMaxPinned || !reserve(bytes)) {
      cuda::check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), what, layer);
      return;
    }
    std::memcpy(ptr_, src, bytes);
    cuda::check(cudaMemcpy(dst, ptr_, bytes, cudaMemcpyHostToDevice), what, layer);
  }

 private:
  static constexpr std::size_t kMaxPinned = std::size_t{1} << 30;
  bool reserve(std::size_t bytes) {
    if (bytes <= size_) return true;
    if (ptr_) cudaFreeHost(ptr_);
    ptr_ = nullptr;
    size_ = 0;
    if (cudaMallocHost(&ptr_, bytes) != cudaSuccess) {
      cudaGetLastError();
      ptr_ = nullptr;
      return false;  // no page-locked memory: copy to pageable memory instead
    }
    size_ = bytes;
    return true;
  }
  void* ptr_ = nullptr;
  std::size_t size_ = 0;
};

// With LATIM_CUDA_PROFILE=1 in the environment, synchronises after every stage of the
// forward pass and prints the time per stage when the backend is destroyed.
class StageClock {
 public:
  StageClock() {
    const char* e = std::getenv("LATIM_CUDA_PROFILE");
    on_ = e && std::strcmp(e, "0") != 0;
  }
  ~StageClock() {
    if (!on_ || acc_.empty()) return;
    double total = 0;
    for (const auto& [k, v] : acc_) total += v;
    std::fprintf(stderr, "latim cuda forward profile (%.3f s in all):\n", total);
    for (const auto& [k, v] : acc_) std::fprintf(stderr, "  %-22s %9.3f ms  %5.1f%%\n", k.c_str(), v * 1e3, 100 * v / total);
  }
  void start(const char* stage) {
    if (!on_) return;
    cudaDeviceSynchronize();
    close();
    cur_ = stage;
    t0_ = now();
  }
  void stop() {
    if (!on_) return;
    cudaDeviceSynchronize();
    close();
    cur_ = nullptr;
  }

 private:
  static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
  void close() {
    if (cur_) acc_[cur_] += now() - t0_;
  }
  bool on_ = false;
  const char* cur_ = nullptr;
  double t0_ = 0;
  std::map<std::string, double> acc_;
};

class CudaBackend final : public ComputeBackend {
 public:
  explicit CudaBackend(Precision p) : precision_(p), mode_(math_mode(p)), tiles_(make_cuda_tile_backend(p)) {
    int dev = 0;
    cuda::check(cudaGetDevice(&dev), "cudaGetDevice");
    cudaDeviceProp prop{};
    cuda::check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
    device_name_ = prop.name;
    cuda::check(cudaEventCreate(&ev0_), "cudaEventCreate");
    cuda::check(cudaEventCreate(&ev1_), "cudaEventCreate");
  }
  ~CudaBackend() override {
    if (std::getenv("LATIM_CUDA_PROFILE") && live_rows_total_ > 0)
      std::fprintf(stderr, "latim cuda forward profile: %lld rows took an incoming scan state\n",
                   static_cast<long long>(live_rows_total_));
    cudaEventDestroy(ev0_);
    cudaEventDestroy(ev1_);
  }
  // Device time of the last forward pass, from the embedded tokens to the final norm.
  double last_device_seconds() const { return last_device_seconds_; }
  double forward_device_seconds() const override { return last_device_seconds_; }
  std::string name() const override { return "cuda"; }
  std::string device_name() const override { return device_name_; }
  Precision precision() const override { return precision_; }
  TileBackend& tiles() override { return *tiles_; }

  ForwardOutput forward(const ModelWeights& model, const std::vector<int64_t>& tokens, LayerObserver* obs) override {
    return run(model, tokens.data(), static_cast<int64_t>(tokens.size()), 0, obs);
  }

  bool has_sharded_forward() const override { return nccl_available(); }

  void forward_layers(const ModelWeights& model, int64_t l0, int64_t l1, int64_t T, std::vector<float>& r,
                      SequenceLink* link, LayerObserver* obs) override {
    const ModelConfig& c = model.config;
    const int64_t d = c.d_model;
    if (T <= 0 || static_cast<int64_t>(r.size()) != T * d)
      fail("internal: forward_layers got ", r.size(), " residual values for ", T, " tokens");
    upload_model(model);
    float* rd = r_.reserve(T * d, "residual stream");
    stage_.upload(rd, r.data(), T * d, "residual upload");
    host_link_ = link;
    struct Reset {
      SequenceLink*& p;
      ~Reset() { p = nullptr; }
    } reset{host_link_};
    LayerTrace& trace = slice_trace_;  // keeps its capacity from chunk to chunk
    const std::vector<float> none;
    for (int64_t l = l0; l < l1 && !(obs && obs->stopped()); ++l) {
      const int li = static_cast<int>(l);
      const bool want = obs && obs->wants_trace(li);
      // Each layer's residual add also norms the next layer's input; the stage's last
      // layer leaves only the residual.
      const Chain chain{l > l0, l + 1 < l1 ? layer_input_target(c, layers_[l + 1], T, li + 1) : NormTarget{}};
      if (c.family == Family::Mamba1)
        mamba1_layer(c, model.layers[l], layers_[l], li, T, rd, want ? &trace : nullptr, false, chain);
      else mamba2_layer(c, model.layers[l], layers_[l], li, T, rd, want ? &trace : nullptr, false, chain);
      if (obs) obs->on_layer(li, model.layers[l], want ? &trace : nullptr, none);
    }
    stage_.download(r, static_cast<const float*>(rd), T, d, d, "residual download", -1);
  }

  ForwardOutput forward_shard(const ModelWeights& model, const std::vector<int64_t>& tokens,
                              const std::vector<int64_t>& bounds, const Group& group, LayerObserver* obs) override {
    const int S = group.size(), me = group.rank();
    if (static_cast<int>(bounds.size()) != S + 1 || bounds.front() != 0 ||
        bounds.back() != static_cast<int64_t>(tokens.size()))
      fail("internal: forward_shard got ", bounds.size(), " slice bounds for ", S, " ranks");
    const int64_t a = bounds[me], b = bounds[me + 1], K = model.config.d_conv;
    check_slices(bounds, K, "", "use fewer --seq-shards");
    if (!nccl_ || nccl_->group_handle() != group.handle() || nccl_->size() != S) {
      check_one_gpu_per_rank(group);
      nccl_ = std::make_unique<NcclGroup>(group);
    }
    Shard sh{nccl_.get(), bounds, 0, bounds.back()};
    shard_ = &sh;
    const int64_t before = nccl_->bytes_received();
    link_bytes_ = 0;
    struct Reset {
      Shard*& p;
      ~Reset() { p = nullptr; }
    } reset{shard_};
    ForwardOutput out = run(model, tokens.data() + a, b - a, a, obs);
    out.link_bytes = link_bytes_;
    out.trace_bytes = nccl_->bytes_received() - before - link_bytes_;
    return out;
  }

  bool has_device_grid(const Group& world) override { return nccl_available() && shared_gpu(world).first < 0; }

  StageOutput forward_stage(const ModelWeights& model, const std::vector<int64_t>& tokens, const StagePlan& plan,
                            const Group& world, const Group& stage, LayerObserver* obs,
                            const std::function<void(const float*, int64_t, int64_t)>& final_rows) override {
    const ModelConfig& c = model.config;
    const int64_t d = c.d_model, T = static_cast<int64_t>(tokens.size());
    const int64_t l0 = plan.layer_begin, l1 = plan.layer_end;
    const int64_t n_chunks = static_cast<int64_t>(plan.chunks.size()) - 1;
    if (plan.S != stage.size() || plan.seq_rank != stage.rank() || n_chunks < 1 || plan.chunks.front() != 0 ||
        plan.chunks.back() != T || l0 < 0 || l1 > c.n_layer || l0 >= l1)
      fail("internal: forward_stage got an inconsistent plan");
    upload_model(model);
    // The stage's group joins the slices; the world's passes the residual stream on.
    if (!nccl_ || nccl_->group_handle() != stage.handle() || nccl_->size() != stage.size())
      nccl_ = std::make_unique<NcclGroup>(stage);
    const bool pipelined = plan.prev_rank >= 0 || plan.next_rank >= 0;
    if (pipelined && (!world_nccl_ || world_nccl_->group_handle() != world.handle()))
      world_nccl_ = std::make_unique<NcclGroup>(world);
    // Traced layers keep their whole-sequence factors on the device until the last chunk:
    // say so before starting when they cannot fit.
    int n_traced = 0;
    for (int64_t l = l0; l < l1; ++l) n_traced += obs && obs->wants_trace(static_cast<int>(l));
    if (n_traced > 0) {
      const cuda::TileFactors shape = tile_shape(c, T);
      const int64_t W = shape.mamba2 ? c.n_heads : c.d_inner;
      const double per_token = 4.0 * (2 * c.d_inner + 3 * W + 2 * shape.ldbc + 3 * d);  // v Z δ S(2) B C r_in o ŷ
      const double need = per_token * static_cast<double>(T) * n_traced;
      std::size_t free_b = 0, total_b = 0;
      cuda::check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
      if (need > 0.85 * static_cast<double>(free_b))
        fail("the ", n_traced, " traced layer(s) of this rank's stage keep ", need / (1 << 30),
             " GiB of factors on the GPU until the last sequence chunk, and it has ", free_b / double(1 << 30),
             " GiB free: use more --layer-shards, fewer --layers, or --forward replicated (no chunks)");
    }
    std::vector<LayerCarry> carry(static_cast<std::size_t>(c.n_layer));
    std::map<int, GatheredTrace> keep;
    StageOutput out;
    const int64_t stage_before = nccl_->bytes_received();
    const int64_t world_before = pipelined ? world_nccl_->bytes_received() : 0;
    link_bytes_ = 0;
    LayerTrace none_trace;
    const std::vector<float> none;
    std::vector<float> h_host;
    cuda::check(cudaEventRecord(ev0_), "cudaEventRecord");
    for (int64_t k = 0; k < n_chunks && !(obs && obs->stopped()); ++k) {
      const int64_t c0 = plan.chunks[k];
      std::vector<int64_t> bounds(static_cast<std::size_t>(plan.S) + 1);
      for (int q = 0; q <= plan.S; ++q) bounds[q] = plan.slice_begin(k, q) - c0;
      const int64_t a = c0 + bounds[plan.seq_rank], n = c0 + bounds[plan.seq_rank + 1] - a;
      check_slices(bounds, c.d_conv, "of sequence chunk " + std::to_string(k) + " ",
                   "use a larger --chunk-tokens or fewer --seq-shards");
      float* r = r_.reserve(n * d, "residual stream");
      if (plan.prev_rank < 0) {
        for (int64_t t = a; t < a + n; ++t)
          if (tokens[t] < 0 || tokens[t] >= c.vocab_size)
            fail("forward: token id ", tokens[t], " at position ", t, " is outside [0, ", c.vocab_size, ")");
        const int64_t* tok = tokens_.upload(tokens.data() + a, n, "token ids");
        cuda::embed_rows(embedding_.get(), tok, n, d, r, nullptr);
      } else {
        world_nccl_->recv(r, static_cast<std::size_t>(n * d) * sizeof(float), plan.prev_rank, nullptr,
                          "residual stream from the previous stage", static_cast<int>(l0));
      }
      Shard sh{nccl_.get(), bounds, c0, T, &carry, &keep};
      shard_ = &sh;
      struct Reset {
        Shard*& p;
        ~Reset() { p = nullptr; }
      } reset{shard_};
      const bool last_stage = plan.next_rank < 0;
      for (int64_t l = l0; l < l1; ++l) {
        const int li = static_cast<int>(l);
        const bool want = obs && obs->wants_trace(li);
        // The last stage's last layer norms the stream for the logits in its residual add.
        const Chain chain{l > l0, l + 1 < l1    ? layer_input_target(c, layers_[l + 1], n, li + 1)
                                  : last_stage ? NormTarget{norm_f_.get(), u_.reserve(n * d, "final norm output"),
                                                            nullptr}
                                               : NormTarget{}};
        if (c.family == Family::Mamba1)
          mamba1_layer(c, model.layers[l], layers_[l], li, n, r, want ? &none_trace : nullptr, want, chain);
        else mamba2_layer(c, model.layers[l], layers_[l], li, n, r, want ? &none_trace : nullptr, want, chain);
        none_trace.device.reset();
      }
      if (!last_stage) {
        world_nccl_->send(r, static_cast<std::size_t>(n * d) * sizeof(float), plan.next_rank, nullptr,
                          "residual stream to the next stage", static_cast<int>(l1 - 1));
      } else if (final_rows) {
        stage_.download(h_host, static_cast<const float*>(u_.get()), n, d, d, "final hidden download", -1);
        final_rows(h_host.data(), a, n);
      }
    }
    cuda::check(cudaEventRecord(ev1_), "cudaEventRecord");
    cuda::check(cudaEventSynchronize(ev1_), "forward (grid stage)");
    float ms = 0;
    cudaEventElapsedTime(&ms, ev0_, ev1_);
    last_device_seconds_ = ms * 1e-3;  // from the first chunk's embedding or receipt to the last chunk's end
    out.link_bytes = link_bytes_;
    out.trace_bytes = nccl_->bytes_received() - stage_before - link_bytes_;
    out.residual_bytes = pipelined ? world_nccl_->bytes_received() - world_before : 0;
    // The traced layers, whole, in layer order; each layer's buffers go once it is mapped.
    for (auto it = keep.begin(); it != keep.end() && !(obs && obs->stopped()); it = keep.erase(it)) {
      const int li = it->first;
      LayerTrace tr;
      tr.T = T;
      tr.device = finish_gathered(c, model.layers[li], layers_[li], li, T, it->second);
      obs->on_layer(li, model.layers[li], &tr, none);
    }
    return out;
  }

 private:
  // The forward of T tokens (the first at position `first` of the sequence), the whole
  // sequence or, with shard_ set, this rank's slice.
  ForwardOutput run(const ModelWeights& model, const int64_t* tokens, int64_t T, int64_t first, LayerObserver* obs) {
    const ModelConfig& c = model.config;
    const int64_t d = c.d_model;
    if (T == 0) fail("forward: empty token sequence");
    upload_model(model);
    for (int64_t t = 0; t < T; ++t)
      if (tokens[t] < 0 || tokens[t] >= c.vocab_size)
        fail("forward: token id ", tokens[t], " at position ", first + t, " is outside [0, ", c.vocab_size, ")");
    const int64_t* tok = tokens_.upload(tokens, T, "token ids");
    float* r = r_.reserve(T * d, "residual stream");
    cuda::check(cudaEventRecord(ev0_), "cudaEventRecord");
    clock_.start("embedding");
    cuda::embed_rows(embedding_.get(), tok, T, d, r, nullptr);
    std::vector<float> r_host;
    LayerTrace trace;
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const int layer = static_cast<int>(l);
      const bool want = obs && obs->wants_trace(layer);
      const bool on_device = want && obs->accepts_device_trace(layer);
      if (want && shard_ && !on_device)
        fail("internal: a sharded device forward hands its traces over in device memory only");
      trace.device.reset();  // the host vectors keep their capacity for the next download
      // Each layer's residual add also norms the next layer's input, the last one the final
      // norm's output (r itself is what it was: observers see the same residual).
      const Chain chain{l > 0, l + 1 < c.n_layer
                                   ? layer_input_target(c, layers_[l + 1], T, layer + 1)
                                   : NormTarget{norm_f_.get(), u_.reserve(T * d, "final norm output"), nullptr}};
      if (c.family == Family::Mamba1)
        mamba1_layer(c, model.layers[l], layers_[l], layer, T, r, want ? &trace : nullptr, on_device, chain);
      else mamba2_layer(c, model.layers[l], layers_[l], layer, T, r, want ? &trace : nullptr, on_device, chain);
      if (obs) {
        clock_.start("observer (host)");
        if (obs->wants_residual(layer) && !shard_) stage_.download(r_host, r, T, d, d, "residual download", layer);
        else r_host.clear();
        obs->on_layer(layer, model.layers[l], want ? &trace : nullptr, r_host);
      }
    }
    // The final norm's output, from the last layer's residual add (a model without layers
    // norms the embeddings here).
    if (c.n_layer == 0)
      cuda::rmsnorm_rows(r, T, d, norm_f_.get(), c.norm_eps, u_.reserve(T * d, "final norm output"), nullptr, -1);
    const float* h = u_.get();
    cuda::check(cudaEventRecord(ev1_), "cudaEventRecord");
    cuda::check(cudaEventSynchronize(ev1_), "forward pass");
    float ms = 0;
    cudaEventElapsedTime(&ms, ev0_, ev1_);
    last_device_seconds_ = ms * 1e-3;
    clock_.start("final download");
    ForwardOutput out;
    out.T = T;
    if (!obs || obs->wants_final_hidden())
      stage_.download(out.final_hidden, static_cast<const float*>(h), T, d, d, "final hidden download", -1);
    clock_.stop();
    return out;
  }

  void upload_model(const ModelWeights& m) {
    std::vector<const void*> key{&m, m.layers.data(), m.norm_f.data()};
    for (const auto& w : m.layers) {
      key.push_back(w.in_proj.data());
      key.push_back(w.out_proj.data());
    }
    std::vector<float> sample;  // addresses can be reused by another model loaded later
    for (const auto& w : m.layers)
      for (const auto* v : {&w.in_proj, &w.out_proj, &w.conv_w})
        if (!v->empty()) {
          sample.push_back(v->front());
          sample.push_back(v->back());
        }
    if (key == model_key_ && sample == model_sample_ && !layers_.empty()) return;
    // The tile backend's errors name the layer: it finds it from the weights' address.
    set_cuda_tile_layer_lookup(*tiles_, [first = m.layers.data(), n = m.layers.size()](const LayerWeights* w) {
      return w >= first && w < first + n ? static_cast<int>(w - first) : -1;
    });
    model_key_.clear();
    layers_.clear();
    layers_.resize(m.layers.size());
    for (std::size_t l = 0; l < m.layers.size(); ++l) {
      const LayerWeights& w = m.layers[l];
      DeviceLayer& g = layers_[l];
      const int layer = static_cast<int>(l);
      put(g.norm, w.norm, "weights (norm)", layer);
      put(g.in_proj, w.in_proj, "weights (in_proj)", layer);
      put(g.in_proj_b, w.in_proj_b, "weights (in_proj bias)", layer);
      put(g.conv_w, w.conv_w, "weights (conv1d)", layer);
      put(g.conv_b, w.conv_b, "weights (conv1d bias)", layer);
      put(g.A, w.A, "weights (A)", layer);
      put(g.D_skip, w.D_skip, "weights (D)", layer);
      put(g.out_proj, w.out_proj, "weights (out_proj)", layer);
      put(g.out_proj_b, w.out_proj_b, "weights (out_proj bias)", layer);
      put(g.x_proj, w.x_proj, "weights (x_proj)", layer);
      put(g.dt_proj, w.dt_proj, "weights (dt_proj)", layer);
      put(g.dt_proj_b, w.dt_proj_b, "weights (dt_proj bias)", layer);
      put(g.dt_bias, w.dt_bias, "weights (dt_bias)", layer);
      put(g.gated_norm, w.gated_norm, "weights (gated norm)", layer);
      if (bf16_operands()) {
        bf16_copy(g.in_proj, g.in_proj16, "weights (in_proj, bf16 copy)", layer,
                  padded_rows(static_cast<int64_t>(g.in_proj.size()) / m.config.d_model) * m.config.d_model);
        bf16_copy(g.out_proj, g.out_proj16, "weights (out_proj, bf16 copy)", layer);
        if (g.x_proj.size()) bf16_copy(g.x_proj, g.x_proj16, "weights (x_proj, bf16 copy)", layer);
        if (g.dt_proj.size()) bf16_copy(g.dt_proj, g.dt_proj16, "weights (dt_proj, bf16 copy)", layer);
      }
    }
    put(norm_f_, m.norm_f, "weights (final norm)", -1);
    put(embedding_, m.embedding, "weights (embedding)", -1);
    model_key_ = key;
    model_sample_ = sample;
  }

  // In the bf16 mode in_proj and out_proj take bf16 operands: copies of their weights made at
  // upload, and inputs that the kernels before them write in bf16 (only in bf16: nothing
  // else reads the normed input or the gated output). These are plain bf16 products
  // (operands rounded to bf16, fp32 sums). Before, this mode passed fp32 operands with
  // COMPUTE_32F_FAST_16BF, for which cuBLAS chose tf32 kernels on the H100: more accurate,
  // and half as fast.
  bool bf16_operands() const { return mode_ == cuda::MathMode::BF16; }
  // A weight's bf16 copy, zero-padded to n values (n >= its size).
  static void bf16_copy(const DeviceArray<float>& a, DeviceArray<uint16_t>& b, const char* what, int layer,
                        int64_t n = -1) {
    const int64_t size = a.size();
    if (n < size) n = size;
    uint16_t* dst = b.reserve(n, what, layer);
    if (n > size) cuda::check(cudaMemsetAsync(dst + size, 0, (n - size) * sizeof(uint16_t)), what, layer);
    cuda::to_bf16(a.get(), size, dst, nullptr, what, layer);
  }
  // in_proj's bf16 copy has its rows (output columns) padded with zero rows to a multiple of
  // 128 where there are more than 128 of them: one product of whole 128-column tiles
  // (Mamba-2's 3352 columns as 3456) instead of a 3328-column product and a 24-column one
  // that reads the input again (cublasLt, H100, 65536 rows: 444 us against 419 + 40). The
  // padded columns are computed (zeros) and never read; the real ones keep their bits (each
  // output column is its own dot product). Products on fp32 operands read the first rows only.
  static int64_t padded_rows(int64_t rows) { return rows > 128 && rows % 128 != 0 ? (rows + 127) / 128 * 128 : rows; }

  // Where a norm writes its rows: out (fp32) and/or out16 (bf16), with the norm's weights w.
  struct NormTarget {
    const float* w = nullptr;
    float* out = nullptr;
    uint16_t* out16 = nullptr;
  };
  // How a layer joins the layers around it: `normed`, the previous layer's residual add has
  // already written this layer's normalised input; `next`, where this layer's residual add
  // norms the stream in the same pass (no w: the plain residual add).
  struct Chain {
    bool normed;
    NormTarget next;
  };
  // Layer w's normalised input: the only thing in_proj reads, so only bf16 in the bf16 mode.
  NormTarget layer_input_target(const ModelConfig& c, DeviceLayer& w, int64_t T, int layer) {
    NormTarget n;
    n.w = w.norm.get();
    if (bf16_operands()) n.out16 = u16_.reserve(T * c.d_model, "forward workspace (normed input, bf16)", layer);
    else n.out = u_.reserve(T * c.d_model, "forward workspace (normed input)", layer);
    return n;
  }
  // A product's input: fp32 or (bf16 mode) bf16.
  struct Operand {
    const float* f32 = nullptr;
    const uint16_t* bf16 = nullptr;
  };
  // The layer's normalised input, RMSNorm(r) · w.norm, unless the chain already made it.
  Operand layer_input(const ModelConfig& c, DeviceLayer& w, int layer, int64_t T, float* r, const Chain& chain) {
    const NormTarget u = layer_input_target(c, w, T, layer);
    if (!chain.normed) {
      clock_.start("rmsnorm");
      cuda::residual_rmsnorm(r, nullptr, T, c.d_model, u.w, c.norm_eps, u.out, u.out16, nullptr, layer);
    }
    return {u.out, u.out16};
  }
  // The products' mode in a layer. In the fp32 mode, layers that no trace reads take split
  // tf32 products (cuda::MathMode::FP32X3, linear.hpp: errors of 1-5e-6 against cuBLAS's
  // fp32 product's 0.5-2e-6 at these widths, 2.3-2.6× faster on an H100); traced layers,
  // whose products the maps are computed from, keep cuBLAS's fp32 product. With split
  // products in every layer the maps of the 1e-5 parity test moved up to 1.28e-5 from the
  // CPU's.
  cuda::MathMode product_mode(bool traced) const {
    return mode_ == cuda::MathMode::FP32 && !traced ? cuda::MathMode::FP32X3 : mode_;
  }
  // out [T, out_dim] = in [T, in_dim] W^T (+ bias), on bf16 operands when `in` is bf16;
  // add_to_out: out += that.
  void project(Operand in, int64_t T, int64_t in_dim, const DeviceArray<float>& W, const DeviceArray<uint16_t>& W16,
               int64_t out_dim, const float* bias, float* out, bool traced, const char* what, int layer,
               bool add_to_out = false) {
    if (in.bf16)
      cuda::linear_bf16(blas_, in.bf16, T, in_dim, in_dim, W16.get(), out_dim, bias, out, out_dim, nullptr, what, layer,
                        add_to_out);
    else
      cuda::linear(blas_, product_mode(traced), in.f32, T, in_dim, in_dim, W.get(), out_dim, bias, out, out_dim, nullptr,
                   what, layer, add_to_out);
  }
  // out_proj: into o, its own buffer, in a traced layer (the trace reads o), and returns o.
  // Elsewhere nothing but the residual add reads o, so out_proj adds into the residual
  // stream r itself (cuBLAS's beta = 1) and this returns null: o is never written, nor read
  // back by the residual add.
  const float* out_proj(const ModelConfig& c, DeviceLayer& w, Operand y, int64_t T, float* r, bool traced, int layer) {
    clock_.start("out_proj");
    const int64_t d = c.d_model;
    float* o = traced ? o_.reserve(T * d, "forward workspace (mixer output)", layer) : r;
    project(y, T, c.d_inner, w.out_proj, w.out_proj16, d, ptr(w.out_proj_b), o, traced, "out_proj", layer, !traced);
    return traced ? o : nullptr;
  }
  // in_proj's output: fp32, or in the bf16 mode bf16 (bf16 set, f32 null) for a layer that no
  // trace reads and whose in_proj has no bias. The conv, Δ and gate kernels read it in either
  // type (widening bf16 exactly), so a bf16 output costs one rounding of values that a plain
  // bf16 implementation rounds too, and halves the largest activation's traffic. Traced
  // layers keep fp32: the trace and the LaTIM factors read v and z from it.
  struct Proj {
    float* f32 = nullptr;
    uint16_t* bf16 = nullptr;
    int64_t ld = 0;  // its leading dimension: the rows, or the padded rows of in_proj's bf16 copy
    template <class F>
    void with(const F& f) const {
      if (bf16) f(static_cast<const uint16_t*>(bf16));
      else f(static_cast<const float*>(f32));
    }
  };
  // Whether only the layer's own next kernel reads its activations: in_proj wrote bf16 (the
  // bf16 mode, an untraced layer) and no join of slices follows. The scans may then write
  // bf16 where fp32 would be kept for a trace or a join (Mamba-1: Δ and the gated output,
  // Mamba-2: y).
  bool activations_local(const Proj& pj) const { return pj.bf16 && !shard_ && !host_link_; }
  Proj in_proj(DeviceLayer& w, Operand u, int64_t T, int64_t d, int64_t rows, bool traced, int layer) {
    clock_.start("in_proj");
    Proj p;
    if (u.bf16 && !traced && !ptr(w.in_proj_b)) {
      p.ld = padded_rows(rows);  // (in_proj16 has that many rows)
      p.bf16 = proj16_.reserve(T * p.ld, "forward workspace (in_proj output, bf16)", layer);
      cuda::linear_bf16(blas_, u.bf16, T, d, d, w.in_proj16.get(), p.ld, p.bf16, p.ld, nullptr, "in_proj", layer);
    } else {
      p.ld = rows;
      p.f32 = proj_.reserve(T * rows, "forward workspace (in_proj output)", layer);
      project(u, T, d, w.in_proj, w.in_proj16, rows, ptr(w.in_proj_b), p.f32, traced, "in_proj", layer);
    }
    return p;
  }
  // The layer's residual add, r += o (none where o is null: out_proj added into r), and with
  // the chain's next norm that norm in the same pass.
  void residual(const ModelConfig& c, int layer, int64_t T, float* r, const float* o, const Chain& chain) {
    if (chain.next.w) {
      clock_.start(o ? "residual add + norm" : "RMSNorm");
      cuda::residual_rmsnorm(r, o, T, c.d_model, chain.next.w, c.norm_eps, chain.next.out, chain.next.out16, nullptr,
                             layer);
    } else if (o) {
      clock_.start("residual add");
      cuda::residual_add(r, o, T * c.d_model, nullptr, layer);
    }
  }

  void mamba1_layer(const ModelConfig& c, const LayerWeights& hw, DeviceLayer& w, int layer, int64_t T, float* r,
                    LayerTrace* tr, bool on_device, const Chain& chain) {
    const int64_t d = c.d_model, D = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv, XR = c.x_proj_rows();
    const Operand u = layer_input(c, w, layer, T, r, chain);
    const Proj pj = in_proj(w, u, T, d, 2 * D, tr != nullptr, layer);
    float* proj = pj.f32;  // null where in_proj wrote bf16 (an untraced layer)
    clock_.start("conv");
    // The conv output x: fp32, or bf16 where in_proj wrote bf16 (only x_proj, on bf16
    // operands then, and the scan read it).
    float* x = nullptr;
    uint16_t* x16 = nullptr;
    const float* halo = nullptr;
    pj.with([&](const auto* p) { halo = conv_halo(p, pj.ld, T, D, K, layer); });
    float* xdbl = nullptr;  // x_proj's output, here where one kernel computes the conv and x_proj
    if (pj.bf16) {
      x16 = x16_.reserve(T * D, "forward workspace (conv output, bf16)", layer);
      // As the scan's gate and Δ fusions: untraced, unsharded layers only.
      const bool one_kernel = activations_local(pj) && !halo && cuda::conv_xproj_pays(T) &&
                              cuda::conv_xproj_fits(D, pj.ld, static_cast<int>(K), XR, pj.bf16, x16,
                                                    w.x_proj16.get(), w.conv_w.get(), ptr(w.conv_b));
      if (one_kernel) {
        // The conv output goes to memory once, for the scan; x_proj takes it on chip.
        clock_.start("conv, x_proj");
        xdbl = xdbl_.reserve(T * XR, "forward workspace (x_proj output)", layer);
        cuda::conv_xproj(pj.bf16, T, D, pj.ld, w.conv_w.get(), static_cast<int>(K), ptr(w.conv_b),
                         c.activation == Activation::SiLU, w.x_proj16.get(), XR, x16, xdbl, XR, nullptr, layer);
      } else {
        cuda::causal_conv_with_halo(pj.bf16, T, D, pj.ld, w.conv_w.get(), static_cast<int>(K), ptr(w.conv_b),
                                    c.activation == Activation::SiLU, halo, x16, nullptr, layer);
      }
    } else {
      x = x_.reserve(T * D, "forward workspace (conv output)", layer);
      cuda::causal_conv_with_halo(proj, T, D, pj.ld, w.conv_w.get(), static_cast<int>(K), ptr(w.conv_b),
                                  c.activation == Activation::SiLU, halo, x, nullptr, layer);
    }
    clock_.start(xdbl ? "dt_proj" : "x_proj, dt_proj");
    if (!xdbl) {
      xdbl = xdbl_.reserve(T * XR, "forward workspace (x_proj output)", layer);
      if (x16)
        cuda::linear_bf16(blas_, x16, T, D, D, w.x_proj16.get(), XR, nullptr, xdbl, XR, nullptr, "x_proj", layer);
      else
        cuda::linear(blas_, product_mode(tr != nullptr), x, T, D, D, w.x_proj.get(), XR, nullptr, xdbl, XR, nullptr,
                     "x_proj", layer);
    }
    // Only out_proj reads the gated y (the trace keeps the gate): bf16 in the bf16 mode.
    uint16_t* y16 = bf16_operands() ? y16_.reserve(T * D, "forward workspace (gated output, bf16)", layer) : nullptr;
    // Where nothing reads y itself (bf16 in_proj output, so untraced, and no join of slices
    // to add to it), the scan's output pass applies the gate and writes y16. Nothing reads Δ
    // there either: dt_proj then takes bf16 operands and writes its raw output in bf16, which
    // the scan's first pass finishes into Δ in bf16 in place, as a plain bf16 implementation
    // keeps dt (2 bytes a value where Δ in fp32 was written, rewritten and read twice).
    cuda::ScanGate fused;
    if (activations_local(pj)) fused = {pj.bf16 + D, pj.ld, y16};
    float* delta = nullptr;
    uint16_t* dt16 = nullptr;
    if (fused.y16) {
      uint16_t* dt_in = dt_in16_.reserve(T * R, "forward workspace (dt_proj input, bf16)", layer);
      cuda::to_bf16_rows(xdbl, XR, T, R, dt_in, nullptr, "dt_proj input (bf16)", layer);
      dt16 = dt16_.reserve(T * D, "forward workspace (dt_proj output, bf16)", layer);
      cuda::linear_bf16(blas_, dt_in, T, R, R, w.dt_proj16.get(), D, dt16, D, nullptr, "dt_proj", layer);
    } else {
      // dt_proj's raw output: the scan's first pass makes it Δ = softplus(dt + bias) in place.
      delta = delta_.reserve(T * D, "forward workspace (delta)", layer);
      cuda::linear(blas_, product_mode(tr != nullptr), xdbl, T, R, XR, w.dt_proj.get(), D, nullptr, delta, D, nullptr,
                   "dt_proj", layer);
    }
    clock_.start("selective scan");
    float* y = y_.reserve(T * D, "forward workspace (scan output)", layer);  // (not written where fused)
    float* work = scan_work_.reserve(cuda::selective_scan_work(T, D, N), "selective scan chunk states", layer);
    const auto scan = [&](const auto* xs) {
      cuda::selective_scan(xs, delta, ptr(w.dt_proj_b), true, w.A.get(), xdbl + R, XR, xdbl + R + N, XR,
                           w.D_skip.get(), T, D, N, y, scan_summary(c, D * N, layer), work, nullptr, layer, fused);
    };
    if (dt16)
      cuda::selective_scan(x16, dt16, ptr(w.dt_proj_b), w.A.get(), xdbl + R, XR, xdbl + R + N, XR, w.D_skip.get(), T, D,
                           N, y, scan_summary(c, D * N, layer), work, nullptr, layer, fused);
    else if (x16) scan(static_cast<const uint16_t*>(x16));
    else scan(static_cast<const float*>(x));
    const double* S =
        shard_ || host_link_ ? join_slice(c, hw, w, layer, T, delta, D, D * N, y, xdbl + R + N, XR, tr != nullptr) : nullptr;
    clock_.start("gate");
    float* gate = tr ? gate_.reserve(T * D, "forward workspace (gate)", layer) : nullptr;
    if (!fused.y16)
      pj.with([&](const auto* p) { cuda::silu_gate(y, p + D, pj.ld, T, D, gate, y16, nullptr, layer); });
    const float* o = out_proj(c, w, {y, y16}, T, r, tr != nullptr, layer);
    if (tr && on_device) {
      clock_.start("device trace");
      tr->T = shard_ ? shard_->T() : T;  // a sharded forward hands over the whole sequence's trace
      tr->device = device_trace(c, hw, w, layer, T, r, o, {proj, pj.ld, gate, S ? S : cumulative_delta(delta, T, D, layer),
                                                           delta, xdbl + R, xdbl + R + N, XR});
    } else if (tr) {
      clock_.start("trace download");
      tr->T = T;
      stage_.download(tr->r_in, static_cast<const float*>(r), T, d, d, "trace download (r_in)", layer);
      stage_.download(tr->o, static_cast<const float*>(o), T, d, d, "trace download (o)", layer);
      stage_.download(tr->v, static_cast<const float*>(proj), T, D, pj.ld, "trace download (v)", layer);
      stage_.download(tr->x, static_cast<const float*>(x), T, D, D, "trace download (x)", layer);
      stage_.download(tr->delta, static_cast<const float*>(delta), T, D, D, "trace download (delta)", layer);
      stage_.download(tr->B, static_cast<const float*>(xdbl + R), T, N, XR, "trace download (B)", layer);
      stage_.download(tr->C, static_cast<const float*>(xdbl + R + N), T, N, XR, "trace download (C)", layer);
      stage_.download(tr->gate, static_cast<const float*>(gate), T, D, D, "trace download (gate)", layer);
      tr->gamma.clear();
      if (S) stage_.download(tr->S, S, T, D, D, "trace download (S)", layer);
      else download_S(tr, delta, T, D, layer);
    }
    residual(c, layer, T, r, o, chain);
  }

  void mamba2_layer(const ModelConfig& c, const LayerWeights& hw, DeviceLayer& w, int layer, int64_t T, float* r,
                    LayerTrace* tr, bool on_device, const Chain& chain) {
    const int64_t d = c.d_model, D = c.d_inner, N = c.d_state, K = c.d_conv;
    const int64_t H = c.n_heads, P = c.head_dim, G = c.n_groups, GN = G * N;
    const int64_t CC = c.conv_channels();
    const Operand u = layer_input(c, w, layer, T, r, chain);
    const Proj pj = in_proj(w, u, T, d, c.in_proj_rows(), tr != nullptr, layer);
    float* proj = pj.f32;  // null where in_proj wrote bf16 (an untraced layer)
    clock_.start("conv");
    // The conv output (x, B, C): fp32, or bf16 where in_proj wrote bf16 and the scan's
    // tensor-core path takes these shapes (only the scan reads it then).
    float* conv = nullptr;
    uint16_t* conv16 = nullptr;
    const float* halo = nullptr;
    pj.with([&](const auto* p) { halo = conv_halo(p + D, pj.ld, T, CC, K, layer); });
    if (pj.bf16 && cuda::ssd_scan_takes_bf16(P, N)) {
      conv16 = x16_.reserve(T * CC, "forward workspace (conv output, bf16)", layer);
      cuda::causal_conv_with_halo(pj.bf16 + D, T, CC, pj.ld, w.conv_w.get(), static_cast<int>(K), ptr(w.conv_b),
                                  c.activation == Activation::SiLU, halo, conv16, nullptr, layer);
    } else {
      conv = x_.reserve(T * CC, "forward workspace (conv output)", layer);
      pj.with([&](const auto* p) {
        cuda::causal_conv_with_halo(p + D, T, CC, pj.ld, w.conv_w.get(), static_cast<int>(K), ptr(w.conv_b),
                                    c.activation == Activation::SiLU, halo, conv, nullptr, layer);
      });
    }
    clock_.start("delta");
    float* delta = delta_.reserve(T * H, "forward workspace (delta)", layer);
    pj.with([&](const auto* p) {
      cuda::mamba2_delta(p + D + CC, pj.ld, T, H, w.dt_bias.get(), c.dt_min, c.dt_max, delta, nullptr, layer);
    });
    clock_.start("ssd scan");
    // The scan output y: bf16 where only the gated norm reads it (bf16 inputs, so an untraced
    // layer, and no join of slices adds to it), as a plain bf16 implementation keeps it;
    // otherwise fp32.
    const bool y_bf16 = conv16 && activations_local(pj);
    float* y = y_bf16 ? nullptr : y_.reserve(T * D, "forward workspace (scan output)", layer);
    uint16_t* ys16 = y_bf16 ? ys16_.reserve(T * D, "forward workspace (scan output, bf16)", layer) : nullptr;
    float* work = scan_work_.reserve(cuda::ssd_scan_work(T, H, P, N, G), "SSD scan chunk states", layer);
    if (conv16)
      cuda::ssd_scan(conv16, CC, delta, w.A.get(), conv16 + D, conv16 + D + GN, CC, w.D_skip.get(), T, H, P, N, G, y,
                     ys16, scan_summary(c, H * P * N, layer), work, nullptr, layer);
    else
      cuda::ssd_scan(conv, CC, delta, w.A.get(), conv + D, conv + D + GN, CC, w.D_skip.get(), T, H, P, N, G, y,
                     scan_summary(c, H * P * N, layer), work, mode_ != cuda::MathMode::FP32, nullptr, layer);
    const double* S = nullptr;
    if (shard_ || host_link_) {
      // The join reads C in fp32: from a bf16 conv output, its exact widening.
      const float* Cj = conv ? conv + D + GN : nullptr;
      int64_t ldc = CC;
      if (conv16) {
        float* Cw = c32_.reserve(T * GN, "forward workspace (C, widened for the join)", layer);
        cuda::copy_rows(conv16 + D + GN, CC, T, GN, Cw, nullptr, layer);
        Cj = Cw;
        ldc = GN;
      }
      S = join_slice(c, hw, w, layer, T, delta, H, H * P * N, y, Cj, ldc, tr != nullptr);
    }
    clock_.start("gated rmsnorm");
    float* gate = tr ? gate_.reserve(T * D, "forward workspace (gate)", layer) : nullptr;
    float* gamma = tr ? gamma_.reserve(T * D, "forward workspace (gamma)", layer) : nullptr;
    // Only out_proj reads the normed y (the trace keeps gate and γ): bf16 in the bf16 mode.
    uint16_t* y16 = bf16_operands() ? y16_.reserve(T * D, "forward workspace (gated norm output, bf16)", layer) : nullptr;
    if (ys16)
      cuda::gated_rmsnorm(ys16, pj.bf16, pj.ld, T, D, G, w.gated_norm.get(), c.gated_norm_eps, c.norm_before_gate, y16,
                          nullptr, layer);
    else
      pj.with([&](const auto* p) {
        cuda::gated_rmsnorm(y, p, pj.ld, T, D, G, w.gated_norm.get(), c.gated_norm_eps, c.norm_before_gate, gate, gamma,
                            y16, nullptr, layer);
      });
    const float* o = out_proj(c, w, {y, y16}, T, r, tr != nullptr, layer);
    if (tr && on_device) {
      clock_.start("device trace");
      cuda::latim_gate_factor(gate, gamma, T * D, gamma, nullptr, layer);  // Z = γ ⊙ SiLU(z), in place
      tr->T = shard_ ? shard_->T() : T;  // a sharded forward hands over the whole sequence's trace
      tr->device = device_trace(c, hw, w, layer, T, r, o, {proj + D, pj.ld, gamma, S ? S : cumulative_delta(delta, T, H, layer),
                                                           delta, conv + D, conv + D + GN, CC});
    } else if (tr) {
      clock_.start("trace download");
      tr->T = T;
      stage_.download(tr->r_in, static_cast<const float*>(r), T, d, d, "trace download (r_in)", layer);
      stage_.download(tr->o, static_cast<const float*>(o), T, d, d, "trace download (o)", layer);
      stage_.download(tr->v, static_cast<const float*>(proj + D), T, D, pj.ld, "trace download (v)", layer);
      stage_.download(tr->x, static_cast<const float*>(conv), T, D, CC, "trace download (x)", layer);
      stage_.download(tr->delta, static_cast<const float*>(delta), T, H, H, "trace download (delta)", layer);
      stage_.download(tr->B, static_cast<const float*>(conv + D), T, GN, CC, "trace download (B)", layer);
      stage_.download(tr->C, static_cast<const float*>(conv + D + GN), T, GN, CC, "trace download (C)", layer);
      stage_.download(tr->gate, static_cast<const float*>(gate), T, D, D, "trace download (gate)", layer);
      stage_.download(tr->gamma, static_cast<const float*>(gamma), T, D, D, "trace download (gamma)", layer);
      if (S) stage_.download(tr->S, S, T, H, H, "trace download (S)", layer);
      else download_S(tr, delta, T, H, layer);
    }
    residual(c, layer, T, r, o, chain);
  }

  // Every slice [bounds[q], bounds[q + 1]) must hold the K - 1 rows of the conv halo that the
  // next slice takes from it.
  static void check_slices(const std::vector<int64_t>& bounds, int64_t K, const std::string& where,
                           const char* remedy) {
    const int64_t halo = std::max<int64_t>(1, K - 1);
    for (std::size_t q = 0; q + 1 < bounds.size(); ++q)
      if (bounds[q + 1] - bounds[q] < halo)
        fail("sequence shard ", q, " ", where, "has ", bounds[q + 1] - bounds[q],
             " tokens, fewer than the conv halo of ", halo, " (", remedy, ")");
  }

  // NCCL needs a GPU of its own for every rank of a communicator: fail clearly, on every
  // rank, when two ranks of the group share one.
  static void check_one_gpu_per_rank(const Group& group) {
    const auto [p, q] = shared_gpu(group);
    if (p >= 0)
      fail("--forward sharded on GPUs needs one GPU per rank, but ranks ", p, " and ", q, " share a GPU (start at "
           "most as many ranks per node as it has GPUs, or use --forward replicated)");
  }
  // The first two ranks of the group that share a GPU, or {-1, -1} (collective).
  static std::pair<int, int> shared_gpu(const Group& group) {
    struct Id {
      char host[64];
      char bus[32];
    } mine{}, *all = nullptr;
    gethostname(mine.host, sizeof mine.host - 1);
    int dev = 0;
    cuda::check(cudaGetDevice(&dev), "cudaGetDevice");
    cuda::check(cudaDeviceGetPCIBusId(mine.bus, sizeof mine.bus - 1, dev), "cudaDeviceGetPCIBusId");
    std::vector<Id> ids(static_cast<std::size_t>(group.size()));
    all = ids.data();
    group.allgather(&mine, sizeof mine, all);
    for (int p = 0; p < group.size(); ++p)
      for (int q = p + 1; q < group.size(); ++q)
        if (std::strcmp(all[p].host, all[q].host) == 0 && std::strcmp(all[p].bus, all[q].bus) == 0) return {p, q};
    return {-1, -1};
  }

  // What the sequence before a chunk leaves each layer (a chunked forward, forward_stage):
  // the conv tail entering the chunk's first slice, the scan state and the Δ sums.
  struct LayerCarry {
    DeviceArray<float> tail[2];  // [parity]: enters this chunk; the other receives the next chunk's
    int parity = 0;
    DeviceArray<float> state;   // the scan state after every earlier chunk
    DeviceArray<double> sum;    // Δ summed over every earlier chunk
    bool live = false;          // an earlier chunk has passed this layer (else all of it is zero)
  };
  // A traced layer's factors over the whole sequence, in sequence order, filled slice by
  // slice (a sharded forward's gather buffers, or a chunked forward's kept traces).
  struct GatheredTrace {
    DeviceArray<float> v, Z, delta, B, C, rin, o, yhat;
    DeviceArray<double> S;
  };
  // A sequence-sharded forward's context (forward_shard, forward_stage): the NCCL group of
  // the stage and this chunk's slices.
  struct Shard {
    NcclGroup* nccl;
    std::vector<int64_t> bounds;  // rank q owns rows [bounds[q], bounds[q + 1]) of the chunk (bounds[0] = 0)
    int64_t row0 = 0;             // the chunk's first position in the sequence
    int64_t total = 0;            // the whole sequence's length
    std::vector<LayerCarry>* carry = nullptr;        // a chunked forward: what the earlier chunks left
    std::map<int, GatheredTrace>* keep = nullptr;    // a chunked forward: traces kept until the last chunk
    int64_t a() const { return bounds[nccl->rank()]; }  // this rank's first row in the chunk
    int64_t T() const { return total; }
  };

  // The K-1 conv inputs before this slice (from the previous rank; zeros on rank 0), or
  // null for a whole sequence.
  template <class In>
  const float* conv_halo(const In* in, int64_t lda, int64_t T, int64_t width, int64_t K, int layer) {
    if ((!shard_ && !host_link_) || K < 2) return nullptr;
    clock_.start("shard: conv halo");
    const int64_t H = K - 1, n = H * width;
    float* send = halo_send_.reserve(n, "conv halo (send)", layer);
    float* recv = halo_recv_.reserve(n, "conv halo (receive)", layer);
    cuda::copy_rows(in + (T - H) * lda, lda, H, width, send, nullptr, layer);
    if (host_link_) {  // through the host: the link's MPI exchange and its carry across chunks
      std::vector<float> tail(static_cast<std::size_t>(n)), prev(static_cast<std::size_t>(n));
      cuda::check(cudaMemcpy(tail.data(), send, n * sizeof(float), cudaMemcpyDeviceToHost), "conv halo (download)",
                  layer);
      host_link_->conv_halo(layer, tail.data(), H, width, prev.data());
      cuda::check(cudaMemcpy(recv, prev.data(), n * sizeof(float), cudaMemcpyHostToDevice), "conv halo (upload)",
                  layer);
      return recv;
    }
    // Every rank's tail, all-gathered (one collective, as for the scan's summaries): rank r
    // takes rank r - 1's; rank 0 takes the tail the chunk before left (zeros at first) and
    // keeps the last rank's for the next chunk.
    NcclGroup& g = *shard_->nccl;
    const int r = g.rank(), S = g.size();
    const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(float);
    const int64_t before = g.bytes_received();
    float* tails = halo_all_.reserve(n * S, "conv halo (all tails)", layer);
    if (S > 1) g.allgather(send, tails, bytes, nullptr, "conv halo exchange", layer);
    else cuda::check(cudaMemcpyAsync(tails, send, bytes, cudaMemcpyDeviceToDevice), "conv halo", layer);
    link_bytes_ += g.bytes_received() - before;
    if (r > 0) return tails + (r - 1) * n;
    LayerCarry* lc = shard_->carry ? &(*shard_->carry)[layer] : nullptr;
    if (!lc) {
      cuda::check(cudaMemsetAsync(recv, 0, bytes), "conv halo", layer);
      return recv;
    }
    float* cur = lc->tail[lc->parity].reserve(n, "conv halo (carried tail)", layer);
    float* next = lc->tail[lc->parity ^ 1].reserve(n, "conv halo (carried tail)", layer);
    if (!lc->live) cuda::check(cudaMemsetAsync(cur, 0, bytes), "conv halo", layer);
    cuda::check(cudaMemcpyAsync(next, tails + (S - 1) * n, bytes, cudaMemcpyDeviceToDevice), "conv halo (carry)",
                layer);
    lc->parity ^= 1;
    return cur;
  }

  // Where a sharded scan leaves its final state from a zero start, after the state's decays
  // in the same buffer (one per state for Mamba-1, one per head for Mamba-2); null for a
  // whole sequence.
  float* scan_summary(const ModelConfig& c, int64_t n, int layer) {
    if (!shard_ && !host_link_) return nullptr;
    const int64_t nd = decays(c, n);
    return summary_.reserve(nd + n, "scan summary", layer) + nd;
  }
  static int64_t decays(const ModelConfig& c, int64_t n) { return c.family == Family::Mamba1 ? n : c.n_heads; }

  // Joins a slice's scan (run from a zero state, final state in scan_summary) to the slices
  // before it: the (decay, state) prefix over the ranks, the incoming state's share added
  // to y, and the Δ sums of earlier slices added to the slice's cumulative Δ, which is
  // returned ([T, W], the trace's S). n = the scan state's size; C with leading dim ldc.
  const double* join_slice(const ModelConfig& c, const LayerWeights& hw, DeviceLayer& w, int layer, int64_t T,
                           const float* delta, int64_t W, int64_t n, float* y, const float* C, int64_t ldc,
                           bool traced) {
    clock_.start("shard: scan join");
    if (host_link_) return join_slice_host(c, hw, w, layer, T, delta, W, n, y, C, ldc);
    NcclGroup& g = *shard_->nccl;
    const int S = g.size(), r = g.rank();
    const int64_t before = g.bytes_received();
    // A traced layer's trace holds the cumulative Δ of every row (from this slice's first
    // token, then offset); otherwise only the slice's Δ sums are needed, and the cumulative
    // Δ of the rows that the incoming state reaches (made below).
    double* Sl = traced ? cumulative_delta(delta, T, W, layer) : nullptr;
    const double* total = Sl ? Sl + (T - 1) * W : delta_sums(delta, T, W, layer);
    const int64_t nd = decays(c, n);
    float* summary = summary_.get();  // [decays (nd); state (n)]
    if (c.family == Family::Mamba1) cuda::scan_decay_mamba1(w.A.get(), total, W, c.d_state, summary, nullptr, layer);
    else cuda::scan_decay_mamba2(w.A.get(), total, W, summary, nullptr, layer);
    float* all = summary_all_.reserve((nd + n) * S, "scan summaries of all ranks", layer);
    double* totals = totals_all_.reserve(W * S, "delta sums of all ranks", layer);
    g.begin();
    g.allgather(summary, all, static_cast<std::size_t>(nd + n) * sizeof(float), nullptr, "scan state prefix", layer);
    g.allgather(total, totals, static_cast<std::size_t>(W) * sizeof(double), nullptr, "delta sum prefix", layer);
    g.end("scan state and delta sum prefix", layer);
    // A chunked forward starts the prefixes from what the earlier chunks left.
    LayerCarry* lc = shard_->carry ? &(*shard_->carry)[layer] : nullptr;
    const float* carry_state = nullptr;
    const double* carry_sum = nullptr;
    if (lc) {
      float* st = lc->state.reserve(n, "carried scan state", layer);
      double* sum = lc->sum.reserve(W, "carried delta sums", layer);
      if (lc->live) {
        carry_state = st;
        carry_sum = sum;
      }
    }
    if (r > 0 || carry_state) {
      float* h_in = h_in_.reserve(n, "incoming scan state", layer);
      cuda::chain_state_prefix(all, S, r, n, n / nd, carry_state, h_in, nullptr, layer);
      if (Sl) {
        add_incoming_state(c, w, layer, T, Sl, W, h_in, y, C, ldc);
        double* offset = offset_.reserve(W, "delta sum offset", layer);
        cuda::sum_prefix(totals, S, r, W, carry_sum, offset, nullptr, layer);
        cuda::add_row_offset(Sl, T, W, offset, nullptr, layer);
      } else {
        // The incoming state decays along the slice: the cumulative Δ of its first rows, more
        // of them until the state is dead within them (or they are the whole slice).
        for (int64_t k = std::min<int64_t>(T, 8192);; k = std::min<int64_t>(T, 8 * k)) {
          const double* Sk = cumulative_delta(delta, k, W, layer);
          const int64_t live = incoming_live(c, w, layer, k, Sk, W);
          if (k == T || live < k) {
            add_incoming_state(c, w, layer, k, Sk, W, h_in, y, C, ldc, live);
            break;
          }
        }
      }
    }
    if (lc) {  // every rank carries the state and sums after the whole chunk (the same bits)
      cuda::chain_state_prefix(all, S, S, n, n / nd, carry_state, lc->state.get(), nullptr, layer);
      cuda::sum_prefix(totals, S, S, W, carry_sum, lc->sum.get(), nullptr, layer);
      lc->live = true;
    }
    link_bytes_ += g.bytes_received() - before;
    return Sl;
  }

  // The slice's Δ summed over its T rows, per column (W), in fp64.
  const double* delta_sums(const float* delta, int64_t T, int64_t W, int layer) {
    double* total = totals_own_.reserve(W, "delta sums of the slice", layer);
    double* work = cumsum_work_.reserve(cuda::cumulative_sum_work(T, W), "cumulative sum workspace", layer);
    cuda::column_sums(delta, T, W, total, work, nullptr, layer);
    return total;
  }

  // join_slice through a host SequenceLink (MPI between ranks, carried state between chunks):
  // the summaries go down to the host and the incoming state and offsets come back up.
  const double* join_slice_host(const ModelConfig& c, const LayerWeights& hw, DeviceLayer& w, int layer, int64_t T,
                                const float* delta, int64_t W, int64_t n, float* y, const float* C, int64_t ldc) {
    double* Sl = cumulative_delta(delta, T, W, layer);
    std::vector<double> total(static_cast<std::size_t>(W)), offset(static_cast<std::size_t>(W));
    std::vector<float> state(static_cast<std::size_t>(n)), decay(static_cast<std::size_t>(n)),
        h_in(static_cast<std::size_t>(n));
    cuda::check(cudaMemcpy(total.data(), Sl + (T - 1) * W, W * sizeof(double), cudaMemcpyDeviceToHost),
                "scan join (download)", layer);
    cuda::check(cudaMemcpy(state.data(), summary_.get() + decays(c, n), n * sizeof(float), cudaMemcpyDeviceToHost),
                "scan join (download)", layer);
    const bool m1 = c.family == Family::Mamba1;
    const int64_t per = n / W;  // states per column of S: N (Mamba-1) or P N (Mamba-2)
    for (int64_t k = 0; k < n; ++k)
      decay[k] = static_cast<float>(std::exp(static_cast<double>(hw.A[m1 ? k : k / per]) * total[k / per]));
    host_link_->scan_prefix(layer, decay.data(), state.data(), n, h_in.data());
    if (std::any_of(h_in.begin(), h_in.end(), [](float v) { return v != 0.0f; }))
      add_incoming_state(c, w, layer, T, Sl, W, h_in_.upload(h_in.data(), n, "incoming scan state", layer), y, C, ldc);
    host_link_->sum_prefix(layer, total.data(), W, offset.data());
    if (std::any_of(offset.begin(), offset.end(), [](double v) { return v != 0.0; }))
      cuda::add_row_offset(Sl, T, W, offset_.upload(offset.data(), W, "delta sum offset", layer), nullptr, layer);
    return Sl;
  }

  // The rows among the first T where the incoming state still counts (waits for the device).
  int64_t incoming_live(const ModelConfig& c, DeviceLayer& w, int layer, int64_t T, const double* Sl, int64_t W) {
    const bool m1 = c.family == Family::Mamba1;
    return cuda::live_rows(Sl, T, W, w.A.get(), m1 ? c.d_state : 1,
                           live_word_.reserve(1, "live rows (scratch)", layer), nullptr, layer);
  }

  // y += the incoming state h_in's share, C_t · (exp(A S_t) ⊙ h_in), with Sl the slice's own
  // cumulative Δ. The state decays along the slice: past `live` rows its share is exactly 0.
  // `live`: incoming_live() of Sl's rows (live = -1: find it here).
  void add_incoming_state(const ModelConfig& c, DeviceLayer& w, int layer, int64_t T, const double* Sl, int64_t W,
                          const float* h_in, float* y, const float* C, int64_t ldc, int64_t live = -1) {
    const bool m1 = c.family == Family::Mamba1;
    clock_.start("shard: incoming state");
    if (live < 0) live = incoming_live(c, w, layer, T, Sl, W);
    live_rows_total_ += live;
    if (m1) {
      cuda::add_incoming_state_mamba1(y, C, ldc, Sl, w.A.get(), h_in, live, W, c.d_state, nullptr, layer);
    } else {
      cuda::add_incoming_state_mamba2(y, C, ldc, Sl, w.A.get(), h_in, live, c.n_heads, c.head_dim, c.d_state,
                                      c.n_groups, nullptr, layer);
    }
    clock_.start("shard: scan join");
  }

  double* cumulative_delta(const float* delta, int64_t T, int64_t W, int layer) {
    double* S = S_.reserve(T * W, "trace (cumulative delta)", layer);
    double* work = cumsum_work_.reserve(cuda::cumulative_sum_work(T, W), "cumulative sum workspace", layer);
    cuda::cumulative_sum(delta, T, W, S, work, nullptr, layer);
    return S;
  }
  void download_S(LayerTrace* tr, const float* delta, int64_t T, int64_t W, int layer) {
    const double* S = cumulative_delta(delta, T, W, layer);
    stage_.download(tr->S, S, T, W, W, "trace download (S)", layer);
  }

  // Where a family's layer leaves the per-position factors in the forward's buffers.
  struct TraceBuffers {
    const float* v;
    int64_t ldv;
    const float* Z;
    const double* S;
    const float* delta;
    const float* B;
    const float* C;
    int64_t ldbc;
  };
  // A layer's device trace, made before the residual add: r_in is copied aside, and
  // yhat = r_in + o is the residual stream after the add.
  std::shared_ptr<CudaDeviceTrace> device_trace(const ModelConfig& c, const LayerWeights& hw, DeviceLayer& w, int layer,
                                                int64_t T, const float* r, const float* o, const TraceBuffers& b) {
    if (shard_) return gathered_trace(c, hw, w, layer, T, r, o, b);
    const int64_t d = c.d_model;
    float* rin = rin_.reserve(T * d, "device trace (r_in)", layer);
    cuda::check(cudaMemcpyAsync(rin, r, static_cast<std::size_t>(T * d) * sizeof(float), cudaMemcpyDeviceToDevice),
                "device trace (r_in copy)", layer);
    return make_trace(c, hw, w, layer, T, b, rin, r, o);  // r becomes r_in + o with the residual add
  }

  // A device trace of T rows over the buffers b, with r_in, ŷ and o, and the layer's weights
  // (A · log2(e) and the tile kernel's W_out are made on first use).
  std::shared_ptr<CudaDeviceTrace> make_trace(const ModelConfig& c, const LayerWeights& hw, DeviceLayer& w, int layer,
                                              int64_t T, const TraceBuffers& b, const float* r_in, const float* yhat,
                                              const float* o) {
    const int64_t d = c.d_model;
    auto dt = std::make_shared<CudaDeviceTrace>();
    dt->o = o;
    dt->A = w.A.get();
    dt->Wout = w.out_proj.get();
    dt->bout = ptr(w.out_proj_b);
    dt->layer = layer;
    cuda::TileFactors& t = dt->factors;
    t = tile_shape(c, T);
    t.v = b.v;
    t.ldv = b.ldv;
    t.Z = b.Z;
    t.S = b.S;
    t.delta = b.delta;
    t.B = b.B;
    t.C = b.C;
    t.ldbc = b.ldbc;
    t.r_in = r_in;
    t.yhat = yhat;
    t.conv_w = w.conv_w.get();
    t.conv_b = ptr(w.conv_b);
    t.Dskip = w.D_skip.get();
    if (!w.wout_tile) {
      std::vector<float> a2(hw.A.size());
      for (std::size_t k = 0; k < a2.size(); ++k) a2[k] = hw.A[k] * 1.4426950408889634f;
      put(w.A2, a2, "LaTIM factors (A)", layer);
      const cuda::TilePrecision p = tile_precision(precision_);
      const int64_t wn = cuda::latim_tile_wout_elems(d, c.d_inner, p);
      w.wout_tile = p == cuda::TilePrecision::BF16
                        ? static_cast<void*>(w.wout_tile16.reserve(wn, "LaTIM W_out (bf16)", layer))
                        : static_cast<void*>(w.wout_tile32.reserve(wn, "LaTIM W_out", layer));
      cuda::latim_prepare_wout(w.out_proj.get(), d, c.d_inner, p, const_cast<void*>(w.wout_tile), nullptr, layer);
    }
    t.A2 = w.A2.get();
    t.WoutT = w.wout_tile;
    return dt;
  }

  // A sharded forward's device trace: every rank's slice of the layer's factors gathered
  // into whole-sequence buffers (rows in sequence order, dense), so that any rank can
  // compute any tile. Made before the residual add: yhat = r_in + o is formed here.
  std::shared_ptr<CudaDeviceTrace> gathered_trace(const ModelConfig& c, const LayerWeights& hw, DeviceLayer& w,
                                                  int layer, int64_t Tl, const float* r, const float* o,
                                                  const TraceBuffers& b) {
    clock_.start("shard: trace gather");
    const Shard& sh = *shard_;
    // This rank's rows start at a; the chunk's slices at row0 + bounds[q].
    const int64_t T = sh.T(), a = sh.row0 + sh.a(), d = c.d_model, D = c.d_inner;
    const cuda::TileFactors shape = tile_shape(c, T);
    const int64_t W = shape.mamba2 ? c.n_heads : D, BC = shape.ldbc;
    GatheredTrace& dst = sh.keep ? (*sh.keep)[layer] : gathered_;
    float* v = dst.v.reserve(T * D, "gathered trace (v)", layer);
    float* Z = dst.Z.reserve(T * D, "gathered trace (Z)", layer);
    double* S = dst.S.reserve(T * W, "gathered trace (S)", layer);
    float* delta = dst.delta.reserve(T * W, "gathered trace (delta)", layer);
    float* B = dst.B.reserve(T * BC, "gathered trace (B)", layer);
    float* C = dst.C.reserve(T * BC, "gathered trace (C)", layer);
    float* rin = dst.rin.reserve(T * d, "gathered trace (r_in)", layer);
    float* go = dst.o.reserve(T * d, "gathered trace (o)", layer);
    auto own = [&](void* dst, const void* src, int64_t width, std::size_t elem) {
      cuda::check(cudaMemcpyAsync(static_cast<char*>(dst) + a * width * elem, src, Tl * width * elem,
                                  cudaMemcpyDeviceToDevice),
                  "gathered trace (own rows)", layer);
    };
    cuda::copy_rows(b.v, b.ldv, Tl, D, v + a * D, nullptr, layer);
    own(Z, b.Z, D, sizeof(float));
    own(S, b.S, W, sizeof(double));
    own(delta, b.delta, W, sizeof(float));
    cuda::copy_rows(b.B, b.ldbc, Tl, BC, B + a * BC, nullptr, layer);
    cuda::copy_rows(b.C, b.ldbc, Tl, BC, C + a * BC, nullptr, layer);
    own(rin, r, d, sizeof(float));
    own(go, o, d, sizeof(float));
    NcclGroup& g = *sh.nccl;
    const int nr = g.size();
    auto gather = [&](void* buf, int64_t width, std::size_t elem, const char* what) {
      std::vector<std::size_t> bytes(nr), offset(nr);
      for (int q = 0; q < nr; ++q) {
        offset[q] = static_cast<std::size_t>((sh.row0 + sh.bounds[q]) * width) * elem;
        bytes[q] = static_cast<std::size_t>((sh.bounds[q + 1] - sh.bounds[q]) * width) * elem;
      }
      char* own_rows = static_cast<char*>(buf) + offset[g.rank()];
      g.allgatherv(own_rows, buf, bytes, offset, nullptr, what, layer);
    };
    g.begin();
    gather(v, D, sizeof(float), "trace gather (v)");
    gather(Z, D, sizeof(float), "trace gather (Z)");
    gather(S, W, sizeof(double), "trace gather (S)");
    gather(delta, W, sizeof(float), "trace gather (delta)");
    gather(B, BC, sizeof(float), "trace gather (B)");
    gather(C, BC, sizeof(float), "trace gather (C)");
    gather(rin, d, sizeof(float), "trace gather (r_in)");
    gather(go, d, sizeof(float), "trace gather (o)");
    g.end("trace gather", layer);
    if (sh.keep) return nullptr;  // handed over after the last chunk (forward_stage)
    return finish_gathered(c, hw, w, layer, T, dst);
  }

  // The device trace over a whole-sequence GatheredTrace: yhat = r_in + o is formed here.
  std::shared_ptr<CudaDeviceTrace> finish_gathered(const ModelConfig& c, const LayerWeights& hw, DeviceLayer& w,
                                                   int layer, int64_t T, GatheredTrace& g) {
    const int64_t d = c.d_model, D = c.d_inner;
    const cuda::TileFactors shape = tile_shape(c, T);
    const int64_t BC = shape.ldbc;
    float* yhat = g.yhat.reserve(T * d, "gathered trace (yhat)", layer);
    cuda::check(cudaMemcpyAsync(yhat, g.rin.get(), static_cast<std::size_t>(T * d) * sizeof(float),
                                cudaMemcpyDeviceToDevice),
                "gathered trace (yhat)", layer);
    cuda::residual_add(yhat, g.o.get(), T * d, nullptr, layer);
    return make_trace(c, hw, w, layer, T, {g.v.get(), D, g.Z.get(), g.S.get(), g.delta.get(), g.B.get(), g.C.get(), BC},
                      g.rin.get(), yhat, g.o.get());
  }

  Precision precision_;
  cuda::MathMode mode_;
  std::unique_ptr<TileBackend> tiles_;
  std::string device_name_;
  cuda::Blas blas_;
  StageClock clock_;
  PinnedStage stage_;
  cudaEvent_t ev0_ = nullptr, ev1_ = nullptr;
  double last_device_seconds_ = 0;
  DeviceArray<float> embedding_;
  DeviceArray<int64_t> tokens_;
  std::vector<const void*> model_key_;
  std::vector<float> model_sample_;
  std::vector<DeviceLayer> layers_;
  DeviceArray<float> norm_f_;
  DeviceArray<float> r_, u_, proj_, x_, xdbl_, delta_, y_, gate_, gamma_, o_, scan_work_, rin_, c32_;
  DeviceArray<uint16_t> u16_, y16_;  // bf16 operands of in_proj and out_proj (bf16 mode)
  DeviceArray<uint16_t> proj16_, x16_;  // in_proj's and the conv's bf16 outputs (bf16 mode, untraced layers)
  DeviceArray<uint16_t> ys16_;          // the SSD scan's bf16 output (bf16 mode, untraced unsharded layers)
  DeviceArray<uint16_t> dt_in16_, dt16_;  // Mamba-1 dt_proj's bf16 input and output (the same layers)
  DeviceArray<double> S_, cumsum_work_;
  // The sharded forward (forward_shard).
  std::unique_ptr<NcclGroup> nccl_;
  Shard* shard_ = nullptr;
  SequenceLink* host_link_ = nullptr;  // forward_layers()'s link
  LayerTrace slice_trace_;
  int64_t link_bytes_ = 0;  // this forward_shard or forward_stage call's bytes joining slices
  int64_t live_rows_total_ = 0;  // rows that added an incoming state (LATIM_CUDA_PROFILE)
  DeviceArray<float> halo_send_, halo_recv_, halo_all_, summary_, summary_all_, h_in_;
  DeviceArray<double> totals_all_, offset_, totals_own_;
  DeviceArray<unsigned long long> live_word_;
  GatheredTrace gathered_;
  std::unique_ptr<NcclGroup> world_nccl_;  // forward_stage(): the residual stream between stages
};

}  // namespace

double cuda_forward_device_seconds(const ComputeBackend& backend) {
  const auto* b = dynamic_cast<const CudaBackend*>(&backend);
  return b ? b->last_device_seconds() : -1.0;
}

std::unique_ptr<ComputeBackend> make_cuda_backend(Precision precision, int local_rank) {
  int n = 0;
  cuda::check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  if (n > 0) cuda::check(cudaSetDevice(local_rank % n), "cudaSetDevice");
  return std::make_unique<CudaBackend>(precision);
}

}  // namespace latim
