// gdn2 reference — the Eigen types every per-head function uses.
#pragma once

#include <Eigen/Dense>
#include <cmath>
#include <complex>

namespace gdn2 {

// One head of one sequence: tokens along rows, channels along columns ([L, K] or [L, V]), row-major so a
// row is a token exactly as in the [B, T, H, K] tensor.
template <typename Scalar>
using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename Scalar>
using RowVec = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

// exp() of every coefficient with the C library's std::exp, which is accurate to the last bit and gives exactly 0
// for exp(−inf) and for arguments below −745. Eigen's vectorised .exp() clamps its argument near −709.4 and returns
// about 1e-308 there instead of 0 (measured with Eigen 3.4): a full reset would leak ~1e-308 into every gradient
// before it, and "exactly 0 where the decay erased everything" would be false.
template <typename Derived>
auto exp_exact(const Eigen::DenseBase<Derived>& x) {
  return x.derived().array().unaryExpr([](const typename Derived::Scalar& v) {
    using std::exp;
    return exp(v);
  });
}

}  // namespace gdn2
