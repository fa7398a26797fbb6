// gdn2 tests [viewer] — what each panel shows for known sequences, computed without pixels (viewer_state.hpp).
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <limits>

#include <nlohmann/json.hpp>

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
ViewerState model_state() {
  ViewerState st;
  st.source = SourceKind::checkpoint;
  st.checkpoint_dir = std::string(GDN2_SOURCE_DIR) + "/notebooks_data/checkpoints/mqar-tiny-gdn2";
  st.reload();
  REQUIRE(st.status.empty());
  return st;
}
const QueryResult& query_at(const std::vector<QueryResult>& qs, int token) {
  for (const auto& q : qs)
    if (q.token == token) return q;
  FAIL("no query at token " << token);
  return qs.front();
}
int right_answers(const std::vector<QueryResult>& qs) {
  int n = 0;
  for (const auto& q : qs) n += q.correct;
  return n;
}
}  // namespace

TEST_CASE("readout panel: verdicts of the overwrite scenarios", "[viewer]") {
  const ViewerState erase = scenario("overwrite-erase");
  const auto qs = query_results(erase.main.trace);
  REQUIRE(qs.size() == 2u);
  std::printf("[viewer] overwrite-erase: query k0 -> %s (expected %s, cos %.3f)\n", qs[0].answer.c_str(), qs[0].expected.c_str(), qs[0].cosine);
  CHECK(qs[0].correct);
  CHECK(qs[0].expected == "D");
  CHECK(qs[0].answer == "1.00 D");
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
  st.set_step(3);
  st.set_gate(GateOverride::erase_b, -1, 0.0);
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
  CHECK(range == tr.S[4].cwiseAbs().maxCoeff());  // the largest cell: four unit writes, before any decay
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

// [the viewer for a class: tour, overrides, compare mode] ------------------------------------------------------

TEST_CASE("verdicts read o_t as a mix of the stored values", "[viewer]") {
  const auto blend = scenario("overwrite-no-erase").main.queries;
  INFO("overwrite-no-erase query k0: " << blend[0].answer);
  CHECK(blend[0].answer == "1.00 A + 1.00 D");
  CHECK_FALSE(blend[0].correct);
  const auto erase = scenario("overwrite-erase").main.queries;
  INFO("overwrite-erase query k0: " << erase[0].answer);
  CHECK(erase[0].answer == "1.00 D");
  CHECK(erase[0].correct);
  // partial-write: the first query sees half of A (wrong), the completed association at token 4 is A (right)
  const auto partial = scenario("partial-write").main.queries;
  const QueryResult &half = query_at(partial, 2), &whole = query_at(partial, 4);
  INFO("partial-write token 2: " << half.answer << "; token 4: " << whole.answer << " (cos with the last half-write " << whole.cosine << ")");
  CHECK_FALSE(half.correct);
  CHECK_THAT(half.answer, Catch::Contains("unexplained"));
  CHECK(whole.answer == "1.00 A");
  CHECK(whole.correct);
  // decay-forgetting: the row of k0 faded to 2%: not "ok"
  const auto decay = scenario("decay-forgetting").main.queries;
  INFO("decay-forgetting query k0: " << decay[0].answer << ", query k3: " << decay[1].answer);
  CHECK(decay[0].answer == "0.02 A (faded)");
  CHECK_FALSE(decay[0].correct);
  CHECK(decay[1].answer == "1.00 D");
  CHECK(decay[1].correct);
}

TEST_CASE("exercise 2: the KDA tie returns 0.25 A + 0.75 D, GDN-2 0.50 D", "[viewer][teaching]") {
  ViewerState st = scenario("soft-update");
  INFO("gdn2: " << st.main.queries[0].answer << "; kda: " << st.other.queries[0].answer);
  CHECK(st.main.queries[0].answer == "0.50 D");
  CHECK(st.main.queries[0].correct);
  CHECK(st.other.queries[0].answer == "0.25 A + 0.75 D");
  CHECK_FALSE(st.other.queries[0].correct);
  // the same through the gates box: gates = kda
  st.variant = "kda";
  st.reload();
  CHECK(st.main.queries[0].answer == "0.25 A + 0.75 D");
  CHECK(st.main.trace.b(2, 0) == 0.75);
  CHECK(st.main.trace.w(2, 0) == 0.75);
}

TEST_CASE("comparison mode: both runs' verdicts, labels from the variants, the difference on its own scale", "[viewer]") {
  ViewerState st = scenario("soft-update");
  st.compare_variant = "gdn";
  st.reload();
  CHECK(st.difference_label() == "S_gdn2 - S_gdn");
  CHECK(st.states_comparable());
  REQUIRE(st.other.queries.size() == st.main.queries.size());
  const double d = difference_range(st.main.trace, st.other.trace);
  INFO("difference range " << d << ", state ranges " << st.main.state_range << ", " << st.other.state_range);
  CHECK(d == (st.main.trace.S[3] - st.other.trace.S[3]).cwiseAbs().maxCoeff());
  CHECK(d < st.main.state_range);
  // two trained models: different bases, only readouts and verdicts compare
  const ViewerState m = model_state();
  CHECK(m.other.trace.T == m.main.trace.T);
  CHECK_FALSE(m.states_comparable());
  CHECK(m.difference_label() == "S_gdn2 - S_kda");
  CHECK(m.other.queries.size() == m.main.queries.size());
  CHECK(right_answers(m.other.queries) == static_cast<int>(m.other.queries.size()));
}

TEST_CASE("scales: colour ranges are the true largest magnitude", "[viewer]") {
  const ViewerState st = model_state();
  double smax = 0;
  for (const auto& S : st.main.trace.S) smax = std::max(smax, S.cwiseAbs().maxCoeff());
  INFO("model state range " << st.main.state_range << ", largest |S| " << smax);
  CHECK(st.main.state_range == smax);
  for (int t : {3, 16}) {
    const auto u = model::update_parts(st.main.trace, t);
    const double umax = std::max({u.decay.cwiseAbs().maxCoeff(), u.erase.cwiseAbs().maxCoeff(), u.write.cwiseAbs().maxCoeff()});
    INFO("token " << t << ": update range " << update_range(st.main.trace, t) << ", largest term " << umax);
    CHECK(update_range(st.main.trace, t) == umax);
  }
}

TEST_CASE("a hand-set gate on the model re-runs the whole model: the verdicts follow", "[viewer][teaching]") {
  ViewerState st = model_state();
  const model::Trace& tr = st.main.trace;
  const QueryResult q = st.main.queries[0];
  const int value_token = tr.source[q.token];
  REQUIRE(value_token >= 0);
  INFO("query " << q.label << " at token " << q.token << " needs the value token " << value_token << " (" << tr.labels[value_token] << ")");
  REQUIRE(q.correct);
  // close the write gate at the value the query needs
  st.set_step(value_token);
  st.set_gate(GateOverride::write_w, -1, 0.0);
  REQUIRE(st.status.empty());
  const QueryResult& after = query_at(st.main.queries, q.token);
  INFO("after w = 0: " << after.answer << " (expected " << after.expected << "), cos " << after.cosine);
  CHECK_FALSE(after.correct);
  CHECK(std::abs(after.cosine) < 0.3);
  CHECK(st.main.trace.z.row(value_token).norm() == 0);
  // the story says what changed
  INFO(st.story());
  CHECK_THAT(st.story(), Catch::Contains("w = 0.00 at token " + std::to_string(value_token)));
  CHECK_THAT(st.story(), Catch::Contains(q.label + ": ok " + q.answer + " -> X " + after.answer));
  // and resetting restores them
  st.overrides.clear();
  st.reload();
  CHECK(query_at(st.main.queries, q.token).correct);
  CHECK(st.override_note.empty());
}

TEST_CASE("the 30-40 minute activity: closing the erase gate at a rebinding value breaks the query", "[viewer][teaching]") {
  ViewerState st = model_state();
  st.task = "overwrite";
  st.reload();
  REQUIRE(st.status.empty());
  const model::Trace& tr = st.main.trace;
  // a query whose key was bound twice: its source is the newest value; close b there
  int broken = 0, tried = 0;
  for (const QueryResult& q : st.main.queries) {
    if (!q.correct) continue;
    const int src = tr.source[q.token];
    bool rebound = false;
    for (int s = 0; s + 1 < src; ++s) rebound |= tr.roles[s] == 1 && tr.tokens[s] == tr.tokens[src - 1];
    if (!rebound) continue;
    ViewerState x = st;
    x.set_step(src);
    x.set_gate(GateOverride::erase_b, -1, 0.0);
    ++tried;
    const QueryResult& a = query_at(x.main.queries, q.token);
    std::printf("[viewer] overwrite example: b = 0 at %s (token %d): %s -> %s (expected %s)\n", tr.labels[src].c_str(), src,
                q.answer.c_str(), a.answer.c_str(), a.expected.c_str());
    broken += !a.correct;
  }
  INFO(broken << " of " << tried << " rebound queries broke");
  CHECK(tried > 0);
  CHECK(broken > 0);
}

TEST_CASE("exercise 3: forget one key, keep another (b = 1, w = 0; or g = -inf)", "[viewer][teaching]") {
  for (int way = 0; way < 2; ++way) {
    ViewerState st = scenario("overwrite-erase");
    st.set_step(3);  // the token with key k0
    if (way == 0) {
      st.set_gate(GateOverride::erase_b, -1, 1.0);
      st.set_gate(GateOverride::write_w, -1, 0.0);
    } else {
      st.set_gate(GateOverride::decay_g, 0, -std::numeric_limits<double>::infinity());
      st.set_gate(GateOverride::write_w, -1, 0.0);
    }
    REQUIRE(st.status.empty());
    const model::Trace& tr = st.main.trace;
    INFO("way " << way << ": query k0 -> " << st.main.queries[0].answer << ", k1 -> " << st.main.queries[1].answer);
    CHECK(tr.S[4].row(0).norm() == 0);          // k0's row is gone
    CHECK(tr.S[4].row(1) == tr.S[3].row(1));    // k1's row bit for bit
    CHECK(st.main.queries[0].answer == "nothing (o = 0)");
    CHECK(st.main.queries[1].correct);
    CHECK_THAT(st.story(), Catch::Contains(way == 0 ? "b = 1.00 at token 3" : "g = -inf at token 3 (channel 0)"));
  }
}

TEST_CASE("keyboard stepping and source switching", "[viewer]") {
  ViewerState st = scenario("overwrite-erase");
  st.set_step(2);
  st.handle_key(Key::right);
  CHECK(st.step == 3);
  st.handle_key(Key::left), st.handle_key(Key::left);
  CHECK(st.step == 1);
  st.handle_key(Key::end);
  CHECK(st.step == st.length() - 1);
  st.handle_key(Key::right);
  CHECK(st.step == st.length() - 1);
  st.handle_key(Key::home);
  CHECK(st.step == 0);
  st.handle_key(Key::play);
  CHECK(st.playing);
  // the trace source without a path waits for "load" instead of failing on an empty path
  const std::string title = st.main.trace.title;
  st.select_source(SourceKind::trace_dir);
  INFO(st.status);
  CHECK(st.status.find("cannot open") == std::string::npos);
  CHECK(st.main.trace.title == title);
}

TEST_CASE("the guided tour: each step loads its scenario and shows what its text says", "[viewer][teaching]") {
  ViewerState st;
  st.checkpoint_dir = std::string(GDN2_SOURCE_DIR) + "/notebooks_data/checkpoints/mqar-tiny-gdn2";
  st.start_tour();
  const auto& steps = tour_steps();
  REQUIRE(steps.size() == 7u);
  for (size_t i = 0; i < steps.size(); ++i) {
    INFO("tour step " << i << ": " << steps[i].title << " -- " << st.status);
    REQUIRE(st.tour == static_cast<int>(i));
    REQUIRE(st.status.empty());
    const model::Trace& tr = st.main.trace;
    switch (i) {
      case 0: CHECK(st.step == 0); CHECK(tr.S[1].row(0) == tr.values.row(0)); break;
      case 1: CHECK(query_at(st.main.queries, 4).answer == "1.00 A + 1.00 D"); break;
      case 2: CHECK(st.step == 3); CHECK((tr.r.row(3) - tr.values.row(0)).norm() < 1e-15); CHECK(query_at(st.main.queries, 4).answer == "1.00 D"); break;
      case 3: CHECK_FALSE(query_at(st.main.queries, 2).correct); CHECK(query_at(st.main.queries, 4).answer == "1.00 A"); break;
      case 4: CHECK(query_at(st.main.queries, 8).answer == "0.02 A (faded)"); CHECK(query_at(st.main.queries, 9).answer == "1.00 D"); break;
      case 5:
        CHECK(st.compare);
        CHECK(query_at(st.main.queries, 3).answer == "0.50 D");
        CHECK(query_at(st.other.queries, 3).answer == "0.25 A + 0.75 D");
        break;
      case 6:
        CHECK(st.compare);
        CHECK(tr.kind == "model");
        CHECK(tr.roles[st.step] == 3);
        CHECK(right_answers(st.main.queries) == static_cast<int>(st.main.queries.size()));
        CHECK(right_answers(st.other.queries) == static_cast<int>(st.other.queries.size()));
        break;
    }
    st.handle_key(Key::next);
  }
  CHECK(st.tour == 6);  // Next on the last step stays
  st.handle_key(Key::back);
  CHECK(st.tour == 5);
  CHECK(st.scenario == "soft-update");
  st.handle_key(Key::escape);
  CHECK(st.tour == -1);
  CHECK(st.scenario == "soft-update");  // free exploration keeps what is shown
}

// [the viewer's input and output checks] -----------------------------------------------------------------

TEST_CASE("a trace with an empty value_names is refused on load with a clear error", "[viewer]") {
  model::Trace tr = scenario("overwrite-erase").main.trace;
  tr.value_names.clear();
  tr.values.resize(0, tr.V);
  const std::string dir = (std::filesystem::temp_directory_path() / "gdn2-test-viewer-empty-names").string();
  std::filesystem::remove_all(dir);
  model::save_trace(dir, tr);
  ViewerState st;
  st.source = SourceKind::trace_dir;
  st.trace_dir = dir;
  st.reload();
  INFO(st.status);
  CHECK_THAT(st.status, Catch::Contains("value_names is empty"));
  CHECK(st.main.trace.T > 0);  // fell back to the default scenario
  // a trace of random inputs (gdn2 trace --random: no roles, no candidates) still loads
  model::Trace random = model::trace_layer(tasks::make_scenario("soft-update").layer, 0, 0, 1.0);
  random.kind = "random";
  std::filesystem::remove_all(dir);
  model::save_trace(dir, random);
  st.reload();
  INFO(st.status);
  CHECK(st.status.empty());
  CHECK(st.main.trace.kind == "random");
  CHECK(st.main.queries.empty());
  std::filesystem::remove_all(dir);
}

TEST_CASE("a trace whose K is not an integer or whose tokens are out of range is refused on load", "[viewer]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("gdn2-test-viewer-bad-trace-" + std::to_string(::getpid()));
  const model::Trace tr = model_state().main.trace;
  auto refusal = [&](const std::function<void()>& spoil) {
    fs::remove_all(dir);
    model::save_trace(dir.string(), tr);
    spoil();
    std::string error;
    try {
      model::load_trace(dir.string());
    } catch (const std::exception& e) {
      error = e.what();
    }
    return error;
  };
  // "K": 8.5 in trace.json (before: read as 8)
  std::string error = refusal([&] {
    std::ifstream in(dir / "trace.json");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    const auto at = text.find("\"K\": " + std::to_string(tr.K));
    REQUIRE(at != std::string::npos);
    text.replace(at, 5 + std::to_string(tr.K).size(), "\"K\": " + std::to_string(tr.K) + ".5");
    std::ofstream(dir / "trace.json") << text;
  });
  std::printf("[viewer] trace.json K = %d.5: %s\n", tr.K, error.c_str());
  CHECK_THAT(error, Catch::Contains("'K'") && Catch::Contains("integer"));
  // a token id beyond int (before: truncated to int) and a negative one below -1
  for (const std::int64_t bad : {std::int64_t(1) << 40, std::int64_t(-5)}) {
    error = refusal([&] {
      std::vector<index_t> tokens(tr.tokens.begin(), tr.tokens.end());
      tokens[1] = bad;
      // an int64 .npy written by hand: header, then the values
      std::string header = "{'descr': '<i8', 'fortran_order': False, 'shape': (" + std::to_string(tokens.size()) + ",), }";
      header += std::string((64 - (10 + header.size() + 1) % 64) % 64, ' ') + "\n";
      std::string bytes = std::string("\x93NUMPY\x01\x00", 8) + char(header.size() & 0xff) + char(header.size() >> 8) + header;
      bytes.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * sizeof(index_t));
      std::ofstream(dir / "tokens.npy", std::ios::binary) << bytes;
    });
    std::printf("[viewer] token %lld at position 1: %s\n", static_cast<long long>(bad), error.c_str());
    CHECK_THAT(error, Catch::Contains("tokens.npy") && Catch::Contains("at token 1"));
  }
  fs::remove_all(dir);
}

