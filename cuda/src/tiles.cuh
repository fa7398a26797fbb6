// gdn2::cuda — the chunk size and the products the chunk-form kernels share: tensor cores with fp32 accumulation
// (warp_mma_*, lower_product_mma; one TF32 mma per tile for bf16 storage, three for float32) and, for the kept
// workspace's Y and U, register tiles on CUDA cores (lower_product_lanes).
#pragma once

#include "common.cuh"

namespace gdn2::cuda::detail {

// Chunk size C = 64 tokens, cut into sub-chunks of 16 (the reference's kSubChunk, reference/core/chunk.hpp).
constexpr int kChunk = 64, kSub = 16, kNumSub = kChunk / kSub, kThreads = 256;

// Tensor cores: a float rounded to TF32 (10 mantissa bits, round to nearest), and D = A B + D for one m16n8k8 tile
// (mma.sync, fp32 accumulation). Fragments (g = lane / 4, t = lane % 4): a = A[g][t], A[g+8][t], A[g][t+4],
// A[g+8][t+4]; b = B[t][g], B[t+4][g]; c = C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1].
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t u;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(u) : "f"(x));
  return u;
}
// A float already rounded to TF32 (round_tf32), as an mma operand: its bits, no conversion.
__device__ __forceinline__ float round_tf32(float x) { return __uint_as_float(to_tf32(x)); }
template <bool kRounded>
__device__ __forceinline__ uint32_t tf32_operand(float x) {
  if constexpr (kRounded) return __float_as_uint(x);
  else return to_tf32(x);
}
__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Every product of the chunk form runs on tensor cores, in one of two precisions chosen by the storage type:
//   bf16 storage (kSplit = false): one TF32 mma per tile, operands rounded to 10 mantissa bits;
//   float32 storage (kSplit = true, "3xTF32"): each operand split as x = hi + lo, hi = TF32(x), lo = TF32(x − hi)
//   (x − hi is exact), and A B = A_lo B_hi + A_hi B_lo + A_hi B_hi, three mmas into the same fp32 accumulators. What is
//   dropped, A_lo B_lo and lo's own rounding, is about 2⁻²² of each term: float32's budget (1e-5) holds, which one
//   TF32 mma (2⁻¹¹) does not. An operand that is inf or NaN (or rounds to inf) has lo = 0, so it meets the products
//   as in the single mma.
template <bool kSplit>
struct Tf32 {
  uint32_t hi, lo;  // (lo unused, and so never computed, without kSplit)
};
template <bool kSplit, bool kRounded = false>
__device__ __forceinline__ Tf32<kSplit> operand(float x) {
  if constexpr (!kSplit) {
    return {tf32_operand<kRounded>(x), 0u};
  } else {
    const uint32_t hi = to_tf32(x);
    const float rest = x - __uint_as_float(hi);
    return {hi, isfinite(rest) ? to_tf32(rest) : 0u};
  }
}
// A float stored only to be an mma operand: rounded to TF32 once, where it is stored (kRounded operands); kept whole
// when the products split it.
template <bool kSplit>
__device__ __forceinline__ float round_operand(float x) {
  if constexpr (kSplit) return x;
  else return round_tf32(x);
}
template <bool kSplit>
__device__ __forceinline__ void mma(float (&c)[4], const Tf32<kSplit> (&a)[4], Tf32<kSplit> b0, Tf32<kSplit> b1) {
  const uint32_t hi[4] = {a[0].hi, a[1].hi, a[2].hi, a[3].hi};
  if constexpr (kSplit) {
    const uint32_t lo[4] = {a[0].lo, a[1].lo, a[2].lo, a[3].lo};
    mma_tf32(c, lo, b0.hi, b1.hi);
    mma_tf32(c, hi, b0.lo, b1.lo);
  }
  mma_tf32(c, hi, b0.hi, b1.hi);
}

