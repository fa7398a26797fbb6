// gdn2::cuda — the chunk size, the register-tiled products, the tensor-core helpers and the exact-decay steps shared by
// the chunk-form kernels (forward versions 04-14, the backward), and a warp reduce-scatter of 32 sums.
#pragma once

#include "common.cuh"

namespace gdn2::cuda::detail {

constexpr int kChunk = 64, kSub = 16, kNumSub = kChunk / kSub, kThreads = 256;

// acc (+)= sign · A B for the TM×TN tile of an M×N product owned by thread tid (256 threads tile the product in a
// 16 × 16 grid). A(m, j) = A[m·a_rs + j·a_cs] (so a transposed operand is a stride swap), B(j, n) = B[j·b_rs + n].
// Each step of j loads TM + TN values and does TM·TN multiply-adds from registers.
// CAUSAL (A lower triangular: A(m, j) = 0 for j > m): terms with j > m are skipped, not multiplied by zero — a
// future row of B may hold inf once the state overflows float32, and 0·inf = NaN would break causality.
template <int M, int N, int TM, int TN, bool CAUSAL = false, int NT = kThreads>
__device__ __forceinline__ void tile_product(float (&acc)[TM][TN], const float* A, int a_rs, int a_cs, const float* B,
                                             int b_rs, int depth, int tid, float sign = 1.f) {
  static_assert((M / TM) * (N / TN) == NT, "one tile per thread");
  const int m0 = (tid / (N / TN)) * TM, n0 = (tid % (N / TN)) * TN;
  const int end = CAUSAL ? min(depth, m0 + TM) : depth;
#pragma unroll 4
  for (int j = 0; j < end; ++j) {
    float a[TM], b[TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) a[i] = sign * A[(m0 + i) * a_rs + j * a_cs];
#pragma unroll
    for (int i = 0; i < TN; ++i) b[i] = B[j * b_rs + n0 + i];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int l = 0; l < TN; ++l)
        if (!CAUSAL || j <= m0 + i) acc[i][l] += a[i] * b[l];
  }
}

// Tensor cores: a float rounded to TF32 (10 mantissa bits, round to nearest), and D = A B + D for one m16n8k8 tile
// (mma.sync, fp32 accumulation). Fragments (g = lane / 4, t = lane % 4): a = A[g][t], A[g+8][t], A[g][t+4],
// A[g+8][t+4]; b = B[t][g], B[t+4][g]; c = C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1].
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t u;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(u) : "f"(x));
  return u;
}
// A float already rounded to TF32 (round_tf32), as an mma operand: its bits, no conversion (forward version 21 rounds
// the pass's operands where they are stored, once, instead of at every fragment read: the same bits reach the mma).
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

// warp_mma_rows for two products that share B, over the full depth 8·KS from 0: cf += (sign · A) B as there, and
// cf2 += A2 B with A2's fragments already in registers (a2[ks][j]: fragment value j of k-step ks, in the order of
// mma_tf32's a). One B fragment load and rounding serves both mma; each sum's terms and order are those of two
// warp_mma_rows calls, so the bits are too (forward version 21: R = U − Y S_n and Q_γ S_n). kARounded: A and A2 hold
// values already rounded to TF32 (tf32_operand), so only B is converted.
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
// the warp's MTS tiles of 16 rows from m0 and NTW tiles of 8 columns from n0, over the depth 0, 8, .. < depth. Used by
// the forward pass (K_tailᵀ R) and the backward pass (Q_γᵀ dO, −Yᵀ dR), whose state updates then add the fragments to
// Diag(γ) S (decay_add_fragments).
// kRounded: X and B hold values already rounded to TF32 (forward version 21), used as they are.
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

// S ← Diag(γ) S + F on the warp's fragments of warp_mma_cols (rows m0 + mt·16 + g (+ 8), columns n0 + nt·8 + 2t (+ 1)):
// each warp updates only the part of S it owns, in fp32.
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

// One warp's mma accumulators (rows m0 + g and m0 + g + 8, columns n0 + nt·8 + 2t and + 1) into a shared tile (row
// stride ld), and the rows below L also to global memory: row r at out + r·out_rs. kPairs (forward version 20): each
// pair of columns by one 8-byte access (tile, out and their row strides 8-byte aligned).
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

// tile_product with vector shared loads (forward version 12, backward version 09): the same terms in the same order,
// so the same bits. tile_product loads one float per instruction — TM + TN loads per depth step, and its TN
// consecutive columns per lane are a 2- to 4-way bank conflict. Here B's TN columns come as float4s (one 16-byte
// wavefront per 8 lanes, the minimum), and A's entries as runs along its contiguous axis: kARows (A(m, j) =
// A[m·a_ld + j]) four depth steps per float4; otherwise (A(m, j) = A[j·a_ld + m]) the thread's TM rows as
// float4/float2. Needs 16-byte aligned bases, a_ld and b_rs multiples of 4. Written on the hypothesis that the state
// passes were bound by these loads; measured on an H100 they were not (forward pass 1.76 -> 1.69 ms, backward pass
// 4.08 -> 3.89 ms; docs/cuda.md).
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

