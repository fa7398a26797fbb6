// gdn2::cuda chunk_backward stage 3 — the products of every chunk in parallel, all of a chunk's in one block, each
// input read once and the products that feed other products kept on chip (paper Appendix B.1-B.2, Eq. 53, 55, 58,
// 62, 64-66), in the reference's order:
//   over the value axis:  dA_qk = tril(dO Rᵀ);  dQ_γ = dO S_nᵀ;  dY = −dR S_nᵀ;  dK_tail = R dS_Cᵀ;  dA = dR Zᵀ;
//                         dZ = Aᵀ dR (per slice of values);
//   then on chip:         dA += dY Ēᵀ;  dĒ = Aᵀ dY;  dT = −stril(Aᵀ (dA Aᵀ));
// and, S_n and dS_C being on chip, Eq. 60's row sums Σ_j (dS_C ⊙ S_n)_dj for the gates stage.
// dY, dA and dA Aᵀ never reach global memory. Per chunk-head (K = V = 128) the block reads 304 KB (dO, R, dR, Z, Ē,
// A, S_n, dS_C) and writes 160 KB (dA_qk, dQ_γ, dK_tail, dZ, dĒ, dT).
// Launch: 512 threads per (chunk, value head, sequence), one block per SM. The value axis streams through shared
// memory in slices of 32 columns, two slices in flight (cp.async); the sums over it stay in registers: 16 warps as
// 4 row blocks × 4 column quarters, each warp 16 rows of every product (TF32 mma fragments for bf16 storage, each
// operand rounded to TF32 once in shared memory; the same fragment layout on fp32 CUDA cores for float32 storage,
// whose 1e-5 budget TF32 does not fit).
#include "backward.cuh"

