// gdn2 tests [value-head gates] — g and b given per value head, [B,T,HV,K] (flash-linear-attention's
// fused_recurrent_gdn2 layout), next to the per-key-head [B,T,H,K] layout, each gate independently.
//   - gates equal within a group give the bits of the per-key-head gates, forward and backward (dg, db summed over
//     the group in head order equal the key-head gradients bit for bit);
//   - distinct per-value-head gates: the backward of both forms against finite differences and complex-step
//     derivatives, chunk = recurrent, results independent of the thread count;
//   - a gate of any other shape is refused with one line naming it and both allowed shapes.
#include "helpers.hpp"

#include <initializer_list>
#include <tuple>

#include "core/gradcheck.hpp"

using namespace gdn2;
using namespace gdn2::test;

namespace {

// [B,T,H,K] → [B,T,HV,K]: value head hv gets a copy of key head hv / (HV/H)'s row.
Tensor<double> repeat_per_value_head(const Tensor<double>& x, index_t HV) {
  const index_t B = x.shape[0], T = x.shape[1], H = x.shape[2], K = x.shape[3];
  Tensor<double> y({B, T, HV, K});
  for (index_t bt = 0; bt < B * T; ++bt)
    for (index_t hv = 0; hv < HV; ++hv)
      for (index_t d = 0; d < K; ++d) y.data[offset_row(bt, hv, HV, K) + d] = x.data[offset_row(bt, hv / (HV / H), H, K) + d];
  return y;
}

// [B,T,HV,K] → [B,T,H,K]: the sum over each group's value heads in head order, starting from zero.
Tensor<double> sum_over_groups(const Tensor<double>& y, index_t H) {
  const index_t B = y.shape[0], T = y.shape[1], HV = y.shape[2], K = y.shape[3];
  Tensor<double> x({B, T, H, K});
  for (index_t bt = 0; bt < B * T; ++bt)
    for (index_t hv = 0; hv < HV; ++hv)
      for (index_t d = 0; d < K; ++d) x.data[offset_row(bt, hv / (HV / H), H, K) + d] += y.data[offset_row(bt, hv, HV, K) + d];
  return x;
}

Tensor<double> random_like(Rng& rng, const std::vector<index_t>& shape) {
  Tensor<double> t(shape);
  for (auto& e : t.data) e = rng.normal();
  return t;
}

struct Case {
  std::string name;
  index_t B, T, H, HV, K, V, C;
  std::vector<index_t> cu;
};

const std::vector<Case> kCases = {
    {"B=2 T=70 H=2 HV=6, h0, C=16", 2, 70, 2, 6, 8, 6, 16, {}},
    {"packed [0,9,40,53] H=1 HV=3, C=16", 1, 53, 1, 3, 6, 5, 16, {0, 9, 40, 53}},
    {"HV = H = 2 (both layouts alike), C=8", 1, 33, 2, 2, 5, 4, 8, {}},
};

Layer<double> make_layer(Rng& rng, const Case& c, double g_lo) {
  const index_t N = c.cu.empty() ? c.B : index_t(c.cu.size()) - 1;
  auto x = random_layer<double>(rng, c.B, c.T, c.H, c.HV, c.K, c.V, [&](Rng& r) { return r.uniform(g_lo, 0); }, true, N);
  x.cu_seqlens = c.cu;
  return x;
}

}  // namespace

