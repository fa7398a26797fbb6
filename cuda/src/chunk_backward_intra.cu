// gdn2::cuda chunk_backward stage 4 — the VJP through the intra-chunk scores T and A_qk (paper Eq. 67-70 entrywise),
// the twin of the reference's intra_chunk_scores_backward, by the forward's sub-chunk factorisation (chunk_scores.cuh).
// With W_rs = Γ_rs ⊙ (dA_qk,rs q̃_r + dT_rs e_r): dk_s += Σ_r W_rs; dq_r += dA_qk,rs Γ_rs k_s; de_r += dT_rs Γ_rs k_s;
// dg_i += Σ_{s<i≤r} W_rs k_s. For r in sub-chunk I and s in an earlier J, Γ_rs = c_r · mid(J, I) · a_s (all exps of
// direct sums ≤ 0; every pair term summed directly, so g = −inf gives exact zeros). Tasks of one (sub-chunk, channel):
//   1. diagonal blocks (I = J), pairwise;  2. the factors c, a, the sub-chunk sums and mid(J, I);
//   3. rows of the off-diagonal blocks: dq, de, and dg by a suffix sum over I of ρ_r = q̃_r dq_r + e_r de_r;
//   4. columns: dk, and dg by a strict prefix sum over J of κ_s = k_s dk_s, plus the block totals of step 3 for the
//      sub-chunks strictly between J and I.
// Launch: one block of 512 threads (16 warps) per (chunk, value head, sequence): grid (⌈T/64⌉, HV, N).
// On chip: q̃, k, e, c, a as [64][K + 4] float32 tiles, dA_qk and dT [64][64], the sub-chunk sums, mid and the block
// totals in shared memory (about 203 KB at K = 128, one block per SM); a task's 16 rows of sums in registers.
#include "backward.cuh"
#include "chunk_scores.cuh"

