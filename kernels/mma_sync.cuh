// The warp-level tensor-core instructions of the mma.sync kernels (the SSD scan's tf32
// passes, the LaTIM tile kernel, conv_xproj), one definition each.
// Fragments as in the PTX ISA (g = lane / 4, q = lane % 4):
//   m16n8k8 tf32:  A 16 x 8 (row): a0 (m g, k q), a1 (m g + 8, k q), a2 (m g, k q + 4),
//                  a3 (m g + 8, k q + 4); B 8 x 8 (col): b0 (k q, n g), b1 (k q + 4, n g);
//   m16n8k16 bf16: each register two bf16 along k; A: a0 (m g, k 2q..), a1 (m g + 8, k 2q..),
//                  a2 (m g, k 2q + 8..), a3 (m g + 8, k 2q + 8..); B: b0 (k 2q.., n g),
//                  b1 (k 2q + 8.., n g);
//   C 16 x 8:      c0 (m g, n 2q), c1 (m g, n 2q + 1), c2 (m g + 8, n 2q), c3 (m g + 8, n 2q + 1).
#pragma once
#include <cstdint>

namespace latim::cuda {

// d += a b, m16n8k8, tf32 operands, fp32 accumulators.
__device__ __forceinline__ void mma_tf32(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// d += a b, m16n8k16, bf16 operands, fp32 accumulators.
__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// d += a b, m16n8k16, fp16 operands, fp32 accumulators (fragments as for bf16).
__device__ __forceinline__ void mma_f16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Four 8 x 8 b16 matrices from shared memory (addr: this lane's row, a shared-space
// address; lanes 8m..8m + 7 give the rows of matrix m), and the same transposed.
__device__ __forceinline__ void ldmatrix_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3,
                                                  unsigned addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

}  // namespace latim::cuda