template <int N, int TM, int TN>
__device__ __forceinline__ void store_tile(const float (&acc)[TM][TN], float* out, int rs, int tid) {
  const int m0 = (tid / (N / TN)) * TM, n0 = (tid % (N / TN)) * TN;
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int l = 0; l < TN; ++l) out[(m0 + i) * rs + n0 + l] = acc[i][l];
}


// A chunk's q̃ = scale·q, k, e = b ⊙ k and g (rows ≥ L zero) into [C][K] tiles with rows KP floats apart (KP a multiple of
// 4), 16 bytes at a time: thread tid takes 8 consecutive channels of kPer rows, loads them with one 16-byte load per
// tensor (two for float32) and stores them 4 at a time. load() issues every load before store() writes any, so a
// kernel can issue more loads in between (stage 4 of the backward does). Used by forward version 16 (prepare) and
// backward version 17 (stage 4), whose stall profiles had their 4-byte loads and index arithmetic at an eighth of
// the kernel. The values are those of the 4-byte path: same bits.
template <int K, int NT>
struct ChunkInputs8 {
  static constexpr int kPer = kChunk * K / 8 / NT;
  static_assert((kChunk * K / 8) % NT == 0, "whole rounds");
  float q[kPer][8], k[kPer][8], b[kPer][8], g[kPer][8];
  template <typename T>
  __device__ __forceinline__ void load(const T* q_in, const T* k_in, const T* b_in, const float* g_in, int64_t row0,
                                       int H, int h, int L, int tid) {
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int i = u * NT + tid, r = i / (K / 8), d = (i % (K / 8)) * 8;
      if (r < L) {
        const int64_t at = ((row0 + r) * H + h) * K + d;
        load8(q[u], q_in + at), load8(k[u], k_in + at), load8(b[u], b_in + at), load8(g[u], g_in + at);
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) q[u][j] = k[u][j] = b[u][j] = g[u][j] = 0.f;
      }
    }
  }
  // s_x (forward version 23; may be null): also exp(g) as a [C][K] tile, rows K floats apart.
  template <int KP>
  __device__ __forceinline__ void store(float* s_q, float* s_k, float* s_e, float* s_g, float scale, int tid,
                                        float* s_x = nullptr) const {
    static_assert(KP % 4 == 0, "16-byte aligned rows");
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int i = u * NT + tid, at = (i / (K / 8)) * KP + (i % (K / 8)) * 8;
      float qs[8], es[8];
#pragma unroll
      for (int j = 0; j < 8; ++j) qs[j] = scale * q[u][j], es[j] = b[u][j] * k[u][j];
#pragma unroll
      for (int h4 = 0; h4 < 8; h4 += 4) {
        store4(s_q + at + h4, qs + h4), store4(s_k + at + h4, k[u] + h4);
        store4(s_e + at + h4, es + h4), store4(s_g + at + h4, g[u] + h4);
      }
      if (s_x) {
        float xs[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) xs[j] = expf(g[u][j]);
        const int ax = (i / (K / 8)) * K + (i % (K / 8)) * 8;
        store4(s_x + ax, xs), store4(s_x + ax + 4, xs + 4);
      }
    }
  }
};

// [SECTION] the exact-decay steps of one chunk, shared by versions 04-07 (paper Eq. 18-21, 25; docs/derivation.md
// step 4). Tiles are [C][K] with rows KP floats apart; q̃ = scale·q, e = b ⊙ k, g as loaded.

