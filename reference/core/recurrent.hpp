// gdn2 reference — the token recurrence (paper Eq. 8-10), one head of one sequence.
//
// This is REF in NUMERICS.md: every other path (the chunkwise WY form, the CUDA kernels) is checked
// against it. It is written to read like Eq. 9, one line per step, and to be exact for g = -inf
// (α = exp(-inf) = 0 multiplies S, nothing is ever divided by α).
#pragma once

#include "eigen_types.hpp"

namespace gdn2 {

// Shapes: Q, Kk, G, Bg: [L, K]; Vv, W: [L, V]; S: [K, V] (in: S_0, out: S_L); O: [L, V].
// Q is already multiplied by `scale`. Kk/Vv carry a letter twice to keep K and V free for the dimensions.
template <typename Scalar>
void recurrent_forward_head(Mat<Scalar>& O, Mat<Scalar>& S, const Mat<Scalar>& Q, const Mat<Scalar>& Kk,
                            const Mat<Scalar>& Vv, const Mat<Scalar>& G, const Mat<Scalar>& Bg,
                            const Mat<Scalar>& W) {
  const auto L = Q.rows();
  O.resize(L, Vv.cols());
  for (Eigen::Index t = 0; t < L; ++t) {
    const RowVec<Scalar> alpha = exp_exact(G.row(t));                     // α_t = exp(g_t)         Eq. 12
    const RowVec<Scalar> e = Bg.row(t).cwiseProduct(Kk.row(t));              // e_t = b_t ⊙ k_t        Eq. 8
    const RowVec<Scalar> z = W.row(t).cwiseProduct(Vv.row(t));               // z_t = w_t ⊙ v_t        Eq. 8
    S = alpha.transpose().asDiagonal() * S;                                  // S̄_t = Diag(α_t) S_{t-1} Eq. 9
    const RowVec<Scalar> r = e * S;                                          // r_tᵀ = (S̄_tᵀ e_t)ᵀ     Eq. 9
    S.noalias() += Kk.row(t).transpose() * (z - r);                          // S_t = S̄_t + k_t (z_t − r_t)ᵀ
    O.row(t).noalias() = Q.row(t) * S;                                       // o_tᵀ = (S_tᵀ q_t)ᵀ
  }
}

}  // namespace gdn2
