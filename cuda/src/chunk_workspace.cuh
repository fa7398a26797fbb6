// gdn2::cuda — the float32 workspace that the chunk-form kernels hand to each other (forward versions 05-08 and the
// backward, which recomputes the forward into it).
#pragma once

#include "chunk_tiles.cuh"

namespace gdn2::cuda::detail {

// Workspace rows follow the packed token axis: row (token, value head) of Y holds K floats, of U V floats, of A_qk
// C floats (row r of its chunk's matrix). Rows past a sequence's end are never written or read.
struct Workspace {
  float *Y, *U, *Aqk;
  float *Qg = nullptr, *Kt = nullptr;  // version 06: Q_γ and K_tail per row [rows][HV][K]
  float *gC = nullptr, *Sn = nullptr;  // version 06: γ_C [slots][HV][K] and the chunk-start states [slots][HV][K][V]
  float *A = nullptr, *Ebar = nullptr;  // kept for the backward only: A = (I + T)⁻¹ [rows][HV][C], Ē [rows][HV][K]
  // Version 21 (bf16, workspace not kept): Q_γ [slots][HV][C·K] and A_qk [slots][HV][C·C] in mma fragment order
  // (fragment_index) for the fused pass, in place of Qg and Aqk.
  float *Qf = nullptr, *Af = nullptr;
};

// Fragment order of a chunk's [C][D] tile (forward version 21): the float4 at index (mb · D/8 + ks) · 32 + lane holds
// the four values that lane (g = lane / 4, t = lane % 4) of a warp on rows mb·16 .. mb·16 + 15 passes to mma_tf32 as
// its A fragment for k-step ks: (r0, k0 + t), (r0 + 8, k0 + t), (r0, k0 + t + 4), (r0 + 8, k0 + t + 4) with
// r0 = mb·16 + g, k0 = 8 ks. A warp's 32 lanes then read 512 contiguous bytes per k-step.
template <int D>
__device__ __forceinline__ int fragment_index(int mb, int ks, int lane) { return (mb * (D / 8) + ks) * 32 + lane; }

// Version 06 stores one γ_C and one state per chunk. Chunk c of sequence n gets slot row0_n / C + n + c: distinct for
// every (n, c) also with packed sequences (row0_{n+1} / C + 1 ≥ row0_n / C + ⌈len_n / C⌉), and at most rows / C + N + 1.
__device__ __forceinline__ int64_t chunk_slot(int64_t row0, int n, int64_t c) { return row0 / kChunk + n + c; }

// The forward's workspace in one allocation, by what it is for:
//   kForward:     Y, U, A_qk, Q_γ, K_tail per row; γ_C and S_n per chunk slot (versions 06-20, and f32 storage);
//   kForBackward: the same and also Ē and A per row — kept for chunk_backward, or recomputed by it; the layout is fixed
//                 so that a SavedForBackward made by chunk_forward can be carved again by chunk_backward;
//   kFused:       version 21's inference forward (bf16): Y, U, K_tail per row, γ_C per slot, and Q_γ, A_qk in fragment
//                 order per slot ([C·K] and [C·C]); no row-major A_qk, Q_γ and no S_n, which its pass never writes
//                 (1.22 GB at B = 8, T = 4096, H = 16, K = V = 128, against 2.17 for kForward with the fragments added).
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

// The forward recomputed for the backward (the paper's memory-saving path): chunk_prepare and the version-06 state pass
// fill Y, A_qk, Q_γ, K_tail, γ_C, A, Ē, the chunk-start states S_n, and R = U − Y S_n in place of U. Every pointer of
// ws must be allocated (chunk_forward_split.cu).
void chunk_forward_recompute(const Workspace& ws, const void* q, const void* k, const void* v, const float* g,
                             const void* b, const void* w, const float* h0, const int64_t* cu, const Problem& p,
                             cudaStream_t stream);

}  // namespace gdn2::cuda::detail
