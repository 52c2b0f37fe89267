// The Hopper (sm_90a) LaTIM tile kernel in bf16, for Mamba-2 and (d_state 16) Mamba-1:
// warp-specialised, with the product on wgmma. Same pair blocks (8 targets x 16 sources = 128
// pairs), same operand u_{ij} = Z_i ⊙ Σ_k M_{i,j+k} x_{j+k←j} and the same partial scores as
// latim_tile.cu, which stays the kernel for every other case (fp32/tf32, other GPUs, conv
// width ≠ 4, channels not a multiple of 64, Mamba-1 with d_state ≠ 16). The description
// below is Mamba-2's; Mamba-1's differences are at `namespace m1`.
//
// A block has three warpgroups and stays resident (one per SM, persistent over pair blocks):
//   - warpgroup 0, the producer (88 registers, the consumers 208): per pair block it computes
//     M for every head (prologue) and stages each slab's Z and v rows, conv taps and
//     bias in one of three input slots, two slabs ahead. For each column block of W_out (256
//     columns) and each slab of 64 inner channels it fills a pipeline stage with the W_out slab
//     (256 x 64 bf16, one bulk copy of a pre-swizzled image); in the later column blocks also
//     with the u slab (128 pairs x 64 channels, bf16), copied back from the block's scratch.
//   - warpgroups 1 and 2, the consumers: each owns 64 pairs (4 targets x 16 sources). In the
//     first column block each builds its own u rows of the slab on CUDA cores, while the
//     tensor cores run its products of the slab before, and bulk-stores them to the block's
//     scratch. Each multiplies its 64 pairs of the stage's u by the W_out slab with four
//     wgmma.m64n256k16 (both operands from shared memory, fp32 accumulators in registers),
//     frees the stage, and after the last slab reduces its 64 x 256 block of T_i(x_j) to the
//     partial scores, as the mma.sync kernel does.
// Both operands use the 128-byte swizzled K-major layout (rows of 64 bf16 = 128 B, 16-byte
// chunk c of row r stored at chunk c ^ (r % 8)), which is what the descriptors say.
//
// Measured on the H100 (T = 16K, 4096-token tiles, l2 only), the steps that got it here:
// 1.1e8 pairs/s with one producer warpgroup building u; 1.44e8 once the producer's warps no
// longer waited for each other within a slab; the consumers building their own u (this
// version) is in docs/performance-cuda.md. Tried and dropped: two producer warpgroups (the
// consumers need the registers), and clusters of two blocks multicasting W_out (7.7e7: the
// blocks wait for each other). The factored Mamba-1 launch in such clusters, multicasting
// W_out and R (git show ec0d35c), read a third less from L2 and ran 4 % slower: the kernel
// is not bound by L2 bandwidth.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "cuda_check.hpp"
#include "device_buffer.hpp"
#include "device_math.cuh"
#include "latim_tile.hpp"
#include "latim_tile_common.cuh"
#include "latim_tile_swizzle.hpp"
#include "latim_tile_wgmma.hpp"
#include "mma_sync.cuh"
#include "wgmma_common.cuh"

