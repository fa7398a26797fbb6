// Rung 01 — the token recurrence, as written (paper Eq. 9).
//
// Idea: walk the T tokens of a sequence one after the other, exactly as Eq. 9 reads,
//     S̄ = Diag(exp g_t) S,   r = S̄ᵀ e_t (e_t = b_t ⊙ k_t),   S = S̄ + k_t (z_t − r)ᵀ (z_t = w_t ⊙ v_t),   o_t = Sᵀ q_t,
// with one warp per (sequence, head, 16 value columns). Two lanes share a column of the state and keep its even and
// odd rows, 64 floats each, in registers for the whole sequence (128 would spill); per token the warp stages k, e,
// scale·q and exp(g) in shared memory, each lane does 4·64 multiply-adds and one shuffle joins each pair's two sums.
// No chunking, so nothing is parallel over time: every token waits for its loads, and there are only B·H·V/16 =
// 1024 warps for 132 SMs.
// This is today's decode kernel (one token at a time is all decode has), and the baseline every chunked rung must
// beat at training length.
//
// Measured on an NVIDIA H100 80GB HBM3 (cuda/ladder/run.sh): 6.831 ms at B = 8, T = 4096; 6.060 ms at B = 1.
#include "common.cuh"

constexpr int kCols = 16, kThreads = 32;  // value columns per block (a warp): two lanes per column

__global__ void __launch_bounds__(kThreads) recurrent_forward(Problem p) {
  const int bi = blockIdx.z, h = blockIdx.y, j = blockIdx.x * kCols + threadIdx.x / 2, half = threadIdx.x % 2;
  __shared__ float qs[K], ks[K], es[K], alpha[K];
  float s[K / 2];  // rows 2m + half of column j of S: s[m] = S[2m + half][j]
#pragma unroll
  for (int m = 0; m < K / 2; ++m) s[m] = 0.f;

  for (int t = 0; t < p.T; ++t) {
    const uint64_t row = (uint64_t(bi) * p.T + t) * p.H + h;  // this token's row of every [B][T][H][·] tensor
    __syncthreads();                                          // the previous token's reads of qs, ks, es, alpha are done
    for (int i = threadIdx.x; i < K; i += kThreads) {
      const float k = bf16_float(p.k[row * K + i]);
      ks[i] = k;
      es[i] = bf16_float(p.b[row * K + i]) * k;        // e_t = b_t ⊙ k_t   (Eq. 8)
      qs[i] = p.scale * bf16_float(p.q[row * K + i]);
      alpha[i] = expf(p.g[row * K + i]);                // α_t = exp(g_t)    (Eq. 12)
    }
    const float z = bf16_float(p.w[row * V + j]) * bf16_float(p.v[row * V + j]);  // z_t = w_t ⊙ v_t, entry j
    __syncthreads();

    float r = 0.f;  // r_j = Σ_i e_i S̄[i][j]: this lane's rows, then its partner's
#pragma unroll
    for (int m = 0; m < K / 2; ++m) {
      s[m] *= alpha[2 * m + half];
      r += es[2 * m + half] * s[m];
    }
    r += __shfl_xor_sync(0xffffffffu, r, 1);
    float o = 0.f;  // o_j = Σ_i q_i S[i][j]
#pragma unroll
    for (int m = 0; m < K / 2; ++m) {
      s[m] += ks[2 * m + half] * (z - r);
      o += qs[2 * m + half] * s[m];
    }
    o += __shfl_xor_sync(0xffffffffu, o, 1);
    if (half == 0) p.o[row * V + j] = bf16_bits(o);
  }
#pragma unroll
  for (int m = 0; m < K / 2; ++m) p.ht[((uint64_t(bi) * p.H + h) * K + 2 * m + half) * V + j] = s[m];
}

void forward(const Problem& p) { recurrent_forward<<<dim3(V / kCols, p.H, p.B), kThreads>>>(p); }

int main(int argc, char** argv) { return ladder_main("01_naive_recurrent", argc, argv, forward); }
