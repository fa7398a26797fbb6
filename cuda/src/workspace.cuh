// gdn2::cuda — the float32 workspace that the chunk-form kernels hand to each other through global memory, and the
// forward's stages as host functions (each launches one kernel; chunk_forward.cu runs them in order).
#pragma once

#include "tiles.cuh"

namespace gdn2::cuda::detail {

// Workspace rows follow the packed token axis: row (token, value head) of Y holds K floats, of U V floats, of A_qk
// C floats (row r of its chunk's matrix). Rows past a sequence's end are never written or read.
struct Workspace {
  float *Y, *U, *Aqk;
  float *Qg = nullptr, *Kt = nullptr;  // Q_γ and K_tail per row [rows][HV][K]
  float *gC = nullptr, *Sn = nullptr;  // γ_C [slots][HV][K] and the chunk-start states [slots][HV][K][V]
  float *A = nullptr, *Ebar = nullptr;  // kept for the backward only: A = (I + T)⁻¹ [rows][HV][C], Ē [rows][HV][K]
  // The fused forward (bf16, workspace not kept): Q_γ [slots][HV][C·K] and A_qk [slots][HV][C·C] in mma fragment
  // order (fragment_index) for the fused pass, in place of Qg and Aqk.
  float *Qf = nullptr, *Af = nullptr;
};

// Fragment order of a chunk's [C][D] tile: float4 number (mb · D/8 + ks) · 32 + lane holds lane's A fragment of
// mma_tf32 for rows mb·16 .. + 15 and k-step ks, so a warp's 32 lanes read 512 contiguous bytes per k-step.
template <int D>
__device__ __forceinline__ int fragment_index(int mb, int ks, int lane) { return (mb * (D / 8) + ks) * 32 + lane; }

// One γ_C and one state per chunk: chunk c of sequence n gets slot row0_n / C + n + c, distinct for every (n, c) also
// with packed sequences, and at most rows / C + N + 1.
__device__ __forceinline__ int64_t chunk_slot(int64_t row0, int n, int64_t c) { return row0 / kChunk + n + c; }

// The forward's workspace in one allocation, by what it is for:
//   kForward:     Y, U, A_qk, Q_γ, K_tail per row; γ_C and S_n per chunk slot (float32 storage);
//   kForBackward: the same and also Ē and A per row — kept for chunk_backward (which carves it again), or recomputed;
//   kFused:       the bf16 inference forward: Y, U, K_tail per row, γ_C per slot, Q_γ and A_qk in fragment order per
//                 slot; no S_n (1.22 GB at B = 8, T = 4096, H = 16, K = V = 128).
enum class WorkspaceUse { kForward, kForBackward, kFused };
inline int64_t chunk_slots(int64_t rows, int64_t N) { return rows / kChunk + N + 1; }
inline Workspace carve_forward_workspace(float* base, int64_t rows, int64_t N, int64_t HV, int64_t K, int64_t V,
                                         WorkspaceUse use, size_t* floats = nullptr) {
  const int64_t slots = chunk_slots(rows, N);
  Workspace ws{};
  int64_t used = 0;
  auto take = [&](int64_t count) {  // (with no base, only the count)
    float* at = base ? base + used : nullptr;
    used += count;
    return at;
  };
  if (use == WorkspaceUse::kFused) {
    ws.Y = take(rows * HV * K), ws.U = take(rows * HV * V), ws.Kt = take(rows * HV * K);
    ws.gC = take(slots * HV * K), ws.Qf = take(slots * HV * kChunk * K), ws.Af = take(slots * HV * kChunk * kChunk);
  } else {
    ws.Y = take(rows * HV * K), ws.U = take(rows * HV * V), ws.Aqk = take(rows * HV * kChunk);
    ws.Qg = take(rows * HV * K), ws.Kt = take(rows * HV * K);
    ws.gC = take(slots * HV * K), ws.Sn = take(slots * HV * K * V);
    if (use == WorkspaceUse::kForBackward) ws.Ebar = take(rows * HV * K), ws.A = take(rows * HV * kChunk);
  }
  if (floats) *floats = size_t(used);
  return ws;
}
// The size of that workspace, in floats (the same carving with no memory behind it).
inline size_t forward_workspace_floats(int64_t rows, int64_t N, int64_t HV, int64_t K, int64_t V, WorkspaceUse use) {
  size_t floats = 0;
  carve_forward_workspace(nullptr, rows, N, HV, K, V, use, &floats);
  return floats;
}

// Value columns per state-pass block. The pass holds one block per SM: 64 columns when that still gives about one
// block per SM, else 32, and 16 when 32 would leave SMs idle (B = 1 with 16 value heads: 64 blocks of 32 columns on
// 132 SMs). The sums are the same whatever the slice, so the bits are too.
inline int pass_columns(const Problem& p) {
  const int64_t pairs = int64_t(p.HV) * p.N;
  if (p.V % 64 == 0 && (p.V / 64) * pairs >= 120) return 64;
  if ((p.V / 32) * pairs < 120) return 16;
  return 32;
}

// The forward's stages (chunk_prepare.cu, chunk_state_pass.cu, chunk_output.cu), on a workspace carved above.
// fused (bf16 storage, ws.Qf and ws.Af allocated): prepare writes Q_γ and A_qk in fragment order and the pass computes O
// itself; otherwise the pass writes S_n and R, and chunk_output computes O from them.
void chunk_prepare(const Workspace& ws, const void* q, const void* k, const void* v, const float* g, const void* b,
                   const void* w, const int64_t* cu, const Problem& p, cudaStream_t stream);
void chunk_state_pass(const Workspace& ws, void* o, float* ht, const float* h0, const int64_t* cu, const Problem& p,
                      bool fused, cudaStream_t stream);
void chunk_output(const Workspace& ws, void* o, const int64_t* cu, const Problem& p, cudaStream_t stream);

// The forward recomputed for the backward (the paper's memory-saving path): chunk_prepare and chunk_state_pass fill Y,
// A_qk, Q_γ, K_tail, γ_C, A, Ē, the chunk-start states S_n, and R = U − Y S_n in place of U, as a forward that keeps
// its workspace does. Every pointer of ws must be allocated (chunk_forward.cu).
void chunk_forward_recompute(const Workspace& ws, const void* q, const void* k, const void* v, const float* g,
                             const void* b, const void* w, const float* h0, const int64_t* cu, const Problem& p,
                             cudaStream_t stream);

}  // namespace gdn2::cuda::detail