namespace latim::cuda {

namespace {

using namespace tile_common;
using namespace slot_swizzle;
using namespace wgmma;

constexpr int kBN = 256;                           // W_out columns per pass (one wgmma N)
constexpr int kBK = 64;                            // inner channels per slab (128 bytes of bf16)
constexpr int kThreads = 384;                      // producer + two consumer warpgroups
constexpr int kStageU = kBM * kBK * 2;             // 16 KiB
constexpr int kStageW = kBN * kBK * 2;             // 32 KiB
constexpr int kStage = kStageU + kStageW;
// Slots of slab inputs: the producer stages slab k + 2 while the consumers build slab k, and
// a slot is refilled only after both consumer warpgroups have built from it (its `free`
// barrier).
constexpr int kSlots = 3;
// A consumer warp signals that its u rows of slab k are in the scratch when it stores those of
// slab k + kStoreLag (and all the last ones at the end of the pass): waiting for a bulk store's
// writes to land right after issuing it stalled the warp.
constexpr int kStoreLag = 4;

struct Layout {
  int64_t bars, stages, z, v, cw, cb, ms, rows, total;
  M2Offsets m2;
  int64_t m1slots, m1cb, m1hat;  // Mamba-1 only (see m1)
  int64_t ring;                  // Mamba-1 with u factored (see rf)
  int nstages;
};

// Mamba-1 (template argument M1). There is no M prologue: M_{i,l}[c] has D·N exponentials
// per (i, l), so the consumers compute it for each slab as they build u, while the tensor cores
// run the slab before. The producer only copies: per slab, into one of kSlotsM1 slots (offsets
// in floats below), the Z rows, the conv taps x_{j+k←j} of every source (computed for the
// launch's sources by m1_taps_kernel before the tile kernel: they depend on the source alone),
// the Δ rows of the positions and of the targets after the first, A·log2(e) (rows of N = 16),
// D, and the S rows (fp64) of the first target ib and the first source jb. The consumers take
// S_ib - S_jb in fp64 and round it once, and add up Δ for the rest: S_l - S_jb =
// Σ_{jb < m <= l} Δ_m and S_i - S_ib = Σ_{ib < m <= i} Δ_m, at most 18 and 7 terms in fp32.
// Per pair block the prologue stages the B rows of the positions and the C rows of the
// targets (0 past T and past the tile).
//
// A block whose positions all precede its targets (jb + kNL - 1 < ib, all but about two
// source blocks per target block) takes a factorised path instead. With S_R = S_ib, S
// non-decreasing and A < 0,
//   2^(a (S_i - S_l)) = 2^(a (S_i - S_R)) · 2^(a (S_R - S_l)),  both exponents <= 0,
// so M_{i,l}[c] = Δ_l Σ_n P_i[c,n] Q_l[c,n] with P_i = C_i 2^(a (S_i - S_R)) and
// Q_l = B_l 2^(a (S_R - S_l)): 8 + 19 exponentials per (c, n) and block instead of 8 · 19.
// Neither factor can overflow, and one underflows only where the exact product is below
// 2^-126 too. The inequality is strict: every position then precedes every target, so the
// skip term D (on M_{i,i}) never falls in such a block.
//
// Without the hidden attention (which needs M_{i,j} itself), a launch of fast blocks factors
// u instead (template argument RF, namespace rf): with the reference S_R = S_e at the block's
// last position e = jb + kNL - 1 (S_l <= S_R <= S_i for every position l and target i),
//   u_{ij}[c] = Z_i[c] Σ_n P_i[c,n] R_j[c,n],   P_i = C_i 2^(a (S_i - S_R)),
//   R_j[c,n] = Σ_k x_{j+k←j}[c] Δ_{j+k}[c] B_{j+k}[n] 2^(a (S_R - S_{j+k}[c])),
// where R depends on the source block alone: m1_rfac_kernel computes it once per launch
// (exact exp2f, fp64 gaps, stored in fp16 with a power-of-two scale per source and channel),
// and producer warp 3 bulk-copies it in chunks of 16 channels through a ring (the other
// producer warps stage the slots). Per slab, the consumers compute P (4 exponentials per
// lane and pair of channels) and multiply it by R on the tensor cores (see rf): no
// exponential per position, and no sum over the states on CUDA cores. The pair blocks are
// taken source-block major, so that the blocks resident at one time read the same R from
// L2. The diagonal band of slow blocks runs in a second launch of the M1 kernel (band_only).
// H100, T = 16K, l2: 1.62-1.64e8 pairs/s (the build on CUDA cores, fp32 R: 1.42-1.46e8;
// the unfactored path 1.00e8; docs/performance-cuda.md).
namespace m1 {
constexpr int kSlotsM1 = 2;
constexpr int kNS = 16;  // d_state the Mamba-1 path takes
constexpr int kZ = 0, kTap = kZ + kBI * kBK, kDl = kTap + kKMax * kBJ * kBK, kA2 = kDl + kNL * kBK,
              kDsk = kA2 + kBK * kNS, kDt = kDsk + kBK,  // kDt: Δ of targets ib + 1 .. ib + kBI - 1
    kS = kDt + (kBI - 1) * kBK,                          // kS: fp64 rows S_ib, S_jb
    kSlotFloats = kS + 2 * 2 * kBK;
}  // namespace m1

// Mamba-1 with u factored (RF, see m1). The build runs on the tensor cores: per channel c,
// the 16 x 8 block u_{ij}[c] / Z_i[c] (sources x targets) is R_c P_c, R_c the 16 x 16 matrix
// of the block's sources and states, P_c that of the states and targets, one mma.m16n8k16
// (fp16 operands with power-of-two scales, fp32 sums). A consumer warp takes 16 channels of
// the slab for its warpgroup's 4 targets, two channels at a time: the 8 columns of the product are (target t,
// channel 2p + e) at column 2t + e, so each of the two mmas (one per channel) has P in every
// other column and 0 in the rest, and a lane ends with two adjacent channels of its pairs,
// one bf16x2 to store. R of a source block and slab is copied in kChunks chunks of 16
// channels (one per consumer warp of each warpgroup) into a ring of kRing chunks. A chunk
// holds R_j[c, n] 2^-e_jc in fp16, [channel][source][state], 32 bytes per source, the two
// 16-byte halves of the states swapped for sources with bit 2 set (so that ldmatrix's 8 rows
// hit every bank once), then the scales 2^e_jc in bf16, [source][channel]; e_jc puts the
// largest |R_j[c, n]| of the (source, channel) in [1, 2). P is scaled likewise per (target,
// channel), by 2^(a_max s + e_C): a_max the channel's largest A·log2(e), e_C the exponent of
// the target's largest |C|. The scales come back in fp32 on the product, so the fp16 range
// costs no precision (bf16 operands measured 2x the error of a plain bf16 implementation).
// The slot holds the rest per slab: Z rows, A·log2(e) - a_max rows and a_max (computed once
// per launch by m1_rfac_kernel), and the fp64 S rows of the block's targets and of its
// reference position.
namespace rf {
constexpr int kChunkChannels = 16;
constexpr int kChunks = kBK / kChunkChannels;                   // 4, one per consumer warp
constexpr int kChunkElems = kChunkChannels * kBJ * m1::kNS;     // fp16 R
constexpr int kChunkScales = kBJ * kChunkChannels;              // bf16 2^e
constexpr int kChunkBytes = (kChunkElems + kChunkScales) * 2;   // 8.5 KiB
constexpr int kRing = 5;
// kA2: A·log2(e) - a_max rows (a_max: the channel's largest A·log2(e)); kS: fp64 rows S_i
// (kBI), S_R; kAm: a_max of the slab's channels
constexpr int kZ = 0, kA2 = kZ + kBI * kBK, kS = kA2 + kBK * m1::kNS, kAm = kS + 2 * (kBI + 1) * kBK,
              kSlotFloats = kAm + kBK;
// The reference position of the source block at jb: its last position, or the sequence's.
__host__ __device__ inline int64_t ref_position(int64_t jb, int64_t T) {
  return jb + kNL - 1 < T ? jb + kNL - 1 : T - 1;
}
// Where R of source block mb (the launch's mb-th) and slab begins, in 16-bit units: kChunks chunks.
__host__ __device__ inline int64_t offset(int64_t mb, int64_t slab, int64_t nslab) {
  return (mb * nslab + slab) * kChunks * (kChunkElems + kChunkScales);
}
// After R of the launch's njb source blocks (offset(njb, 0, nslab)): A·log2(e) - a_max
// [D][kNS], then a_max [D], in fp32, written by m1_rfac_kernel once per launch: their floats,
// and where they start in the scratch R.
__host__ __device__ inline int64_t arel_floats(int64_t D) { return D * (m1::kNS + 1); }
__device__ inline float* arel(__half* R, int64_t njb, int64_t nslab) {
  return reinterpret_cast<float*>(R + offset(njb, 0, nslab));
}
__device__ inline const float* arel(const __half* R, int64_t njb, int64_t nslab) {
  return reinterpret_cast<const float*>(R + offset(njb, 0, nslab));
}
// Where state n of source jj and channel k (of its chunk) lies in a chunk, in bf16.
__host__ __device__ inline int in_chunk(int k, int jj, int n) {
  return (k * kBJ + jj) * m1::kNS + (((n >> 3) ^ ((jj >> 2) & 1)) << 3) + (n & 7);
}
}  // namespace rf

// Shared memory: the barriers, `nstages` pipeline stages (1024-byte aligned for the swizzle),
// the producer's kSlots slots of slab inputs (Z, v, conv weights and bias) and its M prologue.
[[maybe_unused]] __host__ __device__ inline Layout layout(int nstages, int64_t H, int64_t GN, int64_t G,
                                                          int64_t nslab, bool mamba1 = false, bool rfac = false) {
  Layout L{};
  int64_t off = 0;
  L.nstages = nstages;
  // full, empty; inputs full, inputs free; M free, M ready; one `stored` per slab; R chunk
  // full (two per slot), R chunk free
  L.bars = take(off, 8 * (2 * nstages + 2 * kSlots + 2 + nslab + 3 * rf::kRing), 8);
  L.stages = take(off, int64_t{kStage} * nstages, 1024);
  if (rfac) {
    L.m1slots = take(off, int64_t{m1::kSlotsM1} * rf::kSlotFloats * 4);
    L.ring = take(off, int64_t{rf::kRing} * rf::kChunkBytes, 128);
    L.m1cb = take(off, int64_t{kBI} * m1::kNS * 4);  // C rows (the B rows are in R)
  } else if (mamba1) {
    L.m1slots = take(off, int64_t{m1::kSlotsM1} * m1::kSlotFloats * 4);
    L.m1cb = take(off, int64_t{kNL + kBI} * m1::kNS * 4);  // B rows, then C rows
    L.m1hat = take(off, 4 * kBM * 4);  // per consumer warp (of a warpgroup): its share of Σ_c M_{i,j}[c]
  } else {
    L.z = take(off, kSlots * kBI * kBK * 4);
    L.v = take(off, kSlots * kBJ * kBK * 4);
    L.cw = take(off, kSlots * kBK * kKMax * 4);
    L.cb = take(off, kSlots * kBK * 4);
    L.ms = take(off, H * kMsHead * 4);
    L.m2 = m2_staging_layout(off, H, GN, G);
  }
  L.rows = take(off, 8 * 2 * kBN * 4);  // per consumer warp: its target's ŷ and r_in columns
  L.total = off + 1024;  // slack to align the dynamic shared memory base to 1024 bytes
  return L;
}

#ifdef LATIM_WGMMA_DEVICE
// The 128 producer threads. Not `bar.sync` (= barrier.sync.aligned, which a warp must reach
// as a whole): producer thread 0 waits alone for `stored` while lanes 1-31 of its warp go on
// fetching, and may reach this barrier apart from them. The unaligned form counts threads.
// N: the producer threads that take part (Mamba-1 with u factored: warps 0-2; warp 3 copies R).
template <int N = 128>
__device__ __forceinline__ void producer_sync() { asm volatile("barrier.sync 1, %0;\n" ::"n"(N) : "memory"); }
// The 128 threads of consumer warpgroup c (named barriers 2 and 3).
__device__ __forceinline__ void consumer_sync(int c) {
  if (c == 0)
    asm volatile("bar.sync 2, 128;\n" ::: "memory");
  else
    asm volatile("bar.sync 3, 128;\n" ::: "memory");
}

__device__ __forceinline__ void bar_init(unsigned bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void bar_arrive(unsigned bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void bar_arrive_expect_tx(unsigned bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// One bulk copy of `bytes` contiguous bytes into shared memory, completing on `bar`.
__device__ __forceinline__ void bulk_copy(unsigned dst, const void* src, unsigned bytes, unsigned bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
               "l"(src), "r"(bytes), "r"(bar)
               : "memory");
}
// Every bulk group but the newest has been read from shared memory.
__device__ __forceinline__ void bulk_wait_read_all_but_last() {
  asm volatile("cp.async.bulk.wait_group.read 1;\n" ::: "memory");
}
// Every bulk group has been read from shared memory.
__device__ __forceinline__ void bulk_wait_read_all() { asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory"); }
// Every bulk group but the newest N is complete: its writes are done.
template <int N>
__device__ __forceinline__ void bulk_wait_all_but() {
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
}
// u rows -> scratch, without committing (the caller commits a group of them).
__device__ __forceinline__ void bulk_store_part(void* dst, unsigned src, unsigned bytes) {
  asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n" ::"l"(dst), "r"(src), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void bulk_commit() { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
// The barrier's next arrival happens when this thread's earlier cp.async copies have landed.
__device__ __forceinline__ void cp_async_arrive(unsigned bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// Waits for the phase with the given parity. The suspend-time hint lets the waiting warp
// sleep in the barrier instead of spinning: spinning consumer warps took most of the issue
// slots of the producer warps on the same scheduler (Nsight Compute: 4.9e9 executed
// instructions in the retry loop, the producer at 0.08 instructions per cycle).
__device__ __forceinline__ void bar_wait(unsigned bar, unsigned parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1, %2;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity), "r"(0x989680)
      : "memory");
}


// SiLU through the hardware tanh: x σ(x) = h + h tanh(h), h = x / 2. tanh.approx's relative
// error (2^-11) is a quarter of the bf16 rounding that u gets right after.
__device__ __forceinline__ float silu_tanh(float x) {
  const float h = 0.5f * x;
  float t;
  asm("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(h));
  return fmaf(h, t, h);
}
// One step of a reduce-scatter over the lanes that differ in lane bit M: cs[0 .. C) with
// C = M / 2 keeps the half of cs[0 .. 2C) that this lane's side owns, plus the other lane's
// copy of it. Written with compile-time indices (a loop over M kept cs in local memory).
template <int M>
__device__ __forceinline__ void reduce_scatter_step(float (&cs)[16], int lane) {
  constexpr int C = M / 2;
  const bool hi = (lane & M) != 0;
#pragma unroll
  for (int k = 0; k < C; ++k) {
    const float send = hi ? cs[k] : cs[k + C], keep = hi ? cs[k + C] : cs[k];
    cs[k] = keep + __shfl_xor_sync(0xffffffffu, send, M);
  }
}

__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t da, uint64_t db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(scale_d));
}
// Keeps the compiler from moving accumulator reads or writes across the asynchronous wgmma.
__device__ __forceinline__ void fence_acc(float (&d)[128]) {
#pragma unroll
  for (int k = 0; k < 128; ++k) asm volatile("" : "+f"(d[k])::"memory");
}
#endif  // LATIM_WGMMA_DEVICE

#ifdef LATIM_WGMMA_DEVICE
// The largest of a, b, c, d over the 4 lanes of a quad (lanes 4k .. 4k + 3, all active).
__device__ __forceinline__ float quad_max(float a, float b, float c, float d) {
  float m = fmaxf(fmaxf(a, b), fmaxf(c, d));
  m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
  return fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
}
// The exponent e of x (x·2^-e in [1, 2); 0 for x <= 0), clamped to [-126, 126] so that 2^e
// and 2^-e are normal floats; pow2(e) = 2^e, exact.
__device__ __forceinline__ int pow2_exponent(float x) {
  const int e = x > 0.0f ? ((__float_as_int(x) >> 23) & 0xff) - 127 : 0;
  return e < -126 ? -126 : e > 126 ? 126 : e;
}
__device__ __forceinline__ float pow2(int e) { return __int_as_float((127 + e) << 23); }
// 8 floats from shared memory at p (16-byte aligned).
__device__ __forceinline__ void load8(const float* p, float (&v)[8]) {
  const float4 x = *reinterpret_cast<const float4*>(p), y = *reinterpret_cast<const float4*>(p + 4);
  v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w, v[4] = y.x, v[5] = y.y, v[6] = y.z, v[7] = y.w;
}
// Mamba-1's factor P_i[n] = C_i[n] 2^(a[n] s) for a lane's 8 states (crow: C_i at the first of
// them, s = S_i - S_ib >= 0, ib the block's first target: build_m1_fast's factoring of M; the
// factored-u build computes its P on the tensor cores' fragments instead, see build_rf); 0 for
// a target past the tile (a select: no 0 · inf).
__device__ __forceinline__ void m1_p_row(const float* crow, const float (&a2)[8], float s, bool ok, float (&P)[8]) {
  float cn[8];
  load8(crow, cn);
#pragma unroll
  for (int n = 0; n < 8; ++n) P[n] = ok ? cn[n] * exp2_ftz(a2[n] * s) : 0.0f;
}
// m[t] = Σ_n P[t][n] v[n] over a lane's 8 states for its 4 targets: one chain per target (1
// multiply and 7 fused multiply-adds; the targets and the unrolled loop around give the
// scheduler independent work).
__device__ __forceinline__ void m1_dots(const float (&P)[4][8], const float (&v)[8], float (&m)[4]) {
#pragma unroll
  for (int t4 = 0; t4 < 4; ++t4) {
    float a = P[t4][0] * v[0];
#pragma unroll
    for (int n = 1; n < 8; ++n) a = fmaf(P[t4][n], v[n], a);
    m[t4] = a;
  }
}
#endif

// ALL: the epilogue also sums the l1 and ALTI partials (else only ‖T‖², which is all that
// l2 and the plans on it need; the l1/ALTI partials are then left unwritten).
// RF (Mamba-1 only): the fast blocks alone, u factored (see m1, rf), from R in `rfac`; no
// hidden attention. band_only (Mamba-1 without RF): the blocks that are not fast alone.
template <int K, bool SILU, bool ALL, bool M1, bool RF>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_tile_kernel(TileFactors f, const __nv_bfloat16* __restrict__ Wk, int nstages, int64_t i0,
                      int64_t ni, int64_t j0, int64_t nj, int ncb, bool want_hattn, float* __restrict__ partial,
                      float* __restrict__ hattn, double* __restrict__ contrib, __nv_bfloat16* __restrict__ uscratch,
                      const float* __restrict__ taps, const __half* __restrict__ rfac, bool band_only) {
  static_assert(M1 || !RF, "u is factored for Mamba-1 only");
  // Producer threads that stage the slots (RF: warp 3 only copies R, see below).
  constexpr int kProd = RF ? 96 : 128;
#ifdef LATIM_WGMMA_DEVICE
  extern __shared__ unsigned char smem_raw[];
  unsigned char* const smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  const Layout L = layout(nstages, f.H, f.G * f.N, f.G, f.D / kBK, M1, RF);
  constexpr int kSl = M1 ? m1::kSlotsM1 : kSlots;  // input slots in use
  const unsigned bars = smem_u32(smem + L.bars);
  const unsigned stages = smem_u32(smem + L.stages);
  auto full = [&](int s) { return bars + 8u * static_cast<unsigned>(s); };
  auto empty = [&](int s) { return bars + 8u * static_cast<unsigned>(nstages + s); };
  auto in_full = [&](int s) { return bars + 8u * static_cast<unsigned>(2 * nstages + s); };
  auto in_free = [&](int s) { return bars + 8u * static_cast<unsigned>(2 * nstages + kSlots + s); };
  const unsigned m_free = bars + 8u * static_cast<unsigned>(2 * nstages + 2 * kSlots);
  const unsigned m_ready = m_free + 8u;
  auto stored = [&](int slab) { return m_free + 16u + 8u * static_cast<unsigned>(slab); };
  const int tid = threadIdx.x, wg = tid / 128, t = tid % 128;
  const int64_t T = f.T, D = f.D, d = f.d;
  const int nslab = static_cast<int>(D / kBK);
  // R chunk barriers, after the `stored` ones (RF)
  // Two `full` barriers per ring slot, for its even and odd uses: a consumer warp waits only
  // for its own chunks (every fourth), so while the warp that holds an older chunk of the same
  // slot is still building, it may wait two uses of the slot ahead of the copies, where one
  // barrier's parity would alias. Alternating barriers make that four uses (20 chunks, 5
  // slabs; the stages keep the warps within 3 slabs of each other). Seen as wrong bits in
  // WgmmaKernelMatchesMmaKernelAndFp64 (one barrier per slot).
  auto rfull = [&](int r, unsigned use) { return stored(nslab + 2 * r + static_cast<int>(use & 1u)); };
  auto rfree = [&](int r) { return stored(nslab + 2 * rf::kRing + r); };
  if (tid == 0) {
    for (int s = 0; s < nstages; ++s) {
      bar_init(full(s), 1);  // the producer's expect_tx for the copies into the stage
      bar_init(empty(s), 256);
    }
    for (int s = 0; s < kSl; ++s) {
      bar_init(in_full(s), kProd);  // each staging producer thread's copies into the slot
      bar_init(in_free(s), 2);    // each consumer warpgroup done building from it
    }
    bar_init(m_free, 2);   // each consumer warpgroup done with the block's M
    bar_init(m_ready, 1);  // the producer's prologue has written the block's M
    for (int k = 0; k < nslab; ++k) bar_init(stored(k), 8);  // each consumer warp's u rows stored
    if constexpr (RF)
      for (int r = 0; r < rf::kRing; ++r) {
        bar_init(rfull(r, 0), 1);  // the producer's expect_tx for the chunk's bulk copy
        bar_init(rfull(r, 1), 1);
        bar_init(rfree(r), 2);  // the consumer warp of each warpgroup that reads the chunk
      }
    // The bulk copies complete on `full` through the async proxy: make the initialisations
    // visible to it before any copy is issued (the PTX ISA's rule for mbarrier.init).
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  const int64_t njb = (nj + kBJ - 1) / kBJ, nib = (ni + kBI - 1) / kBI;
  const int64_t npb = nib * njb;
  // Pair block pb: target-block major, or (RF) source-block major, so that the blocks resident
  // at one time share their source block and its R stays in L2.
  auto block_at = [&](int64_t pb, int64_t& ib, int64_t& jb) {
    if constexpr (RF)
      ib = i0 + (pb % nib) * kBI, jb = j0 + (pb / nib) * kBJ;
    else
      ib = i0 + (pb / njb) * kBI, jb = j0 + (pb % njb) * kBJ;
  };
  const int64_t iend = i0 + ni, jend = j0 + nj;
  const int64_t nn = ni * nj;
  int stage = 0;        // pipeline stage of the current step, and the parity of its use:
  unsigned phase = 0;   // counted alike by the producer and the consumers
  float* const Zs = reinterpret_cast<float*>(smem + L.z);
  float* const Vs = reinterpret_cast<float*>(smem + L.v);
  float* const CWs = reinterpret_cast<float*>(smem + L.cw);
  float* const CBs = reinterpret_cast<float*>(smem + L.cb);
  float* const Ms = reinterpret_cast<float*>(smem + L.ms);
  __nv_bfloat16* const ublk = uscratch + int64_t{blockIdx.x} * nslab * (kStageU / 2);  // this block's u
  const int H32 = static_cast<int>(f.H), P32 = static_cast<int>(f.P);
  // Mamba-1: the block's positions all precede its targets, so M factorises (see m1).
  auto m1_fast = [](int64_t ib, int64_t jb) { return jb + kNL - 1 < ib; };
  // Blocks this launch leaves out: those with every pair above the diagonal, and (Mamba-1)
  // the fast ones or the others, as RF and band_only say. Producer and consumers alike.
  auto skip = [&](int64_t ib, int64_t jb) {
    if (jb > ib + kBI - 1) return true;
    if constexpr (RF) return !m1_fast(ib, jb);
    if constexpr (M1) return band_only && m1_fast(ib, jb);
    return false;
  };

  if (wg == 0) {
    // ---------------- producer ----------------
    // 88 + 2 x 208 registers per thread fill the register file (3 x 128 threads): the consumers'
    // 128 accumulators stay live while they build u, and nothing spills at these counts.
    // Mamba-1: 40 + 2 x 232. The consumers' M loop is bound by the latency of its exponentials
    // and loads (2 consumer warps per scheduler), and more registers let it keep more of them
    // in flight: 6.22e7 pairs/s at 56 + 2 x 224, 6.95e7 at 40 + 2 x 232 (T = 16K, H100). The
    // producer only stages and copies; its spills are a few words per fetch.
#ifndef LATIM_NO_SETMAXNREG
    if constexpr (M1)
      asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    else
      asm volatile("setmaxnreg.dec.sync.aligned.u32 88;\n");
#endif
    // Fetch number n (slab `slab` of the block): its Z and v rows, conv taps and bias into
    // slot n % kSlots, once both consumer warpgroups have built from the slot's previous fetch.
    // The slot's `in_full` barrier completes when every thread's copies have landed (the
    // launcher checks the 16-byte alignment that the copies need).
    auto fetch_inputs = [&](int64_t ib, int64_t jb, int slab, unsigned n) {
      const int slot = static_cast<int>(n % kSl);
      bar_wait(in_free(slot), ((n / kSl) & 1u) ^ 1u);
      const int64_t c0 = int64_t{slab} * kBK;
      for (int idx = t; idx < (kBI + kBJ) * 16; idx += 128) {
        const int row = idx / 16, ch = idx % 16;
        if (row < kBI) {
          const int64_t i = ib + row;
          cp_async16_or_zero(Zs + (slot * kBI + row) * kBK + 4 * row_chunk(ch),
                             f.Z + (i < T ? i : 0) * D + c0 + 4 * ch, i < T);
        } else {
          const int64_t j = jb + row - kBI;
          cp_async16_or_zero(Vs + (slot * kBJ + row - kBI) * kBK + 4 * v_chunk(ch, row - kBI),
                             f.v + (j < T ? j : 0) * f.ldv + c0 + 4 * ch, j < T);
        }
      }
      for (int ch = t; ch < K * 16; ch += 128)  // (K = 4: chunk ch holds the taps of channel ch)
        cp_async16_or_zero(CWs + slot * kBK * kKMax + 4 * tap_chunk(ch), f.conv_w + c0 * K + 4 * ch, true);
      if (t < 16)
        cp_async16_or_zero(CBs + slot * kBK + 4 * row_chunk(t), f.conv_b ? f.conv_b + c0 + 4 * t : f.Z,
                           f.conv_b != nullptr);
      cp_async_arrive(in_full(slot));
    };

    // M_{i,l} for every head of the block's (i, l), D[h] folded into M_{i,i}; the hidden attention.
    auto prologue = [&](int64_t ib, int64_t jb) {
      const int64_t H = f.H;
      const M2Staging st = m2_staging(smem, L.m2);
      const float* diag = st.diag;
      // (iend <= T) a target outside the tile gets M = 0, so u needs no test for it
      mamba2_block_m(f, ib, jb, iend, st, Ms, t, 128, [] { producer_sync(); });
      producer_sync();
      if (want_hattn) {
        for (int p = t; p < kBM; p += 128) {
          const int ii = p / kBJ, jj = p % kBJ;
          const int64_t i = ib + ii, j = jb + jj;
          if (!(i < iend && j < jend && j <= i)) continue;
          float sum = 0.0f;
          for (int h = 0; h < H32; ++h) sum += i == j ? diag[ii * H + h] : Ms[h * kMsHead + ii * kNL + jj];
          hattn[(i - i0) * nj + (j - j0)] = sum / static_cast<float>(H);
        }
      }
    };

    // Mamba-1: fetch number n (slab `slab`) into slot n % kSl (see m1), 16-byte copies only:
    // rows past T (and taps of sources past the tile) are zero. The slot's `in_full` completes
    // when every producer thread's copies have landed.
    auto fetch_m1 = [&](int64_t ib, int64_t jb, int slab, unsigned n) {
      const int slot = static_cast<int>(n % kSl);
      bar_wait(in_free(slot), ((n / kSl) & 1u) ^ 1u);
      float* const sp = reinterpret_cast<float*>(smem + L.m1slots) + slot * m1::kSlotFloats;
      const int64_t c0 = int64_t{slab} * kBK;
      constexpr int kRows = kBI + kNL + K * kBJ + kBI - 1;  // Z, Δ, tap and target Δ rows: 16 chunks each
#pragma unroll 1
      for (int idx = t; idx < kRows * 16; idx += 128) {
        const int row = idx / 16, ch = idx % 16;
        const float* src;
        float* dst;
        bool ok;
        if (row < kBI) {
          const int64_t i = ib + row;
          ok = i < T, dst = sp + m1::kZ + row * kBK, src = f.Z + (ok ? i : 0) * D;
        } else if (row < kBI + kNL) {
          const int64_t l = jb + row - kBI;
          ok = l < T, dst = sp + m1::kDl + (row - kBI) * kBK, src = f.delta + (ok ? l : 0) * D;
        } else if (row < kBI + kNL + K * kBJ) {
          const int r = row - kBI - kNL, kk = r / kBJ, jj = r % kBJ;  // tap row [kk][jj]
          const int64_t j = jb + jj;
          ok = j < jend, dst = sp + m1::kTap + r * kBK, src = taps + ((ok ? j - j0 : 0) * K + kk) * D;
        } else {
          const int r = row - kBI - kNL - K * kBJ;  // Δ of target ib + 1 + r
          const int64_t i = ib + 1 + r;
          ok = i < T, dst = sp + m1::kDt + r * kBK, src = f.delta + (ok ? i : 0) * D;
        }
        cp_async16_or_zero(dst + 4 * ch, src + c0 + 4 * ch, ok);
      }
#pragma unroll 1
      for (int idx = t; idx < 2 * (kBK / 2); idx += 128) {  // S rows of ib and jb (fp64): 2 per copy
        const int row = idx / (kBK / 2), ch = idx % (kBK / 2);
        const int64_t p = row == 0 ? ib : jb;
        cp_async16_or_zero(sp + m1::kS + 2 * (row * kBK + 2 * ch), f.S + (p < T ? p : 0) * D + c0 + 2 * ch, p < T);
      }
#pragma unroll 1
      for (int idx = t; idx < kBK * m1::kNS / 4 + kBK / 4; idx += 128) {  // A·log2(e) rows, then D
        if (idx < kBK * m1::kNS / 4)
          cp_async16_or_zero(sp + m1::kA2 + 4 * idx, f.A2 + c0 * m1::kNS + 4 * idx, true);
        else
          cp_async16_or_zero(sp + m1::kDsk + 4 * (idx - kBK * m1::kNS / 4),
                             f.Dskip + c0 + 4 * (idx - kBK * m1::kNS / 4), true);
      }
      cp_async_arrive(in_full(slot));
    };
    // Mamba-1: the block's B rows [kNL][N] then C rows [kBI][N] (0 for positions past T and
    // targets past the tile), and the hidden-attention sums cleared. RF: the C rows alone.
    auto prologue_m1 = [&](int64_t ib, int64_t jb) {
      constexpr int kFirst = RF ? kNL * m1::kNS : 0;  // the first element staged
      float* const cb = reinterpret_cast<float*>(smem + L.m1cb);
      float* const hat = reinterpret_cast<float*>(smem + L.m1hat);
#pragma unroll 1
      for (int idx = kFirst + t; idx < (kNL + kBI) * m1::kNS; idx += kProd) {
        const int n = idx % m1::kNS, row = idx / m1::kNS;
        const int64_t p = row < kNL ? jb + row : ib + row - kNL;
        const bool ok = row < kNL ? p < T : p < iend;
        cb[idx - kFirst] = ok ? (row < kNL ? f.B : f.C)[p * f.ldbc + n] : 0.0f;
      }
      if constexpr (!RF) {
#pragma unroll 1
        for (int idx = t; idx < 4 * kBM; idx += kProd) hat[idx] = 0.0f;
      }
      producer_sync<kProd>();
    };
    // Mamba-1, u factored (RF): fetch number n (slab `slab`) into slot n % kSl: the Z rows, A·log2(e)
    // rows and the fp64 S rows of the targets and of the reference position (see rf), by
    // 16-byte copies (rows past T are zero). R goes through the ring (warp 3, above).
    auto fetch_rf = [&](int64_t ib, int64_t jb, int slab, unsigned n) {
      const int slot = static_cast<int>(n % kSl);
      bar_wait(in_free(slot), ((n / kSl) & 1u) ^ 1u);
      float* const sp = reinterpret_cast<float*>(smem + L.m1slots) + slot * rf::kSlotFloats;
      const int64_t c0 = int64_t{slab} * kBK;
      const int64_t ref = rf::ref_position(jb, T);
      constexpr int kCopies = kBI * 16 + kBK * m1::kNS / 4 + (kBI + 1) * (kBK / 2) + kBK / 4;
      const float* const arel = rf::arel(rfac, (nj + kBJ - 1) / kBJ, nslab);
      // (left to the compiler's unrolling: `#pragma unroll 1` measured 1 % slower, H100)
      for (int idx = t; idx < kCopies; idx += kProd) {
        if (idx < kBI * 16) {
          const int row = idx / 16, ch = idx % 16;
          const int64_t i = ib + row;
          cp_async16_or_zero(sp + rf::kZ + row * kBK + 4 * ch, f.Z + (i < T ? i : 0) * D + c0 + 4 * ch, i < T);
        } else if (idx < kBI * 16 + kBK * m1::kNS / 4) {
          const int k = idx - kBI * 16;
          cp_async16_or_zero(sp + rf::kA2 + 4 * k, arel + c0 * m1::kNS + 4 * k, true);
        } else if (idx >= kCopies - kBK / 4) {
          const int k = idx - (kCopies - kBK / 4);
          cp_async16_or_zero(sp + rf::kAm + 4 * k, arel + D * m1::kNS + c0 + 4 * k, true);
        } else {
          const int k = idx - kBI * 16 - kBK * m1::kNS / 4, row = k / (kBK / 2), ch = k % (kBK / 2);
          const int64_t p = row < kBI ? ib + row : ref;
          cp_async16_or_zero(sp + rf::kS + 2 * (row * kBK + 2 * ch), f.S + (p < T ? p : 0) * D + c0 + 2 * ch, p < T);
        }
      }
      cp_async_arrive(in_full(slot));
    };
    auto fetch = [&](int64_t ib, int64_t jb, int slab, unsigned n) {
      if constexpr (RF) fetch_rf(ib, jb, slab, n);
      else if constexpr (M1) fetch_m1(ib, jb, slab, n);
      else fetch_inputs(ib, jb, slab, n);
    };

    unsigned nfetch = 0;  // slab fetches so far (slot = index % kSl)
    unsigned nblk = 0;    // pair blocks so far (the parity of the `m_free` and `stored` phases)
    if constexpr (RF) {
      // Warp 3: R of every slab of the launch's blocks, chunk by chunk through the ring (lane 0),
      // each copy as soon as the chunk it overwrites has been read by the two consumer warps
      // that take it.
      if (t >= kProd) {
        if (t == kProd) {
          unsigned nr = 0;
          for (int64_t pb = blockIdx.x; pb < npb; pb += gridDim.x) {
            int64_t ib, jb;
            block_at(pb, ib, jb);
            if (skip(ib, jb)) continue;
            const __half* const src = rfac + rf::offset((jb - j0) / kBJ, 0, nslab);
            for (int g = 0; g < nslab * rf::kChunks; ++g, ++nr) {
              const unsigned r = nr % rf::kRing;
              bar_wait(rfree(static_cast<int>(r)), ((nr / rf::kRing) & 1u) ^ 1u);
              bar_arrive_expect_tx(rfull(static_cast<int>(r), nr / rf::kRing), rf::kChunkBytes);
              bulk_copy(smem_u32(smem + L.ring) + r * rf::kChunkBytes, src + int64_t{g} * (rf::kChunkBytes / 2),
                        rf::kChunkBytes, rfull(static_cast<int>(r), nr / rf::kRing));
            }
          }
        }
        return;
      }
    }
    for (int64_t pb = blockIdx.x; pb < npb; pb += gridDim.x) {
      int64_t ib, jb;
      block_at(pb, ib, jb);
      if (skip(ib, jb)) continue;
      bar_wait(m_free, (nblk & 1u) ^ 1u);  // the consumers are done with the last block's M
      producer_sync<kProd>();  // every warp is done with the last block's M before the prologue rewrites it
      if constexpr (M1) prologue_m1(ib, jb);
      else prologue(ib, jb);
      // Every producer thread's M is written (the prologue's last sync): the consumers may read it.
      if (t == 0) bar_arrive(m_ready);
      for (int k = 0; k < kSl - 1 && k < nslab; ++k) fetch(ib, jb, k, nfetch++);
      for (int cbk = 0; cbk < ncb; ++cbk) {
        // The consumers build u in the first column block and store each slab to this block's
        // scratch; in the others it is copied back with the W_out slab, so u is built once per pair.
        const bool build = cbk == 0;
        for (int slab = 0; slab < nslab; ++slab) {
          const int s = stage;
          bar_wait(empty(s), phase ^ 1u);
          const unsigned su = stages + static_cast<unsigned>(s * kStage), sw = su + kStageU;
          // Odd passes walk the slabs backwards: the slabs stored or read last are the likeliest
          // to be still in L2 (all blocks' scratch together is about the size of L2).
          const int sl = cbk % 2 == 1 ? nslab - 1 - slab : slab;
          if (t == 0) {  // the W_out slab: one bulk copy of its pre-swizzled image (and u)
            bar_arrive_expect_tx(full(s), build ? kStageW : kStageW + kStageU);
            bulk_copy(sw, Wk + (int64_t{cbk} * nslab + sl) * (kStageW / 2), kStageW, full(s));
            if (!build) {
              bar_wait(stored(sl), nblk & 1u);  // every consumer warp's rows of the slab are stored
              bulk_copy(su, ublk + int64_t{sl} * (kStageU / 2), kStageU, full(s));
            }
          }
          if (build && slab + kSl - 1 < nslab) fetch(ib, jb, slab + kSl - 1, nfetch++);
          if (++stage == nstages) stage = 0, phase ^= 1u;
        }
      }
      ++nblk;
    }
  } else {
    // ---------------- consumers ----------------
#ifndef LATIM_NO_SETMAXNREG  // (-DLATIM_WGMMA_SETMAXNREG=OFF, for sanitizer runs)
    if constexpr (M1)
      asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    else
      asm volatile("setmaxnreg.inc.sync.aligned.u32 208;\n");
#endif
    const int c = wg - 1;  // pairs 64c .. 64c + 63 of the block: targets 4c .. 4c + 3
    const int w = t / 32, lane = t % 32, g = lane >> 2, q = lane & 3;

    // This warpgroup's u rows of slab `slab` into the stage at `sst`: thread t owns source
    // jj = t / 8 and channels 8 (t % 8) .. + 7 of the slab, for the warpgroup's 4 targets (one
    // 16-byte store each). The slot's rows are stored swizzled (see fetch_inputs), so that
    // these loads hit every bank once. Targets outside the tile have M = 0 (prologue), so
    // only a source outside it needs a test.
    auto build_u = [&](int64_t jb, int slab, int slot, unsigned sst) {
      const int jj = t >> 3, cc = t & 7;
      const unsigned dst = sst + sw128(jj, cc);  // row jj; target ii's row is 16 ii further on
      if (jb + jj >= jend) {
#pragma unroll
        for (int i4 = 0; i4 < 4; ++i4)
          asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};\n" ::"r"(
                           dst + static_cast<unsigned>((4 * c + i4) * kBJ * 128)),
                       "r"(0u));
        return;
      }
      const float* vrow = Vs + (slot * kBJ + jj) * kBK;
      const float* brow = CBs + slot * kBK;
      const float4 v0 = *reinterpret_cast<const float4*>(vrow + 4 * v_chunk(2 * cc, jj));
      const float4 v1 = *reinterpret_cast<const float4*>(vrow + 4 * v_chunk(2 * cc + 1, jj));
      const float4 b0 = *reinterpret_cast<const float4*>(brow + 4 * row_chunk(2 * cc));
      const float4 b1 = *reinterpret_cast<const float4*>(brow + 4 * row_chunk(2 * cc + 1));
      const float vj[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
      const float bias[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
      const float4* CW = reinterpret_cast<const float4*>(CWs + slot * kBK * kKMax);
      const int h = (slab * kBK + cc * 8) / P32;
      float tap[K][8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float4 w = CW[tap_chunk(cc * 8 + e)];  // taps of channel 8 cc + e, oldest first (K = 4)
        const float wk[4] = {w.w, w.z, w.y, w.x};
#pragma unroll
        for (int kk = 0; kk < K; ++kk) {
          const float pre = wk[kk] * vj[e] + (kk == 0 ? bias[e] : 0.0f);
          tap[kk][e] = SILU ? silu_tanh(pre) : pre;
        }
      }
      const float* Mh = Ms + h * kMsHead + jj;
#pragma unroll
      for (int i4 = 0; i4 < 4; ++i4) {
        const int ii = 4 * c + i4;
        float m[K];
#pragma unroll
        for (int kk = 0; kk < K; ++kk) m[kk] = Mh[ii * kNL + kk];
        const float* zrow = Zs + (slot * kBI + ii) * kBK;
        const float4 z0 = *reinterpret_cast<const float4*>(zrow + 4 * row_chunk(2 * cc));
        const float4 z1 = *reinterpret_cast<const float4*>(zrow + 4 * row_chunk(2 * cc + 1));
        const float z[8] = {z0.x, z0.y, z0.z, z0.w, z1.x, z1.y, z1.z, z1.w};
        float u[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          float sum = m[0] * tap[0][e];
#pragma unroll
          for (int kk = 1; kk < K; ++kk) sum += m[kk] * tap[kk][e];
          u[e] = z[e] * sum;
        }
        asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(
                         dst + static_cast<unsigned>(ii * kBJ * 128)),
                     "r"(pack_bf16(u[0], u[1])), "r"(pack_bf16(u[2], u[3])), "r"(pack_bf16(u[4], u[5])),
                     "r"(pack_bf16(u[6], u[7])));
      }
    };

    // Mamba-1: this warpgroup's u rows of the slab into the stage at `sst`, computing M on the
    // way. Warp w takes channel half w % 2 of the slab (lane = channel) and targets
    // 4c + 2 (w / 2) + {0, 1}; for the two targets it walks the kNL positions l, computes
    // M_{i,l}[c] = Δ_l Σ_n C_i B_l[n] 2^(A[c,n] log2(e) (S_i - S_l)) (D folded into M_{i,i};
    // 0 for l > i and targets past the tile), and adds M_{i,l} x_{l←j} into u_{ij} for the K
    // sources j = l - K + 1 .. l, in registers. u is stored once complete: 16 rows per target.
    auto build_m1 = [&](int64_t ib, int64_t jb, int slot, unsigned sst) {
      const float* const sp = reinterpret_cast<const float*>(smem + L.m1slots) + slot * m1::kSlotFloats;
      const float* const bs = reinterpret_cast<const float*>(smem + L.m1cb);  // B rows [kNL][N]
      const float* const cs = bs + kNL * m1::kNS;                             // C rows [kBI][N]
      float* const hat = reinterpret_cast<float*>(smem + L.m1hat);
      const int half = w & 1, cc = 32 * half + lane;
      float a2[m1::kNS];
#pragma unroll
      for (int q = 0; q < m1::kNS / 4; ++q) {
        const float4 v = *reinterpret_cast<const float4*>(sp + m1::kA2 + cc * m1::kNS + 4 * q);
        a2[4 * q] = v.x, a2[4 * q + 1] = v.y, a2[4 * q + 2] = v.z, a2[4 * q + 3] = v.w;
      }
      const float dsk = sp[m1::kDsk + cc];
      const unsigned col = static_cast<unsigned>((cc & 7) * 2);
      // Both targets at once: two independent chains of exponentials per step, and the loads
      // of S_l, Δ_l and the taps shared.
      const int ii0 = 4 * c + 2 * (w >> 1);
      const int64_t ia = ib + ii0, ibb = ia + 1;
      const double* const srow = reinterpret_cast<const double*>(sp + m1::kS);  // S_ib, S_jb
      float sia = static_cast<float>(srow[cc] - srow[kBK + cc]);  // S_i - S_jb: S_ib - S_jb, then Δ
      for (int r = 0; r < ii0; ++r) sia += sp[m1::kDt + r * kBK + cc];
      const float sib = sia + sp[m1::kDt + ii0 * kBK + cc];
      const float za = sp[m1::kZ + ii0 * kBK + cc], zb = sp[m1::kZ + (ii0 + 1) * kBK + cc];
      // u of sources jb + ll - kk (kk = 0 .. K - 1) at step ll: a window of K sums per target.
      float wa[K], wb[K];
#pragma unroll
      for (int kk = 0; kk < K; ++kk) wa[kk] = wb[kk] = 0.0f;
      float sl = 0.0f;  // S_l - S_jb, summed up from Δ
#pragma unroll 2
      for (int ll = 0; ll < kNL; ++ll) {
        const int64_t l = jb + ll;
        const float dl = sp[m1::kDl + ll * kBK + cc];
        if (ll > 0) sl += dl;
        const float ga = sia - sl, gb = sib - sl;  // >= 0 where used (up to rounding)
        const float4* const bl = reinterpret_cast<const float4*>(bs + ll * m1::kNS);
        const float4* const ca = reinterpret_cast<const float4*>(cs + ii0 * m1::kNS);
        const float4* const cb = ca + m1::kNS / 4;  // target ii0 + 1
        float a0 = 0.0f, a1 = 0.0f, b0 = 0.0f, b1 = 0.0f;
#pragma unroll
        for (int q4 = 0; q4 < m1::kNS / 4; ++q4) {
          const float4 bv = bl[q4], cx = ca[q4], cy = cb[q4];
          const float4 x = make_float4(cx.x * bv.x, cx.y * bv.y, cx.z * bv.z, cx.w * bv.w);
          const float4 y = make_float4(cy.x * bv.x, cy.y * bv.y, cy.z * bv.z, cy.w * bv.w);
          a0 += x.x * exp2_ftz(a2[4 * q4] * ga);
          b0 += y.x * exp2_ftz(a2[4 * q4] * gb);
          a1 += x.y * exp2_ftz(a2[4 * q4 + 1] * ga);
          b1 += y.y * exp2_ftz(a2[4 * q4 + 1] * gb);
          a0 += x.z * exp2_ftz(a2[4 * q4 + 2] * ga);
          b0 += y.z * exp2_ftz(a2[4 * q4 + 2] * gb);
          a1 += x.w * exp2_ftz(a2[4 * q4 + 3] * ga);
          b1 += y.w * exp2_ftz(a2[4 * q4 + 3] * gb);
        }
        const bool oka = ia < iend && l <= ia, okb = ibb < iend && l <= ibb;
        float ma = oka ? (a0 + a1) * dl : 0.0f, mb = okb ? (b0 + b1) * dl : 0.0f;
        if (ll < kBJ && want_hattn) {
          const float ha = warp_sum(ma), hb = warp_sum(mb);
          if (lane == 0) {
            hat[half * kBM + ii0 * kBJ + ll] += ha;
            hat[half * kBM + (ii0 + 1) * kBJ + ll] += hb;
          }
        }
        if (oka && l == ia) ma += dsk;
        if (okb && l == ibb) mb += dsk;
#pragma unroll
        for (int kk = 0; kk < K; ++kk) {
          const int jj = ll - kk;
          if (jj >= 0 && jj < kBJ) {
            const float tap = sp[m1::kTap + (kk * kBJ + jj) * kBK + cc];
            wa[kk] += ma * tap;
            wb[kk] += mb * tap;
          }
        }
        if (const int jj = ll - (K - 1); jj >= 0) {  // u_{i, jb + jj} is complete for both targets
          const bool jok = jb + jj < jend;
          const unsigned short ba = __bfloat16_as_ushort(__float2bfloat16_rn(jok ? za * wa[K - 1] : 0.0f));
          const unsigned short bb = __bfloat16_as_ushort(__float2bfloat16_rn(jok ? zb * wb[K - 1] : 0.0f));
          asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(sst + sw128(ii0 * kBJ + jj, cc >> 3) + col), "h"(ba));
          asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(sst + sw128((ii0 + 1) * kBJ + jj, cc >> 3) + col), "h"(bb));
        }
#pragma unroll
        for (int kk = K - 1; kk > 0; --kk) wa[kk] = wa[kk - 1], wb[kk] = wb[kk - 1];
        wa[0] = wb[0] = 0.0f;
      }
    };

    // Mamba-1, factorised path (see m1): this warpgroup's u rows of the slab. Warp w takes
    // channels 16w .. 16w + 15 of the slab, two lanes per channel, each lane one half of the N
    // = 16 states, for all four of the warpgroup's targets. A lane computes P_i for its states
    // once, then walks the kNL positions: Δ_l Q_l for its states (8 exponentials, log2 Δ_l in
    // their exponent), its half of Σ_n P_i Δ_l Q_l for the 4 targets, and the window of K sums
    // of u per target with the taps. When u_{ij} is complete, the two lanes of a channel
    // swap halves: each then holds the whole sum for two of the targets and stores them.
    auto build_m1_fast = [&](int64_t ib, int64_t jb, int slot, unsigned sst, auto&& release_prev) {
      const float* const sp = reinterpret_cast<const float*>(smem + L.m1slots) + slot * m1::kSlotFloats;
      const float* const bs = reinterpret_cast<const float*>(smem + L.m1cb);  // B rows [kNL][N]
      const float* const cs = bs + kNL * m1::kNS;                             // C rows [kBI][N]
      float* const hat = reinterpret_cast<float*>(smem + L.m1hat);
      const int cc = 16 * w + (lane >> 1), nh = lane & 1, n0 = 8 * nh;
      const double* const srow = reinterpret_cast<const double*>(sp + m1::kS);  // S_ib, S_jb
      const float d0 = static_cast<float>(srow[cc] - srow[kBK + cc]);           // S_ib - S_jb
      const unsigned col = static_cast<unsigned>((cc & 7) * 2);
      float a2[8];
      load8(sp + m1::kA2 + cc * m1::kNS + n0, a2);
      float P[4][8];
      float si = 0.0f;  // S_i - S_ib >= 0 (targets in the tile), summed up from Δ
      for (int r = 0; r < 4 * c; ++r) si += sp[m1::kDt + r * kBK + cc];
#pragma unroll
      for (int t4 = 0; t4 < 4; ++t4) {
        const int ii = 4 * c + t4;
        if (t4 > 0) si += sp[m1::kDt + (ii - 1) * kBK + cc];
        m1_p_row(cs + ii * m1::kNS + n0, a2, si, ib + ii < iend, P[t4]);
      }
      // after the swap, this lane's targets are 4c + 2 nh + {0, 1}
      const float z0 = sp[m1::kZ + (4 * c + 2 * nh) * kBK + cc], z1 = sp[m1::kZ + (4 * c + 2 * nh + 1) * kBK + cc];
      float wu[K][4];
#pragma unroll
      for (int kk = 0; kk < K; ++kk)
#pragma unroll
        for (int t4 = 0; t4 < 4; ++t4) wu[kk][t4] = 0.0f;
      float pre = 0.0f;  // S_l - S_jb, summed up from Δ
#pragma unroll
      for (int ll = 0; ll < kNL; ++ll) {
        // The last slab's products are done by now: release its stage, so that the producer
        // fetches the W_out slab after next while this one is built, not after.
        if (ll == 4) release_prev();
        const float dl = sp[m1::kDl + ll * kBK + cc];
        if (ll > 0) pre += dl;
        const float gl = d0 - pre;  // S_ib - S_l >= 0 (up to rounding)
        // Δ_l > 0 (a softplus; 0 past T, where lg2 gives -inf and q = 0) goes into the
        // exponent: q_n = B_l[n] Δ_l 2^(a (S_ib - S_l)), one fused multiply-add per state.
        const float ldl = lg2_ftz(dl);
        float q[8];
        load8(bs + ll * m1::kNS + n0, q);
#pragma unroll
        for (int n = 0; n < 8; ++n) q[n] *= exp2_ftz(fmaf(a2[n], gl, ldl));
        float m[4];
        m1_dots(P, q, m);  // this lane's half of M_{i,l}[c] = Δ_l Σ_n C_i B_l 2^(a (S_i - S_l))
        if (ll < kBJ && want_hattn) {
#pragma unroll
          for (int t4 = 0; t4 < 4; ++t4) {
            const float h = warp_sum(m[t4]);  // both halves of N, the warp's 16 channels
            if (lane == 0) hat[w * kBM + (4 * c + t4) * kBJ + ll] += h;
          }
        }
#pragma unroll
        for (int kk = 0; kk < K; ++kk) {
          const int jj = ll - kk;
          if (jj >= 0 && jj < kBJ) {
            const float tap = sp[m1::kTap + (kk * kBJ + jj) * kBK + cc];  // x_{l←j}
#pragma unroll
            for (int t4 = 0; t4 < 4; ++t4) wu[kk][t4] = fmaf(m[t4], tap, wu[kk][t4]);
          }
        }
        if (const int jj = ll - (K - 1); jj >= 0) {  // u_{i, jb + jj} is complete for the 4 targets
          const float* const wk = wu[K - 1];
          const float send0 = nh ? wk[0] : wk[2], send1 = nh ? wk[1] : wk[3];
          const float keep0 = nh ? wk[2] : wk[0], keep1 = nh ? wk[3] : wk[1];
          const float r0 = keep0 + __shfl_xor_sync(0xffffffffu, send0, 1);
          const float r1 = keep1 + __shfl_xor_sync(0xffffffffu, send1, 1);
          const bool jok = jb + jj < jend;
          const int ii = 4 * c + 2 * nh;
          const unsigned short b0 = __bfloat16_as_ushort(__float2bfloat16_rn(jok ? z0 * r0 : 0.0f));
          const unsigned short b1 = __bfloat16_as_ushort(__float2bfloat16_rn(jok ? z1 * r1 : 0.0f));
          asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(sst + sw128(ii * kBJ + jj, cc >> 3) + col), "h"(b0));
          asm volatile("st.shared.b16 [%0], %1;\n" ::"r"(sst + sw128((ii + 1) * kBJ + jj, cc >> 3) + col), "h"(b1));
        }
#pragma unroll
        for (int kk = K - 1; kk > 0; --kk)
#pragma unroll
          for (int t4 = 0; t4 < 4; ++t4) wu[kk][t4] = wu[kk - 1][t4];
#pragma unroll
        for (int t4 = 0; t4 < 4; ++t4) wu[0][t4] = 0.0f;
      }
    };

