// gdn2::cuda chunk_prepare — the state-independent work of every chunk, all chunks in parallel: the intra-chunk scores
// T and A_qk (Eq. 21, 25; chunk_scores.cuh), A = (I + T)⁻¹ (Eq. 21; block_inverse.cuh), Y = AĒ and U = AZ (Eq. 22),
// Q_γ = γ ⊙ q̃ (Eq. 24), K_tail = (γ_C/γ_r) ⊙ k (Eq. 23) and γ_C, to the float32 workspace (and A, Ē when it is kept).
// Launch: 512 threads (16 warps) per (chunk, value head, sequence): grid (⌈T/64⌉, HV, N).
// On chip: q̃, k, e = b ⊙ k, g (later K columns of Z = W ⊙ V) as [64][K + 4] float32 tiles, T, A_qk, A as [64][64(+4)]
// and the per-(sub-chunk, channel) decay factors in shared memory (about 208 KB at K = 128, one block per SM); the
// products' tiles in registers. Every decay is exp() of a direct sum of g ≤ 0 (docs/derivation.md step 4). With bf16
// storage the off-diagonal blocks of T and A_qk, and in the fused forward Y and U, run on TF32 tensor cores.
// H100, bf16, B = 8, T = 4096, H = 16, K = V = 128: 1.9 ms of the forward's 2.37 ms (Nsight Compute).
#include "block_inverse.cuh"
#include "chunk_scores.cuh"
#include "workspace.cuh"

