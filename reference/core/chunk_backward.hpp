// gdn2 reference — the gate-aware chunkwise backward (paper Sec. 3.4, Appendix B, Eq. 49-84), one head of one
// sequence.
//
// Same rule as the forward: no γ⁻¹ (the paper's K̄) is formed. Where Appendix B differentiates through K̄ (Eq. 67-72,
// 77-79), this code differentiates the entries T_rs, (A_qk)_rs and (K_tail)_r directly, each of which carries only a
// segment decay exp(Σ_{i=s+1}^{r} g_i) ≤ 1. The derivative of such a factor with respect to g_i is the factor itself
// for every i in the segment, so those contributions to dg are summed over the segments that contain i — never as
// a difference of cumulative sums, which would not be exactly 0 where g = −inf erased everything.
#pragma once

#include <vector>

#include "chunk.hpp"

namespace gdn2 {

// Backward of intra_chunk_scores (Eq. 67-70 written entrywise). With W_rs = Γ_rs ⊙ (dAqk_rs q_r + dT_rs e_r):
//   dk_s += W_rs,    dq_r += dAqk_rs Γ_rs ⊙ k_s,    de_r += dT_rs Γ_rs ⊙ k_s,
//   dg_i += Σ_{s < i ≤ r} W_rs ⊙ k_s   (Γ_rs depends on g_{s+1..r}).
// Results are added to dQc, dKc, dE, dGc.
template <typename Scalar>
void intra_chunk_scores_backward(Mat<Scalar>& dQc, Mat<Scalar>& dKc, Mat<Scalar>& dE, Mat<Scalar>& dGc,
                                 const Mat<Scalar>& dAqk, const Mat<Scalar>& dT, const Mat<Scalar>& Qc,
                                 const Mat<Scalar>& Kc, const Mat<Scalar>& E, const Mat<Scalar>& Gc) {
  const auto L = Qc.rows(), K = Qc.cols();
  RowVec<Scalar> segment(K), decay(K), Wrs(K), suffix(K);
  Mat<Scalar> X(L, K);  // X_r = W_rs ⊙ k_s for the current s
  for (Eigen::Index s = 0; s < L; ++s) {
    segment.setZero();
    for (Eigen::Index r = s; r < L; ++r) {
      if (r > s) segment += Gc.row(r);
      decay = exp_exact(segment);  // Γ_rs
      Wrs = dAqk(r, s) * Qc.row(r);
      if (r > s) Wrs += dT(r, s) * E.row(r);
      Wrs = Wrs.cwiseProduct(decay);
      dKc.row(s) += Wrs;
      dQc.row(r) += dAqk(r, s) * decay.cwiseProduct(Kc.row(s));
      if (r > s) dE.row(r) += dT(r, s) * decay.cwiseProduct(Kc.row(s));
      X.row(r) = Wrs.cwiseProduct(Kc.row(s));
    }
    suffix.setZero();
    for (Eigen::Index i = L - 1; i > s; --i) {  // dg_i += Σ_{r ≥ i} X_r
      suffix += X.row(i);
      dGc.row(i) += suffix;
    }
  }
}

// Shapes as chunk_forward_head; Q is already scaled. dO: [L, V]; dS: [K, V] holds dL/dS_T on entry and dL/dS_0 on
// exit. Outputs (overwritten): dQ (w.r.t. the scaled Q), dK, dG, dB: [L, K]; dV, dW: [L, V].
// The forward is recomputed chunk by chunk (the paper's memory-saving path): only the chunk-start states are kept.
template <typename Scalar>
void chunk_backward_head(Mat<Scalar>& dQ, Mat<Scalar>& dK, Mat<Scalar>& dV, Mat<Scalar>& dG, Mat<Scalar>& dB,
                         Mat<Scalar>& dW, Mat<Scalar>& dS, const Mat<Scalar>& Q, const Mat<Scalar>& Kk,
                         const Mat<Scalar>& Vv, const Mat<Scalar>& G, const Mat<Scalar>& Bg, const Mat<Scalar>& W,
                         const Mat<Scalar>& S0, const Mat<Scalar>& dO, Eigen::Index C) {
  const auto Ltot = Q.rows(), K = Q.cols(), V = Vv.cols();
  dQ.setZero(Ltot, K), dK.setZero(Ltot, K), dG.setZero(Ltot, K), dB.setZero(Ltot, K), dV.setZero(Ltot, V),
      dW.setZero(Ltot, V);
  // Forward pass for the chunk-start states S[n].
  std::vector<Mat<Scalar>> starts;
  {
    Mat<Scalar> S = S0, O;
    for (Eigen::Index c0 = 0; c0 < Ltot; c0 += C) {
      starts.push_back(S);
      const auto L = std::min<Eigen::Index>(C, Ltot - c0);
      chunk_forward_head<Scalar>(O, S, Q.middleRows(c0, L), Kk.middleRows(c0, L), Vv.middleRows(c0, L),
                                 G.middleRows(c0, L), Bg.middleRows(c0, L), W.middleRows(c0, L), C);
    }
  }
  for (Eigen::Index n = Eigen::Index(starts.size()) - 1; n >= 0; --n) {
    const Eigen::Index c0 = n * C, L = std::min<Eigen::Index>(C, Ltot - c0);
    const Mat<Scalar> Qc = Q.middleRows(c0, L), Kc = Kk.middleRows(c0, L), Vc = Vv.middleRows(c0, L);
    const Mat<Scalar> Gc = G.middleRows(c0, L), Bc = Bg.middleRows(c0, L), Wc = W.middleRows(c0, L);
    const Mat<Scalar> dOc = dO.middleRows(c0, L);
    const Mat<Scalar>& S0n = starts[n];
    const ChunkIntermediates<Scalar> m = chunk_intermediates(Qc, Kc, Vc, Gc, Bc, Wc);
    const Mat<Scalar> E = Bc.cwiseProduct(Kc);
    const Mat<Scalar> R = m.U - m.Y * S0n;                 // Eq. 49
    const Mat<Scalar> Qgamma = m.gamma.cwiseProduct(Qc);
    const RowVec<Scalar> gamma_L = m.gamma.row(L - 1);
    const Mat<Scalar> dSC = dS;                            // dL/dS at the end of this chunk

    Mat<Scalar> dGc = Mat<Scalar>::Zero(L, K);             // contributions to dg, summed at the end
    Mat<Scalar> dGcum = Mat<Scalar>::Zero(L, K);           // dL/dG_r (G_r = Σ_{i≤r} g_i), Eq. 82
    // B.1 output path (Eq. 50, 53-56); the causal mask is applied to dA_qk.
    const Mat<Scalar> dAqk = (dOc * R.transpose()).template triangularView<Eigen::Lower>();  // Eq. 53
    Mat<Scalar> dR = m.Aqk.transpose() * dOc;                                                 // Eq. 54
    const Mat<Scalar> dQgamma = dOc * S0n.transpose();                                        // Eq. 55
    dS = Qgamma.transpose() * dOc;                                                            // Eq. 56
    // B.1 state path (Eq. 51, 57-60).
    dR.noalias() += m.Ktail * dSC;                                                            // Eq. 57
    const Mat<Scalar> dKtail = R * dSC.transpose();                                           // Eq. 58
    dS.noalias() += gamma_L.transpose().asDiagonal() * dSC;                                   // Eq. 59
    dGcum.row(L - 1) += dSC.cwiseProduct(S0n).rowwise().sum().transpose().cwiseProduct(gamma_L);      // Eq. 60
    // Residual (Eq. 61-63).
    const Mat<Scalar>& dU = dR;                                                               // Eq. 61
    const Mat<Scalar> dY = -dR * S0n.transpose();                                             // Eq. 62
    dS.noalias() -= m.Y.transpose() * dR;                                                     // Eq. 63
    // B.2 gate-aware WY inverse path: the gates sit inside the dA accumulation (Eq. 64-65, B.5).
    Mat<Scalar> dA = dU * m.Z.transpose();                                                    // Eq. 64
    dA.noalias() += dY * m.Ebar.transpose();                                                  // Eq. 65
    const Mat<Scalar> dZ = m.A.transpose() * dU;                                              // Eq. 64
    Mat<Scalar> dEbar = m.A.transpose() * dY;                                                 // Eq. 65
    const Mat<Scalar> dT =
        (-(m.A.transpose() * dA * m.A.transpose())).template triangularView<Eigen::StrictlyLower>();  // Eq. 66
    // B.2-B.3 through T and A_qk (Eq. 67-70), entrywise with segment decays.
    Mat<Scalar> dQc = Mat<Scalar>::Zero(L, K), dKc = Mat<Scalar>::Zero(L, K), dE = Mat<Scalar>::Zero(L, K);
    intra_chunk_scores_backward(dQc, dKc, dE, dGc, dAqk, dT, Qc, Kc, E, Gc);
    // B.3 tail keys (Eq. 71-72): (K_tail)_r = exp(Σ_{i>r} g_i) ⊙ k_r.
    {
      RowVec<Scalar> prefix = RowVec<Scalar>::Zero(K);  // Σ_{r<i} dKtail_r ⊙ Ktail_r
      for (Eigen::Index i = 0; i < L; ++i) {
        dGc.row(i) += prefix;
        prefix += dKtail.row(i).cwiseProduct(m.Ktail.row(i));
      }
      const Mat<Scalar> tail_decay = tail_keys<Scalar>(Mat<Scalar>::Ones(L, K), Gc);
      dKc += dKtail.cwiseProduct(tail_decay);
    }
    // B.4 elementwise gates (Eq. 73-76, 80-81); dγ_r ⊙ γ_r is accumulated as dG_r.
    dW.middleRows(c0, L) = dZ.cwiseProduct(Vc);                                               // Eq. 73
    dV.middleRows(c0, L) = dZ.cwiseProduct(Wc);                                               // Eq. 73
    dE += dEbar.cwiseProduct(m.gamma);                                                        // Eq. 74-75 (via E = B⊙K)
    dGcum += dEbar.cwiseProduct(m.Ebar);                                                      // Eq. 76 · γ
    dQc += dQgamma.cwiseProduct(m.gamma);                                                     // Eq. 80
    dGcum += dQgamma.cwiseProduct(Qgamma);                                                    // Eq. 81 · γ
    dB.middleRows(c0, L) = dE.cwiseProduct(Kc);                                               // Eq. 74
    dKc += dE.cwiseProduct(Bc);                                                               // Eq. 75
    // Eq. 82: dg_i = Σ_{r≥i} dG_r, a reverse cumulative sum over the chunk.
    RowVec<Scalar> suffix = RowVec<Scalar>::Zero(K);
    for (Eigen::Index i = L - 1; i >= 0; --i) {
      suffix += dGcum.row(i);
      dGc.row(i) += suffix;
    }
    dQ.middleRows(c0, L) = dQc;
    dK.middleRows(c0, L) = dKc;
    dG.middleRows(c0, L) = dGc;
  }
}

}  // namespace gdn2
