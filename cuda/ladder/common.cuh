// cuda/ladder/common.cuh — what every rung of the ladder shares, so that each rung's file holds only its kernels:
// the problem (shapes, layout, storage), seeded inputs made by a hash that the host can recompute element by element,
// a float64 token recurrence (paper Eq. 9) as the reference, the check, the timing and the one line each program
// prints, and the device helpers more than one rung could use (the TF32 mma.sync, 16-byte loads and stores, cp.async).
// As in llm.c's dev/cuda, each rung is one standalone program: `main` calls ladder_main with its forward.
//
// Layout (flash-linear-attention): q, k, b, g [B][T][H][K]; v, w, o [B][T][H][V]; the final state ht [B][H][K][V].
// Storage: q, k, v, b, w and o in bfloat16 (kept here as their 16 bits), g, ht and every accumulation in float32.
// The initial state is zero; q is multiplied by scale = K^(-1/2) inside the kernels (o_t = S_tᵀ (scale · q_t)).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CUDA_CHECK(call)                                                                                  \
  do {                                                                                                    \
    cudaError_t err_ = (call);                                                                            \
    if (err_ != cudaSuccess) {                                                                            \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_));       \
      std::exit(1);                                                                                       \
    }                                                                                                     \
  } while (0)

constexpr int K = 128, V = 128;  // key and value channels per head: every rung is written for these
constexpr int C = 64;            // chunk size (T must be a multiple of it)

struct Problem {
  int B = 8, T = 4096, H = 16;
  float scale = 0.08838834764831845f;  // 1/sqrt(K)
  // Device tensors (bf16 bits, except g and ht).
  const uint16_t *q, *k, *v, *b, *w;
  const float* g;
  uint16_t* o;
  float* ht;
};

// ---- bfloat16 as 16 bits: the same rounding on host and device ----
__host__ __device__ inline uint16_t bf16_bits(float x) {  // round to nearest even (inputs here are finite)
#ifdef __CUDA_ARCH__
  uint32_t u = __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
#endif
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
__host__ __device__ inline float bf16_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, 4);
  return x;
#endif
}

// ---- seeded inputs: a counter-based hash, so the host recomputes any element without the device's copy ----
enum Tensor { kQ, kK, kV, kB, kW, kG };
__host__ __device__ inline float uniform01(uint32_t tensor, uint64_t index) {  // splitmix64 of (seed, tensor, index)
  uint64_t x = 0x9E3779B97F4A7C15ull * (index + 1) + 0xD1B54A32D192ED03ull * (tensor + 7) + 20260101ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
}
// The n = K or V values of one token (row = (b·T + t)·H + h) of a tensor, as stored: q, v in [-1, 1]; k in [-1, 1]
// then L2-normalised (so the transition I − k (b ⊙ k)ᵀ has its eigenvalues in [0, 1]); b, w in [0, 1] (gates);
// g in [-0.1, 0] (log-decays: a chunk of 64 tokens decays by e^-3.2 on average).
__host__ __device__ inline void token_values(Tensor tensor, uint64_t row, int n, float* out) {
  float norm = 0.f;
  for (int i = 0; i < n; ++i) {
    const float u = uniform01(tensor, row * n + i);
    out[i] = (tensor == kB || tensor == kW) ? u : tensor == kG ? -0.1f * u : 2.f * u - 1.f;
    norm += out[i] * out[i];
  }
  for (int i = 0; i < n; ++i) {
    if (tensor == kK) out[i] /= sqrtf(norm);
    if (tensor != kG) out[i] = bf16_float(bf16_bits(out[i]));
  }
}

__global__ void fill_inputs(uint16_t* q, uint16_t* k, uint16_t* v, uint16_t* b, uint16_t* w, float* g, uint64_t rows) {
  const uint64_t row = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x;
  if (row >= rows) return;
  float x[128];
  uint16_t* bf[5] = {q, k, v, b, w};
  for (int t = kQ; t <= kW; ++t) {
    token_values(Tensor(t), row, 128, x);
    for (int i = 0; i < 128; ++i) bf[t][row * 128 + i] = bf16_bits(x[i]);
  }
  token_values(kG, row, 128, x);
  for (int i = 0; i < 128; ++i) g[row * 128 + i] = x[i];
}