namespace gdn2::cuda::detail {

namespace {

constexpr int kPrepareThreads = 512, kZSlice = 32;  // kZSlice: value columns of Z per product when K does not divide V
// Row strides: the [C][K] tiles K + 4 floats (16-byte aligned rows for float4 access), A C + 4 (its mma fragment
// reads hit 32 banks).
template <int K>
constexpr size_t prepare_smem_floats() {
  return 4 * kChunk * (K + 4) + 2 * kChunk * kChunk + kChunk * (kChunk + 4) + kChunk * kZSlice + 3 * kNumSub * K +
         kNumSub * kNumSub * K;
}

// kWide: the inputs are 16-byte aligned and read 16 bytes at a time; otherwise one element at a time (the same values,
// so the same bits). With ws.Qf (the fused forward) Q_γ and A_qk go out in mma fragment order and Y, U come from
// tensor cores; otherwise row-major, and Y, U from CUDA cores.
template <int K, typename T, bool kWide>
__global__ void __launch_bounds__(kPrepareThreads, 1) chunk_prepare_kernel(
    Workspace ws, const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const float* __restrict__ g, const T* __restrict__ b, const T* __restrict__ w, const int64_t* cu_seqlens,
    int64_t T_len, int H, int HV, int HG, int V, float scale) {
  constexpr int C = kChunk, KP = K + 4, AS = kChunk + 4, NT = kPrepareThreads;
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  extern __shared__ __align__(16) float smem[];
  float* s_q = smem;                     // [C][KP] q̃ → q̃⊙c (for A_qk)
  float* s_k = s_q + C * KP;             // [C][KP] k → k⊙a
  float* s_e = s_k + C * KP;             // [C][KP] e = b⊙k → e⊙c → Ē
  float* s_g = s_e + C * KP;             // [C][KP] g → Z = W ⊙ V, K value columns at a time
  float* s_T = s_g + C * KP;             // [C][C]  T
  float* s_Aqk = s_T + C * C;            // [C][C]  A_qk
  float* s_Z = s_Aqk + C * C;            // [C][kZSlice] a slice of Z (when K does not divide V); solve scratch
  float* s_bs = s_Z + C * kZSlice;       // [kNumSub][K] sub-chunk sums of g
  float* s_pre = s_bs + kNumSub * K;     // [kNumSub][K] exp(Σ of sub-chunks before I)
  float* s_suf = s_pre + kNumSub * K;    // [kNumSub][K] exp(Σ of sub-chunks after J) (for K_tail)
  float* s_mid = s_suf + kNumSub * K;    // [kNumSub][kNumSub][K]
  float* s_Ainv = s_mid + kNumSub * kNumSub * K;  // [C][AS] A = (I + T)⁻¹
  // exp(g) [C][K] (rows K apart) from the load phase to the diagonal blocks, in the space of s_Z .. s_Ainv, which is
  // first written after them (the diagonal blocks read up to three rows past the last).
  float* s_x = s_Z;
  static_assert(kNumSub * kNumSub * K + 3 * kNumSub * K + kChunk * kZSlice + kChunk * AS >= (kChunk + 3) * K, "room");

  const int tid = threadIdx.x, hv = blockIdx.y, n = blockIdx.z, h = hv / (HV / H);
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t c0 = int64_t(blockIdx.x) * C;
  if (c0 >= span.length) return;
  const int L = int(span.length - c0 < C ? span.length - c0 : C);
  const int64_t row0 = span.row0 + c0;
  // 1. Load q̃, k, e, g and exp(g); rows ≥ L are zero (and g = 0).
  {
    ChunkInputs8<K, NT, kWide> tiles;
    tiles.load(q, k, b, g, row0, H, h, HG, gate_head(HG, HV, hv, h), L, tid);
    tiles.template store<KP>(s_q, s_k, s_e, s_g, scale, tid, s_x);
  }
  __syncthreads();
  // 2a. The diagonal blocks of T and A_qk (chunk_scores.cuh).
  intra_chunk_scores_diagonal<K, KP, NT>(s_T, s_Aqk, s_q, s_k, s_e, s_x, tid);
  __syncthreads();
  // g is no longer needed after 2b, so its tile takes the first K value columns of Z = W ⊙ V, for U = AZ in one
  // product (when K divides V). The loads are issued here, kept as loaded (Load8) and converted after 2c, so the
  // wait for them falls after 2b and 2c instead of before.
  constexpr int kZPer8 = C * K / 8 / NT;
  const bool z_wide = V % K == 0;
  Load8<T, kWide> w_raw[kZPer8], v_raw[kZPer8];
  if (z_wide)
#pragma unroll
    for (int u = 0; u < kZPer8; ++u) {
      const int i = u * NT + tid, r = i / (K / 8), c = (i % (K / 8)) * 8;
      if (r < L) {
        const int64_t idx = ((row0 + r) * HV + hv) * V + c;
        w_raw[u].load(w + idx), v_raw[u].load(v + idx);
      } else {
        w_raw[u].zero(), v_raw[u].zero();  // rows past the chunk's end: 0 · 0
      }
    }
  // 2b. The decay factors.
  intra_chunk_decay_factors<K, KP, NT>(s_q, s_k, s_e, s_g, s_bs, s_pre, s_suf, s_mid, tid);
  __syncthreads();
  // 2c. The off-diagonal blocks of T and A_qk.
  if constexpr (kBf16)
    intra_chunk_scores_off_diagonal_mma<K, KP, NT>(s_T, s_Aqk, s_q, s_k, s_e, s_mid, tid);
  else
    intra_chunk_scores_off_diagonal_fp32<K, KP, NT>(s_T, s_Aqk, s_q, s_k, s_e, s_mid, tid);
  if (z_wide)
#pragma unroll
    for (int u = 0; u < kZPer8; ++u) {
      const int i = u * NT + tid, at = (i / (K / 8)) * KP + (i % (K / 8)) * 8;
      float wv[8], vv[8], z[8];
      w_raw[u].floats(wv), v_raw[u].floats(vv);
#pragma unroll
      for (int j = 0; j < 8; ++j) z[j] = wv[j] * vv[j];
      store4(s_g + at, z), store4(s_g + at + 4, z + 4);
    }
  __syncthreads();
  // Ē = γ ⊙ e (γ_r = pre(I)·c_r, Eq. 20), Q_γ = γ ⊙ q̃ (Eq. 24) and K_tail = (γ_C/γ_r) ⊙ k = suf(J)·a_r·k (Eq. 23).
  static_assert((C * K / 4) % NT == 0, "whole rounds");
  if (ws.Qf) {
    // The fused forward: K_tail rounded to TF32 (an mma operand only), Q_γ in fragment order, no Ē; no branches.
#pragma unroll
    for (int u = 0; u < C * K / 4 / NT; ++u) {
      const int i = u * NT + tid, r = i / (K / 4), d = (i % (K / 4)) * 4;
      const float4 pre = *reinterpret_cast<const float4*>(s_pre + (r / kSub) * K + d);
      const float4 suf = *reinterpret_cast<const float4*>(s_suf + (r / kSub) * K + d);
      float4 e = *reinterpret_cast<const float4*>(s_e + r * KP + d);
      const float4 ka = *reinterpret_cast<const float4*>(s_k + r * KP + d);
      e.x *= pre.x, e.y *= pre.y, e.z *= pre.z, e.w *= pre.w;
      *reinterpret_cast<float4*>(s_e + r * KP + d) = e;
      const float4 kt = make_float4(round_tf32(ka.x * suf.x), round_tf32(ka.y * suf.y), round_tf32(ka.z * suf.z),
                                    round_tf32(ka.w * suf.w));
      if (r < L) *reinterpret_cast<float4*>(ws.Kt + ((row0 + r) * HV + hv) * K + d) = kt;
    }
    float* out = ws.Qf + (chunk_slot(span.row0, n, blockIdx.x) * HV + hv) * int64_t(C * K);
    for (int f = tid; f < C * K / 4; f += NT) {
      const int lane = f % 32, ks = f / 32 % (K / 8), mb = f / (32 * (K / 8));
      float x[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int r = mb * 16 + lane / 4 + 8 * (j & 1), d = 8 * ks + lane % 4 + 4 * (j >> 1);
        x[j] = r < L ? round_tf32(s_q[r * KP + d] * s_pre[(r / kSub) * K + d]) : 0.f;
      }
      store4(out + 4 * fragment_index<K>(mb, ks, lane), x);
    }
  } else {
    for (int i = tid; i < C * K / 4; i += NT) {
      const int r = i / (K / 4), d = (i % (K / 4)) * 4;
      const float4 pre = *reinterpret_cast<const float4*>(s_pre + (r / kSub) * K + d);
      float4 e = *reinterpret_cast<const float4*>(s_e + r * KP + d);
      e.x *= pre.x, e.y *= pre.y, e.z *= pre.z, e.w *= pre.w;
      *reinterpret_cast<float4*>(s_e + r * KP + d) = e;
      if (r < L) {
        const int64_t at = ((row0 + r) * HV + hv) * K + d;
        const float4 qc = *reinterpret_cast<const float4*>(s_q + r * KP + d);
        const float4 ka = *reinterpret_cast<const float4*>(s_k + r * KP + d);
        const float4 suf = *reinterpret_cast<const float4*>(s_suf + (r / kSub) * K + d);
        *reinterpret_cast<float4*>(ws.Qg + at) = make_float4(qc.x * pre.x, qc.y * pre.y, qc.z * pre.z, qc.w * pre.w);
        *reinterpret_cast<float4*>(ws.Kt + at) = make_float4(ka.x * suf.x, ka.y * suf.y, ka.z * suf.z, ka.w * suf.w);
        if (ws.Ebar) *reinterpret_cast<float4*>(ws.Ebar + at) = e;  // kept for the backward (Eq. 20)
      }
    }
  }
  for (int d = tid; d < K; d += NT) {  // γ_C = exp(Σ of the chunk's g)
    float total = 0;
    for (int M = 0; M < kNumSub; ++M) total += s_bs[M * K + d];
    ws.gC[(chunk_slot(span.row0, n, blockIdx.x) * HV + hv) * K + d] = expf(total);
  }
  // 3. A = (I + T)⁻¹ (Eq. 21), by blocks (block_inverse.cuh); Z's slice tile is the scratch.
  solve_unit_lower<NT, AS>(s_Ainv, s_T, s_Z, tid);
  const float* s_A = s_Ainv;
  if (ws.A)  // kept for the backward: A = (I + T)⁻¹ (Eq. 21), zeros above the diagonal included
    for (int i = tid; i < L * C / 4; i += NT)
      *reinterpret_cast<float4*>(ws.A + ((row0 + i / (C / 4)) * HV + hv) * C + (i % (C / 4)) * 4) =
          *reinterpret_cast<const float4*>(s_A + (i / (C / 4)) * AS + (i % (C / 4)) * 4);
  // 4. Y = A Ē (Eq. 22) and A_qk to the workspace.
  if (ws.Qf) {
    lower_product_mma<K, KP, AS, NT, true>(s_A, s_e, ws.Y + (row0 * HV + hv) * K, int64_t(HV) * K, L, tid);
  } else {
    constexpr int TM = C / (NT / 32), TN = K / 32;
    float acc[TM][TN] = {};
    lower_product_lanes<K, NT>(acc, s_A, AS, s_e, KP, tid);
    const int m0 = (tid / 32) * TM, lane = tid % 32;
#pragma unroll
    for (int i = 0; i < TM; ++i)
      if (m0 + i < L)
#pragma unroll
        for (int j = 0; j < TN; ++j) ws.Y[((row0 + m0 + i) * HV + hv) * K + lane + 32 * j] = acc[i][j];
  }
  if (ws.Af) {  // A_qk in fragment order for the fused pass: k-steps up to the diagonal block's
    float* out = ws.Af + (chunk_slot(span.row0, n, blockIdx.x) * HV + hv) * int64_t(C * C);
    for (int f = tid; f < C * C / 4; f += NT) {
      const int lane = f % 32, ks = f / 32 % (C / 8), mb = f / (32 * (C / 8));
      if (ks > 2 * mb + 1) continue;
      float x[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int r = mb * 16 + lane / 4 + 8 * (j & 1), s = 8 * ks + lane % 4 + 4 * (j >> 1);
        x[j] = r < L ? s_Aqk[r * C + s] : 0.f;
      }
      store4(out + 4 * fragment_index<C>(mb, ks, lane), x);
    }
  } else {
    for (int i = tid; i < L * C / 4; i += NT)
      *reinterpret_cast<float4*>(ws.Aqk + ((row0 + i / (C / 4)) * HV + hv) * C + (i % (C / 4)) * 4) =
          *reinterpret_cast<const float4*>(s_Aqk + 4 * i);
  }
  // 5. U = A Z (Eq. 22), K value columns at a time (the first already in s_g) when K divides V.
  if (z_wide) {
    constexpr int TM = C / (NT / 32), TN = K / 32;
    const int m0 = (tid / 32) * TM, lane = tid % 32;
    for (int col0 = 0; col0 < V; col0 += K) {
      if (col0 > 0) {
        __syncthreads();  // every warp has read the previous slice
        for (int i = tid; i < C * K; i += NT) {
          const int r = i / K, c = i % K;
          const int64_t idx = ((row0 + r) * HV + hv) * V + col0 + c;
          s_g[r * KP + c] = r < L ? to_float(w[idx]) * to_float(v[idx]) : 0.f;
        }
        __syncthreads();
      }
      if (ws.Qf) {
        lower_product_mma<K, KP, AS, NT, false>(s_A, s_g, ws.U + (row0 * HV + hv) * V + col0, int64_t(HV) * V, L, tid);
        continue;
      }
      float acc[TM][TN] = {};
      lower_product_lanes<K, NT>(acc, s_A, AS, s_g, KP, tid);
#pragma unroll
      for (int i = 0; i < TM; ++i)
        if (m0 + i < L)
#pragma unroll
          for (int j = 0; j < TN; ++j) ws.U[((row0 + m0 + i) * HV + hv) * V + col0 + lane + 32 * j] = acc[i][j];
    }
    return;
  }
  for (int col0 = 0; col0 < V; col0 += kZSlice) {  // otherwise 32 columns at a time
    for (int i = tid; i < C * kZSlice; i += NT) {
      const int r = i / kZSlice, c = i % kZSlice;
      float z = 0;
      if (r < L) {
        const int64_t idx = ((row0 + r) * HV + hv) * V + col0 + c;
        z = to_float(w[idx]) * to_float(v[idx]);
      }
      s_Z[i] = z;
    }
    __syncthreads();
    constexpr int TM = C / (NT / 32);
    float acc[TM][1] = {};
    lower_product_lanes<kZSlice, NT>(acc, s_A, AS, s_Z, kZSlice, tid);
    const int m0 = (tid / 32) * TM, lane = tid % 32;
#pragma unroll
    for (int i = 0; i < TM; ++i)
      if (m0 + i < L) ws.U[((row0 + m0 + i) * HV + hv) * V + col0 + lane] = acc[i][0];
    __syncthreads();
  }
}

}  // namespace

void chunk_prepare(const Workspace& ws, const void* q, const void* k, const void* v, const float* g, const void* b,
                   const void* w, const int64_t* cu, const Problem& p, cudaStream_t stream) {
  const float scale = default_scale(p);
  const unsigned max_chunks = unsigned((p.T + kChunk - 1) / kChunk);
  dispatch_k_and_dtype(p, [&](auto K_, auto T_) {
    constexpr int K = decltype(K_)::value;
    using T = decltype(T_);
    auto run = [&](auto wide) {
      constexpr size_t bytes = prepare_smem_floats<K>() * sizeof(float);
      auto kernel = chunk_prepare_kernel<K, T, decltype(wide)::value>;
      GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      kernel<<<dim3(max_chunks, unsigned(p.HV), unsigned(p.N)), kPrepareThreads, bytes, stream>>>(
          ws, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), g, static_cast<const T*>(b),
          static_cast<const T*>(w), cu, p.T, int(p.H), int(p.HV), int(gate_heads(p)), int(p.V), scale);
      GDN2_CUDA_CHECK_LAUNCH();
    };
    if (aligned16(q, k, v, g, b, w)) run(std::true_type{});
    else run(std::false_type{});
  });
}

}  // namespace gdn2::cuda::detail
