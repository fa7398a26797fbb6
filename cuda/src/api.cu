// gdn2::cuda — the host API: checks what the kernels support (an unsupported problem is a gdn2::cuda::Error that says
// what is supported), then runs the stages (chunk_forward.cu, recurrent_forward.cu, chunk_backward.cu).
#include <atomic>
#include <map>
#include <mutex>

#include "common.cuh"
#include "gdn2/cuda_testing.hpp"

namespace gdn2::cuda {

namespace detail {
void chunk_forward_run(void*, float*, const void*, const void*, const void*, const float*, const void*, const void*,
                       const float*, const int64_t*, const Problem&, cudaStream_t, SavedForBackward*);
void chunk_backward_run(void*, void*, void*, float*, void*, void*, float*, const void*, const void*, const void*,
                        const float*, const void*, const void*, const float*, const int64_t*, const void*, const float*,
                        const Problem&, cudaStream_t, const SavedForBackward*);
void recurrent_forward_run(void*, float*, const void*, const void*, const void*, const float*, const void*,
                           const void*, const float*, const int64_t*, const Problem&, cudaStream_t);
}  // namespace detail

// The current device's workspace pool and the stream on which SavedForBackward frees a kept workspace (after the event
// recorded at its last use: neither the host nor the caller's streams wait): made once per device, kept for good.
static std::pair<cudaMemPool_t, cudaStream_t> device_resources() {
  int device = 0;
  GDN2_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mutex;
  static std::map<int, std::pair<cudaMemPool_t, cudaStream_t>> made;
  const std::lock_guard<std::mutex> lock(mutex);
  auto found = made.find(device);
  if (found != made.end()) return found->second;
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t pool;
  cudaStream_t release;
  GDN2_CUDA_CHECK(cudaMemPoolCreate(&pool, &props));
  uint64_t keep = UINT64_MAX;  // never release at synchronisation points
  GDN2_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  GDN2_CUDA_CHECK(cudaStreamCreateWithFlags(&release, cudaStreamNonBlocking));
  return made[device] = {pool, release};
}
cudaMemPool_t detail::workspace_pool() { return device_resources().first; }
cudaStream_t detail::release_stream() { return device_resources().second; }

static std::atomic<bool> poison{false};
bool detail::poison_workspace() { return poison.load(std::memory_order_relaxed); }
void testing::poison_workspaces(bool on) { poison.store(on, std::memory_order_relaxed); }

void trim_workspace_memory() { GDN2_CUDA_CHECK(cudaMemPoolTrimTo(detail::workspace_pool(), 0)); }

bool device_available(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    if (why) *why = err != cudaSuccess ? cudaGetErrorString(err) : "no CUDA device";
    cudaGetLastError();  // clear the sticky error
    return false;
  }
  void* probe = nullptr;
  const cudaError_t alloc = cudaMalloc(&probe, 16);
  if (alloc != cudaSuccess) {
    if (why) *why = cudaGetErrorString(alloc);
    cudaGetLastError();
    return false;
  }
  cudaFree(probe);
  return true;
}

namespace {

void check(const Problem& p, const char* what) {
  auto fail = [&](const std::string& m) { throw Error(std::string(what) + ": " + m); };
  if (p.K != 64 && p.K != 128) fail("K = " + std::to_string(p.K) + " is not supported (64 or 128)");
  if (p.V <= 0 || p.V % 32 != 0) fail("V = " + std::to_string(p.V) + " must be a positive multiple of 32");
  if (p.H <= 0 || p.HV <= 0 || p.HV % p.H != 0) fail("HV must be a positive multiple of H");
  if (p.HG != 0 && p.HG != p.H && p.HG != p.HV)
    fail("HG = " + std::to_string(p.HG) + ": g and b are taken per key head (HG = H) or per value head (HG = HV)");
  if (p.N <= 0 || p.T < 0) fail("N must be positive and T non-negative");
  if (p.N > 65535 || p.HV > 65535) fail("N and HV must be at most 65535 (grid limits)");
}

}  // namespace

void chunk_forward(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                   const void* w, const float* h0, const int64_t* cu_seqlens, const Problem& p, cudaStream_t stream,
                   SavedForBackward* saved) {
  check(p, "chunk_forward");
  if (saved) saved->reset();  // filled again (left empty when there are no tokens: the backward then recomputes)
  detail::chunk_forward_run(o, ht, q, k, v, g, b, w, h0, cu_seqlens, p, stream, saved);
}

void recurrent_forward(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                       const void* w, const float* h0, const int64_t* cu_seqlens, const Problem& p,
                       cudaStream_t stream) {
  check(p, "recurrent_forward");
  detail::recurrent_forward_run(o, ht, q, k, v, g, b, w, h0, cu_seqlens, p, stream);
}

void chunk_backward(void* dq, void* dk, void* dv, float* dg, void* db, void* dw, float* dh0, const void* q,
                    const void* k, const void* v, const float* g, const void* b, const void* w, const float* h0,
                    const int64_t* cu_seqlens, const void* do_, const float* dht, const Problem& p,
                    cudaStream_t stream, const SavedForBackward* saved) {
  check(p, "chunk_backward");
  if (!dq || !dk || !dv || !dg || !db || !dw || !dh0) throw Error("chunk_backward: every gradient pointer is required");
  if (saved && !saved->empty()) {
    const Problem& s = saved->problem_;
    if (s.B != p.B || s.T != p.T || s.H != p.H || s.HV != p.HV || s.K != p.K || s.V != p.V || s.N != p.N ||
        s.dtype != p.dtype || s.scale != p.scale || detail::gate_heads(s) != detail::gate_heads(p))
      throw Error("chunk_backward: the saved workspace was made by chunk_forward for a different problem");
  }
  detail::chunk_backward_run(dq, dk, dv, dg, db, dw, dh0, q, k, v, g, b, w, h0, cu_seqlens, do_, dht, p, stream,
                             saved && !saved->empty() ? saved : nullptr);
  if (saved && !saved->empty() && saved->used_) GDN2_CUDA_CHECK(cudaEventRecord(saved->used_, stream));  // last use
}

}  // namespace gdn2::cuda
