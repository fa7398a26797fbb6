// gdn2 tests [check] — the check library (check/check.hpp) on in-memory arrays: what it expects, what it ignores,
// non-finite values, and the local per-(sequence, chunk, head) criterion with its detection floor.
#include "helpers.hpp"

#include <tuple>

#include "check/check.hpp"
#include "core/backward.hpp"

using namespace gdn2;
using namespace gdn2::test;

namespace {

template <typename Scalar>
io::NpyArray array(const Tensor<Scalar>& t) {
  const std::string bytes = io::encode_npy(t);
  return io::parse_npy(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), "t");
}

// gdn2 inputs with an upstream gradient do: B=2, T=256, H=2, HV=4, K=16, V=8 by default, C=64 (4 chunks per sequence).
struct Case {
  Layer<double> x;
  Tensor<double> do_;
  check::Arrays inputs;
  index_t B = 2, T = 256, H = 2, HV = 4, K = 16, V = 8;
  explicit Case(index_t T_ = 256, index_t H_ = 2) : T(T_), H(H_), HV(2 * H_) {
    Rng rng(22);
    x = random_layer<double>(rng, B, T, H, HV, K, V, [](Rng& r) { return r.uniform(-0.2, 0); });
    do_ = Tensor<double>(x.v.shape);
    for (auto& e : do_.data) e = rng.normal();
    inputs = {{"q", array(x.q)}, {"k", array(x.k)}, {"v", array(x.v)}, {"g", array(x.g)},
              {"b", array(x.b)}, {"w", array(x.w)}, {"do", array(do_)}};
  }
  // The reference's own outputs and gradients in precision Scalar: an honest candidate.
  template <typename Scalar>
  std::map<std::string, Tensor<Scalar>> honest() const {
    const Layer<Scalar> xs = cast_layer<Scalar>(x);
    ForwardOptions opt;
    Tensor<Scalar> o, ht;
    forward(Form::chunk, o, ht, xs, opt);
    auto gr = backward(Form::chunk, xs, cast<Scalar>(do_), Tensor<Scalar>{}, opt);
    return {{"o", o}, {"ht", ht}, {"dq", gr.dq}, {"dk", gr.dk}, {"dv", gr.dv}, {"dg", gr.dg}, {"db", gr.db}, {"dw", gr.dw}};
  }
};

template <typename Scalar>
check::Arrays arrays(const std::map<std::string, Tensor<Scalar>>& m) {
  check::Arrays a;
  for (const auto& [n, t] : m) a.emplace(n, array(t));
  return a;
}

const check::Row& row(const check::Report& r, const std::string& name) {
  for (const auto& x : r.rows)
    if (x.name == name) return x;
  FAIL("no row " << name);
  return r.rows.front();
}

}  // namespace

TEST_CASE("check: the reference itself passes; every produced tensor is expected", "[check]") {
  const Case c;
  const auto report = check::run(c.inputs, arrays(c.honest<double>()), {});
  std::printf("%s", check::to_table(report, "float64 reference").c_str());
  REQUIRE(report.passed);
  REQUIRE(report.rows.size() == 8);
  for (const auto& r : report.rows) {
    CAPTURE(r.name, r.ratio, r.local_ratio);
    REQUIRE(r.verdict == check::Verdict::ok);
    REQUIRE(r.ratio <= 1e-10);
    REQUIRE(r.local_ratio <= 1e-10);
    REQUIRE(r.bound == 1e-10);
  }
}