TEST_CASE("value-head gates equal within a group give the per-key-head bits, forward and backward", "[value-head gates]") {
  for (const auto& c : kCases) {
    Rng rng(21);
    const auto x = make_layer(rng, c, -1.0);
    const index_t N = c.cu.empty() ? c.B : index_t(c.cu.size()) - 1;
    const auto do_ = random_like(rng, x.v.shape), dht = random_like(rng, {N, c.HV, c.K, c.V});
    ForwardOptions opt;
    opt.chunk_size = c.C;
    // Each gate per value head on its own, and both.
    for (const auto& [g_value, b_value] : std::initializer_list<std::pair<bool, bool>>{{true, false}, {false, true}, {true, true}}) {
      auto y = x;
      if (g_value) y.g = repeat_per_value_head(x.g, c.HV);
      if (b_value) y.b = repeat_per_value_head(x.b, c.HV);
      const std::string layout = c.name + (g_value ? " g[B,T,HV,K]" : "") + (b_value ? " b[B,T,HV,K]" : "");
      for (Form form : {Form::recurrent, Form::chunk}) {
        const std::string what = layout + (form == Form::chunk ? " chunk" : " recurrent");
        Tensor<double> o_key, ht_key, o_val, ht_val;
        forward(form, o_key, ht_key, x, opt);
        forward(form, o_val, ht_val, y, opt);
        CAPTURE(what, ratio(o_val, o_key), ratio(ht_val, ht_key));
        REQUIRE(bitwise_equal(o_val, o_key));
        REQUIRE(bitwise_equal(ht_val, ht_key));
        const auto gk = backward(form, x, do_, dht, opt), gv = backward(form, y, do_, dht, opt);
        REQUIRE(gv.dg.shape == y.g.shape);
        REQUIRE(gv.db.shape == y.b.shape);
        const Tensor<double> dg = g_value ? sum_over_groups(gv.dg, c.H) : gv.dg;
        const Tensor<double> db = b_value ? sum_over_groups(gv.db, c.H) : gv.db;
        using Row = std::tuple<const char*, const Tensor<double>*, const Tensor<double>*>;
        for (const auto& [name, a, b] : std::initializer_list<Row>{
                 {"dq", &gv.dq, &gk.dq}, {"dk", &gv.dk, &gk.dk}, {"dv", &gv.dv, &gk.dv}, {"dw", &gv.dw, &gk.dw},
                 {"dh0", &gv.dh0, &gk.dh0}, {"dg (group sum)", &dg, &gk.dg}, {"db (group sum)", &db, &gk.db}}) {
          const double r = ratio(*a, *b);
          std::printf("  [measured] %-70s ratio %.1e, bitwise equal: %s\n", (what + " " + name).c_str(), r,
                      bitwise_equal(*a, *b) ? "yes" : "no");
          CAPTURE(what, name, r);
          REQUIRE(bitwise_equal(*a, *b));
        }
      }
    }
  }
}

TEST_CASE("distinct value-head gates: both backwards vs finite differences and complex-step derivatives", "[value-head gates]") {
  for (const auto& c : kCases) {
    for (const auto& [g_value, b_value] : std::initializer_list<std::pair<bool, bool>>{{true, true}, {true, false}, {false, true}}) {
      if (c.HV == c.H && !(g_value && b_value)) continue;  // the layouts coincide
      Rng rng(22);
      auto x = make_layer(rng, c, -0.5);
      const Layer<double> key = x;
      random_value_head_gates(rng, x, [](Rng& r) { return r.uniform(-0.5, 0); });
      if (!g_value) x.g = key.g;
      if (!b_value) x.b = key.b;
      const index_t N = c.cu.empty() ? c.B : index_t(c.cu.size()) - 1;
      const auto do_ = random_like(rng, x.v.shape), dht = random_like(rng, {N, c.HV, c.K, c.V});
      ForwardOptions opt;
      opt.chunk_size = c.C;
      const std::string layout = c.name + (g_value ? " g[B,T,HV,K]" : "") + (b_value ? " b[B,T,HV,K]" : "");
      for (Form form : {Form::recurrent, Form::chunk})
        for (const auto& r : gradient_oracles(form, x, do_, dht, opt, rng, 2, {0, 15, 16, c.C - 1, c.C, c.T - 1})) {
          const std::string what = layout + (form == Form::chunk ? " chunk d" : " recurrent d") + r.tensor;
          log_measure(what + " finite differences", r.finite_difference, 1e-6);
          log_measure(what + " complex step", r.complex_step, 1e-12);
          REQUIRE(r.finite_difference <= 1e-6);
          REQUIRE(r.complex_step <= 1e-12);
        }
    }
  }
}

