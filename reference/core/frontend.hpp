// gdn2 reference — the optional front-end in front of the recurrence (paper Eq. 11-12, D.2)
// and the tied-gate variants (paper Sec. 3.1, Appendix A.5). Forward only here; each step is elementwise
// or per token, so its backward is a local vector-Jacobian product.
#pragma once

#include <cmath>

#include "options.hpp"
#include "tensor.hpp"
#include "validate.hpp"

namespace gdn2 {

// x ← x / sqrt(Σ x² + 1e-6) over the last axis (paper D.2; the epsilon of flash-linear-attention).
template <typename Scalar>
void l2normalize_last_axis(Tensor<Scalar>& x) {
  const index_t D = x.shape.back();
  for (index_t i = 0; i < x.numel(); i += D) {
    Scalar ss = 0;
    for (index_t d = 0; d < D; ++d) ss += x.data[i + d] * x.data[i + d];
    const Scalar inv = Scalar(1) / std::sqrt(ss + Scalar(1e-6));
    for (index_t d = 0; d < D; ++d) x.data[i + d] *= inv;
  }
}

template <typename Scalar>
Scalar sigmoid(Scalar x) {
  // Two branches so that exp never overflows: σ(x) = 1/(1+e^{-x}) = e^{x}/(1+e^{x}).
  if (x >= 0) return Scalar(1) / (Scalar(1) + std::exp(-x));
  const Scalar e = std::exp(x);
  return e / (Scalar(1) + e);
}

template <typename Scalar>
Scalar softplus(Scalar x) {
  // log(1 + e^x) without overflow for large x and without losing 1 + tiny for very negative x.
  return x > Scalar(20) ? x : std::log1p(std::exp(x));
}

// Erase/write gates from logits (Eq. 11): b = σ(W_b x) (times 2 for the negative-eigenvalue variant,
// Sec. 3.1), w = σ(W_w x). Here the logits are given; the projection belongs to the model.
template <typename Scalar>
void sigmoid_gate(Tensor<Scalar>& x, Scalar upper = Scalar(1)) {
  for (auto& v : x.data) v = upper * sigmoid(v);
}

// The activation parameters follow the heads of the decay logits: one per key head when x is [B,T,H,K], one per
// value head when x is [B,T,HV,K] (flash-linear-attention's fused_recurrent_gdn2: A_log [HV], dt_bias [HV*K]).
inline void expect_decay_parameters(const std::vector<index_t>& x_shape, const std::vector<index_t>& A_log_shape,
                                    const std::vector<index_t>& dt_bias_shape, bool with_A_log) {
  const index_t H = x_shape[2], K = x_shape[3];
  const std::string g_is = "; g is " + shape_str(x_shape) + "), got ";
  if (with_A_log && checked_numel(A_log_shape, "A_log") != H)
    throw InputError("A_log: expected " + std::to_string(H) + " values, one per head of g ([H] when g is [B,T,H,K], "
                     "[HV] when g is [B,T,HV,K]" + g_is + shape_str(A_log_shape));
  if (checked_numel(dt_bias_shape, "dt_bias") != H * K)
    throw InputError("dt_bias: expected " + std::to_string(H * K) + " values, one per head of g and key channel ([H*K] "
                     "when g is [B,T,H,K], [HV*K] when g is [B,T,HV,K]" + g_is + shape_str(dt_bias_shape));
}

// Log-decay from logits (Eq. 12 / Eq. 86): g = −exp(A_log[h]) · softplus(x + dt_bias[h, d]).
// x: [B,T,H,K] with A_log [H], dt_bias [H*K] (one per key channel), or x: [B,T,HV,K] with A_log [HV],
// dt_bias [HV*K] — the flash-linear-attention layouts.
template <typename Scalar>
void softplus_decay(Tensor<Scalar>& x, const Tensor<Scalar>& A_log, const Tensor<Scalar>& dt_bias) {
  const index_t H = x.shape[2], K = x.shape[3];
  expect_decay_parameters(x.shape, A_log.shape, dt_bias.shape, true);
  for (index_t i = 0; i < x.numel(); ++i) {
    const index_t hk = i % (H * K), h = hk / K;
    x.data[i] = -std::exp(A_log.data[h]) * softplus(x.data[i] + dt_bias.data[hk]);
  }
}

// The bounded variant: g = lower_bound · σ(x + dt_bias), lower_bound < 0, so g ∈ (lower_bound, 0). dt_bias as above.
template <typename Scalar>
void bounded_decay(Tensor<Scalar>& x, const Tensor<Scalar>& dt_bias, double lower_bound) {
  const index_t H = x.shape[2], K = x.shape[3];
  if (!(lower_bound < 0)) throw InputError("lower bound of the decay must be negative, got " + std::to_string(lower_bound));
  expect_decay_parameters(x.shape, {}, dt_bias.shape, false);
  for (index_t i = 0; i < x.numel(); ++i) x.data[i] = Scalar(lower_bound) * sigmoid(x.data[i] + dt_bias.data[i % (H * K)]);
}

// Tied gates → the full Gated DeltaNet-2 gates (Appendix A.5): the variants are not separate algorithms.
//   beta: [B,T,H] or [B,T,HV] (kda, gdn, deltanet);  g_in: [B,T,H,K] or [B,T,HV,K] (gdn2, kda, linear),
//   [B,T,H] or [B,T,HV] (gdn); absent for deltanet.
// Output: g: g_in's heads; b: beta's heads (H for gdn2's own b, checked by validate_inputs, and for linear);
// w: [B,T,HV,V], value head hv taking β of head hv / (HV/heads of beta) — its key head's, or its own.
template <typename Scalar>
void tie_gates(Variant variant, Tensor<Scalar>& g, Tensor<Scalar>& b, Tensor<Scalar>& w, const Tensor<Scalar>& g_in,
               const Tensor<Scalar>& beta, index_t B, index_t T, index_t H, index_t K, index_t HV, index_t V) {
  const bool scalar_beta = variant == Variant::kda || variant == Variant::gdn || variant == Variant::deltanet;
  if (H <= 0 || HV <= 0 || HV % H != 0)
    throw InputError("v: value heads HV = " + std::to_string(HV) + " is not a positive multiple of key heads H = " + std::to_string(H));
  index_t HBeta = H;  // heads of beta
  if (scalar_beta) {
    HBeta = detail::expect_head_layout("beta", beta.shape, B, T, H, HV, {},
                                       std::string("one scalar gate per token and head for variant ") + variant_name(variant));
    for (index_t i = 0; i < beta.numel(); ++i)
      if (!(beta.data[i] >= 0 && beta.data[i] <= 1))
        throw InputError("beta: value " + std::to_string(static_cast<double>(beta.data[i])) + " at " +
                         shape_str({i / (T * HBeta), i / HBeta % T, i % HBeta}) + " (β must lie in [0, 1])");
  }
  g = Tensor<Scalar>({B, T, H, K});
  if (variant == Variant::gdn) {
    const index_t HG = detail::expect_head_layout("g", g_in.shape, B, T, H, HV, {}, "one decay per head for variant gdn");
    g = Tensor<Scalar>({B, T, HG, K});
    for (index_t i = 0; i < g.numel(); ++i) g.data[i] = g_in.data[i / K];
  } else if (variant != Variant::deltanet && !g_in.empty()) {
    g = g_in;  // shape checked by validate_inputs
  }
  if (variant == Variant::gdn2) return;  // b and w were given
  b = Tensor<Scalar>({B, T, HBeta, K});
  w = Tensor<Scalar>({B, T, HV, V});
  for (index_t i = 0; i < b.numel(); ++i) b.data[i] = scalar_beta ? beta.data[i / K] : Scalar(0);
  for (index_t i = 0; i < w.numel(); ++i) {
    const index_t bt = i / (HV * V), hv = (i / V) % HV;
    w.data[i] = scalar_beta ? beta.data[bt * HBeta + head_for_value_head(hv, HBeta, HV)] : Scalar(1);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Backward of the front-end: each function maps the gradient w.r.t. a step's output to its input(s).

// y = x / n, n = sqrt(Σx² + 1e-6):  dx = (dy − y (y·dy)) / n. `x` is the input before normalisation; dy in, dx out.
template <typename Scalar>
void l2normalize_backward(Tensor<Scalar>& dy, const Tensor<Scalar>& x) {
  const index_t D = x.shape.back();
  for (index_t i = 0; i < x.numel(); i += D) {
    Scalar ss = 0, ydy = 0;
    for (index_t d = 0; d < D; ++d) ss += x.data[i + d] * x.data[i + d];
    const Scalar n = std::sqrt(ss + Scalar(1e-6));
    for (index_t d = 0; d < D; ++d) ydy += x.data[i + d] / n * dy.data[i + d];
    for (index_t d = 0; d < D; ++d) dy.data[i + d] = (dy.data[i + d] - x.data[i + d] / n * ydy) / n;
  }
}

// gate = upper·σ(x):  dx = dgate · gate · (1 − gate/upper). `gate` is the activated value; dgate in, dx out.
template <typename Scalar>
void sigmoid_gate_backward(Tensor<Scalar>& dgate, const Tensor<Scalar>& gate, Scalar upper = Scalar(1)) {
  for (index_t i = 0; i < gate.numel(); ++i) dgate.data[i] *= gate.data[i] * (Scalar(1) - gate.data[i] / upper);
}

// g = −exp(A_log[h]) softplus(x + dt_bias[h,d]) (Eq. 12):
//   dx = dg · (−exp(A_log) σ(x + dt_bias)),  ddt_bias = Σ_{B,T} dx,  dA_log[h] = Σ dg · g   (∂g/∂A_log = g).
// `x` holds the logits, `g` the decay computed from them; dg in, dx out.
template <typename Scalar>
void softplus_decay_backward(Tensor<Scalar>& dg, Tensor<Scalar>& dA_log, Tensor<Scalar>& ddt_bias,
                             const Tensor<Scalar>& x, const Tensor<Scalar>& g, const Tensor<Scalar>& A_log,
                             const Tensor<Scalar>& dt_bias) {
  const index_t H = x.shape[2], K = x.shape[3];
  dA_log = Tensor<Scalar>(A_log.shape);
  ddt_bias = Tensor<Scalar>(dt_bias.shape);
  for (index_t i = 0; i < x.numel(); ++i) {
    const index_t hk = i % (H * K), h = hk / K;
    dA_log.data[h] += dg.data[i] * g.data[i];
    dg.data[i] *= -std::exp(A_log.data[h]) * sigmoid(x.data[i] + dt_bias.data[hk]);
    ddt_bias.data[hk] += dg.data[i];
  }
}

// g = lower_bound σ(x + dt_bias):  dx = dg · lower_bound σ (1 − σ),  ddt_bias = Σ_{B,T} dx.
template <typename Scalar>
void bounded_decay_backward(Tensor<Scalar>& dg, Tensor<Scalar>& ddt_bias, const Tensor<Scalar>& x,
                            const Tensor<Scalar>& dt_bias, double lower_bound) {
  const index_t HK = x.shape[2] * x.shape[3];
  ddt_bias = Tensor<Scalar>(dt_bias.shape);
  for (index_t i = 0; i < x.numel(); ++i) {
    const Scalar s = sigmoid(x.data[i] + dt_bias.data[i % HK]);
    dg.data[i] *= Scalar(lower_bound) * s * (Scalar(1) - s);
    ddt_bias.data[i % HK] += dg.data[i];
  }
}

// Backward of tie_gates: the gradients of the tied inputs from those of the full gates (each in its input's layout:
// db has beta's heads, dg has g's).
//   dβ[b,t,h] = Σ_d db[b,t,h,d] + Σ_{hv reading β head h} Σ_d dw[b,t,hv,d]   (Eq. 48; per key head: h's group)
//   gdn: dg_head[b,t,h] = Σ_d dg[b,t,h,d];  deltanet: no g.
// dbeta and dg_in are resized here (left empty where the variant has no such input).
template <typename Scalar>
void tie_gates_backward(Variant variant, Tensor<Scalar>& dg_in, Tensor<Scalar>& dbeta, const Tensor<Scalar>& dg,
                        const Tensor<Scalar>& db, const Tensor<Scalar>& dw) {
  const index_t B = dg.shape[0], T = dg.shape[1], HG = dg.shape[2], K = dg.shape[3], HV = dw.shape[2], V = dw.shape[3];
  dg_in = {};
  dbeta = {};
  if (variant == Variant::gdn) {
    dg_in = Tensor<Scalar>({B, T, HG});
    for (index_t i = 0; i < dg.numel(); ++i) dg_in.data[i / K] += dg.data[i];
  } else if (variant != Variant::deltanet) {
    dg_in = dg;
  }
  if (variant == Variant::kda || variant == Variant::gdn || variant == Variant::deltanet) {
    const index_t HBeta = db.shape[2];
    dbeta = Tensor<Scalar>({B, T, HBeta});
    for (index_t i = 0; i < db.numel(); ++i) dbeta.data[i / K] += db.data[i];
    for (index_t i = 0; i < dw.numel(); ++i) {
      const index_t bt = i / (HV * V), hv = (i / V) % HV;
      dbeta.data[bt * HBeta + head_for_value_head(hv, HBeta, HV)] += dw.data[i];
    }
  }
}

}  // namespace gdn2