namespace gdn2::cuda::detail {

namespace {

constexpr int C = kChunk, kProductThreads = 512, VS = 32;  // VS: the value columns of one slice
constexpr int VP = VS + 4, CP = C + 4;                     // row strides (floats): ≡ 4 mod 32, 16-byte aligned rows

// A shared tile as a matrix: Rows: element (i, j) = p[i·LD + j]; Cols: element (i, j) = p[j·LD + i] (the transpose).
template <int LD> struct Rows { const float* p; };
template <int LD> struct Cols { const float* p; };

// One depth step of a 16 × 8 tile, c += A B, for A rows m0.. and B columns n0.. (g = lane / 4, t = lane % 4; c as
// mma_tf32's: c[0], c[1] at row g, columns 2t, 2t + 1; c[2], c[3] at row g + 8). kMma: a TF32 mma over depth 8, its
// operands rounded to TF32 once when they reach shared memory (a conversion is two instructions per fragment element).
// Otherwise fp32 FMAs over depth 4 into the same layout, the lane loading the rows and columns its outputs need.
template <bool kMma>
struct Step;
template <>
struct Step<true> {  // the operands in shared memory are already rounded to TF32 (round_in_place): their bits
  static constexpr int depth = 8;
  struct A { uint32_t x[4]; };
  struct B { uint32_t x[2]; };
  static __device__ __forceinline__ uint32_t u(float x) { return __float_as_uint(x); }
  template <int LD>
  static __device__ __forceinline__ A a(Rows<LD> m, int m0, int k0, int g, int t) {
    const float* p = m.p + (m0 + g) * LD + k0 + t;
    return {{u(p[0]), u(p[8 * LD]), u(p[4]), u(p[8 * LD + 4])}};
  }
  template <int LD>
  static __device__ __forceinline__ A a(Cols<LD> m, int m0, int k0, int g, int t) {
    const float* p = m.p + (k0 + t) * LD + m0 + g;
    return {{u(p[0]), u(p[8]), u(p[4 * LD]), u(p[4 * LD + 8])}};
  }
  template <int LD>
  static __device__ __forceinline__ B b(Rows<LD> m, int k0, int n0, int g, int t) {
    const float* p = m.p + (k0 + t) * LD + n0 + g;
    return {{u(p[0]), u(p[4 * LD])}};
  }
  template <int LD>
  static __device__ __forceinline__ B b(Cols<LD> m, int k0, int n0, int g, int t) {
    const float* p = m.p + (n0 + g) * LD + k0 + t;
    return {{u(p[0]), u(p[4])}};
  }
  static __device__ __forceinline__ void mul(float (&c)[4], const A& a, const B& b) { mma_tf32(c, a.x, b.x[0], b.x[1]); }
};
template <>
struct Step<false> {
  static constexpr int depth = 4;
  struct A { float x[2][4]; };  // rows g, g + 8; depth k0 .. k0 + 3
  struct B { float x[4][2]; };  // depth k0 .. k0 + 3; columns 2t, 2t + 1
  template <int LD>
  static __device__ __forceinline__ A a(Rows<LD> m, int m0, int k0, int g, int) {
    A f;
    load_run<4>(f.x[0], m.p + (m0 + g) * LD + k0), load_run<4>(f.x[1], m.p + (m0 + g + 8) * LD + k0);
    return f;
  }
  template <int LD>
  static __device__ __forceinline__ A a(Cols<LD> m, int m0, int k0, int g, int) {
    A f;
#pragma unroll
    for (int j = 0; j < 4; ++j) f.x[0][j] = m.p[(k0 + j) * LD + m0 + g], f.x[1][j] = m.p[(k0 + j) * LD + m0 + g + 8];
    return f;
  }
  template <int LD>
  static __device__ __forceinline__ B b(Rows<LD> m, int k0, int n0, int, int t) {
    B f;
#pragma unroll
    for (int j = 0; j < 4; ++j) load_run<2>(f.x[j], m.p + (k0 + j) * LD + n0 + 2 * t);
    return f;
  }
  template <int LD>
  static __device__ __forceinline__ B b(Cols<LD> m, int k0, int n0, int, int t) {
    float col[2][4];
    load_run<4>(col[0], m.p + (n0 + 2 * t) * LD + k0), load_run<4>(col[1], m.p + (n0 + 2 * t + 1) * LD + k0);
    B f;
#pragma unroll
    for (int j = 0; j < 4; ++j) f.x[j][0] = col[0][j], f.x[j][1] = col[1][j];
    return f;
  }
  static __device__ __forceinline__ void mul(float (&c)[4], const A& a, const B& b) {
#pragma unroll
    for (int j = 0; j < 4; ++j)
      c[0] += a.x[0][j] * b.x[j][0], c[1] += a.x[0][j] * b.x[j][1], c[2] += a.x[1][j] * b.x[j][0],
          c[3] += a.x[1][j] * b.x[j][1];
  }
};

// c[nt] += A B for NT tiles of 8 columns from n0 (step 8 apart), rows m0 .. m0 + 15, depth 0 .. depth − 1.
template <bool kMma, int NT, class MA, class MB>
__device__ __forceinline__ void warp_product(float (&c)[NT][4], MA a, MB b, int m0, int n0, int depth) {
  using S = Step<kMma>;
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll 2
  for (int k0 = 0; k0 < depth; k0 += S::depth) {
    const typename S::A fa = S::a(a, m0, k0, g, t);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) S::mul(c[nt], fa, S::b(b, k0, n0 + nt * 8, g, t));
  }
}

enum Mask { kNone, kLower, kStrictlyLower };

// A warp's tiles (rows m0 + g, + 8; columns n0 + nt·8 + 2t, + 1) times alpha to out + r·rs + col for rows r < L,
// entries outside the mask as 0. kRound: rounded to TF32 (a shared tile that feeds tensor-core products).
template <bool kRound = false, int NT>
__device__ __forceinline__ void store_tiles(const float (&c)[NT][4], float* out, int64_t rs, int m0, int n0, int L,
                                            float alpha = 1.f, Mask mask = kNone) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = m0 + g + 8 * h, col = n0 + nt * 8 + 2 * t;
      if (r >= L) continue;
      float2 v = make_float2(alpha * c[nt][2 * h], alpha * c[nt][2 * h + 1]);
      if constexpr (kRound) v = make_float2(round_tf32(v.x), round_tf32(v.y));
      if (mask != kNone) {
        const int last = mask == kLower ? r : r - 1;  // the last column kept
        v.x = col <= last ? v.x : 0.f, v.y = col + 1 <= last ? v.y : 0.f;
      }
      *reinterpret_cast<float2*>(out + r * rs + col) = v;
    }
}

