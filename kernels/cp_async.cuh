// cp.async, the asynchronous global-to-shared copies the staging kernels issue (sm_80 on):
// one definition for the Mamba-1 scan, the SSD passes, conv_xproj and the LaTIM tile kernels.
#pragma once

namespace latim::cuda {

// 16 bytes global -> shared (dst a shared-space address), or 16 zero bytes where !ok (src is
// then not read).
__device__ __forceinline__ void cp_async16_or_zero(unsigned dst, const void* src, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(ok ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async16_or_zero(void* dst, const void* src, bool ok) {
  cp_async16_or_zero(static_cast<unsigned>(__cvta_generic_to_shared(dst)), src, ok);
}
// 16 bytes global -> shared, always.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src));
}
// The zero-fill copies of 16 and 4 bytes (the 4-byte one through L1) with the source passed
// as a global-space address, as the SSD scan's tf32 passes issue them. (The generic-address
// forms above and these compile to different code around them; each kernel keeps the form it
// was measured with.)
__device__ __forceinline__ void cp_async16_global_or_zero(float* dst, const float* src, bool ok) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(__cvta_generic_to_global(src)),
               "r"(ok ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async4_global_or_zero(float* dst, const float* src, bool ok) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(__cvta_generic_to_global(src)),
               "r"(ok ? 4 : 0)
               : "memory");
}
// Closes this thread's group of copies issued since the last commit.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { cp_async_wait<0>(); }

}  // namespace latim::cuda
