// gdn2::cuda chunk_forward — the chunkwise WY forward (paper Eq. 18-25) as stages over a float32 workspace in global
// memory: chunk_prepare (every chunk in parallel), chunk_state_pass (the walk carrying the state), chunk_output.
//   bf16 storage, workspace not kept:   prepare (fragment-order Q_γ, A_qk; Y, U on tensor cores) → fused pass (O);
//   float32 storage, or workspace kept: prepare (row-major) → pass (S_n, R) → output.
// chunk_forward_recompute fills a kept workspace's layout with the same kernels, so both backward paths agree.
// H100, bf16, B = 8, T = 4096, H = 16, K = V = 128: 2.37 ms (gdn2-cuda-bench --chunk --batch 8).
#include "workspace.cuh"

namespace gdn2::cuda::detail {

void chunk_forward_run(void* o, float* ht, const void* q, const void* k, const void* v, const float* g, const void* b,
                       const void* w, const float* h0, const int64_t* cu, const Problem& p, cudaStream_t stream,
                       SavedForBackward* saved) {
  const int64_t rows = cu ? p.T : p.N * p.T;
  if (rows == 0) return;
  const bool keep = saved != nullptr;
  const bool fuse = p.dtype == DType::bf16 && !keep;
  const WorkspaceUse use = keep ? WorkspaceUse::kForBackward : fuse ? WorkspaceUse::kFused : WorkspaceUse::kForward;
  const size_t floats = forward_workspace_floats(rows, p.N, p.HV, p.K, p.V, use);
  float* base = workspace_alloc<float>(floats, stream);
  const Workspace ws = carve_forward_workspace(base, rows, p.N, p.HV, p.K, p.V, use);
  chunk_prepare(ws, q, k, v, g, b, w, cu, p, stream);
  chunk_state_pass(ws, o, ht, h0, cu, p, fuse, stream);
  if (!fuse) chunk_output(ws, o, cu, p, stream);
  if (keep) {
    saved->reset();
    saved->workspace_ = base, saved->bytes_ = floats * sizeof(float), saved->problem_ = p;
    if (!saved->used_) GDN2_CUDA_CHECK(cudaEventCreateWithFlags(&saved->used_, cudaEventDisableTiming));
    GDN2_CUDA_CHECK(cudaEventRecord(saved->used_, stream));
    saved->release_ = release_stream();
  } else {
    GDN2_CUDA_CHECK(cudaFreeAsync(base, stream));
  }
}

void chunk_forward_recompute(const Workspace& ws, const void* q, const void* k, const void* v, const float* g,
                             const void* b, const void* w, const float* h0, const int64_t* cu, const Problem& p,
                             cudaStream_t stream) {
  chunk_prepare(ws, q, k, v, g, b, w, cu, p, stream);
  chunk_state_pass(ws, nullptr, nullptr, h0, cu, p, false, stream);
}

}  // namespace gdn2::cuda::detail
