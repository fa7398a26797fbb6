// gdn2 backward / check / gradcheck — gradients of the layer, and judging someone else's tensors against them.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/gradcheck.hpp"
#include "io/npy.hpp"
#include "tools/commands.hpp"

namespace gdn2::tools {

namespace fs = std::filesystem;

namespace {

// The upstream gradients do.npy and dht.npy among the arrays read; an absent one is an empty tensor (= zero).
template <typename Scalar>
std::pair<Tensor<Scalar>, Tensor<Scalar>> load_upstream(const io::NamedArrays& arrays) {
  auto load = [&](const char* name) {
    const auto it = arrays.find(name);
    if (it == arrays.end()) return Tensor<Scalar>{};
    return io::to_tensor<Scalar>(it->second, std::string(name) + ".npy");
  };
  return {load("do"), load("dht")};
}

template <typename Scalar>
int backward_in(const BackwardArgs& args) {
  io::check_output_dir(args.out_dir, "--out", args.layer.in_dir);
  io::check_output_writable(args.out_dir);  // a read-only place is found now, not after the computation (exit 4)
  io::ReadTimes times;
  const io::NamedArrays arrays =
      read_input_dir(args.layer.in_dir, input_names_read(args.layer, true), "gdn2 backward", &times);
  const LayerInputs<Scalar> in = load_layer_inputs<Scalar>(args.layer, arrays);
  const auto [do_, dht] = load_upstream<Scalar>(arrays);
  if (args.verbose) print_read_times(times);
  Stopwatch sw;
  if (do_.empty() && dht.empty())
    std::fprintf(stderr, "gdn2: warning: neither do.npy nor dht.npy in %s: every gradient is zero\n",
                 args.layer.in_dir.c_str());
  Gradients<Scalar> grad = backward(parse_form(args.layer.form), in.layer, do_, dht, forward_options(args.layer));
  if (args.verbose) std::fprintf(stderr, "gdn2: backward (%s form): %.3f s\n", args.layer.form.c_str(), sw.lap());
  std::vector<std::pair<std::string, std::string>> files;
  for (auto& [name, t] : file_gradients(args.layer, in, std::move(grad))) {
    for (index_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(t.data[i])) {
        std::fprintf(stderr, "gdn2: error: %s: non-finite value at %s: %s; nothing was written. %s\n", name.c_str(),
                     index_str(t.shape, i).c_str(), sizeof(Scalar) == 4 ? "float32 overflowed" : "float64 overflowed",
                     sizeof(Scalar) == 4 ? "Rerun with --precision f64."
                                         : "float64 is the widest precision: these inputs have no finite gradient.");
        return kOverflow;
      }
    files.emplace_back(name + ".npy", io::encode_npy(t));
  }
  io::write_files_atomically(args.out_dir, files);
  if (args.verbose) std::fprintf(stderr, "gdn2: writing %s: %.3f s\n", args.out_dir.c_str(), sw.lap());
  return kOk;
}

}  // namespace

int run_backward(const BackwardArgs& args) {
  return args.layer.precision == "f32" ? backward_in<float>(args) : backward_in<double>(args);
}

// ---------------------------------------------------------------------------------------------------------------
// gdn2 gradcheck

int run_gradcheck(const GradcheckArgs& args) {
  Rng rng(args.seed);
  Layer<double> x;
  Tensor<double> do_, dht;
  ForwardOptions fopt;
  if (!args.layer.in_dir.empty() && args.value_head_gates)
    throw InputError("--value-head-gates: only for the random inputs (without --in); with --in, g.npy and b.npy "
                     "choose their layout by their shape");
  if (!args.layer.in_dir.empty()) {
    LayerOptions layer = args.layer;
    layer.precision = "f64";
    const io::NamedArrays arrays = read_input_dir(layer.in_dir, input_names_read(layer, true), "gdn2 gradcheck");
    x = load_layer_inputs<double>(layer, arrays).layer;
    std::tie(do_, dht) = load_upstream<double>(arrays);
    fopt = forward_options(layer);
  } else {
    x = random_layer<double>(rng, 2, 70, 2, 4, 8, 6, [](Rng& r) { return r.uniform(-0.5, 0); }, true);
    if (args.value_head_gates) random_value_head_gates(rng, x, [](Rng& r) { return r.uniform(-0.5, 0); });
    fopt = forward_options(args.layer);  // --chunk-size, --scale, --threads act on random inputs too
  }
  const Dims d = validate_inputs(x.q, x.k, x.v, x.g, x.b, x.w, x.h0, x.cu_seqlens, fopt);
  if (do_.empty()) {  // random upstream gradients where none were given
    do_ = Tensor<double>({d.B, d.T, d.HV, d.V});
    for (auto& e : do_.data) e = rng.normal();
  }
  if (dht.empty()) {
    dht = Tensor<double>({d.N, d.HV, d.K, d.V});
    for (auto& e : dht.data) e = rng.normal();
  }
  const index_t C = fopt.chunk_size;
  const std::vector<index_t> tokens = {0, 15, 16, C - 1, C, d.T - 1};
  std::printf("gdn2 gradcheck: B=%ld T=%ld H=%ld HV=%ld K=%ld V=%ld, g per %s head, b per %s head, C=%ld, %d random "
              "directions + elements at t in {0, 15, 16, C-1, C, T-1}\n",
              long(d.B), long(d.T), long(d.H), long(d.HV), long(d.K), long(d.V), d.HG == d.H ? "key" : "value",
              d.HB == d.H ? "key" : "value", long(C), args.directions);
  std::printf("%-10s %-7s %-6s %-22s %-22s %s\n", "form", "tensor", "dirs", "finite diff (<=1e-6)",
              "complex step (<=1e-12)", "verdict");
  bool all = true;
  for (Form form : {Form::recurrent, Form::chunk})
    for (const auto& r : gradient_oracles(form, x, do_, dht, fopt, rng, args.directions, tokens)) {
      const bool ok = r.finite_difference <= 1e-6 && r.complex_step <= 1e-12;
      all = all && ok;
      std::printf("%-10s d%-6s %-6d %-22.2e %-22.2e %s\n", form == Form::chunk ? "chunk" : "recurrent", r.tensor.c_str(),
                  r.directions, r.finite_difference, r.complex_step, ok ? "ok" : "FAIL");
    }
  const auto rec = backward(Form::recurrent, x, do_, dht, fopt), chk = backward(Form::chunk, x, do_, dht, fopt);
  std::printf("chunk backward vs recurrent backward (<=1e-10):");
  for (int j = 0; j < 7; ++j) {
    const double rr = ratio(gradient_tensor(chk, j), gradient_tensor(rec, j));
    all = all && rr <= 1e-10;
    std::printf(" d%s %.1e", kLayerTensorNames[j], rr);
  }
  std::printf("\n%s\n", all ? "PASSED" : "FAILED");
  return all ? kOk : kCheckFailed;
}

}  // namespace gdn2::tools
