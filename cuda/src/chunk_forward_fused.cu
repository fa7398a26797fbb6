// gdn2::cuda chunk_forward — one fused kernel, fp32 CUDA cores, exact decays. Version 04 (ladder: docs/cuda.md).
//
// Idea: one block per (sequence, value head, VS value columns) walks the chunks of its sequence in order, keeping
// the fp32 state slice S[K][VS] in shared memory; every chunk quantity (T, A_qk, A, Y, R) lives in shared memory
// only, so device memory sees each input read once (per value slice) and each output written once.
// Per chunk (C = 64, paper Eq. 18-25), the twin of reference/core/chunk.hpp:
//   1. load q (scaled), k, g, e = b⊙k, Z = w⊙v;
//   2. T and A_qk with exact decays: inside a 16-token sub-chunk Γ_rs = Π_{s<i≤r} exp(g_i), one warp per column;
//      across sub-chunks the product of three factors ≤ 1 (suffix of s in its sub-chunk, whole sub-chunks between,
//      prefix of r in its sub-chunk) — never γ⁻¹, never a difference of cumulative sums (docs/derivation.md, step 4);
//   3. A = (I + T)⁻¹ by forward substitution, in place (the loop of solve_unit_lower);
//   4. Y = A Ē;  5. R = A Z − Y S;  6. O = Q_γ S + A_qk R;  7. S ← Diag(γ_C) S + K_tailᵀ R — register-tiled
//      products out of shared memory, the triangular ones causal (future rows are skipped, not multiplied by 0).
// The K-side work (steps 2-4) is repeated by each value slice: the price of filling the GPU with blocks.
// Measured on an H100 (bf16 storage, H = 16, K = V = 128): B = 8, T = 4096 in 16.2 ms; see docs/cuda.md.
#include "chunk_tiles.cuh"

