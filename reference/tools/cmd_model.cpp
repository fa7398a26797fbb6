// gdn2 command line — task, train, eval, trace: the recall tasks and the tiny model.
#include <signal.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/npy.hpp"
#include "model/trace.hpp"
#include "model/train.hpp"
#include "tasks/scenarios.hpp"
#include "tools/model_commands.hpp"
#include "tools/validators.hpp"

namespace gdn2::tools {

namespace {

using nlohmann::json;

tasks::TaskConfig task_config(const TaskArgs& a) {
  tasks::TaskConfig c = a.config;
  c.kind = tasks::parse_task(a.task);
  tasks::validate(c);
  return c;
}

model::ModelConfig model_config(const ModelArgs& a) {
  model::ModelConfig c = a.config;
  c.variant = parse_variant(a.variant);
  model::validate(c);
  return c;
}

// A one-line progress bar on stderr, redrawn in place; only when stderr is a terminal.
void progress(int step, int steps, double loss, double acc, double seconds) {
  if (!isatty(fileno(stderr))) return;
  const int width = 30, filled = static_cast<int>(double(step) / steps * width);
  std::string bar(filled, '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r[%s] %5d/%d  loss %.4f  held-out acc %s  %.0f s ", bar.c_str(), step, steps, loss,
               acc >= 0 ? (std::to_string(acc * 100).substr(0, 5) + "%").c_str() : "  -  ", seconds);
  if (step == steps) std::fprintf(stderr, "\n");
  std::fflush(stderr);
}

// The signal that asked gdn2 train to stop (0: none).
volatile std::sig_atomic_t stop_signal = 0;
void request_stop(int sig) { stop_signal = sig; }

json evaluation_json(const model::Evaluation& ev) {
  json by_gap = json::array();
  for (size_t b = 0; b < ev.bucket_answers.size(); ++b)
    if (ev.bucket_answers[b] > 0)
      by_gap.push_back({{"distance", tasks::bucket_label(static_cast<int>(b))},
                        {"answers", ev.bucket_answers[b]},
                        {"accuracy", double(ev.bucket_correct[b]) / ev.bucket_answers[b]}});
  return {{"accuracy", ev.accuracy()}, {"answers", ev.answers}, {"loss", ev.loss}, {"by_distance", by_gap}};
}

}  // namespace

void add_task_options(CLI::App& cmd, TaskArgs& a) {
  // Bounded at parse time (tasks.hpp), so that an absurd size is refused before anything is allocated.
  const int vmax = tasks::kMaxVocab, lmax = tasks::kMaxLength;
  cmd.add_option("--task", a.task, "mqar, overwrite, mk-niah or s-niah")->capture_default_str();
  cmd.add_option("--vocab", a.config.vocab, "Vocabulary: 0 filler, then haystack words, keys, and values in the upper half")
      ->capture_default_str()
      ->check(integer_in(8, vmax));
  cmd.add_option("--length", a.config.length, "Tokens per sequence")->capture_default_str()->check(integer_in(4, lmax));
  cmd.add_option("--pairs", a.config.pairs, "Key-value pairs (needles for mk-niah)")->capture_default_str()->check(integer_in(1, lmax));
  cmd.add_option("--power-a", a.config.power_a, "MQAR query gaps: p(gap) ~ a * gap^(a-1)")
      ->capture_default_str()
      ->check(finite_in(0, 1, true));
  cmd.add_option("--rebinds", a.config.rebinds, "overwrite: keys bound again to a new value")->capture_default_str()->check(integer_in(0, lmax));
  cmd.add_option("--filler-vocab", a.config.filler_vocab, "needle tasks: distinct haystack words")
      ->capture_default_str()
      ->check(integer_in(1, vmax));
  cmd.add_option("--queries", a.config.queries, "needle tasks: needles asked about at the end")->capture_default_str()->check(integer_in(1, lmax));
}

void refuse_task_options_without_effect(const CLI::App& cmd, const TaskArgs& a) {
  tasks::parse_task(a.task);  // an unknown --task is named as such, not as the options it would have refused
  const std::string with = "has no effect with --task " + a.task;
  refuse_unless(cmd, "--power-a", a.task == "mqar",
                with + " (the gaps of MQAR's queries); give --task mqar, or leave --power-a out");
  refuse_unless(cmd, "--rebinds", a.task == "overwrite",
                with + " (keys bound again to a new value); give --task overwrite, or leave --rebinds out");
  const bool needles = a.task == "mk-niah" || a.task == "s-niah";
  refuse_unless(cmd, "--filler-vocab", needles,
                with + " (the haystack's words); give --task mk-niah or s-niah, or leave --filler-vocab out");
  refuse_unless(cmd, "--queries", needles,
                with + " (the needles asked about); give --task mk-niah or s-niah, or leave --queries out");
  refuse_unless(cmd, "--pairs", a.task != "s-niah",
                with + " (one needle); give --task mk-niah for several needles, or leave --pairs out");
}

void add_model_options(CLI::App& cmd, ModelArgs& a) {
  // The bounds of model::validate, at parse time.
  cmd.add_option("--variant", a.variant, "Gate tying at equal state size: gdn2, kda, gdn, deltanet, linear")
      ->capture_default_str();
  cmd.add_option("--d-model", a.config.d_model, "Residual stream width")->capture_default_str()->check(integer_in(1, 4096));
  cmd.add_option("--heads", a.config.heads, "Heads")->capture_default_str()->check(integer_in(1, 64));
  cmd.add_option("--head-k", a.config.head_k, "K: key channels per head (rows of the state)")->capture_default_str()->check(integer_in(1, 1024));
  cmd.add_option("--head-v", a.config.head_v, "V: value channels per head (columns of the state)")->capture_default_str()->check(integer_in(1, 1024));
  cmd.add_option("--blocks", a.config.blocks, "Blocks of [GDN-2 mixer, MLP]")->capture_default_str()->check(integer_in(1, 16));
  cmd.add_option("--mlp", a.config.mlp, "MLP hidden width (0: no MLP)")->capture_default_str()->check(integer_in(0, 16384));
  cmd.add_option("--conv", a.config.conv, "Short causal convolution width on q, k, v (0: none)")->capture_default_str()->check(integer_in(0, 16));
}

int run_task(const TaskCmdArgs& args) {
  const tasks::TaskConfig c = task_config(args.task);
  tasks::check_tokens(c, args.count, "--count " + std::to_string(args.count));
  const std::vector<tasks::Example> batch = tasks::make_batch(c, args.seed, args.count);
  if (args.json) {
    for (const auto& ex : batch) {
      std::vector<int> roles;
      for (auto r : ex.roles) roles.push_back(static_cast<int>(r));
      std::printf("%s\n", json({{"tokens", ex.tokens}, {"targets", ex.targets}, {"roles", roles}, {"source", ex.source}})
                              .dump()
                              .c_str());
    }
    return kOk;
  }
  std::printf("task %s: vocab %d, length %d, pairs %d (seed %llu)\n", tasks::task_name(c.kind), c.vocab, c.length,
              c.pairs, static_cast<unsigned long long>(args.seed));
  std::printf("legend: kN key, vN value, ?kN->vM query of key N whose answer is value M, . filler 0, fN haystack word\n");
  for (size_t i = 0; i < batch.size(); ++i) std::printf("[%zu] %s\n", i, tasks::describe(batch[i], c).c_str());
  return kOk;
}

int run_train(const TrainArgs& args) {
  io::check_output_dir(args.out_dir, "--out");  // before minutes of training, not after
  io::check_output_writable(args.out_dir);      // a read-only file system is found now too (exit 4)
  const tasks::TaskConfig tc = task_config(args.task);
  model::ModelConfig mc = model_config(args.model);
  mc.vocab = tc.vocab;
  model::TrainConfig cfg = args.train;
  tasks::check_tokens(tc, cfg.batch, "--batch " + std::to_string(cfg.batch));
  tasks::check_tokens(tc, cfg.eval_examples, "--eval-examples " + std::to_string(cfg.eval_examples));
  tasks::check_tokens(tc, args.final_examples, "--final-examples " + std::to_string(args.final_examples));
  model::Params p = model::init_params(mc, cfg.seed);
  std::size_t count = 0;
  for (const auto& [name, m] : p) count += m.size();
  std::fprintf(stderr, "gdn2 train: %s, %s model, %zu parameters, state %d x %d per head, %d steps of %d sequences\n",
               tasks::task_name(tc.kind), variant_name(mc.variant), count, mc.head_k, mc.head_v, cfg.steps, cfg.batch);
  // SIGINT and SIGTERM stop training at the next step, also where the shell started us ignoring SIGINT (a
  // background job of a script); the checkpoint is then not written, so --out keeps its last complete one. A
  // second signal ends the process at once (SA_RESETHAND); checkpoint writes hold signals back (write_files_atomically).
  struct sigaction sa {};
  sa.sa_handler = request_stop;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  auto interrupted = [&](int step) {
    std::fprintf(stderr, "%sgdn2 train: interrupted by %s after step %d of %d; no checkpoint written: %s\n",
                 isatty(fileno(stderr)) ? "\n" : "", stop_signal == SIGINT ? "SIGINT" : "SIGTERM", step, cfg.steps,
                 std::filesystem::exists(args.out_dir) ? (args.out_dir + " keeps its previous contents").c_str()
                                                       : (args.out_dir + " was not created").c_str());
    return 128 + stop_signal;
  };
  double last_acc = -1, seconds = 0;
  const int done = model::train(mc, p, tc, cfg, [&](const model::StepLog& log) {
    if (log.heldout_accuracy >= 0) {
      last_acc = log.heldout_accuracy;
      std::printf("%s\n", json({{"step", log.step}, {"loss", log.loss}, {"lr", log.lr}, {"grad_norm", log.grad_norm},
                                {"heldout_accuracy", log.heldout_accuracy}, {"seconds", log.seconds}})
                              .dump()
                              .c_str());
      std::fflush(stdout);
    }
    progress(log.step, cfg.steps, log.loss, last_acc, log.seconds);
    seconds = log.seconds;
  }, [] { return stop_signal != 0; });
  if (stop_signal) return interrupted(done);
  const model::Evaluation ev = model::evaluate(mc, p, tc, model::heldout_seed(cfg.seed), args.final_examples);
  if (stop_signal) return interrupted(done);
  json metrics = evaluation_json(ev);
  metrics["train_seconds"] = seconds;
  metrics["examples"] = args.final_examples;
  model::save_checkpoint(args.out_dir, {mc, tc, cfg, p, metrics.dump()});
  std::fprintf(stderr, "gdn2 train: held-out accuracy %.4f on %d answers; %.1f s; checkpoint in %s\n", ev.accuracy(),
               ev.answers, seconds, args.out_dir.c_str());
  return kOk;
}

int run_eval(const EvalArgs& args) {
  model::Checkpoint ck = model::load_checkpoint(args.checkpoint);
  if (!args.task.empty()) {  // the same vocabulary and length, another task: what does the model do with it?
    ck.task.kind = tasks::parse_task(args.task);
    tasks::validate(ck.task);
  }
  tasks::check_tokens(ck.task, args.examples, "--examples " + std::to_string(args.examples));
  const std::uint64_t seed = args.seed >= 0 ? static_cast<std::uint64_t>(args.seed) : model::heldout_seed(ck.train.seed);
  const model::Evaluation ev = model::evaluate(ck.model, ck.params, ck.task, seed, args.examples);
  if (args.json) {
    json j = evaluation_json(ev);
    j["checkpoint"] = args.checkpoint;
    j["variant"] = variant_name(ck.model.variant);
    j["task"] = tasks::task_name(ck.task.kind);
    std::printf("%s\n", j.dump().c_str());
    return kOk;
  }
  std::printf("%s (%s model) on %d held-out %s sequences: accuracy %.4f over %d answers, loss %.4f\n",
              args.checkpoint.c_str(), variant_name(ck.model.variant), args.examples, tasks::task_name(ck.task.kind),
              ev.accuracy(), ev.answers, ev.loss);
  std::printf("  %-14s %8s %9s\n", "query distance", "answers", "accuracy");
  for (size_t b = 0; b < ev.bucket_answers.size(); ++b)
    if (ev.bucket_answers[b] > 0)
      std::printf("  %-14s %8d %9.4f\n", tasks::bucket_label(static_cast<int>(b)).c_str(), ev.bucket_answers[b],
                  double(ev.bucket_correct[b]) / ev.bucket_answers[b]);
  return kOk;
}

void refuse_trace_options_without_effect(const CLI::App& cmd, const TraceArgs& args) {
  const std::string one = "a trace is of one scripted scenario, one trained model or random inputs";
  refuse_unless(cmd, "--random", args.scenario.empty() && args.checkpoint.empty(),
                "cannot be combined with " + std::string(args.scenario.empty() ? "--checkpoint" : "--scenario") +
                    " (" + one + "); give one of --scenario, --checkpoint and --random");
  refuse_unless(cmd, "--checkpoint", args.scenario.empty(),
                "cannot be combined with --scenario (" + one + "); give one of --scenario, --checkpoint and --random");
  refuse_unless(cmd, "--variant", !args.scenario.empty(),
                "has no effect without --scenario (it ties a scripted scenario's gates; a trained model has its own "
                "variant); give --scenario NAME, or leave --variant out");
  for (const char* option : {"--K", "--V"})
    refuse_unless(cmd, option, !args.scenario.empty() || args.random_T > 0,
                  "has no effect without --scenario or --random (a trained model's state size is its own); give "
                  "--scenario NAME or --random T, or leave " + std::string(option) + " out");
  for (const char* option : {"--example", "--block", "--head"})
    refuse_unless(cmd, option, !args.checkpoint.empty(),
                  "has no effect without --checkpoint (it picks what of a trained model is traced); give --checkpoint "
                  "DIR, or leave " + std::string(option) + " out");
}

int run_trace(const TraceArgs& args) {
  io::check_output_dir(args.out_dir, "--out");
  model::Trace tr;
  if (args.random_T > 0) return run_random_trace(args.out_dir, args.random_T, args.K, args.V, 0);
  if (!args.scenario.empty()) {
    const Variant v = parse_variant(args.variant);
    tr = model::trace_scenario(tasks::make_scenario(args.scenario, v, args.K, args.V), variant_name(v));
  } else if (!args.checkpoint.empty()) {
    const model::Checkpoint ck = model::load_checkpoint(args.checkpoint);
    tr = model::trace_model(ck.model, ck.params, model::heldout_example(ck, args.example), args.block, args.head);
    tr.title = std::string(tasks::task_name(ck.task.kind)) + " example " + std::to_string(args.example) + ", " +
               variant_name(ck.model.variant) + " model, block " + std::to_string(args.block) + " head " +
               std::to_string(args.head);
  } else {
    throw InputError("trace: give --scenario NAME, --checkpoint DIR or --random T");
  }
  model::save_trace(args.out_dir, tr);
  int queries = 0, correct = 0;
  for (int t = 0; t < tr.T; ++t)
    if (tr.targets[t] >= 0) ++queries, correct += tr.predicted[t] == tr.targets[t];
  std::printf("trace: %s — %d tokens, state %d x %d, written to %s", tr.title.c_str(), tr.T, tr.K, tr.V,
              args.out_dir.c_str());
  if (queries) std::printf(" (%d of %d queries answered correctly)", correct, queries);
  std::printf("\n");
  return kOk;
}

}  // namespace gdn2::tools
