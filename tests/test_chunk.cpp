// gdn2 tests [chunk] — the chunkwise WY form against the token recurrence (REF), docs/numerics.md 1-10,
// and the triangular solve of Eq. 21.
#include "helpers.hpp"

using namespace gdn2;
using namespace gdn2::test;

namespace {

// Bounds, with where they come from: float64 chunk vs float64 REF differs by rounding alone (≈1e-16 per
// operation, a few hundred operations deep), so 1e-12 leaves 1e3-1e4 of margin; float32 vs REF is the
// docs/numerics.md 19 output budget.
constexpr double kF64 = 1e-12;
constexpr double kF32 = 1e-5;

// Compares the chunk form in float64 (and float32 when f32 is set) with float64 REF.
template <typename GateFn>
void check_case(const std::string& name, Shape s, GateFn gate, bool f32, index_t C = 64, bool h0 = false,
                unsigned seed = 1) {
  Rng rng(seed);
  const auto x = random_layer<double>(rng, s.B, s.T, s.H, s.HV, s.K, s.V, gate, h0);
  const auto ref = run(Form::recurrent, x, C);
  const auto c64 = run(Form::chunk, x, C);
  REQUIRE(all_finite(ref.o));
  REQUIRE(all_finite(c64.o));
  REQUIRE(all_finite(c64.ht));
  require_ratio(name + " fp64 o", c64.o, ref.o, kF64);
  require_ratio(name + " fp64 ht", c64.ht, ref.ht, kF64);
  if (f32) {
    const auto c32 = run(Form::chunk, cast_layer<float>(x), C);
    REQUIRE(all_finite(c32.o));
    require_ratio(name + " fp32 o", c32.o, ref.o, kF32);
    require_ratio(name + " fp32 ht", c32.ht, ref.ht, kF32);
  }
}

}  // namespace

TEST_CASE("1. mild gates: chunk equals recurrence", "[chunk]") {
  check_case("mild g~U(-0.05,0)", {}, [](Rng& r) { return r.uniform(-0.05, 0); }, true, 64, true);
}

TEST_CASE("2. every chunk size gives the same result", "[chunk]") {
  for (index_t C : {1, 2, 3, 16, 32, 64, 128, 257}) {
    Shape s;
    s.T = 130;
    check_case("C=" + std::to_string(C), s, [](Rng& r) { return r.uniform(-0.1, 0); }, false, C, true);
  }
}

TEST_CASE("3. ragged T: right shapes and equal results", "[chunk]") {
  for (index_t T : {1, 15, 16, 17, 63, 64, 65, 100, 130}) {
    Shape s;
    s.T = T;
    Rng rng(3);
    const auto x = random_layer<double>(rng, s.B, s.T, s.H, s.HV, s.K, s.V, [](Rng& r) { return r.uniform(-0.1, 0); });
    const auto c = run(Form::chunk, x);
    CHECK(c.o.shape == std::vector<index_t>{s.B, T, s.HV, s.V});
    CHECK(c.ht.shape == std::vector<index_t>{s.B, s.HV, s.K, s.V});
    check_case("T=" + std::to_string(T), s, [](Rng& r) { return r.uniform(-0.1, 0); }, false);
  }
}

TEST_CASE("4. float32 overflow boundary of exp(-cumsum g)", "[chunk]") {
  // Constant g = -1.40 over C = 64 makes γ⁻¹ = exp(89.6) = inf in float32; -1.30 (exp(83.2)) survives.
  for (double g : {-1.40, -1.30})
    check_case("const g=" + std::to_string(g), {}, [g](Rng&) { return g; }, true);
}

TEST_CASE("5. float64 overflow boundary", "[chunk]") {
  // -11.2 * 64 = -716.8 < -709.8: exp(-G) overflows float64.
  check_case("const g=-11.2", {}, [](Rng&) { return -11.2; }, false);
  check_case("g~U(-50,-5)", {}, [](Rng& r) { return r.uniform(-50, -5); }, false);
}