// One warp's share of a tensor-core product: cf[nt] += (sign · A) B for the warp's 16 rows from m0 and NTW tiles of
// 8 columns from n0, over the depth k0 = k_begin, k_begin + 8, .. < k_end. A is read along its rows (A(m, k) =
// A[m·a_ld + k]; a_ld ≡ 4 mod 32 puts a fragment's 32 reads in 32 banks), B(k, n) = B[k·b_ld + n] (b_ld ≡ 8 mod 32);
// both as mma operands (sign = −1 is an exact negation, so rounding or splitting −x gives −(x's)). Used by the
// forward pass (R = U − Y S_n), the output kernel (Q_γ S_n) and the backward pass (K_tail dS_C).
template <bool kSplit, int NTW>
__device__ __forceinline__ void warp_mma_rows(float (&cf)[NTW][4], const float* A, int a_ld, const float* B, int b_ld,
                                              int m0, int n0, int k_begin, int k_end, float sign = 1.f) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  auto op = [](float x) { return operand<kSplit>(x); };
#pragma unroll 4
  for (int k0 = k_begin; k0 < k_end; k0 += 8) {
    const Tf32<kSplit> af[4] = {op(sign * A[(m0 + g) * a_ld + k0 + t]), op(sign * A[(m0 + g + 8) * a_ld + k0 + t]),
                                op(sign * A[(m0 + g) * a_ld + k0 + t + 4]),
                                op(sign * A[(m0 + g + 8) * a_ld + k0 + t + 4])};
#pragma unroll
    for (int nt = 0; nt < NTW; ++nt)
      mma(cf[nt], af, op(B[(k0 + t) * b_ld + n0 + nt * 8 + g]), op(B[(k0 + t + 4) * b_ld + n0 + nt * 8 + g]));
  }
}

// warp_mma_rows for two products that share B, depth 8·KS: cf += (sign · A) B, and cf2 += A2 B with A2's fragments in
// registers (a2[ks][j] as mma's a); one B fragment serves both, the bits those of two calls (R = U − Y S_n and
// Q_γ S_n). kARounded: A and A2 hold values already rounded to TF32 (round_operand), so only B is converted.
template <bool kSplit, int NTW, int KS, bool kARounded = false>
__device__ __forceinline__ void warp_mma_rows_pair(float (&cf)[NTW][4], const float* A, int a_ld, float (&cf2)[NTW][4],
                                                   const float (&a2)[KS][4], const float* B, int b_ld, int m0, int n0,
                                                   float sign) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  auto op = [](float x) { return operand<kSplit, kARounded>(x); };
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    const int k0 = 8 * ks;
    const Tf32<kSplit> af[4] = {op(sign * A[(m0 + g) * a_ld + k0 + t]), op(sign * A[(m0 + g + 8) * a_ld + k0 + t]),
                                op(sign * A[(m0 + g) * a_ld + k0 + t + 4]),
                                op(sign * A[(m0 + g + 8) * a_ld + k0 + t + 4])};
    const Tf32<kSplit> af2[4] = {op(a2[ks][0]), op(a2[ks][1]), op(a2[ks][2]), op(a2[ks][3])};
#pragma unroll
    for (int nt = 0; nt < NTW; ++nt) {
      const Tf32<kSplit> b0 = operand<kSplit>(B[(k0 + t) * b_ld + n0 + nt * 8 + g]);
      const Tf32<kSplit> b1 = operand<kSplit>(B[(k0 + t + 4) * b_ld + n0 + nt * 8 + g]);
      mma(cf[nt], af, b0, b1);
      mma(cf2[nt], af2, b0, b1);
    }
  }
}