// Shared memory, in floats: A [C][CP], then two slice buffers, each dO, R, dR, Z [C][VP] and S_n, dS_C [K][VP]; after
// the value axis, one buffer holds Ē and dY [C][K + 4], the other dA and dA Aᵀ [C][CP].
template <int K>
struct ProductsLayout {
  static constexpr int KP = K + 4, kSlice = 4 * C * VP + 2 * K * VP;
  static_assert(2 * C * KP <= kSlice && 2 * C * CP <= kSlice, "the tiles after the value axis fit a slice buffer");
  static constexpr size_t floats() { return size_t(C) * CP + 2 * kSlice; }
};

// 16-byte runs of a C-row tile, `cols` floats per row, in the order the block copies them: run i = u·512 + tid is
// row i / (cols/4), columns 4·(i mod cols/4) ..; f(u, row, column) for each of this thread's.
template <int cols, class F>
__device__ __forceinline__ void for_runs(int tid, F&& f) {
  constexpr int per_row = cols / 4;
  static_assert(C * per_row % kProductThreads == 0, "every thread copies the same number of runs");
#pragma unroll
  for (int u = 0; u < C * per_row / kProductThreads; ++u) {
    const int i = u * kProductThreads + tid;
    f(u, i / per_row, (i % per_row) * 4);
  }
}
// x[0..3] rounded to TF32 in place (a run this thread copied, after its copy landed).
__device__ __forceinline__ void round_run(float* x) {
  const float4 v = *reinterpret_cast<const float4*>(x);
  *reinterpret_cast<float4*>(x) = make_float4(round_tf32(v.x), round_tf32(v.y), round_tf32(v.z), round_tf32(v.w));
}

