// gdn2::cuda — the chunk size and the register-tiled products shared by the chunk-form kernels (versions 04, 05).
#pragma once

#include "common.cuh"

namespace gdn2::cuda::detail {

constexpr int kChunk = 64, kSub = 16, kNumSub = kChunk / kSub, kThreads = 256;

// acc (+)= sign · A B for the TM×TN tile of an M×N product owned by thread tid (256 threads tile the product in a
// 16 × 16 grid). A(m, j) = A[m·a_rs + j·a_cs] (so a transposed operand is a stride swap), B(j, n) = B[j·b_rs + n].
// Each step of j loads TM + TN values and does TM·TN multiply-adds from registers.
// CAUSAL (A lower triangular: A(m, j) = 0 for j > m): terms with j > m are skipped, not multiplied by zero — a
// future row of B may hold inf once the state overflows float32, and 0·inf = NaN would break causality.
template <int M, int N, int TM, int TN, bool CAUSAL = false>
__device__ __forceinline__ void tile_product(float (&acc)[TM][TN], const float* A, int a_rs, int a_cs, const float* B,
                                             int b_rs, int depth, int tid, float sign = 1.f) {
  static_assert((M / TM) * (N / TN) == kThreads, "one tile per thread");
  const int m0 = (tid / (N / TN)) * TM, n0 = (tid % (N / TN)) * TN;
  const int end = CAUSAL ? min(depth, m0 + TM) : depth;
#pragma unroll 4
  for (int j = 0; j < end; ++j) {
    float a[TM], b[TN];
#pragma unroll
    for (int i = 0; i < TM; ++i) a[i] = sign * A[(m0 + i) * a_rs + j * a_cs];
#pragma unroll
    for (int i = 0; i < TN; ++i) b[i] = B[j * b_rs + n0 + i];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int l = 0; l < TN; ++l)
        if (!CAUSAL || j <= m0 + i) acc[i][l] += a[i] * b[l];
  }
}

template <int N, int TM, int TN>
__device__ __forceinline__ void store_tile(const float (&acc)[TM][TN], float* out, int rs, int tid) {
  const int m0 = (tid / (N / TN)) * TM, n0 = (tid % (N / TN)) * TN;
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int l = 0; l < TN; ++l) out[(m0 + i) * rs + n0 + l] = acc[i][l];
}

}  // namespace gdn2::cuda::detail
