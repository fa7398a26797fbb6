// gdn2 tests [backward] — the analytic backward of both forms against independent oracles (docs/numerics.md 16-19),
// exact zeros where no path exists (6, 11), the tied-gate gradient identity (15, Eq. 48), the front-end VJPs.
#include "helpers.hpp"

#include <complex>

#include "core/frontend.hpp"
#include "core/gradcheck.hpp"

using namespace gdn2;
using namespace gdn2::test;

namespace {

struct Upstream {
  Tensor<double> do_, dht;
};

Upstream random_upstream(Rng& rng, const Layer<double>& x) {
  const index_t N = x.cu_seqlens.empty() ? x.q.shape[0] : index_t(x.cu_seqlens.size()) - 1;
  Upstream u{Tensor<double>(x.v.shape), Tensor<double>({N, x.v.shape[2], x.q.shape[3], x.v.shape[3]})};
  for (auto& e : u.do_.data) e = rng.normal();
  for (auto& e : u.dht.data) e = rng.normal();
  return u;
}

void require_all_finite(const Gradients<double>& g) {
  for (int j = 0; j < 7; ++j) REQUIRE(all_finite(gradient_tensor(g, j)));
}

}  // namespace

TEST_CASE("16. finite differences and complex-step derivatives agree with both backwards", "[backward]") {
  struct Config {
    std::string name;
    index_t B, T, H, HV, K, V, C;
    std::vector<index_t> cu;
    double g_lo;
  };
  const std::vector<Config> configs = {
      {"GVA, h0, C=16", 2, 40, 2, 4, 8, 6, 16, {}, -0.5},
      {"strong decay, C=8", 1, 33, 1, 1, 6, 5, 8, {}, -5.0},
      {"packed [0,9,30,41], C=16", 1, 41, 1, 2, 5, 4, 16, {0, 9, 30, 41}, -1.0},
  };
  for (const auto& c : configs) {
    Rng rng(16);
    const index_t N = c.cu.empty() ? c.B : index_t(c.cu.size()) - 1;
    auto x = random_layer<double>(rng, c.B, c.T, c.H, c.HV, c.K, c.V, [&](Rng& r) { return r.uniform(c.g_lo, 0); }, true, N);
    x.cu_seqlens = c.cu;
    const auto up = random_upstream(rng, x);
    ForwardOptions opt;
    opt.chunk_size = c.C;
    for (Form form : {Form::recurrent, Form::chunk})
      for (const auto& r : gradient_oracles(form, x, up.do_, up.dht, opt, rng, 2, {0, 15, 16, c.C - 1, c.C, c.T - 1})) {
        const std::string what = c.name + (form == Form::chunk ? " chunk d" : " recurrent d") + r.tensor;
        log_measure(what + " finite differences", r.finite_difference, 1e-6);
        log_measure(what + " complex step", r.complex_step, 1e-12);
        REQUIRE(r.finite_difference <= 1e-6);
        REQUIRE(r.complex_step <= 1e-12);
      }
  }
}

TEST_CASE("17. the loss is affine in each gate row: large-step differences are exact", "[backward]") {
  // b_t and w_t enter Eq. 10 linearly and nothing downstream multiplies them again, so a step of 1e-2 leaves no
  // truncation error: a mismatch would mean a gate missing from the dA accumulation (paper B.5).
  Rng rng(17);
  const auto x = random_layer<double>(rng, 1, 50, 1, 2, 8, 6, [](Rng& r) { return r.uniform(-0.3, 0); }, true);
  const auto up = random_upstream(rng, x);
  ForwardOptions opt;
  opt.chunk_size = 16;
  for (Form form : {Form::recurrent, Form::chunk}) {
    const auto grad = backward(form, x, up.do_, up.dht, opt);
    for (index_t t : {0, 15, 16, 31, 49}) {
      for (const bool erase : {true, false}) {
        const Tensor<double>& X = erase ? x.b : x.w;
        const Tensor<double>& D = erase ? grad.db : grad.dw;
        const index_t Hx = X.shape[2], Dm = X.shape[3];
        auto plus = x, minus = x;
        double analytic = 0;
        for (index_t h = 0; h < Hx; ++h)
          for (index_t d = 0; d < Dm; ++d) {
            const index_t i = offset_bthd(0, t, h, X.shape[1], Hx, Dm) + d;
            const double u = rng.uniform(-1, 1) * 1e-2;
            (erase ? plus.b : plus.w).data[i] += u;
            (erase ? minus.b : minus.w).data[i] -= u;
            analytic += D.data[i] * u;
          }
        const double fd = (layer_loss(form, plus, up.do_, up.dht, opt) - layer_loss(form, minus, up.do_, up.dht, opt)) / 2;
        const double err = std::abs(fd - analytic) / std::max(std::abs(analytic), 1e-12);
        log_measure(std::string(form == Form::chunk ? "chunk" : "recurrent") + (erase ? " db" : " dw") + " row t=" +
                        std::to_string(t) + " step 1e-2",
                    err, 1e-9);
        REQUIRE(err <= 1e-9);
      }
    }
  }
}

