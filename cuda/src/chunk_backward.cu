// gdn2::cuda chunk_backward — the gate-aware chunkwise backward (paper Sec. 3.4, Appendix B, Eq. 49-84), versions 01-17
// of its ladder (docs/cuda.md). Version 01 is written equation by equation in fp32, the line-by-line twin of
// reference/core/chunk_backward.hpp; later versions replace one stage each (marked "Version 0N" where they do).
//
// Idea: first rung of the backward ladder (docs/cuda.md), correct before fast. Stages, each a kernel:
//   0. recompute the forward (the paper's memory-saving path): the forward's prepare kernel and state pass
//      (chunk_forward_split.cu) give, per chunk, Y, A_qk, Q_γ, K_tail, γ_C, A = (I + T)⁻¹, Ē, the chunk-start state
//      S_n and R = U − Y S_n;
//   1. dO in fp32 and Z = W ⊙ V (Eq. 20);
//   2. the state VJP, one sequential pass per (sequence, value head, value slice), last chunk first (Eq. 54, 56-57,
//      59, 63):  dR = A_qkᵀ dO + K_tail dS_C;   dS ← Diag(γ_C) dS_C + Q_γᵀ dO − Yᵀ dR;
//   3. the products of every chunk in parallel, one batched GEMM launch per equation (Eq. 53, 55, 58, 62, 64-66);
//   4. the intra-chunk VJP through T and A_qk with segment decays (Eq. 67-70, entrywise);
//   5. the tail keys, elementwise gates and the reverse cumulative sum of dg (Eq. 71-76, 80-82), dv and dw;
//   6. the key-side gradients summed over the value heads of each key head in a fixed order (deterministic; no atomics
//      anywhere) and stored in the input dtype.
// Every decay is exp() of a direct sum of g ≤ 0, as in the forward: no γ⁻¹, exact at g = −inf.
// Prediction (before the first run, H100, bf16, B = 8, T = 4096, H = 16, K = V = 128): about 6 GB of fp32
// workspace written and read a few times (≈ 8 ms of traffic), the naive GEMMs ≈ 250 GFLOP at 10-15 TFLOP/s
// (≈ 20 ms), the intra-chunk VJP ≈ 3 ms: 30-40 ms for the backward alone.
// Measured on an H100 (bf16, H = 16, K = V = 128; backward alone, then forward + backward), B = 8, T = 4096:
//   01  52.0 ms, 61.0 ms (B = 1, T = 4096: 7.2 ms; stage 4 took 3.35 ms of it, one thread per channel over 2080 pairs)
//   02  30.3 ms, 38.8 ms (B = 1: 4.96 ms; stage 4 0.63 ms): stage 4 by the sub-chunk factorisation (section 4)
//   03  28.1 ms, 36.7 ms (B = 1: 4.38 ms): 64 × 64 product tiles with float4 steps (section 3; the ten products
//       10.0 ms at B = 8, predicted a third of version 02's), 16-column state-pass blocks when few sequences
// From version 04 on chunk_forward can keep its workspace for the backward (SavedForBackward), which then skips stage
// 0; "kept" below is that path, "recompute" the memory-saving one. Times with the CUDA memory pool kept between runs.
//   04  kept 17.1 ms, 24.0 ms (recompute: 29.7 ms in all; B = 1: 2.58 / 3.73 ms): the state pass with 16 warps and
//       batched loads (B = 1: 1.50 -> 0.96 ms), the products staging the next depth step in registers (B = 1: all ten
//       1.77 ms in version 02 -> 0.75 ms)
//   05  kept 16.4 ms, 23.2 ms (recompute: 29.0 ms): 64-column state-pass blocks when there are enough sequences (pass
//       5.06 -> 4.10 ms at B = 8), the gates by (sub-chunk, channel) tasks with two-level scans (3.69 -> 3.60 ms: not
//       the 2x predicted; the kernel moves about 5.4 GB, so 1.8 ms is its floor)
//   06  kept 15.9 ms, 21.9 ms (forward version 09; recompute: 26.9 ms): bf16 storage runs the products on tensor
//       cores (mma.sync TF32, fp32 accumulation): products 5.36 -> 4.86 ms, predicted 2x — they are bound by their
//       loads, not by the multiply-adds
//   07  kept 14.9 ms, 21.0 ms (recompute: 26.0 ms): with HV = H stage 5 writes the gradients and stage 6 is skipped
//       (predicted −0.6 ms, the head-sum kernel; got −1.0 ms, stage 5 no longer writes its fp32 results back either)
//   08  kept 14.0 ms, 18.7 ms (forward 11; recompute: 22.4 ms): stage 4's decays as running products of exp(g_r) (15 exps
//       per task instead of 136), its off-diagonal rows and columns with operands formed once and float4 reads of
//       dA_qk and dT (stage 4 4.90 -> 3.72 ms at B = 8, predicted -30%)
//   09  kept 13.8 ms, 17.8 ms (forward 13): the state pass with float4 shared loads (tile_product_vec, same bits as
//       08): 4.08 -> 3.89 ms, predicted about 3 ms — like the forward pass, not bound by its shared loads
//   10  kept 13.6 ms, 17.4 ms (forward 14): the state pass asks L2 for the next chunk's operands before it loads this
//       one's, and batches its dO loads (3.89 -> 3.60 ms; Nsight Compute had it waiting on a dozen memory latencies
//       per chunk step with DRAM 15% busy)
//   11  kept 13.5 ms, 17.3 ms: the products at three blocks per SM (registers capped at 80; 4.84 -> 4.80 ms — they are
//       not bound by the loads in flight)
//   12  kept 13.3 ms, 17.1 ms: stage 5 issues all its loads of S_n and dS_C before the row sums (3.16 -> 2.98 ms)
// From here forward 15 (session 6, one run for 13-14, another for 15; bf16):
//   13  kept 16.60 ms (12: 16.87): dQ_γ and dY in one launch that reads S_n once (1.57 -> 1.26 ms)
//   14  kept 15.34 ms: the state pass on tensor cores (bf16; 3.60 -> 2.07 ms, predicted 1.5-2 ms)
//   15  kept 15.27 ms (14: 15.36 in that run), backward alone 11.68 ms: dA = dU Zᵀ + dY Ēᵀ in one accumulation
//       (0.41 + 0.47 -> 0.75 ms)
//   16  kept 14.55 ms (15: 15.11 in that run, both with forward 16), backward alone 11.68 -> 11.13 ms: the state pass
//       copies its tiles by 16-byte cp.async (no registers; Q_γ and Y land while dR is computed) and stores dS_C by
//       float4. Nsight Compute had half of the pass's stall samples in its 4-byte loads, their index arithmetic and the
//       stores waiting on them. Predicted pass 2.07 -> about 1.5 ms; the backward moved 0.55 ms. Same bits as 15.
//   17  kept 14.41 ms (16: 14.59 in that run), backward alone 11.15 -> 10.97 ms: stage 4 loads q, k, b, g and dA_qk, dT
//       16 bytes at a time (an eighth of its stall samples were its 4-byte loads; 3.69 -> 3.49 ms, Nsight Compute,
//       predicted about −0.2 ms); same bits as 15.
// From here session 8 (forward 16 for 18 and 19 side by side; bf16):
//   18  kept 13.72 ms (17: 14.33 in that run), backward alone 10.95 -> 10.34 ms: stage 5 issues its loads before its
//       stores (dQ, dK with each row group's batch, the 16 dG loads at once, dv and dw 8 elements per 16-byte access):
//       in 12's PTX about 50 of its ~60 waits on memory were loads placed after a store they might alias. Predicted
//       stage 5 2.98 -> about 2.0 ms, measured 2.96 -> 2.29 ms (Nsight Compute). Same bits as 15.
//   19  kept 13.31 ms (18: 13.77 in that run), backward alone 10.35 -> 9.86 ms: stage 4 the same way — each task of
//       steps 3-4 loads the 16 rows it adds to before its sums (96 serial waits on memory per block in 17's PTX), and
//       step 5 is added in step 4. Predicted stage 4 3.49 -> 2.6-2.9 ms, measured 3.46 -> 2.89 ms. Same bits as 15.
//       With forward 20: kept 12.87 ms, backward alone 9.83 ms (peer: 13.8 ms).
// Tried and not kept: the state pass on tensor cores in session 4 (bf16): 21.0 -> 20.85 ms, within run-to-run noise,
// while each chunk step still waited on DRAM (version 10 fixed that; 14 is the same idea, now a win). The row sums of
// dS_C ⊙ S_n taken in the state pass (session 6): stage 5 3.00 -> 2.76 ms but the pass 2.07 -> 2.39 ms, 15.40 ->
// 15.47 ms in all. The ten products' tiles loaded 16 bytes at a time (session 7: float4 along each operand's contiguous
// axis, scalar stores down the tile's columns where that axis is not the tile's row; same bits): predicted products
// 4.5 -> 3.5-3.8 ms on the state pass's evidence, measured forward + backward 14.57 -> 14.67 ms (same run) — their
// 4-byte loads were not what bound them; reverted.
#include <cstdlib>

#include "chunk_workspace.cuh"

