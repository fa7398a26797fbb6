// gdn2::cuda — the CUDA implementation of Gated DeltaNet-2, host API.
//
// Mirrors the reference (reference/core/forward.hpp): same names, same argument order (outputs first, then inputs,
// then sizes), same layout as flash-linear-attention:
//   q, k: [B,T,H,K] (dtype)    v, w: [B,T,HV,V] (dtype)    o: [B,T,HV,V] (dtype)    h0, ht: [N,HV,K,V] float32
//   b: [B,T,HG,K] (dtype)       g: [B,T,HG,K] float32 (natural-log decay, computed in fp32 as the paper's D.1 asks)
// The gates g and b are both given per key head (HG = H: value heads h·HV/H … (h+1)·HV/H − 1 share key head h's
// gates, as they share its q and k) or both per value head (HG = HV: each value head its own, flash-linear-attention's
// fused_recurrent_gdn2 layout).
// dtype is float32 or bfloat16 (storage); every accumulation and the state are float32. All pointers are device
// pointers; cu_seqlens (int64, N+1 entries, B = 1) may be null. h0 may be null (zero initial state); ht may be null.
// Dimension letters: B batch, T tokens, H key heads, HV value heads, K key dim, V value dim, N sequences.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace gdn2::cuda {

enum class DType { f32, bf16 };

struct Problem {
  int64_t B = 1, T = 0, H = 1, HV = 1, K = 128, V = 128;
  int64_t N = 0;        // sequences: B, or the number of cu_seqlens entries − 1
  int64_t HG = 0;       // heads of the gates g and b: H (per key head; 0 means H) or HV (per value head)
  float scale = 0;      // 0 → K^-0.5
  DType dtype = DType::f32;
};

// Thrown for configurations the kernels do not support (the message says which) and for CUDA errors.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The kernels' float32 workspaces come from a private stream-ordered memory pool per device that keeps its memory
// between calls (a SavedForBackward's too). This returns the unused part of the current device's pool to the driver;
// the next call maps it again (about 2.7 ms for the 1.6 GB of a forward at B = 8, T = 4096, H = 16, K = V = 128).
void trim_workspace_memory();

// True when a CUDA device can be used (false on machines without a GPU or with a driver too old for this runtime).
bool device_available(std::string* why = nullptr);

// What chunk_forward keeps for chunk_backward when asked to (a training step's fast path): its float32 workspace —
// per chunk A_qk, A = (I + T)⁻¹, Y, R, Q_γ, K_tail, Ē and the chunk-start state — about
// 4·(4K + V + 2·64) bytes per token and value head plus one K × (V + 1) block per chunk (2.16 GB at B = 8, T = 4096,
// H = 16, K = V = 128). Without it chunk_backward recomputes the forward (the paper's memory-saving path). Move-only;
// when destroyed or reset its memory goes back to the library's pool in stream order, once the last chunk_forward or
// chunk_backward that used it has run on the device (the host does not wait). It is valid for the inputs it was made
// from.
class SavedForBackward {
 public:
  SavedForBackward() = default;
  SavedForBackward(const SavedForBackward&) = delete;
  SavedForBackward& operator=(const SavedForBackward&) = delete;
  SavedForBackward(SavedForBackward&& o) noexcept { *this = std::move(o); }
  SavedForBackward& operator=(SavedForBackward&& o) noexcept {
    std::swap(workspace_, o.workspace_), std::swap(bytes_, o.bytes_), std::swap(problem_, o.problem_);
    std::swap(used_, o.used_), std::swap(release_, o.release_);
    return *this;
  }
  ~SavedForBackward() {
    reset();
    if (used_) cudaEventDestroy(used_);
  }
  void reset() {  // freed on the library's release stream once the event used_ has passed: the host does not wait
    if (workspace_) {
      used_ ? cudaStreamWaitEvent(release_, used_, 0) : cudaDeviceSynchronize();
      cudaFreeAsync(workspace_, release_);
    }
    workspace_ = nullptr, bytes_ = 0;
  }
  bool empty() const { return workspace_ == nullptr; }
  size_t bytes() const { return bytes_; }
  // Internal: set by chunk_forward, read by chunk_backward.
  void* workspace_ = nullptr;
  size_t bytes_ = 0;
  Problem problem_;
  cudaEvent_t used_ = nullptr;      // recorded after the last kernel that used the workspace
  cudaStream_t release_ = nullptr;  // the library's stream on which it is freed
};

// Chunkwise WY form (paper Eq. 18-25), chunk size 64; supports K ∈ {64, 128}, V a multiple of 32. With saved
// non-null, the workspace is kept in it for chunk_backward; what it held before is freed first (reset(), in stream
// order: a training loop that reuses one SavedForBackward never waits on the host).
void chunk_forward(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                   const void* w, const float* h0, const int64_t* cu_seqlens, const Problem& p, cudaStream_t stream = 0,
                   SavedForBackward* saved = nullptr);

// Token recurrence (paper Eq. 9), the state kept on chip across tokens; K ∈ {64, 128}, V a multiple of 32.
// Decoding is recurrent_forward with T = 1 and ht == h0 (the state is updated in place).
void recurrent_forward(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                       const void* w, const float* h0, const int64_t* cu_seqlens, const Problem& p,
                       cudaStream_t stream = 0);

// The gate-aware chunkwise backward (paper Appendix B, Eq. 49-84), mirroring the reference's backward (same outputs
// in the same order, then the forward's inputs, then the upstream gradients):
//   dq, dk: [B,T,H,K] (dtype)   db: [B,T,HG,K] (dtype)   dg: [B,T,HG,K] float32   dv, dw: [B,T,HV,V] (dtype)
//   dh0: [N,HV,K,V] float32
//   do_: [B,T,HV,V] (dtype) = dL/do, may be null (zero);  dht: [N,HV,K,V] float32 = dL/dht, may be null (zero).
// With saved (from chunk_forward on the same inputs and problem) the forward's workspace is reused; without it the
// forward is recomputed inside (only the inputs are needed). dg and db come in the gates' layout: per key head the
// sums over the key head's value heads, per value head each value head's own. Deterministic: no atomics, value heads
// summed in a fixed order; both paths give the same bits. Supports what chunk_forward supports.
void chunk_backward(void* dq, void* dk, void* dv, float* dg, void* db, void* dw, float* dh0, const void* q,
                    const void* k, const void* v, const float* g, const void* b, const void* w, const float* h0,
                    const int64_t* cu_seqlens, const void* do_, const float* dht, const Problem& p,
                    cudaStream_t stream = 0, const SavedForBackward* saved = nullptr);

}  // namespace gdn2::cuda