    // Mamba-1, u factored (RF): this warpgroup's u rows of the slab, u_{ij}[c] = Z_i Σ_n P_i R_j
    // (see m1 and rf), on the tensor cores. Warp w takes channels 16w .. 16w + 15 (ring chunk
    // w of the slab), two at a time (p): lane (g, q) computes P of target 4c + g / 2 and
    // channel 16w + 2p + g % 2 at states 2q, 2q + 1, 2q + 8, 2q + 9 (its B fragment) and the
    // pair's scale, and gets back u of target 4c + q, sources g and g + 8, both channels:
    // after the 8 pairs, two 16-byte stores per source.
    unsigned nring = 0;  // R chunks consumed so far (the producer's count)
    auto build_rf = [&](int64_t ib, int slot, unsigned sst, auto&& release_prev) {
      const float* const sp = reinterpret_cast<const float*>(smem + L.m1slots) + slot * rf::kSlotFloats;
      const float* const cs = reinterpret_cast<const float*>(smem + L.m1cb);  // C rows [kBI][N]
      const double* const srow = reinterpret_cast<const double*>(sp + rf::kS);  // S_i rows, then S_R
      const int tp = 4 * c + (g >> 1), e = g & 1, tq = 4 * c + q;
      const bool pok = ib + tp < iend;
      // C of target tp at this lane's 4 states, over 2^e_C (e_C: the exponent of the target's
      // largest |C|, from the 4 lanes of the target)
      float cn[4], ec;
      {
        const float2 x = *reinterpret_cast<const float2*>(cs + tp * m1::kNS + 2 * q);
        const float2 y = *reinterpret_cast<const float2*>(cs + tp * m1::kNS + 2 * q + 8);
        cn[0] = x.x, cn[1] = x.y, cn[2] = y.x, cn[3] = y.y;
        const int ex = pow2_exponent(quad_max(fabsf(cn[0]), fabsf(cn[1]), fabsf(cn[2]), fabsf(cn[3])));
        const float down = pow2(-ex);
#pragma unroll
        for (int k = 0; k < 4; ++k) cn[k] *= down;
        ec = static_cast<float>(ex);
      }
      const unsigned r = (nring + static_cast<unsigned>(w)) % rf::kRing,
                     use = (nring + static_cast<unsigned>(w)) / rf::kRing;
      // ldmatrix rows: lanes 8m .. 8m + 7 address matrix m = (sources 8 (m % 2) .., states 8 (m / 2) ..)
      const int jr = (lane & 7) + 8 * ((lane >> 3) & 1), hr = lane >> 4;
      const unsigned chunk = smem_u32(smem + L.ring) + r * static_cast<unsigned>(rf::kChunkBytes);
      const unsigned rbase = chunk + static_cast<unsigned>(rf::in_chunk(0, jr, 8 * hr) * 2);
      // the R scales of sources g and g + 8 ([source][channel] bf16 after the chunk's R)
      const unsigned sbase = chunk + static_cast<unsigned>((rf::kChunkElems + g * rf::kChunkChannels) * 2);
      uint32_t out[2][8];  // bf16x2 of u: source g / g + 8, channel pair p
      bar_wait(rfull(static_cast<int>(r), use), (use >> 1) & 1u);
#pragma unroll
      for (int p = 0; p < 8; ++p) {
        // The last slab's products are done by now: release its stage, so that the producer
        // fetches the W_out slab after next while this one is built, not after. (After 5 of
        // the 8 pairs: 1 % faster than after 2, 0 or 8, H100.)
        if (p == 5) release_prev();
        const int cc = 16 * w + 2 * p;  // the pair's first channel
        uint32_t a0[4], a1[4];
        ldmatrix_x4(a0[0], a0[1], a0[2], a0[3], rbase + static_cast<unsigned>((2 * p) * kBJ * m1::kNS * 2));
        ldmatrix_x4(a1[0], a1[1], a1[2], a1[3], rbase + static_cast<unsigned>((2 * p + 1) * kBJ * m1::kNS * 2));
        uint32_t b[2];
        float sc;  // P's scale 2^(a_max s + e_C) of (target tp, channel cc + e)
        {
          const int ch = cc + e;
          const float si = static_cast<float>(srow[tp * kBK + ch] - srow[kBI * kBK + ch]);  // S_i - S_R >= 0
          const float2 x = *reinterpret_cast<const float2*>(sp + rf::kA2 + ch * m1::kNS + 2 * q);
          const float2 y = *reinterpret_cast<const float2*>(sp + rf::kA2 + ch * m1::kNS + 2 * q + 8);
          const float a2[4] = {x.x, x.y, y.x, y.y};  // A·log2(e) - a_max <= 0
          const float am = sp[rf::kAm + ch];
          float pv[4];
#pragma unroll
          for (int k = 0; k < 4; ++k) pv[k] = pok ? cn[k] * exp2_ftz(a2[k] * si) : 0.0f;  // (select: no 0 · inf)
          sc = pok ? exp2_ftz(fmaf(am, si, ec)) : 0.0f;
          const __half2 lo = __floats2half2_rn(pv[0], pv[1]), hi = __floats2half2_rn(pv[2], pv[3]);
          b[0] = *reinterpret_cast<const uint32_t*>(&lo);
          b[1] = *reinterpret_cast<const uint32_t*>(&hi);
        }
        float dv[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        mma_f16(dv, a0[0], a0[1], a0[2], a0[3], e ? 0u : b[0], e ? 0u : b[1]);
        mma_f16(dv, a1[0], a1[1], a1[2], a1[3], e ? b[0] : 0u, e ? b[1] : 0u);
        // dv: (source g, channel cc), (g, cc + 1), (g + 8, cc), (g + 8, cc + 1), target tq;
        // P's scales of (tq, cc) and (tq, cc + 1) from lanes 4 (2q) and 4 (2q + 1)
        const float s0 = __shfl_sync(0xffffffffu, sc, 8 * q), s1 = __shfl_sync(0xffffffffu, sc, 8 * q + 4);
        unsigned rs0, rs1;  // R's scales (bf16x2, channels cc, cc + 1) of sources g and g + 8
        asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(rs0) : "r"(sbase + static_cast<unsigned>(4 * p)));
        asm volatile("ld.shared.b32 %0, [%1];\n"
                     : "=r"(rs1)
                     : "r"(sbase + static_cast<unsigned>(8 * rf::kChunkChannels * 2 + 4 * p)));
        const float2 z = *reinterpret_cast<const float2*>(sp + rf::kZ + tq * kBK + cc);
        const float z0 = z.x * s0, z1 = z.y * s1;
        const __nv_bfloat162 u0 = __floats2bfloat162_rn(dv[0] * z0 * __uint_as_float(rs0 << 16),
                                                        dv[1] * z1 * __uint_as_float(rs0 & 0xffff0000u));
        const __nv_bfloat162 u1 = __floats2bfloat162_rn(dv[2] * z0 * __uint_as_float(rs1 << 16),
                                                        dv[3] * z1 * __uint_as_float(rs1 & 0xffff0000u));
        out[0][p] = *reinterpret_cast<const uint32_t*>(&u0);
        out[1][p] = *reinterpret_cast<const uint32_t*>(&u1);
      }
      __syncwarp();
      if (lane == 0) bar_arrive(rfree(static_cast<int>(r)));
      // u_{ij} goes to row 16 i + j of the stage; channels 16w .. are its 16-byte chunks 2w and
      // 2w + 1, swizzled by row % 8 = g
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const unsigned row = static_cast<unsigned>(tq * kBJ + g + 8 * h);
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          const unsigned a = sst + row * 128u + static_cast<unsigned>((((2 * w + k) ^ g) & 7) << 4);
          asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(out[h][4 * k]), "r"(out[h][4 * k + 1]),
                       "r"(out[h][4 * k + 2]), "r"(out[h][4 * k + 3]));
        }
      }
      nring += rf::kChunks;
    };

    unsigned nbuilt = 0;  // slab fetches built from so far (the producer's fetch numbers)
    float acc[128];
