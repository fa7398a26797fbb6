// gdn2::cuda chunk_backward stage 3 — the products of every chunk in parallel, one batched launch per equation, in the
// reference's order (paper Appendix B.1-B.2, Eq. 53, 55, 58, 62, 64-66, 73):
//   dA_qk = tril(dO Rᵀ);  dQ_γ = dO S_nᵀ and dY = −dR S_nᵀ (one launch, S_n read once);  dK_tail = R dS_Cᵀ;
//   dA = dU Zᵀ + dY Ēᵀ (one accumulation);  dZ = Aᵀ dU, written only as dw = dZ ⊙ v and dv = dZ ⊙ w;  dĒ = Aᵀ dY;
//   dT = −stril(Aᵀ dA Aᵀ) (two launches).
// Launch: 256 threads per (chunk × tile of BN = 64 or 32 output columns; value head; sequence): grid (⌈T/64⌉·N/BN,
// HV, N), two or three blocks per SM. On chip: a 64 × BN output tile in registers (fp32 CUDA-core tiles for float32
// storage; TF32 mma fragments for bf16), the depth in steps of 32 through a ring of four shared-memory stages
// ([32][64 + pad] of A, [32][BN + pad] of B; 74 KB, 111 KB for the dual product) filled by cp.async three steps ahead.
#include "backward.cuh"

