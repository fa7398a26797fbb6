// gdn2 reference — the forward over whole tensors: sequences × value heads, each an independent head
// problem solved by recurrent_forward_head (REF) or chunk_forward_head (the WY form).
//
// Layout (flash-linear-attention compatible): q, k: [B,T,H,K]; v, w: [B,T,HV,V];
// h0, ht: [N,HV,K,V]; o: [B,T,HV,V]. Value head hv reads key head hv / (HV/H) (grouped value heads), so value heads
// [h·HV/H, (h+1)·HV/H) share key head h. The gates g and b are each given per key head, [B,T,H,K] (value head hv
// reads key head hv / (HV/H) as for q and k), or per value head, [B,T,HV,K] (value head hv reads its own).
// With cu_seqlens ([N+1]) the N sequences are packed along T of a B = 1 batch.
#pragma once

#include <atomic>
#include <cmath>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "chunk.hpp"
#include "recurrent.hpp"
#include "validate.hpp"

namespace gdn2 {

enum class Form { recurrent, chunk };

// The inputs of one layer call, in the layout above; h0 and cu_seqlens may be empty.
template <typename Scalar>
struct Layer {
  Tensor<Scalar> q, k, v, g, b, w, h0;
  std::vector<index_t> cu_seqlens;
};

namespace detail {

// Copies rows [row0, row0+L) of head h of a [.., H, D] tensor into an [L, D] matrix.
template <typename Scalar>
Mat<Scalar> gather_head(const Tensor<Scalar>& x, index_t row0, index_t L, index_t h) {
  const index_t H = x.shape[2], D = x.shape[3];
  Mat<Scalar> m(L, D);
  for (index_t t = 0; t < L; ++t)
    for (index_t d = 0; d < D; ++d) m(t, d) = x.data[offset_row(row0 + t, h, H, D) + d];
  return m;
}

template <typename Scalar>
void scatter_head(Tensor<Scalar>& x, const Mat<Scalar>& m, index_t row0, index_t h) {
  const index_t H = x.shape[2], D = x.shape[3];
  for (index_t t = 0; t < m.rows(); ++t)
    for (index_t d = 0; d < D; ++d) x.data[offset_row(row0 + t, h, H, D) + d] = m(t, d);
}

// Runs fn(n, hv) for every sequence n < N and value head hv < HV on up to `threads` threads.
// Each task writes disjoint memory, so results do not depend on the thread count (docs/numerics.md 22).
// An exception in any task (std::bad_alloc of a huge chunk, say) stops the tasks not yet started and is rethrown
// here, after every thread has joined; an exception leaving a thread would end the process.
template <typename Fn>
void parallel_for_heads(index_t N, index_t HV, int threads, Fn fn) {
  const index_t tasks = N * HV;
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = static_cast<int>(std::min<index_t>(threads, std::max<index_t>(tasks, 1)));
  std::atomic<index_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&] {
    try {
      for (index_t i; (i = next++) < tasks;) fn(i / HV, i % HV);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next = tasks;
    }
  };
  if (threads == 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (int i = 0; i < threads; ++i) pool.emplace_back(worker);
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace detail

namespace detail {

// Dimensions from the shapes alone, for callers that have validated already (or that run the math outside the
// gates' ranges on purpose, as the finite-difference and complex-step oracles do).
inline Dims dims_of(const std::vector<index_t>& q_shape, const std::vector<index_t>& v_shape,
                    const std::vector<index_t>& cu_seqlens) {
  Dims d;
  d.B = q_shape[0], d.T = q_shape[1], d.H = q_shape[2], d.K = q_shape[3], d.HV = v_shape[2], d.V = v_shape[3];
  d.varlen = !cu_seqlens.empty();
  d.N = d.varlen ? index_t(cu_seqlens.size()) - 1 : d.B;
  return d;
}

inline double default_scale(const Dims& d, const ForwardOptions& opt) {
  return opt.scale ? *opt.scale : 1.0 / std::sqrt(static_cast<double>(d.K));
}

// The forward without validation; Scalar may be float, double or std::complex<double>.
template <typename Scalar>
void forward_unchecked(Form form, Tensor<Scalar>& o, Tensor<Scalar>& ht, const Tensor<Scalar>& q,
                       const Tensor<Scalar>& k, const Tensor<Scalar>& v, const Tensor<Scalar>& g,
                       const Tensor<Scalar>& b, const Tensor<Scalar>& w, const Tensor<Scalar>& h0,
                       const std::vector<index_t>& cu_seqlens, const ForwardOptions& opt) {
  const Dims d = dims_of(q.shape, v.shape, cu_seqlens);
  const Scalar scale = static_cast<Scalar>(default_scale(d, opt));
  o = Tensor<Scalar>({d.B, d.T, d.HV, d.V}, "o");
  ht = Tensor<Scalar>({d.N, d.HV, d.K, d.V}, "ht");
  parallel_for_heads(d.N, d.HV, opt.num_threads, [&](index_t n, index_t hv) {
    const index_t h = head_for_value_head(hv, d.H, d.HV);
    const SequenceSpan span = sequence_span(d, cu_seqlens, n);
    const Mat<Scalar> Q = scale * gather_head(q, span.row0, span.length, h);
    const Mat<Scalar> Kk = gather_head(k, span.row0, span.length, h);
    const Mat<Scalar> G = gather_head(g, span.row0, span.length, head_for_value_head(hv, g.shape[2], d.HV));
    const Mat<Scalar> Bg = gather_head(b, span.row0, span.length, head_for_value_head(hv, b.shape[2], d.HV));
    const Mat<Scalar> Vv = gather_head(v, span.row0, span.length, hv);
    const Mat<Scalar> W = gather_head(w, span.row0, span.length, hv);
    Mat<Scalar> S = Mat<Scalar>::Zero(d.K, d.V);
    const index_t state = offset_state(n, hv, d.HV, d.K, d.V);
    if (!h0.empty()) S = Eigen::Map<const Mat<Scalar>>(h0.ptr() + state, d.K, d.V);
    Mat<Scalar> O;
    if (form == Form::recurrent)
      recurrent_forward_head(O, S, Q, Kk, Vv, G, Bg, W);
    else
      chunk_forward_head(O, S, Q, Kk, Vv, G, Bg, W, opt.chunk_size);
    scatter_head(o, O, span.row0, hv);
    Eigen::Map<Mat<Scalar>>(ht.ptr() + state, d.K, d.V) = S;
  });
}

}  // namespace detail

// o: [B,T,HV,V] and ht: [N,HV,K,V] are outputs (resized here); h0 may be empty (zero initial state);
// cu_seqlens may be empty (B independent sequences of length T). Inputs are validated first (docs/numerics.md 20).
template <typename Scalar>
void forward(Form form, Tensor<Scalar>& o, Tensor<Scalar>& ht, const Tensor<Scalar>& q, const Tensor<Scalar>& k,
             const Tensor<Scalar>& v, const Tensor<Scalar>& g, const Tensor<Scalar>& b, const Tensor<Scalar>& w,
             const Tensor<Scalar>& h0, const std::vector<index_t>& cu_seqlens, const ForwardOptions& opt) {
  validate_inputs(q, k, v, g, b, w, h0, cu_seqlens, opt);
  detail::forward_unchecked(form, o, ht, q, k, v, g, b, w, h0, cu_seqlens, opt);
}

// The same with the inputs bundled (cu_seqlens taken from the bundle).
template <typename Scalar>
void forward(Form form, Tensor<Scalar>& o, Tensor<Scalar>& ht, const Layer<Scalar>& x, const ForwardOptions& opt) {
  forward(form, o, ht, x.q, x.k, x.v, x.g, x.b, x.w, x.h0, x.cu_seqlens, opt);
}

// The two names of the host API; the CUDA library mirrors them (outputs first, then inputs, then options).
template <typename Scalar>
void recurrent_forward(Tensor<Scalar>& o, Tensor<Scalar>& ht, const Tensor<Scalar>& q, const Tensor<Scalar>& k,
                       const Tensor<Scalar>& v, const Tensor<Scalar>& g, const Tensor<Scalar>& b,
                       const Tensor<Scalar>& w, const Tensor<Scalar>& h0, const std::vector<index_t>& cu_seqlens,
                       const ForwardOptions& opt) {
  forward(Form::recurrent, o, ht, q, k, v, g, b, w, h0, cu_seqlens, opt);
}
template <typename Scalar>
void chunk_forward(Tensor<Scalar>& o, Tensor<Scalar>& ht, const Tensor<Scalar>& q, const Tensor<Scalar>& k,
                   const Tensor<Scalar>& v, const Tensor<Scalar>& g, const Tensor<Scalar>& b, const Tensor<Scalar>& w,
                   const Tensor<Scalar>& h0, const std::vector<index_t>& cu_seqlens, const ForwardOptions& opt) {
  forward(Form::chunk, o, ht, q, k, v, g, b, w, h0, cu_seqlens, opt);
}

}  // namespace gdn2
