// gdn2 model — AdamW, evaluation and checkpoints (train.hpp).
#include "model/train.hpp"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "io/npy.hpp"
#include "model/json_file.hpp"

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

int train(const ModelConfig& mc, Params& p, const tasks::TaskConfig& tc, const TrainConfig& cfg,
          const std::function<void(const StepLog&)>& on_step, const std::function<bool()>& stop) {
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
    if (stop && stop()) return step - 1;
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
  return cfg.steps;
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
  using json_file::read;
  const json_file::Written written = json_file::parse_written(dir, "config.json", "gdn2-checkpoint-1", "a checkpoint directory written by gdn2 train");
  const std::string& file = written.file;
  const json& j = written.object;
  Checkpoint ck;
  // A value that is read but refused by its own parser or validator: name the file and the key.
  auto in_key = [&](const std::string& key, const auto& f) {
    try {
      f();
    } catch (const InputError& e) {
      if (std::string(e.what()).rfind(file, 0) == 0) throw;  // already names the file and the field
      throw InputError(file + ": " + key + ": " + e.what());
    }
  };
  // Every key save_checkpoint writes is required: a default filled in for a missing one would evaluate another
  // model or task than the one trained, and say nothing.
  const json& m = json_file::section(j, "model", file);
  std::string variant;
  read(m, "model", "variant", variant, file);
  in_key("model.variant", [&] { ck.model.variant = parse_variant(variant); });
  read(m, "model", "vocab", ck.model.vocab, file);
  read(m, "model", "d_model", ck.model.d_model, file);
  read(m, "model", "heads", ck.model.heads, file);
  read(m, "model", "head_k", ck.model.head_k, file);
  read(m, "model", "head_v", ck.model.head_v, file);
  read(m, "model", "blocks", ck.model.blocks, file);
  read(m, "model", "mlp", ck.model.mlp, file);
  read(m, "model", "conv", ck.model.conv, file);
  in_key("model", [&] { validate(ck.model); });
  const json& t = json_file::section(j, "task", file);
  std::string task;
  read(t, "task", "task", task, file);
  in_key("task.task", [&] { ck.task.kind = tasks::parse_task(task); });
  read(t, "task", "vocab", ck.task.vocab, file);
  read(t, "task", "length", ck.task.length, file);
  read(t, "task", "pairs", ck.task.pairs, file);
  read(t, "task", "power_a", ck.task.power_a, file);
  read(t, "task", "rebinds", ck.task.rebinds, file);
  read(t, "task", "filler_vocab", ck.task.filler_vocab, file);
  read(t, "task", "queries", ck.task.queries, file);
  in_key("task", [&] { tasks::validate(ck.task); });
  // The model embeds and predicts tokens 0 .. model.vocab - 1; a task of another vocabulary would index past E.
  if (ck.task.vocab != ck.model.vocab)
    throw InputError(file + ": task.vocab is " + std::to_string(ck.task.vocab) + " but model.vocab is " +
                     std::to_string(ck.model.vocab) + "; they must be equal");
  const json& tr = json_file::section(j, "train", file);
  read(tr, "train", "steps", ck.train.steps, file);
  read(tr, "train", "batch", ck.train.batch, file);
  read(tr, "train", "lr", ck.train.lr, file);
  read(tr, "train", "warmup", ck.train.warmup, file);
  read(tr, "train", "weight_decay", ck.train.weight_decay, file);
  read(tr, "train", "beta1", ck.train.beta1, file);
  read(tr, "train", "beta2", ck.train.beta2, file);
  read(tr, "train", "clip", ck.train.clip, file);
  read(tr, "train", "seed", ck.train.seed, file);
  read(tr, "train", "eval_every", ck.train.eval_every, file);
  read(tr, "train", "eval_examples", ck.train.eval_examples, file);
  ck.metrics_json = json_file::section(j, "metrics", file).dump();
  // The parameter set is defined by the configuration: every expected file must be there with its shape, and the
  // list "parameters" (written by save_checkpoint) must name exactly that set.
  const Params expected = init_params(ck.model, 0);
  {
    if (!j.contains("parameters")) throw InputError(file + ": key 'parameters' is missing");
    const json& list = j.at("parameters");
    if (!list.is_array()) throw InputError(file + ": key 'parameters' must be a list of names, got " + std::string(list.type_name()));
    std::set<std::string> listed;
    for (const json& name : list) {
      if (!name.is_string()) throw InputError(file + ": key 'parameters' holds " + name.dump().substr(0, 40) + ", not a name");
      const std::string n = name.get<std::string>();
      if (!expected.count(n))
        throw InputError(file + ": key 'parameters' names '" + n.substr(0, 40) + "', not a parameter of this model configuration");
      if (!listed.insert(n).second) throw InputError(file + ": key 'parameters' names '" + n + "' twice");
    }
    for (const auto& [name, value] : expected)
      if (!listed.count(name)) throw InputError(file + ": key 'parameters' does not name '" + name + "', a parameter of this model");
  }
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
