// Rung 04 — the pass's products on tensor cores.
//
// Idea: rung 03's pass spends its time in three products per chunk — R = U − Y S (64×128 by 128×32), O = Q_γ S +
// A_qk R and S ← Diag(γ_C) S + K_tailᵀ R (128×64 by 64×32) — each element a loop of scalar multiply-adds with two
// shared loads per multiply-add. Here each warp computes 16×8 tiles of them with mma.sync m16n8k8 (operands rounded
// to TF32, accumulation in float32; the state itself stays float32 in shared memory). Tile rows are padded so that
// the 32 lanes' fragment reads fall in 32 different banks (row-operand strides ≡ 4 mod 32, column-operand strides
// ≡ 8 mod 32). A_qk R stops after each row tile's diagonal block: the zeros above it are never multiplied (a zero
// times an overflowed future row would be NaN, and the work is wasted anyway). Prepare is rung 03's.
//
// Measured on an NVIDIA H100 80GB HBM3 (cuda/ladder/run.sh): 11.005 ms at B = 8, T = 4096; 1.912 ms at B = 1.
#include "common.cuh"

constexpr int kThreads = 256, kWarps = kThreads / 32, kCols = 32;

struct Workspace {  // per chunk, float32
  float *Y, *Qg, *Kt, *U, *Aqk, *gammaC;  // [C][K], [C][K], [C][K], [C][V], [C][C], [K]
};

struct PrepTiles {
  float Q[C][K], Kk[C][K], E[C][K], X[C][K], Z[C][V];  // scale·q, k, e = b ⊙ k, exp(g), z = w ⊙ v
  float T[C][C], A[C][C], Aqk[C][C];
};

__global__ void __launch_bounds__(kThreads) chunk_prepare(Problem p, Workspace ws) {
  extern __shared__ float smem[];
  PrepTiles& s = *reinterpret_cast<PrepTiles*>(smem);
  const int n = blockIdx.x, h = blockIdx.y, bi = blockIdx.z, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const uint64_t chunk = (uint64_t(bi) * p.H + h) * (p.T / C) + n;
  auto row = [&](int r) { return (uint64_t(bi) * p.T + n * C + r) * p.H + h; };
  for (int i = tid; i < C * K; i += kThreads) {  // 1. inputs
    const int r = i / K, d = i % K;
    const float k = bf16_float(p.k[row(r) * K + d]);
    s.Q[r][d] = p.scale * bf16_float(p.q[row(r) * K + d]);
    s.Kk[r][d] = k;
    s.E[r][d] = bf16_float(p.b[row(r) * K + d]) * k;
    s.X[r][d] = expf(p.g[row(r) * K + d]);
    s.Z[r][d] = bf16_float(p.w[row(r) * V + d]) * bf16_float(p.v[row(r) * V + d]);
  }
  for (int i = tid; i < C * C; i += kThreads) {
    s.A[i / C][i % C] = i / C == i % C ? 1.f : 0.f;
    s.T[i / C][i % C] = s.Aqk[i / C][i % C] = 0.f;  // above the diagonal they stay 0
  }
  __syncthreads();

  // 2. T and A_qk, column s by warp: Γ_rs,d = Π_{i=s+1}^{r} exp(g_id), one factor per row   (Eq. 21, 25)
  for (int s_ = warp; s_ < C; s_ += kWarps) {
    float gamma[K / 32], ks[K / 32];
    for (int m = 0; m < K / 32; ++m) gamma[m] = 1.f, ks[m] = s.Kk[s_][lane + 32 * m];
    for (int r = s_; r < C; ++r) {
      // Γ_rs = Γ_{r-1,s} ⊙ exp(g_r), Γ_ss = 1. The factor has its own loop: inside the channel loop below, nvcc 13.0
      // (-O3, sm_90) addressed exp(g) of channels 32-127 64 KB off (docs/cuda-ladder.md).
      if (r > s_)
        for (int m = 0; m < K / 32; ++m) gamma[m] *= s.X[r][lane + 32 * m];
      float t = 0.f, a = 0.f;
      for (int m = 0; m < K / 32; ++m) {
        const int d = lane + 32 * m;
        t += s.E[r][d] * gamma[m] * ks[m];
        a += s.Q[r][d] * gamma[m] * ks[m];
      }
      for (int off = 16; off > 0; off /= 2) {  // sum over the warp's channels
        t += __shfl_xor_sync(0xffffffffu, t, off);
        a += __shfl_xor_sync(0xffffffffu, a, off);
      }
      if (lane == 0) s.T[r][s_] = r > s_ ? t : 0.f, s.Aqk[r][s_] = a;
    }
  }
  __syncthreads();

  // 3. per channel: Q_γ = γ ⊙ q, Ē = γ ⊙ e, K_tail, γ_C by running products (Eq. 18, 20, 24, 41); meanwhile
  // 4. A = (I + T)⁻¹ by forward substitution (Eq. 21): A_rc = −T_rc − Σ_{c<m<r} T_rm A_mc, one row per barrier
  if (tid < K) {
    const int d = tid;
    float gamma = 1.f;
    for (int r = 0; r < C; ++r) {
      gamma *= s.X[r][d];
      ws.Qg[(chunk * C + r) * K + d] = gamma * s.Q[r][d];
      s.E[r][d] *= gamma;
    }
    ws.gammaC[chunk * K + d] = gamma;
    float tail = 1.f;  // Π_{i>r} exp(g_i)
    for (int r = C - 1; r >= 0; --r) {
      ws.Kt[(chunk * C + r) * K + d] = tail * s.Kk[r][d];
      tail *= s.X[r][d];
    }
  }
  for (int r = 1; r < C; ++r) {
    if (tid < r) {
      float x = -s.T[r][tid];
      for (int m = tid + 1; m < r; ++m) x -= s.T[r][m] * s.A[m][tid];
      s.A[r][tid] = x;
    }
    __syncthreads();
  }
  // 5. Y = A Ē, U = A Z (Eq. 22), and A_qk, to the workspace
  for (int i = tid; i < C * K; i += kThreads) {
    const int r = i / K, d = i % K;
    float y = 0.f, u = 0.f;
    for (int m = 0; m <= r; ++m) y += s.A[r][m] * s.E[m][d], u += s.A[r][m] * s.Z[m][d];
    ws.Y[(chunk * C + r) * K + d] = y;
    ws.U[(chunk * C + r) * V + d] = u;
  }
  for (int i = tid; i < C * C; i += kThreads) ws.Aqk[chunk * C * C + i] = s.Aqk[i / C][i % C];
}

