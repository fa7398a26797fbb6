// gdn2 model — AdamW, evaluation and checkpoints (train.hpp).
#include "model/train.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "io/npy.hpp"

namespace gdn2::model {

std::uint64_t train_seed(std::uint64_t seed) { return 2 * seed + 1; }
std::uint64_t heldout_seed(std::uint64_t seed) { return 2 * seed + 2 + 0x5EED0000ull; }

Evaluation evaluate(const ModelConfig& mc, const Params& p, const tasks::TaskConfig& tc, std::uint64_t seed, int examples,
                    int batch) {
  Evaluation ev;
  const std::vector<tasks::Example> all = tasks::make_batch(tc, seed, examples);
  double loss_sum = 0;
  for (int start = 0; start < examples; start += batch) {
    const int n = std::min(batch, examples - start);
    std::vector<tasks::Example> part(all.begin() + start, all.begin() + start + n);
    std::vector<std::vector<int>> tokens;
    for (const auto& ex : part) tokens.push_back(ex.tokens);
    const ForwardResult f = forward(mc, p, tokens);
    for (int i = 0; i < n; ++i)
      for (int t = 0; t < f.length; ++t) {
        const int target = part[i].targets[t];
        if (target < 0) continue;
        const RowLoss rl = row_loss(f.logits, Eigen::Index(i) * f.length + t, target);
        loss_sum += rl.loss;
        const int bucket = tasks::bucket_of(t - part[i].source[t]);
        if (static_cast<int>(ev.bucket_answers.size()) <= bucket) {
          ev.bucket_answers.resize(bucket + 1);
          ev.bucket_correct.resize(bucket + 1);
        }
        ++ev.answers;
        ++ev.bucket_answers[bucket];
        if (rl.predicted == target) ++ev.correct, ++ev.bucket_correct[bucket];
      }
  }
  ev.loss = ev.answers ? loss_sum / ev.answers : 0;
  return ev;
}

void train(const ModelConfig& mc, Params& p, const tasks::TaskConfig& tc, const TrainConfig& cfg,
           const std::function<void(const StepLog&)>& on_step) {
  validate(mc);
  tasks::validate(tc);
  if (cfg.steps < 1 || cfg.batch < 1) throw InputError("steps and batch must be positive");
  if (!(cfg.lr > 0)) throw InputError("lr must be positive");
  Params m1, m2;
  for (const auto& [name, value] : p) {
    m1[name] = Matrix::Zero(value.rows(), value.cols());
    m2[name] = Matrix::Zero(value.rows(), value.cols());
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (int step = 1; step <= cfg.steps; ++step) {
    // Example i of step s is example (s−1)·batch + i of the training stream: a fresh batch every step.
    std::vector<tasks::Example> batch;
    for (int i = 0; i < cfg.batch; ++i) {
      Rng rng(train_seed(cfg.seed) * 0x9E3779B97F4A7C15ull + std::uint64_t(step - 1) * cfg.batch + i);
      batch.push_back(tasks::make_example(tc, rng));
    }
    LossAndGrad lg = loss_and_grad(mc, p, batch);
    double norm2 = 0;
    for (const auto& [name, g] : lg.grad) norm2 += g.squaredNorm();
    const double norm = std::sqrt(norm2), clip = norm > cfg.clip ? cfg.clip / norm : 1.0;
    // Linear warm-up, then cosine from lr to lr/10.
    const double progress = step <= cfg.warmup ? 0 : double(step - cfg.warmup) / std::max(1, cfg.steps - cfg.warmup);
    const double lr = step <= cfg.warmup ? cfg.lr * step / cfg.warmup
                                         : cfg.lr * (0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * progress)));
    const double c1 = 1 - std::pow(cfg.beta1, step), c2 = 1 - std::pow(cfg.beta2, step);
    for (auto& [name, value] : p) {
      const Matrix g = lg.grad.at(name) * clip;
      Matrix& a = m1[name];
      Matrix& b = m2[name];
      a = cfg.beta1 * a + (1 - cfg.beta1) * g;
      b = cfg.beta2 * b + (1 - cfg.beta2) * g.cwiseProduct(g);
      if (decays(name)) value *= 1 - lr * cfg.weight_decay;  // decoupled (Loshchilov & Hutter)
      value.array() -= lr * (a.array() / c1) / ((b.array() / c2).sqrt() + 1e-8);
    }
    StepLog log;
    log.step = step;
    log.loss = lg.loss;
    log.lr = lr;
    log.grad_norm = norm;
    if (cfg.eval_every > 0 && (step % cfg.eval_every == 0 || step == cfg.steps))
      log.heldout_accuracy = evaluate(mc, p, tc, heldout_seed(cfg.seed), cfg.eval_examples).accuracy();
    log.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (on_step) on_step(log);
  }
}

// [SECTION] checkpoints -------------------------------------------------------------------------------------------