#pragma unroll
    for (int k = 0; k < 128; ++k) acc[k] = 0.0f;
    unsigned nblk = 0;  // pair blocks so far (the parity of the `m_ready` phases)
    for (int64_t pb = blockIdx.x; pb < npb; pb += gridDim.x) {
      int64_t ib, jb;
      block_at(pb, ib, jb);
      if (skip(ib, jb)) continue;
      bar_wait(m_ready, nblk++ & 1u);  // the block's M (the inputs' barrier orders only the copies)
      for (int cbk = 0; cbk < ncb; ++cbk) {
        const int64_t n0 = int64_t{cbk} * kBN;
        const bool build = cbk == 0;
        int prev = -1;
        for (int slab = 0; slab < nslab; ++slab) {
          const int s = stage;
          const unsigned sst = stages + static_cast<unsigned>(s * kStage);
          const unsigned su = sst + static_cast<unsigned>(c * 64 * 128), sw = sst + kStageU;
          bool released = false;  // the last slab's stage (Mamba-1's factorised build releases it early)
          if (build) {
            // Builds while the tensor cores run the last slab's products. The stage's u rows of
            // this warpgroup were last read by its own products nstages slabs ago (waited for).
            const unsigned n = nbuilt++;
            const int slot = static_cast<int>(n % kSl);
            bar_wait(in_full(slot), (n / kSl) & 1u);  // the producer's copies have landed
            auto release_prev = [&] {
              wgmma_wait<0>();  // the last slab's products are done
              fence_acc(acc);
              if (ncb > 1) {  // and its u rows' bulk store has read them
                if (lane == 0) bulk_wait_read_all();
                __syncwarp();
              }
              if (prev >= 0) bar_arrive(empty(prev));
              released = true;
            };
            if constexpr (RF) build_rf(ib, slot, sst, release_prev);
            else if constexpr (M1) {
              if (m1_fast(ib, jb)) build_m1_fast(ib, jb, slot, sst, release_prev);
              else build_m1(ib, jb, slot, sst);
            }
            else build_u(jb, slab, slot, sst);
            fence_proxy_async();  // u (st.shared) -> visible to the async proxy (wgmma, bulk store)
            consumer_sync(c);  // the warpgroup's rows are built
            if constexpr (M1 && !RF) {
              if (slab == nslab - 1 && want_hattn) {  // Mamba-1's hidden attention, complete now
                const float* const hat = reinterpret_cast<const float*>(smem + L.m1hat);
                if (t < 4 * kBJ) {
                  const int ii = 4 * c + t / kBJ, jj = t % kBJ;
                  const int64_t i = ib + ii, j = jb + jj;
                  if (i < iend && j < jend && j <= i)
                    hattn[(i - i0) * nj + (j - j0)] =
                        (hat[ii * kBJ + jj] + hat[kBM + ii * kBJ + jj] + hat[2 * kBM + ii * kBJ + jj] +
                         hat[3 * kBM + ii * kBJ + jj]) /
                        static_cast<float>(D);
                }
                consumer_sync(c);  // read before the producer clears them for the next block
              }
            }
            if (t == 0) {
              bar_arrive(in_free(slot));
              if (slab == nslab - 1) bar_arrive(m_free);
            }
          }
          bar_wait(full(s), phase);
          fence_acc(acc);
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < kBK / 16; ++kk)
            wgmma_m64n256k16(acc, sw128_desc(su + 32u * kk), sw128_desc(sw + 32u * kk), slab > 0 || kk > 0);
          wgmma_commit();
          fence_acc(acc);
          wgmma_wait<1>();
          if (build && ncb > 1) {
            // This warp's u rows (targets 4c .. 4c + 3, sources 4w .. 4w + 3) to the block's
            // scratch for the later passes. A slab's `stored` barrier completes once every
            // warp's rows have been written; the stage is released only after they were read.
            if (lane == 0) {
#pragma unroll
              for (int i4 = 0; i4 < 4; ++i4) {
                const unsigned row = static_cast<unsigned>((4 * c + i4) * kBJ + 4 * w);
                bulk_store_part(ublk + int64_t{slab} * (kStageU / 2) + row * (128 / 2), sst + row * 128u, 4 * 128);
              }
              bulk_commit();
              bulk_wait_read_all_but_last();  // the last slab's rows are read: its stage may be released
              if (slab >= kStoreLag) {  // long written by now: waiting for it costs nothing
                bulk_wait_all_but<kStoreLag>();
                bar_arrive(stored(slab - kStoreLag));
              }
              if (slab == nslab - 1) {
                bulk_wait_all_but<0>();
                for (int k = slab - kStoreLag + 1 > 0 ? slab - kStoreLag + 1 : 0; k <= slab; ++k)
                  bar_arrive(stored(k));
              }
            }
            __syncwarp();
          }
          if (prev >= 0 && !released) bar_arrive(empty(prev));
          prev = s;
          if (++stage == nstages) stage = 0, phase ^= 1u;
        }
        wgmma_wait<0>();
        fence_acc(acc);
        bar_arrive(empty(prev));

        // Epilogue: rows g and g + 8 of warp w are pairs (target 4c + w, sources g and g + 8);
        // acc[4jn + {0, 1}] are columns 8jn + 2q + {0, 1} of row g, acc[4jn + {2, 3}] of row g + 8.
        const int ii = 4 * c + w;
        const int64_t i = ib + ii, ja = jb + g, jz = jb + g + 8;
        const bool da = i == ja, dz = i == jz, irow = i < T;
        // The warp's target row of ŷ (and of r_in when the diagonal is in the warp's sources)
        // for the block's 256 columns, staged in shared memory with one round trip.
        float* const yrow = reinterpret_cast<float*>(smem + L.rows) + (4 * c + w) * 2 * kBN;
        const bool wdiag = i >= jb && i < jb + kBJ;
        if (ALL)
        for (int k = lane; k < kBN; k += 32) {
          const int64_t n = n0 + k;
          const bool ok = irow && n < d;
          yrow[k] = ok ? f.yhat[i * d + n] : 0.0f;
          if (wdiag) yrow[kBN + k] = ok ? f.r_in[i * d + n] : 0.0f;
        }
        __syncwarp();
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, z0 = 0.0f, z1 = 0.0f, z2 = 0.0f;
        float cs[16];  // column sums of 8 column groups (2 per group), before the reduction
#pragma unroll
        for (int jn = 0; jn < 32; ++jn) {
          const float2 yv = ALL ? *reinterpret_cast<const float2*>(yrow + 8 * jn + 2 * q) : make_float2(0.0f, 0.0f);
          const float2 rv =
              ALL && wdiag ? *reinterpret_cast<const float2*>(yrow + kBN + 8 * jn + 2 * q) : make_float2(0.0f, 0.0f);
          const float y[2] = {yv.x, yv.y}, r[2] = {rv.x, rv.y};
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float ta = acc[4 * jn + e], tz = acc[4 * jn + 2 + e];
            a0 += ta * ta;
            z0 += tz * tz;
            if (ALL) {
              a1 += fabsf(ta);
              a2 += fabsf(y[e]) - fabsf(y[e] - (da ? ta + r[e] : ta));
              z1 += fabsf(tz);
              z2 += fabsf(y[e]) - fabsf(y[e] - (dz ? tz + r[e] : tz));
            }
            cs[2 * (jn % 8) + e] = ta + tz;
          }
          // Σ over the warp's 16 sources of T_i(x_j), for Σ_j T_i(x_j) (the approximation
          // error), per 8 column groups: a reduce-scatter over the 8 lanes of a column (lane
          // bits 4, 3, 2) leaves lane (g, q) the sums of columns 8 (8 jc + g) + 2q + {0, 1},
          // so all 32 lanes add to `contrib` (56 shuffles per lane and pass instead of 192).
          if (jn % 8 == 7 && contrib) {  // (null: the sums are not wanted)
            reduce_scatter_step<16>(cs, lane);
            reduce_scatter_step<8>(cs, lane);
            reduce_scatter_step<4>(cs, lane);
            const int64_t nc = n0 + 8 * (jn - 7 + g) + 2 * q;
            if (i < iend) {
#pragma unroll
              for (int e = 0; e < 2; ++e)
                if (nc + e < d && cs[e] != 0.0f) atomicAdd(contrib + (i - i0) * d + nc + e, static_cast<double>(cs[e]));
            }
          }
        }