TEST_CASE("export and screenshot paths go to the user directory; a failed write leaves nothing", "[viewer]") {
  const std::string p = output_path("viewer-export");
  INFO(p << " (user dir " << user_output_dir() << ")");
  CHECK(std::filesystem::path(p).is_absolute());
  CHECK(p.rfind(user_output_dir(), 0) == 0);
  CHECK(output_path("/tmp/x.png") == "/tmp/x.png");
  // a full disk: the file size limit makes the write fail after the first bytes
  const std::string path = (std::filesystem::temp_directory_path() / "gdn2-test-viewer-full.png").string();
  std::filesystem::remove(path);
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = old;
  small.rlim_cur = 100;
  signal(SIGXFSZ, SIG_IGN);
  setrlimit(RLIMIT_FSIZE, &small);
  std::string error;
  try {
    write_file_checked(path, std::string(100000, 'x'));
  } catch (const std::exception& e) {
    error = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, SIG_DFL);
  INFO(error);
  CHECK_THAT(error, Catch::Contains("cannot write"));
  CHECK_FALSE(std::filesystem::exists(path));
  int partials = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path()))
    partials += e.path().filename().string().rfind("gdn2-test-viewer-full.png.partial", 0) == 0;
  CHECK(partials == 0);
  write_file_checked(path, "ok");
  CHECK(std::filesystem::file_size(path) == 2u);
  std::filesystem::remove(path);
}