TEST_CASE("check: missing fails unless --only; unknown names ignored; impossible names not-produced", "[check]") {
  const Case c;
  auto cand = arrays(c.honest<float>());
  cand.erase("db");
  cand.emplace("db_saved_as", array(c.x.b));  // the renamed file of the issue
  auto report = check::run(c.inputs, cand, {});
  std::printf("%s", check::to_table(report, "db missing").c_str());
  CHECK_FALSE(report.passed);
  CHECK(row(report, "db").verdict == check::Verdict::missing);
  CHECK(row(report, "db_saved_as").verdict == check::Verdict::ignored);
  // Nothing was compared for the missing db, so no bound was applied: its row shows "-" (and JSON null) in that
  // column, not the float32 bound it would have had.
  const std::string table = check::to_table(report, "db missing");
  const size_t at = table.find("\ndb ") + 1;
  const std::string db_line = table.substr(at, table.find('\n', at) - at);
  std::printf("  [measured] the missing db's row: %s\n", db_line.c_str());
  CHECK(db_line.find("e-") == std::string::npos);
  CHECK(row(report, "db").bound_reason.empty());
  CHECK_THAT(check::to_json(report), Catch::Contains("\"bound\": null, \"bound_reason\": \"\", \"note\": \"expected db.npy"));
  CHECK(row(report, "dw").verdict == check::Verdict::ok);

  check::Options only;
  only.only = {"o", "ht", "dq", "dk", "dv", "dg", "dw"};
  report = check::run(c.inputs, cand, only);
  CHECK(report.passed);

  cand = arrays(c.honest<float>());
  cand.emplace("dh0", array(Tensor<double>({c.B, c.HV, c.K, c.V})));  // no h0 in the inputs
  cand.emplace("dbeta", array(Tensor<double>({c.B, c.T, c.H})));     // gdn2 has no beta
  report = check::run(c.inputs, cand, {});
  CHECK_FALSE(report.passed);
  CHECK(row(report, "dh0").verdict == check::Verdict::not_produced);
  CHECK_THAT(row(report, "dh0").note, Catch::Contains("h0"));
  CHECK(row(report, "dbeta").verdict == check::Verdict::not_produced);

  // Without do / dht: gradients are not expected, and a gradient file is reported, not silently skipped.
  check::Arrays no_do = c.inputs;
  no_do.erase("do");
  cand = arrays(c.honest<float>());
  report = check::run(no_do, {{"o", cand.at("o")}, {"ht", cand.at("ht")}, {"notes", io::NpyArray{}}}, {});
  CHECK(report.passed);
  report = check::run(no_do, cand, {});
  CHECK_FALSE(report.passed);
  CHECK(row(report, "dq").verdict == check::Verdict::not_produced);

  REQUIRE_THROWS_WITH(check::run(c.inputs, cand, [] {
                        check::Options o;
                        o.only = {"dz"};
                        return o;
                      }()),
                      Catch::Contains("--only") && Catch::Contains("dz"));
  REQUIRE_THROWS_WITH(check::bound_for("nan", "o", "f4", nullptr), Catch::Contains("--tolerance"));
  REQUIRE_THROWS_WITH(check::bound_for("inf", "o", "f4", nullptr), Catch::Contains("--tolerance"));
}

// Before: a candidate of the wrong shape or dtype printed inf in the ratio, local and max abs columns, numbers of a
// comparison that never ran.
TEST_CASE("check: a wrong shape or dtype fails with no numbers in the table", "[check]") {
  const Case c;
  auto cand = arrays(c.honest<float>());
  Tensor<float> o_t({c.B, c.HV, c.T, c.V});  // [B,HV,T,V] for [B,T,HV,V]: a transposed layout
  cand.at("o") = array(o_t);
  check::Options only;
  only.only = {"o", "ht"};
  const std::string table = check::to_table(check::run(c.inputs, cand, only), "o transposed");
  const size_t at = table.find("\no ") + 1;
  const std::string o_line = table.substr(at, table.find('\n', at) - at);
  std::printf("  [measured] the transposed o's row: %s\n", o_line.c_str());
  CHECK(o_line.find("inf") == std::string::npos);
  CHECK_THAT(o_line, Catch::Contains("FAIL (shape [2,4,256,8], reference [2,256,4,8])"));
}