TEST_CASE("18. chunk backward equals recurrent backward on every gate set", "[backward]") {
  const std::vector<std::pair<std::string, std::function<double(Rng&, index_t)>>> gate_sets = {
      {"mild", [](Rng& r, index_t) { return r.uniform(-0.05, 0); }},
      {"const -11.2", [](Rng&, index_t) { return -11.2; }},
      {"one -inf token", [](Rng& r, index_t t) { return t == 70 ? -INFINITY : r.uniform(-0.05, 0); }},
      {"g = 0", [](Rng&, index_t) { return 0.0; }},
  };
  for (const auto& [name, gate] : gate_sets) {
    Rng rng(18);
    const index_t B = 2, T = 150, H = 2, HV = 2, K = 16, V = 12;
    auto x = random_layer<double>(rng, B, T, H, HV, K, V, [](Rng&) { return 0.0; }, true);
    for (index_t i = 0; i < x.g.numel(); ++i) x.g.data[i] = gate(rng, (i / (H * K)) % T);
    const auto up = random_upstream(rng, x);
    ForwardOptions opt;
    const auto rec = backward(Form::recurrent, x, up.do_, up.dht, opt);
    for (index_t C : {16, 64}) {
      opt.chunk_size = C;
      const auto chk = backward(Form::chunk, x, up.do_, up.dht, opt);
      require_all_finite(chk);
      for (int j = 0; j < 7; ++j)
        require_ratio(name + " C=" + std::to_string(C) + " d" + kLayerTensorNames[j], gradient_tensor(chk, j),
                      gradient_tensor(rec, j), 1e-10);
    }
  }
}

TEST_CASE("19. precision budget: float32 compute vs float64 REF", "[backward]") {
  struct S {
    index_t B, T, H, K, V;
  };
  for (const S s : {S{1, 63, 1, 64, 64}, S{2, 500, 3, 60, 60}, S{2, 1000, 3, 64, 64}, S{3, 1024, 4, 100, 100}, S{1, 200, 1, 256, 256}}) {
    Rng rng(19);
    const auto x = random_layer<double>(rng, s.B, s.T, s.H, s.H, s.K, s.V, [](Rng& r) { return log_sigmoid(r.normal() + 3); }, true);
    const auto up = random_upstream(rng, x);
    const auto x32 = cast_layer<float>(x);
    const std::string shape = "(" + std::to_string(s.B) + "," + std::to_string(s.T) + "," + std::to_string(s.H) + "," + std::to_string(s.K) + ")";
    ForwardOptions opt;
    opt.num_threads = 0;
    const auto ref_out = run(Form::recurrent, x, 64, {}, 0);
    const auto out32 = run(Form::chunk, x32, 64, {}, 0);
    require_ratio(shape + " fp32 chunk o", out32.o, ref_out.o, 1e-5);
    require_ratio(shape + " fp32 chunk ht", out32.ht, ref_out.ht, 1e-5);
    const auto ref = backward(Form::recurrent, x, up.do_, up.dht, opt);
    const auto g32 = backward(Form::chunk, x32, cast<float>(up.do_), cast<float>(up.dht), opt);
    for (int j = 0; j < 7; ++j)
      require_ratio(shape + " fp32 chunk d" + kLayerTensorNames[j], gradient_tensor(g32, j), gradient_tensor(ref, j), 1e-4);
  }
}

