// gdn2::cuda — the intra-chunk scores and decay factors (paper Eq. 18-21, 25; docs/derivation.md step 4): the twin of
// the reference's intra_chunk_scores, in three steps over a chunk's [C][K] shared tiles (rows KP floats apart):
// intra_chunk_scores_diagonal (2a: the diagonal 16 × 16 blocks, pairwise), intra_chunk_decay_factors (2b: exps of
// direct sums of g ≤ 0 per (sub-chunk, channel)) and intra_chunk_scores_off_diagonal_* (2c: the six blocks below,
// one product each). Also the loads of those tiles (ChunkInputs8), shared with the backward's stage 4.
#pragma once

#include "tiles.cuh"

namespace gdn2::cuda::detail {

// A chunk's q̃ = scale·q, k (key head h), e = b ⊙ k, g (gate head hg) into [C][K] tiles, rows ≥ L zero, rows KP floats
// apart (KP a multiple of 4): thread tid takes 8 consecutive channels of kPer rows, loads them with one 16-byte load
// per tensor (two for float32; kWide = false: 8 one-element loads, for inputs not 16-byte aligned, the same values) and
// stores them 4 at a time. load() issues every load before store() writes any, so a kernel can issue more in between.
template <int K, int NT, bool kWide = true>
struct ChunkInputs8 {
  static constexpr int kPer = kChunk * K / 8 / NT;
  static_assert((kChunk * K / 8) % NT == 0, "whole rounds");
  float q[kPer][8], k[kPer][8], b[kPer][8], g[kPer][8];
  template <typename T>
  __device__ __forceinline__ void load(const T* q_in, const T* k_in, const T* b_in, const float* g_in, int64_t row0,
                                       int H, int h, int HG, int hg, int L, int tid) {
#pragma unroll
    for (int u = 0; u < kPer; ++u) {
      const int i = u * NT + tid, r = i / (K / 8), d = (i % (K / 8)) * 8;
      if (r < L) {
        const int64_t at = ((row0 + r) * H + h) * K + d, at_g = ((row0 + r) * HG + hg) * K + d;
        load8<kWide>(q[u], q_in + at), load8<kWide>(k[u], k_in + at), load8<kWide>(b[u], b_in + at_g);
        load8<kWide>(g[u], g_in + at_g);
      } else {
#pragma unroll
        for (int j = 0; j < 8; ++j) q[u][j] = k[u][j] = b[u][j] = g[u][j] = 0.f;
      }
    }
  }
  // s_x (may be null): also exp(g) as a [C][K] tile, rows K floats apart.
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

// Step 2b. The decay factors, one thread per (channel, sub-chunk): q̃⊙c and e⊙c (c_r = exp of r's prefix in its sub-chunk),
//     k⊙a (a_s = exp of s's suffix in its sub-chunk, s excluded), the sub-chunk sums, and exp of the sums of whole
//     sub-chunks before (pre), after (suf) and strictly between (mid). All exps of direct sums of g ≤ 0.
template <int K, int KP, int NT = kThreads>
__device__ __forceinline__ void intra_chunk_decay_factors(float* s_q, float* s_k, float* s_e, const float* s_g, float* s_bs,
                                                    float* s_pre, float* s_suf, float* s_mid, int tid) {
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

// Step 2c (float32 storage). The off-diagonal blocks of T and A_qk, Γ_rs = c_r · mid(J, I) · a_s (after 2b): the six
//     block pairs J < I, each thread a 2 × 2 tile — rows r, r + 8 of I against columns s, s + 8 of J — so one step
//     over d loads 7 floats for 8 multiply-adds.
template <int K, int KP, int NT = kThreads>
__device__ __forceinline__ void intra_chunk_scores_off_diagonal_fp32(float* s_T, float* s_Aqk, const float* s_q,
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

// Step 2c (bf16 storage): the same block pairs on tensor cores, A_qk_IJ = (q̃⊙c)_I Diag(mid(J, I)) (k⊙a)_Jᵀ and
//     T_IJ = (e⊙c)_I Diag(mid(J, I)) (k⊙a)_Jᵀ; a warp takes a pair and 8 of its 16 columns, both products sharing the
//     B fragment mid ⊙ (k⊙a) (TF32 operands, fp32 accumulation; KP ≡ 4 mod 32: fragment reads hit 32 banks).
template <int K, int KP, int NT>
__device__ __forceinline__ void intra_chunk_scores_off_diagonal_mma(float* s_T, float* s_Aqk, const float* s_q,
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
// Lane l's x[v] are its parts of 32 sums; returns sum number l over the 32 lanes. Each round a lane keeps the half of
// its values whose index bit matches its lane bit and adds the other half from lane l ^ off: 31 shuffles in all, the
// lanes paired as in the butterfly `x += __shfl_xor_sync(x, off)`, off = 16 .. 1, so the sums have its bits.
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

// One round of 2a's sums: x[(i·kCols + c)·2 + m] is this lane's part of A_qk (m = 0) or T (m = 1)
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

// Step 2a. The diagonal sub-chunk blocks of T and A_qk (Eq. 21, 25), pairwise as in the reference: walking r upward
//     from s, Γ_rs ⊙ k_s is kept per channel and updated by one factor, Γ_{r,s} = Γ_{r−1,s} · exp(g_r) (s_x holds
//     exp(g), rows K apart) — factors ≤ 1, exactly 0 after a g = −inf; each entry is a warp-wide dot product. Warp w
//     takes sub-chunk M = w % kNumSub and the columns s = M·kSub + w / kNumSub + c·kGroup, reduced 32 sums at a time.
//     Round gi holds rows first + kGroup·gi + i, so r ≥ s (gi ≥ c) and r > s are known at compile time; rows past the
//     sub-chunk (last round) are computed from what lies beyond in shared memory and selected away.
template <int K, int KP, int NT>
__device__ __forceinline__ void intra_chunk_scores_diagonal(float* s_T, float* s_Aqk, const float* s_q,
                                                            const float* s_k, const float* s_e, const float* s_x,
                                                            int tid) {
  constexpr int PER_LANE = K / 32, kWarps = NT / 32, kGroup = kWarps / kNumSub, kCols = kSub / kGroup;
  static_assert(kWarps % kNumSub == 0 && kSub % kGroup == 0, "whole column groups");
  const int warp = tid / 32, lane = tid % 32, M = warp % kNumSub, first = M * kSub + warp / kNumSub;
  float dk[kCols][PER_LANE];
#pragma unroll
  for (int c = 0; c < kCols; ++c)
#pragma unroll
    for (int j = 0; j < PER_LANE; ++j) dk[c][j] = s_k[(first + c * kGroup) * KP + lane + 32 * j];
  constexpr int kRows = 32 / (2 * kCols);
  static_assert(kRows == kGroup && kSub / kRows == kCols, "rounds of kGroup rows, one per column");
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
}

}  // namespace gdn2::cuda::detail
