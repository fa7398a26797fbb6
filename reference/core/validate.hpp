// gdn2 reference — input validation (docs/numerics.md 20): every refusal names the tensor and the problem,
// and happens before anything is computed or written.
#pragma once

#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <sstream>
#include <vector>

#include "options.hpp"
#include "tensor.hpp"

namespace gdn2 {

// B batch, T tokens, H key heads, HV value heads, K key dim, V value dim, N sequences.
// HG, HB: the heads of g and of b, each H (one gate per key head, shared by its value heads) or HV (one gate per
// value head, flash-linear-attention's fused_recurrent_gdn2 layout); chosen independently.
struct Dims {
  index_t B = 0, T = 0, H = 0, HV = 0, K = 0, V = 0, N = 0;
  index_t HG = 0, HB = 0;
  bool varlen = false;  // N sequences packed into B = 1 by cu_seqlens
};

// Grouped value heads: value head hv belongs to key head hv / (HV/H), so value heads [h·HV/H, (h+1)·HV/H) share
// key head h. A gate given with `heads` heads (H or HV) is read by value head hv at head hv / (HV/heads): the key
// head for per-key-head gates, hv itself for per-value-head gates.
inline index_t head_for_value_head(index_t hv, index_t heads, index_t HV) { return hv / (HV / heads); }

// Where sequence n lives: rows [row0, row0 + length) of the flattened [B*T] token axis.
struct SequenceSpan {
  index_t row0, length;
};

inline SequenceSpan sequence_span(const Dims& d, const std::vector<index_t>& cu_seqlens, index_t n) {
  if (d.varlen) return {cu_seqlens[n], cu_seqlens[n + 1] - cu_seqlens[n]};
  return {n * d.T, d.T};
}

inline std::string index_str(const std::vector<index_t>& shape, index_t flat) {
  return shape_str(unravel_index(shape, flat));
}

namespace detail {

inline void expect_shape(const std::string& name, const std::vector<index_t>& got,
                         const std::vector<index_t>& want, const std::string& why) {
  if (got != want)
    throw InputError(name + ": shape " + shape_str(got) + ", expected " + shape_str(want) + " (" + why + ")");
}

// A gate given per key head, [B,T,H,...], or per value head, [B,T,HV,...], with `tail` the trailing dimensions
// ({K} for g and b; {} for a scalar gate per token and head such as beta). Returns its number of heads, H or HV;
// otherwise throws one line naming the tensor and both allowed shapes.
inline index_t expect_head_layout(const std::string& name, const std::vector<index_t>& got, index_t B, index_t T,
                                  index_t H, index_t HV, const std::vector<index_t>& tail, const std::string& what) {
  std::vector<index_t> per_key = {B, T, H}, per_value = {B, T, HV};
  per_key.insert(per_key.end(), tail.begin(), tail.end());
  per_value.insert(per_value.end(), tail.begin(), tail.end());
  if (got == per_key) return H;
  if (got == per_value) return HV;
  const std::string k = tail.empty() ? "]" : ",K]";
  throw InputError(name + ": shape " + shape_str(got) + ", expected " + shape_str(per_key) + " [B,T,H" + k +
                   " per key head or " + shape_str(per_value) + " [B,T,HV" + k + " per value head (" + what + ")");
}

// Checks every element of x against `ok`; the first failure is reported with its index.
template <typename Scalar, typename Pred>
void expect_elements(const std::string& name, const Tensor<Scalar>& x, Pred ok, const std::string& rule) {
  for (index_t i = 0; i < x.numel(); ++i) {
    const double v = static_cast<double>(x.data[i]);
    if (!ok(v)) {
      std::ostringstream shown;
      shown << v;
      if (ok(std::strtod(shown.str().c_str(), nullptr))) {  // six digits would show an allowed value (1 + 2e-16
        shown.str("");                                       // as 1): all seventeen
        shown << std::setprecision(17) << v;
      }
      throw InputError(name + ": value " + shown.str() + " at " + index_str(x.shape, i) + " (" + rule + ")");
    }
  }
}

}  // namespace detail

// Validates the inputs of the forward (and backward) and returns their dimensions.
// q, k: [B,T,H,K]; g, b: each [B,T,H,K] or [B,T,HV,K]; v, w: [B,T,HV,V]; h0: [N,HV,K,V] or absent;
// cu_seqlens: [N+1] or absent.
template <typename Scalar>
Dims validate_inputs(const Tensor<Scalar>& q, const Tensor<Scalar>& k, const Tensor<Scalar>& v,
                     const Tensor<Scalar>& g, const Tensor<Scalar>& b, const Tensor<Scalar>& w,
                     const Tensor<Scalar>& h0, const std::vector<index_t>& cu_seqlens,
                     const ForwardOptions& opt) {
  using detail::expect_elements;
  using detail::expect_shape;
  if (q.shape.size() != 4) throw InputError("q: expected 4 dimensions [B,T,H,K], got " + shape_str(q.shape));
  if (v.shape.size() != 4) throw InputError("v: expected 4 dimensions [B,T,HV,V], got " + shape_str(v.shape));
  Dims d;
  d.B = q.dim(0), d.T = q.dim(1), d.H = q.dim(2), d.K = q.dim(3);
  d.HV = v.dim(2), d.V = v.dim(3);
  if (d.K == 0) throw InputError("q: key dimension K = 0");
  if (d.V == 0) throw InputError("v: value dimension V = 0");
  if (d.H == 0) throw InputError("q: number of key heads H = 0");
  if (d.HV == 0 || d.HV % d.H != 0)
    throw InputError("v: value heads HV = " + std::to_string(d.HV) + " is not a positive multiple of key heads H = " +
                     std::to_string(d.H));
  const std::vector<index_t> key_shape = q.shape, value_shape = {d.B, d.T, d.HV, d.V};
  expect_shape("k", k.shape, key_shape, "same as q");
  d.HG = detail::expect_head_layout("g", g.shape, d.B, d.T, d.H, d.HV, {d.K}, "one log-decay per key channel");
  d.HB = detail::expect_head_layout("b", b.shape, d.B, d.T, d.H, d.HV, {d.K}, "one erase gate per key channel");
  expect_shape("v", v.shape, value_shape, "batch and tokens as q");
  expect_shape("w", w.shape, value_shape, "same as v: one write gate per value channel");
  if (opt.chunk_size < 1) throw InputError("chunk size must be >= 1, got " + std::to_string(opt.chunk_size));

  d.varlen = !cu_seqlens.empty();
  d.N = d.varlen ? static_cast<index_t>(cu_seqlens.size()) - 1 : d.B;
  if (d.varlen) {
    if (d.B != 1)
      throw InputError("cu_seqlens: packed sequences need B = 1, but q has B = " + std::to_string(d.B));
    if (cu_seqlens.size() < 2) throw InputError("cu_seqlens: needs at least 2 entries [0, T]");
    if (cu_seqlens.front() != 0)
      throw InputError("cu_seqlens: must start at 0, starts at " + std::to_string(cu_seqlens.front()));
    for (size_t i = 1; i < cu_seqlens.size(); ++i)
      if (cu_seqlens[i] < cu_seqlens[i - 1])
        throw InputError("cu_seqlens: not monotone at entry " + std::to_string(i) + " (" +
                         std::to_string(cu_seqlens[i - 1]) + " > " + std::to_string(cu_seqlens[i]) + ")");
    if (cu_seqlens.back() != d.T)
      throw InputError("cu_seqlens: must end at T = " + std::to_string(d.T) + ", ends at " +
                       std::to_string(cu_seqlens.back()));
  }
  if (!h0.empty())
    expect_shape("h0", h0.shape, {d.N, d.HV, d.K, d.V},
                 "one initial state [HV,K,V] per sequence, N = " + std::to_string(d.N));

  auto finite = [](double x) { return std::isfinite(x); };
  expect_elements("q", q, finite, "must be finite");
  expect_elements("k", k, finite, "must be finite");
  expect_elements("v", v, finite, "must be finite");
  expect_elements("h0", h0, finite, "must be finite");
  expect_elements("g", g, [](double x) { return x <= 0 && !std::isnan(x); },
                  "g is a natural-log decay and must lie in [-inf, 0]");
  const double b_max = opt.allow_negative_eigen ? 2.0 : 1.0;
  expect_elements("b", b, [b_max](double x) { return x >= 0 && x <= b_max; },
                  opt.allow_negative_eigen ? "erase gate must lie in [0, 2]" :
                                             "erase gate must lie in [0, 1]; [0, 2] needs --negative-eigen");
  expect_elements("w", w, [](double x) { return x >= 0 && x <= 1; }, "write gate must lie in [0, 1]");
  return d;
}

}  // namespace gdn2