// The same with A read down its columns (A(m, k) = X[k·x_ld + m], x_ld ≡ 8 mod 32): cf[mt][nt] += (sign · A) B for
// MTS tiles of 16 rows from m0 and NTW tiles of 8 columns from n0, depth 0, 8, .. < depth (K_tailᵀ R; Q_γᵀ dO, −Yᵀ dR).
// kRounded: X and B hold values already rounded to TF32 (the fused forward pass), used as they are.
template <bool kSplit, int MTS, int NTW, bool kRounded = false>
__device__ __forceinline__ void warp_mma_cols(float (&cf)[MTS][NTW][4], const float* X, int x_ld, const float* B,
                                              int b_ld, int m0, int n0, int depth, float sign = 1.f) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  auto op = [](float x) { return operand<kSplit, kRounded>(x); };
#pragma unroll 2
  for (int k0 = 0; k0 < depth; k0 += 8) {
    Tf32<kSplit> af[MTS][4];
#pragma unroll
    for (int mt = 0; mt < MTS; ++mt) {
      const int m = m0 + mt * 16 + g;
      af[mt][0] = op(sign * X[(k0 + t) * x_ld + m]), af[mt][1] = op(sign * X[(k0 + t) * x_ld + m + 8]);
      af[mt][2] = op(sign * X[(k0 + t + 4) * x_ld + m]);
      af[mt][3] = op(sign * X[(k0 + t + 4) * x_ld + m + 8]);
    }
#pragma unroll
    for (int nt = 0; nt < NTW; ++nt) {
      const Tf32<kSplit> b0 = op(B[(k0 + t) * b_ld + n0 + nt * 8 + g]);
      const Tf32<kSplit> b1 = op(B[(k0 + t + 4) * b_ld + n0 + nt * 8 + g]);
#pragma unroll
      for (int mt = 0; mt < MTS; ++mt) mma(cf[mt][nt], af[mt], b0, b1);
    }
  }
}

// S ← Diag(γ) S + F on the warp's fragments of warp_mma_cols, in fp32: each warp updates only the part of S it owns.
template <int MTS, int NTW>
__device__ __forceinline__ void decay_add_fragments(const float (&cf)[MTS][NTW][4], float* S, int ld, const float* gamma,
                                                    int m0, int n0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int mt = 0; mt < MTS; ++mt)
#pragma unroll
    for (int nt = 0; nt < NTW; ++nt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int d = m0 + mt * 16 + g + 8 * h, col = n0 + nt * 8 + 2 * t;
        float* st = S + d * ld + col;
        st[0] = gamma[d] * st[0] + cf[mt][nt][2 * h];
        st[1] = gamma[d] * st[1] + cf[mt][nt][2 * h + 1];
      }
}

// One warp's mma accumulators (rows m0 + g, + 8; columns n0 + nt·8 + 2t, + 1) into a shared tile (row stride ld), and
// rows below L also to out + r·out_rs. kPairs: each pair of columns by one 8-byte access (8-byte aligned).
template <int NTW, bool kPairs = false>
__device__ __forceinline__ void store_fragments(const float (&cf)[NTW][4], float* tile, int ld, float* out,
                                                int64_t out_rs, int m0, int n0, int L) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < NTW; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = m0 + g + 8 * h, col = n0 + nt * 8 + 2 * t;
      if constexpr (kPairs) {
        const float2 pair = make_float2(cf[nt][2 * h], cf[nt][2 * h + 1]);
        *reinterpret_cast<float2*>(tile + r * ld + col) = pair;
        if (r < L) *reinterpret_cast<float2*>(out + r * out_rs + col) = pair;
      } else {
        tile[r * ld + col] = cf[nt][2 * h], tile[r * ld + col + 1] = cf[nt][2 * h + 1];
        if (r < L) {
          float* at = out + r * out_rs + col;
          at[0] = cf[nt][2 * h], at[1] = cf[nt][2 * h + 1];
        }
      }
    }
}

