// Small device functions several kernel files use: the SiLU of the forward (and of the
// LaTIM surrogate in the mma.sync tile kernel) and the bf16 bits of a float.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace latim::cuda {

// 2^v on the special-function unit alone (ex2.approx.ftz: 2 ulp, results below 2^-126
// flushed to zero), for decays 2^v <= 1, without exp2f's range handling around it.
__device__ __forceinline__ float exp2_ftz(float v) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
}

// log2(v) on the special-function unit (lg2.approx.ftz: about 2^-22 absolute error; -inf for
// v = 0), for a positive factor folded into an exponent of exp2_ftz.
__device__ __forceinline__ float lg2_ftz(float v) {
  float r;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(v));
  return r;
}

// x σ(x), as the CPU reference computes it (expf, an IEEE division).
__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }
// The same with __expf's exponential and __fdividef (a few fp32 ulps; 0 for x below about
// -88): for values rounded to bf16 next (the bf16 mode's gates and conv outputs), where the
// ~20 instructions of the exact form cost more than the memory traffic of the kernels that
// use it. e^-x is __expf's (2^(x log2 e) on the special-function unit) without its handling
// of results below 2^-126, which cannot change 1 + e^-x: the bits of __expf's form.
__device__ __forceinline__ float silu_fast(float x) {
  return __fdividef(x, 1.0f + exp2_ftz(x * -1.4426950408889634f));
}
// Both on 4 values.
__device__ __forceinline__ float4 silu4(const float4& z) { return make_float4(silu(z.x), silu(z.y), silu(z.z), silu(z.w)); }
__device__ __forceinline__ float4 silu4_fast(const float4& z) {
  return make_float4(silu_fast(z.x), silu_fast(z.y), silu_fast(z.z), silu_fast(z.w));
}

// softplus as torch computes it (threshold 20), the CPU reference's formula: Δ of Mamba-1
// (softplus_rows, and the selective scan that applies it in its first pass) and Mamba-2.
__device__ __forceinline__ float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
// The same for values rounded to bf16 next (Mamba-1's Δ in the bf16 mode): max(x, 0) +
// log1p(u), u = e^-|x| on the special-function unit (flushed to zero below 2^-126), and
// log1p(u) = u q(u) with q a degree-5 polynomial on [0, 1] (relative error 8.5·10^-6, a
// fiftieth of a bf16 ulp): the result is within a bf16 ulp of the exact form's rounding.
// About 10 instructions and one special-function operation where log1pf(expf()) takes 40.
__device__ __forceinline__ float softplus_fast(float x) {
  const float u = exp2_ftz(fabsf(x) * -1.4426950408889634f);
  float q = -2.38688905e-2f;
  q = fmaf(q, u, 1.01221167e-1f);
  q = fmaf(q, u, -2.10047171e-1f);
  q = fmaf(q, u, 3.25205833e-1f);
  q = fmaf(q, u, -4.99361187e-1f);
  q = fmaf(q, u, 9.99991596e-1f);
  return fmaf(u, q, fmaxf(x, 0.0f));
}

// The bits of x rounded to bf16 (to nearest even).
__device__ __forceinline__ uint16_t bf16_bits(float x) { return __bfloat16_as_ushort(__float2bfloat16_rn(x)); }
// The same bits by the packing conversion (F2FP): off the special-function unit, where the
// Mamba-1 scan's first pass, bound by that unit, rounds Δ.
__device__ __forceinline__ uint16_t bf16_bits_packed(float x) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %1;" : "=r"(r) : "f"(x));
  return static_cast<uint16_t>(r);
}
// Two floats rounded to bf16 and packed in 4 bytes (a first, in the low half).
__device__ __forceinline__ uint32_t pack_bf16x2(float a, float b) {
  return bf16_bits(a) | static_cast<uint32_t>(bf16_bits(b)) << 16;
}

// One bf16 output pair of a causal conv: bias + sum_s tap[j][s] win[s] in the order of s
// (win[s] the inputs s steps back, taps likewise), then the fast SiLU where act, rounded and
// packed. The bf16 conv kernel and conv_xproj both call it, so their outputs have the same bits.
template <int KM>
__device__ __forceinline__ uint32_t conv_pair_bf16(const float (&tap)[2][KM], float bias0, float bias1,
                                                   const float2 (&win)[KM], bool act) {
  float acc0 = bias0, acc1 = bias1;
#pragma unroll
  for (int s = 0; s < KM; ++s) {
    acc0 += tap[0][s] * win[s].x;
    acc1 += tap[1][s] * win[s].y;
  }
  if (act) {
    acc0 = silu_fast(acc0);
    acc1 = silu_fast(acc1);
  }
  return pack_bf16x2(acc0, acc1);
}

// An activation as a float: fp32 as it is, or the bits of a bf16 (exact: every bf16 is a float).
__device__ __forceinline__ float bf16_float(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
__device__ __forceinline__ float ld_act(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float ld_act(const uint16_t* p, int64_t i) { return bf16_float(p[i]); }

// 2 (4) bf16 values packed in 4 (8) bytes, lowest first, widened.
__device__ __forceinline__ float2 widen_bf16x2(uint32_t u) {
  return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
}
__device__ __forceinline__ float4 widen_bf16x4(const uint2& u) {
  const float2 a = widen_bf16x2(u.x), b = widen_bf16x2(u.y);
  return make_float4(a.x, a.y, b.x, b.y);
}
// 4 consecutive activations p[i..i+3] in one access (16 bytes of fp32, 8 of bf16; aligned).
__device__ __forceinline__ float4 ld_act4(const float* p, int64_t i) { return *reinterpret_cast<const float4*>(p + i); }
__device__ __forceinline__ float4 ld_act4(const uint16_t* p, int64_t i) {
  return widen_bf16x4(*reinterpret_cast<const uint2*>(p + i));
}

// Inclusive prefix sums over a warp's 64 values, lane l holding v0 (position 2l) and v1
// (position 2l + 1): L0 and L1 are the sums up to and including each.
__device__ __forceinline__ void warp_pair_cumsum(float v0, float v1, int lane, float& L0, float& L1) {
  float s = v0 + v1;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const float t = __shfl_up_sync(0xffffffffu, s, o);
    if (lane >= o) s += t;
  }
  float excl = __shfl_up_sync(0xffffffffu, s, 1);
  if (lane == 0) excl = 0.0f;
  L0 = excl + v0;
  L1 = L0 + v1;
}

}  // namespace latim::cuda
