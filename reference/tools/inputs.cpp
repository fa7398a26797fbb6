// gdn2 command line — loading a directory of .npy inputs (see inputs.hpp).
#include "tools/inputs.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "io/npy.hpp"

namespace gdn2::tools {

namespace fs = std::filesystem;

namespace {

template <typename Scalar>
Tensor<Scalar> load(const InputSource<Scalar>& src, const LayerOptions& opt, const std::string& name, bool required) {
  if (!src.has(name)) {
    if (required)
      throw InputError(name + ".npy: missing from " + src.where + " (variant " + opt.variant + " needs it; see --help)");
    return {};
  }
  return src.tensor(name);
}

}  // namespace

Form parse_form(const std::string& s) {
  if (s == "recurrent") return Form::recurrent;
  if (s == "chunk") return Form::chunk;
  throw InputError("unknown form '" + s + "' (expected recurrent or chunk)");
}

ForwardOptions forward_options(const LayerOptions& opt) {
  if (opt.chunk_size < 1 || opt.chunk_size > (index_t(1) << 20))  // (the command line's bound, for the Python API)
    throw InputError("chunk size must lie in [1, 2^20], got " + std::to_string(opt.chunk_size));
  ForwardOptions f;
  f.scale = opt.scale;
  f.chunk_size = opt.chunk_size;
  f.allow_negative_eigen = opt.negative_eigen;
  f.num_threads = opt.threads;
  return f;
}

std::string variant_files_help() {
  return "Input files in --in DIR (float32 or float64 .npy; layout of flash-linear-attention):\n"
         "  all variants   q.npy, k.npy [B,T,H,K]   v.npy [B,T,HV,V]\n"
         "  gdn2           g.npy, b.npy [B,T,H,K] or [B,T,HV,K]   w.npy [B,T,HV,V]\n"
         "  kda            g.npy [B,T,H,K] or [B,T,HV,K]   beta.npy [B,T,H] or [B,T,HV]\n"
         "  gdn            g.npy [B,T,H] or [B,T,HV]       beta.npy [B,T,H] or [B,T,HV]\n"
         "  deltanet       beta.npy [B,T,H] or [B,T,HV]\n"
         "  linear         g.npy [B,T,H,K] or [B,T,HV,K] (optional; absent = no decay)\n"
         "  optional       h0.npy [N,HV,K,V] initial states, cu_seqlens.npy [N+1] int32/int64 (B = 1)\n"
         "  --decay softplus reads A_log.npy [H] and dt_bias.npy [H*K] ([HV], [HV*K] for a g.npy per value head);\n"
         "  --decay bounded reads dt_bias.npy\n"
         "Grouped value heads (HV a multiple of H): value heads h*HV/H ... (h+1)*HV/H - 1 share key head h, i.e. value\n"
         "head j reads q, k of key head j / (HV/H). Each gate is given per key head ([B,T,H,...]: value head j reads\n"
         "key head j / (HV/H)'s gate) or per value head ([B,T,HV,...]: its own, as fla's fused_recurrent_gdn2 takes\n"
         "g and b), each independently; the gradients dg, db, dbeta come back in the layout given.\n";
}

const std::vector<std::string>& input_names() {
  static const std::vector<std::string> names = {"q", "k", "v", "g", "b", "w", "beta", "h0", "cu_seqlens",
                                                 "A_log", "dt_bias", "do", "dht"};
  return names;
}

std::string input_names_text() {
  std::string text;
  for (const auto& n : input_names()) text += (text.empty() ? "" : ", ") + n;
  return text;
}

std::optional<OptionWithoutEffect> layer_option_without_effect(
    const LayerOptions& opt, const std::function<bool(const std::string& field)>& given,
    const std::function<std::string(const std::string& field, const std::string& value)>& spell) {
  if (given("lower_bound") && opt.decay != "bounded")
    return OptionWithoutEffect{spell("lower_bound", ""),
                               "has no effect without " + spell("decay", "bounded") +
                                   " (it bounds g = lower_bound sigmoid(x + dt_bias)); give " + spell("decay", "bounded") +
                                   ", or leave " + spell("lower_bound", "") + " out"};
  if (given("gate_logits") && opt.variant == "linear")
    return OptionWithoutEffect{spell("gate_logits", ""), "has no effect with " + spell("variant", "linear") +
                                                             " (it reads no gate b, w or beta to apply the sigmoid to)"};
  if (given("negative_eigen") && opt.variant != "gdn2")
    return OptionWithoutEffect{
        spell("negative_eigen", ""),
        "has no effect with " + spell("variant", opt.variant) +
            (opt.variant == "linear" ? " (it has no erase gate)" : " (b = w = beta, and the write gate w must lie in [0, 1])") +
            "; it lets the erase gate b of " + spell("variant", "gdn2") + " lie in [0, 2]"};
  return std::nullopt;
}

std::vector<std::string> input_names_read(const LayerOptions& opt, bool upstream) {
  const Variant variant = parse_variant(opt.variant);
  std::vector<std::string> names = {"q", "k", "v"};
  if (variant != Variant::deltanet) names.push_back("g");
  if (variant == Variant::gdn2) names.insert(names.end(), {"b", "w"});
  if (variant == Variant::kda || variant == Variant::gdn || variant == Variant::deltanet) names.push_back("beta");
  names.insert(names.end(), {"h0", "cu_seqlens"});
  if (opt.decay == "softplus") names.push_back("A_log");
  if (opt.decay != "none") names.push_back("dt_bias");
  if (upstream) names.insert(names.end(), {"do", "dht"});
  return names;
}

io::NamedArrays read_input_dir(const std::string& dir, const std::vector<std::string>& names, const std::string& command,
                               io::ReadTimes* times) {
  if (!fs::is_directory(dir)) throw InputError("--in: " + dir + " is not a directory");
  // A .npy file this command does not read is named: a misnamed input (initial_state.npy for h0.npy) would otherwise
  // change the result without a word, and an input of another command or variant (do.npy for forward, beta.npy for
  // gdn2) would look used.
  std::vector<std::string> unread;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string f = e.path().filename().string();
    if (f.size() > 4 && f.compare(f.size() - 4, 4, ".npy") == 0 &&
        std::find(names.begin(), names.end(), f.substr(0, f.size() - 4)) == names.end())
      unread.push_back(f);
  }
  if (!unread.empty()) {
    std::sort(unread.begin(), unread.end());
    std::string list, read;
    for (const auto& f : unread) list += (list.empty() ? "" : ", ") + f;
    for (const auto& n : names) read += (read.empty() ? "" : ", ") + n;
    std::fprintf(stderr, "gdn2: note: --in %s: not read: %s (the inputs are named %s; with these options %s reads %s)\n",
                 dir.c_str(), list.c_str(), input_names_text().c_str(), command.c_str(), read.c_str());
  }
  return io::read_npy_dir(dir, names, times);
}

