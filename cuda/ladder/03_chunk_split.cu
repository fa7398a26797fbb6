// Rung 03 — split: the state-independent work of every chunk in parallel, then a short sequential pass.
//
// Idea: rung 02 did everything in the sequential walk over chunks, and most of it (T, A, A_qk, Y, U, Q_γ, K_tail,
// γ_C: Eq. 18-22, 25, 41) does not depend on the state. Kernel 1, prepare, computes it for every (sequence, head,
// chunk) at once (B·H·T/C = 8192 blocks) into a float32 workspace; kernel 2, the pass, one block per (sequence, head,
// 32 value columns), walks the chunks and does only what needs S: R = U − Y S, O = Q_γ S + A_qk R and
// S ← Diag(γ_C) S + K_tailᵀ R (Eq. 23-24, 35). Prepare also builds the decays better: a warp takes one column s of
// T and A_qk, its lanes hold channels, and going down the rows r it multiplies Γ_rs by one factor exp(g_r) per step
// (a running product of factors ≤ 1: exact, and O(C²K) instead of rung 02's O(C³K)). A = (I + T)⁻¹ is still forward
// substitution, one barrier per row.
//
// Measured on an NVIDIA H100 80GB HBM3 (cuda/ladder/run.sh): 16.888 ms at B = 8, T = 4096; 3.395 ms at B = 1.
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

struct PassTiles {
  float S[K][kCols];
  float Y[C][K], Qg[C][K], Kt[C][K];
  float Aqk[C][C];
  float R[C][kCols];  // U, then R = U − Y S in place
  float gammaC[K];
};

__global__ void __launch_bounds__(kThreads) chunk_pass(Problem p, Workspace ws) {
  extern __shared__ float smem[];
  PassTiles& s = *reinterpret_cast<PassTiles*>(smem);
  const int v0 = blockIdx.x * kCols, h = blockIdx.y, bi = blockIdx.z, tid = threadIdx.x;
  for (int i = tid; i < K * kCols; i += kThreads) s.S[i / kCols][i % kCols] = 0.f;
  for (int n = 0; n < p.T / C; ++n) {
    const uint64_t chunk = (uint64_t(bi) * p.H + h) * (p.T / C) + n;
    for (int i = tid; i < C * K; i += kThreads) {
      const int r = i / K, d = i % K;
      s.Y[r][d] = ws.Y[chunk * C * K + i];
      s.Qg[r][d] = ws.Qg[chunk * C * K + i];
      s.Kt[r][d] = ws.Kt[chunk * C * K + i];
    }
    for (int i = tid; i < C * C; i += kThreads) s.Aqk[i / C][i % C] = ws.Aqk[chunk * C * C + i];
    for (int i = tid; i < C * kCols; i += kThreads)
      s.R[i / kCols][i % kCols] = ws.U[(chunk * C + i / kCols) * V + v0 + i % kCols];
    if (tid < K) s.gammaC[tid] = ws.gammaC[chunk * K + tid];
    __syncthreads();
    for (int i = tid; i < C * kCols; i += kThreads) {  // R = U − Y S   (Eq. 35)
      const int r = i / kCols, j = i % kCols;
      float x = s.R[r][j];
      for (int d = 0; d < K; ++d) x -= s.Y[r][d] * s.S[d][j];
      s.R[r][j] = x;
    }
    __syncthreads();
    for (int i = tid; i < C * kCols; i += kThreads) {  // O = Q_γ S + A_qk R   (Eq. 24)
      const int r = i / kCols, j = i % kCols;
      float x = 0.f;
      for (int d = 0; d < K; ++d) x += s.Qg[r][d] * s.S[d][j];
      for (int m = 0; m <= r; ++m) x += s.Aqk[r][m] * s.R[m][j];
      p.o[((uint64_t(bi) * p.T + n * C + r) * p.H + h) * V + v0 + j] = bf16_bits(x);
    }
    __syncthreads();
    for (int i = tid; i < K * kCols; i += kThreads) {  // S ← Diag(γ_C) S + K_tailᵀ R   (Eq. 23)
      const int d = i / kCols, j = i % kCols;
      float x = s.gammaC[d] * s.S[d][j];
      for (int r = 0; r < C; ++r) x += s.Kt[r][d] * s.R[r][j];
      s.S[d][j] = x;
    }
    __syncthreads();
  }
  for (int i = tid; i < K * kCols; i += kThreads)
    p.ht[((uint64_t(bi) * p.H + h) * K + i / kCols) * V + v0 + i % kCols] = s.S[i / kCols][i % kCols];
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

int main(int argc, char** argv) { return ladder_main("03_chunk_split", argc, argv, forward); }
