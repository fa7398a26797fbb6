// gdn2 tests [reference] — the model forward with hand-set gates (model.hpp: GateOverride), used by the viewer.
#include <catch2/catch.hpp>

#include "model/model.hpp"

using namespace gdn2;
using namespace gdn2::model;

TEST_CASE("forward with a hand-set gate: replaces the gate there, leaves earlier tokens alone, changes later ones", "[model]") {
  ModelConfig mc;
  mc.blocks = 2;
  const Params p = init_params(mc, 11);
  const std::vector<std::vector<int>> tokens = {{3, 40, 5, 41, 0, 3, 5}, {7, 42, 8, 43, 0, 7, 8}};
  const ForwardResult plain = forward(mc, p, tokens), none = forward(mc, p, tokens, {});
  CHECK(plain.logits == none.logits);  // no overrides: the same bits
  GateOverride o;
  o.gate = GateOverride::write_w, o.block = 0, o.head = 0, o.token = 1, o.channel = -1, o.value = 0;
  GateOverride g;
  g.gate = GateOverride::decay_g, g.block = 1, g.head = 0, g.token = 3, g.channel = 2, g.value = -INFINITY;
  const ForwardResult f = forward(mc, p, tokens, {o, g});
  const Layer<double>& L0 = f.blocks[0].layer;
  const Layer<double>& L1 = f.blocks[1].layer;
  const index_t V = mc.head_v, K = mc.head_k, T = 7;
  double w_max = 0;
  for (int n = 0; n < 2; ++n)
    for (index_t j = 0; j < V; ++j) w_max = std::max(w_max, L0.w.data[(n * T + 1) * V + j]);
  CHECK(w_max == 0);
  CHECK(L0.w.data[2 * V] == plain.blocks[0].layer.w.data[2 * V]);  // token 2 untouched
  CHECK(std::isinf(L1.g.data[3 * K + 2]));
  // the other channels of that token are what block 1 computes from block 0's (changed) output
  const ForwardResult only_w = forward(mc, p, tokens, {o});
  CHECK(L1.g.data[3 * K + 1] == only_w.blocks[1].layer.g.data[3 * K + 1]);
  CHECK(L1.g.data[3 * K + 1] != plain.blocks[1].layer.g.data[3 * K + 1]);
  const double before = (f.logits.row(0) - plain.logits.row(0)).cwiseAbs().maxCoeff();
  const double after = (f.logits.row(6) - plain.logits.row(6)).cwiseAbs().maxCoeff();
  INFO("max |logit change| at token 0: " << before << ", at token 6: " << after);
  CHECK(before == 0);  // causal: the token before the override is bitwise unchanged
  CHECK(after > 1e-6);
  GateOverride bad = o;
  bad.value = 1.5;
  CHECK_THROWS_WITH(forward(mc, p, tokens, {bad}), Catch::Contains("gate override"));
  bad = o, bad.token = 7;
  CHECK_THROWS_WITH(forward(mc, p, tokens, {bad}), Catch::Contains("gate override"));
  bad = o, bad.channel = mc.head_v;
  CHECK_THROWS_WITH(forward(mc, p, tokens, {bad}), Catch::Contains("gate override"));
}
