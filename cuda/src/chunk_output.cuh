// gdn2::cuda — A_qk R of the chunk output O = Q_γ S_n + A_qk R (paper Eq. 24) on tensor cores, shared by the fused
// state pass and the output kernel so that both give the same bits.
#pragma once

#include "workspace.cuh"

namespace gdn2::cuda::detail {

// A_qk R on tensor cores (TF32 operands, fp32 accumulation) for bf16 storage; 8 warps as 4 × 2: rows wm .. wm + 15,
// NTW tiles of 8 columns from wn. The mma cannot skip the terms above A_qk's diagonal, so two guards keep prefix
// causality bitwise:
//   - A_qk's entries above the diagonal (not stored: garbage in the workspace) are selected as 0 in the fragment;
//   - an overflowed future row of R (inf or NaN; 0 · inf = NaN) is read as 0 by the mma, and only the sums that meet
//     one at s ≤ r get its terms A_qk[r][s] R[s][n] added back on CUDA cores. A finite row's terms above the diagonal
//     are exact zeros, so either way the sum for row r does not depend on rows s > r.
// A_qk comes through accessors, so the output kernel (shared memory) and the fused pass (registers) run the same sums
// in the same order. Fragment value j = 0 .. 3 is A_qk at (r0, k0 + t), (r1, k0 + t), (r0, k0 + t + 4), (r1, k0 + t + 4)
// with g = lane / 4, t = lane % 4, r0 = wm + g, r1 = r0 + 8, k0 the k-step's first column:
//   a_left(ks, j):  k0 = 8 ks, for the blocks left of the warp's diagonal block (8 ks < wm);
//   a_diag(i, j):   k0 = wm + 8 i (i = 0, 1), the diagonal block, before its guard;
//   a_at(r, s):     A_qk[r][s] for the rare fix-up (r, s in the diagonal block, s ≤ r).
// kRRounded: R holds values already rounded to TF32 (the fused pass), used as they are.
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

}  // namespace gdn2::cuda::detail
