// gdn2 tests [cli] — the `gdn2` command line end to end: outputs, exit statuses, one-line errors that name the
// tensor, and nothing half-written (docs/numerics.md 20).
#include "helpers.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <thread>
#include <filesystem>
#include <functional>
#include <set>
#include <tuple>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/npy.hpp"

using namespace gdn2;
using namespace gdn2::test;
namespace fs = std::filesystem;

namespace {

struct Result {
  int status;
  std::string err;
};

// Runs `gdn2 ARGS`, capturing stderr.
Result gdn2_cli(const std::string& args) {
  const fs::path err = fs::temp_directory_path() / ("gdn2_cli_err_" + std::to_string(::getpid()));
  const std::string cmd = std::string(GDN2_BIN) + " " + args + " >/dev/null 2>" + err.string();
  const int raw = std::system(cmd.c_str());
  std::ifstream in(err);
  std::stringstream ss;
  ss << in.rdbuf();
  fs::remove(err);
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, ss.str()};
}

void save(const fs::path& dir, const std::string& name, const std::string& bytes) {
  std::ofstream(dir / name, std::ios::binary) << bytes;
}

struct Workdir {
  fs::path in, out;
  explicit Workdir(const std::string& tag) {
    const fs::path root = fs::temp_directory_path() / ("gdn2_cli_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(root);
    in = root / "in";
    out = root / "out";
    fs::create_directories(in);
  }
  ~Workdir() { fs::remove_all(in.parent_path()); }
};

Layer<double> small_layer(unsigned seed = 1, index_t B = 2, index_t T = 40) {
  Rng rng(seed);
  return random_layer<double>(rng, B, T, 2, 4, 8, 6, [](Rng& r) { return r.uniform(-0.3, 0); }, true);
}

void save_layer(const fs::path& dir, const Layer<double>& x) {
  save(dir, "q.npy", io::encode_npy(x.q));
  save(dir, "k.npy", io::encode_npy(x.k));
  save(dir, "v.npy", io::encode_npy(x.v));
  save(dir, "g.npy", io::encode_npy(x.g));
  save(dir, "b.npy", io::encode_npy(x.b));
  save(dir, "w.npy", io::encode_npy(x.w));
  if (!x.h0.empty()) save(dir, "h0.npy", io::encode_npy(x.h0));
}

template <typename Scalar>
Tensor<Scalar> load(const fs::path& file) {
  return io::to_tensor<Scalar>(io::read_npy(file.string(), file.filename().string()), file.filename().string());
}

// Bad input: exit 2, a one-line message that starts with "gdn2: error: <tensor>" (after the note naming the files of
// --in that forward does not read, if any), and no output directory files.
void expect_refusal(Workdir& w, const std::string& tensor, const std::string& problem, const std::string& extra = "") {
  const Result r = gdn2_cli("forward --in " + w.in.string() + " --out " + w.out.string() + " " + extra);
  std::printf("  [measured] refusal for %-12s exit=%d: %s", tensor.c_str(), r.status, r.err.c_str());
  CAPTURE(tensor, problem, r.err);
  REQUIRE(r.status == 2);
  std::string err = r.err;
  if (err.rfind("gdn2: note: ", 0) == 0 && err.find('\n') != std::string::npos) err.erase(0, err.find('\n') + 1);
  REQUIRE(err.rfind("gdn2: error: " + tensor, 0) == 0);
  REQUIRE(err.find(problem) != std::string::npos);
  REQUIRE(std::count(err.begin(), err.end(), '\n') == 1);
  REQUIRE((!fs::exists(w.out) || fs::is_empty(w.out)));
}

}  // namespace

