// gdn2 tests [tasks] — the recall task generators (semantics of tasks.hpp) and the scripted scenarios, whose
// outcomes follow from Eq. 9 by hand on one-hot keys.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <set>

#include "model/trace.hpp"
#include "tasks/scenarios.hpp"
#include "tasks/tasks.hpp"

using namespace gdn2;
using namespace gdn2::tasks;

TEST_CASE("MQAR follows the Zoology semantics", "[tasks]") {
  TaskConfig c;  // vocab 64, length 64, 8 pairs
  const auto batch = make_batch(c, 3, 200);
  std::vector<int> slot_count((c.length - 2 * c.pairs) / 2, 0);
  for (const auto& ex : batch) {
    REQUIRE(ex.tokens.size() == 64u);
    std::set<int> keys, values;
    for (int i = 0; i < c.pairs; ++i) {
      REQUIRE(ex.roles[2 * i] == Role::key);
      REQUIRE(ex.roles[2 * i + 1] == Role::value);
      CHECK(ex.tokens[2 * i] >= 1);
      CHECK(ex.tokens[2 * i] < c.vocab / 2);  // keys from the lower half
      CHECK(ex.tokens[2 * i + 1] >= c.vocab / 2);  // values from the upper half
      keys.insert(ex.tokens[2 * i]);
      values.insert(ex.tokens[2 * i + 1]);
    }
    CHECK(keys.size() == size_t(c.pairs));  // drawn without replacement
    CHECK(values.size() == size_t(c.pairs));
    int queries = 0;
    for (int t = 0; t < c.length; ++t) {
      if (ex.targets[t] < 0) {
        CHECK(ex.roles[t] != Role::query);
        continue;
      }
      ++queries;
      REQUIRE(ex.roles[t] == Role::query);
      const int src = ex.source[t];
      CHECK(ex.tokens[src - 1] == ex.tokens[t]);  // the query repeats the key stored just before the value
      CHECK(ex.tokens[src] == ex.targets[t]);
      ++slot_count[(t - 2 * c.pairs) / 2];
    }
    CHECK(queries == c.pairs);  // every key is asked once
  }
  // p(gap) ∝ a·gap^(a−1) with a = 0.01 favours small gaps: the first gap slots are taken far more often than the
  // last ones (8 of 24 slots drawn without replacement per example).
  const int first4 = slot_count[0] + slot_count[1] + slot_count[2] + slot_count[3];
  const int n = static_cast<int>(slot_count.size());
  const int last4 = slot_count[n - 1] + slot_count[n - 2] + slot_count[n - 3] + slot_count[n - 4];
  std::printf("[tasks] MQAR queries in the first 4 of %d gap slots: %d, in the last 4: %d\n", n, first4, last4);
  CHECK(first4 > 2 * last4);
  // Deterministic by seed, different across seeds.
  CHECK(make_batch(c, 3, 5)[4].tokens == batch[4].tokens);
  CHECK(make_batch(c, 4, 5)[4].tokens != batch[4].tokens);
}

TEST_CASE("overwrite recall asks for the newest value; needle tasks ask at the end", "[tasks]") {
  TaskConfig c;
  c.kind = TaskKind::overwrite;
  c.rebinds = 3;
  for (const auto& ex : make_batch(c, 1, 50)) {
    int rebound_queries = 0;
    for (int t = 0; t < c.length; ++t) {
      if (ex.targets[t] < 0) continue;
      // the newest binding of this key is the last key occurrence before the query
      int last = -1;
      for (int u = 0; u < t; ++u)
        if (ex.roles[u] == Role::key && ex.tokens[u] == ex.tokens[t]) last = u;
      REQUIRE(last >= 0);
      CHECK(ex.source[t] == last + 1);
      CHECK(ex.targets[t] == ex.tokens[last + 1]);
      rebound_queries += last >= 2 * c.pairs;
    }
    CHECK(rebound_queries == c.rebinds);
  }
  c = TaskConfig{};
  c.kind = TaskKind::mk_niah;
  c.pairs = 4;
  c.queries = 2;
  for (const auto& ex : make_batch(c, 2, 50)) {
    CHECK(ex.roles[c.length - 1] == Role::query);
    CHECK(ex.roles[c.length - 2] == Role::query);
    for (int t = 0; t < c.length - 2; ++t) {
      CHECK(ex.targets[t] == -1);
      if (ex.roles[t] == Role::filler) CHECK((ex.tokens[t] >= 1 && ex.tokens[t] <= c.filler_vocab));
    }
  }
}