#pragma unroll
        for (int o = 1; o <= 2; o <<= 1) {
          a0 += __shfl_xor_sync(0xffffffffu, a0, o);
          z0 += __shfl_xor_sync(0xffffffffu, z0, o);
          if (ALL) {
            a1 += __shfl_xor_sync(0xffffffffu, a1, o);
            a2 += __shfl_xor_sync(0xffffffffu, a2, o);
            z1 += __shfl_xor_sync(0xffffffffu, z1, o);
            z2 += __shfl_xor_sync(0xffffffffu, z2, o);
          }
        }
        __syncwarp();  // yrow is rewritten by the next pass
        if (q == 0 && i < iend) {
          if (ja < jend && ja <= i) {
            const int64_t idx = (i - i0) * nj + (ja - j0);
            partial[(0 * int64_t{ncb} + cbk) * nn + idx] = a0;
            if (ALL) {
              partial[(1 * int64_t{ncb} + cbk) * nn + idx] = a1;
              partial[(2 * int64_t{ncb} + cbk) * nn + idx] = a2;
            }
          }
          if (jz < jend && jz <= i) {
            const int64_t idx = (i - i0) * nj + (jz - j0);
            partial[(0 * int64_t{ncb} + cbk) * nn + idx] = z0;
            if (ALL) {
              partial[(1 * int64_t{ncb} + cbk) * nn + idx] = z1;
              partial[(2 * int64_t{ncb} + cbk) * nn + idx] = z2;
            }
          }
        }
      }
    }
  }