TEST_CASE("6. g = -inf: a full reset equals a fresh run", "[chunk]") {
  Shape s;
  s.T = 150;
  const index_t reset = 70;  // inside the second chunk
  Rng rng(6);
  auto x = random_layer<double>(rng, s.B, s.T, s.H, s.HV, s.K, s.V, [](Rng& r) { return r.uniform(-0.05, 0); }, true);
  SECTION("all channels") {
    for (index_t n = 0; n < s.B; ++n)
      for (index_t h = 0; h < s.H; ++h)
        for (index_t d = 0; d < s.K; ++d) x.g.data[offset_bthd(n, reset, h, s.T, s.H, s.K) + d] = -INFINITY;
    const auto ref = run(Form::recurrent, x);
    for (index_t C : {16, 64, 128}) {
      const auto c = run(Form::chunk, x, C);
      REQUIRE(all_finite(c.o));
      REQUIRE(all_finite(c.ht));
      require_ratio("reset C=" + std::to_string(C) + " o vs REF", c.o, ref.o, kF64);
      require_ratio("reset C=" + std::to_string(C) + " ht vs REF", c.ht, ref.ht, kF64);
    }
    // A fresh run on tokens [reset, T) from a zero state.
    auto tail = [&](const Tensor<double>& t) {
      const index_t Hx = t.shape[2], D = t.shape[3];
      Tensor<double> out({s.B, s.T - reset, Hx, D});
      for (index_t n = 0; n < s.B; ++n)
        std::copy(t.data.begin() + offset_bthd(n, reset, 0, s.T, Hx, D), t.data.begin() + offset_bthd(n, s.T, 0, s.T, Hx, D),
                  out.data.begin() + offset_bthd(n, 0, 0, s.T - reset, Hx, D));
      return out;
    };
    const Layer<double> fresh{tail(x.q), tail(x.k), tail(x.v), tail(x.g), tail(x.b), tail(x.w), {}};
    const auto f = run(Form::recurrent, fresh);
    const auto c = run(Form::chunk, x, 64);
    require_ratio("outputs after the reset vs fresh run", tail(c.o), f.o, kF64);
    require_ratio("final state vs fresh run", c.ht, f.ht, kF64);
  }
  SECTION("one channel") {
    for (index_t n = 0; n < s.B; ++n) x.g.data[offset_bthd(n, reset, 1, s.T, s.H, s.K) + 5] = -INFINITY;
    const auto ref = run(Form::recurrent, x);
    const auto c = run(Form::chunk, x, 64);
    REQUIRE(all_finite(c.o));
    require_ratio("one-channel reset o", c.o, ref.o, kF64);
    require_ratio("one-channel reset ht", c.ht, ref.ht, kF64);
    const auto c32 = run(Form::chunk, cast_layer<float>(x), 64);
    REQUIRE(all_finite(c32.o));
    require_ratio("one-channel reset fp32 o", c32.o, ref.o, kF32);
  }
}

TEST_CASE("7. one huge reset token among mild gates", "[chunk]") {
  for (double huge : {-1e4, -1e6}) {
    const index_t at = 100;  // a mid-chunk token of the second chunk
    Shape s;
    Rng rng(7);
    auto x = random_layer<double>(rng, s.B, s.T, s.H, s.HV, s.K, s.V, [](Rng& r) { return r.uniform(-0.05, 0); }, true);
    for (index_t n = 0; n < s.B; ++n)
      for (index_t h = 0; h < s.H; ++h)
        for (index_t d = 0; d < s.K; ++d) x.g.data[offset_bthd(n, at, h, s.T, s.H, s.K) + d] = huge;
    const auto ref = run(Form::recurrent, x);
    const auto c = run(Form::chunk, x);
    const auto c32 = run(Form::chunk, cast_layer<float>(x));
    const std::string name = "reset g=" + std::to_string(huge);
    require_ratio(name + " fp64 o", c.o, ref.o, kF64);
    require_ratio(name + " fp64 ht", c.ht, ref.ht, kF64);
    require_ratio(name + " fp32 o", c32.o, ref.o, kF32);
    require_ratio(name + " fp32 ht", c32.ht, ref.ht, kF32);
  }
}

