// Rung 06 — today's forward: a 16-warp prepare writes the pass's operands in mma-fragment order, and the state pass
// computes the output from them with Q_γ and A_qk in registers.
//
// Idea: rung 05's kernels wait more than they compute: prepare (8 warps) on its diagonal blocks (a shuffle reduction
// per entry) and 4-byte loads, the pass on reloading five float32 tiles into shared memory each chunk step. Here
// prepare runs 16 warps per chunk with 16-byte loads, the diagonal blocks by warp reduce-scatters (32 dot products by
// 31 shuffles), every decay the exp of a direct sum of g within a sub-chunk (c, a) or over whole ones (pre, suf, mid),
// Y = AĒ and U = AZ on tensor cores; it stores Q_γ, Y, K_tail, A_qk rounded to TF32 once, Q_γ and A_qk in fragment
// order. The pass copies chunk n + 1's Y, K_tail, U, γ_C by cp.async while chunk n computes, has L2 fetch its Q_γ and
// A_qk, loads them into registers once chunk n's are used, shares S_n's fragments between R = U − Y S_n and Q_γ S_n,
// and takes 64 value columns per block when there are enough (sequence, head) pairs, else 32, or 16 (B = 1, H = 16).
// It is cuda/src's bf16 forward (chunk_prepare.cu, chunk_scores.cuh, block_inverse.cuh, chunk_state_pass.cu) for
// K = V = 128. Left out here: float32 storage (CUDA-core products, a row-major workspace, the output kernel), K = 64
// and other V, packed sequences (cu_seqlens) and partial chunks (T is a multiple of 64), h0, grouped value heads,
// inputs not 16-byte aligned, the workspace kept for the backward (A, Ē, S_n), and the guard that keeps prefix
// causality bitwise when a future row of R overflows (A_qk R's fix-up on CUDA cores). The workspace holds one
// contiguous tile per (chunk, head) instead of rows in the token layout, allocated once (no memory pool).
//
// Measured on an NVIDIA H100 80GB HBM3 (cuda/ladder/run.sh): 2.259 ms at B = 8, T = 4096; 0.399 ms at B = 1.
#include "common.cuh"

constexpr int kSub = 16, kNumSub = C / kSub;  // sub-chunks of 16 tokens
constexpr int NT = 512;                       // prepare: 16 warps
constexpr int KP = K + 4, AS = C + 4;         // prepare's row strides (≡ 4 mod 32: fragment reads hit 32 banks)

struct Workspace {  // float32, one tile per (sequence, chunk, head): number (bi·(T/C) + n)·H + h
  float *Y, *U, *Kt;  // [C][K], [C][V], [C][K] row-major; Y and K_tail rounded to TF32
  float *Qf, *Af;     // Q_γ [C·K] and A_qk [C·C] in fragment order, rounded to TF32
  float* gC;          // γ_C [K]
};

// Lane l's x[v] are its parts of 32 sums; returns sum number l. Each round a lane keeps the half of its values whose
// index bit matches its lane bit and adds the other half from lane l ^ off: 31 shuffles for 32 dot products.
__device__ inline float warp_reduce_scatter(float (&x)[32], int lane) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    const bool upper = lane & off;
#pragma unroll
    for (int i = 0; i < 16 && i < off; ++i) {
      const float send = upper ? x[i] : x[i + off], keep = upper ? x[i + off] : x[i];
      x[i] = keep + __shfl_xor_sync(0xffffffffu, send, off);
    }
  }
  return x[0];
}

constexpr size_t kPrepareFloats = 4 * C * KP + 2 * C * C + 3 * kSub * kSub + (3 + kNumSub) * kNumSub * K + C * AS;

