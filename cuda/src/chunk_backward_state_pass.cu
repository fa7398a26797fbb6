// gdn2::cuda chunk_backward stage 2 — the state VJP, one pass per (sequence, value head, value slice), last chunk
// first (Eq. 54, 56-57, 59, 63): dR = A_qkᵀ dO + K_tail dS_C; dS_start = Diag(γ_C) dS_C + Q_γᵀ dO − Yᵀ dR; dS_C, dR out.
// Launch: 512 threads per (slice of VS value columns, value head, sequence): grid (V/VS, HV, N); VS = 64 when that
// still gives about a block per SM, 16 when 32 would leave SMs idle, else 32. On chip: dS [K][VS] (float32) for the
// whole walk, the chunk's A_qk, K_tail, Q_γ, Y, dO, dR, γ_C in shared memory; with bf16 the mma fragments in registers.
// H100, bf16, B = 1, T = 4096, H = 16, K = V = 128: 0.44 ms (Nsight Compute; gdn2-cuda-bench --train --batch 1).
#include "backward.cuh"

namespace gdn2::cuda::detail {

namespace {

constexpr int C = kChunk, kBackwardPassThreads = 512;

// Row strides (floats): K-wide rows K + 4 (16-byte aligned runs); with bf16 storage (kMma) padded so that a fragment's
// 32 reads hit 32 banks: A operands read down their columns (A_qk, Q_γ, Y) and B operands by ≡ 8 mod 32, K_tail ≡ 4.
template <int K, int VS, bool kMma>
struct BackwardPassLayout {
  static constexpr int AQ = kMma ? C + 8 : C, KPK = K + 4, KPQ = kMma ? K + 8 : KPK;
  static constexpr int VSP = kMma ? VS + 8 : VS;
  static constexpr size_t floats() { return size_t(C) * AQ + C * KPK + 2 * C * KPQ + 2 * C * VSP + K * VSP + K; }
};

// One chunk step on tensor cores (bf16), warps as a 4 × WN grid (WN = 4 column groups, 2 when VS = 16, whose other 8
// warps only copy tiles): each owns 16 rows × VS/WN columns of dR and K/4 rows × VS/WN columns of dS (g = lane / 4,
// t = lane % 4). A_qkᵀ dO skips the depth steps above a warp's rows (zeros).
template <int K, int VS, typename Lay>
__device__ __forceinline__ void backward_pass_step_mma(const float* s_Aqk, const float* s_kt, const float* s_qg,
                                                       const float* s_y, const float* s_dO, float* s_dR, float* s_dS,
                                                       const float* s_gC, float* dR_out, int64_t row0, int L, int hv,
                                                       int HV, int V, int col0, int tid) {
  constexpr int AQ = Lay::AQ, KPK = Lay::KPK, KPQ = Lay::KPQ, VSP = Lay::VSP;
  constexpr int WN = VS >= 32 ? 4 : 2, NTW = VS / (8 * WN), MTS = K / 64;  // tiles of 8 columns; 16-row tiles of dS
  const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int wm = (warp % 4) * 16, wk = (warp % 4) * (K / 4), wn = (warp / 4) * (VS / WN);
  if (warp < 4 * WN) {  // dR = A_qkᵀ dO (Eq. 54) + K_tail dS_C (Eq. 57)
    float cf[NTW][4] = {};
    // A(s, r) = A_qk[r][s], read down its columns; A_qk[r][s] = 0 for r < s, so depth starts at the warp's first row.
#pragma unroll 2
    for (int k0 = wm; k0 < C; k0 += 8) {
      const uint32_t af[4] = {to_tf32(s_Aqk[(k0 + t) * AQ + wm + g]), to_tf32(s_Aqk[(k0 + t) * AQ + wm + g + 8]),
                              to_tf32(s_Aqk[(k0 + t + 4) * AQ + wm + g]),
                              to_tf32(s_Aqk[(k0 + t + 4) * AQ + wm + g + 8])};
#pragma unroll
      for (int nt = 0; nt < NTW; ++nt)
        mma_tf32(cf[nt], af, to_tf32(s_dO[(k0 + t) * VSP + wn + nt * 8 + g]),
                 to_tf32(s_dO[(k0 + t + 4) * VSP + wn + nt * 8 + g]));
    }
    warp_mma_rows(cf, s_kt, KPK, s_dS, VSP, wm, wn, 0, K);  // A(s, d) = K_tail[s][d], along its rows
    store_fragments(cf, s_dR, VSP, dR_out + (row0 * HV + hv) * V + col0, int64_t(HV) * V, wm, wn, L);
  }
  cp_async_wait<0>();  // this thread's copies of Q_γ and Y have landed
  __syncthreads();  // dR complete, every warp done reading dS_C, and Q_γ and Y in shared memory
  if (warp < 4 * WN) {  // dS_start = Diag(γ_C) dS_C (Eq. 59) + Q_γᵀ dO (Eq. 56) − Yᵀ dR (Eq. 63); A(d, r) = X[r][d]
    float sf[MTS][NTW][4] = {};
    warp_mma_cols(sf, s_qg, KPQ, s_dO, VSP, wk, wn, C);
    warp_mma_cols(sf, s_y, KPQ, s_dR, VSP, wk, wn, C, -1.f);
    // Each warp updates only the part of dS it owns (all reads of dS_C ended at the barrier above).
    decay_add_fragments(sf, s_dS, VSP, s_gC, wk, wn);
  }
}

// Each chunk step asks L2 for every line the next chunk will read, stores dS_C, and copies its tiles by cp.async in
// two groups: what dR = A_qkᵀ dO + K_tail dS_C reads, then Q_γ and Y, which land while that product runs. kMma (bf16):
// the four products on TF32 tensor cores (dS stays fp32); float32 storage keeps fp32 CUDA cores (1e-4 budget).
template <int K, int VS, bool kMma>
__global__ void __launch_bounds__(kBackwardPassThreads, 1) chunk_backward_state_pass_kernel(
    float* dh0, const float* dht, Workspace ws, BackwardWorkspace bw, const int64_t* cu_seqlens, int64_t T_len, int HV,
    int V) {
  constexpr int NT = kBackwardPassThreads;
  using Lay = BackwardPassLayout<K, VS, kMma>;
  constexpr int AQ = Lay::AQ, KPK = Lay::KPK, KPQ = Lay::KPQ, VSP = Lay::VSP;
  static_assert(!kMma || (NT == 512 && (VS == 16 || VS % 32 == 0) && K % 64 == 0), "the mma path's warp grid");
  extern __shared__ __align__(16) float smem[];
  float* s_Aqk = smem;              // [C][AQ]  A_qk, causal
  float* s_kt = s_Aqk + C * AQ;     // [C][KPK] K_tail
  float* s_qg = s_kt + C * KPK;     // [C][KPQ] Q_γ
  float* s_y = s_qg + C * KPQ;      // [C][KPQ] Y
  float* s_dO = s_y + C * KPQ;      // [C][VSP]
  float* s_dR = s_dO + C * VSP;     // [C][VSP]
  float* s_dS = s_dR + C * VSP;     // [K][VSP]
  float* s_gC = s_dS + K * VSP;     // [K]
  const int tid = threadIdx.x;
  const int col0 = blockIdx.x * VS, hv = blockIdx.y, n = blockIdx.z;
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t state = (int64_t(n) * HV + hv) * K * V;
  for (int i = tid; i < K * VS; i += NT)
    s_dS[(i / VS) * VSP + i % VS] = dht ? dht[state + int64_t(i / VS) * V + col0 + i % VS] : 0.f;
  const int64_t chunks = (span.length + C - 1) / C;
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t row0 = span.row0 + c * C;
    const int L = int(span.length - c * C < C ? span.length - c * C : C);
    const int64_t slot = chunk_slot(span.row0, n, c);
    __syncthreads();
    if (c > 0) {  // the next chunk (c − 1, full): A_qk, K_tail, Q_γ, Y and dO rows, γ_C, by 128-byte lines
      const int64_t next = row0 - C;
      constexpr int kLinesC = C / 32, kLinesK = K / 32, kLinesV = (VS + 31) / 32, kPerRow = kLinesC + 3 * kLinesK + kLinesV;
      for (int i = tid; i < C * kPerRow + kLinesK; i += NT) {
        if (i >= C * kPerRow) {
          prefetch_l2(ws.gC + (chunk_slot(span.row0, n, c - 1) * HV + hv) * K + (i - C * kPerRow) * 32);
          continue;
        }
        const int r = i / kPerRow, x = i % kPerRow;
        const int64_t row = (next + r) * HV + hv;
        if (x < kLinesC) prefetch_l2(ws.Aqk + row * C + x * 32);
        else if (x < kLinesC + kLinesK) prefetch_l2(ws.Kt + row * K + (x - kLinesC) * 32);
        else if (x < kLinesC + 2 * kLinesK) prefetch_l2(ws.Qg + row * K + (x - kLinesC - kLinesK) * 32);
        else if (x < kLinesC + 3 * kLinesK) prefetch_l2(ws.Y + row * K + (x - kLinesC - 2 * kLinesK) * 32);
        else prefetch_l2(bw.dO + row * V + col0 + (x - kLinesC - 3 * kLinesK) * 32);
      }
    }
    float* dSC = bw.dSn + (slot * HV + hv) * int64_t(K) * V;
    {  // dS_C out by float4 stores; the tiles in by 16-byte cp.async copies (group 1, then group 2: Q_γ and Y)
      for (int i = tid; i < K * (VS / 4); i += NT) {
        const int d = i / (VS / 4), c4 = (i % (VS / 4)) * 4;
        *reinterpret_cast<float4*>(dSC + int64_t(d) * V + col0 + c4) =
            *reinterpret_cast<const float4*>(s_dS + d * VSP + c4);
      }
      const int last = L - 1;  // rows past the chunk's end are zero-filled; their source address stays in range
      for (int i = tid; i < C * (C / 4); i += NT) {
        const int r = i / (C / 4), s4 = (i % (C / 4)) * 4;
        float* dst = s_Aqk + r * AQ + s4;
        if (s4 > r || r >= L)  // A_qk's stored rows hold no values above the diagonal: zeros
          *reinterpret_cast<float4*>(dst) = make_float4(0.f, 0.f, 0.f, 0.f);
        else
          cp_async16(dst, ws.Aqk + ((row0 + r) * HV + hv) * C + s4, true);
      }
      for (int i = tid; i < C * (K / 4); i += NT) {
        const int r = i / (K / 4), d4 = (i % (K / 4)) * 4;
        cp_async16(s_kt + r * KPK + d4, ws.Kt + ((row0 + min(r, last)) * HV + hv) * K + d4, r < L);
      }
      for (int i = tid; i < C * (VS / 4); i += NT) {
        const int r = i / (VS / 4), c4 = (i % (VS / 4)) * 4;
        cp_async16(s_dO + r * VSP + c4, bw.dO + ((row0 + min(r, last)) * HV + hv) * V + col0 + c4, r < L);
      }
      for (int i = tid; i < K / 4; i += NT) cp_async16(s_gC + 4 * i, ws.gC + (slot * HV + hv) * K + 4 * i, true);
      cp_async_commit();
      for (int i = tid; i < C * (K / 4); i += NT) {
        const int r = i / (K / 4), d4 = (i % (K / 4)) * 4;
        const int64_t at = ((row0 + min(r, last)) * HV + hv) * K + d4;
        cp_async16(s_qg + r * KPQ + d4, ws.Qg + at, r < L);
        cp_async16(s_y + r * KPQ + d4, ws.Y + at, r < L);
      }
      cp_async_commit();
      cp_async_wait<1>();  // group 1 landed (this thread's copies)
      for (int i = tid; i < C * (C / 4); i += NT) {  // the copied piece that the diagonal crosses: zeros past it
        const int r = i / (C / 4), s4 = (i % (C / 4)) * 4;
        if (r < L && s4 <= r && r < s4 + 3)
          for (int u = r - s4 + 1; u < 4; ++u) s_Aqk[r * AQ + s4 + u] = 0.f;
      }
      __syncthreads();
    }
    if constexpr (kMma) {
      backward_pass_step_mma<K, VS, Lay>(s_Aqk, s_kt, s_qg, s_y, s_dO, s_dR, s_dS, s_gC, bw.dR, row0, L, hv,
                                                 HV, V, col0, tid);
      continue;  // the barrier at the top of the loop ends the step
    }
    constexpr int TM = 2, TN = VS / 16;
    {  // dR = A_qkᵀ dO (Eq. 54) + K_tail dS_C (Eq. 57)
      float acc[TM][TN] = {};
      tile_product_vec<C, VS, TM, TN, false, false, NT>(acc, s_Aqk, C, s_dO, VS, C, tid);
      tile_product_vec<C, VS, TM, TN, true, false, NT>(acc, s_kt, KPK, s_dS, VS, K, tid);
      const int m0 = (tid / (VS / TN)) * TM, n0 = (tid % (VS / TN)) * TN;
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          s_dR[(m0 + i) * VS + n0 + j] = acc[i][j];
          if (m0 + i < L) bw.dR[((row0 + m0 + i) * HV + hv) * V + col0 + n0 + j] = acc[i][j];
        }
    }
    cp_async_wait<0>();  // this thread's copies of Q_γ and Y have landed
    __syncthreads();
    {  // dS_start = Diag(γ_C) dS_C (Eq. 59) + Q_γᵀ dO (Eq. 56) − Yᵀ dR (Eq. 63)
      constexpr int SM = K / 32;
      float acc[SM][TN] = {};
      tile_product_vec<K, VS, SM, TN, false, false, NT>(acc, s_qg, KPQ, s_dO, VS, C, tid);
      tile_product_vec<K, VS, SM, TN, false, false, NT>(acc, s_y, KPQ, s_dR, VS, C, tid, -1.f);
      const int d0 = (tid / (VS / TN)) * SM, c1 = (tid % (VS / TN)) * TN;
#pragma unroll
      for (int i = 0; i < SM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          float& ds = s_dS[(d0 + i) * VS + c1 + j];
          ds = s_gC[d0 + i] * ds + acc[i][j];
        }
    }
  }
  __syncthreads();
  for (int i = tid; i < K * VS; i += NT) dh0[state + int64_t(i / VS) * V + col0 + i % VS] = s_dS[(i / VS) * VSP + i % VS];
}
}  // namespace