// ---- the float64 reference: Eq. 9 token by token for one (sequence, head) ----
//   S ← Diag(exp g_t) S;  r = Sᵀ e_t (e_t = b_t ⊙ k_t);  S ← S + k_t (z_t − r)ᵀ (z_t = w_t ⊙ v_t);  o_t = Sᵀ (scale q_t)
inline void reference_head(const Problem& p, int bi, int hi, std::vector<double>& o, std::vector<double>& S) {
  o.assign(size_t(p.T) * V, 0.0);
  S.assign(size_t(K) * V, 0.0);
  float q[K], k[K], v[V], b[K], w[V], g[K];
  std::vector<double> r(V), alpha(K);
  for (int t = 0; t < p.T; ++t) {
    const uint64_t row = (uint64_t(bi) * p.T + t) * p.H + hi;
    token_values(kQ, row, K, q), token_values(kK, row, K, k), token_values(kV, row, V, v);
    token_values(kB, row, K, b), token_values(kW, row, V, w), token_values(kG, row, K, g);
    for (int i = 0; i < K; ++i) alpha[i] = std::exp(double(g[i]));
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < V; ++j) S[i * V + j] *= alpha[i];
    std::fill(r.begin(), r.end(), 0.0);
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < V; ++j) r[j] += double(b[i]) * k[i] * S[i * V + j];
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < V; ++j) S[i * V + j] += double(k[i]) * (double(w[j]) * v[j] - r[j]);
    for (int i = 0; i < K; ++i)
      for (int j = 0; j < V; ++j) o[size_t(t) * V + j] += double(p.scale) * q[i] * S[i * V + j];
  }
}

// ‖x − ref‖ / ‖ref‖; prints the first elements that differ by more than bound · max|ref|.
inline double ratio(const char* name, const std::vector<float>& x, const std::vector<double>& ref, double bound) {
  double num = 0, den = 0, peak = 0;
  for (size_t i = 0; i < x.size(); ++i) num += (x[i] - ref[i]) * (x[i] - ref[i]), den += ref[i] * ref[i];
  for (double r : ref) peak = std::max(peak, std::fabs(r));
  const double rt = std::sqrt(num / den);
  if (!(rt <= bound))
    for (size_t i = 0, shown = 0; i < x.size() && shown < 5; ++i)
      if (!(std::fabs(x[i] - ref[i]) <= bound * peak))
        std::printf("  mismatch %s[%zu]: kernel %.6g, reference %.6g\n", name, i, x[i], ref[i]), ++shown;
  return rt;
}

using Forward = void (*)(const Problem&);

// Runs one rung: inputs, forward, check against the reference on a few (sequence, head) pairs, then timing.
// Exit 0: checked and timed; 1: the check failed; 77: no GPU (CTest reads it as skipped); 2: bad arguments.
inline int ladder_main(const char* name, int argc, char** argv, Forward forward, int default_T = 4096) {
  Problem p;
  p.T = default_T;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--B")) p.B = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--T")) p.T = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--H")) p.H = std::atoi(argv[i + 1]);
    else return std::fprintf(stderr, "%s: usage: %s [--B n] [--T n (multiple of %d)] [--H n]\n", name, name, C), 2;
  }
  if (argc % 2 == 0 || p.B < 1 || p.H < 1 || p.T < C || p.T % C)
    return std::fprintf(stderr, "%s: usage: %s [--B n] [--T n (multiple of %d)] [--H n]\n", name, name, C), 2;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("%s: skipped (no CUDA device)\n", name);
    return 77;
  }
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));

  const uint64_t rows = uint64_t(p.B) * p.T * p.H;
  uint16_t *q, *k, *v, *b, *w, *o;
  float *g, *ht;
  for (uint16_t** x : {&q, &k, &v, &b, &w, &o}) CUDA_CHECK(cudaMalloc(x, rows * 128 * 2));
  CUDA_CHECK(cudaMalloc(&g, rows * K * 4));
  CUDA_CHECK(cudaMalloc(&ht, size_t(p.B) * p.H * K * V * 4));
  fill_inputs<<<unsigned((rows + 127) / 128), 128>>>(q, k, v, b, w, g, rows);
  CUDA_CHECK(cudaGetLastError());
  p.q = q, p.k = k, p.v = v, p.b = b, p.w = w, p.g = g, p.o = o, p.ht = ht;

  forward(p);
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());

  // The check: three (sequence, head) pairs, o over all T tokens and the final state, against float64.
  // Bounds: bf16 storage of o rounds each output by up to 2^-9; TF32 products (rungs 04+) add about as much.
  const int pairs[3][2] = {{0, 0}, {p.B / 2, p.H / 3}, {p.B - 1, p.H - 1}};
  double worst_o = 0, worst_h = 0;
  std::vector<uint16_t> ob(size_t(p.T) * V);
  std::vector<float> of(size_t(p.T) * V), hf(size_t(K) * V);
  std::vector<double> oref, href;
  for (auto& pr : pairs) {
    const int bi = pr[0], hi = pr[1];
    CUDA_CHECK(cudaMemcpy2D(ob.data(), V * 2, o + (uint64_t(bi) * p.T * p.H + hi) * V, size_t(p.H) * V * 2, V * 2,
                            p.T, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < ob.size(); ++i) of[i] = bf16_float(ob[i]);
    CUDA_CHECK(cudaMemcpy(hf.data(), ht + (size_t(bi) * p.H + hi) * K * V, K * V * 4, cudaMemcpyDeviceToHost));
    reference_head(p, bi, hi, oref, href);
    worst_o = std::max(worst_o, ratio("o", of, oref, 5e-3));
    worst_h = std::max(worst_h, ratio("ht", hf, href, 1e-3));
  }
  const bool ok = worst_o <= 5e-3 && worst_h <= 1e-3;

  // Timing: two warm-up runs, then the median of 10 (CUDA events around each call).
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<float> ms(10);
  for (int i = 0; i < 2; ++i) forward(p);
  for (float& m : ms) {
    CUDA_CHECK(cudaEventRecord(e0));
    forward(p);
    CUDA_CHECK(cudaEventRecord(e1));
    CUDA_CHECK(cudaEventSynchronize(e1));
    CUDA_CHECK(cudaEventElapsedTime(&m, e0, e1));
  }
  CUDA_CHECK(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  std::printf("%-24s B=%d T=%d H=%d K=V=128 bf16  %9.3f ms  ratio(o) %.2e ratio(ht) %.2e  %s  [%s]\n", name, p.B, p.T,
              p.H, 0.5 * (ms[4] + ms[5]), worst_o, worst_h, ok ? "ok" : "FAILED", prop.name);
  return ok ? 0 : 1;
}

// ---- tensor cores: mma.sync m16n8k8 with TF32 operands (rounded to nearest) and float32 accumulation ----
// Fragments (g = lane / 4, t = lane % 4): a = A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4]; b = B[t][g], B[t+4][g];
// c = C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1].
__device__ inline uint32_t tf32(float x) {
  uint32_t u;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(u) : "f"(x));
  return u;
}
__device__ inline void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
               "{%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// One warp: c += X[m0:m0+16, 0:depth] · Y[0:depth, n0:n0+8], with X(i, j) = X[i·xr + j·xc] and Y(i, j) = Y[i·yr + j·yc]
