// gdn2::cuda chunk_output — the chunk outputs O = Q_γ S_n + A_qk R (paper Eq. 24) for every chunk in parallel, from the
// workspace (Q_γ, A_qk, the chunk-start states S_n, R = U − Y S_n), for float32 storage and for a forward that keeps
// its workspace; the bf16 inference forward computes O inside its state pass instead.
// Launch: 256 threads per (chunk × slice of VO = 64 or 32 value columns, value head, sequence): grid (⌈T/64⌉·V/VO, HV,
// N), two blocks per SM. On chip: Q_γ [64][K + 4], A_qk [64][64 (+4)], S_n [K][VO (+8)], R [64][VO (+8)] in shared
// memory (float32, by cp.async; about 99 KB at K = 128); the accumulators in registers.
// H100, bf16 with a kept workspace, B = 8, T = 4096, H = 16, K = V = 128: about 0.6 ms (Nsight Compute).
#include "chunk_output.cuh"

namespace gdn2::cuda::detail {

namespace {

// Row strides of the output kernel's tiles; rows stay 16-byte aligned for cp.async. With bf16 storage (kMma) they
// are padded for the mma fragments, whose 32 lanes then hit 32 different banks: Q_γ and A_qk read along their rows (≡ 4 mod 32),
// S_n and R as B operands (≡ 8 mod 32).
template <int K, int VO, bool kMma>
struct OutputLayout {
  static constexpr int KP = K + 4, AP = kMma ? kChunk + 4 : kChunk, VP = kMma ? VO + 8 : VO;
  static constexpr size_t floats() { return size_t(kChunk) * KP + kChunk * AP + K * VP + kChunk * VP; }
};

// O = Q_γ S_n + A_qk R for one chunk, value slice (block x = chunk · V/VO + slice: the V / VO blocks of one chunk run
// next to each other, so the second read of the chunk's Q_γ and A_qk is served by L2), value head (y) and sequence
// (z). With bf16 storage the products run on tensor cores (output_intra_mma), otherwise on CUDA cores.
template <int K, int VO, typename T>
__global__ void __launch_bounds__(kThreads, 2) chunk_output_kernel(T* o, Workspace ws, const int64_t* cu_seqlens,
                                                                   int64_t T_len, int HV, int V) {
  constexpr bool kMma = std::is_same_v<T, __nv_bfloat16>;
  using Lay = OutputLayout<K, VO, kMma>;
  constexpr int C = kChunk, KP = Lay::KP, AP = Lay::AP, VP = Lay::VP;
  extern __shared__ __align__(16) float smem[];
  float* s_q = smem;               // [C][KP] Q_γ
  float* s_A = s_q + C * KP;       // [C][AP] A_qk
  float* s_S = s_A + C * AP;       // [K][VP] S_n slice
  float* s_R = s_S + K * VP;       // [C][VP] R slice
  const int tid = threadIdx.x, hv = blockIdx.y, slices = V / VO;
  const int slice = blockIdx.x % slices;
  const int n = blockIdx.z, col0 = slice * VO;
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t c = blockIdx.x / slices, c0 = c * C;
  if (c0 >= span.length) return;
  const int L = int(span.length - c0 < C ? span.length - c0 : C);
  const int64_t row0 = span.row0 + c0;
  for (int i = tid; i < C * K / 4; i += kThreads) {
    const int r = i / (K / 4), d = (i % (K / 4)) * 4;
    cp_async16(s_q + r * KP + d, ws.Qg + ((row0 + (r < L ? r : 0)) * HV + hv) * K + d, r < L);
  }
  for (int i = tid; i < C * C / 4; i += kThreads) {
    const int r = i / (C / 4), d = (i % (C / 4)) * 4;
    cp_async16(s_A + r * AP + d, ws.Aqk + ((row0 + (r < L ? r : 0)) * HV + hv) * C + d, r < L);
  }
  const float* Sn = ws.Sn + (chunk_slot(span.row0, n, c) * HV + hv) * int64_t(K) * V;
  for (int i = tid; i < K * VO / 4; i += kThreads) {
    const int d = i / (VO / 4), c4 = (i % (VO / 4)) * 4;
    cp_async16(s_S + d * VP + c4, Sn + int64_t(d) * V + col0 + c4, true);
  }
  for (int i = tid; i < C * VO / 4; i += kThreads) {
    const int r = i / (VO / 4), c4 = (i % (VO / 4)) * 4;
    cp_async16(s_R + r * VP + c4, ws.U + ((row0 + (r < L ? r : 0)) * HV + hv) * V + col0 + c4, r < L);
  }
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  if constexpr (kMma) {
    const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int wm = (warp % 4) * 16, wn = (warp / 4) * (VO / 2);
    float cf[VO / 16][4] = {};
    warp_mma_rows(cf, s_q, KP, s_S, VP, wm, wn, 0, K);  // Q_γ S_n (Eq. 24)
    // + A_qk R (Eq. 24), fragment value j at row wm + g + 8 (j % 2), column k0 + t + 4 (j / 2)
    auto a_frag = [&](int k0, int j) { return s_A[(wm + g + 8 * (j & 1)) * AP + k0 + t + 4 * (j >> 1)]; };
    output_intra_mma(
        cf, [&](int ks, int j) { return a_frag(8 * ks, j); }, [&](int i, int j) { return a_frag(wm + 8 * i, j); },
        [&](int r, int s) { return s_A[r * AP + s]; }, s_R, VP, wm, wn);
    store_output_fragments(cf, o + (row0 * HV + hv) * V + col0, int64_t(HV) * V, wm, wn, L);
    return;
  }
  constexpr int TM = 4, TN = VO / 16;
  float acc[TM][TN] = {};
  tile_product_vec<C, VO, TM, TN, true>(acc, s_q, KP, s_S, VO, K, tid);
  tile_product_vec<C, VO, TM, TN, true, true>(acc, s_A, C, s_R, VO, C, tid);
  const int r0 = (tid / (VO / TN)) * TM, c1 = (tid % (VO / TN)) * TN;
#pragma unroll
  for (int i = 0; i < TM; ++i)
    if (r0 + i < L)
#pragma unroll
      for (int j = 0; j < TN; ++j) o[((row0 + r0 + i) * HV + hv) * V + col0 + c1 + j] = from_float<T>(acc[i][j]);
}
}  // namespace

void chunk_output(const Workspace& ws, void* o, const int64_t* cu, const Problem& p, cudaStream_t stream) {
  dispatch_k_and_dtype(p, [&](auto K_, auto T_) {
    constexpr int K = decltype(K_)::value;
    using T = decltype(T_);
    auto run = [&](auto vo) {
      constexpr int VO = decltype(vo)::value;
      constexpr size_t bytes = OutputLayout<K, VO, std::is_same_v<T, __nv_bfloat16>>::floats() * sizeof(float);
      auto kernel = chunk_output_kernel<K, VO, T>;
      GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      const unsigned max_chunks = unsigned((p.T + kChunk - 1) / kChunk), slices = unsigned(p.V / VO);
      kernel<<<dim3(max_chunks * slices, unsigned(p.HV), unsigned(p.N)), kThreads, bytes, stream>>>(
          static_cast<T*>(o), ws, cu, p.T, int(p.HV), int(p.V));
      GDN2_CUDA_CHECK_LAUNCH();
    };
    if (p.V % 64 == 0) run(std::integral_constant<int, 64>{});
    else run(std::integral_constant<int, 32>{});
  });
}

}  // namespace gdn2::cuda::detail
