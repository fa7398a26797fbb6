// gdn2::cuda chunk_state_pass — the sequential part of the chunkwise forward (paper Eq. 23-24): per (sequence, value
// head, slice of VS value columns) one walk over the chunks carrying the state S in float32 on chip,
//   R = U − Y S_n;   S ← Diag(γ_C) S + K_tailᵀ R   (Eq. 23),
// and with bf16 storage and no kept workspace (the fused forward) also the output O = Q_γ S_n + A_qk R (Eq. 24).
// Otherwise it stores S_n and R, and chunk_output.cu computes O for every chunk in parallel.
// Launch: 256 threads per (slice of VS = 64, 32 or 16 value columns, value head, sequence): grid (V/VS, HV, N).
// On chip: the state slice S [K][VS] (float32) for the whole walk, and Y, K_tail, U, γ_C of two chunks (the next copied
// by cp.async while this one computes) in shared memory (up to 207 KB, one block per SM); in the fused pass the chunk's
// Q_γ and A_qk as mma fragments in registers.
// H100, bf16, B = 8, T = 4096, H = 16, K = V = 128: the fused pass about 1.0 ms of the forward's 2.37 ms (Nsight
// Compute).
#include "chunk_output.cuh"

namespace gdn2::cuda::detail {

namespace {

// Row strides of the pass's tiles, 16-byte aligned for cp.async; with bf16 storage (kMma) padded so that a fragment's
// 32 reads hit 32 banks: Y read along its rows (≡ 4 mod 32), K_tail down its columns and S, R as B operands (≡ 8).
template <int K, int VS, bool kMma>
struct PassLayout {
  static constexpr int KPY = K + 4, KPK = kMma ? K + 8 : K + 4, VSP = kMma ? VS + 8 : VS;
  static constexpr int kBuf = kChunk * KPY + kChunk * KPK + kChunk * VSP + K;
  static constexpr size_t floats = 2 * kBuf + K * VSP;
};

// kMma (bf16 storage): the two products on tensor cores (TF32, fp32 accumulation; the state stays fp32 in shared
// memory); float32 storage keeps them on CUDA cores. kOutput (bf16, workspace not kept): the pass also computes
// O = Q_γ S_n + A_qk R (Eq. 24), so S_n and R never leave the chip; Q_γ and A_qk come into registers as mma fragments
// (prepare wrote them in fragment order; L2 bulk prefetch one chunk ahead). Q_γ S_n shares its S_n fragments with
// R = U − Y S_n (warp_mma_rows_pair); A_qk R is output_intra_mma, so O has the output kernel's bits. Y, K_tail, Q_γ
// and R come rounded to TF32 where they are stored. Without kOutput the pass stores S_n and R for chunk_output.
template <int K, int VS, typename T, bool kOutput>
__global__ void __launch_bounds__(kThreads, 1) chunk_state_pass_kernel(T* o, float* ht, Workspace ws, const float* h0,
                                                                       const int64_t* cu_seqlens, int64_t T_len, int HV,
                                                                       int V) {
  constexpr bool kMma = std::is_same_v<T, __nv_bfloat16>;
  static_assert(!kOutput || kMma, "the fused output runs on the tensor-core pass");
  constexpr bool kStore = !kOutput;  // S_n and R to the workspace
  using Lay = PassLayout<K, VS, kMma>;
  constexpr int C = kChunk, KPY = Lay::KPY, KPK = Lay::KPK, VSP = Lay::VSP, kBuf = Lay::kBuf;
  extern __shared__ __align__(16) float smem[];
  float* s_S = smem + 2 * kBuf;  // [K][VSP]
  const int tid = threadIdx.x;
  const int col0 = blockIdx.x * VS, hv = blockIdx.y, n = blockIdx.z;
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t state = (int64_t(n) * HV + hv) * K * V;
  for (int i = tid; i < K * VS; i += kThreads)
    s_S[(i / VS) * VSP + i % VS] = h0 ? h0[state + int64_t(i / VS) * V + col0 + i % VS] : 0.f;
  const int64_t chunks = (span.length + C - 1) / C;

  auto issue = [&](int64_t c) {  // copies Y, K_tail, the U slice and γ_C of chunk c into buffer c % 2
    float* buf = smem + (c & 1) * kBuf;
    float *b_y = buf, *b_k = buf + C * KPY, *b_u = b_k + C * KPK, *b_g = b_u + C * VSP;
    const int64_t row0 = span.row0 + c * C;
    const int L = int(span.length - c * C < C ? span.length - c * C : C);
    {  // tid copies 16 bytes at column dk of rows rk, rk + kRowsK, .. of Y, K_tail (cv of rows rv, rv + kRowsV, .. of U)
      constexpr int kRowsK = kThreads / (K / 4), kRowsV = kThreads / (VS / 4);
      const int rk = tid / (K / 4), dk = tid % (K / 4) * 4, rv = tid / (VS / 4), cv = tid % (VS / 4) * 4;
      const int64_t at_k = (row0 * HV + hv) * K + dk, step_k = int64_t(kRowsK) * HV * K;
      const int64_t at_v = (row0 * HV + hv) * V + col0 + cv, step_v = int64_t(kRowsV) * HV * V;
#pragma unroll
      for (int u = 0; u < C / kRowsK; ++u) {  // rows past the chunk's end: zero-filled from row 0's (valid) address
        const int r = rk + u * kRowsK;
        const int64_t at = r < L ? at_k + rk * int64_t(HV) * K + u * step_k : at_k;
        cp_async16(b_y + r * KPY + dk, ws.Y + at, r < L);
        cp_async16(b_k + r * KPK + dk, ws.Kt + at, r < L);
      }
#pragma unroll
      for (int u = 0; u < C / kRowsV; ++u) {
        const int r = rv + u * kRowsV;
        cp_async16(b_u + r * VSP + cv, ws.U + (r < L ? at_v + rv * int64_t(HV) * V + u * step_v : at_v), r < L);
      }
    }
    for (int i = tid; i < K / 4; i += kThreads)
      cp_async16(b_g + 4 * i, ws.gC + (chunk_slot(span.row0, n, c) * HV + hv) * K + 4 * i, true);
    if (kOutput && tid == 0 && (c + 1) * C < span.length) {  // chunk c + 1's fragments of Q_γ and A_qk
      const int64_t at = chunk_slot(span.row0, n, c + 1) * HV + hv;
      prefetch_l2_bulk(ws.Qf + at * C * K, C * K * 4);
      prefetch_l2_bulk(ws.Af + at * C * C, C * C * 4);
    }
  };
  // kOutput: Q_γ and A_qk fragments in registers, 16 bytes per load from prepare's fragment order (rows ≥ L are 0
  // there, as in the output kernel's zero-filled tiles). Each is loaded for chunk c + 1 as soon as chunk c's has been
  // used (Q_γ after Q_γ S_n, A_qk after A_qk R), so a load has half a step or more to land, from L2: issue(c) asks L2
  // for chunk c + 1's fragments.
  constexpr int NTW = VS / 16;
  const int warp = tid / 32, g = tid % 32 / 4, t = tid % 4, wm = (warp % 4) * 16, wn = (warp / 4) * (VS / 2);
  float qf[K / 8][4], al[C / 8 - 2][4], ad[2][4];  // (unused, and so not allocated, without kOutput)
  auto load_q = [&](int64_t c) {
    const float4* at = reinterpret_cast<const float4*>(ws.Qf + (chunk_slot(span.row0, n, c) * HV + hv) * int64_t(C * K));
#pragma unroll
    for (int ks = 0; ks < K / 8; ++ks) {
      const float4 x = at[fragment_index<K>(warp % 4, ks, tid % 32)];
      qf[ks][0] = x.x, qf[ks][1] = x.y, qf[ks][2] = x.z, qf[ks][3] = x.w;
    }
  };
  auto load_a = [&](int64_t c) {
    const float4* at = reinterpret_cast<const float4*>(ws.Af + (chunk_slot(span.row0, n, c) * HV + hv) * int64_t(C * C));
    auto put = [](float (&f)[4], float4 x) { f[0] = x.x, f[1] = x.y, f[2] = x.z, f[3] = x.w; };
#pragma unroll
    for (int ks = 0; ks < C / 8 - 2; ++ks)
      if (8 * ks < wm) put(al[ks], at[fragment_index<C>(warp % 4, ks, tid % 32)]);
#pragma unroll
    for (int i = 0; i < 2; ++i) put(ad[i], at[fragment_index<C>(warp % 4, wm / 8 + i, tid % 32)]);
  };
  if (chunks > 0) issue(0);
  cp_async_commit();
  if constexpr (kOutput)
    if (chunks > 0) load_q(0), load_a(0);
  for (int64_t c = 0; c < chunks; ++c) {
    if (c + 1 < chunks) issue(c + 1);
    cp_async_commit();  // (an empty group at the end keeps the count uniform)
    const int64_t row0 = span.row0 + c * C;
    const int L = int(span.length - c * C < C ? span.length - c * C : C);
    cp_async_wait<1>();  // chunk c has landed
    __syncthreads();
    float* buf = smem + (c & 1) * kBuf;
    float *b_y = buf, *b_k = buf + C * KPY, *b_u = b_k + C * KPK, *b_g = b_u + C * VSP;
    float* Sn = kStore ? ws.Sn + (chunk_slot(span.row0, n, c) * HV + hv) * int64_t(K) * V : nullptr;  // (not in kFused)
    if (kStore) {  // rows of s_S and of S_n start 16-byte aligned (VSP, V and col0 multiples of 4)
      float* at = Sn + col0;
#pragma unroll 4
      for (int i = tid; i < K * VS / 4; i += kThreads) {
        const int d = i / (VS / 4), c4 = (i % (VS / 4)) * 4;
        *reinterpret_cast<float4*>(at + int64_t(d) * V + c4) = *reinterpret_cast<const float4*>(s_S + d * VSP + c4);
      }
    }
    constexpr int TM = 4, TN = VS / 16;
    if constexpr (kMma) {
      // Warp w: rows 16·(w % 4) .. + 15 of R and VS/2 columns from (w / 4)·VS/2 (VS/16 tiles of 8); then K/4 rows of
      // the state update (K/64 tiles of 16) and the same columns.
      constexpr int MTS = K / 64;
      const int ws0 = (warp % 4) * (K / 4);
      float of[NTW][4] = {};  // kOutput: O
      {  // R = U − Y S_n (Eq. 23): the accumulators start from U; A = −Y
        float cf[NTW][4];
#pragma unroll
        for (int nt = 0; nt < NTW; ++nt) {
          const int col = wn + nt * 8 + 2 * t;
          cf[nt][0] = b_u[(wm + g) * VSP + col], cf[nt][1] = b_u[(wm + g) * VSP + col + 1];
          cf[nt][2] = b_u[(wm + g + 8) * VSP + col], cf[nt][3] = b_u[(wm + g + 8) * VSP + col + 1];
        }
        if constexpr (kOutput) {  // and O = Q_γ S_n (Eq. 24) with the same S_n fragments
          warp_mma_rows_pair<NTW, K / 8, true>(cf, b_y, KPY, of, qf, s_S, VSP, wm, wn, -1.f);
          if (c + 1 < chunks) load_q(c + 1);
#pragma unroll
          for (int nt = 0; nt < NTW; ++nt)  // R is only an mma operand from here on: rounded once, here
#pragma unroll
            for (int e = 0; e < 4; ++e) cf[nt][e] = round_tf32(cf[nt][e]);
        } else
          warp_mma_rows(cf, b_y, KPY, s_S, VSP, wm, wn, 0, K, -1.f);
        // Each warp read U only where it now writes R, so no barrier is needed before the writes.
        store_fragments<NTW, true>(cf, b_u, VSP, ws.U + (row0 * HV + hv) * V + col0, int64_t(HV) * V, wm, wn,
                                          kStore ? L : 0);
      }
      __syncthreads();
      {  // S ← Diag(γ_C) S + K_tailᵀ R (Eq. 23): A(d, j) = K_tail[j][d], read down its columns
        float sf[MTS][NTW][4] = {};
        warp_mma_cols<MTS, NTW, kOutput>(sf, b_k, KPK, b_u, VSP, ws0, wn, C);  // (kOutput: both rounded already)
        // Every warp has finished reading S (in the R product, before the barrier); each now updates its own part.
        decay_add_fragments(sf, s_S, VSP, b_g, ws0, wn);
      }
      if constexpr (kOutput) {  // O += A_qk R (Eq. 24), R of every warp in b_u since the barrier
        // The rare fix-up's A_qk[r][s] from the fragment-order copy: value (r / 8) % 2 + 2 ((s / 4) % 2) of the
        // float4 of lane 4 (r % 8) + s % 4 at k-step s / 8 (rows ≥ L hold 0 there).
        const float* af_chunk = ws.Af + (chunk_slot(span.row0, n, c) * HV + hv) * int64_t(C * C);
        output_intra_mma<true>(
            of, [&](int ks, int j) { return al[ks][j]; }, [&](int i, int j) { return ad[i][j]; },
            [&](int r, int s) {
              return af_chunk[4 * fragment_index<C>(r / 16, s / 8, 4 * (r % 8) + s % 4) + (r / 8) % 2 + 2 * ((s / 4) % 2)];
            },
            b_u, VSP, wm, wn);
        store_output_fragments(of, o + (row0 * HV + hv) * V + col0, int64_t(HV) * V, wm, wn, L);
        if (c + 1 < chunks) load_a(c + 1);
      }
      __syncthreads();  // buffer c % 2 is free for chunk c + 2
      continue;
    }
    {  // R = U − Y S_n (Eq. 23)
      float acc[TM][TN];
      const int m0 = (tid / (VS / TN)) * TM, n0 = (tid % (VS / TN)) * TN;
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = b_u[(m0 + i) * VS + n0 + j];
      tile_product_vec<C, VS, TM, TN, true>(acc, b_y, KPY, s_S, VS, K, tid, -1.f);
      __syncthreads();
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          b_u[(m0 + i) * VS + n0 + j] = acc[i][j];
          if (m0 + i < L) ws.U[((row0 + m0 + i) * HV + hv) * V + col0 + n0 + j] = acc[i][j];
        }
    }
    __syncthreads();
    {  // S ← Diag(γ_C) S + K_tailᵀ R (Eq. 23)
      constexpr int SM = K / 16;
      float acc[SM][TN] = {};
      tile_product_vec<K, VS, SM, TN, false>(acc, b_k, KPK, b_u, VS, C, tid);
      const int d0 = (tid / (VS / TN)) * SM, c1 = (tid % (VS / TN)) * TN;
#pragma unroll
      for (int i = 0; i < SM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          float& st = s_S[(d0 + i) * VS + c1 + j];
          st = b_g[d0 + i] * st + acc[i][j];
        }
    }
    __syncthreads();  // buffer c % 2 is free for chunk c + 2
  }
  cp_async_wait<0>();
  if (ht)
    for (int i = tid; i < K * VS; i += kThreads) ht[state + int64_t(i / VS) * V + col0 + i % VS] = s_S[(i / VS) * VSP + i % VS];
}
}  // namespace