__global__ void __launch_bounds__(NT, 1) chunk_prepare(Problem p, Workspace ws) {
  extern __shared__ __align__(16) float smem[];
  float *s_q = smem, *s_k = s_q + C * KP, *s_e = s_k + C * KP;  // [C][KP] q̃ → q̃⊙c, k → k⊙a, e = b⊙k → e⊙c → Ē
  float *s_g = s_e + C * KP, *s_T = s_g + C * KP;                // [C][KP] g, then Z = w ⊙ v; [C][C] T
  float *s_Aqk = s_T + C * C, *s_W = s_Aqk + C * C;              // [C][C] A_qk; [3][16][16] the inverse's scratch
  float *s_bs = s_W + 3 * kSub * kSub, *s_pre = s_bs + kNumSub * K, *s_suf = s_pre + kNumSub * K;  // [kNumSub][K]
  float *s_mid = s_suf + kNumSub * K, *s_A = s_mid + kNumSub * kNumSub * K;  // [kNumSub][kNumSub][K]; [C][AS]
  float* s_x = s_W;  // exp(g) [C + 3][K] until the diagonal blocks are done; nothing from s_W on is written before
  const int n = blockIdx.x, h = blockIdx.y, bi = blockIdx.z, tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int g = lane / 4, t = lane % 4;  // the lane's place in the mma fragments (common.cuh)
  const uint64_t tile = (uint64_t(bi) * (p.T / C) + n) * p.H + h, row0 = uint64_t(bi) * p.T + n * C;
  auto at = [&](int u) {  // thread tid's u-th 8 channels (u = 0, 1): row r, channel d, index in q, k, b, g, v, w
    const int r = (u * NT + tid) / 16, d = (u * NT + tid) % 16 * 8;
    return ((row0 + r) * p.H + h) * K + d;
  };
  auto tile_at = [&](int u) { return (u * NT + tid) / 16 * KP + (u * NT + tid) % 16 * 8; };  // the same in a tile
  // 1. q̃ = scale·q, k, e = b ⊙ k, g and exp(g): 8 channels per 16-byte load, every load issued before any store.
  uint4 q8[2], k8[2], b8[2];
  float gg[2][8];
  for (int u = 0; u < 2; ++u)
    q8[u] = ld16(p.q + at(u)), k8[u] = ld16(p.k + at(u)), b8[u] = ld16(p.b + at(u)), ld8(gg[u], p.g + at(u));
  for (int u = 0; u < 2; ++u) {
    const int o = tile_at(u), ox = o / KP * K + o % KP;
    float q[8], k[8], b[8], x[8], e[8];
    bf16x8(q, q8[u]), bf16x8(k, k8[u]), bf16x8(b, b8[u]);
    for (int j = 0; j < 8; ++j) q[j] *= p.scale, e[j] = b[j] * k[j], x[j] = expf(gg[u][j]);
    for (int j = 0; j < 8; j += 4) {
      store4(s_q + o + j, q + j), store4(s_k + o + j, k + j), store4(s_e + o + j, e + j);
      store4(s_g + o + j, gg[u] + j), store4(s_x + ox + j, x + j);
    }
  }
  __syncthreads();

  // 2a. The diagonal 16 × 16 blocks of T and A_qk (Eq. 21, 25), pairwise: walking r upward from s, Γ_rs ⊙ k_s is kept
  //     per channel and updated by one factor, Γ_rs = Γ_{r−1,s} exp(g_r). Warp w takes sub-chunk M = w % 4 and the
  //     columns s = first + 4c (first = 16M + w / 4, c = 0 .. 3); round gi holds rows first + 4gi + i, so r ≥ s
  //     (gi ≥ c) and r > s are known at compile time. Rows past the sub-chunk (last round) are selected away.
  {
    const int first = warp % kNumSub * kSub + warp / kNumSub, end = (warp % kNumSub + 1) * kSub;
    float dk[4][4];
    for (int i = 0; i < 16; ++i) dk[i / 4][i % 4] = s_k[(first + 4 * (i / 4)) * KP + lane + 32 * (i % 4)];
#pragma unroll
    for (int gi = 0; gi < 4; ++gi) {
      float x[32];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = first + 4 * gi + i;
        float ex[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) ex[j] = s_x[r * K + lane + 32 * j];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          float aqk = 0.f, tr = 0.f;
          if (gi >= c)
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              if (gi > c || i > 0) dk[c][j] *= ex[j];
              aqk += s_q[r * KP + lane + 32 * j] * dk[c][j], tr += s_e[r * KP + lane + 32 * j] * dk[c][j];
            }
          if (gi == 3) aqk = r < end ? aqk : 0.f, tr = r < end ? tr : 0.f;  // a select, not a branch
          x[(i * 4 + c) * 2] = aqk, x[(i * 4 + c) * 2 + 1] = tr;
        }
      }
      const float sum = warp_reduce_scatter(x, lane);  // lane 2v + m: sum v = (row i, column c) of A_qk (m = 0) or T
      const int v = lane / 2, r = first + 4 * gi + v / 4, s = first + 4 * (v % 4);
      if (r < end && r >= s) (lane % 2 ? s_T : s_Aqk)[r * C + s] = lane % 2 && r == s ? 0.f : sum;
    }
  }
  __syncthreads();
  uint4 w8[2], v8[2];  // z = w ⊙ v goes into g's tile after 2b; loaded now, 2b and 2c hide the latency
  for (int u = 0; u < 2; ++u) w8[u] = ld16(p.w + at(u)), v8[u] = ld16(p.v + at(u));
  // 2b. Decay factors, one thread per (channel d, sub-chunk M), exps of direct sums of g ≤ 0: c_r (prefix in the
  //     sub-chunk, r included) onto q̃ and e, a_s (suffix in the sub-chunk, s excluded) onto k, and those of whole
  //     sub-chunks before M (pre), after M (suf) and strictly between M and I (mid).
  const int d = tid % K, M = tid / K;
  float run = 0.f;
  for (int r = M * kSub; r < (M + 1) * kSub; ++r) {
    run += s_g[r * KP + d];
    const float cr = expf(run);
    s_q[r * KP + d] *= cr, s_e[r * KP + d] *= cr;
  }
  s_bs[M * K + d] = run, run = 0.f;
  for (int r = (M + 1) * kSub - 1; r >= M * kSub; --r) s_k[r * KP + d] *= expf(run), run += s_g[r * KP + d];
  __syncthreads();
  float before = 0.f, after = 0.f;
  for (int j = 0; j < kNumSub; ++j) (j < M ? before : after) += j == M ? 0.f : s_bs[j * K + d];
  s_pre[M * K + d] = expf(before), s_suf[M * K + d] = expf(after);
  for (int I = M + 1; I < kNumSub; ++I) {
    float between = 0.f;
    for (int j = M + 1; j < I; ++j) between += s_bs[j * K + d];
    s_mid[(M * kNumSub + I) * K + d] = expf(between);
  }
  __syncthreads();
  // 2c. The six off-diagonal blocks J < I on tensor cores: A_qk_IJ = (q̃⊙c)_I Diag(mid(J, I)) (k⊙a)_Jᵀ and T_IJ the
  //     same with (e⊙c)_I; a warp takes a block and 8 of its columns, both products sharing the B fragment.
  for (int task = warp; task < 12; task += NT / 32) {
    int J = task / 2, I = 1;
    while (J >= I) J -= I, ++I;  // blocks (1,0), (2,0), (2,1), (3,0), (3,1), (3,2)
    const int n0 = task % 2 * 8;
    const float *mid = s_mid + (J * kNumSub + I) * K, *kr = s_k + (J * kSub + n0 + g) * KP;
    const float *qr = s_q + (I * kSub + g) * KP + t, *er = s_e + (I * kSub + g) * KP + t;
    float ca[4] = {}, ct[4] = {};
#pragma unroll 4
    for (int k0 = 0; k0 < K; k0 += 8) {
      const int a = k0, a8 = k0 + 8 * KP;
      const uint32_t aq[4] = {tf32(qr[a]), tf32(qr[a8]), tf32(qr[a + 4]), tf32(qr[a8 + 4])};
      const uint32_t ae[4] = {tf32(er[a]), tf32(er[a8]), tf32(er[a + 4]), tf32(er[a8 + 4])};
      const uint32_t b0 = tf32(mid[k0 + t] * kr[k0 + t]), b1 = tf32(mid[k0 + t + 4] * kr[k0 + t + 4]);
      mma_tf32(ca, aq, b0, b1), mma_tf32(ct, ae, b0, b1);
    }
    for (int hh = 0; hh < 2; ++hh) {
      const int i = (I * kSub + g + 8 * hh) * C + J * kSub + n0 + 2 * t;
      s_Aqk[i] = ca[2 * hh], s_Aqk[i + 1] = ca[2 * hh + 1], s_T[i] = ct[2 * hh], s_T[i + 1] = ct[2 * hh + 1];
    }
  }
  for (int u = 0; u < 2; ++u) {
    float wf[8], vf[8], z[8];
    bf16x8(wf, w8[u]), bf16x8(vf, v8[u]);
    for (int j = 0; j < 8; ++j) z[j] = wf[j] * vf[j];
    store4(s_g + tile_at(u), z), store4(s_g + tile_at(u) + 4, z + 4);
  }
  __syncthreads();
  // Ē = γ ⊙ e = pre ⊙ (e⊙c) (Eq. 20) and Q_γ = γ ⊙ q̃ = pre ⊙ (q̃⊙c) (Eq. 24) in place; K_tail = (γ_C/γ_r) ⊙ k =
  // suf ⊙ (k⊙a) (Eq. 23) to the workspace.
  for (int i = tid; i < C * K / 4; i += NT) {  // 4 channels at a time
    const int r = i / (K / 4), d = i % (K / 4) * 4, o = r * KP + d, m = r / kSub * K + d;
    float eb[4], qg[4], kt[4];
    for (int j = 0; j < 4; ++j) eb[j] = s_e[o + j] * s_pre[m + j], qg[j] = s_q[o + j] * s_pre[m + j];
    for (int j = 0; j < 4; ++j) kt[j] = round_tf32(s_k[o + j] * s_suf[m + j]);
    store4(s_e + o, eb), store4(s_q + o, qg), store4(ws.Kt + tile * C * K + r * K + d, kt);
  }
  if (tid < K) ws.gC[tile * K + tid] = expf(s_bs[tid] + s_bs[K + tid] + s_bs[2 * K + tid] + s_bs[3 * K + tid]);
  // 3. A = (I + T)⁻¹ (Eq. 21) by 16 × 16 blocks: a warp per diagonal block, lane j forward-substituting column j in
  //    registers; then the blocks below by block diagonals, A_IJ = −A_II Σ_{J≤M<I} T_IM A_MJ.
  for (int i = tid; i < C * AS; i += NT) s_A[i] = 0.f;
  __syncthreads();
  if (warp < kNumSub && lane < kSub) {
    const int o = warp * kSub;
    float x[kSub];
#pragma unroll
    for (int r = 0; r < kSub; ++r) {
      float acc = r == lane ? 1.f : 0.f;
#pragma unroll
      for (int c = 0; c < r; ++c) acc -= s_T[(o + r) * C + o + c] * x[c];
      x[r] = acc, s_A[(o + r) * AS + o + lane] = acc;
    }
  }
  for (int dist = 1; dist < kNumSub; ++dist) {
    __syncthreads();
    for (int i = tid; i < (kNumSub - dist) * 256; i += NT) {  // W = Σ_{J≤M<I} T_IM A_MJ
      const int I = dist + i / 256, J = I - dist, r = I * kSub + i / kSub % kSub, c = J * kSub + i % kSub;
      float acc = 0.f;
      for (int m = J * kSub; m < I * kSub; ++m) acc += s_T[r * C + m] * s_A[m * AS + c];
      s_W[i] = acc;
    }
    __syncthreads();
    for (int i = tid; i < (kNumSub - dist) * 256; i += NT) {  // A_IJ = −A_II W
      const int I = dist + i / 256, J = I - dist, r = I * kSub + i / kSub % kSub, c = J * kSub + i % kSub;
      float acc = 0.f;
      for (int m = 0; m < kSub; ++m) acc -= s_A[r * AS + I * kSub + m] * s_W[i / 256 * 256 + m * kSub + i % kSub];
      s_A[r * AS + c] = acc;
    }
  }
  __syncthreads();
  // Q_γ and A_qk (below) in fragment order: float4 number (mb·D/8 + ks)·32 + lane holds lane's A fragment of mma_tf32
  // for rows 16mb .. 16mb + 15 and k-step ks; A_qk's k-steps stop at the diagonal block, zeros above the diagonal.
  auto fragments = [&](const float* src, int ld, int D, float* dst, bool causal) {
    for (int f = tid; f < C * D / 4; f += NT) {
      const int ln = f % 32, ks = f / 32 % (D / 8), mb = f / (4 * D);
      if (causal && ks > 2 * mb + 1) continue;
      float x[4];
      for (int j = 0; j < 4; ++j) {
        const int r = mb * 16 + ln / 4 + 8 * (j & 1), s = 8 * ks + ln % 4 + 4 * (j >> 1);
        x[j] = causal && s > r ? 0.f : round_tf32(src[r * ld + s]);
      }
      store4(dst + 4 * f, x);
    }
  };
  fragments(s_q, KP, K, ws.Qf + tile * C * K, false);
  // 4. Y = A Ē and U = A Z (Eq. 22) on tensor cores, 16 warps as 4 row blocks × 4 column quarters; a warp's depth ends
  //    with its diagonal block (A is 0 above it). Y rounded to TF32 (an mma operand only), U not (R's starting value).
  for (int which = 0; which < 2; ++which) {
    const int wm = warp % 4 * 16, n0 = warp / 4 * 32;
    const float* B = which ? s_g : s_e;
    float cf[4][4] = {};
#pragma unroll 4
    for (int k0 = 0; k0 < wm + 16; k0 += 8) {  // one A fragment for the warp's 4 column tiles
      const float* a = s_A + (wm + g) * AS + k0 + t;
      const uint32_t af[4] = {tf32(a[0]), tf32(a[8 * AS]), tf32(a[4]), tf32(a[8 * AS + 4])};
      for (int nt = 0; nt < 4; ++nt)
        mma_tf32(cf[nt], af, tf32(B[(k0 + t) * KP + n0 + nt * 8 + g]), tf32(B[(k0 + t + 4) * KP + n0 + nt * 8 + g]));
    }
    float* out = (which ? ws.U : ws.Y) + tile * C * K + (wm + g) * K + n0 + 2 * t;
    for (int i = 0; i < 8; ++i) {  // (nt, hh) = (i / 2, i % 2)
      float2 x = make_float2(cf[i / 2][i % 2 * 2], cf[i / 2][i % 2 * 2 + 1]);
      if (!which) x = make_float2(round_tf32(x.x), round_tf32(x.y));
      *reinterpret_cast<float2*>(out + 8 * (i % 2) * K + i / 2 * 8) = x;
    }
  }
  fragments(s_Aqk, C, C, ws.Af + tile * C * C, true);
}