// 2a. Diagonal sub-chunk blocks of T and A_qk (Eq. 21, 25). Warp w takes the columns s = w, w + 8, ...; its lanes split
//     the K channels. Walking r upward from s inside s's sub-chunk, Γ_rs ⊙ k_s is kept per channel and updated by one
//     factor, Γ_{r,s} = Γ_{r−1,s} · exp(g_r): a product of factors ≤ 1 (exactly 0 after a g = −inf), never a
//     difference of sums; each entry is then a warp-wide dot product.
template <int K, int KP, int NT = kThreads>
__device__ __forceinline__ void chunk_diagonal_blocks(float* s_T, float* s_Aqk, const float* s_q, const float* s_k,
                                                      const float* s_e, const float* s_g, int tid) {
  constexpr int C = kChunk, PER_LANE = K / 32;
  const int warp = tid / 32, lane = tid % 32;
  for (int s = warp; s < C; s += NT / 32) {
    float dk[PER_LANE];
#pragma unroll
    for (int j = 0; j < PER_LANE; ++j) dk[j] = s_k[s * KP + lane + 32 * j];
    const int end = (s / kSub + 1) * kSub;
    for (int r = s; r < end; ++r) {
      float aqk = 0, t = 0;
#pragma unroll
      for (int j = 0; j < PER_LANE; ++j) {
        const int d = lane + 32 * j;
        if (r > s) dk[j] *= expf(s_g[r * KP + d]);
        aqk += s_q[r * KP + d] * dk[j];
        t += s_e[r * KP + d] * dk[j];
      }
#pragma unroll
      for (int off = 16; off; off /= 2) {
        aqk += __shfl_xor_sync(0xffffffffu, aqk, off);
        t += __shfl_xor_sync(0xffffffffu, t, off);
      }
      if (lane == 0) {
        s_Aqk[r * C + s] = aqk;
        s_T[r * C + s] = r > s ? t : 0.f;
      }
    }
  }
}

// 2b. The decay factors, one thread per (channel, sub-chunk): q̃⊙c and e⊙c (c_r = exp of r's prefix in its sub-chunk),
//     k⊙a (a_s = exp of s's suffix in its sub-chunk, s excluded), the sub-chunk sums, and exp of the sums of whole
//     sub-chunks before (pre), after (suf) and strictly between (mid). All exps of direct sums of g ≤ 0.
//     kKinv (forward version 30): also k_r ⊙ exp(−P_r), P_r the prefix of r in its sub-chunk (r included), written
//     over g's tile (g is read once into registers first; nothing reads g after 2b). With c_r = exp(P_r) this
//     factorises the diagonal blocks' decay from the sub-chunk's start: c_r · exp(−P_s) = exp(Σ_{s<i≤r} g_i) for
//     s < r, where both factors depend only on rows up to r (chunk_diagonal_blocks_mma). exp(−P_r) overflows after
//     a strong gate (g = −inf); such entries are never used (chunk_diagonal_blocks_mma selects them away). The sums
//     and products of q̃⊙c, e⊙c, k⊙a are those of the loop without kKinv: the same bits.
template <int K, int KP, int NT = kThreads, bool kKinv = false>
__device__ __forceinline__ void chunk_decay_factors(float* s_q, float* s_k, float* s_e, float* s_g, float* s_bs,
                                                    float* s_pre, float* s_suf, float* s_mid, int tid) {
  if constexpr (kKinv) {
    for (int i = tid; i < K * kNumSub; i += NT) {
      const int d = i % K, M = i / K;
      float* at = s_g + M * kSub * KP + d;  // row M·kSub + j of a tile: j·KP floats on
      float gr[kSub];
#pragma unroll
      for (int j = 0; j < kSub; ++j) gr[j] = at[j * KP];
      float run = 0;
#pragma unroll
      for (int j = 0; j < kSub; ++j) {
        run += gr[j];
        const float cr = expf(run);
        s_q[M * kSub * KP + d + j * KP] *= cr;
        s_e[M * kSub * KP + d + j * KP] *= cr;
        at[j * KP] = s_k[M * kSub * KP + d + j * KP] * expf(-run);
      }
      s_bs[M * K + d] = run;
      run = 0;
#pragma unroll
      for (int j = kSub - 1; j >= 0; --j) {
        s_k[M * kSub * KP + d + j * KP] *= expf(run);
        run += gr[j];
      }
    }
  } else
  for (int i = tid; i < K * kNumSub; i += NT) {
    const int d = i % K, M = i / K;
    float run = 0;
    for (int r = M * kSub; r < (M + 1) * kSub; ++r) {
      run += s_g[r * KP + d];
      const float cr = expf(run);
      s_q[r * KP + d] *= cr;
      s_e[r * KP + d] *= cr;
    }
    s_bs[M * K + d] = run;
    run = 0;
    for (int r = (M + 1) * kSub - 1; r >= M * kSub; --r) {
      s_k[r * KP + d] *= expf(run);
      run += s_g[r * KP + d];
    }
  }
  __syncthreads();
  for (int i = tid; i < K * kNumSub; i += NT) {
    const int d = i % K, M = i / K;
    float before = 0, after = 0;
    for (int j = 0; j < M; ++j) before += s_bs[j * K + d];
    for (int j = M + 1; j < kNumSub; ++j) after += s_bs[j * K + d];
    s_pre[M * K + d] = expf(before);
    s_suf[M * K + d] = expf(after);
    for (int I = M + 1; I < kNumSub; ++I) {
      float between = 0;
      for (int j = M + 1; j < I; ++j) between += s_bs[j * K + d];
      s_mid[(M * kNumSub + I) * K + d] = expf(between);
    }
  }
}