template <typename Scalar>
LayerInputs<Scalar> load_layer_inputs(const LayerOptions& opt) {
  return load_layer_inputs<Scalar>(opt, read_input_dir(opt.in_dir, input_names_read(opt, false), "gdn2 forward"));
}

template <typename Scalar>
LayerInputs<Scalar> load_layer_inputs(const LayerOptions& opt, const io::NamedArrays& arrays) {
  InputSource<Scalar> src;
  src.where = opt.in_dir;
  src.has = [&](const std::string& name) { return arrays.count(name) != 0; };
  src.tensor = [&](const std::string& name) { return io::to_tensor<Scalar>(arrays.at(name), name + ".npy"); };
  src.indices = [&](const std::string& name) { return io::to_index_vector(arrays.at(name), name + ".npy"); };
  return load_layer_inputs(opt, src);
}

template <typename Scalar>
LayerInputs<Scalar> load_layer_inputs(const LayerOptions& opt, const InputSource<Scalar>& src) {
  const Variant variant = parse_variant(opt.variant);
  parse_form(opt.form);
  LayerInputs<Scalar> in;
  Layer<Scalar>& x = in.layer;
  x.q = load(src, opt, "q", true);
  x.k = load(src, opt, "k", true);
  x.v = load(src, opt, "v", true);
  if (x.q.shape.size() != 4) throw InputError("q.npy: expected 4 dimensions [B,T,H,K], got " + shape_str(x.q.shape));
  if (x.v.shape.size() != 4) throw InputError("v.npy: expected 4 dimensions [B,T,HV,V], got " + shape_str(x.v.shape));
  const index_t B = x.q.dim(0), T = x.q.dim(1), H = x.q.dim(2), K = x.q.dim(3), HV = x.v.dim(2), V = x.v.dim(3);

  const bool needs_g = variant == Variant::gdn2 || variant == Variant::kda || variant == Variant::gdn;
  Tensor<Scalar> g_in = variant == Variant::deltanet ? Tensor<Scalar>{} : load(src, opt, "g", needs_g);
  in.g_read = !g_in.empty();
  if (opt.decay != "none") {
    if (variant == Variant::gdn || variant == Variant::deltanet)
      throw InputError("--decay " + opt.decay + " needs a per-channel g.npy (variants gdn2, kda, linear)");
    if (g_in.empty()) throw InputError("g.npy: missing (--decay " + opt.decay + " reads decay logits from it)");
    detail::expect_head_layout("g.npy", g_in.shape, B, T, H, HV, {K}, "decay logits");
    in.g_logits = g_in;
    in.dt_bias = load(src, opt, "dt_bias", true);
    // The front-end's inputs are checked as themselves: a NaN in A_log.npy is not "g: value nan".
    const auto finite = [](double v) { return std::isfinite(v); };
    detail::expect_elements("g", g_in, finite, "decay logits of --decay " + opt.decay + " must be finite");
    detail::expect_elements("dt_bias", in.dt_bias, finite, "must be finite");
    if (opt.decay == "softplus") {
      in.A_log = load(src, opt, "A_log", true);
      detail::expect_elements("A_log", in.A_log, finite, "must be finite");
      softplus_decay(g_in, in.A_log, in.dt_bias);
    } else if (opt.decay == "bounded") {
      bounded_decay(g_in, in.dt_bias, opt.lower_bound);
    } else {
      throw InputError("unknown --decay '" + opt.decay + "' (expected none, softplus or bounded)");
    }
    detail::expect_elements("g", g_in, [](double v) { return !std::isnan(v); },
                            "computed by --decay " + opt.decay + " from g.npy's logits, dt_bias.npy" +
                                (opt.decay == "softplus" ? " and A_log.npy: exp(A_log) overflowed against a logit whose "
                                                           "softplus is 0"
                                                         : ""));
  }

  if (variant == Variant::kda || variant == Variant::gdn || variant == Variant::deltanet) {
    in.beta = load(src, opt, "beta", true);
    if (opt.gate_logits) sigmoid_gate(in.beta);
  }
  if (variant == Variant::gdn2) {
    x.b = load(src, opt, "b", true);
    x.w = load(src, opt, "w", true);
    if (opt.gate_logits) {
      sigmoid_gate(x.b, Scalar(opt.negative_eigen ? 2 : 1));
      sigmoid_gate(x.w);
    }
  }
  if (variant == Variant::linear && g_in.empty()) g_in = Tensor<Scalar>({B, T, H, K});  // no decay: g = 0
  tie_gates(variant, x.g, x.b, x.w, g_in, in.beta, B, T, H, K, HV, V);
  x.h0 = load(src, opt, "h0", false);
  if (src.has("cu_seqlens")) x.cu_seqlens = src.indices("cu_seqlens");
  if (opt.l2norm_qk) {
    in.raw_q = x.q;
    in.raw_k = x.k;
    l2normalize_last_axis(x.q);
    l2normalize_last_axis(x.k);
  }
  validate_inputs(x.q, x.k, x.v, x.g, x.b, x.w, x.h0, x.cu_seqlens, forward_options(opt));
  return in;
}
template LayerInputs<float> load_layer_inputs<float>(const LayerOptions&);
template LayerInputs<double> load_layer_inputs<double>(const LayerOptions&);
template LayerInputs<float> load_layer_inputs<float>(const LayerOptions&, const io::NamedArrays&);
template LayerInputs<double> load_layer_inputs<double>(const LayerOptions&, const io::NamedArrays&);
template LayerInputs<float> load_layer_inputs<float>(const LayerOptions&, const InputSource<float>&);
template LayerInputs<double> load_layer_inputs<double>(const LayerOptions&, const InputSource<double>&);

