// gdn2::cuda — the chunk size and the products the chunk-form kernels share: register tiles on CUDA cores
// (tile_product_vec, lower_product_lanes) and TF32 tensor cores with fp32 accumulation (warp_mma_*, lower_product_mma).
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

// One warp's share of a tensor-core product: cf[nt] += (sign · A) B for the warp's 16 rows from m0 and NTW tiles of
// 8 columns from n0, over the depth k0 = k_begin, k_begin + 8, .. < k_end. A is read along its rows (A(m, k) =
// A[m·a_ld + k]; a_ld ≡ 4 mod 32 puts a fragment's 32 reads in 32 banks), B(k, n) = B[k·b_ld + n] (b_ld ≡ 8 mod 32);
// both rounded to TF32 (sign = −1 is an exact negation, so rounding −x gives −round(x)). Used by the forward pass
// (R = U − Y S_n), the output kernel (Q_γ S_n) and the backward pass (K_tail dS_C).
template <int NTW>
__device__ __forceinline__ void warp_mma_rows(float (&cf)[NTW][4], const float* A, int a_ld, const float* B, int b_ld,
                                              int m0, int n0, int k_begin, int k_end, float sign = 1.f) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll 4
  for (int k0 = k_begin; k0 < k_end; k0 += 8) {
    const uint32_t af[4] = {to_tf32(sign * A[(m0 + g) * a_ld + k0 + t]), to_tf32(sign * A[(m0 + g + 8) * a_ld + k0 + t]),
                            to_tf32(sign * A[(m0 + g) * a_ld + k0 + t + 4]),
                            to_tf32(sign * A[(m0 + g + 8) * a_ld + k0 + t + 4])};
#pragma unroll
    for (int nt = 0; nt < NTW; ++nt)
      mma_tf32(cf[nt], af, to_tf32(B[(k0 + t) * b_ld + n0 + nt * 8 + g]),
               to_tf32(B[(k0 + t + 4) * b_ld + n0 + nt * 8 + g]));
  }
}

// warp_mma_rows for two products that share B, depth 8·KS: cf += (sign · A) B, and cf2 += A2 B with A2's fragments in
// registers (a2[ks][j] as mma_tf32's a); one B fragment serves both, the bits those of two calls (R = U − Y S_n and
// Q_γ S_n). kARounded: A and A2 hold values already rounded to TF32, so only B is converted.
template <int NTW, int KS, bool kARounded = false>
__device__ __forceinline__ void warp_mma_rows_pair(float (&cf)[NTW][4], const float* A, int a_ld, float (&cf2)[NTW][4],
                                                   const float (&a2)[KS][4], const float* B, int b_ld, int m0, int n0,
                                                   float sign) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  auto op = [](float x) { return tf32_operand<kARounded>(x); };
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
    const int k0 = 8 * ks;
    const uint32_t af[4] = {op(sign * A[(m0 + g) * a_ld + k0 + t]), op(sign * A[(m0 + g + 8) * a_ld + k0 + t]),
                            op(sign * A[(m0 + g) * a_ld + k0 + t + 4]), op(sign * A[(m0 + g + 8) * a_ld + k0 + t + 4])};
    const uint32_t af2[4] = {op(a2[ks][0]), op(a2[ks][1]), op(a2[ks][2]), op(a2[ks][3])};
#pragma unroll
    for (int nt = 0; nt < NTW; ++nt) {
      const uint32_t b0 = to_tf32(B[(k0 + t) * b_ld + n0 + nt * 8 + g]), b1 = to_tf32(B[(k0 + t + 4) * b_ld + n0 + nt * 8 + g]);
      mma_tf32(cf[nt], af, b0, b1);
      mma_tf32(cf2[nt], af2, b0, b1);
    }
  }
}

// The same with A read down its columns (A(m, k) = X[k·x_ld + m], x_ld ≡ 8 mod 32): cf[mt][nt] += (sign · A) B for
// MTS tiles of 16 rows from m0 and NTW tiles of 8 columns from n0, depth 0, 8, .. < depth (K_tailᵀ R; Q_γᵀ dO, −Yᵀ dR).
// kRounded: X and B hold values already rounded to TF32 (the fused forward pass), used as they are.
template <int MTS, int NTW, bool kRounded = false>
__device__ __forceinline__ void warp_mma_cols(float (&cf)[MTS][NTW][4], const float* X, int x_ld, const float* B,
                                              int b_ld, int m0, int n0, int depth, float sign = 1.f) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  auto op = [](float x) { return tf32_operand<kRounded>(x); };
