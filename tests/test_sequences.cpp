// gdn2 tests [sequences] — properties over the token axis and the tensor layout: prefix causality (11),
// streaming hand-off (12), packed variable-length sequences (13), empty inputs (14), grouped value heads,
// and determinism across runs and thread counts (22).
#include "helpers.hpp"

#include <cstring>

using namespace gdn2;
using namespace gdn2::test;

namespace {

// Tokens [t0, t1) of every sequence of a [B,T,X,D] tensor.
Tensor<double> slice_tokens(const Tensor<double>& t, index_t t0, index_t t1) {
  const index_t B = t.shape[0], T = t.shape[1], X = t.shape[2], D = t.shape[3];
  Tensor<double> out({B, t1 - t0, X, D});
  for (index_t n = 0; n < B; ++n)
    std::copy(t.data.begin() + offset_bthd(n, t0, 0, T, X, D), t.data.begin() + offset_bthd(n, t1, 0, T, X, D),
              out.data.begin() + offset_bthd(n, 0, 0, t1 - t0, X, D));
  return out;
}

Layer<double> slice_layer(const Layer<double>& x, index_t t0, index_t t1, const Tensor<double>& h0) {
  return {slice_tokens(x.q, t0, t1), slice_tokens(x.k, t0, t1), slice_tokens(x.v, t0, t1), slice_tokens(x.g, t0, t1),
          slice_tokens(x.b, t0, t1), slice_tokens(x.w, t0, t1), h0};
}

}  // namespace

TEST_CASE("11. prefix causality: inputs at t >= P never change outputs before P", "[sequences]") {
  Shape s;
  s.T = 130;
  Rng rng(11);
  const auto x = random_layer<double>(rng, s.B, s.T, s.H, s.HV, s.K, s.V, [](Rng& r) { return r.uniform(-0.1, 0); }, true);
  for (index_t P : {1, 8, 17, 63, 64, 100}) {
    auto y = x;  // perturb every input at t >= P, the gates to other legal values
    for (Tensor<double>* t : {&y.q, &y.k, &y.v, &y.g, &y.b, &y.w}) {
      const index_t T = t->shape[1], X = t->shape[2], D = t->shape[3];
      for (index_t n = 0; n < s.B; ++n)
        for (index_t i = offset_bthd(n, P, 0, T, X, D); i < offset_bthd(n, T, 0, T, X, D); ++i)
          t->data[i] = (t == &y.g) ? -3.0 * t->data[i] - 1.0 : (t == &y.b || t == &y.w) ? 1.0 - t->data[i] : t->data[i] + 1.0;
    }
    for (Form form : {Form::recurrent, Form::chunk}) {
      const auto a = run(form, x), b = run(form, y);
      const bool same = bitwise_equal(slice_tokens(a.o, 0, P), slice_tokens(b.o, 0, P));
      const bool changed = !bitwise_equal(slice_tokens(a.o, P, s.T), slice_tokens(b.o, P, s.T));
      std::printf("  [measured] P=%ld %s: prefix bitwise equal=%d, suffix changed=%d\n", long(P),
                  form == Form::chunk ? "chunk" : "recurrent", same, changed);
      REQUIRE(same);
      REQUIRE(changed);  // the perturbation was real
    }
  }
}

TEST_CASE("12. streaming: running two pieces with the carried state equals one run", "[sequences]") {
  Shape s;
  Rng rng(12);
  const auto x = random_layer<double>(rng, s.B, s.T, s.H, s.HV, s.K, s.V, [](Rng& r) { return r.uniform(-0.1, 0); }, true);
  const auto whole = run(Form::chunk, x);
  for (index_t T1 : {1, 37, 64}) {
    const auto first = run(Form::chunk, slice_layer(x, 0, T1, x.h0));
    const auto second = run(Form::chunk, slice_layer(x, T1, s.T, first.ht));
    require_ratio("hand-off at T1=" + std::to_string(T1) + ": o of [T1,T)", second.o, slice_tokens(whole.o, T1, s.T), 1e-12);
    require_ratio("hand-off at T1=" + std::to_string(T1) + ": final state", second.ht, whole.ht, 1e-12);
  }
}