template <typename Scalar>
std::vector<std::pair<std::string, Tensor<Scalar>>> file_gradients(const LayerOptions& opt, const LayerInputs<Scalar>& in,
                                                                   Gradients<Scalar> grad) {
  const Variant variant = parse_variant(opt.variant);
  std::vector<std::pair<std::string, Tensor<Scalar>>> out;
  if (opt.l2norm_qk) {
    l2normalize_backward(grad.dq, in.raw_q);
    l2normalize_backward(grad.dk, in.raw_k);
  }
  out.emplace_back("dq", std::move(grad.dq));
  out.emplace_back("dk", std::move(grad.dk));
  out.emplace_back("dv", std::move(grad.dv));
  if (!in.layer.h0.empty()) out.emplace_back("dh0", std::move(grad.dh0));
  Tensor<Scalar> dg_in, dbeta;
  tie_gates_backward(variant, dg_in, dbeta, grad.dg, grad.db, grad.dw);
  if (variant == Variant::gdn2) {
    if (opt.gate_logits) {
      sigmoid_gate_backward(grad.db, in.layer.b, Scalar(opt.negative_eigen ? 2 : 1));
      sigmoid_gate_backward(grad.dw, in.layer.w);
    }
    out.emplace_back("db", std::move(grad.db));
    out.emplace_back("dw", std::move(grad.dw));
  }
  if (!dbeta.empty()) {
    if (opt.gate_logits) sigmoid_gate_backward(dbeta, in.beta);
    out.emplace_back("dbeta", std::move(dbeta));
  }
  if (!dg_in.empty() && in.g_read) {
    if (opt.decay == "softplus") {
      Tensor<Scalar> dA_log, ddt_bias;
      softplus_decay_backward(dg_in, dA_log, ddt_bias, in.g_logits, in.layer.g, in.A_log, in.dt_bias);
      out.emplace_back("dA_log", std::move(dA_log));
      out.emplace_back("ddt_bias", std::move(ddt_bias));
    } else if (opt.decay == "bounded") {
      Tensor<Scalar> ddt_bias;
      bounded_decay_backward(dg_in, ddt_bias, in.g_logits, in.dt_bias, opt.lower_bound);
      out.emplace_back("ddt_bias", std::move(ddt_bias));
    }
    out.emplace_back("dg", std::move(dg_in));
  }
  return out;
}
template std::vector<std::pair<std::string, Tensor<float>>> file_gradients(const LayerOptions&, const LayerInputs<float>&,
                                                                           Gradients<float>);
template std::vector<std::pair<std::string, Tensor<double>>> file_gradients(const LayerOptions&, const LayerInputs<double>&,
                                                                            Gradients<double>);

}  // namespace gdn2::tools