TEST_CASE("8. stress gates: half at -1000 and the rest log-sigmoid of N(0 1)", "[chunk]") {
  check_case("stress", {}, [](Rng& r) { return r.uniform() < 0.5 ? -1000.0 : log_sigmoid(r.normal()); }, true);
}

TEST_CASE("9. no decay with b up to 2 (negative eigenvalues)", "[chunk]") {
  Shape s;
  Rng rng(9);
  auto x = random_layer<double>(rng, s.B, s.T, s.H, s.HV, s.K, s.V, [](Rng&) { return 0.0; });
  for (auto& e : x.b.data) e *= 2;
  ForwardOptions opt;
  opt.allow_negative_eigen = true;
  Out<double> ref, c;
  Out<float> c32;
  const auto x32 = cast_layer<float>(x);
  recurrent_forward(ref.o, ref.ht, x.q, x.k, x.v, x.g, x.b, x.w, x.h0, {}, opt);
  chunk_forward(c.o, c.ht, x.q, x.k, x.v, x.g, x.b, x.w, x.h0, {}, opt);
  chunk_forward(c32.o, c32.ht, x32.q, x32.k, x32.v, x32.g, x32.b, x32.w, x32.h0, {}, opt);
  require_ratio("g=0, b~U(0,2) fp64 o", c.o, ref.o, kF64);
  require_ratio("g=0, b~U(0,2) fp64 ht", c.ht, ref.ht, kF64);
  require_ratio("g=0, b~U(0,2) fp32 o", c32.o, ref.o, kF32);
  // Without the option, b > 1 is refused.
  REQUIRE_THROWS_AS(chunk_forward(c.o, c.ht, x.q, x.k, x.v, x.g, x.b, x.w, x.h0, {}, ForwardOptions{}), InputError);
}

namespace {

// K = 2, V = 1, g = 0: two alternating (k, b) pairs whose product has spectral radius > 1 although g <= 0
// and b is bounded (the update matrix is not normal). Found by a random search; radius per pair ≈1.19 for
// b <= 1 and ≈1.46 for b <= 2.
Layer<double> growth_layer(index_t T, bool b_up_to_2) {
  const double th[2] = {b_up_to_2 ? 2.52 : 2.70, b_up_to_2 ? 1.99 : 2.01};
  const double bb[2][2] = {{b_up_to_2 ? 0.24 : 0.026, b_up_to_2 ? 1.87 : 0.73}, {b_up_to_2 ? 1.88 : 0.93, b_up_to_2 ? 0.026 : 0.016}};
  Layer<double> x{Tensor<double>({1, T, 1, 2}), Tensor<double>({1, T, 1, 2}), Tensor<double>({1, T, 1, 1}),
                        Tensor<double>({1, T, 1, 2}), Tensor<double>({1, T, 1, 2}), Tensor<double>({1, T, 1, 1}), {}};
  for (index_t t = 0; t < T; ++t) {
    const int p = t % 2;
    x.k.data[2 * t] = x.q.data[2 * t] = std::cos(th[p]);
    x.k.data[2 * t + 1] = x.q.data[2 * t + 1] = std::sin(th[p]);
    x.b.data[2 * t] = bb[p][0];
    x.b.data[2 * t + 1] = bb[p][1];
    x.v.data[t] = t == 0 ? 1.0 : 0.0;  // one write, then pure transitions
    x.w.data[t] = 1.0;
  }
  return x;
}

}  // namespace

