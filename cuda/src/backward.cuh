// gdn2::cuda — the backward's float32 workspace and its stages as host functions (each launches one kernel or a few;
// chunk_backward.cu runs them in order).
#pragma once

#include "workspace.cuh"

namespace gdn2::cuda::detail {

// The backward's own workspace (fp32), rows as Workspace: [rows][HV][X]; dSn: [slots][HV][K][V]; rowsum: [slots][HV][K].
struct BackwardWorkspace {
  float *dO, *Z, *dR, *dZ;                 // [.][V]
  float *dAqk, *dT;                        // [.][C]
  float *dQg, *dKtail, *dEbar;             // [.][K] results of the products
  float *dQ, *dK, *dE, *dG;                // [.][K] per value head; dE becomes db
  float* dSn;                              // dL/dS at the end of each chunk
  float* rowsum;                           // Σ_j (dS_C ⊙ S_n)_dj per chunk (Eq. 60), from the products
};

// Where stage 5 writes the key-side gradients with nothing to sum: dq, dk when every key head has one value head
// (HV = H), dg, db when the gates are per value head (HG = HV): straight into the outputs, in their dtype (dq scaled).
// A null pointer: into the workspace, for stage 6's sums.
struct HeadOutputs {
  void *dq = nullptr, *dk = nullptr, *db = nullptr;
  float* dg = nullptr;
  float scale = 1;
};

// Stage 1 (chunk_backward_gates.cu): dO in fp32 (zero where do_ is null) and Z = W ⊙ V (Eq. 20).
void backward_convert(const BackwardWorkspace& bw, const void* do_, const void* v, const void* w, int64_t rows,
                      const Problem& p, cudaStream_t stream);
// Stage 2 (chunk_backward_state_pass.cu): the state VJP, last chunk first (Eq. 54, 56-57, 59, 63).
void chunk_backward_state_pass(float* dh0, const float* dht, const Workspace& ws, const BackwardWorkspace& bw,
                               const int64_t* cu, const Problem& p, cudaStream_t stream);
// Stage 3 (chunk_backward_products.cu): the products of every chunk (Eq. 53, 55, 58, 62, 64-66).
void chunk_backward_products(const Workspace& ws, const BackwardWorkspace& bw, const int64_t* cu, const Problem& p,
                             cudaStream_t stream);
// Stage 4 (chunk_backward_intra.cu): through T and A_qk (Eq. 67-70), the twin of intra_chunk_scores_backward.
void chunk_backward_intra(const BackwardWorkspace& bw, const void* q, const void* k, const float* g, const void* b,
                          const int64_t* cu, const Problem& p, cudaStream_t stream);
// Stage 5 (chunk_backward_gates.cu): tail keys, gates, the reverse cumulative sum of dg (Eq. 71-76, 80-82), dv, dw.
void chunk_backward_gates(void* dv, void* dw, const Workspace& ws, const BackwardWorkspace& bw, const void* k,
                          const float* g, const void* b, const void* v, const void* w, const int64_t* cu,
                          const Problem& p, const HeadOutputs& outputs, cudaStream_t stream);
// Stage 6 (chunk_backward_gates.cu): the key-side gradients summed over each key head's value heads, in a fixed order
// (dg == nullptr: dq and dk only).
void backward_reduce_heads(void* dq, void* dk, float* dg, void* db, const BackwardWorkspace& bw, int64_t rows,
                           const Problem& p, cudaStream_t stream);

}  // namespace gdn2::cuda::detail
