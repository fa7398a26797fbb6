// gdn2::cuda recurrent_forward — the token recurrence (paper Eq. 8-9) with the state on chip; decoding is T = 1.
// Per token: S̄ = Diag(α_t) S (α_t = exp(g_t)), the reads r = S̄ᵀe and S̄ᵀq̃ in one pass over the state,
// o = S̄ᵀq̃ + (q̃·k)(z − r) (= S_tᵀ q̃), then the rank-one write S = S̄ + k (z − r)ᵀ.
// Launch: 128 threads per (slice of 32·CPL = 128, 64 or 32 value columns, value head, sequence): grid (V/(32·CPL),
// HV, N). On chip: the float32 state slice in registers for the whole sequence (lane l: CPL columns of K/4 rows),
// each element read and written once per call; q̃, k, e, α and the cross-warp sums in shared memory. 128-column slices
// (h0 and ht 16-byte aligned) move a lane's 4 columns of a row by one 16-byte access.
// H100, bf16, decode B = 256, H = 16, K = V = 128: 0.190 ms, 2.87 TB/s (gdn2-cuda-bench --decode).
#include "common.cuh"

namespace gdn2::cuda::detail {

namespace {

template <int K, int CPL, typename T>
__global__ void __launch_bounds__(128) recurrent_forward_kernel(T* o, float* ht, const T* q, const T* k, const T* v,
                                                            const float* g, const T* b, const T* w, const float* h0,
                                                            const int64_t* cu_seqlens, int64_t T_len, int H, int HV,
                                                            int HG, int V, float scale) {
  constexpr int WARPS = 4, ROWS = K / WARPS, VS = 32 * CPL;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int col0 = blockIdx.x * VS + lane * CPL;  // first value column of this lane
  const int hv = blockIdx.y, n = blockIdx.z, h = hv / (HV / H), hg = gate_head(HG, HV, hv, h);
  const Span span = sequence_span(cu_seqlens, n, T_len);
  __shared__ float s_q[K], s_k[K], s_e[K], s_alpha[K];
  __shared__ float s_red[2][WARPS][VS];
  __shared__ float s_qk;

  float S[ROWS][CPL];
  const int64_t at = ((int64_t(n) * HV + hv) * K + warp * ROWS) * V + col0;  // this lane's first state element
#pragma unroll
  for (int i = 0; i < ROWS; ++i) {  // CPL = 4: a row's 4 columns by one 16-byte access (h0 16-byte aligned)
    const float* row = h0 ? h0 + at + int64_t(i) * V : nullptr;
    if constexpr (CPL == 4) {
      const float4 x = row ? *reinterpret_cast<const float4*>(row) : make_float4(0.f, 0.f, 0.f, 0.f);
      S[i][0] = x.x, S[i][1] = x.y, S[i][2] = x.z, S[i][3] = x.w;
    } else
      for (int c = 0; c < CPL; ++c) S[i][c] = row ? row[c] : 0.f;
  }

  for (int64_t t = 0; t < span.length; ++t) {
    const int64_t row = span.row0 + t;
    const int64_t key = (row * H + h) * K, val = (row * HV + hv) * V, gate = (row * HG + hg) * K;
    for (int d = threadIdx.x; d < K; d += blockDim.x) {
      const float kd = to_float(k[key + d]);
      s_q[d] = scale * to_float(q[key + d]);
      s_k[d] = kd;
      s_e[d] = to_float(b[gate + d]) * kd;  // e_t = b_t ⊙ k_t (Eq. 8)
      s_alpha[d] = expf(g[gate + d]);       // α_t = exp(g_t), exactly 0 for g = −inf
    }
    __syncthreads();
    if (warp == 0) {
      float qk = 0;
      for (int d = lane; d < K; d += 32) qk += s_q[d] * s_k[d];
      for (int off = 16; off; off /= 2) qk += __shfl_xor_sync(0xffffffffu, qk, off);
      if (lane == 0) s_qk = qk;
    }
    float r_part[CPL] = {}, o_part[CPL] = {};
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
      const int d = warp * ROWS + i;
#pragma unroll
      for (int c = 0; c < CPL; ++c) {
        S[i][c] *= s_alpha[d];          // S̄_t = Diag(α_t) S_{t−1}
        r_part[c] += s_e[d] * S[i][c];  // r_t = S̄_tᵀ e_t
        o_part[c] += s_q[d] * S[i][c];  // S̄_tᵀ q̃_t
      }
    }
#pragma unroll
    for (int c = 0; c < CPL; ++c) s_red[0][warp][lane * CPL + c] = r_part[c], s_red[1][warp][lane * CPL + c] = o_part[c];
    __syncthreads();
    float u[CPL];
#pragma unroll
    for (int c = 0; c < CPL; ++c) {
      float r = 0, os = 0;
#pragma unroll
      for (int j = 0; j < WARPS; ++j) r += s_red[0][j][lane * CPL + c], os += s_red[1][j][lane * CPL + c];
      const float z = to_float(w[val + col0 + c]) * to_float(v[val + col0 + c]);  // z_t = w_t ⊙ v_t
      u[c] = z - r;
      if (warp == 0) o[val + col0 + c] = from_float<T>(os + s_qk * u[c]);     // o_t = S_tᵀ q̃_t
    }
#pragma unroll
    for (int i = 0; i < ROWS; ++i)
#pragma unroll
      for (int c = 0; c < CPL; ++c) S[i][c] += s_k[warp * ROWS + i] * u[c];  // S_t = S̄_t + k_t (z_t − r_t)ᵀ
    __syncthreads();  // s_q, s_k, s_red are rewritten by the next token
  }
  if (ht)
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
      float* row = ht + at + int64_t(i) * V;
      if constexpr (CPL == 4) *reinterpret_cast<float4*>(row) = make_float4(S[i][0], S[i][1], S[i][2], S[i][3]);
      else
        for (int c = 0; c < CPL; ++c) row[c] = S[i][c];
    }
}

