// gdn2::cuda chunk_backward stage 3 — the products of every chunk in parallel, one batched launch per equation, in the
// reference's order (paper Appendix B.1-B.2, Eq. 53, 55, 58, 62, 64-66):
//   dA_qk = tril(dO Rᵀ);  dQ_γ = dO S_nᵀ and dY = −dR S_nᵀ (one launch, S_n read once);  dK_tail = R dS_Cᵀ;
//   dA = dU Zᵀ + dY Ēᵀ (one accumulation);  dZ = Aᵀ dU;  dĒ = Aᵀ dY;  dT = −stril(Aᵀ dA Aᵀ) (two launches).
// Launch: 256 threads per (chunk × tile of BN = 64 or 32 output columns; value head; sequence): grid (⌈T/64⌉·N/BN,
// HV, N), two or three blocks per SM. On chip: a 64 × BN output tile in registers (fp32 CUDA-core tiles for float32
// storage; TF32 mma fragments for bf16), the depth in steps of 32 through shared memory ([32][64 + pad] of A,
// [32][BN + pad] of B), the next step's share loaded into registers while the current one is multiplied.
#include "backward.cuh"

namespace gdn2::cuda::detail {

namespace {

constexpr int C = kChunk;

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

// out (+)= alpha · A B for one chunk and BN output columns (block x = chunk · N/BN + tile), value head (y), sequence
// (z): out [C][N], A [C][depth], B [depth][N]; entries outside the mask written as 0. Tiles are loaded along whichever
// axis of the operand is contiguous. kDual: also out2 = alpha2 · A2 B (no mask, no accumulation), B read once.
// kChain: out = alpha · (A B + Ac Bc) in one accumulation, the depth running through A B, then Ac Bc (depth_c).
template <int BN, bool kMma, int kMinBlocks, bool kDual = false, bool kChain = false>
__global__ void __launch_bounds__(kThreads, kMinBlocks) chunk_batched_product(float* out, View A, View B, int N,
                                                                           int depth, float alpha, bool accumulate,
                                                                           int mask, const int64_t* cu_seqlens,
                                                                           int64_t T_len, int HV, float* out2 = nullptr,
                                                                           View A2 = View{}, float alpha2 = 0.f,
                                                                           View Ac = View{}, View Bc = View{},
                                                                           int depth_c = 0) {
  static_assert(!(kChain && kDual), "a chained product is single");
  constexpr int BK = 32, TN = BN / 16, kOps = kDual ? 2 : 1;
  // Rows padded by 4 floats keep the float4 reads aligned; by 8 for the mma fragments (32 banks for 32 lanes).
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
  // Each thread loads its share of the next depth step into registers while the current one is multiplied.
  constexpr int A_PER = C * BK / kThreads, B_PER = BK * BN / kThreads;
  float ra[kOps][A_PER], rb[B_PER];
  // Element u of the share: i = u·kThreads + tid — one base pointer and one stride per operand.
  const int a_r0 = a_rows_adjacent ? tid % C : tid / BK, a_j0 = a_rows_adjacent ? tid / C : tid % BK;
  const int a_dr = a_rows_adjacent ? 0 : kThreads / BK, a_dj = a_rows_adjacent ? kThreads / C : 0;
  const int b_c0 = b_cols_adjacent ? tid % BN : tid / BK, b_j0 = b_cols_adjacent ? tid / BN : tid % BK;
  const int b_dc = b_cols_adjacent ? 0 : kThreads / BK, b_dj = b_cols_adjacent ? kThreads / BN : 0;
  auto a_at = [&](int u, int& r, int& j) { r = a_r0 + u * a_dr, j = a_j0 + u * a_dj; };
  auto b_at = [&](int u, int& col, int& j) { col = b_c0 + u * b_dc, j = b_j0 + u * b_dj; };
  auto load = [&](int jj) {
    const bool second = kChain && jj >= depth;  // past A B's depth, Ac Bc's
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
  load(0);
  for (int j0 = 0; j0 < depth_all; j0 += BK) {
    {
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

}  // namespace

void chunk_backward_products(const Workspace& ws, const BackwardWorkspace& bw, const int64_t* cu, const Problem& p,
                             cudaStream_t stream) {
  const int64_t HV = p.HV, V = p.V, K = p.K;
  const unsigned max_chunks = unsigned((p.T + kChunk - 1) / kChunk);
  const bool mma = p.dtype == DType::bf16;
  struct Dual { float* out = nullptr; View A{}; float alpha = 0.f; };  // a second product with the same B (kDual)
  struct Chain { View A{}, B{}; int depth = 0; };  // a second product in the same accumulation (kChain)
  auto product = [&](float* out, View A, View B, int N, int depth, float alpha, bool accumulate, Mask mask,
                     Dual dual = {}, Chain chain = {}) {
    auto go = [&](auto bn, auto with_mma) {
      constexpr int BN = decltype(bn)::value;
      constexpr bool kMma = decltype(with_mma)::value;
      const dim3 grid(max_chunks * unsigned(N / BN), unsigned(HV), unsigned(p.N));
      if (chain.depth)
        chunk_batched_product<BN, kMma, 3, false, true><<<grid, kThreads, 0, stream>>>(
            out, A, B, N, depth, alpha, accumulate, mask, cu, p.T, int(HV), nullptr, View{}, 0.f, chain.A, chain.B,
            chain.depth);
      else if (dual.out)
        chunk_batched_product<BN, kMma, 2, true><<<grid, kThreads, 0, stream>>>(
            out, A, B, N, depth, alpha, accumulate, mask, cu, p.T, int(HV), dual.out, dual.A, dual.alpha);
      else
        chunk_batched_product<BN, kMma, 3><<<grid, kThreads, 0, stream>>>(out, A, B, N, depth, alpha, accumulate, mask,
                                                                         cu, p.T, int(HV));
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
  product(bw.dZ, A_t, dR, int(V), C, 1.f, false, kNone);                           // dZ = Aᵀ dU              Eq. 64
  product(bw.dEbar, A_t, token_view(bw.dY, HV, K, false), int(K), C, 1.f, false, kNone);  // dĒ = Aᵀ dY      Eq. 65
  product(bw.M1, token_view(bw.dA, HV, C, false), A_t, C, C, 1.f, false, kNone);   // dA Aᵀ
  product(bw.dT, A_t, token_view(bw.M1, HV, C, false), C, C, -1.f, false,
          kStrictlyLower);                                                         // dT = −stril(Aᵀ dA Aᵀ)  Eq. 66
}

}  // namespace gdn2::cuda::detail