// Before: "export trace" replaced the export directory as a whole, deleting the screenshots the viewer had put there.
TEST_CASE("an exported trace goes to trace/ of the export directory; the screenshots beside it stay", "[viewer]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("gdn2-test-viewer-export-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "gdn2-viewer-3.png") << "a screenshot";
  const std::string trace = trace_export_path(dir.string());
  const model::Trace tr = scenario("overwrite-erase").main.trace;
  for (int i = 0; i < 2; ++i) model::save_trace(trace, tr);  // the second export replaces the first
  std::printf("[viewer] trace exported to %s; the screenshot beside it kept: %d\n", trace.c_str(),
              int(fs::exists(dir / "gdn2-viewer-3.png")));
  CHECK(fs::path(trace) == dir / "trace");
  CHECK(fs::exists(dir / "gdn2-viewer-3.png"));
  CHECK(fs::exists(fs::path(trace) / "trace.json"));
  fs::remove_all(dir);
}

TEST_CASE("a screenshot path that is a FIFO, link or directory is refused, never replaced", "[viewer]") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("gdn2-test-viewer-targets-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "a-directory");
  std::ofstream(dir / "target.txt") << "keep";
  fs::create_symlink(dir / "target.txt", dir / "link.png");
  REQUIRE(::mkfifo((dir / "fifo.png").c_str(), 0600) == 0);
  for (const std::string name : {"link.png", "fifo.png", "a-directory"}) {
    std::string error;
    try {
      write_file_checked((dir / name).string(), "PNG");
    } catch (const std::exception& e) {
      error = e.what();
    }
    std::printf("[viewer] screenshot to %s: %s\n", name.c_str(), error.empty() ? "written (not refused)" : error.c_str());
    CHECK_THAT(error, Catch::Contains("regular file"));
  }
  CHECK(fs::is_symlink(fs::symlink_status(dir / "link.png")));
  CHECK(fs::is_fifo(fs::symlink_status(dir / "fifo.png")));
  CHECK(fs::is_directory(dir / "a-directory"));
  std::ifstream kept(dir / "target.txt");
  std::string text;
  kept >> text;
  CHECK(text == "keep");
  // A write that fails removes the parent directories it created, and only those.
  rlimit old{};
  getrlimit(RLIMIT_FSIZE, &old);
  rlimit small = old;
  small.rlim_cur = 100;
  signal(SIGXFSZ, SIG_IGN);
  setrlimit(RLIMIT_FSIZE, &small);
  std::string error;
  try {
    write_file_checked((dir / "new1/new2/shot.png").string(), std::string(100000, 'x'));
  } catch (const std::exception& e) {
    error = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, SIG_DFL);
  std::printf("[viewer] failed write under new directories: %s; new1 left: %d\n", error.c_str(), int(fs::exists(dir / "new1")));
  CHECK_THAT(error, Catch::Contains("File too large"));
  CHECK_FALSE(fs::exists(dir / "new1"));
  CHECK(fs::exists(dir));
  fs::remove_all(dir);
}

