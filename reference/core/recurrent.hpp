// gdn2 reference — the token recurrence (paper Eq. 8-10), one head of one sequence.
//
// This is REF in docs/numerics.md: every other path (the chunkwise WY form, the CUDA kernels) is checked
// against it. It is written to read like Eq. 9, one line per step, and to be exact for g = -inf
// (α = exp(-inf) = 0 multiplies S, nothing is ever divided by α).
#pragma once

#include "eigen_types.hpp"

namespace gdn2 {

// The named terms of one step of Eq. 9, kept when someone wants to look at them (traces for the viewer and
// notebooks). They are the quantities the paper names: α_t, e_t = b_t ⊙ k_t, z_t = w_t ⊙ v_t, r_t = S̄_tᵀ e_t.
template <typename Scalar>
struct StepTerms {
  RowVec<Scalar> alpha, e, z, r;
};

// One token: S ← (I − k eᵀ) Diag(α) S + k zᵀ (Eq. 9), o = Sᵀ q. q is already multiplied by `scale`.
// Row vectors of length K (q, k, g, b) or V (v, w). `terms`, when given, receives the step's named terms.
template <typename Scalar, typename RowQ, typename RowK, typename RowV, typename RowG, typename RowB, typename RowW,
          typename RowO>
void recurrent_step(Mat<Scalar>& S, RowO&& o, const RowQ& q, const RowK& k, const RowV& v, const RowG& g,
                    const RowB& b, const RowW& w, StepTerms<Scalar>* terms = nullptr) {
  const RowVec<Scalar> alpha = exp_exact(g);                     // α_t = exp(g_t)         Eq. 12
  const RowVec<Scalar> e = b.cwiseProduct(k);                    // e_t = b_t ⊙ k_t        Eq. 8
  const RowVec<Scalar> z = w.cwiseProduct(v);                    // z_t = w_t ⊙ v_t        Eq. 8
  S = alpha.transpose().asDiagonal() * S;                        // S̄_t = Diag(α_t) S_{t-1} Eq. 9
  const RowVec<Scalar> r = e * S;                                // r_tᵀ = (S̄_tᵀ e_t)ᵀ     Eq. 9
  S.noalias() += k.transpose() * (z - r);                        // S_t = S̄_t + k_t (z_t − r_t)ᵀ
  o.noalias() = q * S;                                           // o_tᵀ = (S_tᵀ q_t)ᵀ
  if (terms) *terms = {alpha, e, z, r};
}

// Shapes: Q, Kk, G, Bg: [L, K]; Vv, W: [L, V]; S: [K, V] (in: S_0, out: S_L); O: [L, V].
// Q is already multiplied by `scale`. Kk/Vv carry a letter twice to keep K and V free for the dimensions.
template <typename Scalar>
void recurrent_forward_head(Mat<Scalar>& O, Mat<Scalar>& S, const Mat<Scalar>& Q, const Mat<Scalar>& Kk,
                            const Mat<Scalar>& Vv, const Mat<Scalar>& G, const Mat<Scalar>& Bg,
                            const Mat<Scalar>& W) {
  const auto L = Q.rows();
  O.resize(L, Vv.cols());
  for (Eigen::Index t = 0; t < L; ++t)
    recurrent_step(S, O.row(t), Q.row(t), Kk.row(t), Vv.row(t), G.row(t), Bg.row(t), W.row(t));
}

}  // namespace gdn2
