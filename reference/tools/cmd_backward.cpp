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

// Reads do.npy and dht.npy from the input directory; an absent file is an empty tensor (= zero).
template <typename Scalar>
std::pair<Tensor<Scalar>, Tensor<Scalar>> load_upstream(const std::string& dir) {
  auto load = [&](const char* name) {
    const fs::path p = fs::path(dir) / (std::string(name) + ".npy");
    if (!fs::exists(p)) return Tensor<Scalar>{};
    return io::to_tensor<Scalar>(io::read_npy(p.string(), std::string(name) + ".npy"), std::string(name) + ".npy");
  };
  return {load("do"), load("dht")};
}

template <typename Scalar>
int backward_in(const BackwardArgs& args) {
  const LayerInputs<Scalar> in = load_layer_inputs<Scalar>(args.layer);
  const auto [do_, dht] = load_upstream<Scalar>(args.layer.in_dir);
  if (do_.empty() && dht.empty())
    std::fprintf(stderr, "gdn2: warning: neither do.npy nor dht.npy in %s: every gradient is zero\n",
                 args.layer.in_dir.c_str());
  Gradients<Scalar> grad = backward(parse_form(args.layer.form), in.layer, do_, dht, forward_options(args.layer));
  std::vector<std::pair<std::string, std::string>> files;
  for (auto& [name, t] : file_gradients(args.layer, in, std::move(grad))) {
    for (index_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(t.data[i])) {
        std::fprintf(stderr, "gdn2: error: %s: non-finite value at %s: float32 overflowed; nothing was written. Rerun "
                             "with --precision f64.\n", name.c_str(), index_str(t.shape, i).c_str());
        return kOverflow;
      }
    files.emplace_back(name + ".npy", io::encode_npy(t));
  }
  io::write_files_atomically(args.out_dir, files);
  return kOk;
}

}  // namespace

int run_backward(const BackwardArgs& args) {
  return args.layer.precision == "f32" ? backward_in<float>(args) : backward_in<double>(args);
}

// ---------------------------------------------------------------------------------------------------------------
// gdn2 check

namespace {

struct Verdict {
  std::string name, dtype, worst_index, note;
  double ratio = 0, max_abs = 0, bound = 0;
  bool passed = false;
};

bool is_output(const std::string& name) { return name == "o" || name == "ht"; }

// The tolerance for one tensor (see --help of check).
double tolerance_for(const std::string& spec, const std::string& name, const std::string& dtype) {
  const bool output = is_output(name);
  if (spec == "auto") return dtype == "f8" ? 1e-10 : (output ? 1e-5 : 1e-4);
  if (spec == "f64") return 1e-10;
  if (spec == "f32") return output ? 1e-5 : 1e-4;
  if (spec == "bf16") {  // NUMERICS.md 19: bf16 storage, fp32 accumulation
    if (output) return 5e-3;
    if (name == "dq" || name == "dk" || name == "dv" || name == "dh0") return 1e-2;
    return 2e-2;
  }
  try {
    size_t used = 0;
    const double x = std::stod(spec, &used);
    if (used == spec.size() && x > 0) return x;
  } catch (const std::exception&) {
  }
  throw InputError("--tolerance: expected auto, f64, f32, bf16 or a positive number, got '" + spec + "'");
}

Verdict compare(const std::string& name, const io::NpyArray& cand, const Tensor<double>& ref, const std::string& spec) {
  Verdict v{name, cand.dtype};
  v.bound = tolerance_for(spec, name, cand.dtype);
  if (cand.shape != ref.shape) {
    v.note = "shape " + shape_str(cand.shape) + ", reference " + shape_str(ref.shape);
    v.ratio = v.max_abs = INFINITY;
    return v;
  }
  const Tensor<double> x = io::to_tensor<double>(cand, name + ".npy");
  index_t worst = 0;
  for (index_t i = 0; i < x.numel(); ++i) {
    const double e = std::abs(x.data[i] - ref.data[i]);
    if (!(e <= v.max_abs)) v.max_abs = e, worst = i;  // NaN counts as the worst
  }
  v.ratio = ratio(x, ref);
  v.worst_index = x.numel() ? index_str(x.shape, worst) : "-";
  v.passed = v.ratio <= v.bound;
  return v;
}

}  // namespace

