// gdn2::cuda chunk_forward — version 05: the state-independent work of every chunk in parallel, then one pass
// that carries the state. Fp32 CUDA cores, exact decays. (Ladder: docs/cuda.md.)
//
// Idea: in version 04 one block per (sequence, value head, value slice) did everything chunk after chunk, so the
// whole GPU waited on T, A_qk, the triangular solve and Y = AĒ, U = AZ — work that does not depend on the state.
// Here kernel 1 (chunk_prepare) computes them for all chunks of all sequences at once, one block per (chunk, value
// head), and writes Y [C,K], U [C,V] and A_qk [C,C] per chunk to a workspace (fp32). Kernel 2 (chunk_state_pass)
// keeps version 04's sequential walk but does only what needs the state (paper Eq. 23-24):
//   R = U − Y S;   O = Q_γ S + A_qk R;   S ← Diag(γ_C) S + K_tailᵀ R,
// recomputing Q_γ = γ ⊙ q̃ and K_tail = (γ_C/γ_r) ⊙ k from q, k, g with per-channel prefix and suffix sums of g
// (exp of a direct sum ≤ 0: no γ⁻¹ and no difference of cumulative sums, docs/derivation.md step 4).
// Prediction (written before the first run): kernel 1 ≈ 1 ms (8192 blocks of the old steps 1-4), kernel 2 ≈ 2.5 ms
// (512 blocks, a quarter of the old per-chunk work), workspace traffic ≈ 1.3 GB ≈ 0.5 ms: B=8, T=4096 ≈ 4 ms.
// Measured on an H100 (bf16, H = 16, K = V = 128), B = 8, T = 4096:
//   05  17.1 ms, then 11.8 ms with batched tile loads (B = 1, T = 4096: 2.7 ms; the pass waited on memory latency)
//   06  11.8 ms (B = 1, T = 4096: 1.77 ms = prepare 1.14 + pass 0.54 + output 0.16): three kernels, cp.async
//       double buffering in the pass (section "version 06" below)
//   07  10.5 ms (B = 1, T = 4096: 1.60 ms; prepare 0.93): (I + T)⁻¹ by blocks, decay factors per (channel, sub-chunk)
//   08   9.38 ms (B = 1, T = 4096: 1.42 ms; prepare 0.68): the prepare kernel with 16 warps
//        (6.73 ms once the workspace memory is kept between calls: 2.7 ms of the 9.38 were mapping it again; api.cu)
//   09   6.04 ms (B = 1, T = 4096: 1.08 ms): the off-diagonal blocks of T and A_qk by 2 × 2 register tiles over the lower
//        block pairs only (chunk_tiles.cuh 2c; predicted prepare −15%)
//   10   4.75 ms (B = 1, T = 4096: 0.89 ms; prepare 4.47 -> 2.84 ms, predicted -18%): the diagonal blocks by column
//        groups, one exp per (row, channel) per warp instead of per column (chunk_tiles.cuh 2a, version 10); Y = AĒ and
//        U = AZ with lane-strided columns, no bank conflicts, and U in one product of K columns with Z in g's tile
//   11   4.66 ms (output 1.13 -> 1.04 ms, predicted 0.85): 64 value columns per output block instead of 32
//   12   4.54 ms (pass 1.76 -> 1.69, output 1.04 -> 0.97 ms; predicted pass 1.1 ms, a miss): the pass and output
//        products with float4 shared loads (tile_product_vec) — the pass was not bound by its shared loads
//   13   3.97 ms with bf16 storage (B = 1, T = 4096: 0.72 ms; pass 1.69 -> 1.02 ms, predicted about 0.9): the pass's
//        two products on tensor cores (mma.sync TF32, fp32 accumulation, the state kept in fp32); float32 storage as 12
//   14   3.78 ms (same run: 13 at 3.98 ms; B = 1, T = 4096: 0.70 ms; prepare 2.90 -> 2.62 ms, predicted -0.35 ms): the
//        diagonal blocks' warp sums reduced 32 at a time (warp_reduce_scatter, chunk_tiles.cuh), 31 shuffles instead of
//        5 per sum — that phase was a quarter of prepare's stall samples, bound by its shuffles
//   15   3.58 ms with bf16 storage (same run: 14 at 3.77 ms; B = 1, T = 4096: 0.67 ms; output 0.96 -> 0.62 ms, predicted
//        0.6-0.65): the output kernel's products on tensor cores, its diagonal blocks guarded (chunk_output06)
//   16   3.36 ms (same run: 15 at 3.62 ms; B = 1, T = 4096: 0.663 -> 0.626 ms; predicted prepare −0.3 to −0.4 ms): prepare
//        loads 8 channels per 16-byte load and stores Ē, Q_γ, K_tail, A, A_qk by float4 (rows of K + 4 floats) — the
//        stall profile of 15 had a quarter of prepare in its 4-byte loads and stores and their index arithmetic
//   (17, tried in sessions 7-8, not kept: prepare by 32-channel slices at two 8-warp blocks per SM, T and A_qk summed
//        slice by slice — 3.80 ms against 16's 3.35 in the same run; predicted prepare 2.42 -> 1.7-2.0 ms. The likely
//        cause: the diagonal blocks' shuffle reductions, a quarter of prepare and bound by shuffles, ran once per slice)
//   18   3.21 ms (same run: 16 at 3.34 ms; B = 1, T = 4096: 0.629 -> 0.614 ms): with bf16 storage prepare's
//        off-diagonal blocks of T and A_qk (step 2c) on tensor cores — TF32 mma, a warp per (block pair, 8 columns),
//        both products sharing one B fragment (chunk_off_diagonal_blocks_mma); new bits. Predicted −0.3 to −0.4 ms
//        (2c was about a fifth of prepare's stall samples in version 10): half of that
//   19   3.09 ms (same run: 18 at 3.22 ms; B = 1, T = 4096: 0.612 -> 0.599 ms): the output kernel's two blocks of a
//        chunk (64 value columns each) adjacent in launch order, so the second read of Q_γ and A_qk (0.4 GB of its
//        1.61 GB from DRAM) comes from L2. Predicted output 0.62 -> 0.5 ms; measured DRAM reads 1.61 -> 1.21 GB and,
//        under Nsight Compute (caches flushed between kernels), 0.620 -> 0.605 ms
//   20   2.98 ms (same run: 19 at 3.10 ms; B = 1, T = 4096: 0.592 -> 0.572 ms): the pass stores S_n by float4 and R by
//        float2 (its stall samples: 55% in the phase of those stores, top IMAD, LEA, STG). Predicted −0.1 to −0.15 ms
//   21   2.61 ms (same run: 20 at 2.93 ms; B = 1, T = 4096: 0.567 -> 0.507 ms): with bf16 storage and no kept workspace
//        the pass computes O itself (no output kernel; S_n and R stay on chip), its A operands Q_γ and A_qk from
//        prepare in mma fragment order; Q_γ, Y, K_tail, R rounded to TF32 where stored (chunk_state_pass06, kOutput).
//        Predicted −0.2 to −0.4 ms
//   (22, tried in session 9, not kept: prepare's Y = AĒ and U = AZ on tensor cores — 2.61 -> 2.68 ms, less accurate)
//   23   2.58 ms (same run: 21 at 2.605 ms; B = 1, T = 4096: 0.505 -> 0.499 ms): prepare computes exp(g) once per (row,
//        channel) in its load phase, not once per warp of a sub-chunk. Predicted −0.05 to −0.07 ms
//   24   B = 8 unchanged (64-column pass): 16 value columns per pass block where 32 would leave SMs idle (pass_columns;
//        B = 1 with 16 heads: 128 blocks instead of 64). Predicted B = 1, T = 4096 0.50 -> 0.40-0.43 ms; measured
//        0.506 -> 0.443 ms (B = 1, T = 65536: 7.46 -> 6.55 ms)
//   25   2.56 ms (same run: 24 at 2.59 ms; B = 1, T = 4096: 0.442 -> 0.433 ms): 22 again with A's rows padded to C + 4
//        floats (lower_product_mma): 22's fragment reads of A were 8-way bank conflicts. New bits with bf16 storage
//   26   2.41 ms (same run: 25 at 2.56 ms; B = 1, T = 4096: 0.437 -> 0.415 ms; prepare 2.11 -> 1.91 ms): prepare's
//        diagonal blocks with their rounds unrolled, so which (row, column) pairs are computed is known at compile
//        time: no per-pair branches (chunk_diagonal_blocks_grouped, kUnrolled). Same bits as 25. Predicted B = 8 −0.03
//        to −0.06 ms (branch handling was about a tenth of prepare's stall samples, in that phase); the branches had
//        also been two fifths of the phase's instructions
//   27   2.37 ms (same run: 26 at 2.41 ms; B = 1: 0.418 -> 0.409 ms): prepare issues the loads of Z = W ⊙ V before the
//        decay factors (2b) and converts them after 2c; 26 formed the product right after the loads, so every warp
//        waited for them before 2c. Same bits as 25. Predicted B = 8 −0.03 to −0.05 ms (that wait: about a third of the
//        2c phase's stall samples, 4% of prepare's)
//   (28, tried in session 10, not kept: with bf16 inputs prepare as a persistent kernel, each task's q, k, b, g loaded
//        into registers during the task before — its load phase 15% -> 7% of the stall samples, but ptxas spilled
//        100 bytes at the 128-register cap and the kernel lost: B = 8 2.37 -> 2.43-2.45 ms, 27 in the same run)
//   29   2.37 ms (same run: 27 within 0.005 ms, run-to-run noise; B = 1: 0.411 ms, unchanged): the fused forward's Ē
//        and K_tail loop without runtime branches (only K_tail's store guarded by r < L). Same bits as 25. Predicted
//        B = 8 −0.02 to −0.04 ms (that loop's divergence handling: BSSY, 3% of prepare's samples)
// 10-12 (and 13, 15 with float32 storage) reorder no arithmetic: test_cuda checks that they give 09's bits, 14 13's and
// 16 15's; 18 with float32 storage, 16's; 19, 20, 21, 23 and 24 18's; 25 with float32 storage or a kept workspace, 24's;
// 26, 27 and 29 25's. The current default is 29 (api.cu; its 4-byte loads when an input is not 16-byte aligned; a
// forward that keeps its workspace runs 20's pass and output kernels with 29's prepare, which then computes Y, U, Ē
// and K_tail as 23's does); GDN2_CHUNK_VERSION=5 .. 27 runs the earlier ones.
#include "chunk_workspace.cuh"