TEST_CASE("10. non-normal growth: relative accuracy and reported float32 overflow", "[chunk]") {
  ForwardOptions opt;
  opt.allow_negative_eigen = true;
  Out<double> ref, c;
  const auto x = growth_layer(256, false);
  recurrent_forward(ref.o, ref.ht, x.q, x.k, x.v, x.g, x.b, x.w, x.h0, {}, opt);
  double growth = 0;
  for (double e : ref.ht.data) growth = std::max(growth, std::abs(e));
  log_measure("state growth max|S_T| with g = 0, b <= 1 (must exceed 1)", growth, 1.0);
  REQUIRE(growth > 1e3);
  for (index_t C : {16, 64}) {
    opt.chunk_size = C;
    chunk_forward(c.o, c.ht, x.q, x.k, x.v, x.g, x.b, x.w, x.h0, {}, opt);
    require_ratio("growth C=" + std::to_string(C) + " fp64 o", c.o, ref.o, kF64);
    require_ratio("growth C=" + std::to_string(C) + " fp64 ht", c.ht, ref.ht, kF64);
  }
  // With b <= 2 and T = 1024 the true state exceeds float32's range (≈1.46^512 ≈ 1e84) but not float64's.
  const auto big = growth_layer(1024, true);
  recurrent_forward(ref.o, ref.ht, big.q, big.k, big.v, big.g, big.b, big.w, big.h0, {}, opt);
  REQUIRE(all_finite(ref.ht));
  const auto big32 = cast_layer<float>(big);
  Out<float> c32;
  chunk_forward(c32.o, c32.ht, big32.q, big32.k, big32.v, big32.g, big32.b, big32.w, big32.h0, {}, opt);
  // Documented behaviour: the float32 result carries inf/NaN (never silently wrong finite numbers), and the
  // CLI turns that into exit status 3 (tested in test_cli.cpp).
  CHECK_FALSE(all_finite(c32.ht));
  // Every finite float32 output must still be accurate: compare where the reference fits in float32.
  double worst = 0;
  for (index_t i = 0; i < c32.o.numel(); ++i)
    if (std::isfinite(c32.o.data[i]) && std::abs(ref.o.data[i]) < 1e30)
      worst = std::max(worst, std::abs(c32.o.data[i] - ref.o.data[i]) / std::max(1.0, std::abs(ref.o.data[i])));
  log_measure("growth fp32: worst relative error of the finite outputs", worst, 1e-3);
  CHECK(worst <= 1e-3);
}

TEST_CASE("triangular solve: A (I + T) = I and agreement with the Eigen solver", "[chunk]") {
  Rng rng(11);
  for (Eigen::Index L : {1, 2, 17, 64}) {
    Mat<double> T = Mat<double>::Zero(L, L);
    for (Eigen::Index r = 0; r < L; ++r)
      for (Eigen::Index s = 0; s < r; ++s) T(r, s) = rng.uniform(-1, 1) / std::sqrt(double(L));
    const Mat<double> A = solve_unit_lower(T);
    const Mat<double> I = Mat<double>::Identity(L, L);
    const double residual = (A * (I + T) - I).norm();
    log_measure("||A (I+T) - I||_F, L=" + std::to_string(L), residual, 1e-12);
    REQUIRE(residual <= 1e-12);
    const Mat<double> eigen = (I + T).triangularView<Eigen::UnitLower>().solve(I);
    const double diff = (A - eigen).norm() / eigen.norm();
    log_measure("A vs triangularView<UnitLower>().solve, L=" + std::to_string(L), diff, 1e-14);
    REQUIRE(diff <= 1e-14);
    REQUIRE(A.triangularView<Eigen::StrictlyUpper>().toDenseMatrix().isZero(0));
  }
}

TEST_CASE("exp_exact: exactly 0 below the double range, where Eigen's vectorised exp is not", "[chunk]") {
  RowVec<double> x(4);
  x << -INFINITY, -1000.0, -745.2, -700.0;
  const RowVec<double> e = exp_exact(x);
  REQUIRE(e(0) == 0.0);
  REQUIRE(e(1) == 0.0);
  REQUIRE(e(2) == 0.0);
  REQUIRE(e(3) == std::exp(-700.0));
  const RowVec<double> eigen = x.array().exp();
  std::printf("  [measured] Eigen's .exp() of -inf gives %.3e (this is why the reference uses exp_exact)\n", eigen(0));
}