int run_check(const CheckArgs& args) {
  LayerOptions layer = args.layer;
  layer.precision = "f64";  // the reference is always float64
  const LayerInputs<double> in = load_layer_inputs<double>(layer);
  const auto [do_, dht] = load_upstream<double>(layer.in_dir);
  if (!fs::is_directory(args.candidate_dir)) throw InputError("--candidate: " + args.candidate_dir + " is not a directory");
  const Form form = parse_form(layer.form);
  const ForwardOptions fopt = forward_options(layer);

  std::vector<std::pair<std::string, Tensor<double>>> refs;
  Tensor<double> o, ht;
  forward(form, o, ht, in.layer, fopt);
  refs.emplace_back("o", o);
  refs.emplace_back("ht", ht);
  bool wants_gradients = false;
  for (const auto& entry : fs::directory_iterator(args.candidate_dir)) {
    const std::string f = entry.path().filename().string();
    if (f.size() > 5 && f[0] == 'd' && f.substr(f.size() - 4) == ".npy" && f != "do.npy" && f != "dht.npy")
      wants_gradients = true;
  }
  if (wants_gradients) {
    if (do_.empty() && dht.empty())
      throw InputError("--in: the candidate holds gradients but " + layer.in_dir +
                       " has neither do.npy nor dht.npy (the upstream gradients they were computed with)");
    for (auto& [name, t] : file_gradients(layer, in, backward(form, in.layer, do_, dht, fopt))) refs.emplace_back(name, t);
  }
  std::vector<Verdict> verdicts;
  for (const auto& [name, ref] : refs) {
    const fs::path p = fs::path(args.candidate_dir) / (name + ".npy");
    if (!fs::exists(p)) continue;
    verdicts.push_back(compare(name, io::read_npy(p.string(), name + ".npy"), ref, args.tolerance));
  }
  if (verdicts.empty())
    throw InputError("--candidate: " + args.candidate_dir + " holds none of o.npy, ht.npy, dq.npy ... dh0.npy");
  bool all = true;
  for (const auto& v : verdicts) all = all && v.passed;
  if (args.json) {
    std::printf("{\"passed\": %s, \"form\": \"%s\", \"tensors\": [", all ? "true" : "false", layer.form.c_str());
    for (size_t i = 0; i < verdicts.size(); ++i) {
      const auto& v = verdicts[i];
      auto num = [](double x) { return std::isfinite(x) ? std::to_string(x) : std::string("null"); };
      std::printf("%s{\"name\": \"%s\", \"dtype\": \"%s\", \"ratio\": %s, \"max_abs_error\": %s, \"worst_index\": \"%s\", "
                  "\"bound\": %g, \"passed\": %s}",
                  i ? ", " : "", v.name.c_str(), v.dtype.c_str(), num(v.ratio).c_str(), num(v.max_abs).c_str(),
                  v.worst_index.c_str(), v.bound, v.passed ? "true" : "false");
    }
    std::printf("]}\n");
  } else {
    std::printf("gdn2 check: %s vs the float64 reference (%s form)\n", args.candidate_dir.c_str(), layer.form.c_str());
    std::printf("%-9s %-6s %-11s %-13s %-18s %-8s %s\n", "tensor", "dtype", "ratio", "max abs err", "worst index", "bound",
                "verdict");
    for (const auto& v : verdicts)
      std::printf("%-9s %-6s %-11.2e %-13.2e %-18s %-8.0e %s\n", v.name.c_str(), v.dtype.c_str(), v.ratio, v.max_abs,
                  v.worst_index.c_str(), v.bound, v.passed ? "ok" : ("FAIL" + (v.note.empty() ? "" : " (" + v.note + ")")).c_str());
    std::printf("%s: %zu tensor(s) compared, ratio = |x - ref| / |ref| (2-norms)\n", all ? "PASSED" : "FAILED", verdicts.size());
  }
  return all ? kOk : kCheckFailed;
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
    x = load_layer_inputs<double>(layer).layer;
    std::tie(do_, dht) = load_upstream<double>(layer.in_dir);
    fopt = forward_options(layer);
  } else {
    x = random_layer<double>(rng, 2, 70, 2, 4, 8, 6, [](Rng& r) { return r.uniform(-0.5, 0); }, true);
    if (args.value_head_gates) random_value_head_gates(rng, x, [](Rng& r) { return r.uniform(-0.5, 0); });
    fopt.chunk_size = args.layer.chunk_size;
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