namespace gdn2::cuda::detail {

namespace {

constexpr int kZSlice = 32;  // value columns of Z per pass in chunk_prepare

// Row stride of prepare's [C][K] tiles: K + 1 floats (no bank conflicts when a warp reads down a column; versions 05-15),
// K + 4 from version 16 (16-byte aligned rows for its float4 stores; none of its phases reads down a column).
template <int K, int kVersion>
constexpr int prepare_kp() { return kVersion >= 16 ? K + 4 : K + 1; }
// Row stride of prepare's A = (I + T)⁻¹ (its last tile): kChunk, and kChunk + 4 from version 25, whose tensor-core
// products read A as mma fragments (8 rows × 4 columns per read: with rows 64 floats apart, an 8-way bank conflict).
template <int kVersion>
constexpr int prepare_as() { return kVersion >= 25 ? kChunk + 4 : kChunk; }
template <int K, int KP = K + 1, int AS = kChunk>
constexpr size_t prepare_smem_floats() {
  return 4 * kChunk * KP + 2 * kChunk * kChunk + kChunk * AS + kChunk * kZSlice + 3 * kNumSub * K +
         kNumSub * kNumSub * K;
}
template <int K, int VS>
constexpr size_t pass_smem_floats() {
  return 3 * kChunk * (K + 1) + kChunk * kChunk + kChunk * VS + K * VS + K;
}

// Memory-level parallelism for the tile loads: each thread issues kBatch independent loads before it stores any,
// instead of load → store → load (a global-memory latency per element, which dominated the first run of 05).
constexpr int kBatch = 8;

// Version 25 (the fused forward's prepare: bf16 storage, no kept workspace): rows r < L of X = A B, for A = (I + T)⁻¹
// (Eq. 21; lower triangular with its zeros above the diagonal stored; rows AS floats apart) and B a [C][K] tile of row
// stride KP, on tensor cores (TF32 operands rounded to nearest, fp32 accumulation) instead of lower_product_lanes's
// fp32 CUDA-core sums: Y = AĒ and U = AZ (Eq. 22). Row r of X goes to out + r·out_rs, rounded to TF32 when kRound (Y,
// an operand of the pass's mma only). 16 warps: rows 16·(w % 4) .. + 15, K/4 columns from (w / 4)·K/4; the k-steps
// stop at the warp's diagonal block (A is 0 beyond it; Ē and Z are finite, so the terms above the diagonal are exact
// zeros and a row does not depend on later rows). Rung 22 tried this with A's rows 64 floats apart: every fragment
// read of A was an 8-way bank conflict, more shared-memory wavefronts than the CUDA-core products it replaced, and it
// lost (+0.07 ms). With AS = C + 4 the reads hit 32 banks. New bits with bf16 storage (checked against the reference).
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

// Kernel 1: steps 1-4 of version 04 for one chunk (block x), value head (block y), sequence (block z), plus U = AZ.
// kVersion selects the rung (5-6: solve in place; 07 block inverse; 09 tiled off-diagonal blocks; 10 below).
// kWide = false: version 16's loads 4 bytes at a time (inputs not 16-byte aligned; the same values, so the same bits).
template <int K, typename T, bool kFull = false, int kVersion = 5, int NT = kThreads, bool kWide = true>
__global__ void __launch_bounds__(NT, 1) chunk_prepare(Workspace ws, const T* __restrict__ q,
                                                              const T* __restrict__ k, const T* __restrict__ v,
                                                              const float* __restrict__ g, const T* __restrict__ b,
                                                              const T* __restrict__ w,
                                                              const int64_t* cu_seqlens, int64_t T_len, int H, int HV,
                                                              int V, float scale) {
  constexpr int C = kChunk, KP = prepare_kp<K, kVersion>();
  constexpr bool kV07 = kVersion >= 7, kV09 = kVersion >= 9, kV10 = kVersion >= 10, kV16 = kVersion >= 16 && kWide;
  constexpr bool kV18 = kVersion >= 18 && std::is_same_v<T, __nv_bfloat16>;  // 2c on tensor cores (bf16 storage)
  constexpr bool kV21 = kVersion >= 21;  // with ws.Qf: Q_γ, A_qk in fragment order; Q_γ, Y, K_tail rounded to TF32
  constexpr bool kV23 = kVersion >= 23;  // exp(g) once per (row, channel), in the load phase
  constexpr bool kV25 = kVersion >= 25 && NT == 512;  // with ws.Qf: Y = AĒ and U = AZ on tensor cores
  constexpr int AS = prepare_as<kVersion>();          // row stride of A
  constexpr bool kV26 = kVersion >= 26 && NT == 512;  // the diagonal blocks' rounds unrolled (no per-pair branches)
  constexpr bool kV27 = kVersion >= 27 && kV16;       // Z's loads issued before 2b, converted after 2c
  constexpr bool kV29 = kVersion >= 29 && kV16;       // the fused forward's Ē and K_tail loop without branches
  constexpr bool kV30 = kVersion >= 30 && kV18 && kV26;  // bf16: diagonal blocks factorised on tensor cores
  extern __shared__ __align__(16) float smem[];
  float* s_q = smem;                     // [C][K]  q̃ → q̃⊙c (for A_qk)
  float* s_k = s_q + C * KP;             // [C][K]  k → k⊙a
  float* s_e = s_k + C * KP;             // [C][K]  e = b⊙k → e⊙c → Ē
  float* s_g = s_e + C * KP;             // [C][K]  g → (version 10) Z = W ⊙ V, K value columns at a time
  float* s_T = s_g + C * KP;             // [C][C]  T → A
  float* s_Aqk = s_T + C * C;            // [C][C]  A_qk
  float* s_Z = s_Aqk + C * C;            // [C][kZSlice] a slice of Z = W ⊙ V
  float* s_bs = s_Z + C * kZSlice;       // [kNumSub][K] sub-chunk sums of g
  float* s_pre = s_bs + kNumSub * K;     // [kNumSub][K] exp(Σ of sub-chunks before I)
  float* s_suf = s_pre + kNumSub * K;    // [kNumSub][K] exp(Σ of sub-chunks after J) (for K_tail)
  float* s_mid = s_suf + kNumSub * K;    // [kNumSub][kNumSub][K]
  float* s_Ainv = s_mid + kNumSub * kNumSub * K;  // [C][C] A = (I + T)⁻¹ (version 07; 05-06 solve in place in s_T)
  // Version 23: exp(g) [C][K] (rows K apart) from the load phase to the diagonal blocks, in the space of s_Z .. s_Ainv,
  // which is first written after them.
  float* s_x = s_Z;
  static_assert(kNumSub * kNumSub * K + 3 * kNumSub * K + kChunk * kZSlice + kChunk * kChunk >= kChunk * K, "room");
  // (version 26 reads up to three rows past the last, into s_Ainv, which is first written after the diagonal blocks)
  static_assert(kNumSub * kNumSub * K + 3 * kNumSub * K + kChunk * kZSlice + kChunk * AS >= (kChunk + 3) * K, "room");

  const int tid = threadIdx.x, hv = blockIdx.y, n = blockIdx.z, h = hv / (HV / H);
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t c0 = int64_t(blockIdx.x) * C;
  if (c0 >= span.length) return;
  const int L = int(span.length - c0 < C ? span.length - c0 : C);
  const int64_t row0 = span.row0 + c0;
  // Version 30: per sub-chunk, the first row with a gate below −kGateBound (kSub: none), in the last floats of A's
  // tile, which nothing touches before the block inverse (2a reads at most three rows past s_x's C·K floats).
  int* s_first = reinterpret_cast<int*>(s_Ainv + C * AS - kNumSub);
  static_assert(kNumSub * kNumSub * K + 3 * kNumSub * K + kChunk * kZSlice + kChunk * AS >= (kChunk + 3) * K + kNumSub,
                "room");
  if (kV30 && tid < kNumSub) s_first[tid] = kSub;
  // 1. Load (kBatch independent loads per thread before any store); rows ≥ L are zero (and g = 0).
  static_assert((C * K) % (NT * kBatch) == 0, "whole batches");
  if constexpr (kV16) {
    // Version 16: 8 consecutive channels per load (16 bytes of bf16; two float4 of float32) and 4 per shared store.
    // The stall profile of version 15 put an eighth of the kernel in this phase, mostly in the index arithmetic and
    // issue of 4-byte loads (and another eighth in the 4-byte stores of Ē, Q_γ, K_tail below). Same values, same bits.
    ChunkInputs8<K, NT> tiles;
    tiles.load(q, k, b, g, row0, H, h, L, tid);
    tiles.template store<KP>(s_q, s_k, s_e, s_g, scale, tid, kV23 ? s_x : nullptr);
  } else
  for (int base = 0; base < C * K; base += NT * kBatch) {
    float qv[kBatch], kv[kBatch], bv[kBatch], gv[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = base + u * NT + tid, r = i / K, d = i % K;
      const bool in = r < L;
      const int64_t idx = ((span.row0 + c0 + r) * H + h) * K + d;
      qv[u] = in ? scale * to_float(q[idx]) : 0.f;
      kv[u] = in ? to_float(k[idx]) : 0.f;
      bv[u] = in ? to_float(b[idx]) : 0.f;
      gv[u] = in ? g[idx] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int i = base + u * NT + tid, j = (i / K) * KP + i % K;
      s_q[j] = qv[u], s_k[j] = kv[u], s_e[j] = bv[u] * kv[u], s_g[j] = gv[u];
      if (kV23) s_x[i] = expf(gv[u]);  // (i = r·K + d)
    }
  }
  __syncthreads();
  // Version 30 (bf16 storage): the diagonal blocks of T and A_qk are computed after 2b as products on tensor cores,
  // factorised from each sub-chunk's start (chunk_diagonal_blocks_mma), for every row before its sub-chunk's first
  // gate below −kGateBound; 2a's running products (the largest phase of prepare, 17% of its stall samples and 22% of
  // its instructions; docs/performance-design.md) run only in chunks that have such a gate (g = −inf, a reset), for
  // the rows from it on. Here each thread finds the first such row of each sub-chunk among its entries.
  bool exact_rows = !kV30;
  if constexpr (kV30) {
    static_assert((C * K) % NT == 0 && NT % K == 0, "whole rows per round");
    int first[kNumSub];
#pragma unroll
    for (int M = 0; M < kNumSub; ++M) first[M] = kSub;
#pragma unroll
    for (int u = 0; u < C * K / NT; ++u) {
      const int i = u * NT + tid, r = i / K;
      if (!(s_g[r * KP + i % K] >= -kGateBound)) first[r / kSub] = min(first[r / kSub], r % kSub);  // (NaN too)
    }
    bool any = false;
#pragma unroll
    for (int M = 0; M < kNumSub; ++M)
      if (first[M] < kSub) atomicMin(s_first + M, first[M]), any = true;
    exact_rows = __syncthreads_or(any);
  }
  // 2a-2c (chunk_tiles.cuh): T and A_qk with exact decays, and the per-channel factors, as version 04.
  if (exact_rows) {
    if (kV10)
      chunk_diagonal_blocks_grouped<K, KP, NT, (kVersion >= 14), kV26>(s_T, s_Aqk, s_q, s_k, s_e, s_g, tid,
                                                                       kV23 ? s_x : nullptr);
    else
      chunk_diagonal_blocks<K, KP, NT>(s_T, s_Aqk, s_q, s_k, s_e, s_g, tid);
    __syncthreads();
  }
  // Version 10: g is no longer needed after 2b, so its tile takes the first K value columns of Z = W ⊙ V, for U = AZ
  // in one product instead of V / 32 (when K divides V). The loads are issued before 2c and land while it runs.
  // Version 27: before 2b, kept as loaded (Raw8) until after 2c. Until then the product w ⊙ v came right after the
  // loads, so each warp waited for them there, before 2c (PRMT, unpacking bf16: a third of that phase's stall samples
  // in 26's profile). The same products: the same bits.
  constexpr int kZPer = C * K / NT, kZPer8 = C * K / 8 / NT;
  const bool z_wide = kV10 && V % K == 0;
  Raw8<T> w_raw[kV27 ? kZPer8 : 1], v_raw[kV27 ? kZPer8 : 1];
  if (kV27 && z_wide)
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
  chunk_decay_factors<K, KP, NT, kV30>(s_q, s_k, s_e, s_g, s_bs, s_pre, s_suf, s_mid, tid);
  __syncthreads();
  float zr[kV10 ? kZPer : 1];
  if (!kV27 && kV16 && z_wide)  // version 16: 8 value columns per load, as the tiles above
#pragma unroll
    for (int u = 0; u < kZPer8; ++u) {
      const int i = u * NT + tid, r = i / (K / 8), c = (i % (K / 8)) * 8;
      float wv[8] = {}, vv[8] = {};  // rows past the chunk's end: 0 · 0
      if (r < L) {
        const int64_t idx = ((row0 + r) * HV + hv) * V + c;
        load8(wv, w + idx), load8(vv, v + idx);
      }
#pragma unroll
      for (int j = 0; j < 8; ++j) zr[u * 8 + j] = wv[j] * vv[j];
    }
  else if (!kV27 && z_wide)
#pragma unroll
    for (int u = 0; u < kZPer; ++u) {
      const int i = u * NT + tid, r = i / K, c = i % K;
      const int64_t idx = ((row0 + r) * HV + hv) * V + c;
      zr[u] = r < L ? to_float(w[idx]) * to_float(v[idx]) : 0.f;
    }
  if constexpr (kV30) {
    chunk_off_diagonal_blocks_mma<K, KP, NT>(s_T, s_Aqk, s_q, s_k, s_e, s_mid, tid);
    chunk_diagonal_blocks_mma<K, KP, NT>(s_T, s_Aqk, s_q, s_e, s_g, s_first, tid);  // k ⊙ exp(−P) in g's tile
    __syncthreads();  // before Z takes g's tile
  } else if constexpr (kV18)
    chunk_off_diagonal_blocks_mma<K, KP, NT>(s_T, s_Aqk, s_q, s_k, s_e, s_mid, tid);
  else if (kV09)
    chunk_off_diagonal_blocks_tiled<K, KP, NT>(s_T, s_Aqk, s_q, s_k, s_e, s_mid, tid);
  else
    chunk_off_diagonal_blocks<K, KP, NT>(s_T, s_Aqk, s_q, s_k, s_e, s_mid, tid);
  if (kV27 && z_wide)
#pragma unroll
    for (int u = 0; u < kZPer8; ++u) {
      const int i = u * NT + tid, at = (i / (K / 8)) * KP + (i % (K / 8)) * 8;
      float wv[8], vv[8], z[8];
      w_raw[u].floats(wv), v_raw[u].floats(vv);
#pragma unroll
      for (int j = 0; j < 8; ++j) z[j] = wv[j] * vv[j];
      store4(s_g + at, z), store4(s_g + at + 4, z + 4);
    }
  else if (kV16 && z_wide)
#pragma unroll
    for (int u = 0; u < kZPer8; ++u) {
      const int i = u * NT + tid, at = (i / (K / 8)) * KP + (i % (K / 8)) * 8;
      store4(s_g + at, zr + u * 8), store4(s_g + at + 4, zr + u * 8 + 4);
    }
  else if (z_wide)
#pragma unroll
    for (int u = 0; u < kZPer; ++u) s_g[((u * NT + tid) / K) * KP + (u * NT + tid) % K] = zr[u];
  __syncthreads();
  if (kV29 && kFull && ws.Qf) {
    // Version 29, the fused forward (nothing row-major but K_tail, no Ē kept): the loop below with its runtime
    // branches taken out — `r < L` guarded loads, products and three stores, two of them under tests of ws.Qg and
    // ws.Ebar, so each iteration carried nested divergence handling (BSSY: a fifth of that phase's stall samples in 27's
    // profile). Here only the store of K_tail is guarded; the products are the same: the same bits.
    static_assert((C * K / 4) % NT == 0, "whole rounds");
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
  } else if constexpr (kV16) {  // the loop below, 4 channels per load and store
    for (int i = tid; i < C * K / 4; i += NT) {
      const int r = i / (K / 4), d = (i % (K / 4)) * 4;
      const float4 pre = *reinterpret_cast<const float4*>(s_pre + (r / kSub) * K + d);
      float4 e = *reinterpret_cast<const float4*>(s_e + r * KP + d);
      e.x *= pre.x, e.y *= pre.y, e.z *= pre.z, e.w *= pre.w;
      *reinterpret_cast<float4*>(s_e + r * KP + d) = e;
      if (kFull && r < L) {
        const int64_t at = ((row0 + r) * HV + hv) * K + d;
        const float4 qc = *reinterpret_cast<const float4*>(s_q + r * KP + d);
        const float4 ka = *reinterpret_cast<const float4*>(s_k + r * KP + d);
        const float4 suf = *reinterpret_cast<const float4*>(s_suf + (r / kSub) * K + d);
        if (!ws.Qf)
          *reinterpret_cast<float4*>(ws.Qg + at) = make_float4(qc.x * pre.x, qc.y * pre.y, qc.z * pre.z, qc.w * pre.w);
        float4 kt = make_float4(ka.x * suf.x, ka.y * suf.y, ka.z * suf.z, ka.w * suf.w);
        if (kV21 && ws.Qf)  // version 21's fused pass takes K_tail (and Y, Q_γ) already rounded to TF32
          kt = make_float4(round_tf32(kt.x), round_tf32(kt.y), round_tf32(kt.z), round_tf32(kt.w));
        *reinterpret_cast<float4*>(ws.Kt + at) = kt;
        if (ws.Ebar) *reinterpret_cast<float4*>(ws.Ebar + at) = e;
      }
    }
  } else
  for (int i = tid; i < C * K; i += NT) {  // Ē = γ ⊙ e (γ_r = pre(I)·c_r, Eq. 20)
    const int r = i / K, d = i % K;
    s_e[r * KP + d] *= s_pre[(r / kSub) * K + d];
    if (kFull && r < L) {
      // Q_γ = γ ⊙ q̃ (Eq. 24) and K_tail = (γ_C/γ_r) ⊙ k = suf(J)·a_r·k (Eq. 23), for the pass and output kernels.
      const int64_t at = ((span.row0 + c0 + r) * HV + hv) * K + d;
      if (!ws.Qf) ws.Qg[at] = s_q[r * KP + d] * s_pre[(r / kSub) * K + d];
      const float kt = s_k[r * KP + d] * s_suf[(r / kSub) * K + d];
      ws.Kt[at] = kV21 && ws.Qf ? round_tf32(kt) : kt;
      if (ws.Ebar) ws.Ebar[at] = s_e[r * KP + d];  // the backward's recompute keeps Ē (Eq. 20)
    }
  }
  if (kV21 && kFull && ws.Qf) {  // Q_γ in fragment order for the fused pass (the products above, rounded to TF32;
    // either load path)
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
  }
  if (kFull)
    for (int d = tid; d < K; d += NT) {
      float total = 0;
      for (int M = 0; M < kNumSub; ++M) total += s_bs[M * K + d];
      ws.gC[(chunk_slot(span.row0, n, blockIdx.x) * HV + hv) * K + d] = expf(total);
    }
  // 3. A = (I + T)⁻¹ (Eq. 21).
  if (kV07) {
    // Version 07, by blocks instead of one barrier per row (chunk_tiles.cuh); Z's tile is the scratch (loaded later).
    block_inverse<NT, AS>(s_Ainv, s_T, s_Z, tid);
  } else {
    // Versions 05-06: forward substitution in place, one barrier per row.
    for (int r = 1; r < C; ++r) {
      float a = 0;
      if (tid < r)
        for (int s = tid; s < r; ++s) a -= s_T[r * C + s] * (s == tid ? 1.f : s_T[s * C + tid]);
      __syncthreads();
      if (tid < r) s_T[r * C + tid] = a;
    }
    __syncthreads();
    for (int r = tid; r < C; r += NT) s_T[r * C + r] = 1.f;
    __syncthreads();
  }
  const float* s_A = kV07 ? s_Ainv : s_T;
  if (kFull && ws.A) {  // the backward's recompute keeps A = (I + T)⁻¹ (Eq. 21), zeros above the diagonal included
    if constexpr (kV16)
      for (int i = tid; i < L * C / 4; i += NT)
        *reinterpret_cast<float4*>(ws.A + ((row0 + i / (C / 4)) * HV + hv) * C + (i % (C / 4)) * 4) =
            *reinterpret_cast<const float4*>(s_A + (i / (C / 4)) * AS + (i % (C / 4)) * 4);
    else
      for (int i = tid; i < L * C; i += NT) ws.A[((row0 + i / C) * HV + hv) * C + i % C] = s_A[(i / C) * AS + i % C];
  }
  // 4. Y = A Ē (Eq. 22) and A_qk to the workspace.
  if (kV25 && ws.Qf) {
    if constexpr (kV25) lower_product_mma<K, KP, AS, NT, true>(s_A, s_e, ws.Y + (row0 * HV + hv) * K, int64_t(HV) * K, L, tid);
  } else if (kV10) {
    constexpr int TM = C / (NT / 32), TN = K / 32;
    float acc[TM][TN] = {};
    lower_product_lanes<K, NT>(acc, s_A, AS, s_e, KP, tid);
    const int m0 = (tid / 32) * TM, lane = tid % 32;
#pragma unroll
    for (int i = 0; i < TM; ++i)
      if (m0 + i < L)
#pragma unroll
        for (int j = 0; j < TN; ++j)
          ws.Y[((row0 + m0 + i) * HV + hv) * K + lane + 32 * j] = kV21 && ws.Qf ? round_tf32(acc[i][j]) : acc[i][j];
  } else {
    constexpr int TM = 4, TN = C * K / (TM * NT);
    float acc[TM][TN] = {};
    tile_product<C, K, TM, TN, true, NT>(acc, s_A, AS, 1, s_e, KP, C, tid);
    const int m0 = (tid / (K / TN)) * TM, n0 = (tid % (K / TN)) * TN;
#pragma unroll
    for (int i = 0; i < TM; ++i)
      if (m0 + i < L)
#pragma unroll
        for (int j = 0; j < TN; ++j) ws.Y[((row0 + m0 + i) * HV + hv) * K + n0 + j] = acc[i][j];
  }
  if (kV21 && ws.Af) {  // A_qk in fragment order for the fused pass: k-steps up to the diagonal block's
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
  } else if constexpr (kV16)
    for (int i = tid; i < L * C / 4; i += NT)
      *reinterpret_cast<float4*>(ws.Aqk + ((row0 + i / (C / 4)) * HV + hv) * C + (i % (C / 4)) * 4) =
          *reinterpret_cast<const float4*>(s_Aqk + 4 * i);
  else
    for (int i = tid; i < L * C; i += NT) ws.Aqk[((row0 + i / C) * HV + hv) * C + i % C] = s_Aqk[i];
  // 5. U = A Z (Eq. 22), a slice of value columns at a time: version 10 K columns (the first already in s_g).
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
      if (kV25 && ws.Qf) {
        if constexpr (kV25)
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
  for (int col0 = 0; col0 < V; col0 += kZSlice) {
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
    constexpr int TM = NT == 256 ? 4 : 2, TN = C * kZSlice / (TM * NT);
    float acc[TM][TN] = {};
    tile_product<C, kZSlice, TM, TN, true, NT>(acc, s_A, AS, 1, s_Z, kZSlice, C, tid);
    const int m0 = (tid / (kZSlice / TN)) * TM, n0 = (tid % (kZSlice / TN)) * TN;
#pragma unroll
    for (int i = 0; i < TM; ++i)
      if (m0 + i < L)
#pragma unroll
        for (int j = 0; j < TN; ++j) ws.U[((row0 + m0 + i) * HV + hv) * V + col0 + n0 + j] = acc[i][j];
    __syncthreads();
  }
}

// Kernel 2: the sequential pass over the chunks of one sequence for one value head and VS value columns.
template <int K, int VS, typename T>
__global__ void __launch_bounds__(kThreads, 1) chunk_state_pass(T* o, float* ht, Workspace ws, const T* __restrict__ q,
                                                                 const T* __restrict__ k, const float* __restrict__ g, const float* h0,
                                                                 const int64_t* cu_seqlens, int64_t T_len, int H,
                                                                 int HV, int V, float scale) {
  constexpr int C = kChunk, KP = K + 1;
  extern __shared__ float smem[];
  float* s_q = smem;                 // [C][K]  q̃ → Q_γ
  float* s_k = s_q + C * KP;         // [C][K]  k → K_tail
  float* s_y = s_k + C * KP;         // [C][K]  Y
  float* s_A = s_y + C * KP;         // [C][C]  A_qk
  float* s_U = s_A + C * C;          // [C][VS] U → R
  float* s_S = s_U + C * VS;         // [K][VS] state slice
  float* s_gC = s_S + K * VS;        // [K]     γ_C

  const int tid = threadIdx.x;
  const int col0 = blockIdx.x * VS, hv = blockIdx.y, n = blockIdx.z, h = hv / (HV / H);
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t state = (int64_t(n) * HV + hv) * K * V;
  for (int i = tid; i < K * VS; i += kThreads) s_S[i] = h0 ? h0[state + int64_t(i / VS) * V + col0 + i % VS] : 0.f;

  for (int64_t c0 = 0; c0 < span.length; c0 += C) {
    const int L = int(span.length - c0 < C ? span.length - c0 : C);
    const int64_t row0 = span.row0 + c0;
    static_assert((C * K) % (kThreads * kBatch) == 0, "whole batches");
    for (int base = 0; base < C * K; base += kThreads * kBatch) {
      float qv[kBatch], kv[kBatch], yv[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = base + u * kThreads + tid, r = i / K, d = i % K;
        const bool in = r < L;
        const int64_t idx = ((row0 + r) * H + h) * K + d;
        qv[u] = in ? scale * to_float(q[idx]) : 0.f;
        kv[u] = in ? to_float(k[idx]) : 0.f;
        yv[u] = in ? ws.Y[((row0 + r) * HV + hv) * K + d] : 0.f;
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = base + u * kThreads + tid, j = (i / K) * KP + i % K;
        s_q[j] = qv[u], s_k[j] = kv[u], s_y[j] = yv[u];
      }
    }
    for (int base = 0; base < C * C; base += kThreads * kBatch) {
      float av[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int i = base + u * kThreads + tid;
        av[u] = i / C < L ? ws.Aqk[((row0 + i / C) * HV + hv) * C + i % C] : 0.f;
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) s_A[base + u * kThreads + tid] = av[u];
    }
    for (int i = tid; i < C * VS; i += kThreads)
      s_U[i] = i / VS < L ? ws.U[((row0 + i / VS) * HV + hv) * V + col0 + i % VS] : 0.f;
    __syncthreads();
    // Q_γ = exp(Σ_{i≤r} g_i) ⊙ q̃ and γ_C (one thread per channel); K_tail = exp(Σ_{i>r} g_i) ⊙ k (another). g is
    // read straight from global memory (kBatch rows at a time), which keeps the shared tiles small enough for
    // VS = 128 (one block per (sequence, head) when there are enough of them).
    if (tid < 2 * K) {
      const int d = tid % K;
      const bool prefix = tid < K;
      float run = 0;
      for (int r0 = 0; r0 < C; r0 += kBatch) {
        float gv[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int r = prefix ? r0 + u : C - 1 - r0 - u;
          gv[u] = r < L ? g[((row0 + r) * H + h) * K + d] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
          const int r = prefix ? r0 + u : C - 1 - r0 - u;
          if (prefix) {
            run += gv[u];
            s_q[r * KP + d] *= expf(run);
          } else {
            s_k[r * KP + d] *= expf(run);
            run += gv[u];
          }
        }
      }
      if (prefix) s_gC[d] = expf(run);
    }
    __syncthreads();
    constexpr int TM = 4, TN = VS / 16;
    // R = U − Y S (Eq. 23), over U once every thread has read its tile.
    {
      float acc[TM][TN];
      const int m0 = (tid / (VS / TN)) * TM, n0 = (tid % (VS / TN)) * TN;
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = s_U[(m0 + i) * VS + n0 + j];
      tile_product<C, VS, TM, TN>(acc, s_y, KP, 1, s_S, VS, K, tid, -1.f);
      __syncthreads();
      store_tile<VS, TM, TN>(acc, s_U, VS, tid);
    }
    __syncthreads();
    // O = Q_γ S + A_qk R (Eq. 24).
    {
      float acc[TM][TN] = {};
      tile_product<C, VS, TM, TN>(acc, s_q, KP, 1, s_S, VS, K, tid);
      tile_product<C, VS, TM, TN, true>(acc, s_A, C, 1, s_U, VS, C, tid);
      const int r0 = (tid / (VS / TN)) * TM, c1 = (tid % (VS / TN)) * TN;
#pragma unroll
      for (int i = 0; i < TM; ++i)
        if (r0 + i < L)
#pragma unroll
          for (int j = 0; j < TN; ++j) o[((row0 + r0 + i) * HV + hv) * V + col0 + c1 + j] = from_float<T>(acc[i][j]);
    }
    // S ← Diag(γ_C) S + K_tailᵀ R (Eq. 23).
    {
      constexpr int SM = K / 16;
      float acc[SM][TN] = {};
      tile_product<K, VS, SM, TN>(acc, s_k, 1, KP, s_U, VS, C, tid);
      const int d0 = (tid / (VS / TN)) * SM, c1 = (tid % (VS / TN)) * TN;
      __syncthreads();  // every thread has read S
#pragma unroll
      for (int i = 0; i < SM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) {
          float& st = s_S[(d0 + i) * VS + c1 + j];
          st = s_gC[d0 + i] * st + acc[i][j];
        }
    }
    __syncthreads();
  }
  if (ht)
    for (int i = tid; i < K * VS; i += kThreads) ht[state + int64_t(i / VS) * V + col0 + i % VS] = s_S[i];
}


// [SECTION] version 06 ----------------------------------------------------------------------------------------------
// Version 05's pass stalled on global-memory latency (one block per SM, loads issued chunk by chunk). Version 06
// keeps only the state recurrence in the sequential kernel and prefetches the next chunk while it computes:
//   pass:   S_n → workspace;  R = U − Y S_n (→ workspace, over U);  S ← Diag(γ_C) S + K_tailᵀ R
//           with Y, K_tail, U, γ_C of chunk c+1 copied into the other half of a double buffer by cp.async;
//   output: O = Q_γ S_n + A_qk R for every chunk in parallel (Eq. 24), two blocks per SM.

// Row strides of the pass's tiles. Rows stay 16-byte aligned for cp.async. Version 13 (kMma) pads them for the mma
// fragments' reads, whose 32 lanes then hit 32 different banks: Y is read along its rows (stride ≡ 4 mod 32), K_tail
// down its columns and S, R as B operands (stride ≡ 8 mod 32).
template <int K, int VS, bool kMma>
struct PassLayout {
  static constexpr int KPY = K + 4, KPK = kMma ? K + 8 : K + 4, VSP = kMma ? VS + 8 : VS;
  static constexpr int kBuf = kChunk * KPY + kChunk * KPK + kChunk * VSP + K;
  static constexpr size_t floats = 2 * kBuf + K * VSP;
};
template <int K, int VS, bool kMma = false>
constexpr size_t pass06_smem_floats() {
  return PassLayout<K, VS, kMma>::floats;
}

// Version 15 (bf16 storage): O = Q_γ S_n + A_qk R on tensor cores (mma.sync m16n8k8, TF32 operands rounded to nearest,
// fp32 accumulation). By count version 12's 4 × 4 register tiles move 2 bytes of shared memory per multiply-add, about
// 7 µs per block at 128 bytes per clock — with about 124 blocks per SM, the kernel's measured 0.96 ms; the fragments
// move about a quarter of that. 8 warps as 4 × 2: rows wm .. wm + 15, NTW tiles of 8 columns from wn. A session-4 try
// kept the diagonal 16 × 16 blocks of A_qk R on CUDA cores (a serial chain of shared loads per lane) and lost; here
// they are on the mma too, which cannot skip the terms above A_qk's diagonal, so two guards keep prefix causality
// bitwise:
//   - A_qk's entries above the diagonal (not stored: garbage in the workspace) are selected as 0 in the fragment;
//   - an overflowed future row of R (inf or NaN; 0 · inf = NaN) is read as 0 by the mma, and only the sums that meet
//     one at s ≤ r get its terms A_qk[r][s] R[s][n] added back on CUDA cores. A finite row's terms above the diagonal
//     are exact zeros, so either way the sum for row r does not depend on rows s > r.
// Prediction: output 0.96 -> 0.6-0.65 ms at B = 8, T = 4096; measured (Nsight Compute): 0.62 ms, DRAM 84% busy.
//
// This is the A_qk R half (Q_γ S_n comes first, by warp_mma_rows). A_qk reaches it through accessors, so that the
// output kernel (A_qk in shared memory) and the fused pass of version 21 (in registers, loaded while R is computed)
// run the same sums in the same order — the same bits. With g = lane / 4, t = lane % 4, r0 = wm + g, r1 = r0 + 8 and
// k0 the k-step's first column, fragment value j = 0 .. 3 is A_qk at (r0, k0 + t), (r1, k0 + t), (r0, k0 + t + 4),
// (r1, k0 + t + 4):
//   a_left(ks, j):  k0 = 8 ks, for the blocks left of the warp's diagonal block (8 ks < wm);
//   a_diag(i, j):   k0 = wm + 8 i (i = 0, 1), the diagonal block, before its guard;
//   a_at(r, s):     A_qk[r][s] for the rare fix-up (r, s in the diagonal block, s ≤ r).
// kRRounded: R holds values already rounded to TF32 (the fused pass of version 21), used as they are.
template <bool kRRounded = false, int NTW, class ALeft, class ADiag, class AAt>
__device__ __forceinline__ void output_intra_mma(float (&cf)[NTW][4], ALeft a_left, ADiag a_diag, AAt a_at,
                                                 const float* s_R, int r_ld, int wm, int wn) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  auto op = [](float x) { return tf32_operand<kRRounded>(x); };
  // The blocks left of the warp's diagonal block, whose terms all have s < r.
#pragma unroll
  for (int ks = 0; ks < kChunk / 8 - 2; ++ks)
    if (8 * ks < wm) {
      const int k0 = 8 * ks;
      const uint32_t af[4] = {to_tf32(a_left(ks, 0)), to_tf32(a_left(ks, 1)), to_tf32(a_left(ks, 2)),
                              to_tf32(a_left(ks, 3))};
#pragma unroll
      for (int nt = 0; nt < NTW; ++nt)
        mma_tf32(cf[nt], af, op(s_R[(k0 + t) * r_ld + wn + nt * 8 + g]), op(s_R[(k0 + t + 4) * r_ld + wn + nt * 8 + g]));
    }
  // The diagonal block, s and r in wm .. wm + 15, with both guards.
  bool overflow = false;
  auto finite_or_0 = [&](float x) {
    const bool ok = isfinite(x);
    overflow |= !ok;
    return ok ? x : 0.f;
  };
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int k0 = wm + 8 * i, r0 = wm + g, r1 = wm + g + 8, s0 = k0 + t, s1 = k0 + t + 4;
    const uint32_t af[4] = {to_tf32(s0 <= r0 ? a_diag(i, 0) : 0.f), to_tf32(s0 <= r1 ? a_diag(i, 1) : 0.f),
                            to_tf32(s1 <= r0 ? a_diag(i, 2) : 0.f), to_tf32(s1 <= r1 ? a_diag(i, 3) : 0.f)};
#pragma unroll
    for (int nt = 0; nt < NTW; ++nt)
      mma_tf32(cf[nt], af, op(finite_or_0(s_R[s0 * r_ld + wn + nt * 8 + g])),
               op(finite_or_0(s_R[s1 * r_ld + wn + nt * 8 + g])));
  }
  if (__any_sync(0xffffffffu, overflow)) {  // rare: some R in the diagonal block is not finite
#pragma unroll
    for (int nt = 0; nt < NTW; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {  // c[e]: row g + 8·(e / 2), column 2t + e % 2
        const int r = wm + g + 8 * (e / 2), col = wn + nt * 8 + 2 * t + e % 2;
        for (int s = wm; s <= r; ++s) {
          const float x = s_R[s * r_ld + col];
          if (!isfinite(x)) cf[nt][e] += a_at(r, s) * x;
        }
      }
  }
}

// A warp's O fragments (rows wm + g, + 8; columns wn + nt·8 + 2t, + 1) to o (bf16 pairs rounded as from_float rounds),
// rows below L only; o points at row 0, column 0 of the chunk's slice, rows o_rs apart.
template <int NTW, typename T>
__device__ __forceinline__ void store_output_fragments(const float (&cf)[NTW][4], T* o, int64_t o_rs, int wm, int wn,
                                                       int L) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int nt = 0; nt < NTW; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = wm + lane / 4 + 8 * h, col = wn + nt * 8 + 2 * (lane % 4);
      if (r < L) {
        T* out = o + r * o_rs + col;
        out[0] = from_float<T>(cf[nt][2 * h]), out[1] = from_float<T>(cf[nt][2 * h + 1]);
      }
    }
}