TEST_CASE("13. packed sequences: each equals its own run and they do not interact", "[sequences]") {
  for (const std::vector<index_t>& cu : {std::vector<index_t>{0, 15, 100, 256}, std::vector<index_t>{0, 1, 100, 300, 1200, 2048}}) {
    const index_t T = cu.back(), N = index_t(cu.size()) - 1, H = 2, K = 32, V = 16;
    Rng rng(13);
    auto x = random_layer<double>(rng, 1, T, H, H, K, V, [](Rng& r) { return r.uniform(-0.1, 0); }, true, N);
    for (Form form : {Form::recurrent, Form::chunk}) {
      const auto packed = run(form, x, 64, cu);
      for (index_t n = 0; n < N; ++n) {
        Tensor<double> h0n({1, H, K, V});
        std::copy(x.h0.data.begin() + n * H * K * V, x.h0.data.begin() + (n + 1) * H * K * V, h0n.data.begin());
        const auto alone = run(form, slice_layer(x, cu[n], cu[n + 1], h0n));
        Tensor<double> htn({1, H, K, V});
        std::copy(packed.ht.data.begin() + n * H * K * V, packed.ht.data.begin() + (n + 1) * H * K * V, htn.data.begin());
        const bool same = bitwise_equal(slice_tokens(packed.o, cu[n], cu[n + 1]), alone.o) && bitwise_equal(htn, alone.ht);
        std::printf("  [measured] cu=%ld entries, sequence %ld [%ld,%ld): packed == alone bitwise: %d\n", long(cu.size()),
                    long(n), long(cu[n]), long(cu[n + 1]), same);
        REQUIRE(same);
      }
      // Changing sequence 1 leaves every other sequence bitwise unchanged.
      auto y = x;
      for (index_t i = offset_row(cu[1], 0, H, V); i < offset_row(cu[2], 0, H, V); ++i) y.v.data[i] += 1.0;
      const auto changed = run(form, y, 64, cu);
      for (index_t n = 0; n < N; ++n) {
        const bool same = bitwise_equal(slice_tokens(packed.o, cu[n], cu[n + 1]), slice_tokens(changed.o, cu[n], cu[n + 1]));
        REQUIRE(same == (n != 1));
      }
    }
  }
}

TEST_CASE("14. empty inputs: T = 0 and empty packed sequences", "[sequences]") {
  Rng rng(14);
  const auto x = random_layer<double>(rng, 2, 0, 2, 2, 8, 4, [](Rng& r) { return r.uniform(-0.1, 0); }, true);
  for (Form form : {Form::recurrent, Form::chunk}) {
    const auto r = run(form, x);
    CHECK(r.o.shape == std::vector<index_t>{2, 0, 2, 4});
    REQUIRE(bitwise_equal(r.ht, x.h0));  // nothing happened: the final state is the initial state
  }
  const std::vector<index_t> cu = {0, 0, 5, 5, 9};
  auto y = random_layer<double>(rng, 1, 9, 2, 2, 8, 4, [](Rng& r) { return r.uniform(-0.1, 0); }, true, 4);
  for (Form form : {Form::recurrent, Form::chunk}) {
    const auto r = run(form, y, 64, cu);
    for (index_t n : {0, 2}) {  // the empty sequences keep their initial states
      const index_t sz = 2 * 8 * 4;
      REQUIRE(std::equal(r.ht.data.begin() + n * sz, r.ht.data.begin() + (n + 1) * sz, y.h0.data.begin() + n * sz));
    }
    auto no_h0 = y;
    no_h0.h0 = {};
    const auto z = run(form, no_h0, 64, cu);
    for (index_t i = 0; i < 2 * 8 * 4; ++i) REQUIRE(z.ht.data[i] == 0.0);  // zeros when no initial state
  }
}

TEST_CASE("grouped value heads: value head hv reads key head hv / (HV/H)", "[sequences]") {
  // HV = 4, H = 2 must equal HV = H = 4 with the key-side tensors repeated per group.
  Rng rng(15);
  const auto x = random_layer<double>(rng, 2, 70, 2, 4, 16, 8, [](Rng& r) { return r.uniform(-0.1, 0); }, true);
  auto repeat = [](const Tensor<double>& t) {
    const index_t B = t.shape[0], T = t.shape[1], H = t.shape[2], D = t.shape[3];
    Tensor<double> out({B, T, 2 * H, D});
    for (index_t n = 0; n < B; ++n)
      for (index_t s = 0; s < T; ++s)
        for (index_t hv = 0; hv < 2 * H; ++hv)
          std::copy_n(t.data.begin() + offset_bthd(n, s, hv / 2, T, H, D), D, out.data.begin() + offset_bthd(n, s, hv, T, 2 * H, D));
    return out;
  };
  const Layer<double> full{repeat(x.q), repeat(x.k), x.v, repeat(x.g), repeat(x.b), x.w, x.h0};
  for (Form form : {Form::recurrent, Form::chunk}) {
    const auto a = run(form, x), b = run(form, full);
    REQUIRE(bitwise_equal(a.o, b.o));
    REQUIRE(bitwise_equal(a.ht, b.ht));
  }
}

TEST_CASE("22. determinism: bitwise identical across runs and thread counts", "[sequences]") {
  Shape s;
  Rng rng(22);
  const auto x = random_layer<double>(rng, s.B, s.T, s.H, 4, s.K, s.V, [](Rng& r) { return r.uniform(-0.1, 0); }, true);
  for (Form form : {Form::recurrent, Form::chunk}) {
    const auto base = run(form, x, 64, {}, 1);
    for (int threads : {1, 2, 3, 8}) {
      const auto again = run(form, x, 64, {}, threads);
      REQUIRE(bitwise_equal(base.o, again.o));
      REQUIRE(bitwise_equal(base.ht, again.ht));
    }
  }
}
