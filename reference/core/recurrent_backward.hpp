// gdn2 reference — reverse-time backward of the token recurrence (paper Eq. 9), one head of one sequence.
//
// The forward is not invertible (α = 0 erases), so states are recomputed: the forward stores S at every
// `checkpoint`-th token, and each block is replayed before it is walked backwards. Memory: T/checkpoint + checkpoint
// states instead of T.
#pragma once

#include <vector>

#include "eigen_types.hpp"

namespace gdn2 {

// Shapes as recurrent_forward_head; Q is already scaled. dO: [L, V]; dS: [K, V] holds dL/dS_L on entry and
// dL/dS_0 on exit. Outputs (overwritten): dQ (w.r.t. the scaled Q), dK, dG, dB: [L, K]; dV, dW: [L, V].
template <typename Scalar>
void recurrent_backward_head(Mat<Scalar>& dQ, Mat<Scalar>& dK, Mat<Scalar>& dV, Mat<Scalar>& dG, Mat<Scalar>& dB,
                             Mat<Scalar>& dW, Mat<Scalar>& dS, const Mat<Scalar>& Q, const Mat<Scalar>& Kk,
                             const Mat<Scalar>& Vv, const Mat<Scalar>& G, const Mat<Scalar>& Bg, const Mat<Scalar>& W,
                             const Mat<Scalar>& S0, const Mat<Scalar>& dO, Eigen::Index checkpoint = 64) {
  const auto L = Q.rows(), K = Q.cols(), V = Vv.cols();
  dQ.setZero(L, K), dK.setZero(L, K), dG.setZero(L, K), dB.setZero(L, K), dV.setZero(L, V), dW.setZero(L, V);
  // One forward step (Eq. 9), returning S̄_t and S_t.
  auto step = [&](const Mat<Scalar>& S_prev, Eigen::Index t, Mat<Scalar>& S_bar, Mat<Scalar>& S_new) {
    S_bar = exp_exact(G.row(t)).matrix().transpose().asDiagonal() * S_prev;
    const RowVec<Scalar> r = Bg.row(t).cwiseProduct(Kk.row(t)) * S_bar;
    S_new = S_bar + Kk.row(t).transpose() * (W.row(t).cwiseProduct(Vv.row(t)) - r);
  };
  std::vector<Mat<Scalar>> checkpoints;  // S at tokens 0, checkpoint, 2·checkpoint, ...
  Mat<Scalar> S = S0, S_bar, S_new;
  for (Eigen::Index t = 0; t < L; ++t) {
    if (t % checkpoint == 0) checkpoints.push_back(S);
    step(S, t, S_bar, S_new);
    S = S_new;
  }
  for (Eigen::Index t0 = (L - 1) / checkpoint * checkpoint; L > 0 && t0 >= 0; t0 -= checkpoint) {
    const Eigen::Index t1 = std::min(L, t0 + checkpoint);
    std::vector<Mat<Scalar>> bar(t1 - t0), next(t1 - t0);  // S̄_t, S_t of the block
    Mat<Scalar> s = checkpoints[t0 / checkpoint];
    for (Eigen::Index t = t0; t < t1; ++t) {
      step(s, t, bar[t - t0], next[t - t0]);
      s = next[t - t0];
    }
    for (Eigen::Index t = t1 - 1; t >= t0; --t) {
      const Mat<Scalar>& Sb = bar[t - t0];
      const Mat<Scalar>& St = next[t - t0];
      const RowVec<Scalar> e = Bg.row(t).cwiseProduct(Kk.row(t));
      const RowVec<Scalar> z = W.row(t).cwiseProduct(Vv.row(t));
      const RowVec<Scalar> r = e * Sb;
      // o_t = S_tᵀ q_t
      dQ.row(t) = (St * dO.row(t).transpose()).transpose();
      dS.noalias() += Q.row(t).transpose() * dO.row(t);
      // S_t = S̄_t + k_t (z_t − r_t)ᵀ
      const RowVec<Scalar> u = Kk.row(t) * dS;  // dL/d(z_t − r_t)
      dK.row(t) = (dS * (z - r).transpose()).transpose();
      Mat<Scalar> dS_bar = dS;
      // r_t = S̄_tᵀ e_t with dr = −u
      dS_bar.noalias() -= e.transpose() * u;
      const RowVec<Scalar> de = -(Sb * u.transpose()).transpose();
      // z_t = w_t ⊙ v_t, e_t = b_t ⊙ k_t (Eq. 8)
      dW.row(t) = u.cwiseProduct(Vv.row(t));
      dV.row(t) = u.cwiseProduct(W.row(t));
      dB.row(t) = de.cwiseProduct(Kk.row(t));
      dK.row(t) += de.cwiseProduct(Bg.row(t));
      // S̄_t = Diag(exp g_t) S_{t−1}: dg_t = rowsum(dS̄ ⊙ S̄) (never dS̄ ⊙ S_{t−1} · α, which is 0·inf-prone)
      dG.row(t) = dS_bar.cwiseProduct(Sb).rowwise().sum().transpose();
      dS = exp_exact(G.row(t)).matrix().transpose().asDiagonal() * dS_bar;
    }
  }
}

}  // namespace gdn2