// read from shared memory (the strides let a caller pass a transpose). depth is a multiple of 8.
__device__ inline void warp_mma(float (&c)[4], const float* X, int xr, int xc, const float* Y, int yr, int yc, int m0,
                                int n0, int depth) {
  const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
  for (int k0 = 0; k0 < depth; k0 += 8) {
    const uint32_t a[4] = {tf32(X[(m0 + g) * xr + (k0 + t) * xc]), tf32(X[(m0 + g + 8) * xr + (k0 + t) * xc]),
                           tf32(X[(m0 + g) * xr + (k0 + t + 4) * xc]), tf32(X[(m0 + g + 8) * xr + (k0 + t + 4) * xc])};
    mma_tf32(c, a, tf32(Y[(k0 + t) * yr + (n0 + g) * yc]), tf32(Y[(k0 + t + 4) * yr + (n0 + g) * yc]));
  }
}
__device__ inline float round_tf32(float x) { return __uint_as_float(tf32(x)); }
__device__ inline uint32_t bits(float x) { return __float_as_uint(x); }  // an operand already rounded to TF32

// ---- 16-byte memory access (addresses 16-byte aligned) ----
__device__ inline void store4(float* p, const float* x) {
  *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
}
__device__ inline uint4 ld16(const uint16_t* p) { return *reinterpret_cast<const uint4*>(p); }
__device__ inline void bf16x8(float (&x)[8], uint4 u) {  // 8 bf16 loaded as 16 bytes (ld16), to float
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
  for (int i = 0; i < 4; ++i) x[2 * i] = bf16_float(w[i] & 0xFFFFu), x[2 * i + 1] = bf16_float(w[i] >> 16);
}
__device__ inline void ld8(float (&x)[8], const float* p) {  // 8 floats by two 16-byte loads
  const float4 a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
  x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
}
// 16 bytes global → shared without passing through registers (cp.async): a thread's copies since its last commit
// form a group; cp_async_wait<N> returns once at most N of its groups are in flight (for the block: after a barrier).
__device__ inline void cp_async16(float* dst, const float* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(unsigned(__cvta_generic_to_shared(dst))), "l"(src));
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ inline void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }
__device__ inline void prefetch_l2(const void* p, uint32_t bytes) {  // asks L2 for bytes from p (sm_90 bulk), no wait
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes));
}
