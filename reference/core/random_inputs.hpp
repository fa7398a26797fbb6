// gdn2 reference — deterministic random layer inputs for the demo, the tests and the benchmarks.
//
// Built on std::mt19937_64's raw output (fully specified by the C++ standard) with our own uniform and
// Box-Muller normal, so a seed gives the same numbers with every compiler and standard library
// (std::normal_distribution does not).
#pragma once

#include <cmath>
#include <random>

#include "forward.hpp"

namespace gdn2 {

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : engine_(seed) {}
  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }  // [0, 1)
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  double normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();  // u1 ∈ (0, 1]
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }

 private:
  std::mt19937_64 engine_;
};

// Inputs with the docs/numerics.md defaults: unit-norm q and k, v ~ N(0, 1), b, w ~ U(0, 1); g from `gate`.
template <typename Scalar, typename GateFn>
Layer<Scalar> random_layer(Rng& rng, index_t B, index_t T, index_t H, index_t HV, index_t K, index_t V,
                                 GateFn gate, bool with_h0 = false, index_t N = -1) {
  Layer<Scalar> x{Tensor<Scalar>({B, T, H, K}), Tensor<Scalar>({B, T, H, K}), Tensor<Scalar>({B, T, HV, V}),
                        Tensor<Scalar>({B, T, H, K}), Tensor<Scalar>({B, T, H, K}), Tensor<Scalar>({B, T, HV, V}), {}};
  for (Tensor<Scalar>* unit : {&x.q, &x.k}) {
    for (auto& e : unit->data) e = static_cast<Scalar>(rng.normal());
    for (index_t i = 0; i < unit->numel(); i += K) {
      double ss = 0;
      for (index_t d = 0; d < K; ++d) ss += double(unit->data[i + d]) * double(unit->data[i + d]);
      for (index_t d = 0; d < K; ++d) unit->data[i + d] = static_cast<Scalar>(unit->data[i + d] / std::sqrt(ss));
    }
  }
  for (auto& e : x.v.data) e = static_cast<Scalar>(rng.normal());
  for (auto& e : x.b.data) e = static_cast<Scalar>(rng.uniform());
  for (auto& e : x.w.data) e = static_cast<Scalar>(rng.uniform());
  for (auto& e : x.g.data) e = static_cast<Scalar>(gate(rng));
  if (with_h0) {
    x.h0 = Tensor<Scalar>({N < 0 ? B : N, HV, K, V});
    for (auto& e : x.h0.data) e = static_cast<Scalar>(0.5 * rng.normal());
  }
  return x;
}

// Replaces g and b of x by gates drawn per value head, [B,T,HV,K] (g from `gate`, b ~ U(0, 1)): every value head
// of a group gets its own gates, as flash-linear-attention's fused_recurrent_gdn2 takes them.
template <typename Scalar, typename GateFn>
void random_value_head_gates(Rng& rng, Layer<Scalar>& x, GateFn gate) {
  const std::vector<index_t> shape = {x.q.shape[0], x.q.shape[1], x.v.shape[2], x.q.shape[3]};
  x.g = Tensor<Scalar>(shape, "g");
  x.b = Tensor<Scalar>(shape, "b");
  for (auto& e : x.b.data) e = static_cast<Scalar>(rng.uniform());
  for (auto& e : x.g.data) e = static_cast<Scalar>(gate(rng));
}

// Normwise relative error ‖x − ref‖₂ / ‖ref‖₂, the "ratio" of docs/numerics.md (and of flash-linear-attention).
template <typename A, typename Bt>
double ratio(const Tensor<A>& x, const Tensor<Bt>& ref) {
  if (x.shape != ref.shape) throw std::invalid_argument("ratio: shapes differ " + shape_str(x.shape) + " vs " + shape_str(ref.shape));
  double num = 0, den = 0;
  for (index_t i = 0; i < x.numel(); ++i) {
    const double r = static_cast<double>(ref.data[i]), e = static_cast<double>(x.data[i]) - r;
    num += e * e;
    den += r * r;
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

}  // namespace gdn2