// 2c. Off-diagonal blocks of T and A_qk: Γ_rs = c_r · mid(J, I) · a_s (after 2b).
template <int K, int KP, int NT = kThreads>
__device__ __forceinline__ void chunk_off_diagonal_blocks(float* s_T, float* s_Aqk, const float* s_q, const float* s_k,
                                                          const float* s_e, const float* s_mid, int tid) {
  constexpr int C = kChunk;
  for (int i = tid; i < C * C; i += NT) {
    const int r = i / C, s = i % C, I = r / kSub, J = s / kSub;
    if (J >= I) continue;
    const float* mid = s_mid + (J * kNumSub + I) * K;
    float aqk = 0, t = 0;
    for (int d = 0; d < K; ++d) {
      const float dk = mid[d] * s_k[s * KP + d];
      aqk += s_q[r * KP + d] * dk;
      t += s_e[r * KP + d] * dk;
    }
    s_Aqk[i] = aqk;
    s_T[i] = t;
  }
}

// 2c, version 09: the same entries, only the 6 block pairs J < I enumerated (2c's loop visits all 64 × 64 and skips
//     five in eight), each thread a 2 × 2 tile — rows r, r + 8 of I against columns s, s + 8 of J — so one step over d
//     loads 7 floats for 8 multiply-adds instead of 16.
template <int K, int KP, int NT = kThreads>
__device__ __forceinline__ void chunk_off_diagonal_blocks_tiled(float* s_T, float* s_Aqk, const float* s_q,
                                                                const float* s_k, const float* s_e, const float* s_mid,
                                                                int tid) {
  constexpr int C = kChunk, kPairs = kNumSub * (kNumSub - 1) / 2, kTiles = kPairs * (kSub / 2) * (kSub / 2);
  for (int t = tid; t < kTiles; t += NT) {
    int pair = t / ((kSub / 2) * (kSub / 2)), I = 1, J = 0;
    while (pair >= I) pair -= I, ++I;  // pairs in the order (1,0), (2,0), (2,1), (3,0), (3,1), (3,2)
    J = pair;
    const int e = t % ((kSub / 2) * (kSub / 2)), r = I * kSub + e / (kSub / 2), s = J * kSub + e % (kSub / 2);
    const float* mid = s_mid + (J * kNumSub + I) * K;
    float aqk[2][2] = {}, tt[2][2] = {};
#pragma unroll 4
    for (int d = 0; d < K; ++d) {
      const float m = mid[d];
      const float k0 = m * s_k[s * KP + d], k1 = m * s_k[(s + kSub / 2) * KP + d];
      const float q0 = s_q[r * KP + d], q1 = s_q[(r + kSub / 2) * KP + d];
      const float e0 = s_e[r * KP + d], e1 = s_e[(r + kSub / 2) * KP + d];
      aqk[0][0] += q0 * k0, aqk[0][1] += q0 * k1, aqk[1][0] += q1 * k0, aqk[1][1] += q1 * k1;
      tt[0][0] += e0 * k0, tt[0][1] += e0 * k1, tt[1][0] += e1 * k0, tt[1][1] += e1 * k1;
    }
#pragma unroll
    for (int x = 0; x < 2; ++x)
#pragma unroll
      for (int y = 0; y < 2; ++y) {
        const int i = (r + x * kSub / 2) * C + s + y * kSub / 2;
        s_Aqk[i] = aqk[x][y];
        s_T[i] = tt[x][y];
      }
  }
}