constexpr int YS = K + 4, KS = K + 8, AS = C + 4, SS = kCols + 8;  // padded row strides (floats)

struct PassTiles {
  float S[K * SS];                   // the state slice, float32
  float Y[C * YS], Qg[C * YS];       // row operands
  float Kt[C * KS];                  // read transposed (K_tailᵀ) as the row operand
  float Aqk[C * AS];
  float R[C * SS];                   // U, then R = U − Y S in place
  float gammaC[K];
};

__global__ void __launch_bounds__(kThreads) chunk_pass(Problem p, Workspace ws) {
  extern __shared__ float smem[];
  PassTiles& s = *reinterpret_cast<PassTiles*>(smem);
  const int v0 = blockIdx.x * kCols, h = blockIdx.y, bi = blockIdx.z, tid = threadIdx.x, warp = tid / 32;
  const int g = (tid % 32) / 4, t = tid % 4;  // the lane's place in the mma fragments (common.cuh)
  for (int i = tid; i < K * kCols; i += kThreads) s.S[i / kCols * SS + i % kCols] = 0.f;
  for (int n = 0; n < p.T / C; ++n) {
    const uint64_t chunk = (uint64_t(bi) * p.H + h) * (p.T / C) + n;
    for (int i = tid; i < C * K; i += kThreads) {
      const int r = i / K, d = i % K;
      s.Y[r * YS + d] = ws.Y[chunk * C * K + i];
      s.Qg[r * YS + d] = ws.Qg[chunk * C * K + i];
      s.Kt[r * KS + d] = ws.Kt[chunk * C * K + i];
    }
    for (int i = tid; i < C * C; i += kThreads) s.Aqk[i / C * AS + i % C] = ws.Aqk[chunk * C * C + i];
    for (int i = tid; i < C * kCols; i += kThreads)
      s.R[i / kCols * SS + i % kCols] = ws.U[(chunk * C + i / kCols) * V + v0 + i % kCols];
    if (tid < K) s.gammaC[tid] = ws.gammaC[chunk * K + tid];
    __syncthreads();
    // R = U − Y S: 4 × 4 tiles of 16 × 8, two per warp   (Eq. 35)
    for (int tile = warp; tile < (C / 16) * (kCols / 8); tile += kWarps) {
      const int m0 = tile / (kCols / 8) * 16, n0 = tile % (kCols / 8) * 8;
      float c[4] = {0.f, 0.f, 0.f, 0.f};
      warp_mma(c, s.Y, YS, 1, s.S, SS, 1, m0, n0, K);
      for (int e = 0; e < 4; ++e) s.R[(m0 + g + 8 * (e / 2)) * SS + n0 + 2 * t + e % 2] -= c[e];
    }
    __syncthreads();
    // O = Q_γ S + A_qk R, the second product's depth ending with the row tile's diagonal block   (Eq. 24)
    for (int tile = warp; tile < (C / 16) * (kCols / 8); tile += kWarps) {
      const int m0 = tile / (kCols / 8) * 16, n0 = tile % (kCols / 8) * 8;
      float c[4] = {0.f, 0.f, 0.f, 0.f};
      warp_mma(c, s.Qg, YS, 1, s.S, SS, 1, m0, n0, K);
      warp_mma(c, s.Aqk, AS, 1, s.R, SS, 1, m0, n0, m0 + 16);
      for (int e = 0; e < 4; ++e) {
        const int r = m0 + g + 8 * (e / 2), j = n0 + 2 * t + e % 2;
        p.o[((uint64_t(bi) * p.T + n * C + r) * p.H + h) * V + v0 + j] = bf16_bits(c[e]);
      }
    }
    __syncthreads();
    // S ← Diag(γ_C) S + K_tailᵀ R: 8 × 4 tiles, four per warp; each lane updates the entries it accumulated (Eq. 23)
    for (int tile = warp; tile < (K / 16) * (kCols / 8); tile += kWarps) {
      const int m0 = tile / (kCols / 8) * 16, n0 = tile % (kCols / 8) * 8;
      float c[4] = {0.f, 0.f, 0.f, 0.f};
      warp_mma(c, s.Kt, 1, KS, s.R, SS, 1, m0, n0, C);
      for (int e = 0; e < 4; ++e) {
        const int d = m0 + g + 8 * (e / 2), j = n0 + 2 * t + e % 2;
        s.S[d * SS + j] = s.gammaC[d] * s.S[d * SS + j] + c[e];
      }
    }
    __syncthreads();
  }
  for (int i = tid; i < K * kCols; i += kThreads)
    p.ht[((uint64_t(bi) * p.H + h) * K + i / kCols) * V + v0 + i % kCols] = s.S[i / kCols * SS + i % kCols];
}