// Before: the row of a candidate whose dtype is not read (float16, int32) showed the bound "1e-05 auto: f4 output",
// as if a float32 candidate had been held to it: auto follows a float dtype, and nothing was compared. Its row now
// shows no bound, as a missing tensor's does ("-" in the table, null in JSON), for any --tolerance.
TEST_CASE("check: a candidate of a dtype that is not compared has no bound in its row", "[check]") {
  const Case c;
  auto cand = arrays(c.honest<float>());
  cand.at("o") = io::NpyArray{};  // entered unread (as check::run's caller does for a file): read by the loader below
  cand.at("ht") = array(Tensor<std::int32_t>({c.B, c.HV, c.K, c.V}));  // read, but int32
  const check::Loader float16 = [&](const std::string& name) -> io::NpyArray {
    throw io::unsupported_dtype(name + ".npy", "<f2", {c.B, c.T, c.HV, c.V});
  };
  for (const std::string tolerance : {"auto", "f32", "1e-3"}) {
    check::Options opt;
    opt.tolerance = tolerance;
    const auto report = check::run(c.inputs, cand, opt, float16);
    const std::string table = check::to_table(report, "float16 o, int32 ht");
    const std::string json = check::to_json(report);
    for (const std::string name : {"o", "ht"}) {
      const size_t at = table.find("\n" + name + " ") + 1;
      const std::string line = table.substr(at, table.find('\n', at) - at);
      std::printf("  [measured] --tolerance %s, %s's row: %s\n", tolerance.c_str(), name.c_str(), line.c_str());
      const auto& r = row(report, name);
      CAPTURE(tolerance, name, line);
      CHECK(r.verdict == check::Verdict::fail);
      CHECK(r.bound == 0);
      CHECK(r.bound_reason.empty());
      CHECK(line.find("auto") == std::string::npos);
      CHECK(line.find("e-0") == std::string::npos);  // no bound (1e-05, 1e-03) in any column
      CHECK_THAT(json, Catch::Contains("{\"name\": \"" + name + "\", \"verdict\": \"FAIL\""));
    }
    CHECK_THAT(row(report, "o").note, Catch::Contains("got float16 ('<f2')"));
    CHECK_THAT(row(report, "ht").note, Catch::Contains("got int32 ('<i4')"));
    // A compared row keeps its bound: dq (float32) is held to auto's f4 gradient bound, or to the one given.
    const auto& dq = row(report, "dq");
    std::printf("  [measured] --tolerance %s, dq: bound %.0e (%s), ratio %.2e\n", tolerance.c_str(), dq.bound,
                dq.bound_reason.c_str(), dq.ratio);
    CHECK(dq.verdict == check::Verdict::ok);
    CHECK(dq.bound == (tolerance == "1e-3" ? 1e-3 : 1e-4));
    // The JSON row of o: bound null, as a missing tensor's.
    const size_t o_at = json.find("{\"name\": \"o\"");
    CHECK_THAT(json.substr(o_at, json.find('}', json.find("\"bound\"", o_at)) - o_at),
               Catch::Contains("\"bound\": null, \"bound_reason\": \"\""));
  }
}

TEST_CASE("check: non-finite values are counted, located, and the worst index points at them", "[check]") {
  const Case c;
  auto honest = c.honest<float>();
  Tensor<float>& dv = honest.at("dv");
  const index_t at = offset_bthd(1, 100, 3, c.T, c.HV, c.V) + 5;
  dv.data[at] = NAN;
  dv.data[at + 1] = INFINITY;
  const auto report = check::run(c.inputs, arrays(honest), {});
  const auto& r = row(report, "dv");
  CAPTURE(r.non_finite);
  REQUIRE(r.verdict == check::Verdict::fail);
  REQUIRE(r.non_finite == 2);
  REQUIRE(r.first_non_finite == std::vector<index_t>{1, 100, 3, 5});
  REQUIRE(r.worst_index == r.first_non_finite);
  REQUIRE(r.worst_block.sequence == 1);
  REQUIRE(r.worst_block.chunk == 1);
  REQUIRE(r.worst_block.head == 3);
  const std::string json = check::to_json(report);
  REQUIRE(json.find("\"first_non_finite\": [1, 100, 3, 5]") != std::string::npos);
  REQUIRE(json.find("inf") == std::string::npos);
  REQUIRE(json.find("nan") == std::string::npos);
}

