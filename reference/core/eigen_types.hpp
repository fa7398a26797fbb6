// gdn2 reference — the Eigen types every per-head function uses.
#pragma once

#include <Eigen/Dense>

namespace gdn2 {

// One head of one sequence: tokens along rows, channels along columns ([L, K] or [L, V]), row-major so a
// row is a token exactly as in the [B, T, H, K] tensor.
template <typename Scalar>
using Mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename Scalar>
using RowVec = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

}  // namespace gdn2