namespace gdn2::cuda::detail {

template <int K, int VS>
constexpr size_t chunk_smem_floats() {
  return 4 * kChunk * (K + 1) + 2 * kChunk * kChunk + kChunk * VS + K * VS + 3 * kNumSub * K + kNumSub * kNumSub * K + K;
}

template <int K, int VS, typename T>
__global__ void __launch_bounds__(kThreads, 1) chunk_forward_fused(T* o, float* ht, const T* q, const T* k, const T* v,
                                                             const float* g, const T* b, const T* w, const float* h0,
                                                             const int64_t* cu_seqlens, int64_t T_len, int H, int HV,
                                                             int V, float scale) {
  constexpr int C = kChunk, KP = K + 1;  // tiles of K + 1 floats a row: a warp reading down a column hits 32 banks
  static_assert(K + VS <= kThreads, "step 4 gives one thread to each column of Y and of U");
  extern __shared__ float smem[];
  float* s_q = smem;                     // [C][K]  q̃ → q̃⊙c → Q_γ   (rows KP floats apart)
  float* s_k = s_q + C * KP;             // [C][K]  k → k⊙a → K_tail
  float* s_e = s_k + C * KP;             // [C][K]  e = b⊙k → e⊙c → Ē → Y
  float* s_g = s_e + C * KP;             // [C][K]  g
  float* s_T = s_g + C * KP;             // [C][C]  T → A
  float* s_Aqk = s_T + C * C;            // [C][C]  A_qk
  float* s_U = s_Aqk + C * C;            // [C][VS] Z → U → R
  float* s_S = s_U + C * VS;             // [K][VS] state slice
  float* s_bs = s_S + K * VS;            // [kNumSub][K] sub-chunk sums of g
  float* s_pre = s_bs + kNumSub * K;     // [kNumSub][K] exp(Σ of sub-chunks before I)
  float* s_suf = s_pre + kNumSub * K;    // [kNumSub][K] exp(Σ of sub-chunks after J)
  float* s_mid = s_suf + kNumSub * K;    // [kNumSub][kNumSub][K] exp(Σ of sub-chunks strictly between J and I)
  float* s_gammaC = s_mid + kNumSub * kNumSub * K;  // [K] γ_C

  const int tid = threadIdx.x;
  const int col0 = blockIdx.x * VS, hv = blockIdx.y, n = blockIdx.z, h = hv / (HV / H);
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t state = (int64_t(n) * HV + hv) * K * V;
  for (int i = tid; i < K * VS; i += kThreads) s_S[i] = h0 ? h0[state + int64_t(i / VS) * V + col0 + i % VS] : 0.f;

  for (int64_t c0 = 0; c0 < span.length; c0 += C) {
    const int L = int(span.length - c0 < C ? span.length - c0 : C);
    // 1. Load; rows ≥ L are zero (and g = 0), so they add nothing anywhere.
    for (int i = tid; i < C * K; i += kThreads) {
      const int r = i / K, d = i % K;
      float qv = 0, kv = 0, bv = 0, gv = 0;
      if (r < L) {
        const int64_t idx = ((span.row0 + c0 + r) * H + h) * K + d;
        qv = scale * to_float(q[idx]), kv = to_float(k[idx]), bv = to_float(b[idx]), gv = g[idx];
      }
      const int j = r * KP + d;
      s_q[j] = qv, s_k[j] = kv, s_e[j] = bv * kv, s_g[j] = gv;
    }
    for (int i = tid; i < C * VS; i += kThreads) {
      const int r = i / VS, c = i % VS;
      float z = 0;
      if (r < L) {
        const int64_t idx = ((span.row0 + c0 + r) * HV + hv) * V + col0 + c;
        z = to_float(w[idx]) * to_float(v[idx]);  // Z = W ⊙ V (Eq. 20)
      }
      s_U[i] = z;
    }
    __syncthreads();
    // 2a-2c (chunk_tiles.cuh): T and A_qk with exact decays, and the per-channel factors.
    chunk_diagonal_blocks<K, KP>(s_T, s_Aqk, s_q, s_k, s_e, s_g, tid);
    __syncthreads();
    chunk_decay_factors<K, KP>(s_q, s_k, s_e, s_g, s_bs, s_pre, s_suf, s_mid, tid);
    for (int d = tid; d < K; d += kThreads) {
      float total = 0;
      for (int M = 0; M < kNumSub; ++M) total += s_bs[M * K + d];
      s_gammaC[d] = expf(total);
    }
    __syncthreads();
    chunk_off_diagonal_blocks<K, KP>(s_T, s_Aqk, s_q, s_k, s_e, s_mid, tid);
    __syncthreads();
    // Q_γ = γ ⊙ q̃, Ē = γ ⊙ e (γ_r = pre(I)·c_r, Eq. 18-20); K_tail = (γ_C/γ_r) ⊙ k = suf(J)·a_r·k (Eq. 41).
    for (int i = tid; i < C * K; i += kThreads) {
      const int r = i / K, d = i % K, M = r / kSub, j = r * KP + d;
      s_q[j] *= s_pre[M * K + d];
      s_e[j] *= s_pre[M * K + d];
      s_k[j] *= s_suf[M * K + d];
    }
    // 3. A = (I + T)⁻¹, forward substitution in place: A_r = e_rᵀ − Σ_{s<r} T_rs A_s (Eq. 21).
    for (int r = 1; r < C; ++r) {
      float a = 0;
      if (tid < r) {
        for (int s = tid; s < r; ++s) a -= s_T[r * C + s] * (s == tid ? 1.f : s_T[s * C + tid]);
      }
      __syncthreads();
      if (tid < r) s_T[r * C + tid] = a;
    }
    __syncthreads();
    // Steps 4-7: register-tiled matrix products out of shared memory (tile_product).
    for (int r = tid; r < C; r += kThreads) s_T[r * C + r] = 1.f;  // A's unit diagonal (the products are causal)
    __syncthreads();
    // 4. Y = A Ē (Eq. 22) into the g tile, which is no longer needed.
    {
      constexpr int TM = 4, TN = K / 16;
      float acc[TM][TN] = {};
      tile_product<C, K, TM, TN, true>(acc, s_T, C, 1, s_e, KP, C, tid);
      store_tile<K, TM, TN>(acc, s_g, KP, tid);
    }
    __syncthreads();
    // 5. R = A Z − Y S (Eq. 22, 35), written over Z once every thread has read Z.
    constexpr int TM = 4, TN = VS / 16;
    {
      float acc[TM][TN] = {};
      tile_product<C, VS, TM, TN, true>(acc, s_T, C, 1, s_U, VS, C, tid);
      tile_product<C, VS, TM, TN>(acc, s_g, KP, 1, s_S, VS, K, tid, -1.f);
      __syncthreads();
      store_tile<VS, TM, TN>(acc, s_U, VS, tid);
    }
    __syncthreads();
    // 6. O = Q_γ S + A_qk R (Eq. 24).
    {
      float acc[TM][TN] = {};
      tile_product<C, VS, TM, TN>(acc, s_q, KP, 1, s_S, VS, K, tid);
      tile_product<C, VS, TM, TN, true>(acc, s_Aqk, C, 1, s_U, VS, C, tid);
      const int r0 = (tid / (VS / TN)) * TM, c1 = (tid % (VS / TN)) * TN;
#pragma unroll
      for (int i = 0; i < TM; ++i)
        if (r0 + i < L)
#pragma unroll
          for (int j = 0; j < TN; ++j)
            o[((span.row0 + c0 + r0 + i) * HV + hv) * V + col0 + c1 + j] = from_float<T>(acc[i][j]);
    }
    // 7. S ← Diag(γ_C) S + K_tailᵀ R (Eq. 23): K_tailᵀ is the k tile read column-major.
    {
      constexpr int SM = K / 16;
      float acc[SM][TN] = {};
      tile_product<K, VS, SM, TN>(acc, s_k, 1, KP, s_U, VS, C, tid);
      const int d0 = (tid / (VS / TN)) * SM, c1 = (tid % (VS / TN)) * TN;
      __syncthreads();  // every thread has read S in step 6
#pragma unroll
      for (int i = 0; i < SM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          float& st = s_S[(d0 + i) * VS + c1 + j];
          st = s_gammaC[d0 + i] * st + acc[i][j];
        }
    }
    __syncthreads();
  }
  if (ht)
    for (int i = tid; i < K * VS; i += kThreads) ht[state + int64_t(i / VS) * V + col0 + i % VS] = s_S[i];
}

template <int K, int VS, typename T>
void launch_chunk(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                     const void* w, const float* h0, const int64_t* cu, const Problem& p, cudaStream_t stream) {
  constexpr size_t bytes = chunk_smem_floats<K, VS>() * sizeof(float);
  auto kernel = chunk_forward_fused<K, VS, T>;
  GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  const dim3 grid(unsigned(p.V / VS), unsigned(p.HV), unsigned(p.N));
  kernel<<<grid, kThreads, bytes, stream>>>(static_cast<T*>(o), ht, static_cast<const T*>(q), static_cast<const T*>(k),
                                            static_cast<const T*>(v), g, static_cast<const T*>(b),
                                            static_cast<const T*>(w), h0, cu, p.T, int(p.H), int(p.HV), int(p.V),
                                            default_scale(p));
  GDN2_CUDA_CHECK_LAUNCH();
}

template <int K, typename T>
void dispatch_chunk_vs(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                       const void* w, const float* h0, const int64_t* cu, const Problem& p, cudaStream_t s) {
  // Narrow slices when the batch is small (more blocks for the 132 SMs), wide ones otherwise (less repeated K-side work).
  if (p.V % 64 == 0 && (p.V / 64) * p.HV * p.N >= 132) return launch_chunk<K, 64, T>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
  return launch_chunk<K, 32, T>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
}

void chunk_forward_fused_dispatch(void* o, float* ht, const void* q, const void* k, const void* v, const float* g,
                            const void* b, const void* w, const float* h0, const int64_t* cu, const Problem& p,
                            cudaStream_t s) {
  dispatch_k_and_dtype(p, [&](auto K, auto T) {
    dispatch_chunk_vs<decltype(K)::value, decltype(T)>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
  });
}

}  // namespace gdn2::cuda::detail