void chunk_backward_state_pass(float* dh0, const float* dht, const Workspace& ws, const BackwardWorkspace& bw,
                               const int64_t* cu, const Problem& p, cudaStream_t stream) {
  const int64_t HV = p.HV, V = p.V;
  dispatch_k_and_dtype(p, [&](auto K_, auto T_) {
    constexpr int K = decltype(K_)::value;
    auto run = [&](auto vs) {
      constexpr int VS = decltype(vs)::value;
      constexpr bool kMma = std::is_same_v<decltype(T_), __nv_bfloat16>;
      auto kernel = chunk_backward_state_pass_kernel<K, VS, kMma>;
      const size_t bytes = BackwardPassLayout<K, VS, kMma>::floats() * sizeof(float);
      GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      kernel<<<dim3(unsigned(V / VS), unsigned(HV), unsigned(p.N)), kBackwardPassThreads, bytes, stream>>>(
          dh0, dht, ws, bw, cu, p.T, int(HV), int(V));
      GDN2_CUDA_CHECK_LAUNCH();
    };
    if (V % 64 == 0 && (V / 64) * HV * p.N >= 132) run(std::integral_constant<int, 64>{});
    else if ((V / 32) * HV * p.N < 132) run(std::integral_constant<int, 16>{});
    else run(std::integral_constant<int, 32>{});
  });
}

}  // namespace gdn2::cuda::detail