// [issue 22's residual defects: trace.json and config.json refused in one line naming the file and the key] -----

TEST_CASE("a trace.json or config.json that is a FIFO or a directory is refused by name without blocking", "[viewer]") {
  // Before: a FIFO blocked the viewer forever; a directory gave "basic_filebuf::underflow ... Is a directory".
  namespace fs = std::filesystem;
  const fs::path root = fs::temp_directory_path() / ("gdn2-test-viewer-special-" + std::to_string(::getpid()));
  fs::remove_all(root);
  const fs::path trace = root / "trace", ck = root / "ck";
  model::save_trace(trace.string(), scenario("overwrite-erase").main.trace);
  fs::create_directories(ck);
  fs::copy(std::string(GDN2_SOURCE_DIR) + "/notebooks_data/checkpoints/mqar-tiny-gdn2", ck);
  for (const auto& [dir, file] : {std::pair{trace, "trace.json"}, std::pair{ck, "config.json"}}) {
    for (const bool fifo : {true, false}) {
      fs::remove_all(dir / file);
      if (fifo) REQUIRE(::mkfifo((dir / file).c_str(), 0600) == 0);
      else fs::create_directories(dir / file);
      ViewerState st;
      if (dir == trace) st.source = SourceKind::trace_dir, st.trace_dir = trace.string();
      else st.source = SourceKind::checkpoint, st.checkpoint_dir = ck.string();
      st.reload();
      std::printf("[viewer] %s %s: %s\n", file, fifo ? "a FIFO" : "a directory", st.status.c_str());
      CHECK_THAT(st.status, Catch::Contains(file) && Catch::Contains(fifo ? "FIFO" : "is a directory"));
      CHECK(st.status.find("basic_filebuf") == std::string::npos);
      CHECK(st.status.find('\n') == std::string::npos);
    }
  }
  fs::remove_all(root);
}