namespace gdn2::cuda::detail {

namespace {

constexpr int C = kChunk;
// The depth runs through shared memory in steps of kProductDepthStep, kProductStages of them in flight.
constexpr int kProductDepthStep = 32, kProductStages = 4;
constexpr int product_pad(bool mma) { return mma ? 8 : 4; }
// Floats of one stage: kOps tiles of A ([depth step][C + pad]) and one of B ([depth step][BN + pad]).
constexpr int product_stage_floats(int BN, bool mma, int ops) {
  return kProductDepthStep * (ops * (C + product_pad(mma)) + BN + product_pad(mma));
}

// A matrix of one chunk of one value head inside a workspace tensor: element (i, j) at p + row0·tok + hv·head +
// slot·slot_stride + i·rs + j·cs, read as 0 where its token index (i for tok_axis 0, j for 1) is past the chunk.
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

// Where dZ goes when it is not kept: dw = dZ ⊙ v and dv = dZ ⊙ w (Eq. 73), in the storage dtype, [rows][HV][V].
struct ValueGrads {
  void *dv = nullptr, *dw = nullptr;
  const void *v = nullptr, *w = nullptr;
};

// out (+)= alpha · A B for one chunk and BN output columns (block x = chunk · N/BN + tile), value head (y), sequence
// (z): out [C][N], A [C][depth], B [depth][N]; entries outside the mask written as 0. Tiles are copied along whichever
// axis of the operand is contiguous. kDual: also out2 = alpha2 · A2 B (no mask, no accumulation), B read once.
// kChain: out = alpha · (A B + Ac Bc) in one accumulation, the depth running through A B, then Ac Bc (depth_c).
// vg.dv set: out is dZ, written as dv and dw (vg) instead. The depth goes through a ring of kStages shared-memory stages filled by cp.async, kStages − 1 steps ahead of the
// products: a block's whole depth of 128 is in flight at once, since a block lives for only a few steps.
template <int BN, bool kMma, int kMinBlocks, bool kDual = false, bool kChain = false>
__global__ void __launch_bounds__(kThreads, kMinBlocks) chunk_batched_product(float* out, View A, View B, int N,
                                                                           int depth, float alpha, bool accumulate,
                                                                           int mask, const int64_t* cu_seqlens,
                                                                           int64_t T_len, int HV, float* out2 = nullptr,
                                                                           View A2 = View{}, float alpha2 = 0.f,
                                                                           View Ac = View{}, View Bc = View{},
                                                                           int depth_c = 0, ValueGrads vg = {}) {
  static_assert(!(kChain && kDual), "a chained product is single");
  constexpr int BK = kProductDepthStep, TN = BN / 16, kOps = kDual ? 2 : 1;
  constexpr int PAD = product_pad(kMma), AP = C + PAD, BP = BN + PAD;
  constexpr int A_TILE = BK * AP, STAGE = product_stage_floats(BN, kMma, kOps);
  // Stage s: A_o(m, j0 + j) at smem[s·STAGE + o·A_TILE + j·AP + m], B(j0 + j, n_tile + n) at [s·STAGE + kOps·A_TILE +
  // j·BP + n]. Rows padded by 4 floats keep the float4 reads aligned; by 8 for the mma fragments (32 banks, 32 lanes).
  extern __shared__ __align__(16) float smem[];
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
  const int depth_all = depth + (kChain ? depth_c : 0), steps = depth_all / BK;
  const bool a_rows_adjacent = A.rs == 1, b_cols_adjacent = B.cs == 1;
  const int m0 = (tid / 16) * 4, n0 = (tid % 16) * TN;
  float acc[kOps][4][TN] = {};
  constexpr int NT8 = BN / 16;  // mma: n-tiles of 8 columns per warp
  const int warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  const int wm = (warp % 4) * 16, wn = (warp / 4) * (BN / 2);
  float cf[kOps][NT8][4] = {};
  // Element u of a thread's share of a step: i = u·kThreads + tid — one base pointer and one stride per operand.
  constexpr int A_PER = C * BK / kThreads, B_PER = BK * BN / kThreads;
  const int a_r0 = a_rows_adjacent ? tid % C : tid / BK, a_j0 = a_rows_adjacent ? tid / C : tid % BK;
  const int a_dr = a_rows_adjacent ? 0 : kThreads / BK, a_dj = a_rows_adjacent ? kThreads / C : 0;
  const int b_c0 = b_cols_adjacent ? tid % BN : tid / BK, b_j0 = b_cols_adjacent ? tid / BN : tid % BK;
  const int b_dc = b_cols_adjacent ? 0 : kThreads / BK, b_dj = b_cols_adjacent ? kThreads / BN : 0;
  // Copies depth step `step` into its stage as one commit group (an empty group past the depth, so that every
  // thread's count of groups stays the same). Entries past the chunk are filled with zeros.
  auto issue = [&](int step) {
    if (step < steps) {
      const int jj = step * BK;
      const bool second = kChain && jj >= depth;  // past A B's depth, Ac Bc's
      const int j0 = second ? jj - depth : jj;
      const View& VA = second ? Ac : A;
      const View& VB = second ? Bc : B;
      float* stage = smem + (step % kProductStages) * STAGE;
      const int64_t sa = a_dr * VA.rs + a_dj * VA.cs;
#pragma unroll
      for (int o = 0; o < kOps; ++o) {
        const float* base = second ? a_chain : as[o];
        const float* pa = base + a_r0 * VA.rs + (j0 + a_j0) * VA.cs;
#pragma unroll
        for (int u = 0; u < A_PER; ++u) {
          const int r = a_r0 + u * a_dr, j = a_j0 + u * a_dj;
          const bool in = A.tok_axis == 0 ? r < L : A.tok_axis == 1 ? j0 + j < L : true;
          cp_async4(stage + o * A_TILE + j * AP + r, in ? pa + u * sa : base, in);
        }
      }
      const float* base = second ? b_chain : b;
      const float* pb = base + (j0 + b_j0) * VB.rs + (n_tile + b_c0) * VB.cs;
      const int64_t sb = b_dj * VB.rs + b_dc * VB.cs;
#pragma unroll
      for (int u = 0; u < B_PER; ++u) {
        const int col = b_c0 + u * b_dc, j = b_j0 + u * b_dj;
        const bool in = B.tok_axis == 0 ? j0 + j < L : B.tok_axis == 1 ? n_tile + col < L : true;
        cp_async4(stage + kOps * A_TILE + j * BP + col, in ? pb + u * sb : base, in);
      }
    }
    cp_async_commit();
  };
#pragma unroll
  for (int s = 0; s < kProductStages - 1; ++s) issue(s);
  for (int step = 0; step < steps; ++step) {
    cp_async_wait<kProductStages - 2>();  // this thread's copies of `step` have landed
    __syncthreads();                      // everyone's have, and every thread is done with step − 1's stage
    issue(step + kProductStages - 1);     // into step − 1's stage
    const float* s_a = smem + (step % kProductStages) * STAGE;
    const float* s_b = s_a + kOps * A_TILE;
    if constexpr (kMma) {
#pragma unroll
      for (int k0 = 0; k0 < BK; k0 += 8) {
        uint32_t af[kOps][4];
#pragma unroll
        for (int o = 0; o < kOps; ++o) {
          const float* x = s_a + o * A_TILE + (k0 + t4) * AP + wm + g;
          af[o][0] = to_tf32(x[0]), af[o][1] = to_tf32(x[8]);
          af[o][2] = to_tf32(x[4 * AP]), af[o][3] = to_tf32(x[4 * AP + 8]);
        }
#pragma unroll
        for (int nt = 0; nt < NT8; ++nt) {
          const float* y = s_b + (k0 + t4) * BP + wn + nt * 8 + g;
          const uint32_t b0 = to_tf32(y[0]), b1 = to_tf32(y[4 * BP]);
#pragma unroll
          for (int o = 0; o < kOps; ++o) mma_tf32(cf[o][nt], af[o], b0, b1);
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < BK; ++j) {
        float bn[TN];
        if constexpr (TN == 4) {
          const float4 bv = *reinterpret_cast<const float4*>(s_b + j * BP + n0);
          bn[0] = bv.x, bn[1] = bv.y, bn[2] = bv.z, bn[3] = bv.w;
        } else {
          const float2 bv = *reinterpret_cast<const float2*>(s_b + j * BP + n0);
          bn[0] = bv.x, bn[1] = bv.y;
        }
#pragma unroll
        for (int o = 0; o < kOps; ++o) {
          const float4 av = *reinterpret_cast<const float4*>(s_a + o * A_TILE + j * AP + m0);
          const float am[4] = {av.x, av.y, av.z, av.w};
#pragma unroll
          for (int x = 0; x < 4; ++x)
#pragma unroll
            for (int y = 0; y < TN; ++y) acc[o][x][y] += am[x] * bn[y];
        }
      }
    }
  }
  auto write = [&](int o, int r, int col, float value) {
    if (r >= L) return;
    if (o == 1) {  // the second product: no mask, no accumulation
      out2[((row0 + r) * HV + hv) * int64_t(N) + col] = alpha2 * value;
      return;
    }
    if (vg.dv) {  // storage dtype: bf16 exactly when the products run on tensor cores
      using T = std::conditional_t<kMma, __nv_bfloat16, float>;
      const int64_t i = ((row0 + r) * HV + hv) * int64_t(N) + col;
      const float z = alpha * value;
      static_cast<T*>(vg.dw)[i] = from_float<T>(z * to_float(static_cast<const T*>(vg.v)[i]));
      static_cast<T*>(vg.dv)[i] = from_float<T>(z * to_float(static_cast<const T*>(vg.w)[i]));
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

}  // namespace

void chunk_backward_products(void* dv, void* dw, const void* v, const void* w, const Workspace& ws,
                             const BackwardWorkspace& bw, const int64_t* cu, const Problem& p, cudaStream_t stream) {
  const int64_t HV = p.HV, V = p.V, K = p.K;
  const unsigned max_chunks = unsigned((p.T + kChunk - 1) / kChunk);
  const bool mma = p.dtype == DType::bf16;
  struct Dual { float* out = nullptr; View A{}; float alpha = 0.f; };  // a second product with the same B (kDual)
  struct Chain { View A{}, B{}; int depth = 0; };  // a second product in the same accumulation (kChain)
  auto product = [&](float* out, View A, View B, int N, int depth, float alpha, bool accumulate, Mask mask,
                     Dual dual = {}, Chain chain = {}, ValueGrads vg = {}) {
    auto go = [&](auto bn, auto with_mma) {
      constexpr int BN = decltype(bn)::value;
      constexpr bool kMma = decltype(with_mma)::value;
      const dim3 grid(max_chunks * unsigned(N / BN), unsigned(HV), unsigned(p.N));
      auto launch = [&](auto kernel, int ops, auto... args) {
        const int bytes = kProductStages * product_stage_floats(BN, kMma, ops) * int(sizeof(float));
        GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
        kernel<<<grid, kThreads, bytes, stream>>>(out, A, B, N, depth, alpha, accumulate, mask, cu, p.T, int(HV),
                                                 args...);
      };
      if (chain.depth)
        launch(chunk_batched_product<BN, kMma, 3, false, true>, 1, nullptr, View{}, 0.f, chain.A, chain.B,
               chain.depth, vg);
      else if (dual.out)
        launch(chunk_batched_product<BN, kMma, 2, true>, 2, dual.out, dual.A, dual.alpha, View{}, View{}, 0, vg);
      else
        launch(chunk_batched_product<BN, kMma, 3>, 1, nullptr, View{}, 0.f, View{}, View{}, 0, vg);
    };
    using I64 = std::integral_constant<int, 64>;
    using I32 = std::integral_constant<int, 32>;
    if (N % 64 == 0) mma ? go(I64{}, std::true_type{}) : go(I64{}, std::false_type{});
    else mma ? go(I32{}, std::true_type{}) : go(I32{}, std::false_type{});
    GDN2_CUDA_CHECK_LAUNCH();
  };
  const View dO = token_view(bw.dO, HV, V, false), R_t = token_view(ws.U, HV, V, true);
  const View S0_t = state_view(ws.Sn, HV, K, V, true), dSC_t = state_view(bw.dSn, HV, K, V, true);
  const View R = token_view(ws.U, HV, V, false), dR = token_view(bw.dR, HV, V, false);
  const View A_t = token_view(ws.A, HV, C, true);
  product(bw.dAqk, dO, R_t, C, int(V), 1.f, false, kLower);                        // dA_qk = tril(dO Rᵀ)     Eq. 53
  product(bw.dQg, dO, S0_t, int(K), int(V), 1.f, false, kNone,                     // dQ_γ = dO S_nᵀ          Eq. 55
          Dual{bw.dY, dR, -1.f});                                                  // dY = −dR S_nᵀ           Eq. 62
  product(bw.dKtail, R, dSC_t, int(K), int(V), 1.f, false, kNone);                 // dK_tail = R dS_Cᵀ       Eq. 58
  product(bw.dA, dR, token_view(bw.Z, HV, V, true), C, int(V), 1.f, false, kNone, {},  // dA = dU Zᵀ         Eq. 64
          Chain{token_view(bw.dY, HV, K, false), token_view(ws.Ebar, HV, K, true), int(K)});  // + dY Ēᵀ      Eq. 65
  product(nullptr, A_t, dR, int(V), C, 1.f, false, kNone, {}, {},                 // dZ = Aᵀ dU              Eq. 64
          ValueGrads{dv, dw, v, w});                                               // as dw, dv               Eq. 73
  product(bw.dEbar, A_t, token_view(bw.dY, HV, K, false), int(K), C, 1.f, false, kNone);  // dĒ = Aᵀ dY      Eq. 65
  product(bw.M1, token_view(bw.dA, HV, C, false), A_t, C, C, 1.f, false, kNone);   // dA Aᵀ
  product(bw.dT, A_t, token_view(bw.M1, HV, C, false), C, C, -1.f, false,
          kStrictlyLower);                                                         // dT = −stril(Aᵀ dA Aᵀ)  Eq. 66
}

}  // namespace gdn2::cuda::detail