TEST_CASE("task configurations that cannot fit are refused with a message", "[tasks]") {
  TaskConfig c;
  c.pairs = 20;  // 4 · 20 > 64
  CHECK_THROWS_WITH(validate(c), Catch::Contains("length 64 cannot hold 20 pairs"));
  c = TaskConfig{};
  c.vocab = 12;  // 5 keys
  CHECK_THROWS_WITH(validate(c), Catch::Contains("key tokens"));
  CHECK_THROWS_WITH(parse_task("mqr"), Catch::Contains("expected mqar"));
}

namespace {

model::Trace scenario_trace(const std::string& name, Variant v = Variant::gdn2) {
  return model::trace_scenario(make_scenario(name, v), variant_name(v));
}
// o at the i-th query of the trace
RowVec<double> query_output(const model::Trace& tr, int i) {
  for (int t = 0, seen = 0; t < tr.T; ++t)
    if (tr.roles[t] == static_cast<int>(Role::query) && seen++ == i) return tr.o.row(t);
  FAIL("no such query");
  return {};
}

}  // namespace

TEST_CASE("scripted scenarios do what Eq. 9 says on one-hot keys", "[tasks][scenarios]") {
  const Mat<double> vals = make_scenario("overwrite-erase").values;  // A, B, C, D
  auto err = [](const RowVec<double>& a, const RowVec<double>& b) { return (a - b).norm(); };

  const model::Trace erase = scenario_trace("overwrite-erase");
  const double e1 = err(query_output(erase, 0), vals.row(3));
  const model::Trace keep = scenario_trace("overwrite-no-erase");
  const double e2 = err(query_output(keep, 0), vals.row(0) + vals.row(3));
  const model::Trace forget = scenario_trace("forget-one-keep-another");
  const double e3 = query_output(forget, 0).norm(), e3b = err(query_output(forget, 1), vals.row(1));
  const model::Trace part = scenario_trace("partial-erase");
  const double e4 = err(query_output(part, 0), vals.row(1) + 0.5 * vals.row(0));
  const model::Trace decay = scenario_trace("decay-forgetting");
  const double e5 = err(query_output(decay, 0), std::exp(-4.0) * vals.row(0)), e5b = err(query_output(decay, 1), vals.row(3));
  const double e6 = err(query_output(scenario_trace("soft-update"), 0), 0.5 * vals.row(3));
  const double e7 = err(query_output(scenario_trace("soft-update", Variant::kda), 0), 0.25 * vals.row(0) + 0.75 * vals.row(3));
  std::printf("[scenarios] |o - expected|: erase %.1e, no-erase %.1e, forget %.1e/%.1e, partial-erase %.1e, decay %.1e/%.1e, "
              "soft-update gdn2 %.1e kda %.1e\n", e1, e2, e3, e3b, e4, e5, e5b, e6, e7);
  for (double e : {e1, e2, e3, e3b, e4, e5, e5b, e6, e7}) CHECK(e < 1e-12);
  CHECK(model::nearest_value(erase, erase.T - 2) == 3);  // D
  const model::Trace pw = scenario_trace("partial-write");
  const RowVec<double> half = query_output(pw, 0);
  CHECK(half.tail(4).norm() == 0.0);  // nothing written to the closed value channels
  CHECK(err(query_output(pw, 1), vals.row(0)) < 1e-12);
}

TEST_CASE("a trace's update parts add up to the step and its outputs equal the reference forward", "[tasks][trace]") {
  for (const std::string& name : scenario_names()) {
    const Scenario sc = make_scenario(name, Variant::gdn2, 8, 8);
    const model::Trace tr = model::trace_scenario(sc);
    Tensor<double> o, ht;
    ForwardOptions opt;
    opt.scale = 1.0;
    forward(Form::recurrent, o, ht, sc.layer, opt);
    double worst = 0;
    for (int t = 0; t < tr.T; ++t) {
      const model::UpdateParts u = model::update_parts(tr, t);
      worst = std::max(worst, (tr.S[t] + u.decay + u.erase + u.write - tr.S[t + 1]).cwiseAbs().maxCoeff());
      for (int j = 0; j < tr.V; ++j) REQUIRE(tr.o(t, j) == o.data[t * tr.V + j]);  // the same step, bitwise
    }
    std::printf("[trace] %s: max |S_{t-1} + decay + erase + write - S_t| = %.1e\n", name.c_str(), worst);
    CHECK(worst < 1e-14);
  }
}