// 2c, version 18 (bf16 storage): the same six block pairs on tensor cores. Each block of A_qk and T is a product over
//     the K channels — A_qk_IJ = (q̃⊙c)_I Diag(mid(J, I)) (k⊙a)_Jᵀ, T_IJ = (e⊙c)_I Diag(mid(J, I)) (k⊙a)_Jᵀ — so a
//     warp takes one pair and 8 of its 16 columns and runs both products by mma.sync m16n8k8 (TF32 operands rounded to
//     nearest, fp32 accumulation), sharing the B fragment mid ⊙ (k⊙a), formed as version 09 forms it. 12 warp tasks of
//     16 depth steps, where version 09 walked 128 channels in 384 threads with 7 shared loads per 8 multiply-adds.
//     KP ≡ 4 mod 32: every fragment read hits 32 banks. New bits (TF32 rounding of the three operands).
template <int K, int KP, int NT>
__device__ __forceinline__ void chunk_off_diagonal_blocks_mma(float* s_T, float* s_Aqk, const float* s_q,
                                                              const float* s_k, const float* s_e, const float* s_mid,
                                                              int tid) {
  static_assert(KP % 32 == 4, "conflict-free fragment reads");
  constexpr int C = kChunk, kTasks = kNumSub * (kNumSub - 1) / 2 * (kSub / 8);
  const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  for (int task = warp; task < kTasks; task += NT / 32) {
    int pair = task / (kSub / 8), I = 1;
    while (pair >= I) pair -= I, ++I;  // pairs in the order (1,0), (2,0), (2,1), (3,0), (3,1), (3,2)
    const int J = pair, n0 = (task % (kSub / 8)) * 8;
    const float* mid = s_mid + (J * kNumSub + I) * K;
    const float* qr = s_q + I * kSub * KP;
    const float* er = s_e + I * kSub * KP;
    const float* kr = s_k + (J * kSub + n0 + g) * KP;
    float ca[4] = {}, ct[4] = {};
#pragma unroll 4
    for (int k0 = 0; k0 < K; k0 += 8) {
      const int a = g * KP + k0 + t, a8 = a + 8 * KP;
      const uint32_t aq[4] = {to_tf32(qr[a]), to_tf32(qr[a8]), to_tf32(qr[a + 4]), to_tf32(qr[a8 + 4])};
      const uint32_t ae[4] = {to_tf32(er[a]), to_tf32(er[a8]), to_tf32(er[a + 4]), to_tf32(er[a8 + 4])};
      const uint32_t b0 = to_tf32(mid[k0 + t] * kr[k0 + t]), b1 = to_tf32(mid[k0 + t + 4] * kr[k0 + t + 4]);
      mma_tf32(ca, aq, b0, b1);
      mma_tf32(ct, ae, b0, b1);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int i = (I * kSub + g + 8 * h) * C + J * kSub + n0 + 2 * t;
      s_Aqk[i] = ca[2 * h], s_Aqk[i + 1] = ca[2 * h + 1];
      s_T[i] = ct[2 * h], s_T[i + 1] = ct[2 * h + 1];
    }
  }
}

// 2a, forward version 30 (bf16 storage): the four diagonal blocks factorised and on tensor cores. For r ≥ s in
//     sub-chunk M, (A_qk)_rs = Σ_d (q̃⊙c)_rd · (k ⊙ exp(−P))_sd and T_rs the same with e⊙c, where c_r = exp(P_r) and
//     P the prefix of g in the sub-chunk (chunk_decay_factors, kKinv): one m16n8k8 product per block and 8 columns,
//     both matrices sharing the B fragment, as chunk_off_diagonal_blocks_mma. A row r takes this path when no gate of
//     its sub-chunk's rows up to r is below −kGateBound (rows from s_first[M] on do not); then −P_s ≤ 16·kGateBound
//     for every s ≤ r, so exp(−P_s) ≤ e^32: finite in float32 and TF32, and each exp's argument error
//     (|P| · 2⁻²⁴ relative, ≤ 2e-6) far below the TF32 rounding (5e-4) that the off-diagonal blocks already have.
//     Rows from s_first[M] on keep what the exact path (chunk_diagonal_blocks_grouped) wrote; entries above the
//     diagonal (their exp(−P_s) may be inf) and T's diagonal are selected to 0, never multiplied. Which path a row
//     takes and what it computes depend only on rows up to r: prefix causality holds bit for bit.
constexpr float kGateBound = 2.f;
template <int K, int KP, int NT>
__device__ __forceinline__ void chunk_diagonal_blocks_mma(float* s_T, float* s_Aqk, const float* s_q, const float* s_e,
                                                          const float* s_kinv, const int* s_first, int tid) {
  static_assert(KP % 32 == 4, "conflict-free fragment reads");
  constexpr int C = kChunk, kTasks = kNumSub * (kSub / 8), kWarps = NT / 32;
  constexpr int kOff = kNumSub * (kNumSub - 1) / 2 * (kSub / 8);  // chunk_off_diagonal_blocks_mma's tasks, warps 0 ..
  const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  // Task 0 to the first warp that the off-diagonal blocks left idle, then around.
  for (int task = (warp + kWarps - kOff % kWarps) % kWarps; task < kTasks; task += kWarps) {
    const int M = task / (kSub / 8), n0 = (task % (kSub / 8)) * 8, first = s_first[M];
    if (n0 >= first) continue;  // every row that would use these columns is on the exact path (warp-uniform)
    const float* qr = s_q + M * kSub * KP;
    const float* er = s_e + M * kSub * KP;
    const float* kr = s_kinv + (M * kSub + n0 + g) * KP;
    float ca[4] = {}, ct[4] = {};
#pragma unroll 4
    for (int k0 = 0; k0 < K; k0 += 8) {
      const int a = g * KP + k0 + t, a8 = a + 8 * KP;
      const uint32_t aq[4] = {to_tf32(qr[a]), to_tf32(qr[a8]), to_tf32(qr[a + 4]), to_tf32(qr[a8 + 4])};
      const uint32_t ae[4] = {to_tf32(er[a]), to_tf32(er[a8]), to_tf32(er[a + 4]), to_tf32(er[a8 + 4])};
      const uint32_t b0 = to_tf32(kr[k0 + t]), b1 = to_tf32(kr[k0 + t + 4]);
      mma_tf32(ca, aq, b0, b1);
      mma_tf32(ct, ae, b0, b1);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = g + 8 * h, s = n0 + 2 * t, i = (M * kSub + r) * C + M * kSub + s;
      if (r >= first) continue;  // the exact path's row
      s_Aqk[i] = s <= r ? ca[2 * h] : 0.f, s_Aqk[i + 1] = s + 1 <= r ? ca[2 * h + 1] : 0.f;
      s_T[i] = s < r ? ct[2 * h] : 0.f, s_T[i + 1] = s + 1 < r ? ct[2 * h + 1] : 0.f;
    }
  }
}

