// gdn2 command line — the task, train, eval and trace subcommands (cmd_model.cpp).
#pragma once

#include <CLI/CLI.hpp>

#include "model/train.hpp"
#include "tools/commands.hpp"

namespace gdn2::tools {

struct TaskArgs {
  std::string task = "mqar";
  tasks::TaskConfig config;
};
struct ModelArgs {
  std::string variant = "gdn2";
  model::ModelConfig config;
};
void add_task_options(CLI::App& cmd, TaskArgs& a);
void add_model_options(CLI::App& cmd, ModelArgs& a);
// add_task_options' options that belong to some tasks only (--power-a: mqar; --rebinds: overwrite; --filler-vocab,
// --queries: the needle tasks; --pairs: not s-niah, which has one needle), refused with another --task
// (refuse_unless, commands.hpp).
void refuse_task_options_without_effect(const CLI::App& cmd, const TaskArgs& a);

struct TaskCmdArgs {
  TaskArgs task;
  std::uint64_t seed = 0;
  int count = 3;
  bool json = false;
};
int run_task(const TaskCmdArgs& args);

struct TrainArgs {
  TaskArgs task;
  ModelArgs model;
  model::TrainConfig train;
  std::string out_dir;
  int final_examples = 1000;
};
int run_train(const TrainArgs& args);

struct EvalArgs {
  std::string checkpoint;
  int examples = 1000;
  long long seed = -1;  // -1: the checkpoint's own held-out stream
  std::string task;     // empty: the checkpoint's own task
  bool json = false;
};
int run_eval(const EvalArgs& args);

struct TraceArgs {
  std::string out_dir, checkpoint, scenario, variant = "gdn2";
  int example = 0, block = 0, head = 0, K = 8, V = 8;
  int random_T = 0;  // > 0: a trace of random inputs (T tokens, K x V) instead, e.g. for the viewer's frame-time benchmark
};
int run_trace(const TraceArgs& args);
// One trace at a time (--scenario, --checkpoint or --random), and the options of one kind refused with another:
// --variant (--scenario), --K and --V (--scenario or --random), --example, --block and --head (--checkpoint).
void refuse_trace_options_without_effect(const CLI::App& cmd, const TraceArgs& args);

struct ExportArgs {
  std::string out_dir = "notebooks_data";
};
int run_export(const ExportArgs& args);
int run_random_trace(const std::string& out_dir, int T, int K, int V, std::uint64_t seed);

}  // namespace gdn2::tools