#endif  // LATIM_WGMMA_DEVICE
}

// Mamba-1: the conv taps x_{j+k←j}[c] = act(w[c][K-1-k] v_j[c] + (k == 0 ? b[c] : 0)) of the
// sources j0 .. j0 + nj - 1, into taps[(j - j0) K + k][D] (rows of D floats), for the tile
// kernel's producer to copy. They depend on the source alone, so each is computed once per
// launch instead of once per target block.
#ifdef LATIM_WGMMA_DEVICE
// The conv tap x_{j+kk←j}[c] = act(w[c][K-1-kk] v_j[c] + (kk == 0 ? b[c] : 0)).
template <int K, bool SILU>
__device__ __forceinline__ float m1_tap(const TileFactors& f, int64_t c, int kk, float vj) {
  const float pre = f.conv_w[c * K + K - 1 - kk] * vj + (kk == 0 && f.conv_b ? f.conv_b[c] : 0.0f);
  return SILU ? silu_tanh(pre) : pre;
}
#endif

template <int K, bool SILU>
__global__ void m1_taps_kernel(TileFactors f, int64_t j0, int64_t nj, float* __restrict__ taps) {
#ifdef LATIM_WGMMA_DEVICE
  const int64_t D = f.D, n = nj * D;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n; idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t jj = idx / D, c = idx % D;
    const float vj = f.v[(j0 + jj) * f.ldv + c];
#pragma unroll
    for (int kk = 0; kk < K; ++kk) taps[(jj * K + kk) * D + c] = m1_tap<K, SILU>(f, c, kk, vj);
  }