// [SECTION] version 10 of the prepare kernel ------------------------------------------------------------------------

// Lane l's x[v] are its parts of 32 sums; returns sum number l, the sum of x[l] over the 32 lanes. Each round halves
// the values a lane holds: it keeps the half whose index bit matches its lane bit, sends the other half to the lane
// across (l ^ off) and adds what comes back — 16 + 8 + 4 + 2 + 1 shuffles in all. The lanes are paired as in the
// usual butterfly (l with l ^ 16, then those pairs with l ^ 8, ...), and a + b = b + a exactly, so every sum has the
// bits that the butterfly `x += __shfl_xor_sync(x, off)` for off = 16 .. 1 gives.
__device__ __forceinline__ float warp_reduce_scatter(float (&x)[32], int lane) {
#pragma unroll
  for (int round = 0; round < 5; ++round) {
    const int off = 16 >> round;
    const bool upper = lane & off;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      if (i >= off) break;
      const float send = upper ? x[i] : x[i + off], keep = upper ? x[i + off] : x[i];
      x[i] = keep + __shfl_xor_sync(0xffffffffu, send, off);
    }
  }
  return x[0];
}

// One round of 2a's sums (versions 14 on): x[(i·kCols + c)·2 + m] is this lane's part of A_qk (m = 0) or T (m = 1)
// at row r0 + i and column first + c·kGroup; reduced 32 at a time (warp_reduce_scatter), lane 2v + m stores sum v of
// matrix m where that pair is in the sub-chunk's lower triangle (T's diagonal 0).
template <int kCols, int kGroup>
__device__ __forceinline__ void store_round_sums(float (&x)[32], int lane, int r0, int first, int end, float* s_T,
                                                 float* s_Aqk) {
  constexpr int C = kChunk;
  const float sum = warp_reduce_scatter(x, lane);  // the sum of value `lane` over the warp
  const int v = lane / 2, i = v / kCols, c = v % kCols, r = r0 + i, s = first + c * kGroup;
  if (r < end && r >= s) {
    if (lane % 2 == 0) s_Aqk[r * C + s] = sum;
    else s_T[r * C + s] = r > s ? sum : 0.f;
  }
}