void forward(const Problem& p) {
  static Workspace ws{};
  static size_t chunks = 0;
  const size_t n = size_t(p.B) * p.H * (p.T / C);
  if (n != chunks) {  // allocated once per shape, kept between calls (timing the kernels, not cudaMalloc)
    if (chunks) CUDA_CHECK(cudaFree(ws.Y));
    float* base;
    CUDA_CHECK(cudaMalloc(&base, n * (3 * C * K + C * V + C * C + K) * sizeof(float)));
    ws = {base, base + n * C * K, base + 2 * n * C * K, base + 3 * n * C * K, base + n * (3 * C * K + C * V),
          base + n * (3 * C * K + C * V + C * C)};
    chunks = n;
    CUDA_CHECK(cudaFuncSetAttribute(chunk_prepare, cudaFuncAttributeMaxDynamicSharedMemorySize, sizeof(PrepTiles)));
    CUDA_CHECK(cudaFuncSetAttribute(chunk_pass, cudaFuncAttributeMaxDynamicSharedMemorySize, sizeof(PassTiles)));
  }
  chunk_prepare<<<dim3(p.T / C, p.H, p.B), kThreads, sizeof(PrepTiles)>>>(p, ws);
  chunk_pass<<<dim3(V / kCols, p.H, p.B), kThreads, sizeof(PassTiles)>>>(p, ws);
}

int main(int argc, char** argv) { return ladder_main("04_pass_mma", argc, argv, forward); }