// The pass: per (VS value columns, head, sequence) a walk over the chunks, the state slice S [K][VS] in float32 shared
// memory throughout; row strides Y ≡ 4 mod 32, K_tail, U (R) and S ≡ 8: every fragment read hits 32 banks.
template <int VS>  // one chunk's Y, K_tail, U, γ_C in the pass's shared memory
__host__ __device__ constexpr int pass_buffer_floats() { return C * (K + 4) + C * (K + 8) + C * (VS + 8) + K; }

template <int VS>
__global__ void __launch_bounds__(256, 1) chunk_pass(Problem p, Workspace ws) {
  constexpr int KPY = K + 4, KPK = K + 8, VSP = VS + 8, NTW = VS / 16, kBuf = pass_buffer_floats<VS>();
  extern __shared__ __align__(16) float smem[];
  float* s_S = smem + 2 * kBuf;  // [K][VSP]
  const int col0 = blockIdx.x * VS, h = blockIdx.y, bi = blockIdx.z, tid = threadIdx.x, warp = tid / 32;
  const int lane = tid % 32, g = lane / 4, t = lane % 4, NC = p.T / C;
  const int wm = warp % 4 * 16, wn = warp / 4 * (VS / 2), ws0 = warp % 4 * (K / 4);  // R, O rows; columns; S rows
  auto tile = [&](int c) { return (uint64_t(bi) * NC + c) * p.H + h; };
  for (int i = tid; i < K * VS; i += 256) s_S[i / VS * VSP + i % VS] = 0.f;  // h0 = 0
  auto issue = [&](int c) {  // chunk c's Y, K_tail, U slice, γ_C into buffer c % 2; chunk c + 1's Q_γ, A_qk to L2
    float *b_y = smem + (c & 1) * kBuf, *b_k = b_y + C * KPY, *b_u = b_k + C * KPK, *b_g = b_u + C * VSP;
    const float *Y = ws.Y + tile(c) * C * K, *Kt = ws.Kt + tile(c) * C * K, *U = ws.U + tile(c) * C * V + col0;
    for (int i = tid; i < C * K / 4; i += 256) {
      const int r = i / (K / 4), d = i % (K / 4) * 4;
      cp_async16(b_y + r * KPY + d, Y + r * K + d), cp_async16(b_k + r * KPK + d, Kt + r * K + d);
    }
    for (int i = tid; i < C * VS / 4; i += 256)
      cp_async16(b_u + i / (VS / 4) * VSP + i % (VS / 4) * 4, U + i / (VS / 4) * V + i % (VS / 4) * 4);
    if (tid < K / 4) cp_async16(b_g + 4 * tid, ws.gC + tile(c) * K + 4 * tid);
    if (tid == 0 && c + 1 < NC)
      prefetch_l2(ws.Qf + tile(c + 1) * C * K, C * K * 4), prefetch_l2(ws.Af + tile(c + 1) * C * C, C * C * 4);
  };
  // Registers: Q_γ's fragments of the warp's 16 rows, A_qk's left of its diagonal block (al) and in it (ad).
  float4 qf[K / 8], al[C / 8 - 2], ad[2];
  auto load_q = [&](int c) {
    const float4* at = reinterpret_cast<const float4*>(ws.Qf + tile(c) * C * K) + warp % 4 * (K / 8) * 32 + lane;
    for (int ks = 0; ks < K / 8; ++ks) qf[ks] = at[ks * 32];
  };
  auto load_a = [&](int c) {
    const float4* at = reinterpret_cast<const float4*>(ws.Af + tile(c) * C * C) + warp % 4 * (C / 8) * 32 + lane;
    for (int ks = 0; ks < C / 8 - 2; ++ks)
      if (8 * ks < wm) al[ks] = at[ks * 32];
    ad[0] = at[wm / 8 * 32], ad[1] = at[(wm / 8 + 1) * 32];
  };
  issue(0);
  cp_async_commit();
  load_q(0), load_a(0);
  for (int c = 0; c < NC; ++c) {
    if (c + 1 < NC) issue(c + 1);
    cp_async_commit();  // (an empty group at the end keeps the count uniform)
    cp_async_wait<1>();  // chunk c has landed
    __syncthreads();
    float *b_y = smem + (c & 1) * kBuf, *b_k = b_y + C * KPY, *b_u = b_k + C * KPK, *b_g = b_u + C * VSP;
    auto b_frag = [&](const float* B, int k0, int nt, bool rounded) {  // B fragment (rows k0 + t, + 4; column n)
      const float b0 = B[(k0 + t) * VSP + wn + nt * 8 + g], b1 = B[(k0 + t + 4) * VSP + wn + nt * 8 + g];
      return rounded ? make_uint2(bits(b0), bits(b1)) : make_uint2(tf32(b0), tf32(b1));
    };
    // R = U − Y S_n (Eq. 23) and O = Q_γ S_n (Eq. 24), one B fragment of S_n for both; R's accumulators start from U.
    float cf[NTW][4], of[NTW][4] = {};
    for (int nt = 0; nt < NTW; ++nt)
      for (int e = 0; e < 4; ++e) cf[nt][e] = b_u[(wm + g + 8 * (e / 2)) * VSP + wn + nt * 8 + 2 * t + e % 2];
    for (int ks = 0; ks < K / 8; ++ks) {
      const float* y = b_y + (wm + g) * KPY + 8 * ks + t;
      const uint32_t ay[4] = {bits(-y[0]), bits(-y[8 * KPY]), bits(-y[4]), bits(-y[8 * KPY + 4])};
      const uint32_t aq[4] = {bits(qf[ks].x), bits(qf[ks].y), bits(qf[ks].z), bits(qf[ks].w)};
      for (int nt = 0; nt < NTW; ++nt) {
        const uint2 b = b_frag(s_S, 8 * ks, nt, false);
        mma_tf32(cf[nt], ay, b.x, b.y), mma_tf32(of[nt], aq, b.x, b.y);
      }
    }
    if (c + 1 < NC) load_q(c + 1);
    // R over U, rounded to TF32 once (an mma operand only from here on); each warp writes only what it read.
    for (int nt = 0; nt < NTW; ++nt)
      for (int hh = 0; hh < 2; ++hh)
        *reinterpret_cast<float2*>(b_u + (wm + g + 8 * hh) * VSP + wn + nt * 8 + 2 * t) =
            make_float2(round_tf32(cf[nt][2 * hh]), round_tf32(cf[nt][2 * hh + 1]));
    __syncthreads();
    // S ← Diag(γ_C) S + K_tailᵀ R (Eq. 23): the warp's rows ws0 .. ws0 + 31 of S (A read down K_tail's columns); each
    // warp updates only its own part, every read of S having finished before the barrier.
    {
      float sf[2][NTW][4] = {};
#pragma unroll 2
      for (int k0 = 0; k0 < C; k0 += 8) {
        uint32_t af[2][4];
        for (int mt = 0; mt < 2; ++mt) {
          const float* a = b_k + (k0 + t) * KPK + ws0 + mt * 16 + g;
          af[mt][0] = bits(a[0]), af[mt][1] = bits(a[8]), af[mt][2] = bits(a[4 * KPK]);
          af[mt][3] = bits(a[4 * KPK + 8]);
        }
        for (int nt = 0; nt < NTW; ++nt) {
          const uint2 b = b_frag(b_u, k0, nt, true);
          mma_tf32(sf[0][nt], af[0], b.x, b.y), mma_tf32(sf[1][nt], af[1], b.x, b.y);
        }
      }
      for (int i = 0; i < 8 * NTW; ++i) {  // (mt, nt, e) = (i / 4NTW, i / 4 % NTW, i % 4)
        const int d = ws0 + i / (4 * NTW) * 16 + g + 8 * (i % 4 / 2);
        float& st = s_S[d * VSP + wn + i / 4 % NTW * 8 + 2 * t + i % 2];
        st = b_g[d] * st + sf[i / (4 * NTW)][i / 4 % NTW][i % 4];
      }
    }
    // O += A_qk R (Eq. 24): the blocks left of the warp's diagonal block, then the block itself (zeros above its
    // diagonal stored, so rows s > r of R add exact zeros).
    auto add_aqk_r = [&](float4 a, int k0) {
      const uint32_t af[4] = {bits(a.x), bits(a.y), bits(a.z), bits(a.w)};
      for (int nt = 0; nt < NTW; ++nt) {
        const uint2 b = b_frag(b_u, k0, nt, true);
        mma_tf32(of[nt], af, b.x, b.y);
      }
    };
    for (int ks = 0; ks < C / 8 - 2; ++ks)
      if (8 * ks < wm) add_aqk_r(al[ks], 8 * ks);
    add_aqk_r(ad[0], wm), add_aqk_r(ad[1], wm + 8);
    for (int nt = 0; nt < NTW; ++nt)
      for (int hh = 0; hh < 2; ++hh) {
        const uint64_t row = (uint64_t(bi) * p.T + c * C + wm + g + 8 * hh) * p.H + h;
        *reinterpret_cast<uint32_t*>(p.o + row * V + col0 + wn + nt * 8 + 2 * t) =
            bf16_bits(of[nt][2 * hh]) | uint32_t(bf16_bits(of[nt][2 * hh + 1])) << 16;
      }
    if (c + 1 < NC) load_a(c + 1);
    __syncthreads();  // buffer c % 2 is free for chunk c + 2
  }
  cp_async_wait<0>();
  for (int i = tid; i < K * VS; i += 256)
    p.ht[((uint64_t(bi) * p.H + h) * K + i / VS) * V + col0 + i % VS] = s_S[i / VS * VSP + i % VS];
}