TEST_CASE("check: the local criterion catches one bad (chunk, head) block that the global ratio misses", "[check]") {
  const Case c(2048, 4);  // 32 chunks x 4 heads per sequence: one block is 1/256 of db
  const auto honest = c.honest<float>();
  // An honest float32 computation: its worst block stays well under the bound (no false alarm).
  const auto clean = check::run(c.inputs, arrays(honest), {});
  for (const auto& r : clean.rows) {
    log_measure("float32 reference, worst local ratio of " + r.name, r.local_ratio, r.bound);
    REQUIRE(r.verdict == check::Verdict::ok);
  }
  // db off by 0.1% in one chunk of one head (the case): global ratio under 1e-4, local ratio over it.
  auto bad = honest;
  Tensor<float>& db = bad.at("db");
  for (index_t t = 64; t < 128; ++t)
    for (index_t d = 0; d < c.K; ++d) db.data[offset_bthd(1, t, 1, c.T, c.H, c.K) + d] *= 1.001f;  // chunk 1, head 1
  auto report = check::run(c.inputs, arrays(bad), {});
  const auto& r = row(report, "db");
  log_measure("db 0.1% off in one block: global ratio (passes alone)", r.ratio, r.bound);
  log_measure("db 0.1% off in one block: local ratio", r.local_ratio, r.bound);
  CHECK(r.ratio <= r.bound);
  REQUIRE(r.verdict == check::Verdict::fail);
  REQUIRE(r.worst_block.sequence == 1);
  REQUIRE(r.worst_block.chunk == 1);
  REQUIRE(r.worst_block.head == 1);
  REQUIRE(r.worst_block.t0 == 64);
  REQUIRE(r.worst_block.t1 == 128);

  // dk off by 1% at one token of one head.
  bad = honest;
  Tensor<float>& dk = bad.at("dk");
  for (index_t d = 0; d < c.K; ++d) dk.data[offset_bthd(0, 200, 2, c.T, c.H, c.K) + d] *= 1.01f;
  report = check::run(c.inputs, arrays(bad), {});
  const auto& rk = row(report, "dk");
  log_measure("dk 1% off at one token: global ratio (passes alone)", rk.ratio, rk.bound);
  log_measure("dk 1% off at one token: local ratio", rk.local_ratio, rk.bound);
  CHECK(rk.ratio <= rk.bound);
  REQUIRE(rk.verdict == check::Verdict::fail);
  REQUIRE(rk.worst_block.chunk == 3);
  REQUIRE(rk.worst_block.head == 2);
}

TEST_CASE("check: the local criterion's detection floor (docs/gradients.md)", "[check]") {
  // The smallest relative error e, applied to a whole (chunk, head) block or to one token's row, that fails the
  // check, found by bisection on the float32 reference candidate. docs/gradients.md quotes these figures.
  const Case c;
  const auto honest = c.honest<float>();
  auto fails_with = [&](const std::string& name, double e, bool whole_block) {
    auto bad = honest;
    Tensor<float>& t = bad.at(name);
    const index_t D = t.shape[3], heads = t.shape[2];
    const index_t t0 = whole_block ? 128 : 150, t1 = whole_block ? 192 : 151;
    for (index_t tok = t0; tok < t1; ++tok)
      for (index_t d = 0; d < D; ++d) t.data[offset_bthd(0, tok, 1, c.T, heads, D) + d] *= float(1 + e);
    return !check::run(c.inputs, arrays(bad), {}).passed;
  };
  for (const std::string name : {"o", "db"})
    for (bool whole : {true, false}) {
      double lo = 1e-7, hi = 1.0;
      REQUIRE(fails_with(name, hi, whole));
      REQUIRE_FALSE(fails_with(name, lo, whole));
      for (int i = 0; i < 12; ++i) {  // to within a factor 1e7^(1/4096) = 1.004
        const double mid = std::sqrt(lo * hi);
        (fails_with(name, mid, whole) ? hi : lo) = mid;
      }
      const double bound = name == "o" ? 1e-5 : 1e-4;
      log_measure(name + (whole ? ": smallest detected error, one block (x bound)" : ": smallest detected error, one token (x bound)"),
                  hi / bound, whole ? 2.0 : 2.0 * std::sqrt(64.0));
      // A whole block off by e has local ratio ~e: detected from about the bound. One token of C = 64 has about
      // 1/sqrt(64) of the block's norm: detected from about sqrt(C) x the bound.
      REQUIRE(hi <= (whole ? 2.0 : 2.0 * std::sqrt(64.0)) * bound);
    }
}

