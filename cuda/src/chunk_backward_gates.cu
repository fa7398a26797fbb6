// gdn2::cuda chunk_backward stages 1, 5, 6 — 1. dO in fp32 and Z = W ⊙ V (Eq. 20); 5. per (sub-chunk, channel) the tail
// keys, gates and dg's reverse cumulative sum (Eq. 71-76, 80-82), dv = dZ ⊙ w, dw = dZ ⊙ v (Eq. 73); 6. the sums over
// each key head's value heads, in a fixed order, of what stage 5 does not write itself (dq, dk when HV > H; dg, db when
// the gates are per key head). Decays by the sub-chunk factorisation; dg's two scans (Eq. 71-72, 82) in two levels:
// sub-chunk totals, then each task's rows.
// Launch (stage 5): 4·K threads, one per (sub-chunk, channel), per (chunk, value head, sequence): grid (⌈T/64⌉, HV, N).
// On chip: the sub-chunk sums and totals in shared memory (Eq. 60's row sums of dS_C ⊙ S_n come from stage 3); a task's
// 16 rows in registers, each group of four rows' loads issued before its stores. Stages 1, 6: grid-stride loops.
#include "backward.cuh"

namespace gdn2::cuda::detail {

namespace {

constexpr int C = kChunk;

template <typename T>
__global__ void backward_convert_kernel(BackwardWorkspace bw, const T* __restrict__ do_, const T* __restrict__ v,
                                        const T* __restrict__ w, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    bw.dO[i] = do_ ? to_float(do_[i]) : 0.f;  // do_ == nullptr: dL/do = 0
    bw.Z[i] = to_float(w[i]) * to_float(v[i]);
  }
}

// Stage 5 for one chunk. vec8: dv, dw 8 elements per 16-byte access (every pointer 16-byte aligned; else one by one).
template <int K, typename T, int NT = kNumSub * K>
__global__ void __launch_bounds__(NT, 1) chunk_backward_gates_kernel(T* dv, T* dw, Workspace ws, BackwardWorkspace bw,
                                                                 const T* __restrict__ k, const float* __restrict__ g,
                                                                 const T* __restrict__ b, const T* __restrict__ v,
                                                                 const T* __restrict__ w, const int64_t* cu_seqlens,
                                                                 int64_t T_len, int H, int HV, int HG, int V,
                                                                 HeadOutputs outputs, bool vec8) {
  constexpr int S = kSub;
  __shared__ float s_bs[kNumSub][K];                 // sub-chunk sums of g
  __shared__ float s_tot_gc[kNumSub][K], s_tot_tt[kNumSub][K];  // sub-chunk totals of dG_r and of the tail terms
  const int tid = threadIdx.x, hv = blockIdx.y, n = blockIdx.z, h = hv / (HV / H), hg = gate_head(HG, HV, hv, h);
  const Span span = sequence_span(cu_seqlens, n, T_len);
  const int64_t c = blockIdx.x, c0 = c * C;
  if (c0 >= span.length) return;
  const int L = int(span.length - c0 < C ? span.length - c0 : C);
  const int64_t row0 = span.row0 + c0, slot = chunk_slot(span.row0, n, c);
  auto in = [&](int r, int d) { return ((row0 + r) * H + h) * K + d; };     // q, k, dq, dk
  auto gin = [&](int r, int d) { return ((row0 + r) * HG + hg) * K + d; };  // g, b, dg, db
  auto at = [&](int r, int d) { return ((row0 + r) * HV + hv) * K + d; };
  // Sub-chunk sums of g.
  for (int task = tid; task < kNumSub * K; task += NT) {
    const int M = task / K, d = task % K;
    float run = 0;
#pragma unroll
    for (int r = M * S; r < (M + 1) * S; ++r) run += r < L ? g[gin(r, d)] : 0.f;
    s_bs[M][d] = run;
  }
  __syncthreads();
  // Per (sub-chunk, channel): γ_r, the tail decay, the elementwise gates (Eq. 73-76, 80-81), dG_r and the tail term.
  static_assert(NT == kNumSub * K, "one (sub-chunk, channel) task per thread");
  float gc_keep[S], tt_keep[S];
  {
    const int M = tid / K, d = tid % K, o = M * S;
    float before = 0, after = 0, total = 0;
#pragma unroll
    for (int J = 0; J < kNumSub; ++J) {
      if (J < M) before += s_bs[J][d];
      if (J > M) after += s_bs[J][d];
      total += s_bs[J][d];
    }
    const float pre = expf(before), suf = expf(after);
    float gs[S];
#pragma unroll
    for (int r = 0; r < S; ++r) gs[r] = o + r < L ? g[gin(o + r, d)] : 0.f;
    float a[S];  // exp(Σ_{i>r, i in M} g_i)
    {
      float run = 0;
#pragma unroll
      for (int r = S - 1; r >= 0; --r) {
        a[r] = expf(run);
        run += gs[r];
      }
    }
    // Rows in groups of four, a group's loads issued before any of its stores (which may alias them for the compiler).
    constexpr int G4 = 4;
    float run = 0, tot_gc = 0, tot_tt = 0;
#pragma unroll
    for (int r0 = 0; r0 < S; r0 += G4) {
      float dkt[G4], dqg[G4], debar[G4], de0[G4], ebar[G4], qg[G4], kt[G4], kv[G4], bv[G4], dq0[G4], dk0[G4];
#pragma unroll
      for (int u = 0; u < G4; ++u) {
        const int row = o + r0 + u;
        const bool live = row < L;
        const int64_t x = at(live ? row : 0, d), y = in(live ? row : 0, d), yg = gin(live ? row : 0, d);
        dkt[u] = live ? bw.dKtail[x] : 0.f, dqg[u] = live ? bw.dQg[x] : 0.f, debar[u] = live ? bw.dEbar[x] : 0.f;
        de0[u] = live ? bw.dE[x] : 0.f, ebar[u] = live ? ws.Ebar[x] : 0.f, qg[u] = live ? ws.Qg[x] : 0.f;
        kt[u] = live ? ws.Kt[x] : 0.f;
        kv[u] = live ? to_float(k[y]) : 0.f, bv[u] = live ? to_float(b[yg]) : 0.f;
        dq0[u] = live ? bw.dQ[x] : 0.f, dk0[u] = live ? bw.dK[x] : 0.f;
      }
#pragma unroll
      for (int u = 0; u < G4; ++u) {
        const int r = r0 + u, row = o + r;
        run += gs[r];
        float gc = 0, tt = 0;
        if (row < L) {
          const int64_t x = at(row, d);
          const float gamma = pre * expf(run), tail = suf * a[r];
          const float de = de0[u] + debar[u] * gamma;                          // Eq. 74-75 via E = B ⊙ K
          const float dq = dq0[u] + dqg[u] * gamma;                            // Eq. 80
          const float dk = dk0[u] + de * bv[u] + dkt[u] * tail;                // Eq. 75, 72
          if (outputs.dq) {  // one value head per key head: these are the gradients (no sum in stage 6)
            static_cast<T*>(outputs.dq)[in(row, d)] = from_float<T>(outputs.scale * dq);
            static_cast<T*>(outputs.dk)[in(row, d)] = from_float<T>(dk);
          } else bw.dQ[x] = dq, bw.dK[x] = dk;
          if (outputs.db) static_cast<T*>(outputs.db)[gin(row, d)] = from_float<T>(de * kv[u]);  // Eq. 74
          else bw.dE[x] = de * kv[u];                                                          // db, Eq. 74
          gc = debar[u] * ebar[u] + dqg[u] * qg[u];                            // dG_r, Eq. 76, 81 (· γ)
          if (row == L - 1) gc += bw.rowsum[(slot * HV + hv) * K + d] * expf(total);  // Eq. 60 (γ_L)
          tt = dkt[u] * kt[u];                                                 // Eq. 71
        }
        gc_keep[r] = gc, tt_keep[r] = tt;
        tot_gc += gc, tot_tt += tt;
      }
    }
    s_tot_gc[M][d] = tot_gc, s_tot_tt[M][d] = tot_tt;
  }
  __syncthreads();
  // dg_i += Σ_{r<i} tail term_r + Σ_{r≥i} dG_r, from the other sub-chunks' totals and this task's rows.
  {
    const int M = tid / K, d = tid % K, o = M * S;
    float prefix = 0, suffix = 0;
#pragma unroll
    for (int J = 0; J < kNumSub; ++J) {
      if (J < M) prefix += s_tot_tt[J][d];
      if (J > M) suffix += s_tot_gc[J][d];
    }
    float add[S], dg0[S];
#pragma unroll
    for (int r = 0; r < S; ++r) dg0[r] = o + r < L ? bw.dG[at(o + r, d)] : 0.f;  // all loaded before the first store
#pragma unroll
    for (int r = S - 1; r >= 0; --r) {
      suffix += gc_keep[r];
      add[r] = suffix;
    }
#pragma unroll
    for (int r = 0; r < S; ++r) {
      if (o + r < L) {
        const float dg = dg0[r] + add[r] + prefix;
        if (outputs.dg) outputs.dg[gin(o + r, d)] = dg;
        else bw.dG[at(o + r, d)] = dg;
      }
      prefix += tt_keep[r];
    }
  }
  // Eq. 73: dw = dZ ⊙ v, dv = dZ ⊙ w.
  if (vec8) {  // 8 elements per access; a row's V elements start 16-byte aligned (V % 8 == 0)
    constexpr int kGroups = 2;  // groups of 8 loaded before any is stored
    const int n8 = L * V / 8;
    for (int i0 = tid; i0 < n8; i0 += kGroups * NT) {
      float dz[kGroups][8], vv[kGroups][8], ww[kGroups][8];
#pragma unroll
      for (int u = 0; u < kGroups; ++u) {
        const int i = (i0 + u * NT) * 8;
        if (i0 + u * NT < n8) {
          const int64_t o = ((row0 + i / V) * HV + hv) * V + i % V;
          load8(dz[u], bw.dZ + o), load8(vv[u], v + o), load8(ww[u], w + o);
        }
      }
#pragma unroll
      for (int u = 0; u < kGroups; ++u) {
        const int i = (i0 + u * NT) * 8;
        if (i0 + u * NT < n8) {
          const int64_t o = ((row0 + i / V) * HV + hv) * V + i % V;
          float x[8], y[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) x[j] = dz[u][j] * vv[u][j], y[j] = dz[u][j] * ww[u][j];
          store8(dw + o, x), store8(dv + o, y);
        }
      }
    }
  } else
    for (int i = tid; i < L * V; i += NT) {
      const int64_t o = ((row0 + i / V) * HV + hv) * V + i % V;
      const float dz = bw.dZ[o];
      dw[o] = from_float<T>(dz * to_float(v[o]));
      dv[o] = from_float<T>(dz * to_float(w[o]));
    }
}

template <int K, typename T>
__global__ void backward_reduce_heads_kernel(T* dq, T* dk, float* dg, T* db, BackwardWorkspace bw, int64_t rows, int H,
                                      int HV, float scale) {
  const int group = HV / H;
  const int64_t n = rows * H * K;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / (H * K);
    const int h = int(i / K % H), d = int(i % K);
    float sq = 0, sk = 0, sg = 0, sb = 0;
    for (int hv = h * group; hv < (h + 1) * group; ++hv) {
      const int64_t o = (row * HV + hv) * K + d;
      sq += bw.dQ[o], sk += bw.dK[o];
      if (dg) sg += bw.dG[o], sb += bw.dE[o];  // (dg, db per key head)
    }
    dq[i] = from_float<T>(scale * sq);  // q̃ = scale · q
    dk[i] = from_float<T>(sk);
    if (dg) dg[i] = sg, db[i] = from_float<T>(sb);
  }
}

}  // namespace

