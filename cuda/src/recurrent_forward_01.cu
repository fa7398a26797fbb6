// gdn2::cuda recurrent_forward, versions 01-02 — the token recurrence (paper Eq. 9) with the state on chip.
//
// Idea: one block per (sequence, value head, 32·CPL value columns); the fp32 state slice lives in registers for the
// whole sequence (lane l owns CPL columns of K/4 rows, warp w owns rows [w·K/4, (w+1)·K/4)), so each state element is
// read once and written once per call. Per token: decay and the two reads r = S̄ᵀe and S̄ᵀq̃ in one pass,
// o = S̄ᵀq̃ + (q̃·k)(z − r) (= S_tᵀ q̃ without a second pass), then the rank-one write k (z − r)ᵀ.
// For decoding (T = 1) this streams the state at memory bandwidth.
// Run: build/cuda/gdn2-cuda-bench --decode. Measured: see docs/cuda.md.
//
// Version 02 (kVec; 128-column slices, h0 and ht 16-byte aligned): the state slice read and written by one 16-byte
// access per row and lane instead of CPL 4-byte accesses a lane — a warp's 4-byte store covered 512 bytes with gaps,
// so every 32-byte sector was written in four partial pieces, and each row took four load and four store
// instructions. The same values in the same registers: the same bits. Predicted decode B = 256 0.193 -> 0.186-0.190
// ms; measured 0.1924/0.1925 -> 0.1901/0.1899 ms (bf16; f32 0.1973 -> 0.1933), B = 16 0.0209 -> 0.0179 ms, B = 64
// 0.0577 -> 0.0540 ms (01 in the same run). With streaming cache hints (ld/st.global.cs) it was slower at B = 256
// (0.1955 ms), so there are none. GDN2_RECURRENT_VERSION=1 runs version 01.
#include <cstdlib>

#include "common.cuh"

namespace gdn2::cuda::detail {

template <int K, int CPL, typename T, bool kVec = false>
__global__ void __launch_bounds__(128) recurrent_forward_01(T* o, float* ht, const T* q, const T* k, const T* v,
                                                            const float* g, const T* b, const T* w, const float* h0,
                                                            const int64_t* cu_seqlens, int64_t T_len, int H, int HV,
                                                            int V, float scale) {
  constexpr int WARPS = 4, ROWS = K / WARPS, VS = 32 * CPL;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int col0 = blockIdx.x * VS + lane * CPL;  // first value column of this lane
  const int hv = blockIdx.y, n = blockIdx.z, h = hv / (HV / H);
  const Span span = sequence_span(cu_seqlens, n, T_len);
  __shared__ float s_q[K], s_k[K], s_e[K], s_alpha[K];
  __shared__ float s_red[2][WARPS][VS];
  __shared__ float s_qk;

  float S[ROWS][CPL];
  const int64_t state = ((int64_t(n) * HV + hv) * K) * V;
  static_assert(!kVec || CPL == 4, "one float4 per row and lane");
  if constexpr (kVec) {
#pragma unroll
    for (int i = 0; i < ROWS; ++i) {
      const float4 x = h0 ? *reinterpret_cast<const float4*>(h0 + state + int64_t(warp * ROWS + i) * V + col0)
                          : make_float4(0.f, 0.f, 0.f, 0.f);
      S[i][0] = x.x, S[i][1] = x.y, S[i][2] = x.z, S[i][3] = x.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < ROWS; ++i)
#pragma unroll
      for (int c = 0; c < CPL; ++c) S[i][c] = h0 ? h0[state + int64_t(warp * ROWS + i) * V + col0 + c] : 0.f;
  }

  for (int64_t t = 0; t < span.length; ++t) {
    const int64_t row = span.row0 + t;
    const int64_t key = (row * H + h) * K, val = (row * HV + hv) * V;
    for (int d = threadIdx.x; d < K; d += blockDim.x) {
      const float kd = to_float(k[key + d]);
      s_q[d] = scale * to_float(q[key + d]);
      s_k[d] = kd;
      s_e[d] = to_float(b[key + d]) * kd;  // e_t = b_t ⊙ k_t (Eq. 8)
      s_alpha[d] = expf(g[key + d]);       // α_t = exp(g_t), exactly 0 for g = −inf
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
  if (ht) {
    if constexpr (kVec) {
#pragma unroll
      for (int i = 0; i < ROWS; ++i)
        *reinterpret_cast<float4*>(ht + state + int64_t(warp * ROWS + i) * V + col0) =
            make_float4(S[i][0], S[i][1], S[i][2], S[i][3]);
    } else {
#pragma unroll
      for (int i = 0; i < ROWS; ++i)
#pragma unroll
        for (int c = 0; c < CPL; ++c) ht[state + int64_t(warp * ROWS + i) * V + col0 + c] = S[i][c];
    }
  }
}

template <int K, int CPL, typename T, bool kVec = false>
void launch_recurrent_01(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                         const void* w, const float* h0, const int64_t* cu, const Problem& p, cudaStream_t stream) {
  const dim3 grid(unsigned(p.V / (32 * CPL)), unsigned(p.HV), unsigned(p.N));
  recurrent_forward_01<K, CPL, T, kVec><<<grid, 128, 0, stream>>>(
      static_cast<T*>(o), ht, static_cast<const T*>(q), static_cast<const T*>(k), static_cast<const T*>(v), g,
      static_cast<const T*>(b), static_cast<const T*>(w), h0, cu, p.T, int(p.H), int(p.HV), int(p.V), default_scale(p));
  GDN2_CUDA_CHECK_LAUNCH();
}

template <int K, typename T>
void dispatch_recurrent_cpl(void* o, float* ht, const void* q, const void* k, const void* v, const float* g,
                            const void* b, const void* w, const float* h0, const int64_t* cu, const Problem& p,
                            cudaStream_t s) {
  // Wider slices stream the state with 16-byte accesses; narrower ones give small batches more blocks.
  const int64_t blocks128 = (p.V / 128) * p.HV * p.N;
  if (p.V % 128 == 0 && blocks128 >= 132) {
    // Version 02: 16-byte state accesses where h0 and ht allow them (GDN2_RECURRENT_VERSION=1: version 01).
    const char* env = std::getenv("GDN2_RECURRENT_VERSION");
    if ((!env || std::atoi(env) >= 2) && aligned16(h0, ht))
      return launch_recurrent_01<K, 4, T, true>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
    return launch_recurrent_01<K, 4, T>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
  }
  if (p.V % 64 == 0 && (p.V / 64) * p.HV * p.N >= 132) return launch_recurrent_01<K, 2, T>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
  return launch_recurrent_01<K, 1, T>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
}

void recurrent_forward_dispatch(void* o, float* ht, const void* q, const void* k, const void* v, const float* g,
                                const void* b, const void* w, const float* h0, const int64_t* cu, const Problem& p,
                                cudaStream_t s) {
  dispatch_k_and_dtype(p, [&](auto K, auto T) {
    dispatch_recurrent_cpl<decltype(K)::value, decltype(T)>(o, ht, q, k, v, g, b, w, h0, cu, p, s);
  });
}

}  // namespace gdn2::cuda::detail