template <int K, int CPL, typename T>
void launch_recurrent(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                         const void* w, const float* h0, const int64_t* cu, const Problem& p, cudaStream_t stream) {
  const dim3 grid(unsigned(p.V / (32 * CPL)), unsigned(p.HV), unsigned(p.N));
  recurrent_forward_kernel<K, CPL, T><<<grid, 128, 0, stream>>>(
      static_cast<T*>(o), ht, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), g,
      static_cast<const T*>(b), static_cast<const T*>(w), h0, cu, p.T, int(p.H), int(p.HV), int(gate_heads(p)),
      int(p.V), default_scale(p));
  GDN2_CUDA_CHECK_LAUNCH();
}

template <int K, typename T>
void dispatch_recurrent_cpl(void* o, float* ht, const void* q, const void* k, const void* v, const float* g,
                            const void* b, const void* w, const float* h0, const int64_t* cu, const Problem& p,
                            cudaStream_t s) {
  // Wider slices stream the state with 16-byte accesses (where h0 and ht are 16-byte aligned); narrower ones give small
  // batches more blocks.
  if (p.V % 128 == 0 && (p.V / 128) * p.HV * p.N >= 132 && aligned16(h0, ht))
    return launch_recurrent<K, 4, T>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
  if (p.V % 64 == 0 && (p.V / 64) * p.HV * p.N >= 132) return launch_recurrent<K, 2, T>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
  return launch_recurrent<K, 1, T>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
}

}  // namespace

void recurrent_forward_run(void* o, float* ht, const void* q, const void* k, const void* v, const float* g,
                                const void* b, const void* w, const float* h0, const int64_t* cu, const Problem& p,
                                cudaStream_t s) {
  dispatch_k_and_dtype(p, [&](auto K, auto T) {
    dispatch_recurrent_cpl<decltype(K)::value, decltype(T)>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
  });
}

}  // namespace gdn2::cuda::detail