TEST_CASE("a trace.json the writer did not write is refused in one line naming the key, no library codes", "[viewer]") {
  // Before: raw nlohmann text (type_error.306 for [], type_error.302 for value_names null or [1,2], parse_error.101
  // for an empty file, out_of_range.406 for 1e999), and kind or variant "bogus" accepted.
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("gdn2-test-viewer-trace-json-" + std::to_string(::getpid()));
  const model::Trace tr = scenario("overwrite-erase").main.trace;
  fs::remove_all(dir);
  model::save_trace(dir.string(), tr);
  const nlohmann::json original = [&] {
    std::ifstream in(dir / "trace.json");
    return nlohmann::json::parse(in);
  }();
  auto with = [&](const std::function<void(nlohmann::json&)>& change) {
    nlohmann::json j = original;
    change(j);
    return j.dump(2);
  };
  std::string overflow = original.dump(2);
  overflow.replace(overflow.find("\"scale\": "), 9, "\"scale\": 1e999, \"x\": ");
  for (const auto& [text, expect] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"[]", {"top level", "object"}},
           {"", {"empty"}},
           {with([](nlohmann::json& j) { j["value_names"] = nullptr; }), {"'value_names'", "list of strings"}},
           {with([](nlohmann::json& j) { j["value_names"] = {1, 2}; }), {"'value_names'", "list of strings"}},
           {with([](nlohmann::json& j) { j["labels"] = "k0"; }), {"'labels'", "list of strings"}},
           {with([](nlohmann::json& j) { j.erase("labels"); }), {"'labels'", "missing"}},
           {with([](nlohmann::json& j) { j.erase("kind"); }), {"'kind'", "missing"}},
           {with([](nlohmann::json& j) { j["kind"] = "bogus"; }), {"'kind'", "bogus"}},
           {with([](nlohmann::json& j) { j["variant"] = "bogus"; }), {"'variant'", "bogus"}},
           {with([](nlohmann::json& j) { j["title"] = 5; }), {"'title'", "string"}},
           {overflow, {"'scale'", "too large"}}}) {
    std::ofstream(dir / "trace.json") << text;
    ViewerState st;
    st.source = SourceKind::trace_dir;
    st.trace_dir = dir.string();
    st.reload();
    std::printf("[viewer] trace.json %s: %s\n", expect[0].c_str(), st.status.c_str());
    CAPTURE(text.substr(0, 200));
    CHECK_THAT(st.status, Catch::Contains("trace.json"));
    for (const std::string& e : expect) CHECK_THAT(st.status, Catch::Contains(e));
    CHECK(st.status.find("json.exception") == std::string::npos);
    CHECK(st.status.find('\n') == std::string::npos);
  }
  std::ofstream(dir / "trace.json") << original.dump(2);
  CHECK_NOTHROW(model::load_trace(dir.string()));
  fs::remove_all(dir);
}

