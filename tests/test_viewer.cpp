// gdn2 tests [viewer] — what each panel shows for known sequences, computed without pixels (viewer_state.hpp).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>

#include "viewer_state.hpp"

using namespace gdn2;
using namespace gdn2::viewer;

namespace {
ViewerState scenario(const std::string& name) {
  ViewerState st;
  st.source = SourceKind::scenario;
  st.scenario = name;
  st.reload();
  REQUIRE(st.status.empty());
  return st;
}
}  // namespace

TEST_CASE("readout panel: verdicts of the overwrite scenarios", "[viewer]") {
  const ViewerState erase = scenario("overwrite-erase");
  const auto qs = query_results(erase.main.trace);
  REQUIRE(qs.size() == 2u);
  std::printf("[viewer] overwrite-erase: query k0 -> %s (expected %s, cos %.3f)\n", qs[0].answer.c_str(), qs[0].expected.c_str(), qs[0].cosine);
  CHECK(qs[0].correct);
  CHECK(qs[0].expected == "D");
  CHECK(qs[0].answer.rfind("D", 0) == 0);
  const auto blend = query_results(scenario("overwrite-no-erase").main.trace);
  std::printf("[viewer] overwrite-no-erase: query k0 -> %s (cos with D %.3f)\n", blend[0].answer.c_str(), blend[0].cosine);
  CHECK_FALSE(blend[0].correct);  // A + D is not D
  CHECK(blend[0].cosine < 0.9);
  CHECK(blend[1].correct);        // k1 was never touched
}

TEST_CASE("comparison mode: the soft update differs between GDN-2 and its KDA tie", "[viewer]") {
  const ViewerState st = scenario("soft-update");
  REQUIRE(st.other.trace.T == st.main.trace.T);
  const double diff = (st.main.trace.S.back() - st.other.trace.S.back()).norm();
  std::printf("[viewer] soft-update |S_gdn2 - S_kda| = %.4f\n", diff);
  CHECK(diff > 0.1);
  CHECK(query_results(st.main.trace)[0].correct);
  CHECK_FALSE(query_results(st.other.trace)[0].correct);
}

TEST_CASE("a gate set by hand is re-run through the reference", "[viewer]") {
  ViewerState st = scenario("overwrite-erase");
  // close the erase gate at the rebinding token (3): the query of k0 now returns A + D
  st.overrides.push_back({GateOverride::erase_b, 3, -1, 0.0});
  st.apply_overrides();
  const ViewerState blend = scenario("overwrite-no-erase");
  const double d = (st.main.trace.o - blend.main.trace.o).cwiseAbs().maxCoeff();
  std::printf("[viewer] override b=0 at token 3 vs the no-erase scenario: max |o diff| %.1e\n", d);
  CHECK(d < 1e-15);
  CHECK(st.main.trace.labels == blend.main.trace.labels);
  st.overrides.clear();
  st.reload();
  CHECK(query_results(st.main.trace)[0].correct);
}

TEST_CASE("equation panel numbers satisfy Eq. 9 cell by cell; ranges and capacity are sane", "[viewer]") {
  const ViewerState st = scenario("decay-forgetting");
  const model::Trace& tr = st.main.trace;
  double worst = 0;
  for (int t = 0; t < tr.T; ++t)
    for (int i = 0; i < tr.K; ++i)
      for (int j = 0; j < tr.V; ++j) {
        const CellEquation e = cell_equation(tr, t, i, j);
        worst = std::max(worst, std::abs(e.alpha * e.prev - e.k * e.r + e.k * e.z - e.next));
      }
  std::printf("[viewer] max |alpha S - k r + k z - S_t| over cells %.1e\n", worst);
  CHECK(worst < 1e-15);
  const double range = state_range(tr);
  CHECK(range > 0);
  CHECK(range <= tr.S[4].cwiseAbs().maxCoeff() + 1e-15);
  const Capacity four = capacity(tr, 3), faded = capacity(tr, 7);
  std::printf("[viewer] effective rank after 4 writes %.2f, after decaying two rows %.2f\n", four.effective_rank, faded.effective_rank);
  CHECK(four.effective_rank > 3);
  CHECK(four.effective_rank <= 4 + 1e-9);
  CHECK(faded.effective_rank < four.effective_rank);
}

TEST_CASE("a bad checkpoint path is reported and the viewer falls back to a scenario", "[viewer]") {
  ViewerState st;
  st.source = SourceKind::checkpoint;
  st.checkpoint_dir = "/nonexistent/checkpoint";
  st.reload();
  CHECK_THAT(st.status, Catch::Contains("cannot open"));
  CHECK(st.main.trace.T > 0);
}

TEST_CASE("checkpoint source: the shipped model answers its own task, and can be shown another", "[viewer]") {
  ViewerState st;
  st.source = SourceKind::checkpoint;
  st.checkpoint_dir = std::string(GDN2_SOURCE_DIR) + "/notebooks_data/checkpoints/mqar-tiny-gdn2";
  st.reload();
  REQUIRE(st.status.empty());
  int correct = 0;
  const auto own = query_results(st.main.trace);
  for (const auto& q : own) correct += q.correct;
  std::printf("[viewer] mqar-tiny-gdn2 on its held-out example 0: %d of %zu queries right; KDA twin loaded: %s\n", correct,
              own.size(), st.other.trace.T > 0 ? "yes" : "no");
  CHECK(correct == static_cast<int>(own.size()));
  CHECK(st.other.trace.T == st.main.trace.T);  // the KDA checkpoint next to it, on the same tokens
  st.task = "overwrite";
  st.reload();
  REQUIRE(st.status.empty());
  const auto other = query_results(st.main.trace);
  correct = 0;
  for (const auto& q : other) correct += q.correct;
  std::printf("[viewer] the same model on an overwrite example: %d of %zu queries right\n", correct, other.size());
  CHECK(other.size() == 8u);
  st.custom_sequence = "k5 v40 k6 v41 . ?k5 ?k6";
  st.reload();
  REQUIRE(st.status.empty());
  CHECK(st.main.trace.T == 7);
  CHECK(st.main.trace.targets[5] == 40);
}
