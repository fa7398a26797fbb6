// Rung 05 — prepare by sub-chunks: the scores' off-diagonal blocks, Y and U as tensor-core products.
//
// Idea: rung 04's prepare builds T and A_qk pair by pair and Y, U and A row by row on CUDA cores. Cut the chunk into
// four sub-chunks of 16 tokens. For s in an earlier sub-chunk than r, split the segment at the pivot p = (first
// token of r's sub-chunk) − 1: Γ_rs = P_r ⊙ D_s with P_r = exp(Σ_{i=p+1}^{r} g_i) and D_s = exp(Σ_{i=s+1}^{p} g_i),
// both products of factors ≤ 1 (still exact: no γ⁻¹, no difference of cumulative sums). Then each off-diagonal block
// is one matrix product, A_qk[I, <I] = (Q_I ⊙ P_I)(K_<I ⊙ D_<I)ᵀ and T[I, <I] = (E_I ⊙ P_I)(K_<I ⊙ D_<I)ᵀ, run by
// mma like the pass's; only the 16×16 diagonal blocks stay pairwise (running products, as in rung 03).
// A = (I + T)⁻¹ by blocks: each diagonal block by forward substitution (a thread per column, no barrier), then
// A_IJ = −A_II Σ_{J≤M<I} T_IM A_MJ by block diagonals (6 barriers instead of 63). Y = AĒ and U = AZ by mma.
// The pass is rung 04's.
//
// Measured on an NVIDIA H100 80GB HBM3 (cuda/ladder/run.sh): 7.761 ms at B = 8, T = 4096; 1.471 ms at B = 1.
#include "common.cuh"

constexpr int kThreads = 256, kWarps = kThreads / 32, kCols = 32;

struct Workspace {  // per chunk, float32
  float *Y, *Qg, *Kt, *U, *Aqk, *gammaC;  // [C][K], [C][K], [C][K], [C][V], [C][C], [K]
};

constexpr int QS = K + 4, ES = K + 8, TS = C + 4, ZS = V + 8;  // padded row strides of the mma operands (floats)

struct PrepTiles {
  float Q[C][K], Kk[C][K], X[C][K];  // scale·q, k, exp(g)
  float E[C * ES];                   // e = b ⊙ k, then Ē = γ ⊙ e (the column operand of Y = A Ē)
  float T[C * TS], A[C * TS];        // T (Eq. 21), A = (I + T)⁻¹
  union {                            // scratch, used in turn by:
    struct { float PQ[16 * QS], PE[16 * QS], Kd[48 * QS]; } round;  // one sub-chunk's off-diagonal operands
    float W[3 * 256];                                              // the block inverse's Σ T_IM A_MJ
    float Z[C * ZS];                                               // z = w ⊙ v
  } u;
};

