// gdn2 — the command line of the Gated DeltaNet-2 reference. Thin: parses, validates, calls the library.
#include <cstdio>
#include <new>

#include "tools/commands.hpp"

int main(int argc, char** argv) {
  using namespace gdn2::tools;
  CLI::App app{
      "gdn2 — float64 reference of Gated DeltaNet-2 (Hatamizadeh, Choi, Kautz 2026)\n"
      "  S_t = (I - k_t (b_t*k_t)^T) Diag(exp g_t) S_{t-1} + k_t (w_t*v_t)^T,   o_t = S_t^T (scale q_t)\n"
      "Exit status: 0 success, 1 check failed, 2 bad input, 3 float32 overflow.",
      "gdn2"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Print help for every command");

  ForwardArgs fwd;
  auto* forward = app.add_subcommand("forward", "Run the layer on a directory of .npy tensors; write o.npy and ht.npy");
  add_layer_options(*forward, fwd.layer);
  forward->add_option("--out", fwd.out_dir, "Output directory (created if missing); o.npy [B,T,HV,V], ht.npy [N,HV,K,V]")
      ->required();
  forward->footer(variant_files_help());

  DemoArgs demo;
  auto* demo_cmd = app.add_subcommand("demo", "Show the layer on a built-in example: chunk form = recurrence, tied-gate "
                                              "reductions, exactness under extreme decay, erase vs write");
  demo_cmd->add_option("--seed", demo.seed, "Random seed of the built-in example")->capture_default_str();

  BenchArgs bench;
  auto* bench_cmd = app.add_subcommand("bench", "Time both forms of the reference (token-heads per second)");
  bench_cmd->add_option("--T", bench.T, "Tokens per sequence")->capture_default_str()->check(CLI::PositiveNumber);
  bench_cmd->add_option("--heads", bench.H, "Heads (B = 1, HV = H)")->capture_default_str()->check(CLI::PositiveNumber);
  bench_cmd->add_option("--dims", bench.dims, "Head dimensions K = V to time")->capture_default_str()->delimiter(',');
  bench_cmd->add_option("--threads", bench.threads, "Threads (0 = all cores)")->capture_default_str();
  bench_cmd->add_option("--repeats", bench.repeats, "Timed runs per case; the median is reported")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  bench_cmd->add_flag("--json", bench.json, "Print one JSON object per case instead of a table");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? kOk : kBadInput;
  }
  try {
    if (*forward) return run_forward(fwd);
    if (*demo_cmd) return run_demo(demo);
    if (*bench_cmd) return run_bench(bench);
  } catch (const gdn2::InputError& e) {
    std::fprintf(stderr, "gdn2: error: %s\n", e.what());
    return kBadInput;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "gdn2: error: out of memory\n");
    return kBadInput;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gdn2: error: %s\n", e.what());
    return kBadInput;
  }
  return kOk;
}
