// gdn2::cuda — helpers shared by the kernels: error checks, storage conversions, sequence spans.
#pragma once

#include <cuda_bf16.h>

#include <string>
#include <type_traits>

#include "gdn2/cuda.hpp"

#define GDN2_CUDA_CHECK(call)                                                                                   \
  do {                                                                                                           \
    const cudaError_t err_ = (call);                                                                             \
    if (err_ != cudaSuccess)                                                                                     \
      throw ::gdn2::cuda::Error(std::string(#call) + ": " + cudaGetErrorString(err_) + " at " + __FILE__ + ":" + \
                                std::to_string(__LINE__));                                                       \
  } while (0)

// After a launch: configuration errors now, execution errors at the next synchronising call.
#define GDN2_CUDA_CHECK_LAUNCH() GDN2_CUDA_CHECK(cudaGetLastError())

namespace gdn2::cuda::detail {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// Asks the L2 cache to fetch the 128-byte line holding ptr; the thread does not wait (a hint: no result, no fault).
__device__ __forceinline__ void prefetch_l2(const void* ptr) { asm volatile("prefetch.global.L2 [%0];" ::"l"(ptr)); }
// The same for bytes (a multiple of 16) from ptr (16-byte aligned), by one bulk prefetch (sm_90).
__device__ __forceinline__ void prefetch_l2_bulk(const void* ptr, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(ptr), "r"(bytes));
}

// Whether every pointer is 16-byte aligned (else the kernels read a caller's tensors one element at a time).
template <typename... P>
inline bool aligned16(const P*... ptrs) {
  return ((reinterpret_cast<uintptr_t>(ptrs) % 16 == 0) && ...);
}

// 8 consecutive elements from global memory (16-byte aligned) by 16-byte loads, the bytes kept as loaded: load()
// issues the loads, floats() converts (exactly), so the wait for the data falls where the values are first used.
template <typename T>
struct Raw8;
template <>
struct Raw8<float> {
  float4 a, b;
  __device__ __forceinline__ void load(const float* p) {
    a = *reinterpret_cast<const float4*>(p), b = *reinterpret_cast<const float4*>(p + 4);
  }
  __device__ __forceinline__ void zero() { a = b = make_float4(0.f, 0.f, 0.f, 0.f); }
  __device__ __forceinline__ void floats(float (&x)[8]) const {
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
  }
};
template <>
struct Raw8<__nv_bfloat16> {
  uint4 u;
  __device__ __forceinline__ void load(const __nv_bfloat16* p) { u = *reinterpret_cast<const uint4*>(p); }
  __device__ __forceinline__ void zero() { u = make_uint4(0u, 0u, 0u, 0u); }
  __device__ __forceinline__ void floats(float (&x)[8]) const {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&w[i]));
      x[2 * i] = f.x, x[2 * i + 1] = f.y;
    }
  }
};
// The same interface for pointers that are not 16-byte aligned: 8 loads of one element (the same values).
template <typename T>
struct Narrow8 {
  T e[8];
  __device__ __forceinline__ void load(const T* p) {
#pragma unroll
    for (int j = 0; j < 8; ++j) e[j] = p[j];
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int j = 0; j < 8; ++j) e[j] = from_float<T>(0.f);
  }
  __device__ __forceinline__ void floats(float (&x)[8]) const {
#pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = to_float(e[j]);
  }
};
template <typename T, bool kWide>
using Load8 = std::conditional_t<kWide, Raw8<T>, Narrow8<T>>;
template <bool kWide = true, typename T>
__device__ __forceinline__ void load8(float (&x)[8], const T* p) {
  Load8<T, kWide> raw;
  raw.load(p);
  raw.floats(x);
}
// Stores x[0..7] at p (16-byte aligned) in the storage dtype by 16-byte stores (the bits of 8 scalar stores).
__device__ __forceinline__ void store8(float* p, const float (&x)[8]) {
  *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
  *reinterpret_cast<float4*>(p + 4) = make_float4(x[4], x[5], x[6], x[7]);
}
__device__ __forceinline__ void store8(__nv_bfloat16* p, const float (&x)[8]) {
  uint32_t u[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 h = __halves2bfloat162(__float2bfloat16(x[2 * i]), __float2bfloat16(x[2 * i + 1]));
    u[i] = *reinterpret_cast<const uint32_t*>(&h);
  }
  *reinterpret_cast<uint4*>(p) = make_uint4(u[0], u[1], u[2], u[3]);
}
// Stores x[0..3] at p (16-byte aligned), global or shared.
__device__ __forceinline__ void store4(float* p, const float* x) {
  *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
}

// 16 bytes from global to shared memory without passing through registers (cp.async; both addresses 16-byte aligned).
// valid = false fills them with zeros. A thread's copies since its last commit form one group; cp_async_wait<N>
// returns once at most N of its groups are in flight, its own copies then visible to it (to the block after a barrier).
__device__ __forceinline__ void cp_async16(float* dst, const float* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Rows [row0, row0 + length) of the flattened [B*T] token axis for sequence n (as sequence_span in the reference).
struct Span {
  int64_t row0, length;
};
__device__ __forceinline__ Span sequence_span(const int64_t* cu_seqlens, int64_t n, int64_t T) {
  if (cu_seqlens) return {cu_seqlens[n], cu_seqlens[n + 1] - cu_seqlens[n]};
  return {n * T, T};
}

// Calls launch(integral_constant<int, K>{}, T{}) for the problem's K (64 or 128) and storage dtype T (float, bf16).
template <typename Launch>
void dispatch_k_and_dtype(const Problem& p, Launch&& launch) {
  const bool bf16 = p.dtype == DType::bf16;
  if (p.K == 128) return bf16 ? launch(std::integral_constant<int, 128>{}, __nv_bfloat16{}) : launch(std::integral_constant<int, 128>{}, float{});
  return bf16 ? launch(std::integral_constant<int, 64>{}, __nv_bfloat16{}) : launch(std::integral_constant<int, 64>{}, float{});
}

// The fp32 workspaces come from a private stream-ordered memory pool per device that keeps its memory between calls
// (mapping gigabytes again on every call would cost milliseconds); trim_workspace_memory() gives it back. With
// testing::poison_workspaces on, each is filled with NaN when allocated (a read of what no kernel wrote shows).
cudaMemPool_t workspace_pool();
cudaStream_t release_stream();  // where a SavedForBackward's workspace is freed (SavedForBackward::release_)
bool poison_workspace();
template <typename T>
inline T* workspace_alloc(size_t count, cudaStream_t stream) {
  void* ptr = nullptr;
  GDN2_CUDA_CHECK(cudaMallocFromPoolAsync(&ptr, count * sizeof(T), workspace_pool(), stream));
  if (poison_workspace()) GDN2_CUDA_CHECK(cudaMemsetAsync(ptr, 0xFF, count * sizeof(T), stream));
  return static_cast<T*>(ptr);
}

inline float default_scale(const Problem& p) { return p.scale != 0 ? p.scale : 1.0f / std::sqrt(float(p.K)); }
// The heads of the gates g and b: H (per key head; Problem::HG = 0 means H) or HV (per value head). Value head hv of
// key head h reads gate head hv when they are per value head (HG = HV), else h.
inline int64_t gate_heads(const Problem& p) { return p.HG ? p.HG : p.H; }
__device__ __forceinline__ int gate_head(int HG, int HV, int hv, int h) { return HG == HV ? hv : h; }

}  // namespace gdn2::cuda::detail
