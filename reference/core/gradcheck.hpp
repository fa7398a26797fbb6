// gdn2 reference — independent oracles for the backward: central finite differences in float64 and complex-step
// derivatives through the forward instantiated on std::complex<double> (docs/numerics.md 16).
//
// Both differentiate the scalar loss L = <do, o> + <dht, ht>, whose gradient is exactly what backward() returns
// for upstream gradients do and dht. A directional derivative along u is compared with <grad, u>:
//   finite differences: (L(x + h∘u) − L(x − h∘u)) / 2 with h_i = 1e-5·max(1, |x_i|), compared with <grad, h∘u>/1;
//   complex step:       Im L(x + i·ε·u) / ε with ε = 1e-20 — no subtraction, so it is exact to rounding.
// The error is reported relative to ‖grad‖₂·‖u‖₂ (the size of a typical directional derivative), so that a
// direction along which the derivative happens to vanish does not inflate it.
#pragma once

#include <complex>
#include <string>
#include <vector>

#include "backward.hpp"
#include "random_inputs.hpp"

namespace gdn2 {

template <typename Scalar>
Scalar layer_loss(Form form, const Layer<Scalar>& x, const Tensor<Scalar>& do_, const Tensor<Scalar>& dht,
                  const ForwardOptions& opt) {
  Tensor<Scalar> o, ht;
  detail::forward_unchecked(form, o, ht, x.q, x.k, x.v, x.g, x.b, x.w, x.h0, x.cu_seqlens, opt);
  Scalar sum = 0;
  for (index_t i = 0; i < o.numel() && !do_.empty(); ++i) sum += o.data[i] * do_.data[i];
  for (index_t i = 0; i < ht.numel() && !dht.empty(); ++i) sum += ht.data[i] * dht.data[i];
  return sum;
}

inline const char* kLayerTensorNames[] = {"q", "k", "v", "g", "b", "w", "h0"};

template <typename Scalar>
Tensor<Scalar>& layer_tensor(Layer<Scalar>& x, int i) {
  Tensor<Scalar>* all[] = {&x.q, &x.k, &x.v, &x.g, &x.b, &x.w, &x.h0};
  return *all[i];
}
template <typename Scalar>
const Tensor<Scalar>& layer_tensor(const Layer<Scalar>& x, int i) {
  return layer_tensor(const_cast<Layer<Scalar>&>(x), i);
}
template <typename Scalar>
const Tensor<Scalar>& gradient_tensor(const Gradients<Scalar>& g, int i) {
  const Tensor<Scalar>* all[] = {&g.dq, &g.dk, &g.dv, &g.dg, &g.db, &g.dw, &g.dh0};
  return *all[i];
}

struct OracleResult {
  std::string tensor;
  int directions = 0;
  double finite_difference = 0;  // worst relative error over the directions
  double complex_step = 0;
};

// Checks backward(form) for every input tensor of x along `random_directions` random directions plus the single
// elements at tokens `tokens` (of a random head and channel). Uses g's and b's real extension beyond their
// ranges: the math is analytic there, and central differences at g = 0 or b = 1 must step outside.
inline std::vector<OracleResult> gradient_oracles(Form form, const Layer<double>& x, const Tensor<double>& do_,
                                                  const Tensor<double>& dht, const ForwardOptions& opt, Rng& rng,
                                                  int random_directions, const std::vector<index_t>& tokens) {
  const Gradients<double> grad = backward(form, x, do_, dht, opt);
  auto to_complex = [](const Tensor<double>& t) { return cast<std::complex<double>>(t); };
  Layer<std::complex<double>> xc{to_complex(x.q), to_complex(x.k), to_complex(x.v), to_complex(x.g),
                                 to_complex(x.b), to_complex(x.w), to_complex(x.h0), x.cu_seqlens};
  const auto doc = to_complex(do_), dhtc = to_complex(dht);
  std::vector<OracleResult> results;
  for (int j = 0; j < 7; ++j) {
    const Tensor<double>& X = layer_tensor(x, j);
    if (X.empty() || X.numel() == 0) continue;
    const Tensor<double>& D = gradient_tensor(grad, j);
    OracleResult res{kLayerTensorNames[j]};
    std::vector<Tensor<double>> directions;
    for (int r = 0; r < random_directions; ++r) {
      Tensor<double> u(X.shape);
      for (auto& e : u.data) e = rng.normal();
      directions.push_back(u);
    }
    if (j != 6)  // single elements at the chunk and sub-chunk boundaries
      for (index_t t : tokens) {
        if (t < 0 || t >= X.shape[1]) continue;
        Tensor<double> u(X.shape);
        const index_t n = index_t(rng.uniform() * double(X.shape[0])), h = index_t(rng.uniform() * double(X.shape[2]));
        const index_t c = index_t(rng.uniform() * double(X.shape[3]));
        u.data[offset_bthd(n, t, h, X.shape[1], X.shape[2], X.shape[3]) + c] = 1.0;
        directions.push_back(u);
      }
    double grad_norm = 0;
    for (double e : D.data) grad_norm += e * e;
    grad_norm = std::sqrt(grad_norm);
    for (const auto& u : directions) {
      double u_norm = 0, h_norm = 0, analytic = 0, analytic_scaled = 0;
      Layer<double> plus = x, minus = x;
      Layer<std::complex<double>> xi = xc;
      const double eps = 1e-20;
      for (index_t i = 0; i < u.numel(); ++i) {
        const double h = 1e-5 * std::max(1.0, std::abs(X.data[i]));
        layer_tensor(plus, j).data[i] += h * u.data[i];
        layer_tensor(minus, j).data[i] -= h * u.data[i];
        layer_tensor(xi, j).data[i] += std::complex<double>(0, eps * u.data[i]);
        u_norm += u.data[i] * u.data[i];
        h_norm += (h * u.data[i]) * (h * u.data[i]);
        analytic += D.data[i] * u.data[i];
        analytic_scaled += D.data[i] * h * u.data[i];
      }
      u_norm = std::sqrt(u_norm);
      const double fd = (layer_loss(form, plus, do_, dht, opt) - layer_loss(form, minus, do_, dht, opt)) / 2;
      const double cs = std::imag(layer_loss(form, xi, doc, dhtc, opt)) / eps;
      // fd estimates <grad, h∘u>; its error is taken relative to ‖grad‖·‖h∘u‖.
      const double denom_fd = std::max(grad_norm * std::sqrt(h_norm), 1e-300);
      const double denom_cs = std::max(grad_norm * u_norm, 1e-300);
      res.finite_difference = std::max(res.finite_difference, std::abs(fd - analytic_scaled) / denom_fd);
      res.complex_step = std::max(res.complex_step, std::abs(cs - analytic) / denom_cs);
      ++res.directions;
    }
    results.push_back(res);
  }
  return results;
}

}  // namespace gdn2