namespace {

using nlohmann::json;

json to_json(const ModelConfig& c) {
  return {{"variant", variant_name(c.variant)}, {"vocab", c.vocab}, {"d_model", c.d_model}, {"heads", c.heads},
          {"head_k", c.head_k}, {"head_v", c.head_v}, {"blocks", c.blocks}, {"mlp", c.mlp}, {"conv", c.conv}};
}
json to_json(const tasks::TaskConfig& c) {
  return {{"task", tasks::task_name(c.kind)}, {"vocab", c.vocab}, {"length", c.length}, {"pairs", c.pairs},
          {"power_a", c.power_a}, {"rebinds", c.rebinds}, {"filler_vocab", c.filler_vocab}, {"queries", c.queries}};
}
json to_json(const TrainConfig& c) {
  return {{"steps", c.steps}, {"batch", c.batch}, {"lr", c.lr}, {"warmup", c.warmup}, {"weight_decay", c.weight_decay},
          {"beta1", c.beta1}, {"beta2", c.beta2}, {"clip", c.clip}, {"seed", c.seed}, {"eval_every", c.eval_every},
          {"eval_examples", c.eval_examples}};
}

// Reads one field exactly: an integer field must hold an integer that fits its type (64.9 and 2^32 + 64 are
// refused, not truncated or wrapped), a real field a finite number, a string field a string.
template <typename T>
void read(const json& j, const char* key, T& out, const std::string& file) {
  if (!j.contains(key)) return;  // absent: keep the default
  const json& v = j.at(key);
  auto wrong = [&](const std::string& what) {
    throw InputError(file + ": field '" + key + "' " + what + " (got " + v.dump() + ")");
  };
  if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) wrong("must be an integer");
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) wrong("is out of range");
    } else {
      const auto i = v.get<std::int64_t>();
      if (i < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
          (std::is_signed_v<T> && i > static_cast<std::int64_t>(std::numeric_limits<T>::max())))
        wrong("is out of range");
    }
    out = v.get<T>();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) wrong("must be a number");
    out = v.get<T>();
    if (!std::isfinite(out)) wrong("must be finite");
  } else {
    if (!v.is_string()) wrong("must be a string");
    out = v.get<T>();
  }
}

}  // namespace

void save_checkpoint(const std::string& dir, const Checkpoint& ck) {
  json config = {{"format", "gdn2-checkpoint-1"},
                 {"model", to_json(ck.model)},
                 {"task", to_json(ck.task)},
                 {"train", to_json(ck.train)},
                 {"metrics", json::parse(ck.metrics_json)},
                 {"parameters", json::array()}};
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& [name, value] : ck.params) {
    Tensor<float> t({value.rows(), value.cols()});
    for (Eigen::Index i = 0; i < value.size(); ++i) t.data[i] = static_cast<float>(value.data()[i]);
    files.emplace_back(name + ".npy", io::encode_npy(t));
    config["parameters"].push_back(name);
  }
  files.emplace_back("config.json", config.dump(2) + "\n");
  io::write_files_atomically(dir, files);
}

Checkpoint load_checkpoint(const std::string& dir) {
  const std::string file = (std::filesystem::path(dir) / "config.json").string();
  std::ifstream in(file);
  if (!in) throw InputError(file + ": cannot open (is '" + dir + "' a checkpoint directory written by gdn2 train?)");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw InputError(file + ": not valid JSON (" + e.what() + ")");
  }
  if (j.value("format", "") != "gdn2-checkpoint-1") throw InputError(file + ": format is not gdn2-checkpoint-1");
  Checkpoint ck;
  const json& m = j.at("model");
  std::string variant = "gdn2";
  read(m, "variant", variant, file);
  ck.model.variant = parse_variant(variant);
  read(m, "vocab", ck.model.vocab, file);
  read(m, "d_model", ck.model.d_model, file);
  read(m, "heads", ck.model.heads, file);
  read(m, "head_k", ck.model.head_k, file);
  read(m, "head_v", ck.model.head_v, file);
  read(m, "blocks", ck.model.blocks, file);
  read(m, "mlp", ck.model.mlp, file);
  read(m, "conv", ck.model.conv, file);
  try {
    validate(ck.model);
  } catch (const InputError& e) {
    throw InputError(file + ": model " + e.what());
  }
  if (j.contains("task")) {
    const json& t = j.at("task");
    std::string task = "mqar";
    read(t, "task", task, file);
    ck.task.kind = tasks::parse_task(task);
    read(t, "vocab", ck.task.vocab, file);
    read(t, "length", ck.task.length, file);
    read(t, "pairs", ck.task.pairs, file);
    read(t, "power_a", ck.task.power_a, file);
    read(t, "rebinds", ck.task.rebinds, file);
    read(t, "filler_vocab", ck.task.filler_vocab, file);
    read(t, "queries", ck.task.queries, file);
    try {
      tasks::validate(ck.task);
    } catch (const InputError& e) {
      throw InputError(file + ": task " + e.what());
    }
  }
  if (j.contains("train")) {
    const json& t = j.at("train");
    read(t, "steps", ck.train.steps, file);
    read(t, "batch", ck.train.batch, file);
    read(t, "lr", ck.train.lr, file);
    read(t, "warmup", ck.train.warmup, file);
    read(t, "weight_decay", ck.train.weight_decay, file);
    read(t, "beta1", ck.train.beta1, file);
    read(t, "beta2", ck.train.beta2, file);
    read(t, "clip", ck.train.clip, file);
    read(t, "seed", ck.train.seed, file);
    read(t, "eval_every", ck.train.eval_every, file);
    read(t, "eval_examples", ck.train.eval_examples, file);
  }
  if (j.contains("metrics")) ck.metrics_json = j.at("metrics").dump();
  // The parameter set is defined by the configuration: every expected file must be there with its shape.
  const Params expected = init_params(ck.model, 0);
  for (const auto& [name, shape] : expected) {
    const std::string path = (std::filesystem::path(dir) / (name + ".npy")).string();
    const Tensor<double> t = io::to_tensor<double>(io::read_npy(path, name + ".npy"), name + ".npy");
    if (t.shape != std::vector<index_t>{shape.rows(), shape.cols()})
      throw InputError(path + ": shape " + shape_str(t.shape) + ", expected " + shape_str({shape.rows(), shape.cols()}) +
                       " for this model configuration");
    for (index_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(t.data[i]))
        throw InputError(path + ": non-finite weight " + std::to_string(t.data[i]) + " at " + index_str(t.shape, i));
    ck.params[name] = Eigen::Map<const Matrix>(t.ptr(), shape.rows(), shape.cols());
  }
  return ck;
}

}  // namespace gdn2::model