void backward_convert(const BackwardWorkspace& bw, const void* do_, const void* v, const void* w, int64_t rows,
                      const Problem& p, cudaStream_t stream) {
  const int64_t n = rows * p.HV * p.V;
  const unsigned blocks = unsigned(std::min<int64_t>((n + 255) / 256, 65535));
  dispatch_k_and_dtype(p, [&](auto, auto T_) {
    using T = decltype(T_);
    backward_convert_kernel<T><<<blocks, 256, 0, stream>>>(bw, static_cast<const T*>(do_), static_cast<const T*>(v),
                                                           static_cast<const T*>(w), n);
    GDN2_CUDA_CHECK_LAUNCH();
  });
}

void chunk_backward_gates(void* dv, void* dw, const Workspace& ws, const BackwardWorkspace& bw, const void* k,
                          const float* g, const void* b, const void* v, const void* w, const int64_t* cu,
                          const Problem& p, const HeadOutputs& outputs, cudaStream_t stream) {
  const unsigned max_chunks = unsigned((p.T + kChunk - 1) / kChunk);
  const bool vec8 = p.V % 8 == 0 && aligned16(dv, dw, v, w, bw.dZ);
  dispatch_k_and_dtype(p, [&](auto K_, auto T_) {
    constexpr int K = decltype(K_)::value;
    using T = decltype(T_);
    chunk_backward_gates_kernel<K, T><<<dim3(max_chunks, unsigned(p.HV), unsigned(p.N)), kNumSub * K, 0, stream>>>(
        static_cast<T*>(dv), static_cast<T*>(dw), ws, bw, static_cast<const T*>(k), g, static_cast<const T*>(b),
        static_cast<const T*>(v), static_cast<const T*>(w), cu, p.T, int(p.H), int(p.HV), int(gate_heads(p)),
        int(p.V), outputs, vec8);
    GDN2_CUDA_CHECK_LAUNCH();
  });
}

void backward_reduce_heads(void* dq, void* dk, float* dg, void* db, const BackwardWorkspace& bw, int64_t rows,
                           const Problem& p, cudaStream_t stream) {
  const int64_t n = rows * p.H * p.K;
  const unsigned blocks = unsigned(std::min<int64_t>((n + 255) / 256, 65535));
  const float scale = default_scale(p);
  dispatch_k_and_dtype(p, [&](auto K_, auto T_) {
    constexpr int K = decltype(K_)::value;
    using T = decltype(T_);
    backward_reduce_heads_kernel<K, T><<<blocks, 256, 0, stream>>>(static_cast<T*>(dq), static_cast<T*>(dk), dg,
                                                                   static_cast<T*>(db), bw, rows, int(p.H), int(p.HV),
                                                                   scale);
    GDN2_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace gdn2::cuda::detail