#endif
}

// Mamba-1, u factored (see m1, rf): R_j[c,n] of the launch's sources, for the fast blocks of
// each source block jb (reference S_R = S at e = min(jb + kNL - 1, T - 1)), in the chunk
// layout of rf: [source block][slab][chunk][source][q][channel][half][4]. One thread per
// (source block, slab, channel, half, q): 4 states of the 16 sources. Sources past the tile
// get 0, and so do positions past T. The gaps S_R - S_l are taken in fp64 and the
// exponentials with exp2f.
template <int K, bool SILU>
__global__ void m1_rfac_kernel(TileFactors f, int64_t j0, int64_t nj, __half* __restrict__ R) {
#ifdef LATIM_WGMMA_DEVICE
  const int64_t D = f.D, T = f.T, nslab = D / kBK, njb = (nj + kBJ - 1) / kBJ, jend = j0 + nj;
  const int64_t n = njb * nslab * kBK * 4;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < n; idx += int64_t{gridDim.x} * blockDim.x) {
    const int q = static_cast<int>(idx & 1), nh = static_cast<int>((idx >> 1) & 1);
    const int cc = static_cast<int>((idx >> 2) % kBK);
    const int64_t rest = (idx >> 2) / kBK, slab = rest % nslab, mb = rest / nslab;
    const int64_t c = slab * kBK + cc, jb = j0 + mb * kBJ;
    const int n0 = 8 * nh + 4 * q;
    const double sref = f.S[rf::ref_position(jb, T) * D + c];
    float a2[4], r[kBJ][4];
#pragma unroll
    for (int k = 0; k < 4; ++k) a2[k] = f.A2[c * m1::kNS + n0 + k];
#pragma unroll
    for (int jj = 0; jj < kBJ; ++jj)
#pragma unroll
      for (int k = 0; k < 4; ++k) r[jj][k] = 0.0f;
#pragma unroll
    for (int ll = 0; ll < kNL; ++ll) {
      const int64_t l = jb + ll;
      if (l >= T) break;
      const float dl = f.delta[l * D + c], gap = static_cast<float>(sref - f.S[l * D + c]);
      float qn[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) qn[k] = dl * f.B[l * f.ldbc + n0 + k] * exp2f(a2[k] * gap);
#pragma unroll
      for (int kk = 0; kk < K; ++kk) {
        const int jj = ll - kk;
        if (jj < 0 || jj >= kBJ || jb + jj >= jend) continue;
        const float tap = m1_tap<K, SILU>(f, c, kk, f.v[(jb + jj) * f.ldv + c]);
#pragma unroll
        for (int k = 0; k < 4; ++k) r[jj][k] = fmaf(tap, qn[k], r[jj][k]);
      }
    }
    if (mb == 0) {  // A·log2(e) - a_max and a_max of channel c, once per launch
      const float am = quad_max(a2[0], a2[1], a2[2], a2[3]);
      float* const arel = rf::arel(R, njb, nslab);
      *reinterpret_cast<float4*>(arel + c * m1::kNS + n0) = make_float4(a2[0] - am, a2[1] - am, a2[2] - am, a2[3] - am);
      if ((idx & 3) == 0) arel[D * m1::kNS + c] = am;
    }
    // In the chunk layout (see rf): per source, the 4 threads of the channel (adjacent lanes)
    // agree on the scale 2^e, e the exponent of the largest |R| of its 16 states (0 for a zero
    // row), then each stores its 4 states in fp16, 8 contiguous bytes, and the first the scale.
    __half* const out = R + rf::offset(mb, slab, nslab) + (cc / rf::kChunkChannels) * (rf::kChunkBytes / 2);
    const int k = cc % rf::kChunkChannels;
#pragma unroll
    for (int jj = 0; jj < kBJ; ++jj) {
      const int e = pow2_exponent(quad_max(fabsf(r[jj][0]), fabsf(r[jj][1]), fabsf(r[jj][2]), fabsf(r[jj][3])));
      const float down = pow2(-e);
      const __half2 lo = __floats2half2_rn(r[jj][0] * down, r[jj][1] * down);
      const __half2 hi = __floats2half2_rn(r[jj][2] * down, r[jj][3] * down);
      uint2 v;
      v.x = *reinterpret_cast<const unsigned*>(&lo);
      v.y = *reinterpret_cast<const unsigned*>(&hi);
      *reinterpret_cast<uint2*>(out + rf::in_chunk(k, jj, n0)) = v;
      if ((idx & 3) == 0)
        reinterpret_cast<__nv_bfloat16*>(out)[rf::kChunkElems + jj * rf::kChunkChannels + k] =
            __float2bfloat16_rn(pow2(e));  // exact in bf16
    }
  }
