// gdn2 tests [variants] — tied-gate reductions against independent oracles (docs/numerics.md 15, paper A.5) and the
// optional front-end (q/k L2-normalisation, gate activations of Eq. 11-12).
#include "helpers.hpp"

#include "core/frontend.hpp"
#include "core/oracles.hpp"

using namespace gdn2;
using namespace gdn2::test;

TEST_CASE("15. b = w = beta*1 equals KDA (Eq. 7) and tying g too equals Gated DeltaNet", "[variants]") {
  const index_t B = 2, T = 150, H = 2, HV = 4, K = 32, V = 16;
  Rng rng(15);
  const auto x = random_layer<double>(rng, B, T, H, HV, K, V, [](Rng& r) { return r.uniform(-0.2, 0); });
  Tensor<double> beta({B, T, H}), g_head({B, T, H});
  for (auto& e : beta.data) e = rng.uniform();
  for (auto& e : g_head.data) e = rng.uniform(-0.2, 0);

  for (Variant variant : {Variant::kda, Variant::gdn}) {
    Tensor<double> g, b, w;
    tie_gates(variant, g, b, w, variant == Variant::kda ? x.g : g_head, beta, B, T, H, K, HV, V);
    const Layer<double> tied{x.q, x.k, x.v, g, b, w, {}};
    Tensor<double> oracle_o({B, T, HV, V});
    const double scale = 1.0 / std::sqrt(double(K));
    for (index_t n = 0; n < B; ++n)
      for (index_t hv = 0; hv < HV; ++hv) {
        const index_t h = hv / (HV / H);
        Mat<double> Q(T, K), Kk(T, K), G(T, K), Vv(T, V), S = Mat<double>::Zero(K, V);
        Eigen::VectorXd bt(T), gt(T);
        for (index_t t = 0; t < T; ++t) {
          for (index_t d = 0; d < K; ++d) {
            Q(t, d) = scale * x.q.data[offset_bthd(n, t, h, T, H, K) + d];
            Kk(t, d) = x.k.data[offset_bthd(n, t, h, T, H, K) + d];
            G(t, d) = x.g.data[offset_bthd(n, t, h, T, H, K) + d];
          }
          for (index_t d = 0; d < V; ++d) Vv(t, d) = x.v.data[offset_bthd(n, t, hv, T, HV, V) + d];
          bt(t) = beta.data[(n * T + t) * H + h];
          gt(t) = g_head.data[(n * T + t) * H + h];
        }
        const Mat<double> O = variant == Variant::kda ? oracle::kda_recurrence(S, Q, Kk, Vv, G, bt)
                                                      : oracle::gated_deltanet_recurrence(S, Q, Kk, Vv, gt, bt);
        for (index_t t = 0; t < T; ++t)
          for (index_t d = 0; d < V; ++d) oracle_o.data[offset_bthd(n, t, hv, T, HV, V) + d] = O(t, d);
      }
    for (Form form : {Form::recurrent, Form::chunk})
      require_ratio(std::string(variant_name(variant)) + (form == Form::chunk ? " chunk" : " recurrent") + " vs oracle",
                    run(form, tied).o, oracle_o, 1e-12);
  }
}

TEST_CASE("tie_gates: shapes and values of every variant", "[variants]") {
  const index_t B = 1, T = 3, H = 1, K = 2, HV = 2, V = 3;
  Tensor<double> beta({B, T, H}), g_in({B, T, H, K}), g, b, w;
  beta.data = {0.1, 0.5, 0.9};
  for (auto& e : g_in.data) e = -0.5;
  tie_gates(Variant::deltanet, g, b, w, {}, beta, B, T, H, K, HV, V);
  for (double e : g.data) REQUIRE(e == 0.0);  // no decay
  REQUIRE(b.data[2 * 1 + 1] == 0.5);           // b_t = β_t on every key channel
  REQUIRE(w.data[(2 * 2 + 1) * V + 2] == 0.9);  // w_t = β_t on every value channel of every value head
  tie_gates(Variant::linear, g, b, w, g_in, {}, B, T, H, K, HV, V);
  for (double e : b.data) REQUIRE(e == 0.0);  // no erase
  for (double e : w.data) REQUIRE(e == 1.0);  // full write
  REQUIRE(g.data[3] == -0.5);
  Tensor<double> bad_beta({B, T, H});
  bad_beta.data = {0.1, 1.5, 0.2};
  REQUIRE_THROWS_WITH(tie_gates(Variant::kda, g, b, w, g_in, bad_beta, B, T, H, K, HV, V), Catch::Contains("beta"));
}

TEST_CASE("front-end: L2 normalisation and gate activations", "[variants]") {
  Tensor<double> x({1, 2, 1, 3});
  x.data = {3, 4, 0, 0, 0, 0};
  l2normalize_last_axis(x);
  const double n0 = std::sqrt(25 + 1e-6);
  log_measure("l2norm row error", std::abs(x.data[0] - 3 / n0) + std::abs(x.data[1] - 4 / n0), 1e-15);
  REQUIRE(std::abs(x.data[0] - 3 / n0) <= 1e-15);
  REQUIRE(x.data[3] == 0.0);  // a zero row stays zero (the 1e-6 keeps it finite)

  for (double z : {-800.0, -30.0, -1.0, 0.0, 1.0, 30.0, 800.0}) {
    const double s = sigmoid(z), sp = softplus(z);
    REQUIRE(std::isfinite(s));
    REQUIRE(std::isfinite(sp));
    REQUIRE(s >= 0.0);
    REQUIRE(s <= 1.0);
    REQUIRE(sp >= 0.0);
    if (std::abs(z) < 30) {
      REQUIRE(std::abs(s - 1 / (1 + std::exp(-z))) <= 1e-15);
      REQUIRE(std::abs(sp - std::log(1 + std::exp(z))) <= 1e-14);
    }
  }
  // g = -exp(A_log) softplus(x + dt_bias) (Eq. 12), in [-inf, 0] for every finite logit.
  Tensor<double> logits({1, 1, 2, 2}), A_log({2}), dt_bias({4});
  logits.data = {-50, 0, 3, 700};
  A_log.data = {0.0, std::log(2.0)};
  dt_bias.data = {0, 1, 0, 0};
  softplus_decay(logits, A_log, dt_bias);
  REQUIRE(std::abs(logits.data[1] - (-std::log1p(std::exp(1.0)))) <= 1e-15);
  REQUIRE(std::abs(logits.data[2] - (-2 * std::log1p(std::exp(3.0)))) <= 1e-14);
  REQUIRE(logits.data[3] == -1400.0);
  for (double e : logits.data) REQUIRE(e <= 0.0);
  Tensor<double> bounded({1, 1, 1, 2}), bias({2});
  bounded.data = {-1000, 1000};
  bias.data = {0, 0};
  bounded_decay(bounded, bias, -5.0);
  REQUIRE(bounded.data[0] == Approx(0.0).margin(1e-300));
  REQUIRE(bounded.data[1] == -5.0);
  REQUIRE_THROWS_AS(bounded_decay(bounded, bias, 1.0), InputError);
}