TEST_CASE("6. gradients stop exactly at a full reset", "[backward]") {
  // A loss on the outputs after a g = -inf token (and on the final state) has no path to anything before it.
  Rng rng(6);
  const index_t T = 150, reset = 70;
  auto x = random_layer<double>(rng, 1, T, 2, 2, 16, 8, [](Rng& r) { return r.uniform(-0.05, 0); }, true);
  for (index_t i = offset_bthd(0, reset, 0, T, 2, 16); i < offset_bthd(0, reset + 1, 0, T, 2, 16); ++i) x.g.data[i] = -INFINITY;
  auto up = random_upstream(rng, x);
  for (index_t i = 0; i < offset_bthd(0, reset, 0, T, 2, 8); ++i) up.do_.data[i] = 0;  // loss only after the reset
  for (Form form : {Form::recurrent, Form::chunk}) {
    ForwardOptions opt;
    opt.chunk_size = 64;
    const auto gr = backward(form, x, up.do_, up.dht, opt);
    require_all_finite(gr);
    bool zero = true;
    for (int j = 0; j < 6; ++j) {
      const Tensor<double>& D = gradient_tensor(gr, j);
      const index_t X = D.shape[2], Dm = D.shape[3];
      for (index_t i = 0; i < offset_bthd(0, reset, 0, T, X, Dm); ++i) zero = zero && D.data[i] == 0.0;
    }
    for (index_t i = offset_bthd(0, reset, 0, T, 2, 16); i < offset_bthd(0, reset + 1, 0, T, 2, 16); ++i)
      zero = zero && gr.dg.data[i] == 0.0;  // d/dg of exp(g) at g = -inf
    for (double e : gr.dh0.data) zero = zero && e == 0.0;
    std::printf("  [measured] %s: every gradient before the reset (and dg at it, dh0) exactly 0: %d\n",
                form == Form::chunk ? "chunk" : "recurrent", zero);
    REQUIRE(zero);
  }
}

TEST_CASE("11. gradients of a prefix-only loss vanish exactly beyond the prefix", "[backward]") {
  Rng rng(11);
  const index_t T = 130;
  const auto x = random_layer<double>(rng, 2, T, 2, 2, 8, 6, [](Rng& r) { return r.uniform(-0.1, 0); }, true);
  for (index_t P : {1, 17, 63, 64, 100}) {
    auto up = random_upstream(rng, x);
    up.dht = {};
    for (index_t n = 0; n < 2; ++n)
      for (index_t i = offset_bthd(n, P, 0, T, 2, 6); i < offset_bthd(n, T, 0, T, 2, 6); ++i) up.do_.data[i] = 0;
    for (Form form : {Form::recurrent, Form::chunk}) {
      const auto gr = backward(form, x, up.do_, up.dht, ForwardOptions{});
      bool zero = true, some = false;
      for (int j = 0; j < 6; ++j) {
        const Tensor<double>& D = gradient_tensor(gr, j);
        const index_t X = D.shape[2], Dm = D.shape[3];
        for (index_t n = 0; n < 2; ++n) {
          for (index_t i = offset_bthd(n, P, 0, T, X, Dm); i < offset_bthd(n, T, 0, T, X, Dm); ++i) zero = zero && D.data[i] == 0.0;
          for (index_t i = offset_bthd(n, 0, 0, T, X, Dm); i < offset_bthd(n, P, 0, T, X, Dm); ++i) some = some || D.data[i] != 0.0;
        }
      }
      std::printf("  [measured] P=%ld %s: gradients beyond P exactly 0: %d (and nonzero before P: %d)\n", long(P),
                  form == Form::chunk ? "chunk" : "recurrent", zero, some);
      REQUIRE(zero);
      REQUIRE(some);
    }
  }
}

