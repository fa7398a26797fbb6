// gdn2 command line — one function per subcommand; main.cpp wires them into CLI11.
#pragma once

#include <CLI/CLI.hpp>

#include <chrono>

#include "tools/inputs.hpp"

namespace gdn2::tools {

// Exit statuses: 0 success, 1 a check failed, 2 bad input, 3 the result overflowed the
// working precision (float32: rerun with --precision f64; for check: the float64 reference itself), 4 the outputs
// could not be written (disk full, permissions, a rename that failed, another writer holding --out).
enum Exit { kOk = 0, kCheckFailed = 1, kBadInput = 2, kOverflow = 3, kWriteFailed = 4 };

// --verbose: where the time of reading went, one line per file and a total, on stderr.
void print_read_times(const io::ReadTimes& times);

// Wall time since construction or the previous lap, in seconds (--verbose).
struct Stopwatch {
  std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now();
  double lap() {
    const auto now = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(now - t).count();
    t = now;
    return s;
  }
};

// Adds --in, --form, --precision, --chunk-size, --scale, --variant, --l2norm-qk and the gate front-end.
// in_required: --in must be given; with_precision: offer --precision (check and gradcheck always use float64);
// with_form: offer --form (gradcheck checks both forms).
void add_layer_options(CLI::App& cmd, LayerOptions& opt, bool in_required = true, bool with_precision = true,
                       bool with_form = true);

// An option that only acts together with another one (or one value of it) is refused when given without it, rather
// than ignored: the run would look as if it had used it. Throws InputError "OPTION: WHY" (exit 2) when `option` was
// given on `cmd`'s command line and `acts` is false.
void refuse_unless(const CLI::App& cmd, const std::string& option, bool acts, const std::string& why);

// add_layer_options' options that act only with another: --lower-bound (--decay bounded), --gate-logits (a variant
// with gates) and --negative-eigen (--variant gdn2). --chunk-size with --form recurrent is not one of them: said in
// its --help, it is accepted so that one command line serves both forms (and check's blocks are C tokens in both).
void refuse_layer_options_without_effect(const CLI::App& cmd, const LayerOptions& opt);

struct ForwardArgs {
  LayerOptions layer;
  std::string out_dir;
  bool verbose = false;
};
int run_forward(const ForwardArgs& args);

struct BackwardArgs {
  LayerOptions layer;
  std::string out_dir;
  bool verbose = false;
};
int run_backward(const BackwardArgs& args);

struct CheckArgs {
  LayerOptions layer;
  std::string candidate_dir;
  std::string tolerance = "auto";
  std::vector<std::string> only;  // empty: every tensor the reference produces is expected
  bool json = false;
  bool verbose = false;
};
int run_check(const CheckArgs& args);

struct GradcheckArgs {
  LayerOptions layer;  // in_dir may be empty: random inputs
  int directions = 3;
  unsigned seed = 0;
  bool value_head_gates = false;  // random inputs only: g, b drawn per value head [B,T,HV,K]
};
int run_gradcheck(const GradcheckArgs& args);

struct DemoArgs {
  unsigned seed = 0;
};
int run_demo(const DemoArgs& args);

struct BenchArgs {
  index_t T = 4096, H = 2;
  std::vector<index_t> dims = {64, 128};
  int threads = 1;
  int repeats = 1;
  bool json = false;
};
int run_bench(const BenchArgs& args);

}  // namespace gdn2::tools
