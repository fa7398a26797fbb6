// gdn2 — the command line of the Gated DeltaNet-2 reference. Thin: parses, validates, calls the library.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>

#include "check/check.hpp"

#include "tasks/scenarios.hpp"
#include "tools/commands.hpp"
#include "tools/model_commands.hpp"
#include "tools/validators.hpp"

namespace {

int run_command(int argc, char** argv) {
  using namespace gdn2::tools;
  CLI::App app{
      "gdn2 — float64 reference of Gated DeltaNet-2 (Hatamizadeh, Choi, Kautz 2026)\n"
      "  S_t = (I - k_t (b_t*k_t)^T) Diag(exp g_t) S_{t-1} + k_t (w_t*v_t)^T,   o_t = S_t^T (scale q_t)\n"
      "Exit status: 0 success, 1 check failed, 2 bad input, 3 overflow (float32 results; for check: the float64\n"
      "reference itself), 4 the outputs could not be written (disk full, permissions).\n"
      "--out is replaced as a whole (it then holds this run's files and .gdn2-outputs, their list); an --out that is\n"
      "also --in, or that holds a file no earlier gdn2 run wrote there, is refused (exit 2): gdn2 deletes nothing\n"
      "it did not write.",
      "gdn2"};
  app.require_subcommand(1);
  // Usage errors as one line, like every other error.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "gdn2: error: " + std::string(e.what()) + " (see --help)\n";
  });
  app.set_help_all_flag("--help-all", "Print help for every command");

  ForwardArgs fwd;
  auto* forward = app.add_subcommand("forward", "Run the layer on a directory of .npy tensors; write o.npy and ht.npy");
  add_layer_options(*forward, fwd.layer);
  forward->add_option("--out", fwd.out_dir, "Output directory (created if missing); o.npy [B,T,HV,V], ht.npy [N,HV,K,V]")
      ->required();
  forward->add_flag("--verbose", fwd.verbose, "Print where the time goes (reading each file, computing, writing) on stderr");
  forward->footer(variant_files_help());

  BackwardArgs bwd;
  auto* backward = app.add_subcommand(
      "backward", "Gradients of L = <do, o> + <dht, ht> for every input file read; reads do.npy and dht.npy (absent = 0)");
  add_layer_options(*backward, bwd.layer);
  backward->add_option("--out", bwd.out_dir,
                       "Output directory: dq, dk, dv (+ dh0 when h0.npy was read) and per variant dg, db, dw or dbeta; "
                       "with --decay also dA_log, ddt_bias")
      ->required();
  backward->add_flag("--verbose", bwd.verbose, "Print where the time goes (reading each file, computing, writing) on stderr");
  backward->footer(variant_files_help() + "  upstream gradients: do.npy [B,T,HV,V], dht.npy [N,HV,K,V]\n");

  CheckArgs chk;
  auto* check = app.add_subcommand(
      "check", "Compare someone's outputs and gradients with the float64 reference; exit 1 if any tensor fails, is "
               "missing or cannot be produced by the reference");
  add_layer_options(*check, chk.layer, true, false);
  check->add_option("--candidate", chk.candidate_dir,
                    "Directory of the tensors to judge (o, ht, and with do.npy or dht.npy in --in the gradients dq, dk, "
                    "dv, dh0 and the variant's dg, db, dw or dbeta .npy). Every tensor the reference produces for these "
                    "inputs is expected: a missing one fails. Other files are listed as ignored")
      ->required();
  check->add_option("--only", chk.only, "Compare only these tensors, e.g. --only o,ht,db (a missing one still fails)")
      ->delimiter(',');
  check->add_option("--tolerance", chk.tolerance,
                    "Bound on ratio = |x - ref| / |ref|: auto (by the candidate's dtype: float64 1e-10; float32 1e-5 for "
                    "o/ht and 1e-4 for gradients), f64, f32, bf16 (5e-3 outputs, 1e-2 dq/dk/dv/dh0, 2e-2 gate "
                    "gradients), or a number")
      ->capture_default_str();
  check->add_flag("--json", chk.json, "Print one JSON object instead of the table (errors too: {\"error\": ...})");
  check->add_flag("--verbose", chk.verbose, "Print where the time goes (reading each file, the reference) on stderr");
  check->footer(
      "Each tensor is judged twice, both against its bound: ratio = |x - ref| / |ref| over the whole tensor, and the\n"
      "same ratio per block of one (sequence, chunk of C tokens, head) -- per (sequence, head) for ht and dh0 -- with\n"
      "|ref_block| floored at |ref_head| sqrt(block size / head size), ref_head = that head's reference over every\n"
      "sequence and chunk. Non-finite values fail and are counted.\n" +
      variant_files_help());

  GradcheckArgs gc;
  auto* gradcheck = app.add_subcommand(
      "gradcheck", "Check the reference's own backward with finite differences and complex-step derivatives");
  add_layer_options(*gradcheck, gc.layer, false, false, false);
  gradcheck->add_option("--directions", gc.directions, "Random directions per tensor (plus single boundary elements)")
      ->capture_default_str()
      ->check(integer_in(1, 1000));
  gradcheck->add_option("--seed", gc.seed, "Seed of the random inputs and directions")
      ->capture_default_str()
      ->check(seed_in(0xFFFFFFFFu));
  gradcheck->add_flag("--value-head-gates", gc.value_head_gates,
                      "Random inputs with g and b drawn per value head, [B,T,HV,K] (distinct within each group)");
  gradcheck->footer("Both forms are checked. Without --in: random inputs B=2 T=70 H=2 HV=4 K=8 V=6 with an initial state "
                    "(value heads 0-1 share key head 0, 2-3 key head 1) and gdn2's gates; --variant, --l2norm-qk, "
                    "--gate-logits, --negative-eigen and --decay describe the files of --in and need it.\n" +
                    variant_files_help());

  DemoArgs demo;
  auto* demo_cmd = app.add_subcommand("demo", "Show the layer on a built-in example: chunk form = recurrence, tied-gate "
                                              "reductions, exactness under extreme decay, erase vs write");
  demo_cmd->add_option("--seed", demo.seed, "Random seed of the built-in example")->capture_default_str()->check(seed_in(0xFFFFFFFFu));

  BenchArgs bench;
  auto* bench_cmd = app.add_subcommand("bench", "Time both forms of the reference (token-heads per second)");
  bench_cmd->add_option("--T", bench.T, "Tokens per sequence")->capture_default_str()->check(integer_in(1, 1 << 24));
  bench_cmd->add_option("--heads", bench.H, "Heads (B = 1, HV = H)")->capture_default_str()->check(integer_in(1, 1024));
  bench_cmd->add_option("--dims", bench.dims, "Head dimensions K = V to time")->capture_default_str()->delimiter(',')->check(integer_in(1, 4096));
  bench_cmd->add_option("--threads", bench.threads, "Threads (0 = all cores)")->capture_default_str()->check(integer_in(0, 4096));
  bench_cmd->add_option("--repeats", bench.repeats, "Timed runs per case; the median is reported")
      ->capture_default_str()
      ->check(integer_in(1, 10000));
  bench_cmd->add_flag("--json", bench.json, "Print one JSON object per case instead of a table");

  TaskCmdArgs task;
  auto* task_cmd = app.add_subcommand("task", "Print examples of a synthetic recall task (deterministic by seed)");
  add_task_options(*task_cmd, task.task);
  task_cmd->add_option("--seed", task.seed, "Seed of the examples (0 .. 2^64 - 1)")->capture_default_str()->check(seed_in(UINT64_MAX));
  task_cmd->add_option("--count", task.count, "Examples to print")->capture_default_str()->check(integer_in(1, 100000));
  task_cmd->add_flag("--json", task.json, "One JSON object per example (tokens, targets, roles, source)");
  task_cmd->footer(
      "Tasks (token-level analogues, not the benchmarks themselves):\n"
      "  mqar       Zoology's multi-query associative recall: k1 v1 ... kP vP, then the keys again at power-law gaps\n"
      "  overwrite  some keys are bound again to a new value; the query must return the newest one (needs erasing)\n"
      "  mk-niah    P key-value needles in a haystack of filler words; the last tokens ask for some of them\n"
      "  s-niah     one needle in the haystack\n"
      "The answer is predicted at the query position; loss and accuracy count only those positions.");

  TrainArgs train;
  auto* train_cmd = app.add_subcommand("train", "Train the tiny GDN-2 model on a recall task with the reference's backward");
  add_task_options(*train_cmd, train.task);
  add_model_options(*train_cmd, train.model);
  train_cmd->add_option("--steps", train.train.steps, "Optimiser steps")->capture_default_str()->check(integer_in(1, 10000000));
  train_cmd->add_option("--batch", train.train.batch, "Sequences per step")->capture_default_str()->check(integer_in(1, 100000));
  train_cmd->add_option("--lr", train.train.lr, "Peak learning rate (AdamW; warm-up then cosine to 10%)")
      ->capture_default_str()
      ->check(finite_in(0, 1e6, true));
  train_cmd->add_option("--warmup", train.train.warmup, "Warm-up steps")->capture_default_str()->check(integer_in(0, 10000000));
  train_cmd->add_option("--weight-decay", train.train.weight_decay, "Decoupled weight decay of the matrices")
      ->capture_default_str()
      ->check(finite_in(0, 1e6));
  train_cmd->add_option("--seed", train.train.seed, "Seed of the initialisation and of the training stream (0 .. 2^64 - 1)")
      ->capture_default_str()
      ->check(seed_in(UINT64_MAX));
  train_cmd->add_option("--eval-every", train.train.eval_every, "Held-out evaluation period in steps (0: never)")
      ->capture_default_str()
      ->check(integer_in(0, 10000000));
  train_cmd->add_option("--eval-examples", train.train.eval_examples, "Held-out sequences per periodic evaluation")
      ->capture_default_str()
      ->check(integer_in(1, 1000000));
  train_cmd->add_option("--final-examples", train.final_examples, "Held-out sequences of the final evaluation stored with the checkpoint")
      ->capture_default_str()
      ->check(integer_in(1, 1000000));
  train_cmd->add_option("--out", train.out_dir, "Checkpoint directory (config.json + one float32 .npy per parameter), "
                                                "written as a whole at the end; checked before training")
      ->required();
  train_cmd->footer(
      "The defaults are the mqar-tiny preset (about two minutes on two cores). Output: one JSON line per evaluation on\n"
      "stdout; a progress bar on stderr when it is a terminal. Bit-for-bit deterministic for a seed.");

  EvalArgs eval;
  auto* eval_cmd = app.add_subcommand("eval", "Held-out accuracy of a checkpoint, overall and by query distance");
  eval_cmd->add_option("--checkpoint", eval.checkpoint, "Checkpoint directory written by gdn2 train")->required();
  eval_cmd->add_option("--examples", eval.examples, "Held-out sequences")->capture_default_str()->check(integer_in(1, 1000000));
  eval_cmd->add_option("--seed", eval.seed, "Seed of the held-out sequences (default: the checkpoint's own held-out stream)")
      ->check(seed_in(INT64_MAX));  // digits parsed exactly: 2^53 + 1 is not rounded to 2^53 on the way
  eval_cmd->add_option("--task", eval.task, "Evaluate on another task of the same vocabulary and length (mqar, overwrite, mk-niah, s-niah)");
  eval_cmd->add_flag("--json", eval.json, "Print one JSON object (accuracy, answers, loss, by_distance)");

  TraceArgs trace;
  auto* trace_cmd = app.add_subcommand(
      "trace", "Save every step of Eq. 9 (S_t, b_t, w_t, alpha_t, r_t, z_t - r_t, o_t) on one sequence for the viewer and notebooks");
  trace_cmd->add_option("--out", trace.out_dir, "Trace directory (trace.json + .npy arrays)")->required();
  trace_cmd->add_option("--scenario", trace.scenario, "A scripted gate scenario (list below)");
  trace_cmd->add_option("--variant", trace.variant, "Scenario gates tied as gdn2, kda, gdn, deltanet or linear")->capture_default_str();
  trace_cmd->add_option("--K", trace.K, "Scenario key channels")->capture_default_str()->check(integer_in(1, 1024));
  trace_cmd->add_option("--V", trace.V, "Scenario value channels")->capture_default_str()->check(integer_in(1, 1024));
  trace_cmd->add_option("--checkpoint", trace.checkpoint, "Trace a trained model on a held-out example instead");
  trace_cmd->add_option("--example", trace.example, "Which held-out example (generated alone)")
      ->capture_default_str()
      ->check(integer_in(0, 2147483647));
  trace_cmd->add_option("--block", trace.block, "Which block's mixer")->capture_default_str()->check(integer_in(0, 1024));
  trace_cmd->add_option("--head", trace.head, "Which head")->capture_default_str()->check(integer_in(0, 1024));
  trace_cmd->add_option("--random", trace.random_T, "Trace random inputs of this many tokens (K x V from --K, --V) instead")
      ->check(integer_in(1, 1000000));
  trace_cmd->footer("Scenarios:\n" + gdn2::tasks::scenario_help());

  ExportArgs exp;
  auto* export_cmd = app.add_subcommand(
      "export", "Regenerate the data the notebooks read: scenario and model traces, a layer in both forms, a gradient-check set");
  export_cmd->add_option("--out", exp.out_dir, "notebooks_data directory (checkpoints are read from its checkpoints/)")
      ->capture_default_str();
  export_cmd->footer("Deterministic: running it twice gives identical files. The capacity sweep (tools/sweep.sh) and the "
                     "CUDA benchmark JSON (docs/cuda.md) come from their own long runs and are kept.");

  // `gdn2 check --json`: every outcome is one JSON object on stdout, errors included (the exit status is unchanged).
  bool check_json = false;
  for (int i = 1, in_check = 0; i < argc; ++i) {
    in_check |= std::strcmp(argv[i], "check") == 0;
    check_json |= in_check && std::strcmp(argv[i], "--json") == 0;
  }
  auto fail = [&](const std::string& message, int code) {
    std::fprintf(stderr, "gdn2: error: %s\n", message.c_str());
    if (check_json) std::fputs(gdn2::check::error_json(message, code).c_str(), stdout);
    return code;
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (check_json && e.get_exit_code() != 0) {
      std::fputs(gdn2::check::error_json(e.what(), kBadInput).c_str(), stdout);
    }
    const int code = app.exit(e);
    return code == 0 ? kOk : kBadInput;
  }
  try {
    // An option given where it has no effect is refused first, before anything is read or written.
    if (*forward) {
      refuse_layer_options_without_effect(*forward, fwd.layer);
      return run_forward(fwd);
    }
    if (*backward) {
      refuse_layer_options_without_effect(*backward, bwd.layer);
      return run_backward(bwd);
    }
    if (*check) {
      refuse_layer_options_without_effect(*check, chk.layer);
      return run_check(chk);
    }
    if (*gradcheck) {
      refuse_layer_options_without_effect(*gradcheck, gc.layer);
      for (const char* option : {"--variant", "--l2norm-qk", "--gate-logits", "--negative-eigen", "--decay"})
        refuse_unless(*gradcheck, option, !gc.layer.in_dir.empty(),
                      "has no effect without --in (it describes the files of --in; the random inputs are gdn2's, "
                      "drawn in the layer's ranges); give --in DIR, or leave " + std::string(option) + " out");
      return run_gradcheck(gc);
    }
    if (*demo_cmd) return run_demo(demo);
    if (*bench_cmd) return run_bench(bench);
    if (*task_cmd) {
      refuse_task_options_without_effect(*task_cmd, task.task);
      return run_task(task);
    }
    if (*train_cmd) {
      refuse_task_options_without_effect(*train_cmd, train.task);
      refuse_unless(*train_cmd, "--eval-examples", train.train.eval_every > 0,
                    "has no effect with --eval-every 0 (no periodic evaluation; the final one takes "
                    "--final-examples); give --eval-every N, or leave --eval-examples out");
      return run_train(train);
    }
    if (*eval_cmd) return run_eval(eval);
    if (*trace_cmd) {
      refuse_trace_options_without_effect(*trace_cmd, trace);
      return run_trace(trace);
    }
    if (*export_cmd) return run_export(exp);
  } catch (const gdn2::InputError& e) {
    return fail(e.what(), kBadInput);
  } catch (const gdn2::check::ReferenceOverflow& e) {
    return fail(e.what(), kOverflow);
  } catch (const gdn2::io::WriteError& e) {
    return fail(e.what(), kWriteFailed);
  } catch (const std::bad_alloc&) {
    return fail("out of memory (the inputs, their working copies and, in the chunk form, a C x C matrix per chunk and "
                "head must fit; a smaller --chunk-size or fewer --threads need less)", kBadInput);
  } catch (const std::exception& e) {
    return fail(e.what(), kBadInput);
  }
  return kOk;
}

}  // namespace

// Every command's report, table or JSON goes to stdout, which is buffered: a write that failed (a full disk,
// `> /dev/full`, a closed pipe) only shows at the flush. A report that did not reach its reader is the write failure
// of exit status 4, with the system's reason, whatever the command would have returned (a more specific error, 2 or
// 3, stays).
int main(int argc, char** argv) {
  int code = run_command(argc, argv);
  errno = 0;
  const bool flushed = std::fflush(stdout) == 0;
  const int err = errno;
  if (!flushed || std::ferror(stdout)) {
    std::fprintf(stderr, "gdn2: error: cannot write to stdout: %s\n",
                 err ? std::strerror(err) : "a write failed (the system's reason was not kept)");
    if (code == gdn2::tools::kOk || code == gdn2::tools::kCheckFailed) code = gdn2::tools::kWriteFailed;
  }
  return code;
}
