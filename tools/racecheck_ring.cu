// Does compute-sanitizer's racecheck follow the wgmma tile kernel's input-slot protocol? A
// 2-slot ring over 6 rounds: warps 0-3 wait for slot n % 2's `free` phase, copy into it with
// cp.async and arrive on its `full` barrier when the copies land
// (cp.async.mbarrier.arrive.noinc); the consumers wait on `full`, read, and release the slot.
//   MODE 0: one consumer warpgroup meets at a named barrier, then one thread arrives on `free`;
//   MODE 1: every consumer thread arrives on `free` (count 128);
//   MODE 2: as 0, with the zero-fill form of cp.async that the kernel uses (src-size operand);
//   MODE 3: as 2, with two consumer warpgroups (named barriers 2 and 3, `free` count 2).
// On an H100 (CUDA 13.0) racecheck reports 0 hazards for every mode, while it reports hazards
// between the kernel's slot copies and its u-build reads (docs/performance-cuda.md, open items).
//   nvcc -gencode arch=compute_90a,code=sm_90a -lineinfo -o racecheck_ring tools/racecheck_ring.cu
//   compute-sanitizer --tool racecheck ./racecheck_ring
#include <cstdio>
#include <cuda_runtime.h>
__device__ __forceinline__ void wait(unsigned b, unsigned par) {
  asm volatile("{\n.reg .pred done;\nW_%=:\nmbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1, %2;\n@!done bra W_%=;\n}\n"
               ::"r"(b), "r"(par), "r"(0x989680) : "memory");
}
template <int MODE>
__global__ void __launch_bounds__(384) ring(const float* in, float* out) {
  __shared__ alignas(16) float buf[2][128 * 4];
  __shared__ alignas(8) unsigned long long full[2], freeb[2];
  auto sa = [](const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); };
  if (threadIdx.x == 0)
    for (int s = 0; s < 2; ++s) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sa(&full[s])), "r"(128));
      asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(sa(&freeb[s])), "r"(MODE == 1 ? 128 : MODE == 3 ? 2 : 1));
    }
  __syncthreads();
  float acc = 0;
  for (unsigned n = 0; n < 6; ++n) {
    const int s = n % 2;
    if (threadIdx.x < 128) {
      wait(sa(&freeb[s]), ((n / 2) & 1u) ^ 1u);
      if (MODE >= 2)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(sa(&buf[s][4 * threadIdx.x])),
                     "l"(in + 4 * threadIdx.x), "r"(threadIdx.x % 3 ? 16 : 0) : "memory");
      else
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(sa(&buf[s][4 * threadIdx.x])),
                     "l"(in + 4 * threadIdx.x) : "memory");
      asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(sa(&full[s])) : "memory");
    } else if (threadIdx.x < 256 || MODE == 3) {
      const int c = threadIdx.x < 256 ? 0 : 1;
      wait(sa(&full[s]), (n / 2) & 1u);
      const int i = (threadIdx.x - 128) % 128;
      acc += buf[s][4 * ((i + 5) % 128)] + buf[s][4 * ((i + 7) % 128) + 3];
      if (MODE != 1) {
        if (c == 0) asm volatile("bar.sync 2, 128;" ::: "memory");
        else asm volatile("bar.sync 3, 128;" ::: "memory");
        if (threadIdx.x % 128 == 0) asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(sa(&freeb[s])) : "memory");
      } else {
        asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(sa(&freeb[s])) : "memory");
      }
    }
  }
  if (threadIdx.x >= 128 && threadIdx.x < 256) out[threadIdx.x - 128] = acc;
}
int main() {
  float *in, *out;
  cudaMalloc(&in, 512 * 4); cudaMalloc(&out, 128 * 4); cudaMemset(in, 0, 512 * 4);
  ring<0><<<1, 256>>>(in, out); ring<1><<<1, 256>>>(in, out); ring<2><<<1, 256>>>(in, out);
  ring<3><<<1, 384>>>(in, out);
  printf("done: %s\n", cudaGetErrorString(cudaDeviceSynchronize()));
}
