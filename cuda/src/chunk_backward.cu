// gdn2::cuda chunk_backward — the gate-aware chunkwise backward (paper Sec. 3.4, Appendix B, Eq. 49-84), the twin of
// reference/core/chunk_backward.hpp, as six stages over float32 workspaces in global memory (backward.cuh):
//   0. the forward's workspace (Y, A_qk, Q_γ, K_tail, γ_C, A, Ē, S_n, R per chunk): kept by chunk_forward, or
//      recomputed by the forward's own kernels (the paper's memory-saving path);
//   1. dO, Z;  2. the state VJP, last chunk first;  3. the products;  4. through T and A_qk;  5. tail keys, gates, dg's
//   scans, dv, dw;  6. the sums over each key head's value heads (fixed order: deterministic, no atomics anywhere) of
//   dq, dk and, for gates per key head, dg, db.
// Every decay is exp() of a direct sum of g ≤ 0, as in the forward: no γ⁻¹, exact at g = −inf.
// H100, bf16, B = 8, T = 4096, H = 16, K = V = 128: forward with kept workspace + backward 10.7 ms, backward alone
// 7.9 ms (gdn2-cuda-bench --train --batch 8).
#include "backward.cuh"

namespace gdn2::cuda::detail {

void chunk_backward_run(void* dq, void* dk, void* dv, float* dg, void* db, void* dw, float* dh0, const void* q,
                        const void* k, const void* v, const float* g, const void* b, const void* w, const float* h0,
                        const int64_t* cu, const void* do_, const float* dht, const Problem& p, cudaStream_t stream,
                        const SavedForBackward* saved) {
  const int64_t rows = cu ? p.T : p.N * p.T, HV = p.HV, V = p.V, K = p.K, C = kChunk;
  if (rows == 0) {  // no tokens: dL/dS_0 = dL/dS_T
    const size_t bytes = size_t(p.N * p.HV * p.K * p.V) * sizeof(float);
    if (dht) GDN2_CUDA_CHECK(cudaMemcpyAsync(dh0, dht, bytes, cudaMemcpyDeviceToDevice, stream));
    else GDN2_CUDA_CHECK(cudaMemsetAsync(dh0, 0, bytes, stream));
    return;
  }
  const int64_t slots = chunk_slots(rows, p.N);
  // The forward's workspace: kept by chunk_forward, or recomputed here. Then the backward's own.
  const size_t forward_floats = saved ? 0 : forward_workspace_floats(rows, p.N, HV, K, V, WorkspaceUse::kForBackward);
  const int64_t per_row = HV * (4 * V + 2 * C + 7 * K), per_slot = HV * K * (V + 1);
  float* base = workspace_alloc<float>(forward_floats + size_t(rows * per_row + slots * per_slot), stream);
  const Workspace ws = carve_forward_workspace(saved ? static_cast<float*>(saved->workspace_) : base, rows, p.N, HV, K,
                                               V, WorkspaceUse::kForBackward);
  float* next = base + forward_floats;
  auto take = [&](int64_t floats) { return std::exchange(next, next + floats); };  // the next `floats` floats
  BackwardWorkspace bw{};
  bw.dO = take(rows * HV * V), bw.Z = take(rows * HV * V), bw.dR = take(rows * HV * V), bw.dZ = take(rows * HV * V);
  bw.dAqk = take(rows * HV * C), bw.dT = take(rows * HV * C);
  bw.dQg = take(rows * HV * K), bw.dKtail = take(rows * HV * K), bw.dEbar = take(rows * HV * K);
  bw.dQ = take(rows * HV * K), bw.dK = take(rows * HV * K), bw.dE = take(rows * HV * K), bw.dG = take(rows * HV * K);
  bw.dSn = take(slots * HV * K * V), bw.rowsum = take(slots * HV * K);

  if (!saved) chunk_forward_recompute(ws, q, k, v, g, b, w, h0, cu, p, stream);  // 0
  backward_convert(bw, do_, v, w, rows, p, stream);                               // 1
  chunk_backward_state_pass(dh0, dht, ws, bw, cu, p, stream);                     // 2
  chunk_backward_products(ws, bw, cu, p, stream);                                 // 3
  chunk_backward_intra(bw, q, k, g, b, cu, p, stream);                            // 4
  const bool direct = HV == p.H, gates_direct = gate_heads(p) == HV;              // 5
  const HeadOutputs outputs{direct ? dq : nullptr, direct ? dk : nullptr, gates_direct ? db : nullptr,
                            gates_direct ? dg : nullptr, default_scale(p)};
  chunk_backward_gates(dv, dw, ws, bw, k, g, b, v, w, cu, p, outputs, stream);
  if (!direct) backward_reduce_heads(dq, dk, outputs.dg ? nullptr : dg, db, bw, rows, p, stream);  // 6
  GDN2_CUDA_CHECK(cudaFreeAsync(base, stream));
}

}  // namespace gdn2::cuda::detail