// kVec: version 12, tile_product_vec (same bits). kMma: version 13 with bf16 storage — the two products on tensor
// cores (mma.sync TF32, fp32 accumulation; the state itself stays fp32 in shared memory). kWideStores: version 20 —
// S_n to the workspace by float4 (8 per thread instead of 32 scalar stores, each with its own index arithmetic) and R
// by float2 from the fragments. Nsight Compute's stall samples of 19's pass (session 8): 55% in the phase that stores
// S_n and computes and stores R, its top instructions IMAD, LEA and STG. Same values: same bits.
//
// kOutput (version 21, with kMma, for a forward that keeps no workspace): the pass also computes O = Q_γ S_n + A_qk R
// (Eq. 24), so the output kernel does not run, and S_n and R never leave the chip. Its shared memory is full (207 KB),
// so Q_γ and A_qk come straight into registers as mma fragments, which prepare wrote in fragment order (ws.Qf, ws.Af),
// from L2 (a bulk prefetch one chunk ahead), each loaded for the next chunk as soon as this chunk's has been used.
// Q_γ S_n shares its B fragments (S_n) with R = U − Y S_n (warp_mma_rows_pair); A_qk R is the output kernel's
// output_intra_mma with its guards, so O has version 18's (and 20's) bits. Its operands Y, K_tail, Q_γ (from prepare)
// and R come rounded to TF32 where they are stored, so only S_n's fragments are converted at each read. Prediction
// (docs/cuda.md, written before the run): the output kernel's 0.61 ms and 0.8 GB of S_n and R stores go; the pass
// grows from 1.05 to 1.3-1.5 ms (Nsight Compute, B = 8, T = 4096): the forward −0.2 to −0.4 ms. Measured: pass and
// output 1.05 + 0.61 -> 0.98 ms; the forward 2.93 -> 2.61 ms (a first form with 4-byte fragment loads from the
// row-major workspace was slower than 20: each load touched 8 cache lines).
template <int K, int VS, bool kVec = false, bool kMma = false, bool kWideStores = false, typename TO = float,
          bool kOutput = false>
