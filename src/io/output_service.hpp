// OutputService: every rank hands finished output (encoded map chunks, vector rows,
// logits rows) to the rank that owns the HDF5 file. On that rank a writer thread drains a
// bounded in-process queue and messages from other ranks, so computation never waits for
// the disk and the file is the same whatever the number of ranks.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "latim/comm.hpp"
#include "latim/hdf5_writer.hpp"

namespace latim {

class OutputService {
 public:
  // `writer` is non-null on the world root only. `world` must be a communicator used by
  // nothing else (the service receives from any rank on it).
  OutputService(Group world, Hdf5InteractionWriter* writer, std::size_t max_queued_bytes = std::size_t{1} << 28);
  ~OutputService();
  OutputService(const OutputService&) = delete;
  OutputService& operator=(const OutputService&) = delete;

  // One shuffle+deflate-encoded chunk of a 2-D layer dataset (a map or a rows dataset),
  // whose first element is (row0, col0).
  void put_chunk(int layer, const std::string& name, int64_t row0, int64_t col0, std::vector<unsigned char> bytes);
  void put_logits_rows(int64_t row0, int64_t nrows, const std::vector<float>& rows);
  // Rows [row0, row0 + nrows) of a [rows] or [rows, width] dataset created beforehand.
  void put_layer_rows(int layer, const std::string& name, Hdf5InteractionWriter::Type type, int64_t row0,
                      int64_t nrows, const void* data, std::size_t nbytes);
  // Marks a row panel complete; sent after its chunks, so the flag never precedes the data.
  void put_panel_done(int layer, int64_t panel);
  // Sends this rank's end marker; on the root, waits until every rank's output is written.
  // Rethrows a failure of the writer thread.
  void finish();

 private:
  struct Message {
    std::vector<unsigned char> bytes;  // header + name + payload, as on the wire
  };
  void post(std::vector<unsigned char> msg);
  void writer_loop();
  void apply(const std::vector<unsigned char>& msg);
  void check_failed();

  Group world_;
  Hdf5InteractionWriter* writer_;
  std::size_t max_bytes_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Message> queue_;
  std::size_t queued_bytes_ = 0;
  int done_ranks_ = 0;
  bool local_done_ = false;
  std::exception_ptr failure_;
  std::thread thread_;
};

}  // namespace latim