// 2a, version 10: the same diagonal-block entries, bit for bit, with the columns of a sub-chunk shared out among a group
//     of warps. Warp w takes sub-chunk M = w % kNumSub and the columns s = M·kSub + w / kNumSub + j·(warps per
//     sub-chunk); walking r once through the sub-chunk it computes exp(g_r) once per channel for all its columns
//     (chunk_diagonal_blocks does it once per column: about 4× the exps at 16 warps), and the columns' warp reductions
//     are independent, so their shuffles overlap. Each Γ_rs ⊙ k_s is updated by the same factors in the same order.
//     Version 14 (kScatter): the warp's sums are reduced 32 at a time (kRows rows × kCols columns × T and A_qk) by
//     warp_reduce_scatter (above), 31 shuffles for 32 sums instead of 5 per sum: the stall profile of version 10 put a
//     quarter of the kernel here, bound by its shuffles. Same pairs of lanes added in the same tree: the same bits.
//     s_x (forward version 23; may be null): exp(g) already computed, a [C][K] tile with rows K floats apart — the
//     kGroup warps of a sub-chunk each computed every exp(g_r) of it (4 × the exps, about 8 instructions each); the
//     load phase now computes each once. The same values: the same bits.
//     kUnrolled (forward version 26; needs kScatter, s_x, and kRows = kGroup): which (row, column) pairs are computed
//     was decided per pair at run time, `r < end && r >= s`, a branch the compiler cannot know to be uniform across
//     the warp (it depends on tid / 32), so each of the 16 pairs of a round was wrapped in divergence handling (BSSY,
//     BSYNC, BRA, ISETP: a tenth of prepare's stall samples fell on those in this phase). With the rounds unrolled,
//     round gi holds rows first + kGroup·gi + i and column c is s = first + kGroup·c, so r ≥ s exactly when gi ≥ c and
//     r > s when also (gi, i) ≠ (c, 0): known at compile time. Only r < end is left, in the last round; its rows past
//     the sub-chunk are computed from what lies beyond (inside the block's shared memory; never a later row's input)
//     and selected away. The same sums of the same products: the same bits.
template <int K, int KP, int NT, bool kScatter = false, bool kUnrolled = false>
__device__ __forceinline__ void chunk_diagonal_blocks_grouped(float* s_T, float* s_Aqk, const float* s_q,
                                                              const float* s_k, const float* s_e, const float* s_g,
                                                              int tid, const float* s_x = nullptr) {
  constexpr int C = kChunk, PER_LANE = K / 32, kWarps = NT / 32, kGroup = kWarps / kNumSub, kCols = kSub / kGroup;
  static_assert(kWarps % kNumSub == 0 && kSub % kGroup == 0, "whole column groups");
  const int warp = tid / 32, lane = tid % 32, M = warp % kNumSub, first = M * kSub + warp / kNumSub;
  float dk[kCols][PER_LANE];
#pragma unroll
  for (int c = 0; c < kCols; ++c)
#pragma unroll
    for (int j = 0; j < PER_LANE; ++j) dk[c][j] = s_k[(first + c * kGroup) * KP + lane + 32 * j];
  if constexpr (kUnrolled) {
    constexpr int kRows = 32 / (2 * kCols);
    static_assert(kScatter && kRows == kGroup && kSub / kRows == kCols, "rounds of kGroup rows, one per column");
    const int end = (M + 1) * kSub;
#pragma unroll
    for (int gi = 0; gi < kCols; ++gi) {
      const int r0 = first + gi * kRows;
      float x[32];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int r = r0 + i;  // (r < end + kRows − 1: inside shared memory whatever the warp)
        float ex[PER_LANE];
#pragma unroll
        for (int j = 0; j < PER_LANE; ++j) ex[j] = s_x[r * K + lane + 32 * j];
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          float aqk = 0, t = 0;
          if (gi >= c)  // r ≥ s (compile time)
#pragma unroll
            for (int j = 0; j < PER_LANE; ++j) {
              const int d = lane + 32 * j;
              if (gi > c || i > 0) dk[c][j] *= ex[j];  // r > s (compile time)
              aqk += s_q[r * KP + d] * dk[c][j];
              t += s_e[r * KP + d] * dk[c][j];
            }
          if (gi == kCols - 1) {  // the last round: rows past the sub-chunk give 0 (a select, not a branch)
            aqk = r < end ? aqk : 0.f;
            t = r < end ? t : 0.f;
          }
          x[(i * kCols + c) * 2] = aqk, x[(i * kCols + c) * 2 + 1] = t;
        }
      }
      store_round_sums<kCols, kGroup>(x, lane, r0, first, end, s_T, s_Aqk);
    }
  } else if constexpr (kScatter) {
    constexpr int kRows = 32 / (2 * kCols);  // rows per reduction: 32 sums, value v = (row·kCols + column)·2 + matrix
    static_assert(32 % (2 * kCols) == 0, "32 sums per reduction");
    const int end = (M + 1) * kSub;
    for (int r0 = first; r0 < end; r0 += kRows) {
      float x[32];
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const int r = r0 + i;
        float ex[PER_LANE];
        if (r < end)
#pragma unroll
          for (int j = 0; j < PER_LANE; ++j) ex[j] = s_x ? s_x[r * K + lane + 32 * j] : expf(s_g[r * KP + lane + 32 * j]);
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          const int s = first + c * kGroup;
          float aqk = 0, t = 0;
          if (r < end && r >= s)  // (uniform across the warp)
#pragma unroll
            for (int j = 0; j < PER_LANE; ++j) {
              const int d = lane + 32 * j;
              if (r > s) dk[c][j] *= ex[j];
              aqk += s_q[r * KP + d] * dk[c][j];
              t += s_e[r * KP + d] * dk[c][j];
            }
          x[(i * kCols + c) * 2] = aqk, x[(i * kCols + c) * 2 + 1] = t;
        }
      }
      store_round_sums<kCols, kGroup>(x, lane, r0, first, end, s_T, s_Aqk);
    }
  } else {
    for (int r = first; r < (M + 1) * kSub; ++r) {
      float ex[PER_LANE];
#pragma unroll
      for (int j = 0; j < PER_LANE; ++j) ex[j] = expf(s_g[r * KP + lane + 32 * j]);
      float aqk[kCols], t[kCols];
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        const int s = first + c * kGroup;
        aqk[c] = 0, t[c] = 0;
        if (r < s) continue;  // (uniform across the warp)
#pragma unroll
        for (int j = 0; j < PER_LANE; ++j) {
          const int d = lane + 32 * j;
          if (r > s) dk[c][j] *= ex[j];
          aqk[c] += s_q[r * KP + d] * dk[c][j];
          t[c] += s_e[r * KP + d] * dk[c][j];
        }
      }
#pragma unroll
      for (int off = 16; off; off /= 2)
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          aqk[c] += __shfl_xor_sync(0xffffffffu, aqk[c], off);
          t[c] += __shfl_xor_sync(0xffffffffu, t[c], off);
        }
      if (lane == 0)
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          const int s = first + c * kGroup;
          if (r < s) continue;
          s_Aqk[r * C + s] = aqk[c];
          s_T[r * C + s] = r > s ? t[c] : 0.f;
        }
    }
  }
}