template <int K, bool kMma>
__global__ void __launch_bounds__(kProductThreads, 1) chunk_backward_products_kernel(Workspace ws, BackwardWorkspace bw,
                                                                                      const int64_t* cu_seqlens,
                                                                                      int64_t T_len, int HV, int V) {
  using Lay = ProductsLayout<K>;
  constexpr int KP = Lay::KP, NK = K / 32;  // NK: tiles of 8 columns per warp in a K-wide product
  extern __shared__ __align__(16) float smem[];
  float* s_A = smem;
  auto s_buf = [&](int i) { return s_A + C * CP + (i % 2) * Lay::kSlice; };  // slice buffer i mod 2
  const int tid = threadIdx.x, warp = tid / 32;
  const int c = blockIdx.x, hv = blockIdx.y, n = blockIdx.z;
  const Span span = sequence_span(cu_seqlens, n, T_len);
  if (int64_t(c) * C >= span.length) return;
  const int L = int(span.length - int64_t(c) * C < C ? span.length - int64_t(c) * C : C);
  const int64_t row0 = span.row0 + int64_t(c) * C, slot = chunk_slot(span.row0, n, c);
  // Copies of C token rows of X [rows][HV][width] (rows ≥ L as zeros), columns col0 .., into a tile of row stride ld.
  auto copy_rows = [&](auto cols, float* dst, int ld, const float* X, int width, int col0) {
    for_runs<decltype(cols)::value>(tid, [&](int, int r, int c4) {
      cp_async16(dst + r * ld + c4, X + ((row0 + min(r, L - 1)) * HV + hv) * int64_t(width) + col0 + c4, r < L);
    });
  };
  using Slice = std::integral_constant<int, VS>;
  // A slice: dO, R, dR, Z [C][VP] and S_n, dS_C [K][VP] for value columns v0 .. v0 + VS − 1. Each thread copies run
  // (r, c4) of the row tiles (C·VS/4 = 512 runs: one each) and runs (r + 64u, c4) of both states, so the same thread
  // holds S_n's and dS_C's run of a key channel (Eq. 60's products).
  static_assert(C * VS / 4 == kProductThreads && K % C == 0, "one run of each row tile per thread");
  const int r_own = tid / (VS / 4), c_own = (tid % (VS / 4)) * 4;
  const float* Sn = ws.Sn + (slot * HV + hv) * int64_t(K) * V + r_own * int64_t(V) + c_own;
  const float* dSn = bw.dSn + (Sn - ws.Sn);
  auto copy_slice = [&](int v0, float* buf) {
    copy_rows(Slice{}, buf, VP, bw.dO, V, v0), copy_rows(Slice{}, buf + C * VP, VP, ws.U, V, v0);
    copy_rows(Slice{}, buf + 2 * C * VP, VP, bw.dR, V, v0), copy_rows(Slice{}, buf + 3 * C * VP, VP, bw.Z, V, v0);
#pragma unroll
    for (int u = 0; u < K / C; ++u) {
      float* at = buf + (4 * C + r_own + u * C) * VP + c_own;
      cp_async16(at, Sn + u * C * int64_t(V) + v0, true), cp_async16(at + K * VP, dSn + u * C * int64_t(V) + v0, true);
    }
  };
  using Chunk = std::integral_constant<int, C>;
  using Keys = std::integral_constant<int, K>;
  copy_rows(Chunk{}, s_A, CP, ws.A, C, 0);
  copy_slice(0, s_buf(0));
  cp_async_commit();

  // This warp's 16 rows and quarter of each product's columns.
  const int m0 = (warp % 4) * 16, q = warp / 4, n64 = q * 16, nK = q * (K / 4);
  float aqk[2][4] = {}, dqg[NK][4] = {}, dy[NK][4] = {}, dkt[NK][4] = {}, da[2][4] = {};
  float rowsum[K / C] = {};  // this thread's columns of Σ_j (dS_C ⊙ S_n)_dj (Eq. 60) for channels r_own + 64u
  using S = Step<kMma>;
  const int lane = tid % 32, g = lane / 4, t = lane % 4;
  const int slices = V / VS;
  for (int s = 0; s < slices; ++s) {
    if (s + 1 < slices) copy_slice((s + 1) * VS, s_buf(s + 1));
    else copy_rows(Keys{}, s_buf(s + 1), KP, ws.Ebar, K, 0);  // Ē, for after the value axis
    cp_async_commit();
    cp_async_wait<1>();  // this thread's copies of slice s (and of A) have landed
    float* buf = s_buf(s);
#pragma unroll
    for (int u = 0; u < K / C; ++u) {  // Eq. 60's products in float32, then the operands rounded (bf16 storage)
      float* at = buf + (4 * C + r_own + u * C) * VP + c_own;
      float x[4], y[4];
      load_run<4>(x, at), load_run<4>(y, at + K * VP);
#pragma unroll
      for (int j = 0; j < 4; ++j) rowsum[u] += x[j] * y[j];
      if constexpr (kMma) round_run(at), round_run(at + K * VP);
    }
    if constexpr (kMma) {
#pragma unroll
      for (int x = 0; x < 4; ++x) round_run(buf + x * C * VP + r_own * VP + c_own);
      if (s == 0) for_runs<C>(tid, [&](int, int r, int c4) { round_run(s_A + r * CP + c4); });
    }
    __syncthreads();  // slice s in shared memory
    const Rows<VP> dO{buf}, R{buf + C * VP}, dR{buf + 2 * C * VP};
    const Cols<VP> Rt{buf + C * VP}, Zt{buf + 3 * C * VP}, St{buf + 4 * C * VP}, dSt{buf + (4 * C + K) * VP};
#pragma unroll 1
    for (int k0 = 0; k0 < VS; k0 += S::depth) {
      const typename S::A f_dO = S::a(dO, m0, k0, g, t), f_dR = S::a(dR, m0, k0, g, t);
#pragma unroll
      for (int nt = 0; nt < 2; ++nt) {
        S::mul(aqk[nt], f_dO, S::b(Rt, k0, n64 + nt * 8, g, t));  // dA_qk = dO Rᵀ   Eq. 53
        S::mul(da[nt], f_dR, S::b(Zt, k0, n64 + nt * 8, g, t));   // dA = dU Zᵀ     Eq. 64
      }
#pragma unroll
      for (int nt = 0; nt < NK; ++nt) {
        const typename S::B f_S = S::b(St, k0, nK + nt * 8, g, t);
        S::mul(dqg[nt], f_dO, f_S);  // dQ_γ = dO S_nᵀ  Eq. 55
        S::mul(dy[nt], f_dR, f_S);   // −dY = dR S_nᵀ   Eq. 62
      }
      const typename S::A f_R = S::a(R, m0, k0, g, t);
#pragma unroll
      for (int nt = 0; nt < NK; ++nt) S::mul(dkt[nt], f_R, S::b(dSt, k0, nK + nt * 8, g, t));  // dK_tail = R dS_Cᵀ  Eq. 58
    }
    float dz[1][4] = {};  // dZ = Aᵀ dU for this slice (Eq. 64): a 16 × 8 tile per warp
    warp_product<kMma>(dz, Cols<CP>{s_A}, Rows<VP>{buf + 2 * C * VP}, m0, q * 8, C);
    store_tiles(dz, bw.dZ + (row0 * HV + hv) * int64_t(V) + s * VS, int64_t(HV) * V, m0, q * 8, L);
    __syncthreads();  // every warp done with slice s before its buffer takes slice s + 2
  }
#pragma unroll
  for (int u = 0; u < K / C; ++u) {  // the 8 threads of a channel hold its 8 runs of each slice
#pragma unroll
    for (int off = VS / 8; off; off /= 2) rowsum[u] += __shfl_xor_sync(0xffffffffu, rowsum[u], off);
    if (c_own == 0) bw.rowsum[(slot * HV + hv) * K + r_own + u * C] = rowsum[u];
  }
  const int64_t rsC = int64_t(HV) * C, rsK = int64_t(HV) * K;
  store_tiles(aqk, bw.dAqk + (row0 * HV + hv) * C, rsC, m0, n64, L, 1.f, kLower);
  store_tiles(dqg, bw.dQg + (row0 * HV + hv) * K, rsK, m0, nK, L);
  store_tiles(dkt, bw.dKtail + (row0 * HV + hv) * K, rsK, m0, nK, L);
  float* s_E = s_buf(slices);
  float* s_dY = s_E + C * KP;
  float* s_dA = s_buf(slices - 1);
  float* s_M = s_dA + C * CP;
  store_tiles<kMma>(dy, s_dY, KP, m0, nK, C, -1.f);  // dY = −dR S_nᵀ, on chip only
  cp_async_wait<0>();
  if constexpr (kMma) for_runs<K>(tid, [&](int, int r, int c4) { round_run(s_E + r * KP + c4); });
  __syncthreads();  // dY and Ē in shared memory
  warp_product<kMma>(da, Rows<KP>{s_dY}, Cols<KP>{s_E}, m0, n64, K);  // dA += dY Ēᵀ  Eq. 65
  store_tiles<kMma>(da, s_dA, CP, m0, n64, C);
  float de[NK][4] = {};
  warp_product<kMma>(de, Cols<CP>{s_A}, Rows<KP>{s_dY}, m0, nK, C);  // dĒ = Aᵀ dY    Eq. 65
  store_tiles(de, bw.dEbar + (row0 * HV + hv) * K, rsK, m0, nK, L);
  __syncthreads();  // dA in shared memory
  float m1[2][4] = {};
  warp_product<kMma>(m1, Rows<CP>{s_dA}, Cols<CP>{s_A}, m0, n64, C);  // dA Aᵀ
  store_tiles<kMma>(m1, s_M, CP, m0, n64, C);
  __syncthreads();
  float dt[2][4] = {};
  warp_product<kMma>(dt, Cols<CP>{s_A}, Rows<CP>{s_M}, m0, n64, C);  // dT = −stril(Aᵀ dA Aᵀ)  Eq. 66
  store_tiles(dt, bw.dT + (row0 * HV + hv) * C, rsC, m0, n64, L, -1.f, kStrictlyLower);
}

}  // namespace

void chunk_backward_products(const Workspace& ws, const BackwardWorkspace& bw, const int64_t* cu, const Problem& p,
                             cudaStream_t stream) {
  const unsigned max_chunks = unsigned((p.T + kChunk - 1) / kChunk);
  dispatch_k_and_dtype(p, [&](auto K_, auto T_) {
    constexpr int K = decltype(K_)::value;
    constexpr bool kMma = std::is_same_v<decltype(T_), __nv_bfloat16>;
    auto kernel = chunk_backward_products_kernel<K, kMma>;
    const size_t bytes = ProductsLayout<K>::floats() * sizeof(float);
    GDN2_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    kernel<<<dim3(max_chunks, unsigned(p.HV), unsigned(p.N)), kProductThreads, bytes, stream>>>(ws, bw, cu, p.T,
                                                                                               int(p.HV), int(p.V));
    GDN2_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace gdn2::cuda::detail
