// gdn2 reference — the chunkwise WY form (paper Sec. 3.3, Eq. 18-25; Appendix A, Eq. 29-47),
// one head of one sequence.
//
// The decay rule that makes this exact for every g in [-inf, 0] (NUMERICS.md, DESIGN.md):
//   every decay factor is exp() of a sum of g over a token segment, accumulated directly.
// The paper's normalised factors K̄ = γ⁻¹ ⊙ K (Eq. 19) are never formed: γ⁻¹ = exp(−ΣG) overflows
// (float32 once a chunk's log-decay passes −88.7), and the difference G_r − G_s of two cumulative sums
// cancels catastrophically after a huge reset and is NaN for g = −inf. Instead γ_r/γ_s is the
// product of the segment decays exp(Σ_{i=s+1}^{r} g_i), which is ≤ 1, never NaN, and accurate.
#pragma once

#include <algorithm>

#include "eigen_types.hpp"

namespace gdn2 {

// Eq. 18: γ_r = exp(G_r), G_r = Σ_{i≤r} g_i (row r of the result). Cumulative sums of non-positive terms
// have no cancellation; -inf stays -inf and gives γ = 0.
template <typename Scalar>
Mat<Scalar> cumulative_decay(const Mat<Scalar>& Gc) {
  Mat<Scalar> gamma(Gc.rows(), Gc.cols());
  RowVec<Scalar> G = RowVec<Scalar>::Zero(Gc.cols());
  for (Eigen::Index r = 0; r < Gc.rows(); ++r) {
    G += Gc.row(r);
    gamma.row(r) = exp_exact(G);
  }
  return gamma;
}

// Eq. 41: row r of Ktail is (γ_L / γ_r) ⊙ k_r = exp(Σ_{i>r} g_i) ⊙ k_r, from a suffix sum.
template <typename Scalar>
Mat<Scalar> tail_keys(const Mat<Scalar>& Kc, const Mat<Scalar>& Gc) {
  Mat<Scalar> Ktail(Kc.rows(), Kc.cols());
  RowVec<Scalar> suffix = RowVec<Scalar>::Zero(Gc.cols());  // Σ_{i>r} g_i
  for (Eigen::Index r = Kc.rows() - 1; r >= 0; --r) {
    Ktail.row(r) = exp_exact(suffix) * Kc.row(r).array();
    suffix += Gc.row(r);
  }
  return Ktail;
}

// Eq. 21 and Eq. 25 (Eq. 87 in the kernel appendix), with Γ_rs = γ_r/γ_s = exp(Σ_{i=s+1}^{r} g_i):
//   T_rs   = Σ_d b_rd k_rd Γ_rs,d k_sd    for s < r   (ē_rᵀ k̄_s: the erase gate sits on the row side)
//   Aqk_rs = Σ_d q_rd Γ_rs,d k_sd         for s ≤ r   (q already scaled)
//
// Exact sub-chunk factorisation. The chunk is cut into sub-chunks of `sub` tokens (kSubChunk = 16 by default, the
// CUDA kernels' sub-chunk: cuda/src/chunk_scores.cuh). When s lies in an
// earlier sub-chunk than r, split the segment at the pivot p = (first token of r's sub-chunk) − 1:
//   Γ_rs = exp(Σ_{i=p+1}^{r} g_i) ⊙ exp(Σ_{i=s+1}^{p} g_i)
//        = prefix decay of r inside its sub-chunk ⊙ decay of s up to the pivot.
// Both exponents are direct sums of non-positive g, so both factors lie in [0, 1]: no γ⁻¹, no cancellation,
// and g = −inf gives 0. That turns each off-diagonal block into one matrix product,
//   Aqk[I, <I] = (Q_I ⊙ P_I)(K_<I ⊙ D_<I)ᵀ,   T[I, <I] = (E_I ⊙ P_I)(K_<I ⊙ D_<I)ᵀ.
// Inside a sub-chunk (the diagonal blocks) Γ_rs is accumulated pairwise, token by token.
inline constexpr Eigen::Index kSubChunk = 16;
template <typename Scalar>
void intra_chunk_scores(Mat<Scalar>& Aqk, Mat<Scalar>& T, const Mat<Scalar>& Qc, const Mat<Scalar>& Kc,
                        const Mat<Scalar>& Bc, const Mat<Scalar>& Gc, Eigen::Index sub = kSubChunk) {
  const auto L = Qc.rows(), K = Qc.cols();
  Aqk.setZero(L, L);
  T.setZero(L, L);
  const Mat<Scalar> E = Bc.cwiseProduct(Kc);  // rows e_r = b_r ⊙ k_r (Eq. 8)
  RowVec<Scalar> segment(K), decayed_key(K);
  for (Eigen::Index i0 = 0; i0 < L; i0 += sub) {
    const auto n = std::min(sub, L - i0);
    if (i0 > 0) {  // off-diagonal blocks [i0, i0+n) × [0, i0)
      Mat<Scalar> P(n, K), D(i0, K);
      segment.setZero();
      for (Eigen::Index r = 0; r < n; ++r) {  // P_r = exp(Σ_{i=i0}^{r} g_i)
        segment += Gc.row(i0 + r);
        P.row(r) = exp_exact(segment);
      }
      segment.setZero();
      for (Eigen::Index s = i0 - 1; s >= 0; --s) {  // D_s = exp(Σ_{i=s+1}^{i0-1} g_i)
        D.row(s) = exp_exact(segment);
        segment += Gc.row(s);
      }
      const Mat<Scalar> Kd = Kc.topRows(i0).cwiseProduct(D);
      Aqk.block(i0, 0, n, i0).noalias() = Qc.middleRows(i0, n).cwiseProduct(P) * Kd.transpose();
      T.block(i0, 0, n, i0).noalias() = E.middleRows(i0, n).cwiseProduct(P) * Kd.transpose();
    }
    for (Eigen::Index s = i0; s < i0 + n; ++s) {  // diagonal block, pairwise
      segment.setZero();  // Σ_{i=s+1}^{r} g_i, empty for r = s
      for (Eigen::Index r = s; r < i0 + n; ++r) {
        if (r > s) segment += Gc.row(r);
        decayed_key = exp_exact(segment) * Kc.row(s).array();  // Γ_rs ⊙ k_s
        Aqk(r, s) = Qc.row(r).cwiseProduct(decayed_key).sum();  // not .dot(): it conjugates complex numbers
        if (r > s) T(r, s) = E.row(r).cwiseProduct(decayed_key).sum();
      }
    }
  }
}

// Eq. 21: A = (I + T)⁻¹ for strictly lower triangular T, by forward substitution written out as a loop
// so the CUDA kernel has a line-by-line twin. Row r of (I + T) A = I gives
//   A_r = e_rᵀ − Σ_{s<r} T_rs A_s.
// This is the most precision-sensitive step (paper D.4): it runs in the working precision, never lower.
template <typename Scalar>
Mat<Scalar> solve_unit_lower(const Mat<Scalar>& T) {
  const auto L = T.rows();
  Mat<Scalar> A = Mat<Scalar>::Identity(L, L);
  for (Eigen::Index r = 1; r < L; ++r)
    for (Eigen::Index s = 0; s < r; ++s)
      A.row(r).head(r) -= T(r, s) * A.row(s).head(r);
  return A;
}

// Quantities of one chunk that the forward computes and the backward reuses (names as in the paper).
template <typename Scalar>
struct ChunkIntermediates {
  Mat<Scalar> gamma;  // [L, K]  γ_r = exp(G_r)                     Eq. 18
  Mat<Scalar> Ebar;   // [L, K]  Ē = γ ⊙ (B ⊙ K)                    Eq. 20
  Mat<Scalar> Z;      // [L, V]  Z = W ⊙ V                          Eq. 20
  Mat<Scalar> T;      // [L, L]  tril(Ē K̄ᵀ, −1)                     Eq. 21
  Mat<Scalar> A;      // [L, L]  (I + T)⁻¹                          Eq. 21
  Mat<Scalar> Aqk;    // [L, L]  causal scores                      Eq. 25
  Mat<Scalar> Y, U;   // [L, K], [L, V]  WY auxiliaries AĒ, AZ     Eq. 22
  Mat<Scalar> Ktail;  // [L, K]  (γ_L/γ_r) ⊙ k_r                    Eq. 41
};

template <typename Scalar>
ChunkIntermediates<Scalar> chunk_intermediates(const Mat<Scalar>& Qc, const Mat<Scalar>& Kc, const Mat<Scalar>& Vc,
                                               const Mat<Scalar>& Gc, const Mat<Scalar>& Bc, const Mat<Scalar>& Wc) {
  ChunkIntermediates<Scalar> m;
  m.gamma = cumulative_decay(Gc);                                    // Eq. 18
  m.Ebar = m.gamma.cwiseProduct(Bc).cwiseProduct(Kc);                // Eq. 20
  m.Z = Wc.cwiseProduct(Vc);                                         // Eq. 20
  intra_chunk_scores(m.Aqk, m.T, Qc, Kc, Bc, Gc);                    // Eq. 21, 25
  m.A = solve_unit_lower(m.T);                                       // Eq. 21
  // Eq. 22. A is unit lower triangular: a triangular product does half the multiply-adds of a full one.
  m.Y.noalias() = m.A.template triangularView<Eigen::UnitLower>() * m.Ebar;
  m.U.noalias() = m.A.template triangularView<Eigen::UnitLower>() * m.Z;
  m.Ktail = tail_keys(Kc, Gc);                                       // Eq. 41
  return m;
}

// Shapes as recurrent_forward_head: Q (scaled), Kk, G, Bg: [L, K]; Vv, W: [L, V]; S: [K, V] in and out.
// C >= 1 is the chunk size; the last chunk may be shorter (T not a multiple of C, or C > T).
template <typename Scalar>
void chunk_forward_head(Mat<Scalar>& O, Mat<Scalar>& S, const Mat<Scalar>& Q, const Mat<Scalar>& Kk,
                        const Mat<Scalar>& Vv, const Mat<Scalar>& G, const Mat<Scalar>& Bg, const Mat<Scalar>& W,
                        Eigen::Index C) {
  const auto Ltot = Q.rows();
  O.resize(Ltot, Vv.cols());
  for (Eigen::Index c0 = 0; c0 < Ltot; c0 += C) {
    const auto L = std::min<Eigen::Index>(C, Ltot - c0);
    const Mat<Scalar> Qc = Q.middleRows(c0, L), Kc = Kk.middleRows(c0, L), Vc = Vv.middleRows(c0, L);
    const Mat<Scalar> Gc = G.middleRows(c0, L), Bc = Bg.middleRows(c0, L), Wc = W.middleRows(c0, L);
    const ChunkIntermediates<Scalar> m = chunk_intermediates(Qc, Kc, Vc, Gc, Bc, Wc);

    const Mat<Scalar> R = m.U - m.Y * S;                              // R = U − Y S[n]           Eq. 35
    const Mat<Scalar> Qgamma = m.gamma.cwiseProduct(Qc);              // rows γ_r ⊙ q_r          Eq. 24
    O.middleRows(c0, L).noalias() = Qgamma * S;                       // O[n] = Qγ S[n] + Aqk R   Eq. 24
    O.middleRows(c0, L).noalias() += m.Aqk.template triangularView<Eigen::Lower>() * R;
    const RowVec<Scalar> gamma_L = m.gamma.row(L - 1);
    S = gamma_L.transpose().asDiagonal() * S;                         // Diag(γ_C) S[n]          Eq. 23
    S.noalias() += m.Ktail.transpose() * R;                           //   + Ktailᵀ (U − Y S[n])
  }
}

}  // namespace gdn2