TEST_CASE("check: packed sequences are blocked per sequence; the report prints as JSON", "[check]") {
  Rng rng(7);
  auto x = random_layer<double>(rng, 1, 150, 1, 2, 8, 4, [](Rng& r) { return r.uniform(-0.2, 0); });
  Tensor<std::int32_t> cu({3});
  cu.data = {0, 70, 150};
  check::Arrays in = {{"q", array(x.q)}, {"k", array(x.k)}, {"v", array(x.v)}, {"g", array(x.g)},
                      {"b", array(x.b)}, {"w", array(x.w)}, {"cu_seqlens", array(cu)}};
  Tensor<double> o, ht;
  x.cu_seqlens = {0, 70, 150};
  forward(Form::chunk, o, ht, x, {});
  for (index_t d = 0; d < 4; ++d) o.data[offset_bthd(0, 75, 1, 150, 2, 4) + d] *= 1.01;  // token 5 of sequence 1
  check::Options opt;
  opt.layer.chunk_size = 32;
  const auto report = check::run(in, {{"o", array(o)}, {"ht", array(ht)}}, opt);
  const auto& r = row(report, "o");
  CAPTURE(r.worst_block.sequence, r.worst_block.chunk, r.worst_block.t0);
  REQUIRE(r.verdict == check::Verdict::fail);
  REQUIRE(r.worst_block.sequence == 1);
  REQUIRE(r.worst_block.chunk == 0);
  REQUIRE(r.worst_block.t1 == 32);
  REQUIRE(r.worst_index == std::vector<index_t>{0, 75, 1, r.worst_index[3]});
  const std::string json = check::to_json(report);
  REQUIRE(json.find("\"worst_index\": [0, 75, 1, ") != std::string::npos);
  REQUIRE(json.find("\"bound\": 1e-10") != std::string::npos);
}

TEST_CASE("check: a reference of 1e200 in one head gives finite ratios and catches a wrong head", "[check]") {
  // Before: the unscaled |ref| overflowed to inf, so a wrong head next to the 1e200 one passed (ratio err/inf = 0,
  // local floor inf) and an error in the large head gave ratio inf/inf = nan ("-nan").
  Case c(128);
  const index_t huge = 1;  // value head 1 holds v of about 1e200
  for (index_t i = 0; i < c.x.v.numel(); ++i)
    if ((i / c.V) % c.HV == huge) c.x.v.data[i] *= 1e200;
  const check::Arrays inputs = {{"q", array(c.x.q)}, {"k", array(c.x.k)}, {"v", array(c.x.v)},
                                {"g", array(c.x.g)}, {"b", array(c.x.b)}, {"w", array(c.x.w)}};
  Tensor<double> o, ht;
  forward(Form::chunk, o, ht, c.x, ForwardOptions{});
  auto with_o = [&](const Tensor<double>& oc) { return check::Arrays{{"o", array(oc)}, {"ht", array(ht)}}; };
  auto scaled = [&](index_t head, double by) {  // o with value head `head` (or every head when -1) multiplied
    Tensor<double> t = o;
    for (index_t i = 0; i < t.numel(); ++i)
      if (head < 0 || (i / c.V) % c.HV == head) t.data[i] *= by;
    return t;
  };
  const auto unmodified = check::run(inputs, with_o(o), {});
  std::printf("%s", check::to_table(unmodified, "the reference, head 1 at 1e200").c_str());
  REQUIRE(unmodified.passed);
  for (const auto& [what, head, by] : {std::tuple<const char*, index_t, double>{"the 1e200 head x 1.5", huge, 1.5},
                                       {"a head near 1 x 1.5", 0, 1.5},
                                       {"every value x 1.001", -1, 1.001}}) {
    const auto rep = check::run(inputs, with_o(scaled(head, by)), {});
    const check::Row& r = row(rep, "o");
    std::printf("  [measured] %s: ratio %.3e, local %.3e (head %lld)\n", what, r.ratio, r.local_ratio,
                static_cast<long long>(r.worst_block.head));
    CAPTURE(what, r.ratio, r.local_ratio);
    REQUIRE_FALSE(rep.passed);
    REQUIRE(r.verdict == check::Verdict::fail);
    REQUIRE(std::isfinite(r.ratio));
    REQUIRE(std::isfinite(r.local_ratio));
    REQUIRE(r.local_ratio == Approx(by - 1).epsilon(1e-6));  // the worst block is off by exactly the factor
    if (head >= 0) REQUIRE(r.worst_block.head == head);
    if (head != 0) REQUIRE(r.ratio == Approx(by - 1).epsilon(1e-3));  // head 1 dominates |o|
  }
}