__global__ void __launch_bounds__(kThreads, 1) chunk_state_pass06(TO* o, float* ht, Workspace ws, const float* h0,
                                                                   const int64_t* cu_seqlens, int64_t T_len, int HV,
                                                                   int V) {
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
    if constexpr (kOutput) {
      // Version 21: the same copies with the index arithmetic hoisted — thread tid copies 16 bytes at column dk of
      // rows rk, rk + kRowsK, .. of Y and K_tail (and cv of rows rv, rv + kRowsV, .. of U), so a copy is a pointer
      // step. Stall samples of the first fused pass: 18% in this phase, its top instructions index arithmetic.
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
    } else {
      for (int i = tid; i < C * K / 4; i += kThreads) {
        const int r = i / (K / 4), d = (i % (K / 4)) * 4;
        const int64_t at = ((row0 + (r < L ? r : 0)) * HV + hv) * K + d;
        cp_async16(b_y + r * KPY + d, ws.Y + at, r < L);
        cp_async16(b_k + r * KPK + d, ws.Kt + at, r < L);
      }
      for (int i = tid; i < C * VS / 4; i += kThreads) {
        const int r = i / (VS / 4), c4 = (i % (VS / 4)) * 4;
        cp_async16(b_u + r * VSP + c4, ws.U + ((row0 + (r < L ? r : 0)) * HV + hv) * V + col0 + c4, r < L);
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
  // Version 21: Q_γ and A_qk fragments in registers, 16 bytes per load from prepare's fragment order (rows ≥ L are 0
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
    if (kStore && kWideStores) {  // rows of s_S and of S_n start 16-byte aligned (VSP, V and col0 multiples of 4)
      float* at = Sn + col0;
#pragma unroll 4
      for (int i = tid; i < K * VS / 4; i += kThreads) {
        const int d = i / (VS / 4), c4 = (i % (VS / 4)) * 4;
        *reinterpret_cast<float4*>(at + int64_t(d) * V + c4) = *reinterpret_cast<const float4*>(s_S + d * VSP + c4);
      }
    } else if (kStore) {
      for (int i = tid; i < K * VS; i += kThreads) Sn[int64_t(i / VS) * V + col0 + i % VS] = s_S[(i / VS) * VSP + i % VS];
    }
    constexpr int TM = 4, TN = VS / 16;
    if constexpr (kMma) {
      // Warp w: rows 16·(w % 4) .. + 15 of R and VS/2 columns from (w / 4)·VS/2 (VS/16 tiles of 8); then K/4 rows of
      // the state update (K/64 tiles of 16) and the same columns.
      constexpr int MTS = K / 64;
      const int ws0 = (warp % 4) * (K / 4);
      float of[NTW][4] = {};  // version 21: O
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
        store_fragments<NTW, kWideStores>(cf, b_u, VSP, ws.U + (row0 * HV + hv) * V + col0, int64_t(HV) * V, wm, wn,
                                          kStore ? L : 0);
      }
      __syncthreads();
      {  // S ← Diag(γ_C) S + K_tailᵀ R (Eq. 23): A(d, j) = K_tail[j][d], read down its columns
        float sf[MTS][NTW][4] = {};
        warp_mma_cols<MTS, NTW, kOutput>(sf, b_k, KPK, b_u, VSP, ws0, wn, C);  // (version 21: both rounded already)
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
      if constexpr (kVec)
        tile_product_vec<C, VS, TM, TN, true>(acc, b_y, KPY, s_S, VS, K, tid, -1.f);
      else
        tile_product<C, VS, TM, TN>(acc, b_y, KPY, 1, s_S, VS, K, tid, -1.f);
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
      if constexpr (kVec)
        tile_product_vec<K, VS, SM, TN, false>(acc, b_k, KPK, b_u, VS, C, tid);
      else
        tile_product<K, VS, SM, TN>(acc, b_k, 1, KPK, b_u, VS, C, tid);
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

// Row strides of the output kernel's tiles; rows stay 16-byte aligned for cp.async. Version 15 (kMma) pads them for
// the mma fragments, whose 32 lanes then hit 32 different banks: Q_γ and A_qk read along their rows (≡ 4 mod 32),
// S_n and R as B operands (≡ 8 mod 32).
template <int K, int VO, bool kMma>
struct OutputLayout {
  static constexpr int KP = K + 4, AP = kMma ? kChunk + 4 : kChunk, VP = kMma ? VO + 8 : VO;
  static constexpr size_t floats() { return size_t(kChunk) * KP + kChunk * AP + K * VP + kChunk * VP; }
};
template <int K, int VO, bool kMma = false>
constexpr size_t output06_smem_floats() {
  return OutputLayout<K, VO, kMma>::floats();
}

// O = Q_γ S_n + A_qk R for one chunk (block x), value head (y), sequence and value slice (z = n · V/VO + slice).
// kVec: version 12, tile_product_vec (same bits). kMma: version 15, tensor cores (bf16 storage). kAdjacent: version 19,
// the V / VO blocks of one chunk next to each other in launch order (block x = chunk · V/VO + slice), so they run at
// the same time and the second read of the chunk's Q_γ and A_qk is served by L2; before, block z = n · V/VO + slice put
// them HV · chunks blocks apart, in different waves (same bits).
template <int K, int VO, typename T, bool kVec = false, bool kMma = false, bool kAdjacent = false>
__global__ void __launch_bounds__(kThreads, 2) chunk_output06(T* o, Workspace ws, const int64_t* cu_seqlens,
                                                              int64_t T_len, int HV, int V) {
  using Lay = OutputLayout<K, VO, kMma>;
  constexpr int C = kChunk, KP = Lay::KP, AP = Lay::AP, VP = Lay::VP;
  extern __shared__ __align__(16) float smem[];
  float* s_q = smem;               // [C][KP] Q_γ
  float* s_A = s_q + C * KP;       // [C][AP] A_qk
  float* s_S = s_A + C * AP;       // [K][VP] S_n slice
  float* s_R = s_S + K * VP;       // [C][VP] R slice
  const int tid = threadIdx.x, hv = blockIdx.y, slices = V / VO;
  const int slice = kAdjacent ? blockIdx.x % slices : blockIdx.z % slices;
  const int n = kAdjacent ? blockIdx.z : blockIdx.z / slices, col0 = slice * VO;
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t c = kAdjacent ? blockIdx.x / slices : blockIdx.x, c0 = c * C;
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
  if constexpr (kVec) {
    tile_product_vec<C, VO, TM, TN, true>(acc, s_q, KP, s_S, VO, K, tid);
    tile_product_vec<C, VO, TM, TN, true, true>(acc, s_A, C, s_R, VO, C, tid);
  } else {
    tile_product<C, VO, TM, TN>(acc, s_q, KP, 1, s_S, VO, K, tid);
    tile_product<C, VO, TM, TN, true>(acc, s_A, C, 1, s_R, VO, C, tid);
  }
  const int r0 = (tid / (VO / TN)) * TM, c1 = (tid % (VO / TN)) * TN;
#pragma unroll
  for (int i = 0; i < TM; ++i)
    if (r0 + i < L)
#pragma unroll
      for (int j = 0; j < TN; ++j) o[((row0 + r0 + i) * HV + hv) * V + col0 + c1 + j] = from_float<T>(acc[i][j]);
}

// The prepare kernel and the version-06 state pass on a workspace the caller allocated (ht may be null). kFuse
// (version 21, bf16 storage, ws.Qf and ws.Af allocated): the pass writes O instead of S_n and R.
template <int K, int VS, typename T, int kVersion, int kPrepareThreads, bool kWide = true, bool kFuse = false>
void run_prepare_and_pass(const Workspace& ws, void* o, float* ht, const void* q, const void* k, const void* v,
                          const float* g, const void* b, const void* w, const float* h0, const int64_t* cu,
                          const Problem& p, cudaStream_t stream) {
  const float scale = default_scale(p);
  const unsigned max_chunks = unsigned((p.T + kChunk - 1) / kChunk);
  constexpr size_t bytes = prepare_smem_floats<K, prepare_kp<K, kVersion>(), prepare_as<kVersion>()>() * sizeof(float);
  auto kernel = chunk_prepare<K, T, true, kVersion, kPrepareThreads, kWide>;
  GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  kernel<<<dim3(max_chunks, unsigned(p.HV), unsigned(p.N)), kPrepareThreads, bytes, stream>>>(
      ws, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), g, static_cast<const T*>(b),
      static_cast<const T*>(w), cu, p.T, int(p.H), int(p.HV), int(p.V), scale);
  GDN2_CUDA_CHECK_LAUNCH();
  {
    constexpr bool kMma = kVersion >= 13 && std::is_same_v<T, __nv_bfloat16>;
    constexpr size_t bytes = pass06_smem_floats<K, VS, kMma>() * sizeof(float);
    static_assert(!kFuse || kMma, "the fused output runs on the tensor-core pass");
    using TO = std::conditional_t<kFuse, T, float>;  // (o's type matters only to the fused pass)
    auto kernel = chunk_state_pass06<K, VS, (kVersion >= 12), kMma, (kVersion >= 20), TO, kFuse>;
    GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    kernel<<<dim3(unsigned(p.V / VS), unsigned(p.HV), unsigned(p.N)), kThreads, bytes, stream>>>(
        static_cast<TO*>(o), ht, ws, h0, cu, p.T, int(p.HV), int(p.V));
    GDN2_CUDA_CHECK_LAUNCH();
  }
}

template <int K, int VS, typename T, int kVersion, int kPrepareThreads = kThreads, bool kWide = true>
void launch_06(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
               const void* w, const float* h0, const int64_t* cu, const Problem& p, cudaStream_t stream,
               SavedForBackward* saved) {
  const int64_t rows = cu ? p.T : p.N * p.T;
  if (rows == 0) return;
  // Kept for the backward only from version 07 on (it stores A with its zeros above the diagonal).
  const bool keep = saved && kVersion >= 7;
  // Version 21 (bf16 storage, nothing kept): the output computed in the pass, from Q_γ and A_qk in fragment order.
  // A kept workspace needs S_n and R, so a forward for the backward runs version 20's kernels (the same bits).
  constexpr bool kFusable = kVersion >= 21 && std::is_same_v<T, __nv_bfloat16>;
  const bool fuse = kFusable && !keep;
  const WorkspaceUse use = keep ? WorkspaceUse::kForBackward : fuse ? WorkspaceUse::kFused : WorkspaceUse::kForward;
  const size_t floats = forward_workspace_floats(rows, p.N, p.HV, K, p.V, use);
  float* base = workspace_alloc<float>(floats, stream);
  const Workspace ws = carve_forward_workspace(base, rows, p.N, p.HV, K, p.V, use);
  if (fuse)
    run_prepare_and_pass<K, VS, T, kVersion, kPrepareThreads, kWide, kFusable>(ws, o, ht, q, k, v, g, b, w, h0, cu, p,
                                                                               stream);
  else
    run_prepare_and_pass<K, VS, T, kVersion, kPrepareThreads, kWide>(ws, o, ht, q, k, v, g, b, w, h0, cu, p, stream);
  if (!fuse) {
    // Version 11: 64 value columns per output block instead of 32 (when V is a multiple of 64) — Q_γ and A_qk are read
    // twice per chunk instead of four times; 99 KB of shared memory still gives two blocks per SM.
    auto output = [&](auto vo) {
      constexpr int VO = decltype(vo)::value;
      // Version 15: with bf16 storage the products on tensor cores.
      constexpr bool kMma = kVersion >= 15 && std::is_same_v<T, __nv_bfloat16>;
      constexpr size_t bytes = output06_smem_floats<K, VO, kMma>() * sizeof(float);
      // Version 19: a chunk's value slices adjacent in launch order (the second read of Q_γ and A_qk from L2).
      constexpr bool kAdjacent = kVersion >= 19;
      auto kernel = chunk_output06<K, VO, T, (kVersion >= 12), kMma, kAdjacent>;
      GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
      const unsigned max_chunks = unsigned((p.T + kChunk - 1) / kChunk), slices = unsigned(p.V / VO);
      const dim3 grid = kAdjacent ? dim3(max_chunks * slices, unsigned(p.HV), unsigned(p.N))
                                  : dim3(max_chunks, unsigned(p.HV), unsigned(p.N) * slices);
      kernel<<<grid, kThreads, bytes, stream>>>(static_cast<T*>(o), ws, cu, p.T, int(p.HV), int(p.V));
      GDN2_CUDA_CHECK_LAUNCH();
    };
    if (kVersion >= 11 && p.V % 64 == 0)
      output(std::integral_constant<int, 64>{});
    else
      output(std::integral_constant<int, 32>{});
  }
  if (keep) {
    saved->reset();
    saved->workspace_ = base, saved->bytes_ = floats * sizeof(float), saved->problem_ = p;
  } else {
    GDN2_CUDA_CHECK(cudaFreeAsync(base, stream));
  }
}

template <int K, int VS, typename T>
void launch_split(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                  const void* w, const float* h0, const int64_t* cu, const Problem& p, cudaStream_t stream) {
  const int64_t rows = cu ? p.T : p.N * p.T;
  if (rows == 0) return;
  const int64_t per_row = int64_t(p.HV) * (K + p.V + kChunk);
  float* base = workspace_alloc<float>(size_t(rows * per_row), stream);
  const Workspace ws{base, base + rows * p.HV * K, base + rows * p.HV * (K + p.V)};
  const float scale = default_scale(p);
  {
    constexpr size_t bytes = prepare_smem_floats<K>() * sizeof(float);
    auto kernel = chunk_prepare<K, T>;
    GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    const dim3 grid(unsigned((p.T + kChunk - 1) / kChunk), unsigned(p.HV), unsigned(p.N));
    kernel<<<grid, kThreads, bytes, stream>>>(ws, static_cast<const T*>(q), static_cast<const T*>(k),
                                              static_cast<const T*>(v), g, static_cast<const T*>(b),
                                              static_cast<const T*>(w), cu, p.T, int(p.H), int(p.HV), int(p.V), scale);
    GDN2_CUDA_CHECK_LAUNCH();
  }
  {
    constexpr size_t bytes = pass_smem_floats<K, VS>() * sizeof(float);
    auto kernel = chunk_state_pass<K, VS, T>;
    GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    const dim3 grid(unsigned(p.V / VS), unsigned(p.HV), unsigned(p.N));
    kernel<<<grid, kThreads, bytes, stream>>>(static_cast<T*>(o), ht, ws, static_cast<const T*>(q),
                                              static_cast<const T*>(k), g, h0, cu, p.T, int(p.H), int(p.HV), int(p.V),
                                              scale);
    GDN2_CUDA_CHECK_LAUNCH();
  }
  GDN2_CUDA_CHECK(cudaFreeAsync(base, stream));
}

// Value columns per pass block. The pass holds one block per SM: 64 columns when that still gives about one block per
// SM, else 32 — and from version 24, 16 when 32 would leave SMs idle (B = 1 with 16 value heads: 64 blocks of 32
// columns on 132 SMs, one sequential walk of the chunks each). Each block's chunk step then has half the columns; the
// K-side tiles are read by twice as many blocks (the second time from L2). The sums are the same whatever the slice,
// so the bits are too.
int pass_columns(const Problem& p, int version) {
  const int64_t pairs = int64_t(p.HV) * p.N;
  if (p.V % 64 == 0 && (p.V / 64) * pairs >= 120) return 64;
  if (version >= 24 && (p.V / 32) * pairs < 120) return 16;
  return 32;
}

}  // namespace

void chunk_forward_recompute(const Workspace& ws, const void* q, const void* k, const void* v, const float* g,
                             const void* b, const void* w, const float* h0, const int64_t* cu, const Problem& p,
                             cudaStream_t s) {
  dispatch_k_and_dtype(p, [&](auto K, auto T) {
    constexpr int KK = decltype(K)::value;
    using TT = decltype(T);
    // Prepare and pass as the default forward runs them when it keeps its workspace (version 30 unfused: 30's prepare,
    // which then computes Y and U as 23's does, and 20's pass; its 4-byte loads where the inputs are not 16-byte
    // aligned: the same bits), so a kept workspace and a recomputed one agree bit for bit.
    auto run = [&](auto loads) {
      constexpr bool kWide = decltype(loads)::value;
      switch (pass_columns(p, 24)) {
        case 64: return run_prepare_and_pass<KK, 64, TT, 30, 512, kWide>(ws, nullptr, nullptr, q, k, v, g, b, w, h0, cu, p, s);
        case 16: return run_prepare_and_pass<KK, 16, TT, 30, 512, kWide>(ws, nullptr, nullptr, q, k, v, g, b, w, h0, cu, p, s);
        default: return run_prepare_and_pass<KK, 32, TT, 30, 512, kWide>(ws, nullptr, nullptr, q, k, v, g, b, w, h0, cu, p, s);
      }
    };
    if (!aligned16(q, k, v, g, b, w)) return run(std::false_type{});
    return run(std::true_type{});
  });
}

void chunk_forward_split_dispatch(void* o, float* ht, const void* q, const void* k, const void* v, const float* g,
                                  const void* b, const void* w, const float* h0, const int64_t* cu, const Problem& p,
                                  cudaStream_t s, int version, SavedForBackward* saved) {
  dispatch_k_and_dtype(p, [&](auto K, auto T) {
    constexpr int KK = decltype(K)::value;
    using TT = decltype(T);
    if (version >= 6) {
      const int columns = pass_columns(p, version);
      // Rung Ver with a prepare kernel of NT threads, 64, 32 or (from 24) 16 value columns per pass block.
      auto rung = [&](auto ver, auto threads, auto loads) {
        constexpr int Ver = decltype(ver)::value, NT = decltype(threads)::value;
        constexpr bool kWide = decltype(loads)::value;
        if constexpr (Ver >= 24)
          if (columns == 16) return launch_06<KK, 16, TT, Ver, NT, kWide>(o, ht, q, k, v, g, b, w, h0, cu, p, s, saved);
        return columns == 64 ? launch_06<KK, 64, TT, Ver, NT, kWide>(o, ht, q, k, v, g, b, w, h0, cu, p, s, saved)
                             : launch_06<KK, 32, TT, Ver, NT, kWide>(o, ht, q, k, v, g, b, w, h0, cu, p, s, saved);
      };
      const std::true_type wide_loads;
      auto any_alignment = [&](auto ver) {
        return aligned16(q, k, v, g, b, w) ? rung(ver, std::integral_constant<int, 512>{}, wide_loads)
                                           : rung(ver, std::integral_constant<int, 512>{}, std::false_type{});
      };
      using std::integral_constant;
      switch (version) {
        case 6: return rung(integral_constant<int, 6>{}, integral_constant<int, kThreads>{}, wide_loads);
        case 7: return rung(integral_constant<int, 7>{}, integral_constant<int, kThreads>{}, wide_loads);
        // 08: the prepare kernel with 16 warps instead of 8 (it holds one block per SM for its shared memory, so the
        // warps are all the latency hiding there is).
        case 8: return rung(integral_constant<int, 8>{}, integral_constant<int, 512>{}, wide_loads);
        // 09: the off-diagonal blocks of T and A_qk by 2 × 2 register tiles over the lower block pairs only.
        case 9: return rung(integral_constant<int, 9>{}, integral_constant<int, 512>{}, wide_loads);
        // 10: the diagonal blocks by column groups (one exp per channel and row per warp), Y = AĒ and U = AZ with
        // lane-strided columns (no bank conflicts) and U in one product of K columns.
        case 10: return rung(integral_constant<int, 10>{}, integral_constant<int, 512>{}, wide_loads);
        // 11: 64 value columns per output block (when V is a multiple of 64).
        case 11: return rung(integral_constant<int, 11>{}, integral_constant<int, 512>{}, wide_loads);
        // 12: the pass and output products with vector shared loads (tile_product_vec; same bits).
        case 12: return rung(integral_constant<int, 12>{}, integral_constant<int, 512>{}, wide_loads);
        // 13: with bf16 storage the pass's two products on tensor cores (TF32); float32 storage as version 12.
        case 13: return rung(integral_constant<int, 13>{}, integral_constant<int, 512>{}, wide_loads);
        // 14: prepare's diagonal blocks reduced 32 sums at a time (warp_reduce_scatter; same bits as 13).
        case 14: return rung(integral_constant<int, 14>{}, integral_constant<int, 512>{}, wide_loads);
        // 15: with bf16 storage the output kernel's products on tensor cores (TF32); float32 storage as 14.
        case 15: return rung(integral_constant<int, 15>{}, integral_constant<int, 512>{}, wide_loads);
        // 16: prepare's global loads and stores 16 bytes at a time (same bits as 15). They need 16-byte aligned
        // inputs: a caller's views that are not (an offset into a larger tensor) run version 15.
        case 16:
          if (!aligned16(q, k, v, g, b, w))
            return rung(integral_constant<int, 15>{}, integral_constant<int, 512>{}, wide_loads);
          return rung(integral_constant<int, 16>{}, integral_constant<int, 512>{}, wide_loads);
        // 18: with bf16 storage prepare's off-diagonal blocks of T and A_qk on tensor cores (TF32); float32 storage as
        // 16. From 18 on, inputs that are not 16-byte aligned run the same rung with 4-byte loads (the same bits).
        case 18: return any_alignment(integral_constant<int, 18>{});
        // 19: the output kernel's blocks of one chunk adjacent in launch order (same bits as 18).
        case 19: return any_alignment(integral_constant<int, 19>{});
        // 20: the pass stores S_n by float4 and R by float2 (same bits as 18).
        case 20: return any_alignment(integral_constant<int, 20>{});
        // 21: with bf16 storage the pass computes O too, and no output kernel runs (same bits as 18); float32 as 20.
        case 21: return any_alignment(integral_constant<int, 21>{});
        // (22, tried in session 9 and not kept: prepare's Y = AĒ and U = AZ on tensor cores — slower, docs/cuda.md.)
        // 23: prepare computes exp(g) once per (row, channel) for its diagonal blocks (same bits as 21).
        case 23: return any_alignment(integral_constant<int, 23>{});
        // 24: 16 value columns per pass block where 32 would leave SMs idle (same bits as 23).
        case 24: return any_alignment(integral_constant<int, 24>{});
        // 25: with bf16 storage and the pass fused, prepare's Y = AĒ and U = AZ on tensor cores, A's rows padded (new
        // bits); a kept workspace and float32 storage as 24 (the same bits).
        case 25: return any_alignment(integral_constant<int, 25>{});
        // 26: prepare's diagonal blocks without per-pair branches (same bits as 25).
        case 26: return any_alignment(integral_constant<int, 26>{});
        // 27: prepare's loads of Z issued earlier, converted where used (same bits as 25).
        case 27: return any_alignment(integral_constant<int, 27>{});
        // (28, tried in session 10 and not kept: a persistent prepare loading each task's inputs during the one before.)
        // 29: the fused forward's Ē and K_tail loop without runtime branches (same bits as 25).
        case 29: return any_alignment(integral_constant<int, 29>{});
        // 30: with bf16 storage prepare's diagonal blocks factorised on tensor cores, row by row where the gates
        // allow (new bits; 29's bits with float32 storage).
        default: return any_alignment(integral_constant<int, 30>{});
      }
    }
    // The widest value slice that still gives about one block per SM (the pass holds one block per SM): wide
    // slices load the K-side tiles (q, k, g, Y, A_qk) fewer times; narrow ones fill the GPU when N·HV is small.
    const int64_t pairs = int64_t(p.HV) * p.N;
    if (p.V % 128 == 0 && (p.V / 128) * pairs >= 120) return launch_split<KK, 128, TT>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
    if (p.V % 64 == 0 && (p.V / 64) * pairs >= 120) return launch_split<KK, 64, TT>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
    return launch_split<KK, 32, TT>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
  });
}

}  // namespace gdn2::cuda::detail
