// gdn2 tests [model] — the tiny model's hand-written backward against central finite differences (every variant,
// two blocks), determinism of training, checkpoint and trace files.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "io/npy.hpp"
#include "model/trace.hpp"
#include "model/train.hpp"

using namespace gdn2;
using namespace gdn2::model;

namespace {

ModelConfig tiny(Variant v) {
  ModelConfig c;
  c.variant = v;
  c.vocab = 16;
  c.d_model = 8;
  c.heads = 2;
  c.head_k = 4;
  c.head_v = 3;
  c.blocks = 2;
  c.mlp = 6;
  c.conv = 3;
  return c;
}

tasks::TaskConfig tiny_task() {
  tasks::TaskConfig t;
  t.vocab = 16;
  t.length = 12;
  t.pairs = 3;
  return t;
}

}  // namespace

TEST_CASE("model gradient equals central finite differences for every variant", "[model][gradcheck]") {
  for (Variant v : {Variant::gdn2, Variant::kda, Variant::gdn, Variant::deltanet, Variant::linear}) {
    const ModelConfig mc = tiny(v);
    Params p = init_params(mc, 11);
    const auto batch = tasks::make_batch(tiny_task(), 5, 3);
    const LossAndGrad lg = loss_and_grad(mc, p, batch);
    // Per parameter: a random direction d; compare <grad, d> with (L(p + h d) − L(p − h d)) / 2h.
    Rng rng(99);
    double worst = 0;
    std::string worst_name;
    for (auto& [name, value] : p) {
      Matrix d(value.rows(), value.cols());
      for (Eigen::Index i = 0; i < d.size(); ++i) d.data()[i] = rng.normal();
      const double analytic = (lg.grad.at(name).array() * d.array()).sum();
      const double h = 1e-5;
      const Matrix saved = value;
      value = saved + h * d;
      const double up = loss_only(mc, p, batch);
      value = saved - h * d;
      const double down = loss_only(mc, p, batch);
      value = saved;
      const double fd = (up - down) / (2 * h);
      const double err = std::abs(fd - analytic) / std::max(1e-6, std::abs(fd) + std::abs(analytic));
      if (err > worst) worst = err, worst_name = name;
    }
    std::printf("[model] %-8s %zu parameter tensors, worst relative FD error %.2e (%s)\n", variant_name(v), p.size(), worst,
                worst_name.c_str());
    CHECK(worst < 1e-6);
  }
}

TEST_CASE("training is bit-for-bit deterministic for a seed and lowers the loss", "[model]") {
  const ModelConfig mc = tiny(Variant::gdn2);
  TrainConfig cfg;
  cfg.steps = 30;
  cfg.batch = 8;
  cfg.warmup = 5;
  cfg.eval_every = 0;
  cfg.seed = 4;
  std::vector<double> losses;
  Params a = init_params(mc, cfg.seed), b = a;
  train(mc, a, tiny_task(), cfg, [&](const StepLog& s) { losses.push_back(s.loss); });
  train(mc, b, tiny_task(), cfg, nullptr);
  for (const auto& [name, m] : a) REQUIRE((m.array() == b.at(name).array()).all());
  const double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[27] + losses[28] + losses[29]) / 3;
  std::printf("[model] mean loss of steps 1-3 %.4f, of steps 28-30 %.4f\n", first, last);
  CHECK(last < first);
}

TEST_CASE("checkpoints round-trip through float32 and refuse a wrong shape", "[model][io]") {
  const ModelConfig mc = tiny(Variant::kda);
  const Params p = init_params(mc, 1);
  const std::string dir = (std::filesystem::temp_directory_path() / "gdn2_test_checkpoint").string();
  std::filesystem::remove_all(dir);
  save_checkpoint(dir, {mc, tiny_task(), TrainConfig{}, p, "{\"accuracy\": 0.5}"});
  const Checkpoint ck = load_checkpoint(dir);
  CHECK(ck.model.variant == Variant::kda);
  CHECK(ck.task.length == 12);
  double worst = 0;
  for (const auto& [name, m] : p) {
    REQUIRE(ck.params.count(name));
    worst = std::max(worst, ((ck.params.at(name) - m).cwiseAbs().array() / (m.cwiseAbs().array() + 1e-30)).maxCoeff());
  }
  std::printf("[model] checkpoint: max relative change %.2e (float32 storage)\n", worst);
  CHECK(worst < 6e-8);
  // A file with a wrong shape is named in the error.
  Tensor<float> wrong({3, 3});
  std::ofstream(dir + "/E.npy", std::ios::binary | std::ios::trunc) << io::encode_npy(wrong);  // beside the others
  CHECK_THROWS_WITH(load_checkpoint(dir), Catch::Contains("E.npy") && Catch::Contains("expected [16,8]"));
  CHECK_THROWS_WITH(load_checkpoint(dir + "/missing"), Catch::Contains("cannot open"));
}

TEST_CASE("a model trace uses the model's own mixer inputs and round-trips through files", "[model][trace]") {
  const ModelConfig mc = tiny(Variant::gdn2);
  const Params p = init_params(mc, 2);
  const auto ex = tasks::make_batch(tiny_task(), 8, 1)[0];
  const Trace tr = trace_model(mc, p, ex, 1, 1);
  const ForwardResult f = forward(mc, p, {ex.tokens});
  // o of head 1 of block 1 as the model computed it
  const Tensor<double>& o = f.blocks[1].o;
  double worst = 0;
  for (int t = 0; t < tr.T; ++t)
    for (int j = 0; j < tr.V; ++j) worst = std::max(worst, std::abs(tr.o(t, j) - o.data[(t * 2 + 1) * tr.V + j]));
  std::printf("[trace] model trace vs model forward: max |diff| %.1e\n", worst);
  CHECK(worst == 0.0);
  const std::string dir = (std::filesystem::temp_directory_path() / "gdn2_test_trace").string();
  std::filesystem::remove_all(dir);
  save_trace(dir, tr);
  const Trace back = load_trace(dir);
  CHECK(back.T == tr.T);
  CHECK(back.labels == tr.labels);
  CHECK(back.predicted == tr.predicted);
  CHECK((back.S[tr.T].array() == tr.S[tr.T].array()).all());
  CHECK((back.z.array() == tr.z.array()).all());
}