#endif
}

std::atomic<int64_t> g_launches{0}, g_factored_launches{0};

// The tile kernel for a family (M1) and path (RF), by activation and score set.
template <bool M1, bool RF>
auto tile_kernel_for(bool silu, bool all) {
  return silu ? (all ? wgmma_tile_kernel<4, true, true, M1, RF> : wgmma_tile_kernel<4, true, false, M1, RF>)
              : (all ? wgmma_tile_kernel<4, false, true, M1, RF> : wgmma_tile_kernel<4, false, false, M1, RF>);
}

}  // namespace

bool latim_tile_wgmma_supported() {
#ifndef LATIM_SM90A
  return false;
#else
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess)
    return false;
  return major == 9 && minor == 0;
#endif
}

int64_t latim_tile_wgmma_launches() { return g_launches.load(); }
int64_t latim_tile_wgmma_factored_launches() { return g_factored_launches.load(); }

bool latim_tile_wgmma(const TileFactors& f, int64_t i0, int64_t ni, int64_t j0, int64_t nj, bool hidden_attn,
                      bool l1_alti, float* partial, float* hattn, double* contrib, cudaStream_t stream, int layer) {
#ifndef LATIM_SM90A
  (void)f, (void)i0, (void)ni, (void)j0, (void)nj, (void)hidden_attn, (void)l1_alti, (void)partial, (void)hattn,
      (void)contrib, (void)stream, (void)layer;
  return false;
#else
  const bool m1 = !f.mamba2;
  if (f.D % kBK != 0 || f.K != 4) return false;
  if (!m1 && (f.P <= 0 || f.P % 8 != 0)) return false;
  if (m1 && f.N != m1::kNS) return false;  // Mamba-1 with d_state 16 (mamba-130m .. 2.8b)
  // The producer stages rows with 16-byte copies.
  const auto addr = [](const void* p) { return reinterpret_cast<uintptr_t>(p); };
  if (f.ldv % 4 != 0 || ((addr(f.Z) | addr(f.v) | addr(f.conv_w) | addr(f.conv_b)) & 15) != 0) return false;
  if (m1 && ((addr(f.delta) | addr(f.A2) | addr(f.Dskip) | addr(f.S)) & 15) != 0) return false;
  if (const char* e = std::getenv("LATIM_TILE_KERNEL"); e && std::strcmp(e, "mma") == 0) return false;
  int dev = 0, major = 0, minor = 0, max_smem = 0, sms = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice", layer);
  check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute", layer);
  check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev), "cudaDeviceGetAttribute", layer);
  if (major != 9 || minor != 0) return false;  // wgmma is sm_90a only
  check(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute",
        layer);
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute", layer);
  // Mamba-1 without the hidden attention: the fast blocks with u factored (RF), the diagonal
  // band in a second launch (LATIM_M1_FACTORED=0: every block in one launch, as with it).
  const char* fe = std::getenv("LATIM_M1_FACTORED");
  const bool rfac = m1 && !hidden_attn && !(fe && std::strcmp(fe, "0") == 0);
  auto stages_for = [&](bool rf) {
    int nstages = 4;
    while (nstages >= 2 && layout(nstages, f.H, f.G * f.N, f.G, f.D / kBK, m1, rf).total > max_smem) --nstages;
    return nstages;
  };
  const int nstages = stages_for(false), nstages_rf = rfac ? stages_for(true) : 0;
  if (nstages < 2 || (rfac && nstages_rf < 2)) return false;  // too many heads or too wide B/C for shared memory
  const int ncb = static_cast<int>(latim_tile_column_blocks(f.d));
  const int64_t njb = (nj + kBJ - 1) / kBJ, npb = ((ni + kBI - 1) / kBI) * njb;
  const int64_t Dpad = latim_tile_Dpad(f.D), dpad = latim_tile_dpad(f.d);
  const auto* Wk = static_cast<const __nv_bfloat16*>(f.WoutT) + Dpad * dpad;  // the swizzled image
  const int64_t grid = npb < sms ? npb : sms;
  auto* const us = static_cast<__nv_bfloat16*>(tile_scratch(dev, grid * (f.D / kBK) * kStageU, layer));
  const auto launch = [&](auto kernel, bool rf, int ns, const float* taps, const __half* R, bool band_only) {
    const Layout L = layout(ns, f.H, f.G * f.N, f.G, f.D / kBK, m1, rf);
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(L.total)),
          "latim_tile_wgmma (shared memory attribute)", layer);
    kernel<<<static_cast<unsigned>(grid), kThreads, L.total, stream>>>(f, Wk, ns, i0, ni, j0, nj, ncb, hidden_attn,
                                                                       partial, hattn, contrib, us, taps, R,
                                                                       band_only);
    check_launch(rf ? "latim_tile_wgmma (Mamba-1, u factored)" : "latim_tile_wgmma", layer, stream);
  };
  if (!m1) {
    launch(tile_kernel_for<false, false>(f.silu, l1_alti), false, nstages, nullptr, nullptr, false);
    ++g_launches;
    return true;
  }
  // Whether some block of the tile is neither above the diagonal nor fast (see m1): its last
  // position reaches a target, jb + kNL - 1 >= ib, for some jb <= ib + kBI - 1.
  const bool band = j0 <= i0 + ni - 1 && j0 + ((nj - 1) / kBJ) * kBJ + kNL - 1 >= i0;
  if (rfac) {
    auto* const R = static_cast<__half*>(tile_scratch(
        dev, rf::offset(njb, 0, f.D / kBK) * int64_t{sizeof(__half)} + rf::arel_floats(f.D) * int64_t{sizeof(float)},
        layer, TileScratch::M1R));
    const int64_t threads = njb * (f.D / kBK) * kBK * 4, blocks = (threads + 255) / 256;
    (f.silu ? m1_rfac_kernel<4, true> : m1_rfac_kernel<4, false>)<<<static_cast<unsigned>(blocks < 8192 ? blocks : 8192),
                                                                     256, 0, stream>>>(f, j0, nj, R);
    check_launch("latim_tile_wgmma (Mamba-1, R of the sources)", layer, stream);
    launch(tile_kernel_for<true, true>(f.silu, l1_alti), true, nstages_rf, nullptr, R, false);
    ++g_factored_launches;
  }
  if (!rfac || band) {
    float* const taps = static_cast<float*>(
        tile_scratch(dev, nj * f.K * f.D * int64_t{sizeof(float)}, layer, TileScratch::M1Taps));
    const int64_t blocks = (nj * f.D + 255) / 256;
    (f.silu ? m1_taps_kernel<4, true> : m1_taps_kernel<4, false>)<<<static_cast<unsigned>(blocks < 4096 ? blocks : 4096),
                                                                      256, 0, stream>>>(f, j0, nj, taps);
    check_launch("latim_tile_wgmma (Mamba-1 conv taps)", layer, stream);
    launch(tile_kernel_for<true, false>(f.silu, l1_alti), false, nstages, taps, nullptr, rfac);
  }
  ++g_launches;
  return true;
#endif
}

}  // namespace latim::cuda