void chunk_state_pass(const Workspace& ws, void* o, float* ht, const float* h0, const int64_t* cu, const Problem& p,
                      bool fused, cudaStream_t stream) {
  dispatch_k_and_dtype(p, [&](auto K_, auto T_) {
    constexpr int K = decltype(K_)::value;
    using T = decltype(T_);
    auto run = [&](auto vs, auto output) {
      constexpr int VS = decltype(vs)::value;
      constexpr bool kOutput = decltype(output)::value;
      constexpr size_t bytes = PassLayout<K, VS, std::is_same_v<T, __nv_bfloat16>>::floats * sizeof(float);
      auto kernel = chunk_state_pass_kernel<K, VS, T, kOutput>;
      GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      kernel<<<dim3(unsigned(p.V / VS), unsigned(p.HV), unsigned(p.N)), kThreads, bytes, stream>>>(
          static_cast<T*>(o), ht, ws, h0, cu, p.T, int(p.HV), int(p.V));
      GDN2_CUDA_CHECK_LAUNCH();
    };
    auto columns = [&](auto output) {
      switch (pass_columns(p)) {
        case 64: return run(std::integral_constant<int, 64>{}, output);
        case 16: return run(std::integral_constant<int, 16>{}, output);
        default: return run(std::integral_constant<int, 32>{}, output);
      }
    };
    if constexpr (std::is_same_v<T, __nv_bfloat16>)
      if (fused) return columns(std::true_type{});
    if (fused) throw Error("chunk_state_pass: the fused output needs bf16 storage");
    columns(std::false_type{});
  });
}

}  // namespace gdn2::cuda::detail
