// Owning device allocations. An allocation that fails says what it was for, how much was
// asked and how much is free, and what to change, instead of a bare CUDA error code.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

#include "cuda_check.hpp"

namespace latim::cuda {

// Whether a pointer is a multiple of 16 (or 8) bytes: what vector loads and cp.async need.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
inline bool aligned8(const void* p) { return reinterpret_cast<uintptr_t>(p) % 8 == 0; }

inline std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

// cudaMalloc with a message naming the buffer on failure (`what` e.g. "LaTIM tile scratch").
inline void* device_alloc(std::size_t bytes, const std::string& what, int layer = -1) {
  if (bytes == 0) return nullptr;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the sticky-free error so later calls work
    std::size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail("CUDA out of memory allocating ", what, layer >= 0 ? " (layer " + std::to_string(layer) + ")" : std::string(),
         ": asked for ", gib(static_cast<double>(bytes)), ", ", gib(static_cast<double>(free_b)), " free of ",
         gib(static_cast<double>(total_b)), "; use a smaller --tile, fewer tokens per rank, or more ranks");
  }
  check(e, ("cudaMalloc for " + what).c_str(), layer);
  return p;
}

// A typed device array that only grows (reserve keeps the contents only when no growth is needed).
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept { swap(o); }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      release();
      swap(o);
    }
    return *this;
  }
  ~DeviceArray() { release(); }

  // Ensures room for n elements; returns the pointer. Contents are undefined after growth.
  T* reserve(int64_t n, const std::string& what, int layer = -1) {
    if (n > capacity_) {
      release();
      ptr_ = static_cast<T*>(device_alloc(static_cast<std::size_t>(n) * sizeof(T), what, layer));
      capacity_ = n;
    }
    size_ = n;
    return ptr_;
  }
  // Uploads n host elements (synchronous).
  T* upload(const T* host, int64_t n, const std::string& what, int layer = -1) {
    reserve(n, what, layer);
    if (n > 0) check(cudaMemcpy(ptr_, host, static_cast<std::size_t>(n) * sizeof(T), cudaMemcpyHostToDevice), what.c_str(), layer);
    return ptr_;
  }
  void release() {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    capacity_ = size_ = 0;
  }
  T* get() const { return ptr_; }
  int64_t size() const { return size_; }
  std::size_t bytes() const { return static_cast<std::size_t>(size_) * sizeof(T); }

 private:
  void swap(DeviceArray& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(capacity_, o.capacity_);
    std::swap(size_, o.size_);
  }
  T* ptr_ = nullptr;
  int64_t capacity_ = 0, size_ = 0;
};

}  // namespace latim::cuda