namespace gdn2::cuda::detail {

namespace {

constexpr int C = kChunk, kIntraThreads = 512;

template <int K>
constexpr size_t intra_smem_floats() {
  return 5 * C * (K + 4) + 2 * C * C + kNumSub * K + 2 * kNumSub * kNumSub * K;
}

template <int K, typename T, bool kWide>
__global__ void __launch_bounds__(kIntraThreads, 1) chunk_backward_intra_kernel(
    BackwardWorkspace bw, const T* __restrict__ q, const T* __restrict__ k, const float* __restrict__ g,
    const T* __restrict__ b, const int64_t* cu_seqlens, int64_t T_len, int H, int HV, int HG, float scale) {
  constexpr int NT = kIntraThreads, KP = K + 4, S = kSub;
  extern __shared__ __align__(16) float smem[];
  float* s_q = smem;                      // [C][KP] q̃
  float* s_k = s_q + C * KP;              // [C][KP] k
  float* s_e = s_k + C * KP;              // [C][KP] e = b ⊙ k
  float* s_c = s_e + C * KP;              // [C][KP] g, then c_r
  float* s_a = s_c + C * KP;              // [C][KP] a_s
  float* s_dAqk = s_a + C * KP;           // [C][C]
  float* s_dT = s_dAqk + C * C;           // [C][C]
  float* s_bs = s_dT + C * C;             // [kNumSub][K] sub-chunk sums of g
  float* s_mid = s_bs + kNumSub * K;      // [J][I][K]
  float* s_tot = s_mid + kNumSub * kNumSub * K;  // [J][I][K] Σ of the pair terms of block (I, J)
  const int tid = threadIdx.x, hv = blockIdx.y, n = blockIdx.z, h = hv / (HV / H);
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t c0 = int64_t(blockIdx.x) * C;
  if (c0 >= span.length) return;
  const int L = int(span.length - c0 < C ? span.length - c0 : C);
  const int64_t row0 = span.row0 + c0;
  {  // rows ≥ L: zeros (and g = 0), so their pair terms vanish
    constexpr int kPerC = C * C / 4 / NT;
    static_assert((C * C / 4) % NT == 0, "whole rounds");
    ChunkInputs8<K, NT, kWide> tiles;
    float da[kPerC][4], dt[kPerC][4];
    tiles.load(q, k, b, g, row0, H, h, HG, gate_head(HG, HV, hv, h), L, tid);
#pragma unroll
    for (int u = 0; u < kPerC; ++u) {
      const int i = u * NT + tid, r = i / (C / 4), s4 = (i % (C / 4)) * 4;
      const int64_t at = ((row0 + r) * HV + hv) * C + s4;
      const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
      const float4 a = r < L ? *reinterpret_cast<const float4*>(bw.dAqk + at) : zero;
      const float4 t = r < L ? *reinterpret_cast<const float4*>(bw.dT + at) : zero;
      da[u][0] = a.x, da[u][1] = a.y, da[u][2] = a.z, da[u][3] = a.w;
      dt[u][0] = t.x, dt[u][1] = t.y, dt[u][2] = t.z, dt[u][3] = t.w;
    }
    tiles.template store<KP>(s_q, s_k, s_e, s_c, scale, tid);
#pragma unroll
    for (int u = 0; u < kPerC; ++u) store4(s_dAqk + 4 * (u * NT + tid), da[u]), store4(s_dT + 4 * (u * NT + tid), dt[u]);
  }
  __syncthreads();
  auto out = [&](int r, int d) { return ((row0 + r) * HV + hv) * K + d; };
  // 1. Diagonal blocks, pairwise, written (=) to dq, de, dk, dg. The decay of a pair is a running product of the
  //    factors exp(g_r), each computed once per (row, channel): Γ_rs = Π_{s<i≤r} exp(g_i), exactly 0 after a g = −inf.
  for (int task = tid; task < kNumSub * K; task += NT) {
    const int M = task / K, d = task % K, o = M * S;
    float dq[S] = {}, de[S] = {}, dg[S] = {};
    float* ex = s_a + o * KP + d;  // exp(g_r) of the task's rows, in s_a until step 2 (this thread only)
#pragma unroll
    for (int r = 1; r < S; ++r) ex[r * KP] = expf(s_c[(o + r) * KP + d]);
    for (int s = 0; s < S; ++s) {
      const float ks = s_k[(o + s) * KP + d];
      float decay = 1.f, dk = 0, X[S] = {};
#pragma unroll
      for (int r = 0; r < S; ++r) {
        if (r < s) continue;
        if (r > s) decay *= ex[r * KP];  // Γ_rs = Π_{s<i≤r} exp(g_i)
        const float daqk = s_dAqk[(o + r) * C + o + s], dt = r > s ? s_dT[(o + r) * C + o + s] : 0.f;
        const float wrs = (daqk * s_q[(o + r) * KP + d] + dt * s_e[(o + r) * KP + d]) * decay;
        dk += wrs;
        dq[r] += daqk * decay * ks;
        de[r] += dt * decay * ks;
        X[r] = wrs * ks;
      }
      if (o + s < L) bw.dK[out(o + s, d)] = dk;
      float suffix = 0;
#pragma unroll
      for (int i = S - 1; i > 0; --i)
        if (i > s) {
          suffix += X[i];
          dg[i] += suffix;
        }
    }
#pragma unroll
    for (int r = 0; r < S; ++r)
      if (o + r < L) bw.dQ[out(o + r, d)] = dq[r], bw.dE[out(o + r, d)] = de[r], bw.dG[out(o + r, d)] = dg[r];
  }
  __syncthreads();
  // 2. Factors: c_r (over g in place), a_s, sub-chunk sums; then mid(J, I).
  for (int task = tid; task < kNumSub * K; task += NT) {
    const int M = task / K, d = task % K, o = M * S;
    float gs[S];
#pragma unroll
    for (int r = 0; r < S; ++r) gs[r] = s_c[(o + r) * KP + d];
    float run = 0;
#pragma unroll
    for (int r = 0; r < S; ++r) {
      run += gs[r];
      s_c[(o + r) * KP + d] = expf(run);
    }
    s_bs[M * K + d] = run;
    run = 0;
#pragma unroll
    for (int r = S - 1; r >= 0; --r) {
      s_a[(o + r) * KP + d] = expf(run);
      run += gs[r];
    }
  }
  __syncthreads();
  for (int d = tid; d < K; d += NT)
    for (int J = 0; J < kNumSub; ++J)
      for (int I = J + 1; I < kNumSub; ++I) {
        float between = 0;
        for (int M = J + 1; M < I; ++M) between += s_bs[M * K + d];
        s_mid[(J * kNumSub + I) * K + d] = expf(between);
      }
  __syncthreads();
  // 3. Rows of the off-diagonal blocks (I ≥ 1), walked upward from the last row for the suffix sum of dg. Each task
  //    loads the values step 1 wrote for its 16 rows before its sums (their latency under the arithmetic).
  {
    for (int task = tid; task < (kNumSub - 1) * K; task += NT) {
      const int I = 1 + task / K, d = task % K, o = I * S;
      float dq[S] = {}, de[S] = {}, tot[kNumSub - 1] = {};
      float old_q[S], old_e[S], old_g[S];  // the values step 1 wrote, loaded before the sums
      {
#pragma unroll
        for (int r = 0; r < S; ++r) {
          const bool live = o + r < L;
          const int64_t x = out(live ? o + r : 0, d);
          old_q[r] = live ? bw.dQ[x] : 0.f, old_e[r] = live ? bw.dE[x] : 0.f, old_g[r] = live ? bw.dG[x] : 0.f;
        }
      }
#pragma unroll
      for (int J = 0; J < kNumSub - 1; ++J) {
        if (J >= I) continue;
        float ka[S];
#pragma unroll
        for (int s = 0; s < S; ++s) ka[s] = s_k[(J * S + s) * KP + d] * s_a[(J * S + s) * KP + d];
        const float m = s_mid[(J * kNumSub + I) * K + d];
#pragma unroll
        for (int r = S - 1; r >= 0; --r) {
          const float* aq = s_dAqk + (o + r) * C + J * S;
          const float* at = s_dT + (o + r) * C + J * S;
          float Dq = 0, De = 0;
#pragma unroll
          for (int s4 = 0; s4 < S; s4 += 4) {
            const float4 x = *reinterpret_cast<const float4*>(aq + s4), y = *reinterpret_cast<const float4*>(at + s4);
            Dq += x.x * ka[s4], De += y.x * ka[s4];
            Dq += x.y * ka[s4 + 1], De += y.y * ka[s4 + 1];
            Dq += x.z * ka[s4 + 2], De += y.z * ka[s4 + 2];
            Dq += x.w * ka[s4 + 3], De += y.w * ka[s4 + 3];
          }
          dq[r] += m * Dq;
          de[r] += m * De;
          const int rr = (o + r) * KP + d;
          tot[J] += m * s_c[rr] * (s_q[rr] * Dq + s_e[rr] * De);
        }
      }
      float suffix = 0;
#pragma unroll
      for (int r = S - 1; r >= 0; --r) {
        const int rr = (o + r) * KP + d;
        const float dqr = dq[r] * s_c[rr], der = de[r] * s_c[rr];
        suffix += s_q[rr] * dqr + s_e[rr] * der;  // ρ_r
        if (o + r < L) {
          const int64_t x = out(o + r, d);
          bw.dQ[x] = old_q[r] + dqr, bw.dE[x] = old_e[r] + der, bw.dG[x] = old_g[r] + suffix;
        }
      }
#pragma unroll
      for (int J = 0; J < kNumSub - 1; ++J)
        if (J < I) s_tot[(J * kNumSub + I) * K + d] = tot[J];
    }
  }
  __syncthreads();
  // 4. Columns of the off-diagonal blocks (J ≤ 2), walked from the first row for the strict prefix sum; each task also
  //    adds step 5's term for its rows (the sub-chunks strictly between J and I: every pair of block (I, J) spans
  //    them), after its own, from the block totals of step 3.
  {
    for (int task = tid; task < (kNumSub - 1) * K; task += NT) {
      const int J = task / K, d = task % K, o = J * S;
      float dk[S] = {};
      float old_g[S], old_k[S], between = 0;  // the values steps 1 and 3 wrote; step 5's term
      {
#pragma unroll
        for (int s = 0; s < S; ++s) {
          const bool live = o + s < L;
          const int64_t x = out(live ? o + s : 0, d);
          old_g[s] = live ? bw.dG[x] : 0.f, old_k[s] = live ? bw.dK[x] : 0.f;
        }
        // Step 5's sum for sub-chunk M = J (1 ≤ J < kNumSub − 1), in its order: over J' < M, then I > M.
        for (int J2 = 0; J2 < J; ++J2)
          for (int I = J + 1; I < kNumSub; ++I) between += s_tot[(J2 * kNumSub + I) * K + d];
      }
#pragma unroll
      for (int I = 1; I < kNumSub; ++I) {
        if (I <= J) continue;
        float Dk[S] = {};
#pragma unroll 4
        for (int r = I * S; r < (I + 1) * S; ++r) {
          const int rr = r * KP + d;
          const float qc = s_q[rr] * s_c[rr], ec = s_e[rr] * s_c[rr];
          const float* aq = s_dAqk + r * C + o;
          const float* at = s_dT + r * C + o;
#pragma unroll
          for (int s4 = 0; s4 < S; s4 += 4) {
            const float4 x = *reinterpret_cast<const float4*>(aq + s4), y = *reinterpret_cast<const float4*>(at + s4);
            Dk[s4] += x.x * qc + y.x * ec;
            Dk[s4 + 1] += x.y * qc + y.y * ec;
            Dk[s4 + 2] += x.z * qc + y.z * ec;
            Dk[s4 + 3] += x.w * qc + y.w * ec;
          }
        }
        const float m = s_mid[(J * kNumSub + I) * K + d];
#pragma unroll
        for (int s = 0; s < S; ++s) dk[s] += m * Dk[s];
      }
      float prefix = 0;
#pragma unroll
      for (int s = 0; s < S; ++s) {
        const float dks = dk[s] * s_a[(o + s) * KP + d];
        if (o + s < L) {
          const int64_t x = out(o + s, d);
          float dg = old_g[s] + prefix;
          if (J >= 1) dg += between;  // step 5, after step 4's term
          bw.dG[x] = dg, bw.dK[x] = old_k[s] + dks;
        }
        prefix += s_k[(o + s) * KP + d] * dks;  // κ_s
      }
    }
  }
}

}  // namespace

void chunk_backward_intra(const BackwardWorkspace& bw, const void* q, const void* k, const float* g, const void* b,
                          const int64_t* cu, const Problem& p, cudaStream_t stream) {
  const float scale = default_scale(p);
  const unsigned max_chunks = unsigned((p.T + kChunk - 1) / kChunk);
  dispatch_k_and_dtype(p, [&](auto K_, auto T_) {
    constexpr int K = decltype(K_)::value;
    using T = decltype(T_);
    auto run = [&](auto wide) {
      constexpr bool kWide = decltype(wide)::value;
      constexpr size_t bytes = intra_smem_floats<K>() * sizeof(float);
      auto kernel = chunk_backward_intra_kernel<K, T, kWide>;
      GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      kernel<<<dim3(max_chunks, unsigned(p.HV), unsigned(p.N)), kIntraThreads, bytes, stream>>>(
          bw, static_cast<const T*>(q), static_cast<const T*>(k), g, static_cast<const T*>(b), cu, p.T, int(p.H),
          int(p.HV), int(gate_heads(p)), scale);
      GDN2_CUDA_CHECK_LAUNCH();
    };
    if (aligned16(q, k, g, b)) run(std::true_type{});
    else run(std::false_type{});
  });
}

}  // namespace gdn2::cuda::detail