TEST_CASE("15. tied gates: d beta = sum db + sum dw (Eq. 48), checked by complex step", "[backward]") {
  // beta per key head [B,T,H] (value head hv takes key head hv / (HV/H)'s β) and per value head [B,T,HV].
  for (const bool per_value_head : {false, true}) {
    const index_t B = 1, T = 40, H = 2, HV = 4, K = 6, V = 5, HBeta = per_value_head ? HV : H;
    Rng rng(48);
    const auto x = random_layer<double>(rng, B, T, H, HV, K, V, [](Rng& r) { return r.uniform(-0.3, 0); }, true);
    const auto up = random_upstream(rng, x);
    Tensor<double> beta({B, T, HBeta});
    for (auto& e : beta.data) e = rng.uniform();
    Layer<double> tied = x;
    tie_gates(Variant::kda, tied.g, tied.b, tied.w, x.g, beta, B, T, H, K, HV, V);
    REQUIRE(tied.b.shape == std::vector<index_t>{B, T, HBeta, K});
    ForwardOptions opt;
    opt.chunk_size = 16;
    const auto gr = backward(Form::chunk, tied, up.do_, up.dht, opt);
    Tensor<double> dg_in, dbeta;
    tie_gates_backward(Variant::kda, dg_in, dbeta, gr.dg, gr.db, gr.dw);
    REQUIRE(dbeta.shape == beta.shape);
    // Complex step along a random direction u of β: b = β·1, w = β·1 built directly in complex arithmetic.
    Tensor<double> u({B, T, HBeta});
    for (auto& e : u.data) e = rng.normal();
    using cd = std::complex<double>;
    Layer<cd> xc{cast<cd>(tied.q), cast<cd>(tied.k), cast<cd>(tied.v), cast<cd>(tied.g), cast<cd>(tied.b), cast<cd>(tied.w), cast<cd>(tied.h0)};
    const double eps = 1e-20;
    for (index_t i = 0; i < xc.b.numel(); ++i) xc.b.data[i] += cd(0, eps * u.data[i / K]);
    for (index_t i = 0; i < xc.w.numel(); ++i) {
      const index_t bt = i / (HV * V), hv = (i / V) % HV;
      xc.w.data[i] += cd(0, eps * u.data[bt * HBeta + hv / (HV / HBeta)]);
    }
    const double cs = std::imag(layer_loss(Form::chunk, xc, cast<cd>(up.do_), cast<cd>(up.dht), opt)) / eps;
    double analytic = 0, norm = 0;
    for (index_t i = 0; i < u.numel(); ++i) analytic += dbeta.data[i] * u.data[i], norm += dbeta.data[i] * dbeta.data[i];
    const double err = std::abs(cs - analytic) / std::sqrt(norm * double(u.numel()));
    log_measure(std::string("d beta (Eq. 48) vs complex step, beta per ") + (per_value_head ? "value" : "key") + " head",
                err, 1e-12);
    REQUIRE(err <= 1e-12);
  }
}

TEST_CASE("front-end VJPs agree with finite differences", "[backward]") {
  Rng rng(86);
  auto fd_check = [&](const std::string& name, Tensor<double> x0, auto f, auto vjp) {
    // L(x) = <c, f(x)>; analytic dL/dx = vjp(c) at x0.
    const Tensor<double> y0 = f(x0);
    Tensor<double> c(y0.shape), u(x0.shape);
    for (auto& e : c.data) e = rng.normal();
    for (auto& e : u.data) e = rng.normal();
    const Tensor<double> dx = vjp(c, x0);
    auto L = [&](const Tensor<double>& x) {
      const Tensor<double> y = f(x);
      double s = 0;
      for (index_t i = 0; i < y.numel(); ++i) s += c.data[i] * y.data[i];
      return s;
    };
    auto xp = x0, xm = x0;
    double analytic = 0, gnorm = 0, unorm = 0;
    const double h = 1e-6;
    for (index_t i = 0; i < u.numel(); ++i) {
      xp.data[i] += h * u.data[i], xm.data[i] -= h * u.data[i];
      analytic += dx.data[i] * u.data[i], gnorm += dx.data[i] * dx.data[i], unorm += u.data[i] * u.data[i];
    }
    const double fd = (L(xp) - L(xm)) / (2 * h);
    const double err = std::abs(fd - analytic) / std::sqrt(gnorm * unorm);
    log_measure("front-end " + name + " VJP vs finite differences", err, 1e-6);
    REQUIRE(err <= 1e-6);
  };
  Tensor<double> x({2, 3, 2, 5});
  for (auto& e : x.data) e = rng.normal();
  fd_check("l2norm", x, [](Tensor<double> t) { l2normalize_last_axis(t); return t; },
           [](Tensor<double> c, const Tensor<double>& x0) { l2normalize_backward(c, x0); return c; });
  for (double upper : {1.0, 2.0})
    fd_check("sigmoid gate x" + std::to_string(int(upper)), x, [upper](Tensor<double> t) { sigmoid_gate(t, upper); return t; },
             [upper](Tensor<double> c, const Tensor<double>& x0) {
               Tensor<double> gate = x0;
               sigmoid_gate(gate, upper);
               sigmoid_gate_backward(c, gate, upper);
               return c;
             });
  Tensor<double> A_log({2}), dt_bias({10});
  for (auto& e : A_log.data) e = rng.normal();
  for (auto& e : dt_bias.data) e = rng.normal();
  auto softplus_g = [&](Tensor<double> t, const Tensor<double>& a, const Tensor<double>& db) { softplus_decay(t, a, db); return t; };
  auto softplus_vjp = [&](int which) {
    return [&, which](Tensor<double> c, const Tensor<double>& p) {
      const Tensor<double> xs = which == 0 ? p : x, as = which == 1 ? p : A_log, ds = which == 2 ? p : dt_bias;
      Tensor<double> dA, ddt;
      softplus_decay_backward(c, dA, ddt, xs, softplus_g(xs, as, ds), as, ds);
      return which == 0 ? c : which == 1 ? dA : ddt;
    };
  };
  fd_check("softplus decay d logits", x, [&](const Tensor<double>& t) { return softplus_g(t, A_log, dt_bias); }, softplus_vjp(0));
  fd_check("softplus decay d A_log", A_log, [&](const Tensor<double>& a) { return softplus_g(x, a, dt_bias); }, softplus_vjp(1));
  fd_check("softplus decay d dt_bias", dt_bias, [&](const Tensor<double>& d) { return softplus_g(x, A_log, d); }, softplus_vjp(2));
  auto bounded_g = [&](Tensor<double> t, const Tensor<double>& db) { bounded_decay(t, db, -4.0); return t; };
  fd_check("bounded decay d logits", x, [&](const Tensor<double>& t) { return bounded_g(t, dt_bias); },
           [&](Tensor<double> c, const Tensor<double>& p) { Tensor<double> ddt; bounded_decay_backward(c, ddt, p, dt_bias, -4.0); return c; });
  fd_check("bounded decay d dt_bias", dt_bias, [&](const Tensor<double>& d) { return bounded_g(x, d); },
           [&](Tensor<double> c, const Tensor<double>& p) { Tensor<double> ddt; bounded_decay_backward(c, ddt, x, p, -4.0); return ddt; });
}

