// gdn2::cuda — A = (I + T)⁻¹ for a chunk's strictly lower triangular T (paper Eq. 21): the twin of the reference's
// solve_unit_lower (reference/core/chunk.hpp), by 16 × 16 blocks instead of row by row.
#pragma once

#include "tiles.cuh"

namespace gdn2::cuda::detail {

// Step 3. A = (I + T)⁻¹ (Eq. 21) by blocks: (a) each 16 × 16 diagonal block is inverted by one warp, lane j
//    forward-substituting column j in registers; (b) the blocks below follow by block diagonals, A_IJ = −A_II
//    Σ_{J≤M<I} T_IM A_MJ (block rows of (I + T) A = I). s_T: T, rows kChunk apart; s_A: A with its zeros, rows AS
//    apart; tmp: (kNumSub − 1)·kSub² floats of scratch. Begins and ends with every thread past a barrier.
template <int NT, int AS>
__device__ __forceinline__ void solve_unit_lower(float* s_A, const float* s_T, float* tmp, int tid) {
  constexpr int C = kChunk;
  const int warp = tid / 32, lane = tid % 32;
  for (int r = tid; r < C * AS; r += NT) s_A[r] = 0.f;
  __syncthreads();
  if (warp < kNumSub && lane < kSub) {
    const int o = warp * kSub;
    float x[kSub];
#pragma unroll
    for (int r = 0; r < kSub; ++r) {
      float acc = r == lane ? 1.f : 0.f;
#pragma unroll
      for (int c = 0; c < r; ++c) acc -= s_T[(o + r) * C + o + c] * x[c];
      x[r] = acc;
      s_A[(o + r) * AS + o + lane] = acc;
    }
  }
  __syncthreads();
  for (int dist = 1; dist < kNumSub; ++dist) {
    const int blocks = kNumSub - dist;
    for (int i = tid; i < blocks * kSub * kSub; i += NT) {
      const int bi = i / (kSub * kSub), I = dist + bi, J = I - dist, r = (i / kSub) % kSub, c = i % kSub;
      float acc = 0;
      for (int M = J; M < I; ++M)
        for (int m = 0; m < kSub; ++m) acc += s_T[(I * kSub + r) * C + M * kSub + m] * s_A[(M * kSub + m) * AS + J * kSub + c];
      tmp[i] = acc;
    }
    __syncthreads();
    for (int i = tid; i < blocks * kSub * kSub; i += NT) {
      const int bi = i / (kSub * kSub), I = dist + bi, J = I - dist, r = (i / kSub) % kSub, c = i % kSub;
      float acc = 0;
      for (int m = 0; m < kSub; ++m) acc -= s_A[(I * kSub + r) * AS + I * kSub + m] * tmp[bi * kSub * kSub + m * kSub + c];
      s_A[(I * kSub + r) * AS + J * kSub + c] = acc;
    }
    __syncthreads();
  }
}
}  // namespace gdn2::cuda::detail