TEST_CASE("cli: forward writes o and ht equal to the library, in the chosen precision", "[cli]") {
  Workdir w("ok");
  const auto x = small_layer();
  save_layer(w.in, x);
  for (const std::string form : {"recurrent", "chunk"}) {
    const Result r = gdn2_cli("forward --in " + w.in.string() + " --out " + w.out.string() + " --form " + form + " --chunk-size 16");
    REQUIRE(r.status == 0);
    const auto lib = run(form == "chunk" ? Form::chunk : Form::recurrent, x, 16, {}, 0);
    REQUIRE(bitwise_equal(load<double>(w.out / "o.npy"), lib.o));
    REQUIRE(bitwise_equal(load<double>(w.out / "ht.npy"), lib.ht));
  }
  REQUIRE(gdn2_cli("forward --precision f32 --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  const auto a = io::read_npy((w.out / "o.npy").string(), "o.npy");
  REQUIRE(a.dtype == "f4");
  const auto ref = run(Form::recurrent, x);
  require_ratio("cli f32 chunk o vs f64 REF", io::to_tensor<double>(a, "o"), ref.o, 1e-5);
  for (const auto& entry : fs::directory_iterator(w.out))  // no temporary files left behind
    REQUIRE(entry.path().filename().string().find("partial") == std::string::npos);
}

TEST_CASE("cli: variants read their own files", "[cli]") {
  Workdir w("variants");
  const auto x = small_layer(2, 1, 30);
  save_layer(w.in, x);
  Tensor<double> beta({1, 30, 2});
  for (index_t i = 0; i < beta.numel(); ++i) beta.data[i] = 0.01 * double(i % 100);
  save(w.in, "beta.npy", io::encode_npy(beta));
  for (const std::string v : {"gdn2", "kda", "deltanet", "linear"}) {
    const Result r = gdn2_cli("forward --variant " + v + " --in " + w.in.string() + " --out " + w.out.string());
    CAPTURE(v, r.err);
    REQUIRE(r.status == 0);
  }
  // gdn needs a per-head decay [B,T,H]; the per-channel g.npy is refused with a message saying so.
  const Result r = gdn2_cli("forward --variant gdn --in " + w.in.string() + " --out " + w.out.string());
  REQUIRE(r.status == 2);
  REQUIRE(r.err.find("one decay per head") != std::string::npos);
}

TEST_CASE("cli: --help explains every option and bad usage exits 2", "[cli]") {
  REQUIRE(gdn2_cli("--help").status == 0);
  REQUIRE(gdn2_cli("forward --help").status == 0);
  const std::string help = [] {
    const std::string cmd = std::string(GDN2_BIN) + " forward --help";
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    pclose(p);
    return out;
  }();
  for (const char* opt : {"--in", "--out", "--form", "--precision", "--chunk-size", "--scale", "--variant", "--l2norm-qk",
                          "--gate-logits", "--negative-eigen", "--decay", "cu_seqlens.npy", "beta.npy",
                          "value heads h*HV/H ... (h+1)*HV/H - 1 share key head h", "[B,T,HV,K]"})
    REQUIRE(help.find(opt) != std::string::npos);
  REQUIRE(gdn2_cli("forward --in /nonexistent").status == 2);  // --out missing
  REQUIRE(gdn2_cli("forward --in /x --out /y --form sideways").status == 2);
  REQUIRE(gdn2_cli("no-such-command").status == 2);
}

TEST_CASE("20. cli: every bad input is refused before anything is written", "[cli]") {
  const auto x = small_layer();
  Workdir w("bad");
  auto reset = [&] {
    fs::remove_all(w.in);
    fs::remove_all(w.out);
    fs::create_directories(w.in);
    save_layer(w.in, x);
  };
  reset();
  save(w.in, "k.npy", io::encode_npy(Tensor<double>({2, 40, 2, 7})));
  expect_refusal(w, "k", "shape");
  reset();
  save(w.in, "v.npy", io::encode_npy(Tensor<double>({2, 40, 3, 6})));
  save(w.in, "w.npy", io::encode_npy(Tensor<double>({2, 40, 3, 6})));
  expect_refusal(w, "v", "multiple of key heads");
  reset();
  for (const char* f : {"q.npy", "k.npy", "g.npy", "b.npy"}) save(w.in, f, io::encode_npy(Tensor<double>({2, 40, 2, 0})));
  expect_refusal(w, "q", "K = 0");
  reset();
  save(w.in, "h0.npy", io::encode_npy(Tensor<double>({3, 4, 8, 6})));
  expect_refusal(w, "h0", "one initial state");
  auto with = [&](const std::string& file, const Tensor<double>& t) {
    reset();
    save(w.in, file, io::encode_npy(t));
  };
  auto q = x.q;
  q.data[17] = NAN;
  with("q.npy", q);
  expect_refusal(w, "q", "finite");
  auto g = x.g;
  g.data[5] = 0.25;
  with("g.npy", g);
  expect_refusal(w, "g", "[-inf, 0]");
  auto b = x.b;
  b.data[3] = 1.5;
  with("b.npy", b);
  expect_refusal(w, "b", "[0, 1]");
  b.data[3] = std::nextafter(1.0, 2.0);  // shown with six digits it read "value 1", an allowed value
  with("b.npy", b);
  expect_refusal(w, "b", "value 1.0000000000000002 at");
  auto v = x.v;
  v.data[7] = 1e39;  // finite in the file; before, --precision f32 reported "value inf (must be finite)"
  with("v.npy", v);
  expect_refusal(w, "v", "value 1e+39 at [0,0,1,1] does not fit float32", "--precision f32");
  auto wg = x.w;
  wg.data[3] = -0.5;
  with("w.npy", wg);
  expect_refusal(w, "w", "[0, 1]");
  // Files that are not valid .npy, or of the wrong dtype, or truncated.
  reset();
  save(w.in, "v.npy", "this is not a numpy file");
  expect_refusal(w, "v.npy", "magic");
  reset();
  const std::string full = io::encode_npy(x.g);
  save(w.in, "g.npy", full.substr(0, full.size() - 9));
  expect_refusal(w, "g.npy", "truncated");
  reset();
  Tensor<double> ints({2});
  save(w.in, "q.npy", io::encode_npy(ints).replace(io::encode_npy(ints).find("<f8"), 3, "<i8"));
  expect_refusal(w, "q.npy", "float32 or float64");
  reset();
  fs::remove(w.in / "b.npy");
  expect_refusal(w, "b.npy", "missing");
  // cu_seqlens: needs B = 1, must start at 0, be monotone and end at T.
  const auto packed = small_layer(3, 1, 40);
  auto cu_case = [&](std::vector<long> cu, const std::string& problem, const Layer<double>& layer) {
    fs::remove_all(w.in);
    fs::remove_all(w.out);
    fs::create_directories(w.in);
    auto l = layer;
    l.h0 = {};
    save_layer(w.in, l);
    Tensor<double> t({index_t(cu.size())});
    std::string bytes = io::encode_npy(t);
    bytes.replace(bytes.find("<f8"), 3, "<i8");
    std::memcpy(bytes.data() + bytes.size() - 8 * cu.size(), cu.data(), 8 * cu.size());
    save(w.in, "cu_seqlens.npy", bytes);
    expect_refusal(w, "cu_seqlens", problem);
  };
  cu_case({0, 20, 10, 40}, "not monotone", packed);
  cu_case({5, 40}, "start at 0", packed);
  cu_case({0, 20, 39}, "end at T", packed);
  cu_case({0, 40}, "B = 1", x);
}

// The non-normal growth case of test 10 (b up to 2): two alternating unit keys whose update has an eigenvalue above 1,
// so the state grows geometrically with T (past float32's range by T = 1024, float64's by T = 16384).
Layer<double> growth_layer(index_t T) {
  Layer<double> x{Tensor<double>({1, T, 1, 2}), Tensor<double>({1, T, 1, 2}), Tensor<double>({1, T, 1, 1}),
                  Tensor<double>({1, T, 1, 2}), Tensor<double>({1, T, 1, 2}), Tensor<double>({1, T, 1, 1}), {}};
  const double th[2] = {2.52, 1.99}, bb[2][2] = {{0.24, 1.87}, {1.88, 0.026}};
  for (index_t t = 0; t < T; ++t) {
    x.k.data[2 * t] = x.q.data[2 * t] = std::cos(th[t % 2]);
    x.k.data[2 * t + 1] = x.q.data[2 * t + 1] = std::sin(th[t % 2]);
    x.b.data[2 * t] = bb[t % 2][0];
    x.b.data[2 * t + 1] = bb[t % 2][1];
    x.v.data[t] = t == 0;
    x.w.data[t] = 1;
  }
  return x;
}

TEST_CASE("10. cli: float32 overflow exits 3 and writes nothing", "[cli]") {
  // The non-normal growth case of test 10 (b up to 2), long enough to leave float32's range.
  const index_t T = 1024;
  const Layer<double> x = growth_layer(T);
  Workdir w("overflow");
  save_layer(w.in, x);
  const Result ok = gdn2_cli("forward --negative-eigen --in " + w.in.string() + " --out " + w.out.string());
  REQUIRE(ok.status == 0);  // float64 holds it
  fs::remove_all(w.out);
  const Result r = gdn2_cli("forward --negative-eigen --precision f32 --in " + w.in.string() + " --out " + w.out.string());
  std::printf("  [measured] f32 overflow: exit=%d: %s", r.status, r.err.c_str());
  REQUIRE(r.status == 3);
  REQUIRE(r.err.find("overflowed float32") != std::string::npos);
  REQUIRE(!fs::exists(w.out / "o.npy"));
}

namespace {

double loss_of(const fs::path& out, const Tensor<double>& do_, const Tensor<double>& dht) {
  const auto o = load<double>(out / "o.npy"), ht = load<double>(out / "ht.npy");
  double s = 0;
  for (index_t i = 0; i < o.numel(); ++i) s += o.data[i] * do_.data[i];
  for (index_t i = 0; i < ht.numel(); ++i) s += ht.data[i] * dht.data[i];
  return s;
}

}  // namespace

TEST_CASE("cli: backward through the front-end matches finite differences of forward", "[cli]") {
  // Every file gdn2 backward writes is the gradient of that file's content: logits, unnormalised q/k, A_log, dt_bias.
  // Gates per key head (HV = H), and per value head as fla's fused_recurrent_gdn2 takes them: g, b [B,T,HV,K] with
  // A_log [HV], dt_bias [HV*K] (HV = 2H).
  for (const bool per_value_head : {false, true}) {
    Workdir w("frontend");
    Rng rng(3);
    const index_t B = 1, T = 40, H = 2, HV = per_value_head ? 4 : 2, K = 6, V = 5, HG = per_value_head ? HV : H;
    std::vector<std::pair<std::string, Tensor<double>>> files = {
        {"q", Tensor<double>({B, T, H, K})}, {"k", Tensor<double>({B, T, H, K})}, {"v", Tensor<double>({B, T, HV, V})},
        {"g", Tensor<double>({B, T, HG, K})}, {"b", Tensor<double>({B, T, HG, K})}, {"w", Tensor<double>({B, T, HV, V})},
        {"A_log", Tensor<double>({HG})},      {"dt_bias", Tensor<double>({HG * K})}, {"h0", Tensor<double>({B, HV, K, V})}};
    for (auto& [name, t] : files)
      for (auto& e : t.data) e = rng.normal();
    Tensor<double> do_({B, T, HV, V}), dht({B, HV, K, V});
    for (auto& e : do_.data) e = rng.normal();
    for (auto& e : dht.data) e = rng.normal();
    auto write_all = [&](const std::vector<std::pair<std::string, Tensor<double>>>& fs_) {
      for (const auto& [name, t] : fs_) save(w.in, name + ".npy", io::encode_npy(t));
    };
    write_all(files);
    save(w.in, "do.npy", io::encode_npy(do_));
    save(w.in, "dht.npy", io::encode_npy(dht));
    const std::string opts = " --l2norm-qk --gate-logits --negative-eigen --decay softplus --chunk-size 16";
    REQUIRE(gdn2_cli("backward --in " + w.in.string() + " --out " + w.out.string() + opts).status == 0);
    const fs::path grads = w.out.parent_path() / "grads";
    fs::rename(w.out, grads);
    for (auto& [name, t] : files) {
      const auto grad = load<double>(grads / ("d" + name + ".npy"));
      REQUIRE(grad.shape == t.shape);
      Tensor<double> u(t.shape);
      for (auto& e : u.data) e = rng.normal();
      const double h = 1e-6;
      auto perturbed = files;
      double analytic = 0, gnorm = 0, unorm = 0;
      for (auto& [n2, t2] : perturbed)
        if (n2 == name)
          for (index_t i = 0; i < t2.numel(); ++i) t2.data[i] += h * u.data[i];
      for (index_t i = 0; i < u.numel(); ++i)
        analytic += grad.data[i] * u.data[i], gnorm += grad.data[i] * grad.data[i], unorm += u.data[i] * u.data[i];
      write_all(perturbed);
      REQUIRE(gdn2_cli("forward --in " + w.in.string() + " --out " + w.out.string() + opts).status == 0);
      const double lp = loss_of(w.out, do_, dht);
      for (auto& [n2, t2] : perturbed)
        if (n2 == name)
          for (index_t i = 0; i < t2.numel(); ++i) t2.data[i] -= 2 * h * u.data[i];
      write_all(perturbed);
      REQUIRE(gdn2_cli("forward --in " + w.in.string() + " --out " + w.out.string() + opts).status == 0);
      const double lm = loss_of(w.out, do_, dht);
      write_all(files);
      const double err = std::abs((lp - lm) / (2 * h) - analytic) / std::sqrt(gnorm * unorm);
      log_measure("cli d" + name + (per_value_head ? " (front-end, gates per value head)" : " (front-end)") +
                      " vs finite differences of gdn2 forward",
                  err, 1e-6);
      REQUIRE(err <= 1e-6);
    }
  }
}

TEST_CASE("cli: gates per value head — tied variants, and shapes refused with both allowed", "[cli]") {
  Workdir w("value_heads");
  const auto x = small_layer(5, 1, 30);  // H = 2, HV = 4, K = 8, V = 6
  const index_t B = 1, T = 30, H = 2, HV = 4, K = 8, V = 6;
  save_layer(w.in, x);
  // kda with beta [B,T,HV] is gdn2 with b = beta·1_K per value head and w = beta·1_V (Eq. 7): the same bits.
  Tensor<double> beta({B, T, HV}), b({B, T, HV, K}), wg({B, T, HV, V});
  for (index_t i = 0; i < beta.numel(); ++i) beta.data[i] = 0.013 * double(i % 77);
  for (index_t i = 0; i < b.numel(); ++i) b.data[i] = beta.data[i / K];
  for (index_t i = 0; i < wg.numel(); ++i) wg.data[i] = beta.data[i / V];
  save(w.in, "beta.npy", io::encode_npy(beta));
  REQUIRE(gdn2_cli("forward --variant kda --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  const auto o_kda = load<double>(w.out / "o.npy");
  fs::remove_all(w.out);
  save(w.in, "b.npy", io::encode_npy(b));
  save(w.in, "w.npy", io::encode_npy(wg));
  REQUIRE(gdn2_cli("forward --variant gdn2 --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  const auto o_gdn2 = load<double>(w.out / "o.npy");
  fs::remove_all(w.out);
  std::printf("  [measured] kda beta[B,T,HV] vs gdn2 b[B,T,HV,K]: ratio(o) %.1e, bitwise equal: %s\n",
              ratio(o_kda, o_gdn2), bitwise_equal(o_kda, o_gdn2) ? "yes" : "no");
  REQUIRE(bitwise_equal(o_kda, o_gdn2));
  // The gradient of beta [B,T,HV] comes back as [B,T,HV]; gdn's per-head decay may be [B,T,HV] too.
  Tensor<double> do_(x.v.shape), g_head({B, T, HV});
  for (auto& e : do_.data) e = 1.0;
  for (auto& e : g_head.data) e = -0.1;
  save(w.in, "do.npy", io::encode_npy(do_));
  REQUIRE(gdn2_cli("backward --variant kda --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  REQUIRE(load<double>(w.out / "dbeta.npy").shape == beta.shape);
  fs::remove_all(w.out);
  save(w.in, "g.npy", io::encode_npy(g_head));
  REQUIRE(gdn2_cli("backward --variant gdn --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  REQUIRE(load<double>(w.out / "dg.npy").shape == g_head.shape);
  fs::remove_all(w.out);
  // Neither per key head nor per value head: refused, naming the tensor and both shapes.
  save(w.in, "g.npy", io::encode_npy(Tensor<double>({B, T, 3, K})));
  expect_refusal(w, "g:", "expected [1,30,2,8] [B,T,H,K] per key head or [1,30,4,8] [B,T,HV,K] per value head");
  save(w.in, "g.npy", io::encode_npy(x.g));
  save(w.in, "b.npy", io::encode_npy(Tensor<double>({B, T, HV, K + 1})));
  expect_refusal(w, "b:", "expected [1,30,2,8] [B,T,H,K] per key head or [1,30,4,8] [B,T,HV,K] per value head");
  save(w.in, "beta.npy", io::encode_npy(Tensor<double>({B, T, 3})));
  expect_refusal(w, "beta:", "expected [1,30,2] [B,T,H] per key head or [1,30,4] [B,T,HV] per value head",
                 "--variant kda");
  save(w.in, "g.npy", io::encode_npy(Tensor<double>({B, T, HV, K})));
  save(w.in, "A_log.npy", io::encode_npy(Tensor<double>({H})));
  save(w.in, "dt_bias.npy", io::encode_npy(Tensor<double>({HV * K})));
  expect_refusal(w, "A_log:", "one per head of g ([H] when g is [B,T,H,K], [HV] when g is [B,T,HV,K]; g is [1,30,4,8]), got [2]",
                 "--decay softplus");
  // The front-end's own inputs are named (before: a NaN in A_log.npy, or exp(A_log) overflowing against a logit of
  // -1e6, was reported as "g: value nan ... (g is a natural-log decay and must lie in [-inf, 0])").
  Tensor<double> A_log({HV});
  A_log.data[1] = NAN;
  save(w.in, "A_log.npy", io::encode_npy(A_log));
  expect_refusal(w, "A_log: value nan at [1] (must be finite)", "", "--decay softplus");
  A_log.data[1] = 1000;
  save(w.in, "A_log.npy", io::encode_npy(A_log));
  Tensor<double> logits({B, T, HV, K});
  logits.data[9] = -1e6;
  save(w.in, "g.npy", io::encode_npy(logits));
  expect_refusal(w, "g: value ", "nan at [0,0,1,1] (computed by --decay softplus from g.npy's logits, dt_bias.npy and "
                 "A_log.npy: exp(A_log) overflowed", "--decay softplus");
}

TEST_CASE("cli: backward writes the gradients of the files each variant reads", "[cli]") {
  Workdir w("bw_variants");
  const auto x = small_layer(4, 1, 30);
  save_layer(w.in, x);
  Tensor<double> beta({1, 30, 2}), g_head({1, 30, 2}), do_(x.v.shape);
  for (auto& e : beta.data) e = 0.5;
  for (auto& e : g_head.data) e = -0.1;
  for (auto& e : do_.data) e = 1.0;
  save(w.in, "do.npy", io::encode_npy(do_));
  save(w.in, "beta.npy", io::encode_npy(beta));
  auto files_in = [&]() {
    std::set<std::string> names;  // the tensors (not the list of them, .gdn2-outputs)
    for (const auto& e : fs::directory_iterator(w.out))
      if (e.path().filename() != ".gdn2-outputs") names.insert(e.path().filename().string());
    fs::remove_all(w.out);
    return names;
  };
  using S = std::set<std::string>;
  REQUIRE(gdn2_cli("backward --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  REQUIRE(files_in() == S{"dq.npy", "dk.npy", "dv.npy", "dg.npy", "db.npy", "dw.npy", "dh0.npy"});
  REQUIRE(gdn2_cli("backward --variant kda --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  REQUIRE(files_in() == S{"dq.npy", "dk.npy", "dv.npy", "dg.npy", "dbeta.npy", "dh0.npy"});
  REQUIRE(gdn2_cli("backward --variant deltanet --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  REQUIRE(files_in() == S{"dq.npy", "dk.npy", "dv.npy", "dbeta.npy", "dh0.npy"});
  save(w.in, "g.npy", io::encode_npy(g_head));
  REQUIRE(gdn2_cli("backward --variant gdn --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  REQUIRE(load<double>(w.out / "dg.npy").shape == std::vector<index_t>{1, 30, 2});
  fs::remove_all(w.out);
  fs::remove(w.in / "g.npy");
  REQUIRE(gdn2_cli("backward --variant linear --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  REQUIRE(files_in() == S{"dq.npy", "dk.npy", "dv.npy", "dh0.npy"});  // no g.npy read: no dg
  // Bad upstream gradients are refused like bad inputs.
  save_layer(w.in, x);
  save(w.in, "do.npy", io::encode_npy(Tensor<double>({1, 30, 4, 5})));
  const Result r = gdn2_cli("backward --in " + w.in.string() + " --out " + w.out.string());
  REQUIRE(r.status == 2);
  REQUIRE(r.err.find("do: shape") != std::string::npos);
}

TEST_CASE("cli: check reports per tensor, exits 1 on a failure, prints JSON; gradcheck passes", "[cli]") {
  Workdir w("check");
  const auto x = small_layer(5, 1, 80);
  save_layer(w.in, x);
  Tensor<double> do_(x.v.shape);
  Rng rng(5);
  for (auto& e : do_.data) e = rng.normal();
  save(w.in, "do.npy", io::encode_npy(do_));
  // forward and backward each replace their --out as a whole: the gradients are written apart and moved in.
  const fs::path grads = w.out.parent_path() / "grads";
  REQUIRE(gdn2_cli("forward --precision f32 --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  REQUIRE(gdn2_cli("backward --precision f32 --in " + w.in.string() + " --out " + grads.string()).status == 0);
  for (const auto& e : fs::directory_iterator(grads)) fs::rename(e.path(), w.out / e.path().filename());
  const std::string check = "check --in " + w.in.string() + " --candidate " + w.out.string();
  Result ok = gdn2_cli(check);
  CAPTURE(ok.err);
  REQUIRE(ok.status == 0);
  auto dw = load<float>(w.out / "dw.npy");
  for (index_t i = offset_bthd(0, 64, 0, 80, 4, 6); i < dw.numel(); ++i) dw.data[i] *= 1.01f;  // last chunk 1% off
  save(w.out, "dw.npy", io::encode_npy(dw));
  REQUIRE(gdn2_cli(check).status == 1);
  const std::string cmd = std::string(GDN2_BIN) + " " + check + " --json";
  std::string json;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) json.append(buf, n);
  pclose(p);
  const auto j = nlohmann::json::parse(json);
  REQUIRE(j.at("passed") == false);
  bool dw_failed = false;
  for (const auto& t : j.at("tensors")) dw_failed |= t.at("name") == "dw" && t.at("dtype") == "f4" && t.at("verdict") == "FAIL";
  REQUIRE(dw_failed);
  REQUIRE(gdn2_cli(check + " --tolerance 0.1").status == 0);   // a looser explicit bound accepts it
  REQUIRE(gdn2_cli(check + " --tolerance nope").status == 2);
  REQUIRE(gdn2_cli("gradcheck --directions 1").status == 0);
  REQUIRE(gdn2_cli("gradcheck --directions 1 --value-head-gates").status == 0);
}

namespace {
// Runs `gdn2 ARGS` and returns its standard output (stderr discarded).
std::string gdn2_stdout(const std::string& args, int* status = nullptr) {
  const fs::path out = fs::temp_directory_path() / ("gdn2_cli_out_" + std::to_string(::getpid()));
  const int raw = std::system((std::string(GDN2_BIN) + " " + args + " >" + out.string() + " 2>/dev/null").c_str());
  if (status) *status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  std::ifstream in(out);
  std::stringstream ss;
  ss << in.rdbuf();
  fs::remove(out);
  return ss.str();
}
}  // namespace

TEST_CASE("the shipped checkpoint reaches >= 0.99 held-out accuracy (gdn2 eval --json)", "[cli][model]") {
  const std::string ck = std::string(GDN2_SOURCE_DIR) + "/notebooks_data/checkpoints/mqar-tiny-gdn2";
  int status = -1;
  const std::string out = gdn2_stdout("eval --checkpoint " + ck + " --json", &status);
  REQUIRE(status == 0);
  const auto at = out.find("\"accuracy\":");
  REQUIRE(at != std::string::npos);
  const double accuracy = std::stod(out.substr(at + 11));
  std::printf("[cli] gdn2 eval mqar-tiny-gdn2: held-out accuracy %.4f (1000 sequences)\n", accuracy);
  CHECK(accuracy >= 0.99);
}

TEST_CASE("task, train, eval and trace work end to end and refuse bad input", "[cli][model]") {
  // gdn2 task is deterministic by seed
  CHECK(gdn2_stdout("task --seed 5 --count 2") == gdn2_stdout("task --seed 5 --count 2"));
  CHECK(gdn2_stdout("task --seed 5 --count 2") != gdn2_stdout("task --seed 6 --count 2"));
  Workdir w("model");
  const std::string ck = (w.out / "ck").string();
  int status = -1;
  gdn2_stdout("train --steps 3 --batch 4 --d-model 8 --head-k 4 --head-v 4 --mlp 0 --eval-every 0 --final-examples 8 --out " + ck,
              &status);
  REQUIRE(status == 0);
  CHECK(fs::exists(fs::path(ck) / "config.json"));
  CHECK(gdn2_stdout("eval --checkpoint " + ck + " --examples 8 --json", &status).find("\"accuracy\"") != std::string::npos);
  CHECK(status == 0);
  gdn2_stdout("trace --checkpoint " + ck + " --out " + (w.out / "trace").string(), &status);
  CHECK(status == 0);
  CHECK(fs::exists(w.out / "trace" / "S.npy"));
  // Bad input: exit 2, a one-line message that names the problem, nothing written.
  Result r = gdn2_cli("trace --scenario no-such-scenario --out " + (w.out / "bad").string());
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("unknown scenario 'no-such-scenario'"));
  CHECK_FALSE(fs::exists(w.out / "bad"));
  r = gdn2_cli("train --pairs 20 --steps 1 --out " + (w.out / "bad").string());
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("cannot hold 20 pairs"));
  CHECK_FALSE(fs::exists(w.out / "bad"));
  CHECK(gdn2_stdout("eval --checkpoint " + ck + " --examples 8 --task overwrite --json", &status).find("\"task\":\"overwrite\"") !=
        std::string::npos);
  CHECK(status == 0);
  r = gdn2_cli("eval --checkpoint " + ck + " --task mqr");
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("unknown task 'mqr'"));
  r = gdn2_cli("eval --checkpoint " + (w.out / "nothing").string());
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("cannot open"));
}

// ---------------------------------------------------------------------------------------------------------------
// gdn2 check: expectations, non-finite values, the local criterion, reference overflow, JSON in every outcome.

namespace {

struct Run {
  int status;
  std::string out, err;
  double seconds;
};

// Runs `gdn2 ARGS` (optionally behind a shell prefix such as "ulimit -f 1;" or "timeout 20"), capturing stdout and
// stderr.
Run gdn2_run(const std::string& args, const std::string& shell_prefix = "") {
  const std::string tag = std::to_string(::getpid());
  const fs::path out = fs::temp_directory_path() / ("gdn2_run_out_" + tag), err = fs::temp_directory_path() / ("gdn2_run_err_" + tag);
  const std::string cmd = "/bin/bash -c '" + shell_prefix + " " + std::string(GDN2_BIN) + " " + args + "' >" + out.string() +
                          " 2>" + err.string();
  const auto t0 = std::chrono::steady_clock::now();
  const int raw = std::system(cmd.c_str());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto slurp = [](const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    fs::remove(p);
    return ss.str();
  };
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, slurp(out), slurp(err), s};
}

// An option given where it has no effect: exit 2, one line "gdn2: error: <option>: ..." naming what it needs, and
// nothing written to out.
void expect_option_refused(const std::string& args, const std::string& option, const std::string& needs,
                           const fs::path& out) {
  const Run r = gdn2_run(args);
  std::printf("  [measured] %s: exit=%d: %s", args.c_str(), r.status, r.err.c_str());
  CAPTURE(args, r.err);
  CHECK(r.status == 2);
  CHECK(r.err.rfind("gdn2: error: " + option + ": ", 0) == 0);
  CHECK_THAT(r.err, Catch::Contains(needs));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK_FALSE(fs::exists(out));
}

// A candidate directory holding the f32 forward and backward of the inputs in `w.in` (with do.npy).
void candidate(Workdir& w, const Layer<double>& x) {
  save_layer(w.in, x);
  Tensor<double> do_(x.v.shape);
  Rng rng(9);
  for (auto& e : do_.data) e = rng.normal();
  save(w.in, "do.npy", io::encode_npy(do_));
  // Each command replaces its --out as a whole, so the gradients go to a directory of their own and are moved in.
  const fs::path grads = w.out.parent_path() / "candidate_grads";
  REQUIRE(gdn2_cli("forward --precision f32 --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  REQUIRE(gdn2_cli("backward --precision f32 --in " + w.in.string() + " --out " + grads.string()).status == 0);
  for (const auto& e : fs::directory_iterator(grads)) fs::rename(e.path(), w.out / e.path().filename());
  fs::remove(grads);
}

}  // namespace

TEST_CASE("check: a missing tensor fails, unknown files are ignored, impossible ones reported", "[cli][check]") {
  Workdir w("expect");
  const auto x = small_layer(5, 1, 80);
  candidate(w, x);
  const std::string check = "check --in " + w.in.string() + " --candidate " + w.out.string();
  Run r = gdn2_run(check);
  CAPTURE(r.out, r.err);
  REQUIRE(r.status == 0);
  // db saved under another name: db is missing (FAIL), the other file is listed as ignored.
  fs::rename(w.out / "db.npy", w.out / "db_grad.npy");
  r = gdn2_run(check);
  std::printf("  [measured] db renamed: exit=%d\n%s", r.status, r.out.c_str());
  REQUIRE(r.status == 1);
  REQUIRE(r.out.find("missing") != std::string::npos);
  REQUIRE(r.out.find("db_grad") != std::string::npos);
  REQUIRE(r.out.find("ignored") != std::string::npos);
  // Naming the subset compares just that.
  r = gdn2_run(check + " --only o,ht,dq,dk,dv,dg,dw");
  CAPTURE(r.out);
  REQUIRE(r.status == 0);
  fs::rename(w.out / "db_grad.npy", w.out / "db.npy");
  // dbeta for variant gdn2 (which has no beta): the reference cannot produce it; reported and failed, not skipped.
  save(w.out, "dbeta.npy", io::encode_npy(Tensor<double>({1, 80, 2})));
  r = gdn2_run(check);
  REQUIRE(r.status == 1);
  REQUIRE(r.out.find("not-produced") != std::string::npos);
  fs::remove(w.out / "dbeta.npy");
  // Stray unrelated files (even one starting with 'd' and not a valid .npy) do not turn a good candidate into exit 2.
  save(w.out, "debug.npy", "not numpy at all");
  save(w.out, "README.txt", "notes");
  fs::remove(w.in / "do.npy");
  for (const char* f : {"dq", "dk", "dv", "dg", "db", "dw", "dh0"}) fs::remove(w.out / (std::string(f) + ".npy"));
  r = gdn2_run(check);
  CAPTURE(r.out, r.err);
  REQUIRE(r.status == 0);
  REQUIRE(r.out.find("debug") != std::string::npos);
}

TEST_CASE("check: non-finite values are counted and located; JSON is valid with full precision", "[cli][check]") {
  Workdir w("nonfinite");
  const auto x = small_layer(6, 1, 80);
  candidate(w, x);
  const std::string check = "check --json --in " + w.in.string() + " --candidate " + w.out.string();
  Run r = gdn2_run(check);
  REQUIRE(r.status == 0);
  auto j = nlohmann::json::parse(r.out);
  for (const auto& t : j.at("tensors")) {
    CAPTURE(t.dump());
    REQUIRE(t.at("worst_index").is_array());
    REQUIRE(t.at("ratio").is_number());
    REQUIRE(t.at("ratio").get<double>() > 0);  // a float32 result differs from float64: not printed as 0.000000
    REQUIRE(t.at("bound_reason").get<std::string>().find("auto: f4") == 0);
  }
  auto o = load<float>(w.out / "o.npy");
  o.data[offset_bthd(0, 50, 2, 80, 4, 6) + 3] = NAN;
  o.data[offset_bthd(0, 60, 0, 80, 4, 6) + 1] = INFINITY;
  save(w.out, "o.npy", io::encode_npy(o));
  r = gdn2_run(check);
  CAPTURE(r.out);
  REQUIRE(r.status == 1);
  j = nlohmann::json::parse(r.out);
  const auto& t = j.at("tensors").at(0);
  REQUIRE(t.at("name") == "o");
  REQUIRE(t.at("non_finite") == 2);
  REQUIRE(t.at("first_non_finite") == nlohmann::json::array({0, 50, 2, 3}));
  REQUIRE(t.at("worst_index") == nlohmann::json::array({0, 50, 2, 3}));
  REQUIRE(t.at("ratio").is_null());
  r = gdn2_run(check + " --tolerance 1e-8");
  j = nlohmann::json::parse(r.out);
  REQUIRE(j.at("tensors").at(1).at("bound").get<double>() == 1e-8);
  REQUIRE(r.out.find("\"bound\": 1e-08") != std::string::npos);
  // Errors are JSON too, with the exit status unchanged.
  for (const std::string& bad : {check + " --tolerance nope", "check --json --in " + w.in.string(),
                                 "check --json --in /nonexistent --candidate " + w.out.string()}) {
    r = gdn2_run(bad);
    CAPTURE(bad, r.out, r.err);
    REQUIRE(r.status == 2);
    j = nlohmann::json::parse(r.out);
    REQUIRE(j.at("passed") == false);
    REQUIRE(j.at("exit_status") == 2);
    REQUIRE(j.at("error").is_string());
  }
}

TEST_CASE("check: one bad chunk of one head fails the local criterion; the table shows the bound used", "[cli][check]") {
  Workdir w("local");
  const auto x = small_layer(7, 4, 2048);  // 4 sequences x 32 chunks x 2 heads: one block is 1/256 of db
  candidate(w, x);
  const std::string check = "check --in " + w.in.string() + " --candidate " + w.out.string();
  auto db = load<float>(w.out / "db.npy");
  for (index_t t = 128; t < 192; ++t)
    for (index_t d = 0; d < 8; ++d) db.data[offset_bthd(0, t, 1, 2048, 2, 8) + d] *= 1.001f;  // 0.1% in one block
  save(w.out, "db.npy", io::encode_npy(db));
  Run r = gdn2_run(check + " --json");
  auto j = nlohmann::json::parse(r.out);
  for (const auto& t : j.at("tensors"))
    if (t.at("name") == "db") {
      log_measure("db 0.1% off in one chunk of one head: global ratio", t.at("ratio").get<double>(), 1e-4);
      log_measure("db 0.1% off in one chunk of one head: local ratio", t.at("local_ratio").get<double>(), 1e-4);
      REQUIRE(t.at("ratio").get<double>() < 1e-4);
      REQUIRE(t.at("verdict") == "FAIL");
      REQUIRE(t.at("worst_block").at("chunk") == 2);
      REQUIRE(t.at("worst_block").at("head") == 1);
    }
  REQUIRE(r.status == 1);
  // Mixed dtypes: each row says which bound it used and why.
  const auto xo = load<float>(w.out / "o.npy");
  save(w.out, "o.npy", io::encode_npy(cast<double>(xo)));  // a float64 file of float32 values: held to 1e-10
  r = gdn2_run(check);
  std::printf("%s", r.out.c_str());
  REQUIRE(r.out.find("auto: f8") != std::string::npos);
  REQUIRE(r.out.find("auto: f4 output") != std::string::npos);
  REQUIRE(r.out.find("auto: f4 gradient") != std::string::npos);
}

TEST_CASE("check: when the float64 reference overflows, exit 3 (as forward), not a FAIL", "[cli][check]") {
  // The non-normal growth case of test 10 (b up to 2), long enough to leave float64's range.
  const index_t T = 16384;
  const Layer<double> x = growth_layer(T);
  Workdir w("refoverflow");
  save_layer(w.in, x);
  fs::create_directories(w.out);
  save(w.out, "o.npy", io::encode_npy(Tensor<float>({1, T, 1, 1})));
  save(w.out, "ht.npy", io::encode_npy(Tensor<float>({1, 1, 2, 1})));
  const Run r = gdn2_run("check --negative-eigen --in " + w.in.string() + " --candidate " + w.out.string());
  std::printf("  [measured] reference overflow: exit=%d: %s", r.status, r.err.c_str());
  REQUIRE(r.status == 3);
  REQUIRE(r.err.find("float64 reference") != std::string::npos);
  // forward in float64 on the same inputs: exit 3, and no advice to rerun in the precision it already used.
  const Run f = gdn2_run("forward --negative-eigen --in " + w.in.string() + " --out " + (w.out.parent_path() / "f64").string());
  std::printf("  [measured] float64 forward overflow: exit=%d: %s", f.status, f.err.c_str());
  REQUIRE(f.status == 3);
  REQUIRE_THAT(f.err, Catch::Contains("float64") && Catch::Contains("widest precision"));
  REQUIRE(f.err.find("--precision f64") == std::string::npos);
  const Run j = gdn2_run("check --json --negative-eigen --in " + w.in.string() + " --candidate " + w.out.string());
  REQUIRE(j.status == 3);
  REQUIRE(nlohmann::json::parse(j.out).at("exit_status") == 3);
}

// ---------------------------------------------------------------------------------------------------------------
// .npy reading: the header before the body, only regular files, no 0-d arrays or empty cu_seqlens, fast reads.

TEST_CASE("npy: FIFOs, devices and directories are refused by name without blocking", "[cli][io]") {
  Workdir w("special");
  save_layer(w.in, small_layer());
  const std::string fwd = "forward --in " + w.in.string() + " --out " + w.out.string();
  fs::remove(w.in / "q.npy");
  REQUIRE(::mkfifo((w.in / "q.npy").c_str(), 0600) == 0);
  Run r = gdn2_run(fwd, "timeout 20");  // before the fix: blocks forever opening the FIFO (timeout's 124)
  std::printf("  [measured] q.npy a FIFO: exit=%d in %.2f s: %s", r.status, r.seconds, r.err.c_str());
  REQUIRE(r.status == 2);
  REQUIRE_THAT(r.err, Catch::StartsWith("gdn2: error: q.npy") && Catch::Contains("FIFO"));
  fs::remove(w.in / "q.npy");
  fs::create_directories(w.in / "q.npy");
  r = gdn2_run(fwd, "timeout 20");
  std::printf("  [measured] q.npy a directory: exit=%d: %s", r.status, r.err.c_str());
  REQUIRE(r.status == 2);
  REQUIRE_THAT(r.err, Catch::StartsWith("gdn2: error: q.npy") && Catch::Contains("is a directory"));
  fs::remove(w.in / "q.npy");
  fs::create_symlink("/dev/zero", w.in / "q.npy");
  r = gdn2_run(fwd, "timeout 20");
  std::printf("  [measured] q.npy -> /dev/zero: exit=%d: %s", r.status, r.err.c_str());
  REQUIRE(r.status == 2);
  REQUIRE_THAT(r.err, Catch::StartsWith("gdn2: error: q.npy") && Catch::Contains("device"));
  REQUIRE_FALSE(fs::exists(w.out));
}

TEST_CASE("npy: 0-d arrays and an empty cu_seqlens are refused", "[cli][io]") {
  Workdir w("zerod");
  save_layer(w.in, small_layer(3, 1, 40));
  const std::string fwd = "forward --in " + w.in.string() + " --out " + w.out.string();
  save(w.in, "g.npy", io::encode_npy(Tensor<double>(std::vector<index_t>{})));  // before: ran as if g were absent
  Run r = gdn2_run(fwd);
  std::printf("  [measured] 0-d g.npy: exit=%d: %s", r.status, r.err.c_str());
  REQUIRE(r.status == 2);
  REQUIRE_THAT(r.err, Catch::StartsWith("gdn2: error: g.npy") && Catch::Contains("0-d"));
  save_layer(w.in, small_layer(3, 1, 40));
  std::string cu = io::encode_npy(Tensor<double>({0}));
  cu.replace(cu.find("<f8"), 3, "<i8");
  save(w.in, "cu_seqlens.npy", cu);
  r = gdn2_run(fwd);
  std::printf("  [measured] empty cu_seqlens.npy: exit=%d: %s", r.status, r.err.c_str());
  REQUIRE(r.status == 2);
  REQUIRE_THAT(r.err, Catch::StartsWith("gdn2: error: cu_seqlens.npy"));
  REQUIRE_FALSE(fs::exists(w.out));
}

TEST_CASE("npy: the header is validated before the body is read; an allocation too large names the tensor", "[cli][io]") {
  Workdir w("bighead");
  save_layer(w.in, small_layer());
  const std::string fwd = "forward --in " + w.in.string() + " --out " + w.out.string();
  // A 2 GiB file (sparse: no disk used) with a bad magic: refused after reading its first bytes.
  {
    std::ofstream f(w.in / "q.npy", std::ios::binary);
    f << "not numpy";
  }
  fs::resize_file(w.in / "q.npy", index_t(2) << 30);
  Run r = gdn2_run(fwd);
  std::printf("  [measured] 2 GiB q.npy with a bad magic: exit=%d in %.2f s: %s", r.status, r.seconds, r.err.c_str());
  REQUIRE(r.status == 2);
  REQUIRE_THAT(r.err, Catch::Contains("q.npy") && Catch::Contains("magic"));
  REQUIRE(r.seconds < 1.0);
  // A valid header for 4 TiB of float64 (sparse file): refused by size before allocating, naming the tensor.
  const index_t big = index_t(1) << 39;
  std::string dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (" + std::to_string(big) + ",), }";
  dict.append((64 - (10 + dict.size() + 1) % 64) % 64, ' ');
  dict += '\n';
  const std::string header = std::string("\x93NUMPY\x01\x00", 8) + char(dict.size() & 0xff) + char(dict.size() >> 8) + dict;
  {
    std::ofstream f(w.in / "v.npy", std::ios::binary);
    f << header;
  }
  fs::resize_file(w.in / "v.npy", header.size() + big * 8);
  save(w.in, "q.npy", io::encode_npy(small_layer().q));
  r = gdn2_run(fwd);
  std::printf("  [measured] v.npy declaring 4 TiB: exit=%d in %.2f s: %s", r.status, r.seconds, r.err.c_str());
  REQUIRE(r.status == 2);
  REQUIRE_THAT(r.err, Catch::StartsWith("gdn2: error: v.npy") && Catch::Contains("GiB"));
  REQUIRE(r.seconds < 5.0);
}

TEST_CASE("npy: --verbose says where the time goes", "[cli][io]") {
  Workdir w("verbose");
  save_layer(w.in, small_layer());
  const Run r = gdn2_run("forward --verbose --in " + w.in.string() + " --out " + w.out.string());
  std::printf("%s", r.err.c_str());
  REQUIRE(r.status == 0);
  for (const char* f : {"read q.npy", "read w.npy", "MB/s", "forward (chunk form)", "writing"})
    REQUIRE_THAT(r.err, Catch::Contains(f));
}

// ---------------------------------------------------------------------------------------------------------------
// Outputs all or none; write failures have their own exit status and a true message.

TEST_CASE("outputs: a failed write changes nothing, creates no --out, exits 4 with the system's reason", "[cli][io]") {
  Workdir w("writefail");
  const auto x = small_layer();
  save_layer(w.in, x);
  // The file size limit makes the write fail with EFBIG (SIGXFSZ ignored): before, exit 2, an empty --out left.
  Run r = gdn2_run("forward --in " + w.in.string() + " --out " + w.out.string(), "trap \"\" XFSZ; ulimit -f 1;");
  std::printf("  [measured] write over the file size limit: exit=%d: %s", r.status, r.err.c_str());
  REQUIRE(r.status == 4);
  REQUIRE_THAT(r.err, Catch::Contains("File too large"));
  REQUIRE(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  REQUIRE_FALSE(fs::exists(w.out));
  for (const auto& e : fs::directory_iterator(w.out.parent_path())) REQUIRE(e.path().filename() == "in");
  // --out under parents that do not exist yet: the failed run removes the directories it created (before: new1/new2
  // stayed), and only those.
  r = gdn2_run("forward --in " + w.in.string() + " --out " + (w.out.parent_path() / "new1/new2/out").string(),
               "trap \"\" XFSZ; ulimit -f 1;");
  std::printf("  [measured] failed write under new parents: exit=%d, new1 left: %d\n", r.status,
              int(fs::exists(w.out.parent_path() / "new1")));
  REQUIRE(r.status == 4);
  REQUIRE_FALSE(fs::exists(w.out.parent_path() / "new1"));
  REQUIRE(fs::exists(w.in / "q.npy"));
  // An --out holding a directory where ht.npy goes: refused before anything (before: o.npy replaced, then failed).
  REQUIRE(gdn2_cli("forward --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  const std::string old_o = [&] {
    std::ifstream f(w.out / "o.npy", std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }();
  fs::remove(w.out / "ht.npy");
  fs::create_directories(w.out / "ht.npy" / "x");
  save_layer(w.in, small_layer(8));
  r = gdn2_run("forward --in " + w.in.string() + " --out " + w.out.string());
  std::printf("  [measured] ht.npy a directory in --out: exit=%d: %s", r.status, r.err.c_str());
  REQUIRE(r.status == 2);
  REQUIRE_THAT(r.err, Catch::Contains("--out"));
  std::ifstream f(w.out / "o.npy", std::ios::binary);
  std::stringstream now;
  now << f.rdbuf();
  REQUIRE(now.str() == old_o);
  // An --out that is a file.
  r = gdn2_run("forward --in " + w.in.string() + " --out " + (w.in / "q.npy").string());
  REQUIRE(r.status == 2);
  REQUIRE_THAT(r.err, Catch::Contains("not a directory"));
}

// ---------------------------------------------------------------------------------------------------------------
// train / eval: options and --out checked before training; checkpoints refused when their config or weights are bad.

TEST_CASE("train checks --out and every option before training; eval refuses bad checkpoints naming the file", "[cli][model]") {
  Workdir w("trainchk");
  const std::string tiny = "train --steps 20 --batch 4 --d-model 8 --head-k 4 --head-v 4 --mlp 0 --eval-every 1 --eval-examples 4 "
                           "--final-examples 8 ";
  save(w.in, "file", "x");
  Run r = gdn2_run(tiny + "--out " + (w.in / "file").string());
  std::printf("  [measured] train --out FILE: exit=%d in %.2f s, %zu bytes of training output: %s", r.status, r.seconds,
              r.out.size(), r.err.c_str());
  REQUIRE(r.status == 2);
  REQUIRE(r.out.empty());  // no evaluation line: refused before the first step
  REQUIRE_THAT(r.err, Catch::Contains("--out"));
  for (const std::string bad : {"--lr inf", "--lr nan", "--weight-decay nan", "--final-examples -5", "--lr -1"}) {
    r = gdn2_run(tiny + bad + " --out " + (w.out / "never").string());
    CAPTURE(bad, r.err);
    REQUIRE(r.status == 2);
    REQUIRE(r.out.empty());
    REQUIRE(r.err.size() < 200);
    REQUIRE_FALSE(fs::exists(w.out / "never"));
  }
  const std::string ck = (w.out / "ck").string();
  r = gdn2_run(tiny + "--out " + ck);
  REQUIRE(r.status == 0);
  auto edit = [&](const std::string& from, const std::string& to) {
    std::ifstream in(fs::path(ck) / "config.json");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    const auto at = s.find(from);
    REQUIRE(at != std::string::npos);
    s.replace(at, from.size(), to);
    std::ofstream(fs::path(ck) / "config.json") << s;
  };
  const std::string eval = "eval --examples 4 --checkpoint " + ck;
  REQUIRE(gdn2_run(eval).status == 0);
  for (const auto& [bad, why] : std::vector<std::pair<std::string, std::string>>{
           {"\"d_model\": 64.9", "integer"}, {"\"d_model\": 4294967304", "out of range"}, {"\"d_model\": \"8\"", "integer"},
           {"\"d_model\": 100000", "d-model"}}) {
    edit("\"d_model\": 8", bad);
    r = gdn2_run(eval);
    std::printf("  [measured] config.json %s: exit=%d: %s", bad.c_str(), r.status, r.err.c_str());
    CHECK(r.status == 2);
    CHECK_THAT(r.err, Catch::Contains("config.json") && Catch::Contains(why));
    edit(bad, "\"d_model\": 8");
  }
  // The shape of config.json itself: each refusal is one line naming the file and the key, no library exception text.
  const std::string original = [&] {
    std::ifstream in(fs::path(ck) / "config.json");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }();
  const nlohmann::json cfg = nlohmann::json::parse(original);
  auto with = [&](const std::function<void(nlohmann::json&)>& change) {
    nlohmann::json j = cfg;
    change(j);
    return j.dump(2);
  };
  std::string duplicated = original;
  duplicated.replace(duplicated.find("\"d_model\": 8"), 12, "\"d_model\": 8, \"d_model\": 16");
  for (const auto& [text, expect] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {with([](nlohmann::json& j) { j.erase("model"); }), {"'model'", "missing"}},
           {"[]", {"top level", "object"}},
           {"{", {"not valid JSON", "byte"}},
           {with([](nlohmann::json& j) { j["model"] = 5; }), {"'model'", "object"}},
           {with([](nlohmann::json& j) { j["model"]["variant"] = "bogus"; }), {"model.variant", "bogus"}},
           {with([](nlohmann::json& j) { j["task"]["task"] = "bogus"; }), {"task.task", "bogus"}},
           {with([](nlohmann::json& j) { j["parameters"].push_back("W_bogus"); }), {"'parameters'", "W_bogus"}},
           {with([](nlohmann::json& j) { j["parameters"].erase(0); }), {"'parameters'", "does not name"}},
           {with([](nlohmann::json& j) { j["parameters"] = "E"; }), {"'parameters'", "list"}},
           {duplicated, {"'model.d_model'", "twice"}},
           {with([](nlohmann::json& j) { j["task"]["vocab"] = 128; }), {"task.vocab is 128", "model.vocab is 64"}}}) {
    std::ofstream(fs::path(ck) / "config.json") << text;
    r = gdn2_run(eval);
    std::printf("  [measured] config.json %s: exit=%d: %s", expect[0].c_str(), r.status, r.err.c_str());
    CAPTURE(text.substr(0, 200), r.err);
    CHECK(r.status == 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_THAT(r.err, Catch::Contains("config.json"));
    for (const std::string& e : expect) CHECK_THAT(r.err, Catch::Contains(e));
    CHECK(r.err.find("json.exception") == std::string::npos);
  }
  std::ofstream(fs::path(ck) / "config.json") << original;
  REQUIRE(gdn2_run(eval).status == 0);
  auto E = load<float>(fs::path(ck) / "E.npy");
  E.data[3] = NAN;
  save(ck, "E.npy", io::encode_npy(E));
  r = gdn2_run(eval);
  std::printf("  [measured] NaN weight: exit=%d: %s", r.status, r.err.c_str());
  REQUIRE(r.status == 2);
  REQUIRE_THAT(r.err, Catch::Contains("E.npy") && Catch::Contains("non-finite"));
}

// ---------------------------------------------------------------------------------------------------------------
// Options: one short line per numeric error; nan/inf refused at parse time; absurd sizes refused before allocating.

TEST_CASE("options: numeric errors are one short line, refused before any input is read", "[cli]") {
  // --in does not exist: a refusal naming the option proves it came first, at parse time.
  for (const std::string bad :
       {"forward --in /nonexistent --out /tmp/x --scale nan", "forward --in /nonexistent --out /tmp/x --scale inf",
        "forward --in /nonexistent --out /tmp/x --chunk-size -5", "forward --in /nonexistent --out /tmp/x --chunk-size 1e400",
        "forward --in /nonexistent --out /tmp/x --lower-bound inf", "forward --in /nonexistent --out /tmp/x --threads -1",
        "bench --T 100000000000", "trace --random 1000000000000 --out /tmp/x", "gradcheck --directions 0",
        "check --in /nonexistent --candidate /tmp/x --chunk-size 0"}) {
    const Run r = gdn2_run(bad);
    std::printf("  [measured] %s: exit=%d: %s", bad.c_str(), r.status, r.err.c_str());
    CAPTURE(bad, r.err);
    CHECK(r.status == 2);
    CHECK(r.err.size() < 200);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find("nonexistent") == std::string::npos);
  }
}

TEST_CASE("options: absurd task and model sizes are refused before allocating, with the bound named", "[cli][model]") {
  // Under a 2 GiB address-space limit, so that an allocation attempted before the refusal shows as "out of memory"
  // (before: --length 2000000000 was accepted and allocated until it failed) instead of exhausting the machine.
  // Seeds: -1 is refused, not wrapped to 2^64 - 1 (before: task --seed -1 printed seed 18446744073709551615).
  Workdir w("sizes");
  const std::string out = " --out " + w.out.string();
  for (const auto& [bad, bound] : std::vector<std::pair<std::string, std::string>>{
           {"task --length 2000000000", "1000000"},
           {"train --length 2000000000" + out, "1000000"},
           {"task --vocab 2000000000", "1000000"},
           {"task --task mk-niah --filler-vocab 2000000000", "1000000"},
           {"task --pairs 2000000000", "1000000"},
           {"train --d-model 1000000" + out, "4096"},
           {"task --count 100000 --length 1000000 --pairs 2", "67108864"},
           {"train --batch 100000 --length 100000" + out, "67108864"},
           {"task --seed -1", "18446744073709551615"},
           {"task --seed 18446744073709551616", "18446744073709551615"},
           {"train --seed -1" + out, "18446744073709551615"},
           {"gradcheck --seed -1", "4294967295"},
           {"demo --seed 4294967296", "4294967295"},
           {"eval --checkpoint " + w.out.string() + " --seed 9223372036854775808", "9223372036854775807"},
           {"eval --checkpoint " + w.out.string() + " --seed -2", "9223372036854775807"},
           {"trace --random 100000 --K 64 --V 64" + out, "33554432"},
           {"train --vocab 1000000 --d-model 4096" + out, "16777216"}}) {
    const Run r = gdn2_run(bad, "ulimit -v 2000000;");
    std::printf("  [measured] %s: exit=%d in %.2f s: %s", bad.c_str(), r.status, r.seconds, r.err.c_str());
    CAPTURE(bad, r.err);
    CHECK(r.status == 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_THAT(r.err, Catch::Contains(bound));
    CHECK(r.err.find("out of memory") == std::string::npos);
    CHECK(r.seconds < 5);
    CHECK_FALSE(fs::exists(w.out));
  }
}

TEST_CASE("train stops at SIGINT: exit 130, says so, and the last complete checkpoint stays", "[cli][model]") {
  Workdir w("sigint");
  const std::string ck = (w.out / "ck").string();
  const std::vector<std::string> tiny = {"train", "--batch", "4", "--d-model", "8", "--head-k", "4", "--head-v", "4", "--mlp", "0",
                                         "--eval-every", "1", "--eval-examples", "4", "--final-examples", "8", "--out", ck};
  std::string args;
  for (const auto& a : tiny) args += a + " ";
  REQUIRE(gdn2_run(args + "--steps 2").status == 0);
  auto files = [&] {
    std::map<std::string, std::string> m;
    for (const auto& e : fs::directory_iterator(w.out)) {
      if (!e.is_directory()) continue;
      for (const auto& f : fs::directory_iterator(e.path())) {
        std::ifstream in(f.path(), std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        m[e.path().filename().string() + "/" + f.path().filename().string()] = ss.str();
      }
    }
    return m;
  };
  const auto before = files();
  // A long run into the same --out, interrupted once its first step is logged; first with SIGINT inherited as ignored
  // (a background job of a shell script: before, it kept training), then with the default disposition (before: killed
  // by the signal, exit status none, nothing said).
  for (const bool inherit_ignored : {true, false}) {
    int out_pipe[2];
    REQUIRE(::pipe(out_pipe) == 0);
    const fs::path err = w.out.parent_path() / "err.txt";
    std::vector<std::string> argv_s = tiny;
    argv_s.insert(argv_s.end(), {"--steps", "1000000", "--seed", "7"});
    std::vector<char*> argv{const_cast<char*>(GDN2_BIN)};
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(out_pipe[1], 1);
      const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(e, 2);
      ::close(out_pipe[0]);
      ::signal(SIGINT, inherit_ignored ? SIG_IGN : SIG_DFL);
      ::execv(GDN2_BIN, argv.data());
      ::_exit(127);
    }
    ::close(out_pipe[1]);
    FILE* out = ::fdopen(out_pipe[0], "r");
    char line[4096];
    const bool logged = std::fgets(line, sizeof line, out) != nullptr;
    ::kill(pid, SIGINT);
    const auto t0 = std::chrono::steady_clock::now();
    int status = 0;
    double waited = 0;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
      waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (waited > 10) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::fclose(out);
    std::ifstream ein(err);
    std::stringstream es;
    es << ein.rdbuf();
    const std::string message = es.str();
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    std::printf("  [measured] SIGINT%s: exit=%d after %.2f s: %s", inherit_ignored ? " (inherited as ignored)" : "", code,
                waited, message.substr(message.find('\n') + 1).c_str());
    CAPTURE(inherit_ignored, message);
    REQUIRE(logged);
    CHECK(code == 130);
    CHECK(waited < 10);
    CHECK_THAT(message, Catch::Contains("interrupted by SIGINT") && Catch::Contains("no checkpoint written"));
    CHECK(files() == before);  // the last complete checkpoint, untouched; no temporaries beside it
    int entries = 0;
    for (const auto& e : fs::directory_iterator(w.out)) entries += 1 + 0 * int(e.is_directory());
    CHECK(entries == 1);
  }
  REQUIRE(gdn2_run("eval --examples 4 --checkpoint " + ck).status == 0);
}

TEST_CASE("trace --example N generates that one example", "[cli][model]") {
  // The same example as before (example N of the held-out stream), whatever N: a large index costs no more.
  const std::string ck = std::string(GDN2_SOURCE_DIR) + "/notebooks_data/checkpoints/mqar-tiny-gdn2";
  Workdir w("example");
  const Run r = gdn2_run("trace --checkpoint " + ck + " --example 2000000000 --out " + w.out.string(), "timeout 60");
  std::printf("  [measured] trace --example 2e9: exit=%d in %.2f s\n", r.status, r.seconds);
  REQUIRE(r.status == 0);
  REQUIRE(r.seconds < 10);
}

TEST_CASE("check: files it does not compare are never opened (--only, not-produced, a FIFO)", "[cli][check]") {
  Workdir w("notread");
  const auto x = small_layer(5, 1, 80);
  candidate(w, x);
  const std::string check = "check --in " + w.in.string() + " --candidate " + w.out.string();
  // A garbage db.npy left out by --only: before, exit 2 ("db.npy: ..."), the file was parsed although not compared.
  save(w.out, "db.npy", "not numpy at all");
  Run r = gdn2_run(check + " --only o,ht", "timeout 20");
  std::printf("  [measured] garbage db.npy, --only o,ht: exit=%d %s\n%s", r.status, r.err.c_str(), r.out.c_str());
  REQUIRE(r.status == 0);
  REQUIRE(r.err.empty());
  REQUIRE(r.out.find("not in --only") != std::string::npos);
  // Garbage dbeta.npy / dA_log.npy, which the reference cannot produce for gdn2 without --decay: reported as
  // not-produced (exit 1, as for a valid one), not a bad-input error (before: exit 2).
  r = gdn2_run(check + " --only o,ht,dq,dk,dv,dg,dw");
  REQUIRE(r.status == 0);
  for (const char* name : {"dbeta", "dA_log"}) {
    save(w.out, std::string(name) + ".npy", "\x93NUMPY garbage");
    r = gdn2_run(check + " --only o,ht,dq,dk,dv,dg,dw", "timeout 20");
    std::printf("  [measured] garbage %s.npy: exit=%d %s", name, r.status, r.err.empty() ? "\n" : r.err.c_str());
    CAPTURE(r.out, r.err);
    REQUIRE(r.status == 1);
    REQUIRE(r.out.find(std::string(name) + " ") != std::string::npos);
    REQUIRE(r.out.find("not-produced") != std::string::npos);
    fs::remove(w.out / (std::string(name) + ".npy"));
  }
  // A FIFO as o.npy while only ht and dq are compared: before, exit 2 (refused as a FIFO though never needed).
  fs::remove(w.out / "o.npy");
  REQUIRE(::mkfifo((w.out / "o.npy").c_str(), 0600) == 0);
  r = gdn2_run(check + " --only ht,dq", "timeout 20");
  std::printf("  [measured] o.npy a FIFO, --only ht,dq: exit=%d in %.2f s %s", r.status, r.seconds,
              r.err.empty() ? "\n" : r.err.c_str());
  CAPTURE(r.out, r.err);
  REQUIRE(r.status == 0);
  // A file that is compared is still read and refused when broken.
  r = gdn2_run(check + " --only o,ht", "timeout 20");
  std::printf("  [measured] o.npy a FIFO, --only o,ht: exit=%d %s", r.status, r.err.c_str());
  REQUIRE(r.status == 2);
  REQUIRE_THAT(r.err, Catch::Contains("o.npy") && Catch::Contains("FIFO"));
}

TEST_CASE("stdout: a report that cannot be written exits 4 naming stdout and the reason", "[cli][io]") {
  REQUIRE(fs::exists("/dev/full"));
  Workdir w("devfull");
  const auto x = small_layer(5, 1, 80);
  candidate(w, x);
  const std::string ck = std::string(GDN2_SOURCE_DIR) + "/notebooks_data/checkpoints/mqar-tiny-gdn2";
  for (const std::string& args : {"check --in " + w.in.string() + " --candidate " + w.out.string() + " --json",
                                 "check --in " + w.in.string() + " --candidate " + w.out.string(),
                                 std::string("task --json --count 2"), "eval --checkpoint " + ck + " --examples 4 --json",
                                 std::string("bench --json --T 16 --heads 1 --dims 4 --repeats 1 --threads 1")}) {
    // Before: exit 0 with every byte of the report lost.
    const Run r = gdn2_run(args + " >/dev/full");
    std::printf("  [measured] gdn2 %s >/dev/full: exit=%d: %s", args.substr(0, 5).c_str(), r.status, r.err.c_str());
    CAPTURE(args, r.err);
    REQUIRE(r.status == 4);
    REQUIRE_THAT(r.err, Catch::EndsWith("gdn2: error: cannot write to stdout: No space left on device\n"));
    REQUIRE(gdn2_run(args + " >/dev/null").status == 0);  // the same command with a writable stdout succeeds
  }
}

TEST_CASE("outputs: --out holds exactly this run's files, nothing of the old directory", "[cli][io]") {
  Workdir w("replace");
  auto x = small_layer(5, 1, 40);
  save_layer(w.in, x);  // with h0
  Tensor<double> do_(x.v.shape);
  Rng rng(3);
  for (auto& e : do_.data) e = rng.normal();
  save(w.in, "do.npy", io::encode_npy(do_));
  auto files = [&] {
    std::set<std::string> f;
    for (const auto& e : fs::directory_iterator(w.out)) f.insert(e.path().filename().string());
    return f;
  };
  const std::string bwd = "backward --in " + w.in.string() + " --out " + w.out.string();
  REQUIRE(gdn2_cli(bwd).status == 0);
  REQUIRE(files().count("dh0.npy") == 1);
  // Without h0 into the same --out: before, the old dh0.npy stayed beside the new gradients.
  fs::remove(w.in / "h0.npy");
  REQUIRE(gdn2_cli(bwd).status == 0);
  const std::set<std::string> gdn2_grads = {"db.npy", "dg.npy", "dk.npy", "dq.npy", "dv.npy", "dw.npy"};
  REQUIRE(files() == [&] {
    auto f = gdn2_grads;
    f.insert(".gdn2-outputs");
    return f;
  }());
  // gdn2 -> kda: no db/dw of the earlier variant beside dbeta.
  Tensor<double> beta({x.b.shape[0], x.b.shape[1], x.b.shape[2]});
  for (auto& e : beta.data) e = rng.uniform(0, 1);
  save(w.in, "beta.npy", io::encode_npy(beta));
  REQUIRE(gdn2_cli(bwd + " --variant kda").status == 0);
  const std::set<std::string> kda = {"dbeta.npy", "dg.npy", "dk.npy", "dq.npy", "dv.npy"};
  REQUIRE(files() == [&] {
    auto f = kda;
    f.insert(".gdn2-outputs");
    return f;
  }());
  // forward into a directory backward wrote: only o.npy and ht.npy afterwards (and the list of them).
  REQUIRE(gdn2_cli("forward --in " + w.in.string() + " --out " + w.out.string()).status == 0);
  REQUIRE(files() == std::set<std::string>{".gdn2-outputs", "ht.npy", "o.npy"});
}

// Before: --out was emptied whatever it held, so `--out` equal to `--in` deleted the inputs, and a working folder given
// as --out lost its files, with exit 0. gdn2 now replaces only what an earlier run wrote there (its .gdn2-outputs).
TEST_CASE("outputs: gdn2 deletes nothing it did not write (--out = --in, a folder of the user's files)", "[cli][io]") {
  Workdir w("foreign");
  save_layer(w.in, small_layer(6, 1, 20));
  auto files = [](const fs::path& d) {
    std::set<std::string> f;
    for (const auto& e : fs::directory_iterator(d)) f.insert(e.path().filename().string());
    return f;
  };
  const std::set<std::string> inputs = files(w.in);
  for (const std::string cmd : {"forward", "backward"}) {
    const Result same = gdn2_cli(cmd + " --in " + w.in.string() + " --out " + w.in.string() + "/.");
    std::printf("  [measured] %s --out = --in: exit=%d: %s", cmd.c_str(), same.status, same.err.c_str());
    CHECK(same.status == 2);
    CHECK_THAT(same.err, Catch::Contains("is also the input directory"));
    CHECK(files(w.in) == inputs);
  }
  // A folder of the user's files, and a gdn2 output directory with a file of the user's added.
  fs::create_directories(w.out);
  save(w.out, "my_model.py", "important");
  save(w.out, "results.csv", "data");
  const std::string fwd = "forward --in " + w.in.string() + " --out " + w.out.string();
  const Result mine = gdn2_cli(fwd);
  std::printf("  [measured] --out holding the user's files: exit=%d: %s", mine.status, mine.err.c_str());
  CHECK(mine.status == 2);
  CHECK_THAT(mine.err, Catch::Contains("holds files gdn2 did not write there (my_model.py, results.csv)"));
  CHECK(files(w.out) == std::set<std::string>{"my_model.py", "results.csv"});
  fs::remove_all(w.out);
  REQUIRE(gdn2_cli(fwd).status == 0);
  save(w.out, "notes.txt", "mine");
  const Result added = gdn2_cli(fwd);
  CHECK(added.status == 2);
  CHECK(files(w.out) == std::set<std::string>{".gdn2-outputs", "ht.npy", "notes.txt", "o.npy"});
  // An empty directory is taken.
  fs::remove_all(w.out);
  fs::create_directories(w.out);
  CHECK(gdn2_cli(fwd).status == 0);
  CHECK(files(w.out) == std::set<std::string>{".gdn2-outputs", "ht.npy", "o.npy"});
  // The replacement keeps the old directory's permissions (before: a private 0700 --out came back 0755).
  fs::permissions(w.out, fs::perms::owner_all);
  REQUIRE(gdn2_cli(fwd).status == 0);
  const auto perms = fs::status(w.out).permissions();
  std::printf("  [measured] a 0700 --out replaced: mode %03o\n", unsigned(perms) & 0777u);
  CHECK(perms == fs::perms::owner_all);
}

// ---------------------------------------------------------------------------------------------------------------
// Issue 22's residual defects: an --out on a read-only file system, config.json that is not a regular file or not
// JSON the writer wrote, and missing keys.

TEST_CASE("train refuses an --out it cannot write before training: exit 4 with the system's reason", "[cli][model]") {
  // /sys (sysfs) refuses mkdir for root too; before: 20 steps of training ran, then the save failed with exit 4.
  if (::mkdir("/sys/gdn2-probe", 0777) == 0) {
    ::rmdir("/sys/gdn2-probe");
    WARN("skipped: /sys is writable here");
    return;
  }
  const std::string tiny = "train --steps 20 --batch 4 --d-model 8 --head-k 4 --head-v 4 --mlp 0 --eval-every 1 --eval-examples 4 "
                           "--final-examples 8 ";
  for (const std::string out : {"/sys/gdn2-test-ck", "/sys/gdn2-test-new/ck"}) {
    const Run r = gdn2_run(tiny + "--out " + out);
    std::printf("  [measured] train --out %s: exit=%d in %.3f s, %zu bytes of training output: %s", out.c_str(), r.status,
                r.seconds, r.out.size(), r.err.c_str());
    CAPTURE(r.err);
    CHECK(r.status == 4);
    CHECK(r.out.empty());  // no evaluation line: refused before the first step
    CHECK(r.err.find("gdn2 train: mqar") == std::string::npos);  // nor the banner printed when training starts
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_THAT(r.err, Catch::Contains("cannot create /sys/") &&
                          (Catch::Contains("Operation not permitted") || Catch::Contains("Permission denied")));
  }
  // A writable --out: the probe leaves nothing beside the checkpoint.
  Workdir w("trainprobe");
  const Run ok = gdn2_run(tiny + "--out " + (w.out / "ck").string());
  REQUIRE(ok.status == 0);
  std::vector<std::string> entries;
  for (const auto& e : fs::directory_iterator(w.out)) entries.push_back(e.path().filename().string());
  CAPTURE(entries);
  CHECK(entries == std::vector<std::string>{"ck"});
}

// Before: a misnamed input (initial_state.npy for h0.npy) was skipped without a word, and the run used a zero state.
TEST_CASE("a .npy file in --in that gdn2 does not read is named in a note", "[cli][io]") {
  Workdir w("unread");
  const auto x = small_layer(8, 1, 20);
  save_layer(w.in, x);
  fs::rename(w.in / "h0.npy", w.in / "initial_state.npy");
  save(w.in, "notes.txt", "not a tensor");
  const Result r = gdn2_cli("forward --in " + w.in.string() + " --out " + w.out.string());
  std::printf("  [measured] exit=%d: %s", r.status, r.err.c_str());
  CHECK(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("gdn2: note: --in ") && Catch::Contains("not read: initial_state.npy (the inputs "
                                                                             "are named q, k, v, g, b, w, beta, h0"));
  CHECK(r.err.find("notes.txt") == std::string::npos);  // only .npy files could be meant as inputs
  fs::rename(w.in / "initial_state.npy", w.in / "h0.npy");
  const Result clean = gdn2_cli("forward --in " + w.in.string() + " --out " + w.out.string());
  CHECK(clean.status == 0);
  CHECK(clean.err.empty());
}

// Before: forward and backward read and computed everything (18 s on a large input), then failed to write (exit 4).
TEST_CASE("forward and backward refuse an --out they cannot write before reading the inputs: exit 4", "[cli][io]") {
  if (::mkdir("/sys/gdn2-probe", 0777) == 0) {
    ::rmdir("/sys/gdn2-probe");
    WARN("skipped: /sys is writable here");
    return;
  }
  Workdir w("rofs");
  const auto x = small_layer(7, 1, 20);
  save_layer(w.in, x);
  save(w.in, "do.npy", io::encode_npy(Tensor<double>(x.v.shape)));
  for (const std::string cmd : {"forward", "backward"}) {
    const Result r = gdn2_cli(cmd + " --verbose --in " + w.in.string() + " --out /sys/gdn2-test-out");
    std::printf("  [measured] %s --out /sys/gdn2-test-out: exit=%d: %s", cmd.c_str(), r.status, r.err.c_str());
    CHECK(r.status == 4);
    CHECK(r.err.find("gdn2: read ") == std::string::npos);  // --verbose: no input was read, nothing computed
    CHECK_THAT(r.err, Catch::Contains("cannot create /sys/"));
  }
}

TEST_CASE("eval: config.json that is a FIFO, a directory, empty or overflowing is refused in one line naming it", "[cli][model]") {
  Workdir w("cfgfile");
  const std::string ck = (w.out / "ck").string();
  fs::create_directories(w.out);
  fs::copy(std::string(GDN2_SOURCE_DIR) + "/notebooks_data/checkpoints/mqar-tiny-gdn2", ck);
  const fs::path config = fs::path(ck) / "config.json";
  const std::string original = [&] {
    std::ifstream in(config);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }();
  const std::string eval = "eval --examples 4 --checkpoint " + ck;
  auto refused = [&](const std::string& what, const std::vector<std::string>& expect) {
    const Run r = gdn2_run(eval, "timeout 20");  // before: a FIFO blocked forever (timeout's 124)
    std::printf("  [measured] config.json %s: exit=%d in %.2f s: %s", what.c_str(), r.status, r.seconds, r.err.c_str());
    CAPTURE(what, r.err);
    CHECK(r.status == 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_THAT(r.err, Catch::Contains("config.json"));
    for (const std::string& e : expect) CHECK_THAT(r.err, Catch::Contains(e));
    CHECK(r.err.find("json.exception") == std::string::npos);
    CHECK(r.err.find("basic_filebuf") == std::string::npos);
  };
  fs::remove(config);
  REQUIRE(::mkfifo(config.c_str(), 0600) == 0);
  refused("a FIFO", {"FIFO"});
  fs::remove(config);
  fs::create_directories(config);
  refused("a directory", {"is a directory"});
  fs::remove(config);
  std::ofstream(config) << "";
  refused("empty", {"empty"});
  std::string overflow = original;
  overflow.replace(overflow.find("\"d_model\": 64"), 13, "\"d_model\": 1e999");
  std::ofstream(config) << overflow;
  refused("\"d_model\": 1e999", {"'model.d_model'", "too large"});
  std::ofstream(config) << original;
  REQUIRE(gdn2_run(eval).status == 0);
}

TEST_CASE("eval: every key the checkpoint writer writes is required, and a missing one is named", "[cli][model]") {
  // Before: a missing task.length or task.pairs evaluated another task with exit 0; a missing model.head_k gave a
  // shape error, a missing model.vocab "model.vocab is 64".
  Workdir w("cfgkeys");
  const std::string ck = (w.out / "ck").string();
  fs::create_directories(w.out);
  fs::copy(std::string(GDN2_SOURCE_DIR) + "/notebooks_data/checkpoints/mqar-tiny-gdn2", ck);
  const fs::path config = fs::path(ck) / "config.json";
  const nlohmann::json original = [&] {
    std::ifstream in(config);
    return nlohmann::json::parse(in);
  }();
  const std::string eval = "eval --examples 4 --checkpoint " + ck;
  std::vector<std::pair<std::string, std::string>> keys;  // (section, key); section "" at the top level
  for (const auto& [key, value] : original.items()) {
    keys.push_back({"", key});
    if (key == "model" || key == "task" || key == "train")
      for (const auto& [inner, unused] : value.items()) keys.push_back({key, inner});
  }
  REQUIRE(keys.size() == 6 + 9 + 8 + 11);  // format, metrics, model, parameters, task, train and their fields
  for (const auto& [section, key] : keys) {
    nlohmann::json j = original;
    if (section.empty()) j.erase(key);
    else j[section].erase(key);
    std::ofstream(config) << j.dump(2);
    const Run r = gdn2_run(eval);
    const std::string name = section.empty() ? key : section + "." + key;
    std::printf("  [measured] config.json without %s: exit=%d: %s", name.c_str(), r.status, r.err.c_str());
    CAPTURE(name, r.err);
    CHECK(r.status == 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK_THAT(r.err, Catch::Contains("config.json") && Catch::Contains("'" + name + "' is missing"));
  }
  std::ofstream(config) << original.dump(2);
  REQUIRE(gdn2_run(eval).status == 0);
}

// Before: --lower-bound without --decay bounded was accepted and ignored, and so were other options that only act
// together with another one (--gate-logits with --variant linear, --negative-eigen with a tied variant, gradcheck's
// input options without --in, its --form, --scale and --threads): the run looked as if it had used them.
TEST_CASE("options: a layer option that has no effect without another is refused naming both (exit 2)", "[cli]") {
  Workdir w("noeffect");
  const auto x = small_layer(11, 1, 20);
  save_layer(w.in, x);
  const std::string io = " --in " + w.in.string() + " --out " + w.out.string();
  const std::string chk = " --in " + w.in.string() + " --candidate " + w.out.string();
  struct Case {
    std::string args, option, needs;  // the command line, the option refused, the option it needs
  };
  for (const Case& c : std::vector<Case>{
           {"forward --lower-bound -3" + io, "--lower-bound", "--decay bounded"},
           {"forward --decay softplus --lower-bound -3" + io, "--lower-bound", "--decay bounded"},
           {"backward --lower-bound -3" + io, "--lower-bound", "--decay bounded"},
           {"check --lower-bound -3" + chk, "--lower-bound", "--decay bounded"},
           {"gradcheck --lower-bound -3 --in " + w.in.string(), "--lower-bound", "--decay bounded"},
           {"forward --variant linear --gate-logits" + io, "--gate-logits", "--variant linear"},
           {"forward --variant kda --negative-eigen" + io, "--negative-eigen", "--variant gdn2"},
           {"check --variant linear --negative-eigen" + chk, "--negative-eigen", "--variant gdn2"},
           {"gradcheck --variant kda", "--variant", "--in"},
           {"gradcheck --l2norm-qk", "--l2norm-qk", "--in"},
           {"gradcheck --gate-logits", "--gate-logits", "--in"},
           {"gradcheck --negative-eigen", "--negative-eigen", "--in"},
           {"gradcheck --decay softplus", "--decay", "--in"}}) {
    expect_option_refused(c.args, c.option, c.needs, w.out);
  }
  // gradcheck runs both forms: it offers no --form.
  const Run form = gdn2_run("gradcheck --form recurrent");
  std::printf("  [measured] gradcheck --form recurrent: exit=%d: %s", form.status, form.err.c_str());
  CHECK(form.status == 2);
  CHECK_THAT(form.err, Catch::Contains("--form"));
  // check --json answers the refusal as JSON too.
  const Run json = gdn2_run("check --json --lower-bound -3" + chk);
  CAPTURE(json.out);
  CHECK(json.status == 2);
  CHECK(nlohmann::json::parse(json.out).at("error").get<std::string>().find("--lower-bound") != std::string::npos);
  // Where they act, the same options run: --lower-bound with --decay bounded (it changes o), --scale and --threads in
  // gradcheck without --in. --chunk-size with --form recurrent is accepted, as its --help says (one command line for
  // both forms; check's local blocks are C tokens in either).
  Tensor<double> dt_bias({2 * 8});
  save(w.in, "dt_bias.npy", io::encode_npy(dt_bias));
  auto g_logits = x.g;
  for (auto& e : g_logits.data) e = -e;
  save(w.in, "g.npy", io::encode_npy(g_logits));
  const fs::path o3 = w.out.parent_path() / "lb3", o5 = w.out.parent_path() / "lb5";
  REQUIRE(gdn2_run("forward --decay bounded --lower-bound -3 --in " + w.in.string() + " --out " + o3.string()).status == 0);
  REQUIRE(gdn2_run("forward --decay bounded --in " + w.in.string() + " --out " + o5.string()).status == 0);
  CHECK_FALSE(bitwise_equal(load<double>(o3 / "o.npy"), load<double>(o5 / "o.npy")));
  save_layer(w.in, x);
  fs::remove(w.in / "dt_bias.npy");
  candidate(w, x);
  CHECK(gdn2_run("check --form recurrent --chunk-size 16" + chk).status == 0);
  CHECK(gdn2_run("forward --form recurrent --chunk-size 16 --in " + w.in.string() + " --out " + o3.string()).status == 0);
  CHECK_THAT(gdn2_stdout("forward --help"), Catch::Contains("--form recurrent computes without it"));
  const std::string plain = gdn2_stdout("gradcheck --directions 1");
  const std::string scaled = gdn2_stdout("gradcheck --directions 1 --scale 0.5 --threads 1");
  std::printf("  [measured] gradcheck --scale 0.5 changes the report: %s\n", plain != scaled ? "yes" : "no");
  CHECK(plain != scaled);
  CHECK(scaled.find("PASSED") != std::string::npos);
}

// The same for the task, train and trace options that belong to one task or one kind of trace.
TEST_CASE("options: task and trace options without the option they need are refused naming both (train too)", "[cli][model]") {
  Workdir w("noeffect_model");
  const std::string out = " --out " + w.out.string(), ck = " --checkpoint " + (w.out / "no-checkpoint").string();
  const std::string tiny = " --steps 1 --batch 1 --d-model 8 --head-k 4 --head-v 4 --mlp 0 --final-examples 1";  // if run
  struct Case {
    std::string args, option, needs;  // the command line, the option refused, the option it needs
  };
  for (const Case& c : std::vector<Case>{
           {"task --task overwrite --power-a 0.5", "--power-a", "--task mqar"},
           {"train --task mk-niah --power-a 0.5" + tiny + out, "--power-a", "--task mqar"},
           {"task --rebinds 2", "--rebinds", "--task overwrite"},
           {"task --queries 2", "--queries", "--task mk-niah"},
           {"task --task overwrite --filler-vocab 5", "--filler-vocab", "--task mk-niah"},
           {"task --task s-niah --pairs 3", "--pairs", "--task s-niah"},
           {"train --eval-every 0 --eval-examples 10" + tiny + out, "--eval-examples", "--eval-every"},
           {"trace --scenario soft-update" + ck + out, "--checkpoint", "--scenario"},
           {"trace --random 10 --scenario soft-update" + out, "--random", "--scenario"},
           {"trace --variant kda" + ck + out, "--variant", "--scenario"},
           {"trace --K 4" + ck + out, "--K", "--scenario"},
           {"trace --scenario soft-update --example 2" + out, "--example", "--checkpoint"},
           {"trace --random 10 --block 1" + out, "--block", "--checkpoint"},
           {"trace --random 10 --head 1" + out, "--head", "--checkpoint"}}) {
    expect_option_refused(c.args, c.option, c.needs, w.out);
  }
  // With the option they need, they run.
  for (const std::string ok : {"task --task overwrite --rebinds 1 --count 1", "task --task mk-niah --filler-vocab 5 --queries 1 --count 1",
                               "task --power-a 0.5 --count 1"}) {
    int status = -1;
    gdn2_stdout(ok, &status);
    CAPTURE(ok);
    CHECK(status == 0);
  }
  CHECK(gdn2_run("trace --scenario soft-update --variant kda --K 4 --V 4" + out).status == 0);
}

// Before: every command read and validated every input name present in --in (q ... dt_bias, do, dht) whatever it
// used, so a corrupt do.npy made gdn2 forward fail, and a broken beta.npy a gdn2-variant run.
TEST_CASE("inputs: each command reads exactly the files it uses; the others are named in the note", "[cli][io]") {
  Workdir w("reads");
  const auto x = small_layer(12, 1, 20);
  save_layer(w.in, x);  // q, k, v, g, b, w, h0
  const std::string garbage = "not numpy at all";
  for (const char* f : {"do.npy", "dht.npy", "beta.npy", "A_log.npy", "dt_bias.npy"}) save(w.in, f, garbage);
  const std::string in = " --in " + w.in.string();
  const fs::path out = w.out, grads = w.out.parent_path() / "grads";
  Run r = gdn2_run("forward" + in + " --out " + out.string());
  std::printf("  [measured] forward, corrupt do/dht/beta/A_log/dt_bias: exit=%d: %s", r.status, r.err.c_str());
  CHECK(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("not read: A_log.npy, beta.npy, dht.npy, do.npy, dt_bias.npy (") &&
                        Catch::Contains("with these options gdn2 forward reads q, k, v, g, b, w, h0, cu_seqlens)"));
  if (r.status == 0) CHECK(bitwise_equal(load<double>(out / "o.npy"), run(Form::chunk, x).o));
  // backward uses do.npy and dht.npy: a corrupt one is refused by name.
  r = gdn2_run("backward" + in + " --out " + grads.string());
  std::printf("  [measured] backward, corrupt do.npy: exit=%d: %s", r.status, r.err.c_str());
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("gdn2: error: dht.npy") || Catch::Contains("gdn2: error: do.npy"));
  Tensor<double> do_(x.v.shape);
  Rng rng(12);
  for (auto& e : do_.data) e = rng.normal();
  save(w.in, "do.npy", io::encode_npy(do_));
  fs::remove(w.in / "dht.npy");
  for (const std::string& cmd : {"backward" + in + " --out " + grads.string(), "gradcheck --directions 1" + in}) {
    r = gdn2_run(cmd);
    std::printf("  [measured] %s: exit=%d: %s", cmd.substr(0, cmd.find(' ')).c_str(), r.status, r.err.c_str());
    CHECK(r.status == 0);
    CHECK_THAT(r.err, Catch::Contains("not read: A_log.npy, beta.npy, dt_bias.npy (") &&
                          Catch::Contains("reads q, k, v, g, b, w, h0, cu_seqlens, do, dht)"));
  }
  fs::remove_all(out);
  candidate(w, x);
  r = gdn2_run("check" + in + " --candidate " + out.string());
  std::printf("  [measured] check: exit=%d: %s", r.status, r.err.c_str());
  CHECK(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("not read: A_log.npy, beta.npy, dt_bias.npy ("));
  // A variant reads its own gates: kda and deltanet neither b.npy nor w.npy, deltanet no g.npy; a valid beta.npy.
  Tensor<double> beta({1, 20, 2});
  for (auto& e : beta.data) e = rng.uniform(0, 1);
  save(w.in, "beta.npy", io::encode_npy(beta));
  save(w.in, "b.npy", garbage);
  save(w.in, "w.npy", garbage);
  const fs::path o2 = w.out.parent_path() / "variant";
  r = gdn2_run("forward --variant kda" + in + " --out " + o2.string());
  std::printf("  [measured] forward --variant kda, corrupt b, w: exit=%d: %s", r.status, r.err.c_str());
  CHECK(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("not read: A_log.npy, b.npy, do.npy, dt_bias.npy, w.npy ("));
  save(w.in, "g.npy", garbage);
  r = gdn2_run("forward --variant deltanet" + in + " --out " + o2.string());
  std::printf("  [measured] forward --variant deltanet, corrupt g, b, w: exit=%d: %s", r.status, r.err.c_str());
  CHECK(r.status == 0);
  CHECK_THAT(r.err, Catch::Contains("not read: A_log.npy, b.npy, do.npy, dt_bias.npy, g.npy, w.npy ("));
  // --decay softplus reads A_log.npy and dt_bias.npy: corrupt, they are refused by name.
  save_layer(w.in, x);
  r = gdn2_run("forward --decay softplus" + in + " --out " + o2.string());
  std::printf("  [measured] forward --decay softplus, corrupt A_log, dt_bias: exit=%d: %s", r.status, r.err.c_str());
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("gdn2: error: A_log.npy") || Catch::Contains("gdn2: error: dt_bias.npy"));
}

// Before: "q.npy: not a valid .npy file: dtype '<f2' is not supported (float32, float64, int32, int64)": a valid file,
// and nothing said how to make one gdn2 reads.
TEST_CASE("npy: a float16 file is refused saying which dtypes are read and how to convert it", "[cli][io]") {
  Workdir w("float16");
  const auto x = small_layer(13, 1, 20);
  save_layer(w.in, x);
  // A float16 .npy of shape [1,20,H,D] (D even): a float32 file of half the last axis, relabelled (the same bytes).
  auto float16_npy = [](index_t H, index_t D) {
    std::string bytes = io::encode_npy(Tensor<float>({1, 20, H, D / 2}));
    bytes.replace(bytes.find("'<f4'"), 5, "'<f2'");
    const std::string shape = "(1, 20, " + std::to_string(H) + ", ";
    bytes.replace(bytes.find(shape + std::to_string(D / 2) + ")"), shape.size() + 2, shape + std::to_string(D) + ")");
    return bytes;
  };
  save(w.in, "q.npy", float16_npy(2, 8));
  expect_refusal(w, "q.npy", "dtype must be float32 or float64, got float16 ('<f2'); convert it with x.astype(np.float32)");
  // A candidate of gdn2 check in float16: "check: a candidate of a dtype gdn2 does not read fails its row ...".
}

// Before: a float16 o.npy in --candidate ended the whole check with exit 2 ("gdn2: error: o.npy: dtype must be float32
// or float64, got float16 ('<f2'); ..."), and a complex one likewise, while an int32 o.npy was a FAIL row of the table
// ("FAIL (dtype i4, expected float32 or float64)") beside the verdicts of the other tensors. (A big-endian float32 o.npy
// is read by value: "check: a big-endian candidate ...".)
TEST_CASE("check: a candidate of a dtype gdn2 does not read fails its row, naming the dtype and how to convert, as "
          "an int32 one does", "[cli][check]") {
  Workdir w("cand_dtype");
  const auto x = small_layer(13, 1, 20);
  candidate(w, x);
  const std::string check = "check --in " + w.in.string() + " --candidate " + w.out.string();
  const Tensor<float> o = load<float>(w.out / "o.npy");  // [1,20,4,6]
  // o.npy's bytes under another dtype (the values do not matter: the file is not compared).
  auto relabelled = [](std::string bytes, const std::string& from, const std::string& to) {
    return bytes.replace(bytes.find("'" + from + "'"), from.size() + 2, "'" + to + "'");
  };
  Tensor<float> o_half({1, 20, 4, 3});  // float16 [1,20,4,6]: the bytes of a float32 [1,20,4,3]
  std::string f16 = relabelled(io::encode_npy(o_half), "<f4", "<f2");
  f16.replace(f16.find("(1, 20, 4, 3)"), 13, "(1, 20, 4, 6)");
  Tensor<std::int32_t> o_int(o.shape);
  const std::string convert = "; convert it with x.astype(np.float32)";
  const std::vector<std::tuple<std::string, std::string, std::string, std::string>> cases = {
      {"float16", f16, "f2", "dtype must be float32 or float64, got float16 ('<f2')" + convert},
      {"int32", io::encode_npy(o_int), "i4", "dtype must be float32 or float64, got int32 ('<i4')" + convert},
      {"complex64", relabelled(io::encode_npy(Tensor<double>(o.shape)), "<f8", "<c8"), "c8",
       "dtype '<c8' (complex64) is not supported: gdn2 reads float32, float64, int32 and int64; gdn2's tensors are "
       "real: save x.real if its imaginary part is zero"},
      {"big-endian complex64", relabelled(io::encode_npy(Tensor<double>(o.shape)), "<f8", ">c8"), ">c8",
       "dtype '>c8' (big-endian complex64) is not supported: gdn2 reads float32, float64, int32 and int64; gdn2's "
       "tensors are real: save x.real if its imaginary part is zero"},
  };
  for (const auto& [what, bytes, dtype, note] : cases) {
    save(w.out, "o.npy", bytes);
    Run r = gdn2_run(check);
    std::printf("  [measured] check, %s o.npy: exit=%d%s\n%s", what.c_str(), r.status,
                r.err.empty() ? "" : (": " + r.err).c_str(), r.out.c_str());
    CAPTURE(what, r.out, r.err);
    CHECK(r.status == 1);
    CHECK(r.err.empty());
    CHECK_THAT(r.out, Catch::Contains("FAIL (" + note + ")"));
    CHECK_THAT(r.out, Catch::Contains("FAILED: 1 of 9 tensor(s)"));  // the others judged as before
    r = gdn2_run(check + " --json");
    const auto j = nlohmann::json::parse(r.out);
    for (const auto& t : j.at("tensors")) {
      if (t.at("name") != "o") {
        CHECK(t.at("verdict") == "ok");
        continue;
      }
      CHECK(t.at("verdict") == "FAIL");
      CHECK(t.at("dtype") == dtype);
      CHECK(t.at("shape") == nlohmann::json::array({1, 20, 4, 6}));
      CHECK(t.at("ratio").is_null());
      CHECK(t.at("note") == note);
    }
  }
  // An input of such a dtype is still bad input to the whole check (exit 2): without it there is no reference.
  save(w.out, "o.npy", io::encode_npy(o));
  save(w.in, "q.npy", relabelled(io::encode_npy(Tensor<double>({1, 20, 2, 8})), "<f8", "<c8"));
  const Run r = gdn2_run(check);
  std::printf("  [measured] check, complex64 q.npy: exit=%d: %s", r.status, r.err.c_str());
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Catch::Contains("gdn2: error: q.npy: dtype '<c8' (complex64) is not supported"));
}

// Before: every big-endian file was refused (exit 2, "dtype '>f8' (big-endian float64) is not supported: gdn2 reads
// float32, float64, int32 and int64, little-endian"; as a candidate of gdn2 check, a FAIL row), while gdn2.forward and
// gdn2.check read a '>f8' array by value: one file, two answers.
TEST_CASE("check: a big-endian candidate, and big-endian inputs, are read by value as their little-endian copies",
          "[cli][check][io]") {
  Workdir w("big_endian");
  const auto x = small_layer(17, 1, 30);
  candidate(w, x);  // inputs (float64, with do.npy) in w.in; a float32 candidate (o, ht and gradients) in w.out
  // The big-endian copy of every .npy file of a directory (its items float64 or float32, int64 or int32).
  auto big_endian_copy = [](const fs::path& from, const fs::path& to) {
    fs::create_directories(to);
    for (const auto& e : fs::directory_iterator(from)) {
      if (e.path().extension() != ".npy") continue;
      std::ifstream in(e.path(), std::ios::binary);
      std::stringstream ss;
      ss << in.rdbuf();
      const std::string bytes = ss.str();
      const size_t itemsize = bytes.find("'descr': '<f8'") != std::string::npos || bytes.find("'descr': '<i8'") != std::string::npos ? 8 : 4;
      save(to, e.path().filename().string(), big_endian_npy(bytes, itemsize));
    }
  };
  const fs::path root = w.in.parent_path(), in_be = root / "in_be", cand_be = root / "cand_be";
  big_endian_copy(w.in, in_be);
  big_endian_copy(w.out, cand_be);
  // forward: the same bits from either copy of the inputs.
  for (const auto& [in, out] : {std::pair{w.in, root / "o_le"}, std::pair{in_be, root / "o_be"}}) {
    const Run r = gdn2_run("forward --in " + in.string() + " --out " + out.string());
    CAPTURE(in, r.err);
    REQUIRE(r.status == 0);
  }
  for (const std::string f : {"o.npy", "ht.npy"}) {
    const bool same = bitwise_equal(load<double>(root / "o_le" / f), load<double>(root / "o_be" / f));
    std::printf("  [measured] forward on big-endian inputs: %s bitwise equal to the little-endian run's: %s\n", f.c_str(),
                same ? "yes" : "no");
    CHECK(same);
  }
  // check: the same report (every row, its dtype "f4" included) for the big-endian candidate and inputs.
  const Run le = gdn2_run("check --json --in " + w.in.string() + " --candidate " + w.out.string());
  const Run be = gdn2_run("check --json --in " + in_be.string() + " --candidate " + cand_be.string());
  std::printf("  [measured] check, little-endian: exit=%d; big-endian: exit=%d%s\n%s", le.status, be.status,
              be.err.empty() ? "" : (": " + be.err).c_str(), be.out.c_str());
  CHECK(le.status == 0);
  CHECK(be.status == 0);
  CHECK(be.out == le.out);
}
