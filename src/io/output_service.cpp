// The writer thread of the root rank and the message format every rank uses to reach it.
#include "io/output_service.hpp"

#include <chrono>
#include <cstring>

#include "latim/error.hpp"

namespace latim {

namespace {

constexpr int kTagOutput = 7001;

enum Kind : int32_t { kChunk = 1, kLogitsRows = 3, kDone = 4, kPanelDone = 5, kRowsF32 = 6, kRowsI64 = 7 };

// A killed run keeps what was flushed: the writer flushes at least this often.
constexpr double kFlushSeconds = 10.0;

struct Header {
  int32_t kind;
  int32_t layer;
  int32_t name_len;
  int32_t pad;
  int64_t row0;
  int64_t col0;
  int64_t nrows;
  int64_t payload;
};

std::vector<unsigned char> pack(Kind kind, int layer, const std::string& name, int64_t row0, int64_t col0,
                                int64_t nrows, const void* payload, std::size_t nbytes) {
  Header h{kind, layer, static_cast<int32_t>(name.size()), 0, row0, col0, nrows, static_cast<int64_t>(nbytes)};
  std::vector<unsigned char> out(sizeof h + name.size() + nbytes);
  std::memcpy(out.data(), &h, sizeof h);
  std::memcpy(out.data() + sizeof h, name.data(), name.size());
  if (nbytes) std::memcpy(out.data() + sizeof h + name.size(), payload, nbytes);
  return out;
}

}  // namespace

OutputService::OutputService(Group world, Hdf5InteractionWriter* writer, std::size_t max_queued_bytes)
    : world_(world), writer_(writer), max_bytes_(max_queued_bytes) {
  if (world_.is_root()) {
    if (!writer_) fail("internal: the root rank's OutputService needs a writer");
    thread_ = std::thread([this] { writer_loop(); });
  }
}

OutputService::~OutputService() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      local_done_ = true;
      done_ranks_ = world_.size();  // abandon remote ranks: the run is failing
    }
    cv_.notify_all();
    thread_.join();
  }
}

void OutputService::check_failed() {
  std::lock_guard<std::mutex> lk(mu_);
  if (failure_) std::rethrow_exception(failure_);
}

void OutputService::post(std::vector<unsigned char> msg) {
  if (!world_.is_root()) {
    world_.send(msg.data(), msg.size(), 0, kTagOutput);
    return;
  }
  std::unique_lock<std::mutex> lk(mu_);
  // Bounded queue: the producer waits while the writer is behind by max_bytes_.
  cv_.wait(lk, [&] { return failure_ || queued_bytes_ + msg.size() <= max_bytes_ || queue_.empty(); });
  if (failure_) std::rethrow_exception(failure_);
  queued_bytes_ += msg.size();
  queue_.push_back({std::move(msg)});
  lk.unlock();
  cv_.notify_all();
}

void OutputService::put_chunk(int layer, const std::string& name, int64_t row0, int64_t col0,
                               std::vector<unsigned char> bytes) {
  post(pack(kChunk, layer, name, row0, col0, 0, bytes.data(), bytes.size()));
}

void OutputService::put_logits_rows(int64_t row0, int64_t nrows, const std::vector<float>& rows) {
  post(pack(kLogitsRows, 0, "", row0, 0, nrows, rows.data(), rows.size() * sizeof(float)));
}

void OutputService::put_layer_rows(int layer, const std::string& name, Hdf5InteractionWriter::Type type, int64_t row0,
                                   int64_t nrows, const void* data, std::size_t nbytes) {
  post(pack(type == Hdf5InteractionWriter::Type::F32 ? kRowsF32 : kRowsI64, layer, name, row0, 0, nrows, data, nbytes));
}

void OutputService::put_panel_done(int layer, int64_t panel) {
  post(pack(kPanelDone, layer, "", panel, 0, 0, nullptr, 0));
}

void OutputService::finish() {
  post(pack(kDone, 0, "", 0, 0, 0, nullptr, 0));
  if (!world_.is_root()) return;
  thread_.join();
  check_failed();
}

void OutputService::apply(const std::vector<unsigned char>& msg) {
  Header h;
  std::memcpy(&h, msg.data(), sizeof h);
  const std::string name(reinterpret_cast<const char*>(msg.data()) + sizeof h, h.name_len);
  const unsigned char* payload = msg.data() + sizeof h + h.name_len;
  switch (h.kind) {
    case kChunk:
      writer_->write_encoded_chunk(h.layer, name, h.row0, h.col0, std::vector<unsigned char>(payload, payload + h.payload));
      break;
    case kLogitsRows:
      writer_->write_logits_rows(h.row0, h.nrows, reinterpret_cast<const float*>(payload));
      break;
    case kRowsF32:
      writer_->write_layer_rows(h.layer, name, Hdf5InteractionWriter::Type::F32, h.row0, h.nrows, payload);
      break;
    case kRowsI64:
      writer_->write_layer_rows(h.layer, name, Hdf5InteractionWriter::Type::I64, h.row0, h.nrows, payload);
      break;
    case kPanelDone:
      writer_->mark_panel_done(h.layer, h.row0);
      break;
    case kDone:
      break;
    default:
      fail("internal: unknown output message kind ", h.kind);
  }
}

void OutputService::writer_loop() {
  try {
    int remote_done = 0;
    bool local_done = false;
    const int remote_ranks = world_.size() - 1;
    auto last_flush = std::chrono::steady_clock::now();
    while (!local_done || remote_done < remote_ranks) {
      bool worked = false;
      if (std::chrono::steady_clock::now() - last_flush > std::chrono::duration<double>(kFlushSeconds)) {
        writer_->flush();
        last_flush = std::chrono::steady_clock::now();
      }
      // Messages from other ranks (HDF5 is touched by this thread only).
      int source = 0;
      std::size_t bytes = 0;
      while (remote_done < remote_ranks && world_.iprobe(kTagOutput, &source, &bytes)) {
        std::vector<unsigned char> msg(bytes);
        world_.recv(msg.data(), bytes, source, kTagOutput);
        Header h;
        std::memcpy(&h, msg.data(), sizeof h);
        if (h.kind == kDone) ++remote_done;
        else apply(msg);
        worked = true;
      }
      std::unique_lock<std::mutex> lk(mu_);
      if (done_ranks_ >= world_.size()) break;  // abandoned by the destructor
      if (!queue_.empty()) {
        Message m = std::move(queue_.front());
        queue_.pop_front();
        queued_bytes_ -= m.bytes.size();
        lk.unlock();
        cv_.notify_all();
        Header h;
        std::memcpy(&h, m.bytes.data(), sizeof h);
        if (h.kind == kDone) local_done = true;
        else apply(m.bytes);
        continue;
      }
      if (!worked) cv_.wait_for(lk, std::chrono::milliseconds(remote_ranks > 0 ? 1 : 50));
    }
  } catch (...) {
    std::lock_guard<std::mutex> lk(mu_);
    failure_ = std::current_exception();
    cv_.notify_all();
  }
}

}  // namespace latim