__global__ void __launch_bounds__(kThreads) chunk_prepare(Problem p, Workspace ws) {
  extern __shared__ float smem[];
  PrepTiles& s = *reinterpret_cast<PrepTiles*>(smem);
  const int n = blockIdx.x, h = blockIdx.y, bi = blockIdx.z, tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;
  const uint64_t chunk = (uint64_t(bi) * p.H + h) * (p.T / C) + n;
  float* Aqk = ws.Aqk + chunk * C * C;
  auto row = [&](int r) { return (uint64_t(bi) * p.T + n * C + r) * p.H + h; };
  for (int i = tid; i < C * K; i += kThreads) {  // 1. inputs
    const int r = i / K, d = i % K;
    const float k = bf16_float(p.k[row(r) * K + d]);
    s.Q[r][d] = p.scale * bf16_float(p.q[row(r) * K + d]);
    s.Kk[r][d] = k;
    s.E[r * ES + d] = bf16_float(p.b[row(r) * K + d]) * k;
    s.X[r][d] = expf(p.g[row(r) * K + d]);
  }
  for (int i = tid; i < C * C; i += kThreads) {
    const int r = i / C, c = i % C;
    s.T[r * TS + c] = 0.f, s.A[r * TS + c] = r == c ? 1.f : 0.f;
    if (c > r) Aqk[i] = 0.f;
  }
  __syncthreads();

  // 2. diagonal blocks of T and A_qk, column s by warp, Γ_rs a running product down the sub-chunk (Eq. 21, 25)
  for (int s_ = warp; s_ < C; s_ += kWarps) {
    float gamma[K / 32], ks[K / 32];
    for (int m = 0; m < K / 32; ++m) gamma[m] = 1.f, ks[m] = s.Kk[s_][lane + 32 * m];
    for (int r = s_; r < (s_ / 16 + 1) * 16; ++r) {
      float tr = 0.f, a = 0.f;
      for (int m = 0; m < K / 32; ++m) {
        const int d = lane + 32 * m;
        if (r > s_) gamma[m] *= s.X[r][d];
        tr += s.E[r * ES + d] * gamma[m] * ks[m];
        a += s.Q[r][d] * gamma[m] * ks[m];
      }
      for (int off = 16; off > 0; off /= 2) {
        tr += __shfl_xor_sync(0xffffffffu, tr, off);
        a += __shfl_xor_sync(0xffffffffu, a, off);
      }
      if (lane == 0) {
        if (r > s_) s.T[r * TS + s_] = tr;
        Aqk[r * C + s_] = a;
      }
    }
  }
  // 3. off-diagonal blocks, one sub-chunk I at a time: (Q_I ⊙ P_I)(K_<I ⊙ D_<I)ᵀ and (E_I ⊙ P_I)(K_<I ⊙ D_<I)ᵀ
  for (int I = 1; I < C / 16; ++I) {
    const int first = 16 * I;
    __syncthreads();  // the scratch is free
    if (tid < K) {    // P_r = Π_{i=first}^{r} exp(g_i)
      float P = 1.f;
      for (int r = 0; r < 16; ++r) {
        P *= s.X[first + r][tid];
        s.u.round.PQ[r * QS + tid] = s.Q[first + r][tid] * P;
        s.u.round.PE[r * QS + tid] = s.E[(first + r) * ES + tid] * P;
      }
    } else {  // D_s = Π_{i=s+1}^{first-1} exp(g_i)
      const int d = tid - K;
      float D = 1.f;
      for (int r = first - 1; r >= 0; --r) {
        s.u.round.Kd[r * QS + d] = s.Kk[r][d] * D;
        D *= s.X[r][d];
      }
    }
    __syncthreads();
    for (int tile = warp; tile < 2 * (first / 8); tile += kWarps) {  // 16 × first, for T and for A_qk
      const bool scores = tile >= first / 8;
      const int n0 = tile % (first / 8) * 8;
      float c[4] = {0.f, 0.f, 0.f, 0.f};
      warp_mma(c, scores ? s.u.round.PQ : s.u.round.PE, QS, 1, s.u.round.Kd, 1, QS, 0, n0, K);
      for (int e = 0; e < 4; ++e) {
        const int r = first + g + 8 * (e / 2), col = n0 + 2 * t + e % 2;
        if (scores) Aqk[r * C + col] = c[e];
        else s.T[r * TS + col] = c[e];
      }
    }
  }
  __syncthreads();

  // 4. A's diagonal blocks by forward substitution, a thread per column (it reads only what it wrote) (Eq. 21);
  //    meanwhile Q_γ, Ē, K_tail, γ_C by running products (Eq. 18, 20, 24, 41)
  if (tid < C) {
    const int base = tid / 16 * 16, c = tid;
    for (int r = c + 1; r < base + 16; ++r) {
      float x = -s.T[r * TS + c];
      for (int m = c + 1; m < r; ++m) x -= s.T[r * TS + m] * s.A[m * TS + c];
      s.A[r * TS + c] = x;
    }
  } else if (tid >= kThreads - K) {
    const int d = tid - (kThreads - K);
    float gamma = 1.f;
    for (int r = 0; r < C; ++r) {
      gamma *= s.X[r][d];
      ws.Qg[(chunk * C + r) * K + d] = gamma * s.Q[r][d];
      s.E[r * ES + d] *= gamma;
    }
    ws.gammaC[chunk * K + d] = gamma;
    float tail = 1.f;
    for (int r = C - 1; r >= 0; --r) {
      ws.Kt[(chunk * C + r) * K + d] = tail * s.Kk[r][d];
      tail *= s.X[r][d];
    }
  }
  // 5. A's blocks below the diagonal, by block diagonals: A_IJ = −A_II Σ_{J≤M<I} T_IM A_MJ
  for (int dist = 1; dist < C / 16; ++dist) {
    const int blocks = C / 16 - dist;
    __syncthreads();
    for (int e = tid; e < blocks * 256; e += kThreads) {
      const int I = dist + e / 256, J = I - dist, i = e % 256 / 16, j = e % 16;
      float w = 0.f;
      for (int m = 16 * J; m < 16 * I; ++m) w += s.T[(16 * I + i) * TS + m] * s.A[m * TS + 16 * J + j];
      s.u.W[e] = w;
    }
    __syncthreads();
    for (int e = tid; e < blocks * 256; e += kThreads) {
      const int I = dist + e / 256, J = I - dist, i = e % 256 / 16, j = e % 16;
      float x = 0.f;
      for (int l = 0; l <= i; ++l) x -= s.A[(16 * I + i) * TS + 16 * I + l] * s.u.W[e / 256 * 256 + l * 16 + j];
      s.A[(16 * I + i) * TS + 16 * J + j] = x;
    }
  }
  __syncthreads();
  for (int i = tid; i < C * V; i += kThreads) {
    const int r = i / V, j = i % V;
    s.u.Z[r * ZS + j] = bf16_float(p.w[row(r) * V + j]) * bf16_float(p.v[row(r) * V + j]);
  }
  __syncthreads();
  // 6. Y = A Ē and U = A Z by mma, each row tile's depth ending with its diagonal block (Eq. 22)
  for (int tile = warp; tile < 2 * (C / 16) * (K / 8); tile += kWarps) {
    const bool u = tile >= (C / 16) * (K / 8);
    const int m0 = tile % ((C / 16) * (K / 8)) / (K / 8) * 16, n0 = tile % (K / 8) * 8;
    float c[4] = {0.f, 0.f, 0.f, 0.f};
    if (u) warp_mma(c, s.A, TS, 1, s.u.Z, ZS, 1, m0, n0, m0 + 16);
    else warp_mma(c, s.A, TS, 1, s.E, ES, 1, m0, n0, m0 + 16);
    for (int e = 0; e < 4; ++e) {
      const int r = m0 + g + 8 * (e / 2), col = n0 + 2 * t + e % 2;
      (u ? ws.U : ws.Y)[(chunk * C + r) * K + col] = c[e];
    }
  }
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

int main(int argc, char** argv) { return ladder_main("05_subchunk_mma", argc, argv, forward); }