void forward(const Problem& p) {
  static Workspace ws{};  // (allocated once per shape, kept between calls: timing the kernels, not cudaMalloc)
  static size_t tiles = 0;
  const size_t n = size_t(p.B) * p.H * (p.T / C);
  if (n != tiles) {
    if (tiles) CUDA_CHECK(cudaFree(ws.Y));
    CUDA_CHECK(cudaMalloc(&ws.Y, n * (3 * C * K + C * V + C * C + K) * sizeof(float)));
    ws.U = ws.Y + n * C * K, ws.Kt = ws.U + n * C * V, ws.Qf = ws.Kt + n * C * K, ws.Af = ws.Qf + n * C * K;
    ws.gC = ws.Af + n * C * C, tiles = n;
    CUDA_CHECK(cudaFuncSetAttribute(chunk_prepare, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(kPrepareFloats * sizeof(float))));
  }
  chunk_prepare<<<dim3(p.T / C, p.H, p.B), NT, kPrepareFloats * sizeof(float)>>>(p, ws);
  // Value columns per pass block: 64 while (V/64)·B·H blocks about fill the 132 SMs, else 32, and 16 when 32 would
  // leave SMs idle (B = 1, H = 16: 128 blocks of 16 columns instead of 64 of 32). The sums are the same.
  auto pass = [&](auto vs) {
    constexpr int VS = decltype(vs)::value;
    constexpr size_t bytes = (2 * pass_buffer_floats<VS>() + K * (VS + 8)) * sizeof(float);
    CUDA_CHECK(cudaFuncSetAttribute(chunk_pass<VS>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    chunk_pass<VS><<<dim3(V / VS, p.H, p.B), 256, bytes>>>(p, ws);
  };
  const int pairs = p.B * p.H;
  if ((V / 64) * pairs >= 120) pass(std::integral_constant<int, 64>{});
  else if ((V / 32) * pairs < 120) pass(std::integral_constant<int, 16>{});
  else pass(std::integral_constant<int, 32>{});
}

int main(int argc, char** argv) { return ladder_main("06_fused_output", argc, argv, forward); }
