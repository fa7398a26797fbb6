// gdn2 forward — run the layer on a directory of .npy tensors.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "io/npy.hpp"
#include "tools/commands.hpp"
#include "tools/validators.hpp"

namespace gdn2::tools {

void add_layer_options(CLI::App& cmd, LayerOptions& opt, bool in_required, bool with_precision, bool with_form) {
  cmd.add_option("--in", opt.in_dir, "Input directory of .npy tensors (see the list below)")->required(in_required);
  if (with_form)
    cmd.add_option("--form", opt.form, "recurrent: token by token (Eq. 9, REF); chunk: chunkwise WY form (Eq. 18-25)")
        ->capture_default_str()
        ->check(CLI::IsMember({"recurrent", "chunk"}));
  if (with_precision)
    cmd.add_option("--precision", opt.precision, "Working precision of the computation and of the outputs: f64 or f32")
        ->capture_default_str()
        ->check(CLI::IsMember({"f64", "f32"}));
  cmd.add_option("--chunk-size", opt.chunk_size, "Chunk size C of the chunk form (any C >= 1 gives the same result; the work per token grows with C, "
                 "and C = 64 is about the fastest). --form recurrent computes without it (accepted, so that one command "
                 "line serves both forms); check's local blocks are C tokens in either form")
      ->capture_default_str()
      ->check(integer_in(1, 1 << 20));
  cmd.add_option("--scale", opt.scale, "Query scale in o_t = S_t^T (scale q_t) [default: K^-0.5]")
      ->check(finite_in(-INFINITY, INFINITY, true, true));
  cmd.add_option("--variant", opt.variant,
                 "Tied gates: gdn2 (channel-wise erase b and write w), kda (b = w = beta*1), gdn (kda with one "
                 "decay per head), deltanet (gdn with g = 0), linear (no erase, w = 1)")
      ->capture_default_str()
      ->check(CLI::IsMember({"gdn2", "kda", "gdn", "deltanet", "linear"}));
  cmd.add_flag("--l2norm-qk", opt.l2norm_qk, "L2-normalise q and k per head first: x / sqrt(sum x^2 + 1e-6)");
  cmd.add_flag("--gate-logits", opt.gate_logits,
               "b, w (or beta) hold logits: apply the sigmoid of Eq. 11 first (not with --variant linear: no gates)");
  cmd.add_flag("--negative-eigen", opt.negative_eigen,
               "Allow b in [0, 2] (with --gate-logits: b = 2 sigmoid); --variant gdn2 only (the tied variants' b = w "
               "= beta must lie in [0, 1], and linear has no b)");
  cmd.add_option("--decay", opt.decay,
                 "g.npy holds logits: softplus gives g = -exp(A_log) softplus(x + dt_bias) (Eq. 12); bounded gives "
                 "g = lower_bound sigmoid(x + dt_bias)")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "softplus", "bounded"}));
  cmd.add_option("--lower-bound", opt.lower_bound, "Lower bound of g for --decay bounded (only with it)")
      ->capture_default_str()
      ->check(finite_in(-1e6, 0, false, true));
  cmd.add_option("--threads", opt.threads, "Threads over (sequence, value head) pairs; 0 = all cores (results do not "
                                           "depend on it)")
      ->capture_default_str()
      ->check(integer_in(0, 4096));
}

void refuse_unless(const CLI::App& cmd, const std::string& option, bool acts, const std::string& why) {
  if (!acts && cmd.count(option) > 0) throw InputError(option + ": " + why);
}

void refuse_layer_options_without_effect(const CLI::App& cmd, const LayerOptions& opt) {
  auto flag = [](std::string field) {  // lower_bound -> --lower-bound
    std::replace(field.begin(), field.end(), '_', '-');
    return "--" + field;
  };
  const auto refusal = layer_option_without_effect(
      opt, [&](const std::string& field) { return cmd.count(flag(field)) > 0; },
      [&](const std::string& field, const std::string& value) { return flag(field) + (value.empty() ? "" : " " + value); });
  if (refusal) throw InputError(refusal->option + ": " + refusal->why);
}

void print_read_times(const io::ReadTimes& times) {
  double total = 0;
  size_t bytes = 0;
  for (const auto& f : times.files) {
    std::fprintf(stderr, "gdn2: read %-16s %10.1f MB %8.3f s  %8.0f MB/s\n", f.name.c_str(), f.bytes / 1e6, f.seconds,
                 f.seconds > 0 ? f.bytes / 1e6 / f.seconds : 0.0);
    total += f.seconds;
    bytes += f.bytes;
  }
  std::fprintf(stderr, "gdn2: read %zu file(s), %.1f MB in %.3f s\n", times.files.size(), bytes / 1e6, total);
}

namespace {

// Index of the first non-finite element, or -1.
template <typename Scalar>
index_t first_non_finite(const Tensor<Scalar>& x) {
  for (index_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(x.data[i])) return i;
  return -1;
}

template <typename Scalar>
int forward_in(const ForwardArgs& args) {
  io::check_output_dir(args.out_dir, "--out", args.layer.in_dir);
  io::check_output_writable(args.out_dir);  // a read-only place is found now, not after the computation (exit 4)
  io::ReadTimes times;
  const LayerInputs<Scalar> in = load_layer_inputs<Scalar>(
      args.layer, read_input_dir(args.layer.in_dir, input_names_read(args.layer, false), "gdn2 forward", &times));
  if (args.verbose) print_read_times(times);
  Stopwatch sw;
  Tensor<Scalar> o, ht;
  forward(parse_form(args.layer.form), o, ht, in.layer, forward_options(args.layer));
  if (args.verbose) std::fprintf(stderr, "gdn2: forward (%s form): %.3f s\n", args.layer.form.c_str(), sw.lap());
  for (const auto& [name, x] : {std::pair<const char*, const Tensor<Scalar>*>{"o", &o}, {"ht", &ht}}) {
    if (const index_t i = first_non_finite(*x); i >= 0) {
      // Only a float32 run has a wider precision to retry in; in float64 these inputs have no finite output.
      std::fprintf(stderr,
                   "gdn2: error: %s: non-finite value at %s: the state overflowed %s (the update is not normal, so "
                   "the state can grow even with g <= 0, b <= 1); nothing was written. %s\n",
                   name, index_str(x->shape, i).c_str(), sizeof(Scalar) == 4 ? "float32" : "float64",
                   sizeof(Scalar) == 4 ? "Rerun with --precision f64."
                                       : "float64 is the widest precision: these inputs have no finite output.");
      return kOverflow;
    }
  }
  io::write_files_atomically(args.out_dir, {{"o.npy", io::encode_npy(o)}, {"ht.npy", io::encode_npy(ht)}});
  if (args.verbose) std::fprintf(stderr, "gdn2: writing %s: %.3f s\n", args.out_dir.c_str(), sw.lap());
  return kOk;
}

}  // namespace

int run_forward(const ForwardArgs& args) {
  return args.layer.precision == "f32" ? forward_in<float>(args) : forward_in<double>(args);
}

}  // namespace gdn2::tools