TEST_CASE("gdn2-viewer refuses --step outside the sequence and an empty --screenshot (exit 2, before any window)", "[viewer]") {
  // Before: --step -5 and 99999 were clamped silently; --screenshot "" exited 0 writing nothing.
  const std::string err = (std::filesystem::temp_directory_path() / ("gdn2-test-viewer-args-" + std::to_string(::getpid()))).string();
  for (const auto& [args, expect] : std::vector<std::pair<std::string, std::string>>{
           {"--scenario overwrite-erase --step 99999", "--step 99999 is outside 0 .. "},
           {"--scenario overwrite-erase --step -5", "--step -5 is outside 0 .. "},
           {"--scenario overwrite-erase --screenshot ''", "--screenshot needs a file name"}}) {
    const int raw = std::system((std::string("timeout 60 ") + GDN2_VIEWER_BIN + " " + args + " >/dev/null 2>" + err).c_str());
    std::ifstream in(err);
    std::stringstream ss;
    ss << in.rdbuf();
    const int status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
    std::printf("[viewer] gdn2-viewer %s: exit=%d: %s", args.c_str(), status, ss.str().c_str());
    CAPTURE(args, ss.str());
    CHECK(status == 2);
    CHECK_THAT(ss.str(), Catch::Contains(expect));
  }
  std::filesystem::remove(err);
}