namespace gdn2::cuda::detail {

namespace {

constexpr int C = kChunk;

// Workspace of the backward proper (fp32), rows as Workspace: [rows][HV][X]; dSn: [slots][HV][K][V].
struct BackwardWorkspace {
  float *dO, *Z, *dR, *dZ;                 // [.][V]
  float *dAqk, *dA, *M1, *dT;              // [.][C]
  float *dQg, *dKtail, *dY, *dEbar;        // [.][K] results of the products
  float *dQ, *dK, *dE, *dG;                // [.][K] per value head; dE becomes db
  float* dSn;                              // dL/dS at the end of each chunk
};

// [SECTION] 1. dO in fp32 and Z = W ⊙ V ---------------------------------------------------------------------------
template <typename T>
__global__ void backward_convert(BackwardWorkspace bw, const T* __restrict__ do_, const T* __restrict__ v,
                                 const T* __restrict__ w, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    bw.dO[i] = do_ ? to_float(do_[i]) : 0.f;  // do_ == nullptr: dL/do = 0
    bw.Z[i] = to_float(w[i]) * to_float(v[i]);
  }
}

// [SECTION] 2. the state VJP: the sequential pass, last chunk first ------------------------------------------------
template <int K, int VS>
constexpr size_t backward_pass_smem_floats() {
  return C * C + 3 * C * (K + 4) + 2 * C * VS + K * VS + K;  // rows of K + 4 floats from version 09 (K + 1 before)
}

template <int K, int VS>
__global__ void __launch_bounds__(kThreads, 1) chunk_backward_state_pass(float* dh0, const float* dht, Workspace ws,
                                                                         BackwardWorkspace bw, const int64_t* cu_seqlens,
                                                                         int64_t T_len, int HV, int V) {
  constexpr int KP = K + 1;
  extern __shared__ float smem[];
  float* s_Aqk = smem;              // [C][C]  A_qk, causal (the workspace holds garbage above the diagonal)
  float* s_kt = s_Aqk + C * C;      // [C][KP] K_tail
  float* s_qg = s_kt + C * KP;      // [C][KP] Q_γ
  float* s_y = s_qg + C * KP;       // [C][KP] Y
  float* s_dO = s_y + C * KP;       // [C][VS]
  float* s_dR = s_dO + C * VS;      // [C][VS]
  float* s_dS = s_dR + C * VS;      // [K][VS] dL/dS, a slice of value columns (columns are independent)
  float* s_gC = s_dS + K * VS;      // [K]     γ_C
  const int tid = threadIdx.x;
  const int col0 = blockIdx.x * VS, hv = blockIdx.y, n = blockIdx.z;
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t state = (int64_t(n) * HV + hv) * K * V;
  for (int i = tid; i < K * VS; i += kThreads) s_dS[i] = dht ? dht[state + int64_t(i / VS) * V + col0 + i % VS] : 0.f;
  const int64_t chunks = (span.length + C - 1) / C;
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t row0 = span.row0 + c * C;
    const int L = int(span.length - c * C < C ? span.length - c * C : C);
    const int64_t slot = chunk_slot(span.row0, n, c);
    __syncthreads();  // s_dS is final for this chunk
    float* dSC = bw.dSn + (slot * HV + hv) * int64_t(K) * V;
    for (int i = tid; i < K * VS; i += kThreads) dSC[int64_t(i / VS) * V + col0 + i % VS] = s_dS[i];
    for (int i = tid; i < C * C; i += kThreads) {
      const int r = i / C, s = i % C;
      s_Aqk[i] = r < L && s <= r ? ws.Aqk[((row0 + r) * HV + hv) * C + s] : 0.f;
    }
    for (int i = tid; i < C * K; i += kThreads) {
      const int r = i / K, d = i % K;
      const int64_t at = ((row0 + r) * HV + hv) * K + d;
      s_kt[r * KP + d] = r < L ? ws.Kt[at] : 0.f;
      s_qg[r * KP + d] = r < L ? ws.Qg[at] : 0.f;
      s_y[r * KP + d] = r < L ? ws.Y[at] : 0.f;
    }
    for (int i = tid; i < C * VS; i += kThreads) {
      const int r = i / VS;
      s_dO[i] = r < L ? bw.dO[((row0 + r) * HV + hv) * V + col0 + i % VS] : 0.f;
    }
    for (int d = tid; d < K; d += kThreads) s_gC[d] = ws.gC[(slot * HV + hv) * K + d];
    __syncthreads();
    constexpr int TM = 4, TN = VS / 16;
    {  // dR = A_qkᵀ dO (Eq. 54) + K_tail dS_C (Eq. 57)
      float acc[TM][TN] = {};
      tile_product<C, VS, TM, TN>(acc, s_Aqk, 1, C, s_dO, VS, C, tid);
      tile_product<C, VS, TM, TN>(acc, s_kt, KP, 1, s_dS, VS, K, tid);
      const int m0 = (tid / (VS / TN)) * TM, n0 = (tid % (VS / TN)) * TN;
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          s_dR[(m0 + i) * VS + n0 + j] = acc[i][j];
          if (m0 + i < L) bw.dR[((row0 + m0 + i) * HV + hv) * V + col0 + n0 + j] = acc[i][j];
        }
    }
    __syncthreads();
    {  // dS_start = Diag(γ_C) dS_C (Eq. 59) + Q_γᵀ dO (Eq. 56) − Yᵀ dR (Eq. 63)
      constexpr int SM = K / 16;
      float acc[SM][TN] = {};
      tile_product<K, VS, SM, TN>(acc, s_qg, 1, KP, s_dO, VS, C, tid);
      tile_product<K, VS, SM, TN>(acc, s_y, 1, KP, s_dR, VS, C, tid, -1.f);
      const int d0 = (tid / (VS / TN)) * SM, c1 = (tid % (VS / TN)) * TN;
#pragma unroll
      for (int i = 0; i < SM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          float& ds = s_dS[(d0 + i) * VS + c1 + j];  // each thread owns its tile: no barrier needed before the write
          ds = s_gC[d0 + i] * ds + acc[i][j];
        }
    }
  }
  __syncthreads();
  for (int i = tid; i < K * VS; i += kThreads) dh0[state + int64_t(i / VS) * V + col0 + i % VS] = s_dS[i];
}

// Row strides (floats) of version 04's tiles. Version 09 (kVec) pads the K-wide rows to K + 4 so their runs are 16-byte
// aligned. Version 14 (kMma) pads every tile for the mma fragments' reads, whose 32 lanes then hit 32 different banks:
// tiles read down their columns as A operands (A_qk, Q_γ, Y) and every B operand (dO, dS, dR) by ≡ 8 mod 32 floats,
// K_tail read along its rows by ≡ 4 mod 32.
template <int K, int VS, bool kVec, bool kMma>
struct BackwardPassLayout {
  static constexpr int AQ = kMma ? C + 8 : C, KPK = kVec || kMma ? K + 4 : K + 1, KPQ = kMma ? K + 8 : KPK;
  static constexpr int VSP = kMma ? VS + 8 : VS;
  static constexpr size_t floats() { return size_t(C) * AQ + C * KPK + 2 * C * KPQ + 2 * C * VSP + K * VSP + K; }
};