// acc = L B for a lower-triangular C × C matrix L (row-major, rows l_rs floats apart and 16-byte aligned) and an
// N-column B (rows b_rs floats apart). Warp w owns rows w·TM .. w·TM + TM − 1; lane l owns the columns l, l + 32, ...:
// a warp's load of B is 32 consecutive floats (no bank conflicts) and its loads of L are float4 broadcasts. Terms
// above the diagonal are skipped, not multiplied by zero; the sum runs over j in ascending order.
template <int N, int NT>
__device__ __forceinline__ void lower_product_lanes(float (&acc)[kChunk / (NT / 32)][N / 32], const float* L, int l_rs,
                                                    const float* B, int b_rs, int tid) {
  constexpr int TM = kChunk / (NT / 32), TN = N / 32;
  static_assert(TM % 4 == 0 && N % 32 == 0, "float4 rows, whole lanes");
  const int lane = tid % 32, m0 = (tid / 32) * TM;
  for (int j0 = 0; j0 < m0; j0 += 4) {  // the blocks left of the warp's diagonal block: every term
    float4 a[TM];
#pragma unroll
    for (int i = 0; i < TM; ++i) a[i] = *reinterpret_cast<const float4*>(L + (m0 + i) * l_rs + j0);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      float bb[TN];
#pragma unroll
      for (int l = 0; l < TN; ++l) bb[l] = B[(j0 + u) * b_rs + lane + 32 * l];
#pragma unroll
      for (int i = 0; i < TM; ++i) {
        const float ai = u == 0 ? a[i].x : u == 1 ? a[i].y : u == 2 ? a[i].z : a[i].w;
#pragma unroll
        for (int l = 0; l < TN; ++l) acc[i][l] += ai * bb[l];
      }
    }
  }
#pragma unroll
  for (int u = 0; u < TM; ++u) {  // the diagonal block: terms j ≤ row only
    const int j = m0 + u;
    float bb[TN];
#pragma unroll
    for (int l = 0; l < TN; ++l) bb[l] = B[j * b_rs + lane + 32 * l];
#pragma unroll
    for (int i = u; i < TM; ++i) {
      const float ai = L[(m0 + i) * l_rs + j];
#pragma unroll
      for (int l = 0; l < TN; ++l) acc[i][l] += ai * bb[l];
    }
  }
}

// Rows r < L of X = A B (A = (I + T)⁻¹, Eq. 21, zeros above the diagonal stored, rows AS = C + 4 floats apart; B a
// [C][K] tile) on tensor cores: Y = AĒ and U = AZ (Eq. 22) in the fused forward, row r to out + r·out_rs, as an mma
// operand (round_operand) when kRound. 16 warps: rows 16·(w % 4) .. + 15, K/4 columns from (w / 4)·K/4; the k-steps stop at the warp's
// diagonal block (Ē, Z finite: the terms above the diagonal are exact zeros, no row depends on later rows).
template <bool kSplit, int K, int KP, int AS, int NT, bool kRound>
__device__ __forceinline__ void lower_product_mma(const float* s_A, const float* B, float* out, int64_t out_rs, int L,
                                                  int tid) {
  static_assert(NT == 512, "16 warps: 4 row blocks × 4 column quarters");
  constexpr int NTW = K / 32;
  const int warp = tid / 32, lane = tid % 32, wm = (warp % 4) * 16, n0 = (warp / 4) * (K / 4);
  float cf[NTW][4] = {};
  warp_mma_rows<kSplit>(cf, s_A, AS, B, KP, wm, n0, 0, wm + 16);
#pragma unroll
  for (int nt = 0; nt < NTW; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = wm + lane / 4 + 8 * h, col = n0 + nt * 8 + 2 * (lane % 4);
      float2 x = make_float2(cf[nt][2 * h], cf[nt][2 * h + 1]);
      if (kRound) x = make_float2(round_operand<kSplit>(x.x), round_operand<kSplit>(x.y));
      if (r < L) *reinterpret_cast<float2*>(out + r * out_rs + col) = x;
    }
}

}  // namespace gdn2::cuda::detail
