// gdn2 reference — the backward over whole tensors (layout and options as forward.hpp).
//
// Key-side gradients (dq, dk) of a key head sum over the value heads of its group (grouped value heads); so do dg
// and db when the gate is given per key head, while a gate given per value head gets each value head's own
// gradient (dg and db always have the gate's shape). Work is split over (sequence, key head) pairs so each task owns
// the memory it writes, and the group's value heads are summed in a fixed order: results are bitwise independent of
// the thread count, and per-value-head gradients summed over a group (in head order, from zero) give the bits of the
// per-key-head ones.
#pragma once

#include "chunk_backward.hpp"
#include "forward.hpp"
#include "recurrent_backward.hpp"

namespace gdn2 {

template <typename Scalar>
struct Gradients {
  Tensor<Scalar> dq, dk, dv, dg, db, dw;  // shapes of q, k, v, g, b, w
  Tensor<Scalar> dh0;                     // [N, HV, K, V]: dL/dS_0 (also when h0 is absent, i.e. zero)
};

// do_ and dht are the upstream gradients dL/do [B,T,HV,V] and dL/dht [N,HV,K,V]; either may be empty (= zero).
template <typename Scalar>
Gradients<Scalar> backward(Form form, const Tensor<Scalar>& q, const Tensor<Scalar>& k, const Tensor<Scalar>& v,
                           const Tensor<Scalar>& g, const Tensor<Scalar>& b, const Tensor<Scalar>& w,
                           const Tensor<Scalar>& h0, const std::vector<index_t>& cu_seqlens, const Tensor<Scalar>& do_,
                           const Tensor<Scalar>& dht, const ForwardOptions& opt) {
  const Dims d = validate_inputs(q, k, v, g, b, w, h0, cu_seqlens, opt);
  if (!do_.empty() && do_.shape != v.shape)
    throw InputError("do: shape " + shape_str(do_.shape) + ", expected " + shape_str(v.shape) + " (the shape of o)");
  if (!dht.empty() && dht.shape != std::vector<index_t>{d.N, d.HV, d.K, d.V})
    throw InputError("dht: shape " + shape_str(dht.shape) + ", expected " + shape_str({d.N, d.HV, d.K, d.V}) +
                     " (the shape of ht)");
  detail::expect_elements("do", do_, [](double x) { return std::isfinite(x); }, "must be finite");
  detail::expect_elements("dht", dht, [](double x) { return std::isfinite(x); }, "must be finite");
  const Scalar scale = static_cast<Scalar>(detail::default_scale(d, opt));
  Gradients<Scalar> gr{Tensor<Scalar>(q.shape, "dq"), Tensor<Scalar>(k.shape, "dk"), Tensor<Scalar>(v.shape, "dv"),
                       Tensor<Scalar>(g.shape, "dg"), Tensor<Scalar>(b.shape, "db"), Tensor<Scalar>(w.shape, "dw"),
                       Tensor<Scalar>({d.N, d.HV, d.K, d.V}, "dh0")};
  const index_t group = d.HV / d.H;
  const bool g_per_value = d.HG != d.H, b_per_value = d.HB != d.H;  // (with HV = H both layouts are the same)
  detail::parallel_for_heads(d.N, d.H, opt.num_threads, [&](index_t n, index_t h) {
    const SequenceSpan span = sequence_span(d, cu_seqlens, n);
    const index_t L = span.length;
    const Mat<Scalar> Q = scale * detail::gather_head(q, span.row0, L, h);
    const Mat<Scalar> Kk = detail::gather_head(k, span.row0, L, h);
    Mat<Scalar> G, Bg;
    if (!g_per_value) G = detail::gather_head(g, span.row0, L, h);
    if (!b_per_value) Bg = detail::gather_head(b, span.row0, L, h);
    Mat<Scalar> dQsum = Mat<Scalar>::Zero(L, d.K), dKsum = dQsum, dGsum = dQsum, dBsum = dQsum;
    for (index_t hv = h * group; hv < (h + 1) * group; ++hv) {
      if (g_per_value) G = detail::gather_head(g, span.row0, L, hv);
      if (b_per_value) Bg = detail::gather_head(b, span.row0, L, hv);
      const Mat<Scalar> Vv = detail::gather_head(v, span.row0, L, hv);
      const Mat<Scalar> W = detail::gather_head(w, span.row0, L, hv);
      const Mat<Scalar> dO = do_.empty() ? Mat<Scalar>::Zero(L, d.V) : detail::gather_head(do_, span.row0, L, hv);
      const index_t state = offset_state(n, hv, d.HV, d.K, d.V);
      Mat<Scalar> S0 = Mat<Scalar>::Zero(d.K, d.V), dS = Mat<Scalar>::Zero(d.K, d.V);
      if (!h0.empty()) S0 = Eigen::Map<const Mat<Scalar>>(h0.ptr() + state, d.K, d.V);
      if (!dht.empty()) dS = Eigen::Map<const Mat<Scalar>>(dht.ptr() + state, d.K, d.V);
      Mat<Scalar> dQ, dK, dV, dG, dB, dW;
      if (form == Form::recurrent)
        recurrent_backward_head(dQ, dK, dV, dG, dB, dW, dS, Q, Kk, Vv, G, Bg, W, S0, dO);
      else
        chunk_backward_head(dQ, dK, dV, dG, dB, dW, dS, Q, Kk, Vv, G, Bg, W, S0, dO, opt.chunk_size);
      dQsum += dQ, dKsum += dK, dGsum += dG, dBsum += dB;
      if (g_per_value) {  // this value head's own gate: its gradient alone (summed from zero, as the group sum is)
        detail::scatter_head(gr.dg, dGsum, span.row0, hv);
        dGsum.setZero();
      }
      if (b_per_value) {
        detail::scatter_head(gr.db, dBsum, span.row0, hv);
        dBsum.setZero();
      }
      detail::scatter_head(gr.dv, dV, span.row0, hv);
      detail::scatter_head(gr.dw, dW, span.row0, hv);
      Eigen::Map<Mat<Scalar>>(gr.dh0.ptr() + state, d.K, d.V) = dS;
    }
    detail::scatter_head(gr.dq, Mat<Scalar>(scale * dQsum), span.row0, h);  // q̃ = scale·q
    detail::scatter_head(gr.dk, dKsum, span.row0, h);
    if (!g_per_value) detail::scatter_head(gr.dg, dGsum, span.row0, h);
    if (!b_per_value) detail::scatter_head(gr.db, dBsum, span.row0, h);
  });
  return gr;
}

template <typename Scalar>
Gradients<Scalar> backward(Form form, const Layer<Scalar>& x, const Tensor<Scalar>& do_, const Tensor<Scalar>& dht,
                           const ForwardOptions& opt) {
  return backward(form, x.q, x.k, x.v, x.g, x.b, x.w, x.h0, x.cu_seqlens, do_, dht, opt);
}

// The host API name (the CUDA library mirrors it): the chunkwise backward of Appendix B.
template <typename Scalar>
Gradients<Scalar> chunk_backward(const Layer<Scalar>& x, const Tensor<Scalar>& do_, const Tensor<Scalar>& dht,
                                 const ForwardOptions& opt) {
  return backward(Form::chunk, x, do_, dht, opt);
}

}  // namespace gdn2
