// gdn2 reference — independent oracles for the tied-gate reductions (paper Appendix A.5).
//
// Written from the scalar-gate update equations of KDA (paper Eq. 7) and Gated DeltaNet (Table 1),
// with a scalar β and no Gated DeltaNet-2 code path, so that "tying b = w = β·1 reproduces KDA" is checked
// against something that was not derived from the thing being checked.
#pragma once

#include "eigen_types.hpp"

namespace gdn2::oracle {

// KDA, Eq. 7: S_t = (I − β_t k_t k_tᵀ) Diag(α_t) S_{t−1} + β_t k_t v_tᵀ,  o_t = S_tᵀ q_t.
// Q (scaled), Kk, G: [L, K]; beta: [L]; Vv: [L, V]; S: [K, V] in and out.
template <typename Scalar>
Mat<Scalar> kda_recurrence(Mat<Scalar>& S, const Mat<Scalar>& Q, const Mat<Scalar>& Kk, const Mat<Scalar>& Vv,
                           const Mat<Scalar>& G, const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& beta) {
  const auto K = Kk.cols();
  Mat<Scalar> O(Q.rows(), Vv.cols());
  for (Eigen::Index t = 0; t < Q.rows(); ++t) {
    const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> k = Kk.row(t).transpose();
    const Mat<Scalar> D = exp_exact(G.row(t)).matrix().asDiagonal();
    const Mat<Scalar> I = Mat<Scalar>::Identity(K, K);
    S = (I - beta(t) * k * k.transpose()) * D * S + beta(t) * k * Vv.row(t);
    O.row(t) = (S.transpose() * Q.row(t).transpose()).transpose();
  }
  return O;
}

// Gated DeltaNet (Table 1): S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ with a scalar α_t = exp(g_t).
template <typename Scalar>
Mat<Scalar> gated_deltanet_recurrence(Mat<Scalar>& S, const Mat<Scalar>& Q, const Mat<Scalar>& Kk,
                                      const Mat<Scalar>& Vv, const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& g,
                                      const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& beta) {
  const auto K = Kk.cols();
  Mat<Scalar> O(Q.rows(), Vv.cols());
  for (Eigen::Index t = 0; t < Q.rows(); ++t) {
    const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> k = Kk.row(t).transpose();
    const Mat<Scalar> I = Mat<Scalar>::Identity(K, K);
    S = std::exp(g(t)) * (I - beta(t) * k * k.transpose()) * S + beta(t) * k * Vv.row(t);
    O.row(t) = (S.transpose() * Q.row(t).transpose()).transpose();
  }
  return O;
}

}  // namespace gdn2::oracle