TEST_CASE("distinct value-head gates: chunk = recurrent, and the thread count changes no bit", "[value-head gates]") {
  for (const auto& c : kCases) {
    Rng rng(23);
    auto x = make_layer(rng, c, -2.0);
    const auto key = x;
    random_value_head_gates(rng, x, [](Rng& r) { return r.uniform(-2, 0); });
    // The gates matter: per-value-head gates that differ within a group change the output.
    if (c.HV > c.H) {
      const auto o_key = run(Form::recurrent, key, c.C, c.cu), o_val = run(Form::recurrent, x, c.C, c.cu);
      const double r = ratio(o_val.o, o_key.o);
      std::printf("  [measured] %-58s %.3e  (must be > 1e-3)\n", (c.name + " o, distinct vs key-head gates").c_str(), r);
      REQUIRE(r > 1e-3);
    }
    const index_t N = c.cu.empty() ? c.B : index_t(c.cu.size()) - 1;
    const auto do_ = random_like(rng, x.v.shape), dht = random_like(rng, {N, c.HV, c.K, c.V});
    ForwardOptions opt;
    opt.num_threads = 1;
    const auto ref = run(Form::recurrent, x, c.C, c.cu);
    const auto rec = backward(Form::recurrent, x, do_, dht, opt);
    for (index_t C : {index_t(1), c.C, index_t(64)}) {
      const auto chk = run(Form::chunk, x, C, c.cu);
      require_ratio(c.name + " C=" + std::to_string(C) + " o chunk vs recurrent", chk.o, ref.o, 1e-12);
      require_ratio(c.name + " C=" + std::to_string(C) + " ht chunk vs recurrent", chk.ht, ref.ht, 1e-12);
      opt.chunk_size = C;
      const auto gc = backward(Form::chunk, x, do_, dht, opt);
      for (int j = 0; j < 7; ++j)
        require_ratio(c.name + " C=" + std::to_string(C) + " d" + kLayerTensorNames[j] + " chunk vs recurrent",
                      gradient_tensor(gc, j), gradient_tensor(rec, j), 1e-10);
    }
    opt.chunk_size = c.C;
    const auto one = backward(Form::chunk, x, do_, dht, opt);
    opt.num_threads = 3;
    const auto three = backward(Form::chunk, x, do_, dht, opt);
    const auto o1 = run(Form::chunk, x, c.C, c.cu, 1), o3 = run(Form::chunk, x, c.C, c.cu, 3);
    REQUIRE(bitwise_equal(o1.o, o3.o));
    for (int j = 0; j < 7; ++j) {
      CAPTURE(c.name, kLayerTensorNames[j]);
      REQUIRE(bitwise_equal(gradient_tensor(one, j), gradient_tensor(three, j)));
    }
  }
}

TEST_CASE("a gate of neither [B,T,H,K] nor [B,T,HV,K] is refused, naming it and both shapes", "[value-head gates]") {
  Rng rng(24);
  const auto x = random_layer<double>(rng, 1, 10, 2, 6, 4, 3, [](Rng& r) { return r.uniform(-1, 0); });
  Tensor<double> o, ht;
  const ForwardOptions opt;
  auto y = x;
  y.g = Tensor<double>({1, 10, 3, 4});  // 3 heads: neither H = 2 nor HV = 6
  const std::string g_msg =
      "g: shape [1,10,3,4], expected [1,10,2,4] [B,T,H,K] per key head or [1,10,6,4] [B,T,HV,K] per value head "
      "(one log-decay per key channel)";
  REQUIRE_THROWS_WITH(forward(Form::chunk, o, ht, y, opt), g_msg);
  REQUIRE_THROWS_WITH(backward(Form::recurrent, y, {}, {}, opt), g_msg);
  y = x;
  y.b = Tensor<double>({1, 10, 6, 3});  // per value head, but K wrong
  REQUIRE_THROWS_WITH(forward(Form::recurrent, o, ht, y, opt),
                      "b: shape [1,10,6,3], expected [1,10,2,4] [B,T,H,K] per key head or [1,10,6,4] [B,T,HV,K] per "
                      "value head (one erase gate per key channel)");
  y = x;
  y.b = Tensor<double>({1, 10, 6, 4});  // the per-value-head layout is checked for its range like the other
  y.b.data[7] = 1.5;
  REQUIRE_THROWS_WITH(forward(Form::chunk, o, ht, y, opt),
                      "b: value 1.5 at [0,0,1,3] (erase gate must lie in [0, 1]; [0, 2] needs --negative-eigen)");
}