// Before: a task's exception (std::bad_alloc of a chunk size of 2^20 on a long sequence) left its thread and ended the
// process (SIGABRT, from the command line and from Python); it now reaches the caller, which reports it.
TEST_CASE("22. an exception in one head's task reaches the caller, from any thread count", "[backward]") {
  for (int threads : {1, 3, 8}) {
    std::atomic<int> ran{0};
    bool caught = false;
    try {
      detail::parallel_for_heads(4, 6, threads, [&](index_t n, index_t hv) {
        ++ran;
        if (n == 1 && hv == 2) throw std::bad_alloc();
      });
    } catch (const std::bad_alloc&) {
      caught = true;
    }
    std::printf("  [measured] %d thread(s): bad_alloc in task (1, 2) caught by the caller: %d, tasks run: %d of 24\n",
                threads, int(caught), ran.load());
    REQUIRE(caught);
  }
}

TEST_CASE("22. gradients are bitwise identical across thread counts and packed sequences do not interact", "[backward]") {
  Rng rng(22);
  const std::vector<index_t> cu = {0, 20, 90, 130};
  auto x = random_layer<double>(rng, 1, 130, 2, 4, 8, 6, [](Rng& r) { return r.uniform(-0.2, 0); }, true, 3);
  x.cu_seqlens = cu;
  const auto up = random_upstream(rng, x);
  for (Form form : {Form::recurrent, Form::chunk}) {
    ForwardOptions one;
    one.num_threads = 1;
    const auto base = backward(form, x, up.do_, up.dht, one);
    for (int threads : {2, 3, 8}) {
      ForwardOptions many;
      many.num_threads = threads;
      const auto again = backward(form, x, up.do_, up.dht, many);
      for (int j = 0; j < 7; ++j) REQUIRE(bitwise_equal(gradient_tensor(base, j), gradient_tensor(again, j)));
    }
    auto y = x;  // change sequence 1 only: the gradients of sequences 0 and 2 must not move
    for (index_t i = offset_row(20, 0, 4, 6); i < offset_row(90, 0, 4, 6); ++i) y.v.data[i] += 0.5;
    const auto moved = backward(form, y, up.do_, up.dht, one);
    for (index_t row : {index_t(0), index_t(19), index_t(90), index_t(129)})
      for (index_t i = offset_row(row, 0, 2, 8); i < offset_row(row + 1, 0, 2, 8); ++i) {
        REQUIRE(moved.dq.data[i] == base.dq.data[i]);
        REQUIRE(moved.dg.data[i] == base.dg.data[i]);
      }
  }
}