// Steps 4-5, version 10: acc = L B for a lower-triangular C × C matrix L (row-major, rows l_rs floats apart and
// 16-byte aligned) and an N-column B (rows b_rs floats apart). Warp w owns rows w·TM .. w·TM + TM − 1; lane l owns
// the columns l, l + 32, l + 64, ...: a warp's load of B is 32 consecutive floats (one shared-memory wavefront;
// tile_product's 4 consecutive columns per lane are a 4-way bank conflict) and its loads of L are broadcasts of four
// consecutive entries (float4). Terms above the diagonal are skipped, not multiplied by zero (as in tile_product);
// the sum runs over j in ascending order.
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

// 3. A = (I + T)⁻¹ (Eq. 21) by blocks (forward version 07): (a) each 16 × 16 diagonal block is inverted by one warp,
//    lane j forward-substituting column j in registers; (b) the blocks below the diagonal follow by block diagonals:
//    A_IJ = −A_II Σ_{J≤M<I} T_IM A_MJ (block rows of (I + T) A = I), with A_MJ known from the rounds before.
//    s_T: T, strictly lower, rows kChunk apart; s_A: the result, zeros above the diagonal, rows AS floats apart
//    (forward version 25: kChunk + 4, so that mma fragment reads of A hit 32 banks); tmp: (kNumSub − 1)·kSub²
//    floats of scratch. Begins and ends with every thread past a barrier.
template <int NT, int AS = kChunk>
__device__ __forceinline__ void block_inverse(float* s_A, const float* s_T, float* tmp, int tid) {
  constexpr int C = kChunk;
  const int warp = tid / 32, lane = tid % 32;
  for (int r = tid; r < C * AS; r += NT) s_A[r] = 0.f;
  __syncthreads();
  if (warp < kNumSub && lane < kSub) {
    const int o = warp * kSub;
    float x[kSub];
#pragma unroll
    for (int r = 0; r < kSub; ++r) {
      float acc = r == lane ? 1.f : 0.f;
#pragma unroll
      for (int c = 0; c < r; ++c) acc -= s_T[(o + r) * C + o + c] * x[c];
      x[r] = acc;
      s_A[(o + r) * AS + o + lane] = acc;
    }
  }
  __syncthreads();
  for (int dist = 1; dist < kNumSub; ++dist) {
    const int blocks = kNumSub - dist;
    for (int i = tid; i < blocks * kSub * kSub; i += NT) {
      const int bi = i / (kSub * kSub), I = dist + bi, J = I - dist, r = (i / kSub) % kSub, c = i % kSub;
      float acc = 0;
      for (int M = J; M < I; ++M)
        for (int m = 0; m < kSub; ++m) acc += s_T[(I * kSub + r) * C + M * kSub + m] * s_A[(M * kSub + m) * AS + J * kSub + c];
      tmp[i] = acc;
    }
    __syncthreads();
    for (int i = tid; i < blocks * kSub * kSub; i += NT) {
      const int bi = i / (kSub * kSub), I = dist + bi, J = I - dist, r = (i / kSub) % kSub, c = i % kSub;
      float acc = 0;
      for (int m = 0; m < kSub; ++m) acc -= s_A[(I * kSub + r) * AS + I * kSub + m] * tmp[bi * kSub * kSub + m * kSub + c];
      s_A[(I * kSub + r) * AS + J * kSub + c] = acc;
    }
    __syncthreads();
  }
}

}  // namespace gdn2::cuda::detail