// One chunk step of version 14 (below), every tile in shared memory (layout Lay), 16 warps as a 4 × 4 grid. Fragments
// as in mma_tf32 (chunk_tiles.cuh): g = lane / 4, t = lane % 4.
template <int K, int VS, typename Lay, bool kAsync = false>
__device__ __forceinline__ void backward_pass_step_mma(const float* s_Aqk, const float* s_kt, const float* s_qg,
                                                       const float* s_y, const float* s_dO, float* s_dR, float* s_dS,
                                                       const float* s_gC, float* dR_out, int64_t row0, int L, int hv,
                                                       int HV, int V, int col0, int tid) {
  constexpr int AQ = Lay::AQ, KPK = Lay::KPK, KPQ = Lay::KPQ, VSP = Lay::VSP;
  constexpr int NTW = VS / 32, MTS = K / 64;  // a warp's tiles of 8 columns; its 16-row tiles of dS
  const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int wm = (warp % 4) * 16, wk = (warp % 4) * (K / 4), wn = (warp / 4) * (VS / 4);
  {  // dR = A_qkᵀ dO (Eq. 54) + K_tail dS_C (Eq. 57)
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
  if constexpr (kAsync) cp_async_wait<0>();  // version 16: this thread's copies of Q_γ and Y have landed
  __syncthreads();  // dR complete, and every warp done reading dS_C (and, version 16, Q_γ and Y in shared memory)
  {  // dS_start = Diag(γ_C) dS_C (Eq. 59) + Q_γᵀ dO (Eq. 56) − Yᵀ dR (Eq. 63); A(d, r) = X[r][d], down the columns
    float sf[MTS][NTW][4] = {};
    warp_mma_cols(sf, s_qg, KPQ, s_dO, VSP, wk, wn, C);
    warp_mma_cols(sf, s_y, KPQ, s_dR, VSP, wk, wn, C, -1.f);
    // Each warp updates only the part of dS it owns (all reads of dS_C ended at the barrier above).
    decay_add_fragments(sf, s_dS, VSP, s_gC, wk, wn);
  }
}

// Version 04 of stage 2. Version 03's pass took 6.1 ms of 28 at B = 8, T = 4096: one block per SM (the three K-wide
// tiles fill shared memory), 8 warps, and every tile element loaded by a dependent load → store pair. Here 16 warps,
// and each thread issues kBatch independent loads before it stores any (as forward version 05 did for its pass).
// Version 09: the same products with vector shared loads (tile_product_vec: same terms, same order, same bits), the
// K-wide tiles in rows of K + 4 floats so that their runs are 16-byte aligned.
// Version 10 (kPrefetch): Nsight Compute put this kernel at 3.9 ms of a 17.8 ms training step with DRAM 15% busy: a
// chunk step waited on about a dozen global-memory latencies in a row (a batch of A_qk, two of the K-wide tiles, eight
// dependent dO loads, γ_C), 30 µs per step. Now each step first asks L2 for every line the next chunk will read
// (prefetch_l2: about 1000 lines, two per thread), and the dO loads are batched; the arithmetic is unchanged (same bits).
//
// Version 14 (kMma, bf16 storage, VS ≥ 32): the four products on tensor cores (mma.sync m16n8k8, TF32 operands
// rounded to nearest, fp32 accumulation; dS itself stays fp32 in shared memory, and Diag(γ_C) dS_C is applied on CUDA
// cores as before). Session 4 tried this while each chunk step still waited on a dozen DRAM latencies (no gain); since
// version 10 the step's loads hit L2, and by count its CUDA-core tiles (2 × 4 and 4 × 4 per thread: 2-3 shared bytes
// per multiply-add) move about 4.5 MB of shared memory per step — about 20 µs of its 28 µs at 128 bytes per clock. The
// fragments read about a quarter of that. Warps form a 4 × 4 grid: each owns 16 rows × VS/4 columns of dR and
// K/4 rows × VS/4 columns of dS. A_qkᵀ dO skips the depth steps above a warp's rows (A_qk is causal, and those steps
// would add exact zeros). Prediction: pass 3.6 -> 1.5-2 ms; measured (Nsight Compute, B = 8, T = 4096): 2.07 ms.
// Float32 storage keeps the CUDA-core path (its 1e-4 gradient budget; TF32 keeps 10 mantissa bits).
template <int K, int VS, int NT = 512, bool kVec = false, bool kPrefetch = false, bool kMma = false,
          bool kAsync = false>
__global__ void __launch_bounds__(NT, 1) chunk_backward_state_pass04(float* dh0, const float* dht, Workspace ws,
                                                                      BackwardWorkspace bw, const int64_t* cu_seqlens,
                                                                      int64_t T_len, int HV, int V) {
  using Lay = BackwardPassLayout<K, VS, kVec, kMma>;
  constexpr int AQ = Lay::AQ, KPK = Lay::KPK, KPQ = Lay::KPQ, VSP = Lay::VSP, kBatch = 8;
  static_assert(!kMma || (NT == 512 && VS % 32 == 0 && K % 64 == 0), "the mma path's 4 x 4 warp grid");
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
    if (kPrefetch && c > 0) {  // the next chunk (c − 1, full): A_qk, K_tail, Q_γ, Y and dO rows, γ_C, by 128-byte lines
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
    if constexpr (kAsync) {
      // Version 16: dS_C out by float4 stores; the tiles in by 16-byte cp.async copies (no registers, 4 floats per
      // instruction, one index computation per 4 floats). Group 1 holds what dR = A_qkᵀ dO + K_tail dS_C reads, group
      // 2 Q_γ and Y, which only the second product reads: those copies land while the first product runs.
      for (int i = tid; i < K * (VS / 4); i += NT) {
        const int d = i / (VS / 4), c4 = (i % (VS / 4)) * 4;
        *reinterpret_cast<float4*>(dSC + int64_t(d) * V + col0 + c4) =
            *reinterpret_cast<const float4*>(s_dS + d * VSP + c4);
      }
      const int last = L - 1;  // rows past the chunk's end are zero-filled; their source address stays in range
      for (int i = tid; i < C * (C / 4); i += NT) {
        const int r = i / (C / 4), s4 = (i % (C / 4)) * 4;
        float* dst = s_Aqk + r * AQ + s4;
        if (s4 > r || r >= L)  // A_qk's stored rows hold no values above the diagonal: zeros, as version 04 reads them
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
    } else {
      for (int i = tid; i < K * VS; i += NT) dSC[int64_t(i / VS) * V + col0 + i % VS] = s_dS[(i / VS) * VSP + i % VS];
      static_assert((C * C) % (NT * kBatch) == 0 && (C * K) % (NT * kBatch) == 0, "whole batches");
      for (int base = 0; base < C * C; base += NT * kBatch) {
        float a[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int i = base + u * NT + tid, r = i / C, s = i % C;
          a[u] = r < L && s <= r ? ws.Aqk[((row0 + r) * HV + hv) * C + s] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int i = base + u * NT + tid;
          s_Aqk[(i / C) * AQ + i % C] = a[u];
        }
      }
      for (int base = 0; base < C * K; base += NT * kBatch) {
        float kt[kBatch], qg[kBatch], y[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int i = base + u * NT + tid, r = i / K, d = i % K;
          const int64_t at = ((row0 + r) * HV + hv) * K + d;
          kt[u] = r < L ? ws.Kt[at] : 0.f;
          qg[u] = r < L ? ws.Qg[at] : 0.f;
          y[u] = r < L ? ws.Y[at] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int i = base + u * NT + tid, r = i / K, d = i % K;
          s_kt[r * KPK + d] = kt[u], s_qg[r * KPQ + d] = qg[u], s_y[r * KPQ + d] = y[u];
        }
      }
      if constexpr (kPrefetch) {  // all of this thread's dO loads issued before any store
        constexpr int kPer = C * VS / NT;
        static_assert((C * VS) % NT == 0, "whole rounds");
        float o[kPer];
#pragma unroll
        for (int u = 0; u < kPer; ++u) {
          const int i = u * NT + tid, r = i / VS;
          o[u] = r < L ? bw.dO[((row0 + r) * HV + hv) * V + col0 + i % VS] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < kPer; ++u) {
          const int i = u * NT + tid;
          s_dO[(i / VS) * VSP + i % VS] = o[u];
        }
      } else {
        for (int i = tid; i < C * VS; i += NT) {
          const int r = i / VS;
          s_dO[r * VSP + i % VS] = r < L ? bw.dO[((row0 + r) * HV + hv) * V + col0 + i % VS] : 0.f;
        }
      }
      for (int d = tid; d < K; d += NT) s_gC[d] = ws.gC[(slot * HV + hv) * K + d];
      __syncthreads();
    }
    if constexpr (kMma) {
      backward_pass_step_mma<K, VS, Lay, kAsync>(s_Aqk, s_kt, s_qg, s_y, s_dO, s_dR, s_dS, s_gC, bw.dR, row0, L, hv,
                                                 HV, V, col0, tid);
      continue;  // the barrier at the top of the loop ends the step
    }
    constexpr int TM = 2, TN = VS / 16;
    {  // dR = A_qkᵀ dO (Eq. 54) + K_tail dS_C (Eq. 57)
      float acc[TM][TN] = {};
      if constexpr (kVec) {
        tile_product_vec<C, VS, TM, TN, false, false, NT>(acc, s_Aqk, C, s_dO, VS, C, tid);
        tile_product_vec<C, VS, TM, TN, true, false, NT>(acc, s_kt, KPK, s_dS, VS, K, tid);
      } else {
        tile_product<C, VS, TM, TN, false, NT>(acc, s_Aqk, 1, C, s_dO, VS, C, tid);
        tile_product<C, VS, TM, TN, false, NT>(acc, s_kt, KPK, 1, s_dS, VS, K, tid);
      }
      const int m0 = (tid / (VS / TN)) * TM, n0 = (tid % (VS / TN)) * TN;
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          s_dR[(m0 + i) * VS + n0 + j] = acc[i][j];
          if (m0 + i < L) bw.dR[((row0 + m0 + i) * HV + hv) * V + col0 + n0 + j] = acc[i][j];
        }
    }
    if constexpr (kAsync) cp_async_wait<0>();  // version 16: this thread's copies of Q_γ and Y have landed
    __syncthreads();
    {  // dS_start = Diag(γ_C) dS_C (Eq. 59) + Q_γᵀ dO (Eq. 56) − Yᵀ dR (Eq. 63)
      constexpr int SM = K / 32;
      float acc[SM][TN] = {};
      if constexpr (kVec) {
        tile_product_vec<K, VS, SM, TN, false, false, NT>(acc, s_qg, KPQ, s_dO, VS, C, tid);
        tile_product_vec<K, VS, SM, TN, false, false, NT>(acc, s_y, KPQ, s_dR, VS, C, tid, -1.f);
      } else {
        tile_product<K, VS, SM, TN, false, NT>(acc, s_qg, 1, KPQ, s_dO, VS, C, tid);
        tile_product<K, VS, SM, TN, false, NT>(acc, s_y, 1, KPQ, s_dR, VS, C, tid, -1.f);
      }
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

// [SECTION] 3. one batched product per equation ---------------------------------------------------------------------
// A matrix of one chunk of one value head inside a workspace tensor. Element (i, j) is at
//   p + row0·tok + hv·head + slot·slot_stride + i·rs + j·cs,
// and reads as 0 where its token index (i for tok_axis 0, j for tok_axis 1) is past the chunk's last row.
struct View {
  const float* p;
  int64_t tok, head, slot_stride, rs, cs;
  int tok_axis;  // −1: no token axis (a state)
};
// X [rows][HV][ld], as stored (transposed = false) or transposed.
View token_view(const float* p, int64_t HV, int64_t ld, bool transposed) {
  return transposed ? View{p, HV * ld, ld, 0, 1, HV * ld, 1} : View{p, HV * ld, ld, 0, HV * ld, 1, 0};
}
// S [slots][HV][K][V], as stored or transposed.
View state_view(const float* p, int64_t HV, int64_t K, int64_t V, bool transposed) {
  return transposed ? View{p, 0, K * V, HV * K * V, 1, V, -1} : View{p, 0, K * V, HV * K * V, V, 1, -1};
}

enum Mask { kNone = 0, kLower = 1, kStrictlyLower = 2 };

// out (+)= alpha · A B for one chunk (block x / (N/32)), 32 output columns (block x % (N/32)), value head (y) and
// sequence (z): out [C][N] (token rows, ld N), A [C][depth], B [depth][N]; entries outside the mask are written as 0.
// A 64 × 32 tile per block, 2 × 4 per thread, depth in steps of 32 through shared memory.
__global__ void __launch_bounds__(kThreads) chunk_batched_product(float* out, View A, View B, int N, int depth,
                                                                  float alpha, bool accumulate, int mask,
                                                                  const int64_t* cu_seqlens, int64_t T_len, int HV) {
  __shared__ float s_a[C][33], s_b[32][33];
  const int tid = threadIdx.x, tiles = N / 32;
  const int64_t c = blockIdx.x / tiles;
  const int n_tile = (blockIdx.x % tiles) * 32, hv = blockIdx.y, n = blockIdx.z;
  const Span span = sequence_span(cu_seqlens, n, T_len);
  if (c * C >= span.length) return;
  const int L = int(span.length - c * C < C ? span.length - c * C : C);
  const int64_t row0 = span.row0 + c * C, slot = chunk_slot(span.row0, n, c);
  const float* a = A.p + row0 * A.tok + hv * A.head + slot * A.slot_stride;
  const float* b = B.p + row0 * B.tok + hv * B.head + slot * B.slot_stride;
  const int m0 = (tid / 8) * 2, n0 = (tid % 8) * 4;
  float acc[2][4] = {};
  for (int j0 = 0; j0 < depth; j0 += 32) {
    for (int i = tid; i < C * 32; i += kThreads) {
      const int r = i / 32, j = j0 + i % 32;
      const bool in = A.tok_axis == 0 ? r < L : A.tok_axis == 1 ? j < L : true;
      s_a[r][i % 32] = in ? a[r * A.rs + j * A.cs] : 0.f;
    }
    for (int i = tid; i < 32 * 32; i += kThreads) {
      const int j = j0 + i / 32, col = n_tile + i % 32;
      const bool in = B.tok_axis == 0 ? j < L : B.tok_axis == 1 ? col < L : true;
      s_b[i / 32][i % 32] = in ? b[j * B.rs + col * B.cs] : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int j = 0; j < 32; ++j)
#pragma unroll
      for (int x = 0; x < 2; ++x)
#pragma unroll
        for (int y = 0; y < 4; ++y) acc[x][y] += s_a[m0 + x][j] * s_b[j][n0 + y];
    __syncthreads();
  }
#pragma unroll
  for (int x = 0; x < 2; ++x) {
    const int r = m0 + x;
    if (r >= L) continue;
#pragma unroll
    for (int y = 0; y < 4; ++y) {
      const int col = n_tile + n0 + y;
      const bool keep = mask == kNone || (mask == kLower ? col <= r : col < r);
      float* o = out + ((row0 + r) * HV + hv) * int64_t(N) + col;
      *o = keep ? alpha * acc[x][y] + (accumulate ? *o : 0.f) : 0.f;
    }
  }
}

// Version 03 of stage 3. Version 02's products ran at about 8 TFLOP/s (B = 1, T = 4096: 1.77 ms of 4.96): a 2 × 4 tile
// per thread reads 6 shared floats per 8 multiply-adds, and transposed operands were loaded across their stride. Here a
// block computes 64 × BN outputs, a thread 4 × BN/16 of them from one float4 of A and one of B per step (the A tile
// is stored k-major so the 4 rows are adjacent), and each tile is loaded along whichever axis of the operand is
// contiguous in memory. Same arithmetic per output element, in the same order, as version 01.
// Version 06 (kMma, bf16 storage only): the multiply-adds on tensor cores, mma.sync m16n8k8 with TF32 inputs
// (rounded to nearest) and fp32 accumulation; each warp owns a 16 × BN/2 piece of the tile. The float32 mode keeps the
// fp32 CUDA-core path: TF32 keeps 10 mantissa bits, too few for its 1e-4 gradient budget.
// (to_tf32 and mma_tf32 are in chunk_tiles.cuh.)

// Version 11 (kMinBlocks = 3): Nsight Compute showed the ten launches at 4.8 ms of a 17.8 ms training step with DRAM
// 41-55% busy and 16 warps per SM (two blocks of 8 warps, capped by 122 registers a thread), which looked like too few
// loads in flight for a kernel that only streams its operands. Capping the registers at 80 gives three blocks per SM
// (same bits). Measured: occupancy 24% -> 36%, the ten products 4.84 -> 4.80 ms, DRAM still 42-60% busy — they are
// not bound by the loads in flight either; kept, as it costs nothing.
// Version 13 (kDual): two products that share their B operand in one launch — out = alpha · A B and
// out2 = alpha2 · A2 B (A2 shaped as A, no mask, no accumulation) — so B is read once. dQ_γ = dO S_nᵀ and
// dY = −dR S_nᵀ (Eq. 55, 62) each read all the chunk-start states S_n (0.81 GB at B = 8, T = 4096) in about 0.78 ms.
// Each output gets the same terms in the same order as from two launches (same bits). Prediction: −0.4 to −0.5 ms;
// measured (Nsight Compute, B = 8, T = 4096): 1.57 -> 1.26 ms.
// Version 15 (kChain, staged tiles): a sum of two products, out = alpha · (A B + Ac Bc), in one accumulation — the
// depth runs through A B (depth) and then Ac Bc (depth_c; Ac, Bc strided as A, B). dA = dU Zᵀ + dY Ēᵀ (Eq. 64-65)
// took two launches, the second reading back and rewriting the first's result (0.13 GB each way at B = 8,
// T = 4096). New bits: one rounding of the sum instead of two. Prediction: −0.1 to −0.15 ms. Measured (Nsight
// Compute, B = 8): the two launches 0.41 + 0.47 ms, the one 0.75 ms.
template <int BN, bool kStaged = false, bool kMma = false, int kMinBlocks = 2, bool kDual = false, bool kChain = false>
__global__ void __launch_bounds__(kThreads, kMinBlocks) chunk_batched_product03(float* out, View A, View B, int N,
                                                                             int depth, float alpha, bool accumulate,
                                                                             int mask, const int64_t* cu_seqlens,
                                                                             int64_t T_len, int HV, float* out2 = nullptr,
                                                                             View A2 = View{}, float alpha2 = 0.f,
                                                                             View Ac = View{}, View Bc = View{},
                                                                             int depth_c = 0) {
  static_assert(!kChain || (kStaged && !kDual), "a chained product is staged and single");
  constexpr int BK = 32, TN = BN / 16, kOps = kDual ? 2 : 1;
  // Rows padded by 4 floats keep the float4 reads aligned; by 8 for the mma fragments, whose 32 lanes then read
  // 32 different banks (row stride ≡ 8 mod 32).
  constexpr int PAD = kMma ? 8 : 4;
  __shared__ __align__(16) float s_a[kOps][BK][C + PAD];  // s_a[o][j][m] = A_o(m, j0 + j)
  __shared__ __align__(16) float s_b[BK][BN + PAD];       // s_b[j][n] = B(j0 + j, n_tile + n)
  const int tid = threadIdx.x, tiles = N / BN;
  const int64_t c = blockIdx.x / tiles;
  const int n_tile = (blockIdx.x % tiles) * BN, hv = blockIdx.y, n = blockIdx.z;
  const Span span = sequence_span(cu_seqlens, n, T_len);
  if (c * C >= span.length) return;
  const int L = int(span.length - c * C < C ? span.length - c * C : C);
  const int64_t row0 = span.row0 + c * C, slot = chunk_slot(span.row0, n, c);
  const float* as[kOps];
  as[0] = A.p + row0 * A.tok + hv * A.head + slot * A.slot_stride;
  if constexpr (kDual) as[1] = A2.p + row0 * A2.tok + hv * A2.head + slot * A2.slot_stride;  // A's strides
  const float* b = B.p + row0 * B.tok + hv * B.head + slot * B.slot_stride;
  const float* a_chain = kChain ? Ac.p + row0 * Ac.tok + hv * Ac.head + slot * Ac.slot_stride : nullptr;
  const float* b_chain = kChain ? Bc.p + row0 * Bc.tok + hv * Bc.head + slot * Bc.slot_stride : nullptr;
  const int depth_all = depth + (kChain ? depth_c : 0);
  const bool a_rows_adjacent = A.rs == 1, b_cols_adjacent = B.cs == 1;
  const int m0 = (tid / 16) * 4, n0 = (tid % 16) * TN;
  float acc[kOps][4][TN] = {};
  constexpr int NT8 = BN / 16;  // mma: n-tiles of 8 columns per warp
  const int warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int wm = (warp % 4) * 16, wn = (warp / 4) * (BN / 2);
  float cf[kOps][NT8][4] = {};
  // Version 04 (kStaged): each thread loads its share of the next depth step into registers while the current one is
  // multiplied, all loads independent, then stores them after the barrier.
  constexpr int A_PER = C * BK / kThreads, B_PER = BK * BN / kThreads;
  float ra[kOps][A_PER], rb[B_PER];
  // Element u of this thread's share: i = u·kThreads + tid, so along the contiguous axis the index is fixed and along
  // the other it advances by kThreads / (contiguous extent) per u — one base pointer and one stride per operand.
  const int a_r0 = a_rows_adjacent ? tid % C : tid / BK, a_j0 = a_rows_adjacent ? tid / C : tid % BK;
  const int a_dr = a_rows_adjacent ? 0 : kThreads / BK, a_dj = a_rows_adjacent ? kThreads / C : 0;
  const int b_c0 = b_cols_adjacent ? tid % BN : tid / BK, b_j0 = b_cols_adjacent ? tid / BN : tid % BK;
  const int b_dc = b_cols_adjacent ? 0 : kThreads / BK, b_dj = b_cols_adjacent ? kThreads / BN : 0;
  auto a_at = [&](int u, int& r, int& j) { r = a_r0 + u * a_dr, j = a_j0 + u * a_dj; };
  auto b_at = [&](int u, int& col, int& j) { col = b_c0 + u * b_dc, j = b_j0 + u * b_dj; };
  auto load = [&](int jj) {
    const bool second = kChain && jj >= depth;  // version 15: past A B's depth, Ac Bc's
    const int j0 = second ? jj - depth : jj;
    const View& VA = second ? Ac : A;
    const View& VB = second ? Bc : B;
    const int64_t sa = a_dr * VA.rs + a_dj * VA.cs;
#pragma unroll
    for (int o = 0; o < kOps; ++o) {
      const float* pa = (second ? a_chain : as[o]) + a_r0 * VA.rs + (j0 + a_j0) * VA.cs;
#pragma unroll
      for (int u = 0; u < A_PER; ++u) {
        const int r = a_r0 + u * a_dr, j = j0 + a_j0 + u * a_dj;
        const bool in = A.tok_axis == 0 ? r < L : A.tok_axis == 1 ? j < L : true;
        ra[o][u] = in ? pa[u * sa] : 0.f;
      }
    }
    const float* pb = (second ? b_chain : b) + (j0 + b_j0) * VB.rs + (n_tile + b_c0) * VB.cs;
    const int64_t sb = b_dj * VB.rs + b_dc * VB.cs;
#pragma unroll
    for (int u = 0; u < B_PER; ++u) {
      const int col = n_tile + b_c0 + u * b_dc, j = j0 + b_j0 + u * b_dj;
      const bool in = B.tok_axis == 0 ? j < L : B.tok_axis == 1 ? col < L : true;
      rb[u] = in ? pb[u * sb] : 0.f;
    }
  };
  if (kStaged) load(0);
  for (int j0 = 0; j0 < depth_all; j0 += BK) {
    if constexpr (kStaged) {
#pragma unroll
      for (int o = 0; o < kOps; ++o)
#pragma unroll
        for (int u = 0; u < A_PER; ++u) {
          int r, j;
          a_at(u, r, j);
          s_a[o][j][r] = ra[o][u];
        }
#pragma unroll
      for (int u = 0; u < B_PER; ++u) {
        int col, j;
        b_at(u, col, j);
        s_b[j][col] = rb[u];
      }
      __syncthreads();
      if (j0 + BK < depth_all) load(j0 + BK);
    } else {
      for (int o = 0; o < kOps; ++o)
        for (int i = tid; i < C * BK; i += kThreads) {
          const int r = a_rows_adjacent ? i % C : i / BK, j = a_rows_adjacent ? i / C : i % BK;
          const bool in = A.tok_axis == 0 ? r < L : A.tok_axis == 1 ? j0 + j < L : true;
          s_a[o][j][r] = in ? as[o][r * A.rs + (j0 + j) * A.cs] : 0.f;
        }
      for (int i = tid; i < BK * BN; i += kThreads) {
        const int col = b_cols_adjacent ? i % BN : i / BK, j = b_cols_adjacent ? i / BN : i % BK;
        const bool in = B.tok_axis == 0 ? j0 + j < L : B.tok_axis == 1 ? n_tile + col < L : true;
        s_b[j][col] = in ? b[(j0 + j) * B.rs + (n_tile + col) * B.cs] : 0.f;
      }
      __syncthreads();
    }
    if constexpr (kMma) {
#pragma unroll
      for (int k0 = 0; k0 < BK; k0 += 8) {
        uint32_t af[kOps][4];
#pragma unroll
        for (int o = 0; o < kOps; ++o) {
          af[o][0] = to_tf32(s_a[o][k0 + t4][wm + g]), af[o][1] = to_tf32(s_a[o][k0 + t4][wm + g + 8]);
          af[o][2] = to_tf32(s_a[o][k0 + t4 + 4][wm + g]), af[o][3] = to_tf32(s_a[o][k0 + t4 + 4][wm + g + 8]);
        }
#pragma unroll
        for (int nt = 0; nt < NT8; ++nt) {
          const uint32_t b0 = to_tf32(s_b[k0 + t4][wn + nt * 8 + g]), b1 = to_tf32(s_b[k0 + t4 + 4][wn + nt * 8 + g]);
#pragma unroll
          for (int o = 0; o < kOps; ++o) mma_tf32(cf[o][nt], af[o], b0, b1);
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < BK; ++j) {
        float bn[TN];
        if constexpr (TN == 4) {
          const float4 bv = *reinterpret_cast<const float4*>(&s_b[j][n0]);
          bn[0] = bv.x, bn[1] = bv.y, bn[2] = bv.z, bn[3] = bv.w;
        } else {
          const float2 bv = *reinterpret_cast<const float2*>(&s_b[j][n0]);
          bn[0] = bv.x, bn[1] = bv.y;
        }
#pragma unroll
        for (int o = 0; o < kOps; ++o) {
          const float4 av = *reinterpret_cast<const float4*>(&s_a[o][j][m0]);
          const float am[4] = {av.x, av.y, av.z, av.w};
#pragma unroll
          for (int x = 0; x < 4; ++x)
#pragma unroll
            for (int y = 0; y < TN; ++y) acc[o][x][y] += am[x] * bn[y];
        }
      }
    }
    __syncthreads();
  }
  auto write = [&](int o, int r, int col, float value) {
    if (r >= L) return;
    if (o == 1) {  // the second product: no mask, no accumulation
      out2[((row0 + r) * HV + hv) * int64_t(N) + col] = alpha2 * value;
      return;
    }
    const bool keep = mask == kNone || (mask == kLower ? col <= r : col < r);
    float* p = out + ((row0 + r) * HV + hv) * int64_t(N) + col;
    *p = keep ? alpha * value + (accumulate ? *p : 0.f) : 0.f;
  };
#pragma unroll
  for (int o = 0; o < kOps; ++o) {
    if constexpr (kMma) {
#pragma unroll
      for (int nt = 0; nt < NT8; ++nt) {  // c0, c1: row g, columns 2·t4 + {0, 1}; c2, c3: row g + 8
        const int col = n_tile + wn + nt * 8 + 2 * t4;
        write(o, wm + g, col, cf[o][nt][0]), write(o, wm + g, col + 1, cf[o][nt][1]);
        write(o, wm + g + 8, col, cf[o][nt][2]), write(o, wm + g + 8, col + 1, cf[o][nt][3]);
      }
    } else {
#pragma unroll
      for (int x = 0; x < 4; ++x)
#pragma unroll
        for (int y = 0; y < TN; ++y) write(o, m0 + x, n_tile + n0 + y, acc[o][x][y]);
    }
  }
}

// [SECTION] 4. the intra-chunk VJP through T and A_qk (Eq. 67-70 entrywise, as intra_chunk_scores_backward) ---------
// One thread per key channel d: every term is a per-channel product, so the channels are independent. With
// Γ_rs = exp(Σ_{i=s+1}^{r} g_i) (accumulated from s upward) and W_rs = Γ_rs ⊙ (dA_qk,rs q̃_r + dT_rs e_r):
//   dk_s += Σ_r W_rs;  dq_r += dA_qk,rs Γ_rs k_s;  de_r += dT_rs Γ_rs k_s;  dg_i += Σ_{s<i≤r} W_rs k_s.
template <int K>
constexpr size_t intra_smem_floats() {
  return 2 * C * C + 4 * C * K;
}

template <int K, typename T>
__global__ void __launch_bounds__(K) chunk_intra_backward(BackwardWorkspace bw, const T* __restrict__ q,
                                                          const T* __restrict__ k, const float* __restrict__ g,
                                                          const T* __restrict__ b, const int64_t* cu_seqlens,
                                                          int64_t T_len, int H, int HV, float scale) {
  extern __shared__ float smem[];
  float* s_dAqk = smem;           // [C][C]
  float* s_dT = s_dAqk + C * C;   // [C][C]
  float* s_X = s_dT + C * C;      // [C][K] X_r = W_rs ⊙ k_s for the current s
  float* s_dq = s_X + C * K;      // [C][K]
  float* s_de = s_dq + C * K;     // [C][K]
  float* s_dg = s_de + C * K;     // [C][K]
  const int d = threadIdx.x, hv = blockIdx.y, n = blockIdx.z, h = hv / (HV / H);
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t c0 = int64_t(blockIdx.x) * C;
  if (c0 >= span.length) return;
  const int L = int(span.length - c0 < C ? span.length - c0 : C);
  const int64_t row0 = span.row0 + c0;
  for (int i = d; i < C * C; i += K) {
    const int r = i / C;
    s_dAqk[i] = r < L ? bw.dAqk[((row0 + r) * HV + hv) * C + i % C] : 0.f;
    s_dT[i] = r < L ? bw.dT[((row0 + r) * HV + hv) * C + i % C] : 0.f;
  }
  for (int r = 0; r < C; ++r) s_dq[r * K + d] = s_de[r * K + d] = s_dg[r * K + d] = 0.f;
  __syncthreads();
  auto at = [&](int r) { return ((row0 + r) * H + h) * K + d; };  // key-side inputs [rows][H][K]
  for (int s = 0; s < L; ++s) {
    const float ks = to_float(k[at(s)]);
    float segment = 0, dk = 0;
    for (int r = s; r < L; ++r) {
      if (r > s) segment += g[at(r)];
      const float decay = expf(segment);  // Γ_rs
      const float daqk = s_dAqk[r * C + s], dt = r > s ? s_dT[r * C + s] : 0.f;
      const float qr = scale * to_float(q[at(r)]), er = to_float(b[at(r)]) * to_float(k[at(r)]);
      const float wrs = (daqk * qr + dt * er) * decay;
      dk += wrs;
      s_dq[r * K + d] += daqk * decay * ks;
      s_de[r * K + d] += dt * decay * ks;
      s_X[r * K + d] = wrs * ks;
    }
    bw.dK[((row0 + s) * HV + hv) * K + d] = dk;
    float suffix = 0;
    for (int i = L - 1; i > s; --i) {
      suffix += s_X[i * K + d];
      s_dg[i * K + d] += suffix;
    }
  }
  for (int r = 0; r < L; ++r) {
    const int64_t o = ((row0 + r) * HV + hv) * K + d;
    bw.dQ[o] = s_dq[r * K + d];
    bw.dE[o] = s_de[r * K + d];
    bw.dG[o] = s_dg[r * K + d];
  }
}

// Version 02 of stage 4: the exact sub-chunk factorisation of the forward (chunk_tiles.cuh 2b-2c) applied to the VJP.
// Version 01 walked all 2080 pairs (s ≤ r) of a chunk sequentially in one thread per channel, with 4 warps per SM:
// latency-bound (3.35 ms of 7.2 at B = 1, T = 4096). For r in sub-chunk I and s in an earlier sub-chunk J,
// Γ_rs = c_r · mid(J, I) · a_s (c_r: decay from the start of I to r; a_s: from s to the end of J, s excluded; mid: the
// whole sub-chunks between; all exp of direct sums ≤ 0, never a difference). Work is split into tasks of one
// (sub-chunk, channel), each a short sequential walk in registers:
//   1. diagonal blocks (I = J): version 01's pairwise walk inside the sub-chunk (136 pairs instead of 2080);
//   2. the factors c, a, the sub-chunk sums and mid(J, I);
//   3. rows of the off-diagonal blocks (task (I, d)): dq_r, de_r += c_r Σ_J mid(J,I) Σ_{s∈J} dA_qk,rs (or dT_rs) a_s k_s;
//      dg_i for i in I collects the pairs (r ≥ i in I, s in J < I): a suffix sum over I of ρ_r = q̃_r dq_r + e_r de_r
//      (the off-diagonal parts), each ρ_r a sum of the pair terms P_rs themselves;
//   4. columns (task (J, d)): dk_s += a_s Σ_I mid(J,I) Σ_{r∈I} (dA_qk,rs q̃_r + dT_rs e_r) c_r; dg_i for i in J collects
//      the pairs (s < i in J, r in I > J): a strict prefix sum over J of κ_s = k_s dk_s;
//   5. dg_i for i in a sub-chunk M strictly between J and I collects every pair of the block: the block totals of step 3.
// Every pair term is summed directly (no difference of sums), so a g = −inf still gives exact zeros.
template <int K, int KP = K + 1>
constexpr size_t intra02_smem_floats() {
  return 5 * C * KP + 2 * C * C + kNumSub * K + 2 * kNumSub * kNumSub * K;
}

//
// Version 08 (same steps, same shared memory): in step 1 the decay of a pair is a running product of the factors
// exp(g_r), each computed once per (row, channel) — 15 exps per task instead of 136 (a product of factors ≤ 1, as the
// forward's diagonal blocks; exactly 0 after a g = −inf; unrolling the column loop too spilled registers); step 3 walks the
// earlier sub-chunks J outermost, so k_s a_s is formed once per task and column instead of once per row, and reads
// dA_qk, dT four columns at a time (float4 broadcasts); step 4 walks the rows r outermost and forms q̃_r c_r, e_r c_r
// once per row, reading four columns of dA_qk and dT at a time, instead of five loads per (r, s) term.
// Version 17 (kV17): the loads 16 bytes at a time — q, k, b, g 8 channels per load and 4 per shared store (rows of
// K + 4 floats: every step reads along a row, lanes on consecutive channels, so no padding against column reads is
// needed), dA_qk and dT as float4. The stall profile of version 16 put an eighth of the kernel in its 4-byte loads and
// their index arithmetic. Same values: same bits.
// Version 19 (kV19, with kV08): steps 3-5 add to dq, de, dg, dk in global memory (+=), and each of those loads came
// after the thread's previous store, which the compiler must assume it aliases: 48 round trips to memory one after
// another per task in step 3, 32 in step 4, 16 in step 5 (PTX of 17), with every warp of the block in the same phase.
// Now each task loads the old values of its 16 rows before its sums (their latency under the arithmetic), and step 5
// (the sub-chunks between J and I) is added by step 4's task for the same rows after its own term, as step 5 added it
// after step 4: the same additions in the same order, same bits; one phase and a barrier fewer.
template <int K, typename T, int NT = 512, bool kV08 = false, bool kV17 = false, bool kV19 = false>
__global__ void __launch_bounds__(NT, 1) chunk_intra_backward02(BackwardWorkspace bw, const T* __restrict__ q,
                                                                 const T* __restrict__ k, const float* __restrict__ g,
                                                                 const T* __restrict__ b, const int64_t* cu_seqlens,
                                                                 int64_t T_len, int H, int HV, float scale) {
  constexpr int KP = kV17 ? K + 4 : K + 1, S = kSub;
  static_assert(kV08 || !kV19, "version 19 changes version 08's steps 3-5");
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
  if constexpr (kV17) {  // rows ≥ L: zeros (and g = 0), so their pair terms vanish
    constexpr int kPerC = C * C / 4 / NT;
    static_assert((C * C / 4) % NT == 0, "whole rounds");
    ChunkInputs8<K, NT> tiles;
    float da[kPerC][4], dt[kPerC][4];
    tiles.load(q, k, b, g, row0, H, h, L, tid);
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
  } else {
    for (int i = tid; i < C * K; i += NT) {  // rows ≥ L: zeros (and g = 0), so their pair terms vanish
      const int r = i / K, d = i % K;
      const int64_t at = ((row0 + r) * H + h) * K + d;
      const bool in = r < L;
      const float kv = in ? to_float(k[at]) : 0.f;
      s_q[r * KP + d] = in ? scale * to_float(q[at]) : 0.f;
      s_k[r * KP + d] = kv;
      s_e[r * KP + d] = in ? to_float(b[at]) * kv : 0.f;
      s_c[r * KP + d] = in ? g[at] : 0.f;
    }
    for (int i = tid; i < C * C; i += NT) {
      const int r = i / C;
      s_dAqk[i] = r < L ? bw.dAqk[((row0 + r) * HV + hv) * C + i % C] : 0.f;
      s_dT[i] = r < L ? bw.dT[((row0 + r) * HV + hv) * C + i % C] : 0.f;
    }
  }
  __syncthreads();
  auto out = [&](int r, int d) { return ((row0 + r) * HV + hv) * K + d; };
  // 1. Diagonal blocks, pairwise (as version 01), written (=) to dq, de, dk, dg.
  for (int task = tid; task < kNumSub * K; task += NT) {
    const int M = task / K, d = task % K, o = M * S;
    float dq[S] = {}, de[S] = {}, dg[S] = {};
    float* ex = s_a + o * KP + d;  // version 08: exp(g_r) of the task's rows, in s_a until step 2 (this thread only)
    if (kV08) {
#pragma unroll
      for (int r = 1; r < S; ++r) ex[r * KP] = expf(s_c[(o + r) * KP + d]);
    }
    for (int s = 0; s < S; ++s) {
      const float ks = s_k[(o + s) * KP + d];
      float segment = 0, decay = 1.f, dk = 0, X[S] = {};
#pragma unroll
      for (int r = 0; r < S; ++r) {
        if (r < s) continue;
        if (kV08) {
          if (r > s) decay *= ex[r * KP];  // Γ_rs = Π_{s<i≤r} exp(g_i)
        } else {
          if (r > s) segment += s_c[(o + r) * KP + d];
          decay = expf(segment);  // version 02: Γ_rs = exp(Σ_{s<i≤r} g_i)
        }
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
  // 3. Rows of the off-diagonal blocks (I ≥ 1), walked upward from the last row for the suffix sum of dg.
  if (kV08)
    for (int task = tid; task < (kNumSub - 1) * K; task += NT) {
      const int I = 1 + task / K, d = task % K, o = I * S;
      float dq[S] = {}, de[S] = {}, tot[kNumSub - 1] = {};
      float old_q[S], old_e[S], old_g[S];  // version 19: the values step 1 wrote, loaded before the sums
      if constexpr (kV19) {
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
          if constexpr (kV19) {
            const int64_t x = out(o + r, d);
            bw.dQ[x] = old_q[r] + dqr, bw.dE[x] = old_e[r] + der, bw.dG[x] = old_g[r] + suffix;
          } else {
            bw.dQ[out(o + r, d)] += dqr;
            bw.dE[out(o + r, d)] += der;
            bw.dG[out(o + r, d)] += suffix;
          }
        }
      }
#pragma unroll
      for (int J = 0; J < kNumSub - 1; ++J)
        if (J < I) s_tot[(J * kNumSub + I) * K + d] = tot[J];
    }
  else
  for (int task = tid; task < (kNumSub - 1) * K; task += NT) {
    const int I = 1 + task / K, d = task % K, o = I * S;
    float tot[kNumSub - 1] = {}, suffix = 0;
    for (int r = o + S - 1; r >= o; --r) {
      float dq = 0, de = 0;
#pragma unroll
      for (int J = 0; J < kNumSub - 1; ++J) {
        if (J >= I) continue;
        float Dq = 0, De = 0;
#pragma unroll
        for (int s = J * S; s < (J + 1) * S; ++s) {
          const float ka = s_k[s * KP + d] * s_a[s * KP + d];
          Dq += s_dAqk[r * C + s] * ka;
          De += s_dT[r * C + s] * ka;
        }
        const float m = s_mid[(J * kNumSub + I) * K + d];
        dq += m * Dq;
        de += m * De;
        tot[J] += m * s_c[r * KP + d] * (s_q[r * KP + d] * Dq + s_e[r * KP + d] * De);
      }
      dq *= s_c[r * KP + d];
      de *= s_c[r * KP + d];
      suffix += s_q[r * KP + d] * dq + s_e[r * KP + d] * de;  // ρ_r
      if (r < L) {
        bw.dQ[out(r, d)] += dq;
        bw.dE[out(r, d)] += de;
        bw.dG[out(r, d)] += suffix;
      }
    }
#pragma unroll
    for (int J = 0; J < kNumSub - 1; ++J)
      if (J < I) s_tot[(J * kNumSub + I) * K + d] = tot[J];
  }
  __syncthreads();
  // 4. Columns of the off-diagonal blocks (J ≤ 2), walked downward... from the first row for the strict prefix sum.
  if (kV08)
    for (int task = tid; task < (kNumSub - 1) * K; task += NT) {
      const int J = task / K, d = task % K, o = J * S;
      float dk[S] = {};
      float old_g[S], old_k[S], between = 0;  // version 19: the values steps 1 and 3 wrote; step 5's term
      if constexpr (kV19) {
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
          if constexpr (kV19) {
            const int64_t x = out(o + s, d);
            float dg = old_g[s] + prefix;
            if (J >= 1) dg += between;  // step 5, after step 4's term as before
            bw.dG[x] = dg, bw.dK[x] = old_k[s] + dks;
          } else {
            bw.dG[out(o + s, d)] += prefix;
            bw.dK[out(o + s, d)] += dks;
          }
        }
        prefix += s_k[(o + s) * KP + d] * dks;  // κ_s
      }
    }
  else
  for (int task = tid; task < (kNumSub - 1) * K; task += NT) {
    const int J = task / K, d = task % K, o = J * S;
    float prefix = 0;
    for (int s = o; s < o + S; ++s) {
      float dk = 0;
#pragma unroll
      for (int I = 1; I < kNumSub; ++I) {
        if (I <= J) continue;
        float Dk = 0;
#pragma unroll
        for (int r = I * S; r < (I + 1) * S; ++r)
          Dk += (s_dAqk[r * C + s] * s_q[r * KP + d] + s_dT[r * C + s] * s_e[r * KP + d]) * s_c[r * KP + d];
        dk += s_mid[(J * kNumSub + I) * K + d] * Dk;
      }
      dk *= s_a[s * KP + d];
      if (s < L) {
        bw.dG[out(s, d)] += prefix;
        bw.dK[out(s, d)] += dk;
      }
      prefix += s_k[s * KP + d] * dk;  // κ_s
    }
  }
  if constexpr (kV19) return;  // step 5 was added in step 4
  __syncthreads();
  // 5. Sub-chunks strictly between J and I: every pair of block (I, J) spans them.
  for (int task = tid; task < 2 * K; task += NT) {
    const int M = 1 + task / K, d = task % K;
    float between = 0;
    for (int J = 0; J < M; ++J)
      for (int I = M + 1; I < kNumSub; ++I) between += s_tot[(J * kNumSub + I) * K + d];
    for (int r = M * S; r < (M + 1) * S && r < L; ++r) bw.dG[out(r, d)] += between;
  }
}

// [SECTION] 5. tail keys, elementwise gates, reverse cumsum of dg (Eq. 71-76, 80-82), dv and dw (Eq. 73) -----------
// One thread per key channel d (as the reference's row loops, per channel), then the value side.
template <int K, typename T>
__global__ void __launch_bounds__(K) chunk_gates_backward(T* dv, T* dw, Workspace ws, BackwardWorkspace bw,
                                                          const T* __restrict__ k, const float* __restrict__ g,
                                                          const T* __restrict__ b, const T* __restrict__ v,
                                                          const T* __restrict__ w, const int64_t* cu_seqlens,
                                                          int64_t T_len, int H, int HV, int V) {
  const int d = threadIdx.x, hv = blockIdx.y, n = blockIdx.z, h = hv / (HV / H);
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t c = blockIdx.x, c0 = c * C;
  if (c0 >= span.length) return;
  const int L = int(span.length - c0 < C ? span.length - c0 : C);
  const int64_t row0 = span.row0 + c0, slot = chunk_slot(span.row0, n, c);
  auto in = [&](int r) { return ((row0 + r) * H + h) * K + d; };    // inputs [rows][H][K]
  auto ws_at = [&](int r) { return ((row0 + r) * HV + hv) * K + d; };  // workspace [rows][HV][K]
  // B.3 tail keys (Eq. 71-72): dg_i += Σ_{r<i} dK_tail,r ⊙ K_tail,r;  dk_r += dK_tail,r ⊙ exp(Σ_{i>r} g_i).
  float prefix = 0;
  for (int i = 0; i < L; ++i) {
    bw.dG[ws_at(i)] += prefix;
    prefix += bw.dKtail[ws_at(i)] * ws.Kt[ws_at(i)];
  }
  float suffix = 0;
  for (int i = L - 1; i >= 0; --i) {
    bw.dK[ws_at(i)] += bw.dKtail[ws_at(i)] * expf(suffix);
    suffix += g[in(i)];
  }
  // B.4 (Eq. 73-76, 80-81), γ_r = exp(Σ_{i≤r} g_i) from a prefix sum; dG_r (dL/dG_r, G_r = Σ_{i≤r} g_i) replaces
  // dQ_γ in the workspace until the reverse cumulative sum.
  float run = 0, gamma = 1;
  for (int r = 0; r < L; ++r) {
    run += g[in(r)];
    gamma = expf(run);
    const int64_t o = ws_at(r);
    const float dqg = bw.dQg[o], debar = bw.dEbar[o];
    const float de = bw.dE[o] + debar * gamma;                        // Eq. 74-75 via E = B ⊙ K
    bw.dQ[o] += dqg * gamma;                                           // Eq. 80
    bw.dQg[o] = debar * ws.Ebar[o] + dqg * ws.Qg[o];                   // Eq. 76, 81 (· γ)
    bw.dE[o] = de * to_float(k[in(r)]);                                // db, Eq. 74
    bw.dK[o] += de * to_float(b[in(r)]);                               // Eq. 75
  }
  // Eq. 60: dG_{L−1} += rowsum(dS_C ⊙ S_n) ⊙ γ_L.
  {
    const float* S = ws.Sn + (slot * HV + hv) * int64_t(K) * V + int64_t(d) * V;
    const float* dS = bw.dSn + (slot * HV + hv) * int64_t(K) * V + int64_t(d) * V;
    float sum = 0;
    for (int j = 0; j < V; ++j) sum += dS[j] * S[j];
    bw.dQg[ws_at(L - 1)] += sum * gamma;
  }
  // Eq. 82: dg_i = Σ_{r≥i} dG_r.
  suffix = 0;
  for (int i = L - 1; i >= 0; --i) {
    suffix += bw.dQg[ws_at(i)];
    bw.dG[ws_at(i)] += suffix;
  }
  // Eq. 73: dw = dZ ⊙ v, dv = dZ ⊙ w.
  for (int i = d; i < L * V; i += K) {
    const int64_t o = ((row0 + i / V) * HV + hv) * V + i % V;
    const float dz = bw.dZ[o];
    dw[o] = from_float<T>(dz * to_float(v[o]));
    dv[o] = from_float<T>(dz * to_float(w[o]));
  }
}

// Where stage 5 writes the key-side gradients when every key head has one value head (HV = H): straight into the
// outputs, in their dtype (dq scaled), and stage 6 is skipped (version 07). dq == nullptr: into the workspace.
struct HeadOutputs {
  void *dq = nullptr, *dk = nullptr, *db = nullptr;
  float* dg = nullptr;
  float scale = 1;
};

// Version 05 of stage 5. Version 04's kernel (one thread per channel walking all 64 rows, every step a dependent
// global read-modify-write) took 3.6 ms of 17 at B = 8, T = 4096. Here a task is one (sub-chunk, channel): the decays
// come from the sub-chunk factorisation (γ_r = pre(I)·c_r, exp(Σ_{i>r} g_i) = suf(I)·a_r, direct sums as everywhere),
// the 16 rows of a task are walked with all loads of a row independent, and the two scans of dg over the chunk
// (the prefix of the tail-key terms, Eq. 71-72, and the reverse cumulative sum of dG, Eq. 82) are done in two levels:
// sub-chunk totals first, then each task's rows starting from the totals of the sub-chunks before or after it.
// Version 12 (kBatchedRowsum): Nsight Compute showed this kernel reading 4.85 GB in 3.2 ms (DRAM 55% busy), a fifth of
// it the row sums of dS_C ⊙ S_n (two 64 KB states per chunk), which a warp read channel by channel — eight rounds of
// four dependent-free loads each, every round waiting on memory. Now each lane issues all its loads of both states
// (8 channels × 4 columns × 2) before the first multiply-add; the sums run in the same order (same bits).
// Version 18 (kV18): the loads that each followed a store, and so waited on memory one at a time. The compiler cannot
// move a load above a store through another pointer (they may alias as far as it knows), and the PTX of 12 showed it:
// per row of a task, dQ and dK loaded after the previous row's stores (16 round trips), per row of the dg phase one dG
// load after the previous row's store (16 more), per element of the dv, dw phase three loads after two stores (16
// more) — about 50 of the kernel's ~60 waits on memory, with 16 warps per SM. Now dQ and dK join each row group's
// batch, the 16 dG loads are issued before the first dg store, and dv, dw go 8 elements per 16-byte access (vec8: V a
// multiple of 8 and every pointer 16-byte aligned; else element by element as before), a thread's two groups loaded
// before either is stored. The arithmetic is the same, term for term: same bits (tested).
template <int K, typename T, int NT = kNumSub * K, bool kBatchedRowsum = false, bool kV18 = false>
__global__ void __launch_bounds__(NT, 1) chunk_gates_backward05(T* dv, T* dw, Workspace ws, BackwardWorkspace bw,
                                                                 const T* __restrict__ k, const float* __restrict__ g,
                                                                 const T* __restrict__ b, const T* __restrict__ v,
                                                                 const T* __restrict__ w, const int64_t* cu_seqlens,
                                                                 int64_t T_len, int H, int HV, int V, HeadOutputs outputs,
                                                                 bool vec8) {
  constexpr int S = kSub;
  __shared__ float s_bs[kNumSub][K];                 // sub-chunk sums of g
  __shared__ float s_rowsum[K];                      // Σ_j dS_C ⊙ S_n (Eq. 60)
  __shared__ float s_tot_gc[kNumSub][K], s_tot_tt[kNumSub][K];  // sub-chunk totals of dG_r and of the tail terms
  const int tid = threadIdx.x, hv = blockIdx.y, n = blockIdx.z, h = hv / (HV / H);
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t c = blockIdx.x, c0 = c * C;
  if (c0 >= span.length) return;
  const int L = int(span.length - c0 < C ? span.length - c0 : C);
  const int64_t row0 = span.row0 + c0, slot = chunk_slot(span.row0, n, c);
  auto in = [&](int r, int d) { return ((row0 + r) * H + h) * K + d; };
  auto at = [&](int r, int d) { return ((row0 + r) * HV + hv) * K + d; };
  // Sub-chunk sums of g, and the row sums of dS_C ⊙ S_n (a warp per channel, lanes along the row).
  for (int task = tid; task < kNumSub * K; task += NT) {
    const int M = task / K, d = task % K;
    float run = 0;
#pragma unroll
    for (int r = M * S; r < (M + 1) * S; ++r) run += r < L ? g[in(r, d)] : 0.f;
    s_bs[M][d] = run;
  }
  {
    const int warp = tid / 32, lane = tid % 32;
    const float* S0 = ws.Sn + (slot * HV + hv) * int64_t(K) * V;
    const float* dS = bw.dSn + (slot * HV + hv) * int64_t(K) * V;
    if constexpr (kBatchedRowsum) {
      constexpr int kRows = K / (NT / 32), kCols = 4;  // channels of this warp; columns per lane per round
      float sum[kRows] = {};
      for (int j0 = 0; j0 < V; j0 += 32 * kCols) {
        float x[kRows][kCols], y[kRows][kCols];
#pragma unroll
        for (int i = 0; i < kRows; ++i)
#pragma unroll
          for (int u = 0; u < kCols; ++u) {
            const int j = j0 + lane + 32 * u;
            const int64_t at = int64_t(warp + i * (NT / 32)) * V + j;
            x[i][u] = j < V ? dS[at] : 0.f, y[i][u] = j < V ? S0[at] : 0.f;
          }
#pragma unroll
        for (int i = 0; i < kRows; ++i)
#pragma unroll
          for (int u = 0; u < kCols; ++u)
            if (j0 + lane + 32 * u < V) sum[i] += x[i][u] * y[i][u];
      }
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
#pragma unroll
        for (int off = 16; off; off /= 2) sum[i] += __shfl_xor_sync(0xffffffffu, sum[i], off);
        if (lane == 0) s_rowsum[warp + i * (NT / 32)] = sum[i];
      }
    } else
    for (int d = warp; d < K; d += NT / 32) {
      float sum = 0;
      for (int j = lane; j < V; j += 32) sum += dS[int64_t(d) * V + j] * S0[int64_t(d) * V + j];
#pragma unroll
      for (int off = 16; off; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      if (lane == 0) s_rowsum[d] = sum;
    }
  }
  __syncthreads();
  // Per (sub-chunk, channel): γ_r, the tail decay, the elementwise gates (Eq. 73-76, 80-81), dG_r and the tail term.
  static_assert(NT == kNumSub * K, "one (sub-chunk, channel) task per thread");
  float gc_keep[S], tt_keep[S];
  {
    const int M = tid / K, d = tid % K, o = M * S;
    float before = 0, after = 0, total = 0;
#pragma unroll
    for (int J = 0; J < kNumSub; ++J) {
      if (J < M) before += s_bs[J][d];
      if (J > M) after += s_bs[J][d];
      total += s_bs[J][d];
    }
    const float pre = expf(before), suf = expf(after);
    float gs[S];
#pragma unroll
    for (int r = 0; r < S; ++r) gs[r] = o + r < L ? g[in(o + r, d)] : 0.f;
    float a[S];  // exp(Σ_{i>r, i in M} g_i)
    {
      float run = 0;
#pragma unroll
      for (int r = S - 1; r >= 0; --r) {
        a[r] = expf(run);
        run += gs[r];
      }
    }
    // Rows in groups of four: the loads of a group are all issued before any of its stores (a store to the gradient
    // buffers may alias a later load as far as the compiler knows, so it would otherwise wait row by row).
    constexpr int G4 = 4;
    float run = 0, tot_gc = 0, tot_tt = 0;
#pragma unroll
    for (int r0 = 0; r0 < S; r0 += G4) {
      float dkt[G4], dqg[G4], debar[G4], de0[G4], ebar[G4], qg[G4], kt[G4], kv[G4], bv[G4], dq0[G4], dk0[G4];
#pragma unroll
      for (int u = 0; u < G4; ++u) {
        const int row = o + r0 + u;
        const bool live = row < L;
        const int64_t x = at(live ? row : 0, d), y = in(live ? row : 0, d);
        dkt[u] = live ? bw.dKtail[x] : 0.f, dqg[u] = live ? bw.dQg[x] : 0.f, debar[u] = live ? bw.dEbar[x] : 0.f;
        de0[u] = live ? bw.dE[x] : 0.f, ebar[u] = live ? ws.Ebar[x] : 0.f, qg[u] = live ? ws.Qg[x] : 0.f;
        kt[u] = live ? ws.Kt[x] : 0.f;
        kv[u] = live ? to_float(k[y]) : 0.f, bv[u] = live ? to_float(b[y]) : 0.f;
        if constexpr (kV18) dq0[u] = live ? bw.dQ[x] : 0.f, dk0[u] = live ? bw.dK[x] : 0.f;
      }
#pragma unroll
      for (int u = 0; u < G4; ++u) {
        const int r = r0 + u, row = o + r;
        run += gs[r];
        float gc = 0, tt = 0;
        if (row < L) {
          const int64_t x = at(row, d);
          const float gamma = pre * expf(run), tail = suf * a[r];
          const float de = de0[u] + debar[u] * gamma;                          // Eq. 74-75 via E = B ⊙ K
          const float dq = (kV18 ? dq0[u] : bw.dQ[x]) + dqg[u] * gamma;        // Eq. 80
          const float dk = (kV18 ? dk0[u] : bw.dK[x]) + de * bv[u] + dkt[u] * tail;  // Eq. 75, 72
          if (outputs.dq) {  // one value head per key head: these are the gradients (stage 6 is skipped)
            const int64_t y = in(row, d);
            static_cast<T*>(outputs.dq)[y] = from_float<T>(outputs.scale * dq);
            static_cast<T*>(outputs.dk)[y] = from_float<T>(dk);
            static_cast<T*>(outputs.db)[y] = from_float<T>(de * kv[u]);          // Eq. 74
          } else {
            bw.dQ[x] = dq, bw.dK[x] = dk;
            bw.dE[x] = de * kv[u];                                             // db, Eq. 74
          }
          gc = debar[u] * ebar[u] + dqg[u] * qg[u];                            // dG_r, Eq. 76, 81 (· γ)
          if (row == L - 1) gc += s_rowsum[d] * expf(total);                  // Eq. 60 (γ_L)
          tt = dkt[u] * kt[u];                                                 // Eq. 71
        }
        gc_keep[r] = gc, tt_keep[r] = tt;
        tot_gc += gc, tot_tt += tt;
      }
    }
    s_tot_gc[M][d] = tot_gc, s_tot_tt[M][d] = tot_tt;
  }
  __syncthreads();
  // dg_i += Σ_{r<i} tail term_r + Σ_{r≥i} dG_r, from the other sub-chunks' totals and this task's rows.
  {
    const int M = tid / K, d = tid % K, o = M * S;
    float prefix = 0, suffix = 0;
#pragma unroll
    for (int J = 0; J < kNumSub; ++J) {
      if (J < M) prefix += s_tot_tt[J][d];
      if (J > M) suffix += s_tot_gc[J][d];
    }
    float add[S], dg0[S];
    if constexpr (kV18) {
#pragma unroll
      for (int r = 0; r < S; ++r) dg0[r] = o + r < L ? bw.dG[at(o + r, d)] : 0.f;
    }
#pragma unroll
    for (int r = S - 1; r >= 0; --r) {
      suffix += gc_keep[r];
      add[r] = suffix;
    }
#pragma unroll
    for (int r = 0; r < S; ++r) {
      if (o + r < L) {
        const float dg = (kV18 ? dg0[r] : bw.dG[at(o + r, d)]) + add[r] + prefix;
        if (outputs.dq) outputs.dg[in(o + r, d)] = dg;
        else bw.dG[at(o + r, d)] = dg;
      }
      prefix += tt_keep[r];
    }
  }
  // Eq. 73: dw = dZ ⊙ v, dv = dZ ⊙ w.
  if (kV18 && vec8) {  // 8 elements per access; a row's V elements start 16-byte aligned (V % 8 == 0)
    constexpr int kGroups = 2;  // groups of 8 loaded before any is stored
    const int n8 = L * V / 8;
    for (int i0 = tid; i0 < n8; i0 += kGroups * NT) {
      float dz[kGroups][8], vv[kGroups][8], ww[kGroups][8];
#pragma unroll
      for (int u = 0; u < kGroups; ++u) {
        const int i = (i0 + u * NT) * 8;
        if (i0 + u * NT < n8) {
          const int64_t o = ((row0 + i / V) * HV + hv) * V + i % V;
          load8(dz[u], bw.dZ + o), load8(vv[u], v + o), load8(ww[u], w + o);
        }
      }
#pragma unroll
      for (int u = 0; u < kGroups; ++u) {
        const int i = (i0 + u * NT) * 8;
        if (i0 + u * NT < n8) {
          const int64_t o = ((row0 + i / V) * HV + hv) * V + i % V;
          float x[8], y[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) x[j] = dz[u][j] * vv[u][j], y[j] = dz[u][j] * ww[u][j];
          store8(dw + o, x), store8(dv + o, y);
        }
      }
    }
  } else
    for (int i = tid; i < L * V; i += NT) {
      const int64_t o = ((row0 + i / V) * HV + hv) * V + i % V;
      const float dz = bw.dZ[o];
      dw[o] = from_float<T>(dz * to_float(v[o]));
      dv[o] = from_float<T>(dz * to_float(w[o]));
    }
}

// [SECTION] 6. key-side gradients: the value heads of each key head summed in a fixed order ------------------------
template <int K, typename T>
__global__ void backward_reduce_heads(T* dq, T* dk, float* dg, T* db, BackwardWorkspace bw, int64_t rows, int H,
                                      int HV, float scale) {
  const int group = HV / H;
  const int64_t n = rows * H * K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / (H * K);
    const int h = int(i / K % H), d = int(i % K);
    float sq = 0, sk = 0, sg = 0, sb = 0;
    for (int hv = h * group; hv < (h + 1) * group; ++hv) {
      const int64_t o = (row * HV + hv) * K + d;
      sq += bw.dQ[o], sk += bw.dK[o], sg += bw.dG[o], sb += bw.dE[o];
    }
    dq[i] = from_float<T>(scale * sq);  // q̃ = scale · q
    dk[i] = from_float<T>(sk);
    dg[i] = sg;
    db[i] = from_float<T>(sb);
  }
}

template <int K, typename T>
void launch_backward_01(void* dq, void* dk, void* dv, float* dg, void* db, void* dw, float* dh0, const void* q,
                        const void* k, const void* v, const float* g, const void* b, const void* w, const float* h0,
                        const int64_t* cu, const void* do_, const float* dht, const Problem& p, cudaStream_t stream,
                        int version, const SavedForBackward* saved) {
  const int64_t rows = cu ? p.T : p.N * p.T, HV = p.HV, V = p.V;
  const int64_t slots = chunk_slots(rows, p.N);
  const unsigned max_chunks = unsigned((p.T + kChunk - 1) / kChunk);
  const float scale = default_scale(p);
  // The forward's workspace (Y, R, A_qk, Q_γ, K_tail, Ē, A per row; γ_C, S_n per chunk): kept by chunk_forward, or
  // recomputed here. Then the backward's own.
  const size_t forward_floats = saved ? 0 : forward_workspace_floats(rows, p.N, HV, K, V, WorkspaceUse::kForBackward);
  const int64_t per_row = HV * (4 * V + 4 * C + 8 * K), per_slot = HV * K * V;
  float* base = workspace_alloc<float>(forward_floats + size_t(rows * per_row + slots * per_slot), stream);
  const Workspace ws = carve_forward_workspace(saved ? static_cast<float*>(saved->workspace_) : base, rows, p.N, HV, K,
                                               V, WorkspaceUse::kForBackward);
  float* next = base + forward_floats;
  auto take = [&](int64_t floats) {
    float* at = next;
    next += floats;
    return at;
  };
  BackwardWorkspace bw{};
  bw.dO = take(rows * HV * V), bw.Z = take(rows * HV * V), bw.dR = take(rows * HV * V), bw.dZ = take(rows * HV * V);
  bw.dAqk = take(rows * HV * C), bw.dA = take(rows * HV * C), bw.M1 = take(rows * HV * C), bw.dT = take(rows * HV * C);
  bw.dQg = take(rows * HV * K), bw.dKtail = take(rows * HV * K), bw.dY = take(rows * HV * K);
  bw.dEbar = take(rows * HV * K);
  bw.dQ = take(rows * HV * K), bw.dK = take(rows * HV * K), bw.dE = take(rows * HV * K), bw.dG = take(rows * HV * K);
  bw.dSn = take(slots * HV * K * V);

  // 0. The forward, recomputed unless chunk_forward kept it.
  if (!saved) chunk_forward_recompute(ws, q, k, v, g, b, w, h0, cu, p, stream);
  // 1. dO in fp32, Z = W ⊙ V.
  {
    const int64_t n = rows * HV * V;
    backward_convert<T><<<unsigned(std::min<int64_t>((n + 255) / 256, 65535)), 256, 0, stream>>>(
        bw, static_cast<const T*>(do_), static_cast<const T*>(v), static_cast<const T*>(w), n);
    GDN2_CUDA_CHECK_LAUNCH();
  }
  // 2. The state VJP (sequential over chunks). Version 03: 16 value columns per block when 32 would leave SMs idle.
  auto state_pass = [&](auto vs) {
    constexpr int VS = decltype(vs)::value;
    const dim3 grid(unsigned(V / VS), unsigned(HV), unsigned(p.N));
    if (version >= 4) {
      // Version 14: bf16 storage with 32 or 64 columns runs the products on tensor cores.
      constexpr bool kMmaFits = std::is_same_v<T, __nv_bfloat16> && VS >= 32;
      const bool mma = kMmaFits && version >= 14;
      auto kernel = mma && version >= 16 ? chunk_backward_state_pass04<K, VS, 512, true, true, kMmaFits, true>
                    : mma                 ? chunk_backward_state_pass04<K, VS, 512, true, true, kMmaFits>
                    : version >= 16       ? chunk_backward_state_pass04<K, VS, 512, true, true, false, true>
                    : version >= 10       ? chunk_backward_state_pass04<K, VS, 512, true, true>
                    : version >= 9        ? chunk_backward_state_pass04<K, VS, 512, true>
                                          : chunk_backward_state_pass04<K, VS, 512, false>;
      const size_t bytes = (mma ? BackwardPassLayout<K, VS, true, true>::floats()
                                : BackwardPassLayout<K, VS, true, false>::floats()) * sizeof(float);
      GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      kernel<<<grid, 512, bytes, stream>>>(dh0, dht, ws, bw, cu, p.T, int(HV), int(V));
    } else {
      constexpr size_t bytes = backward_pass_smem_floats<K, VS>() * sizeof(float);
      auto kernel = chunk_backward_state_pass<K, VS>;
      GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      kernel<<<grid, kThreads, bytes, stream>>>(dh0, dht, ws, bw, cu, p.T, int(HV), int(V));
    }
    GDN2_CUDA_CHECK_LAUNCH();
  };
  // Version 05: 64 columns when that still gives about a block per SM of an H100 (132): the K-wide tiles are loaded
  // once per 64 columns instead of per 32, and each thread's tile of dS doubles (fewer shared loads per multiply-add).
  if (version >= 5 && V % 64 == 0 && (V / 64) * HV * p.N >= 132)
    state_pass(std::integral_constant<int, 64>{});
  else if (version >= 3 && (V / 32) * HV * p.N < 132)
    state_pass(std::integral_constant<int, 16>{});
  else
    state_pass(std::integral_constant<int, 32>{});
  // 3. The products (Appendix B.1-B.2), in the reference's order.
  // dual (version 13, staged tiles only): a second product dual.out = dual.alpha · dual.A B with the same B, shapes
  // and depth, no mask or accumulation, in the same launch (B read once); two launches give the same bits.
  struct Dual {
    float* out = nullptr;
    View A{};
    float alpha = 0.f;
  };
  // chain (version 15, staged tiles only): out = alpha · (A B + chain.A chain.B), one accumulation over both depths.
  struct Chain {
    View A{}, B{};
    int depth = 0;
  };
  auto product = [&](float* out, View A, View B, int N, int depth, float alpha, bool accumulate, Mask mask,
                     Dual dual = {}, Chain chain = {}) {
    if (version >= 3) {  // 64-column tiles where N allows, else 32; version 04 stages the next depth step
      const bool mma = version >= 6 && p.dtype == DType::bf16;
      auto go = [&](auto bn, auto staged, auto with_mma) {
        constexpr int BN = decltype(bn)::value;
        constexpr bool kStaged = decltype(staged)::value, kMma = decltype(with_mma)::value;
        const dim3 grid(max_chunks * unsigned(N / BN), unsigned(HV), unsigned(p.N));
        if constexpr (kStaged)
          if (chain.depth) {  // version 15
            chunk_batched_product03<BN, true, kMma, 3, false, true><<<grid, kThreads, 0, stream>>>(
                out, A, B, N, depth, alpha, accumulate, mask, cu, p.T, int(HV), nullptr, View{}, 0.f, chain.A, chain.B,
                chain.depth);
            return;
          }
        if constexpr (kStaged)
          if (dual.out) {  // version 13
            chunk_batched_product03<BN, true, kMma, 2, true><<<grid, kThreads, 0, stream>>>(
                out, A, B, N, depth, alpha, accumulate, mask, cu, p.T, int(HV), dual.out, dual.A, dual.alpha);
            return;
          }
        if constexpr (kStaged)
          if (version >= 11) {  // version 11: three blocks per SM
            chunk_batched_product03<BN, true, kMma, 3><<<grid, kThreads, 0, stream>>>(out, A, B, N, depth, alpha,
                                                                                     accumulate, mask, cu, p.T, int(HV));
            return;
          }
        chunk_batched_product03<BN, kStaged, kMma><<<grid, kThreads, 0, stream>>>(out, A, B, N, depth, alpha, accumulate,
                                                                                 mask, cu, p.T, int(HV));
      };
      using I64 = std::integral_constant<int, 64>;
      using I32 = std::integral_constant<int, 32>;
      using Yes = std::true_type;
      using No = std::false_type;
      if (N % 64 == 0 && mma) go(I64{}, Yes{}, Yes{});
      else if (N % 32 == 0 && mma) go(I32{}, Yes{}, Yes{});
      else if (N % 64 == 0 && version >= 4) go(I64{}, Yes{}, No{});
      else if (N % 64 == 0) go(I64{}, No{}, No{});
      else if (version >= 4) go(I32{}, Yes{}, No{});
      else go(I32{}, No{}, No{});
      GDN2_CUDA_CHECK_LAUNCH();
      return;
    }
    chunk_batched_product<<<dim3(max_chunks * unsigned(N / 32), unsigned(HV), unsigned(p.N)), kThreads, 0, stream>>>(
        out, A, B, N, depth, alpha, accumulate, mask, cu, p.T, int(HV));
    GDN2_CUDA_CHECK_LAUNCH();
  };
  const View dO = token_view(bw.dO, HV, V, false), R_t = token_view(ws.U, HV, V, true);
  const View S0_t = state_view(ws.Sn, HV, K, V, true), dSC_t = state_view(bw.dSn, HV, K, V, true);
  const View R = token_view(ws.U, HV, V, false), dR = token_view(bw.dR, HV, V, false);
  const View A_t = token_view(ws.A, HV, C, true);
  product(bw.dAqk, dO, R_t, C, int(V), 1.f, false, kLower);                        // dA_qk = tril(dO Rᵀ)     Eq. 53
  if (version >= 13) {
    product(bw.dQg, dO, S0_t, K, int(V), 1.f, false, kNone,                       // dQ_γ = dO S_nᵀ          Eq. 55
            Dual{bw.dY, dR, -1.f});                                                // dY = −dR S_nᵀ           Eq. 62
  } else {
    product(bw.dQg, dO, S0_t, K, int(V), 1.f, false, kNone);
    product(bw.dY, dR, S0_t, K, int(V), -1.f, false, kNone);
  }
  product(bw.dKtail, R, dSC_t, K, int(V), 1.f, false, kNone);                      // dK_tail = R dS_Cᵀ       Eq. 58
  if (version >= 15) {
    product(bw.dA, dR, token_view(bw.Z, HV, V, true), C, int(V), 1.f, false, kNone, {},  // dA = dU Zᵀ     Eq. 64
            Chain{token_view(bw.dY, HV, K, false), token_view(ws.Ebar, HV, K, true), K});  //    + dY Ēᵀ     Eq. 65
  } else {
    product(bw.dA, dR, token_view(bw.Z, HV, V, true), C, int(V), 1.f, false, kNone);
    product(bw.dA, token_view(bw.dY, HV, K, false), token_view(ws.Ebar, HV, K, true), C, K, 1.f, true, kNone);
  }
  product(bw.dZ, A_t, dR, int(V), C, 1.f, false, kNone);                           // dZ = Aᵀ dU              Eq. 64
  product(bw.dEbar, A_t, token_view(bw.dY, HV, K, false), K, C, 1.f, false, kNone);  // dĒ = Aᵀ dY            Eq. 65
  product(bw.M1, token_view(bw.dA, HV, C, false), A_t, C, C, 1.f, false, kNone);   // dA Aᵀ
  product(bw.dT, A_t, token_view(bw.M1, HV, C, false), C, C, -1.f, false,
          kStrictlyLower);                                                         // dT = −stril(Aᵀ dA Aᵀ)  Eq. 66
  // 4. Through T and A_qk (version 02; GDN2_BACKWARD_VERSION=1 runs version 01's pairwise kernel).
  if (version >= 2) {
    // Version 17 reads q, k, b, g 16 bytes at a time: only where they are 16-byte aligned (else version 16's kernel).
    // Version 19: no load after a store in steps 3-5 (either load width).
    const bool v17 = version >= 17 && aligned16(q, k, g, b), v19 = version >= 19;
    const size_t bytes = (v17 ? intra02_smem_floats<K, K + 4>() : intra02_smem_floats<K>()) * sizeof(float);
    auto kernel = v17 && v19     ? chunk_intra_backward02<K, T, 512, true, true, true>
                  : v19          ? chunk_intra_backward02<K, T, 512, true, false, true>
                  : v17          ? chunk_intra_backward02<K, T, 512, true, true>
                  : version >= 8 ? chunk_intra_backward02<K, T, 512, true>
                                 : chunk_intra_backward02<K, T, 512, false>;
    GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    kernel<<<dim3(max_chunks, unsigned(HV), unsigned(p.N)), 512, bytes, stream>>>(
        bw, static_cast<const T*>(q), static_cast<const T*>(k), g, static_cast<const T*>(b), cu, p.T, int(p.H), int(HV),
        scale);
    GDN2_CUDA_CHECK_LAUNCH();
  } else {
    constexpr size_t bytes = intra_smem_floats<K>() * sizeof(float);
    auto kernel = chunk_intra_backward<K, T>;
    GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    kernel<<<dim3(max_chunks, unsigned(HV), unsigned(p.N)), K, bytes, stream>>>(
        bw, static_cast<const T*>(q), static_cast<const T*>(k), g, static_cast<const T*>(b), cu, p.T, int(p.H), int(HV),
        scale);
    GDN2_CUDA_CHECK_LAUNCH();
  }
  // 5. Tail keys, gates, reverse cumsum; dv, dw (version 05: tasks per (sub-chunk, channel)).
  // Version 07: with one value head per key head, stage 5 writes the gradients itself and stage 6 is skipped.
  const bool direct = version >= 7 && HV == p.H;
  HeadOutputs outputs;
  if (direct) outputs = HeadOutputs{dq, dk, db, dg, scale};
  if (version >= 5) {  // version 12: the row sums' loads batched; 18: no load waits on a store
    auto gates = version >= 18   ? chunk_gates_backward05<K, T, kNumSub * K, true, true>
                 : version >= 12 ? chunk_gates_backward05<K, T, kNumSub * K, true>
                                 : chunk_gates_backward05<K, T>;
    const bool vec8 = V % 8 == 0 && aligned16(dv, dw, v, w, bw.dZ);
    gates<<<dim3(max_chunks, unsigned(HV), unsigned(p.N)), kNumSub * K, 0, stream>>>(
        static_cast<T*>(dv), static_cast<T*>(dw), ws, bw, static_cast<const T*>(k), g, static_cast<const T*>(b),
        static_cast<const T*>(v), static_cast<const T*>(w), cu, p.T, int(p.H), int(HV), int(V), outputs, vec8);
  } else
    chunk_gates_backward<K, T><<<dim3(max_chunks, unsigned(HV), unsigned(p.N)), K, 0, stream>>>(
        static_cast<T*>(dv), static_cast<T*>(dw), ws, bw, static_cast<const T*>(k), g, static_cast<const T*>(b),
        static_cast<const T*>(v), static_cast<const T*>(w), cu, p.T, int(p.H), int(HV), int(V));
  GDN2_CUDA_CHECK_LAUNCH();
  // 6. Sum over the value heads of each key head.
  if (!direct) {
    const int64_t n = rows * p.H * K;
    backward_reduce_heads<K, T><<<unsigned(std::min<int64_t>((n + 255) / 256, 65535)), 256, 0, stream>>>(
        static_cast<T*>(dq), static_cast<T*>(dk), dg, static_cast<T*>(db), bw, rows, int(p.H), int(HV), scale);
    GDN2_CUDA_CHECK_LAUNCH();
  }
  GDN2_CUDA_CHECK(cudaFreeAsync(base, stream));
}

}  // namespace

void chunk_backward_dispatch(void* dq, void* dk, void* dv, float* dg, void* db, void* dw, float* dh0, const void* q,
                             const void* k, const void* v, const float* g, const void* b, const void* w,
                             const float* h0, const int64_t* cu, const void* do_, const float* dht, const Problem& p,
                             cudaStream_t stream, const SavedForBackward* saved) {
  const int64_t rows = cu ? p.T : p.N * p.T;
  if (rows == 0) {  // no tokens: dL/dS_0 = dL/dS_T
    const size_t bytes = size_t(p.N * p.HV * p.K * p.V) * sizeof(float);
    if (dht) GDN2_CUDA_CHECK(cudaMemcpyAsync(dh0, dht, bytes, cudaMemcpyDeviceToDevice, stream));
    else GDN2_CUDA_CHECK(cudaMemsetAsync(dh0, 0, bytes, stream));
    return;
  }
  // The current rung is version 19; GDN2_BACKWARD_VERSION=1 .. 18 selects an earlier one (the ladder stays runnable).
  const char* env = std::getenv("GDN2_BACKWARD_VERSION");
  const int version = env ? std::atoi(env) : 19;
  dispatch_k_and_dtype(p, [&](auto K, auto T) {
    launch_backward_01<decltype(K)::value, decltype(T)>(dq, dk, dv, dg, db, dw, dh0, q, k, v, g, b, w, h0, cu, do_,
                                                        dht, p, stream, version, saved);
  });
}

}  // namespace gdn2::cuda::detail