#pragma unroll 2
  for (int k0 = 0; k0 < depth; k0 += 8) {
    uint32_t af[MTS][4];
#pragma unroll
    for (int mt = 0; mt < MTS; ++mt) {
      const int m = m0 + mt * 16 + g;
      af[mt][0] = op(sign * X[(k0 + t) * x_ld + m]), af[mt][1] = op(sign * X[(k0 + t) * x_ld + m + 8]);
      af[mt][2] = op(sign * X[(k0 + t + 4) * x_ld + m]);
      af[mt][3] = op(sign * X[(k0 + t + 4) * x_ld + m + 8]);
    }
#pragma unroll
    for (int nt = 0; nt < NTW; ++nt) {
      const uint32_t b0 = op(B[(k0 + t) * b_ld + n0 + nt * 8 + g]);
      const uint32_t b1 = op(B[(k0 + t + 4) * b_ld + n0 + nt * 8 + g]);
#pragma unroll
      for (int mt = 0; mt < MTS; ++mt) mma_tf32(cf[mt][nt], af[mt], b0, b1);
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

// n consecutive shared floats into registers with the widest loads their alignment allows (16 or 8 bytes).
template <int n>
__device__ __forceinline__ void load_run(float* x, const float* p) {
  if constexpr (n % 4 == 0) {
#pragma unroll
    for (int i = 0; i < n; i += 4) {
      const float4 t = *reinterpret_cast<const float4*>(p + i);
      x[i] = t.x, x[i + 1] = t.y, x[i + 2] = t.z, x[i + 3] = t.w;
    }
  } else if constexpr (n % 2 == 0) {
#pragma unroll
    for (int i = 0; i < n; i += 2) {
      const float2 t = *reinterpret_cast<const float2*>(p + i);
      x[i] = t.x, x[i + 1] = t.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < n; ++i) x[i] = p[i];
  }
}

// acc (+)= sign · A B for the TM×TN tile of an M×N product owned by thread tid (NT threads). CAUSAL (A lower
// triangular): terms with j > m are skipped, not multiplied by zero — a future row of B may hold inf once the state
// overflows float32, and 0·inf = NaN would break causality. Shared loads are vectors: B's TN columns as float4s (one
// 16-byte wavefront per 8 lanes), and A's entries as runs along its contiguous axis: kARows (A(m, j) =
// A[m·a_ld + j]) four depth steps per float4; otherwise (A(m, j) = A[j·a_ld + m]) the thread's TM rows as
// float4/float2. Needs 16-byte aligned bases, a_ld and b_rs multiples of 4.
template <int M, int N, int TM, int TN, bool kARows, bool CAUSAL = false, int NT = kThreads>
__device__ __forceinline__ void tile_product_vec(float (&acc)[TM][TN], const float* A, int a_ld, const float* B,
                                                 int b_rs, int depth, int tid, float sign = 1.f) {
  static_assert((M / TM) * (N / TN) == NT, "one tile per thread");
  const int m0 = (tid / (N / TN)) * TM, n0 = (tid % (N / TN)) * TN;
  const int end = CAUSAL ? min(depth, m0 + TM) : depth;
  auto step = [&](const float (&a)[TM], int j) {
    float b[TN];
    load_run<TN>(b, B + j * b_rs + n0);
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int l = 0; l < TN; ++l)
        if (!CAUSAL || j <= m0 + i) acc[i][l] += a[i] * b[l];
  };
  if constexpr (kARows) {
    int j = 0;
#pragma unroll 2
    for (; j + 4 <= end; j += 4) {
      float a4[TM][4];
#pragma unroll
      for (int i = 0; i < TM; ++i) load_run<4>(a4[i], A + (m0 + i) * a_ld + j);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        float a[TM];
#pragma unroll
        for (int i = 0; i < TM; ++i) a[i] = sign * a4[i][u];
        step(a, j + u);
      }
    }
    for (; j < end; ++j) {
      float a[TM];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = sign * A[(m0 + i) * a_ld + j];
      step(a, j);
    }
  } else {
#pragma unroll 4
    for (int j = 0; j < end; ++j) {
      float a[TM];
      load_run<TM>(a, A + j * a_ld + m0);
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] *= sign;
      step(a, j);
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
// [C][K] tile) on TF32 tensor cores: Y = AĒ and U = AZ (Eq. 22) in the fused forward, row r to out + r·out_rs, rounded
// to TF32 when kRound. 16 warps: rows 16·(w % 4) .. + 15, K/4 columns from (w / 4)·K/4; the k-steps stop at the warp's
// diagonal block (Ē, Z finite: the terms above the diagonal are exact zeros, no row depends on later rows).
template <int K, int KP, int AS, int NT, bool kRound>
__device__ __forceinline__ void lower_product_mma(const float* s_A, const float* B, float* out, int64_t out_rs, int L,
                                                  int tid) {
  static_assert(NT == 512, "16 warps: 4 row blocks × 4 column quarters");
  constexpr int NTW = K / 32;
  const int warp = tid / 32, lane = tid % 32, wm = (warp % 4) * 16, n0 = (warp / 4) * (K / 4);
  float cf[NTW][4] = {};
  warp_mma_rows(cf, s_A, AS, B, KP, wm, n0, 0, wm + 16);
#pragma unroll
  for (int nt = 0; nt < NTW; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = wm + lane / 4 + 8 * h, col = n0 + nt * 8 + 2 * (lane % 4);
      float2 x = make_float2(cf[nt][2 * h], cf[nt][2 * h + 1]);
      if (kRound) x = make_float2(round_tf32(x.x), round_tf32(x.y));
      if (r < L) *reinterpret_cast<float2*>(out + r * out_rs + col) = x;
    }
}

}  // namespace gdn2::cuda::detail
