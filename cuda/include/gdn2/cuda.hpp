// gdn2::cuda — the CUDA implementation of Gated DeltaNet-2, host API.
//
// Mirrors the reference (reference/core/forward.hpp): same names, same argument order (outputs first, then inputs,
// then sizes), same layout as flash-linear-attention:
//   q, k, b: [B,T,H,K] (dtype)   g: [B,T,H,K] float32 (natural-log decay, computed in fp32 as the paper's D.1 asks)
//   v, w:    [B,T,HV,V] (dtype)  o: [B,T,HV,V] (dtype)    h0, ht: [N,HV,K,V] float32
// dtype is float32 or bfloat16 (storage); every accumulation and the state are float32. All pointers are device
// pointers; cu_seqlens (int64, N+1 entries, B = 1) may be null. h0 may be null (zero initial state); ht may be null.
// Dimension letters: B batch, T tokens, H key heads, HV value heads, K key dim, V value dim, N sequences.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace gdn2::cuda {

enum class DType { f32, bf16 };

struct Problem {
  int64_t B = 1, T = 0, H = 1, HV = 1, K = 128, V = 128;
  int64_t N = 0;        // sequences: B, or the number of cu_seqlens entries − 1
  float scale = 0;      // 0 → K^-0.5
  DType dtype = DType::f32;
};

// Thrown for configurations the kernels do not support (the message says which) and for CUDA errors.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// True when a CUDA device can be used (false on machines without a GPU or with a driver too old for this runtime).
bool device_available(std::string* why = nullptr);

// Chunkwise WY form (paper Eq. 18-25), chunk size 64; supports K ∈ {64, 128}, V a multiple of 32.
void chunk_forward(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                   const void* w, const float* h0, const int64_t* cu_seqlens, const Problem& p, cudaStream_t stream = 0);

// Token recurrence (paper Eq. 9), the state kept on chip across tokens; K ∈ {64, 128}, V a multiple of 32.
// Decoding is recurrent_forward with T = 1 and ht == h0 (the state is updated in place).
void recurrent_forward(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                       const void* w, const float* h0, const int64_t* cu_seqlens, const Problem& p,
                       cudaStream_t stream = 0);

// The gate-aware chunkwise backward (paper Appendix B, Eq. 49-84), mirroring the reference's backward (same outputs
// in the same order, then the forward's inputs, then the upstream gradients):
//   dq, dk, db: [B,T,H,K] (dtype)   dg: [B,T,H,K] float32   dv, dw: [B,T,HV,V] (dtype)   dh0: [N,HV,K,V] float32
//   do_: [B,T,HV,V] (dtype) = dL/do, may be null (zero);  dht: [N,HV,K,V] float32 = dL/dht, may be null (zero).
// The forward is recomputed inside (only the inputs are needed). Deterministic: no atomics, value heads summed in a
// fixed order. Supports what chunk_forward supports.
void chunk_backward(void* dq, void* dk, void* dv, float* dg, void* db, void* dw, float* dh0, const void* q,
                    const void* k, const void* v, const float* g, const void* b, const void* w, const float* h0,
                    const int64_t* cu_seqlens, const void* do_, const float* dht, const Problem& p,
                    cudaStream_t stream = 0);

}  // namespace gdn2::cuda
