// Hopper (sm_90a) warpgroup matrix products: the pieces the wgmma kernels share (the LaTIM
// tile kernel and the Mamba-2 SSD output pass). Device code exists only where the compiler
// targets sm_90a (LATIM_WGMMA_DEVICE).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LATIM_WGMMA_DEVICE 1
#endif

namespace latim::cuda::wgmma {

#ifdef LATIM_WGMMA_DEVICE
__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}
// Shared-memory matrix descriptor: 128-byte swizzle, K-major, 8-row atoms 1024 bytes apart.
__device__ __forceinline__ uint64_t sw128_desc(unsigned addr) {
  return static_cast<uint64_t>((addr & 0x3FFFFu) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}
// Byte offset of 16-byte chunk `ch` of row `row` in a 128-byte-swizzled tile.
__device__ __forceinline__ unsigned sw128(int row, int ch) {
  return static_cast<unsigned>(row * 128 + ((ch ^ (row & 7)) << 4));
}
__device__ __forceinline__ unsigned pack_bf16(float a, float b) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  unsigned u;
  memcpy(&u, &h, 4);
  return u;
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
#endif  // LATIM_WGMMA_DEVICE

}  // namespace latim::cuda::wgmma
