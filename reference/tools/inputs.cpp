// gdn2 command line — loading a directory of .npy inputs (see inputs.hpp).
#include "tools/inputs.hpp"

#include <filesystem>

#include "io/npy.hpp"

namespace gdn2::tools {

namespace fs = std::filesystem;

namespace {

bool exists(const LayerOptions& opt, const std::string& name) { return fs::exists(fs::path(opt.in_dir) / (name + ".npy")); }

template <typename Scalar>
Tensor<Scalar> load(const LayerOptions& opt, const std::string& name, bool required) {
  const std::string file = name + ".npy";
  if (!exists(opt, name)) {
    if (required)
      throw InputError(file + ": missing from " + opt.in_dir + " (variant " + opt.variant + " needs it; see --help)");
    return {};
  }
  return io::to_tensor<Scalar>(io::read_npy((fs::path(opt.in_dir) / file).string(), file), file);
}

}  // namespace

Form parse_form(const std::string& s) {
  if (s == "recurrent") return Form::recurrent;
  if (s == "chunk") return Form::chunk;
  throw InputError("unknown form '" + s + "' (expected recurrent or chunk)");
}

ForwardOptions forward_options(const LayerOptions& opt) {
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
         "  gdn2           g.npy, b.npy [B,T,H,K]   w.npy [B,T,HV,V]\n"
         "  kda            g.npy [B,T,H,K]          beta.npy [B,T,H]\n"
         "  gdn            g.npy [B,T,H]            beta.npy [B,T,H]\n"
         "  deltanet       beta.npy [B,T,H]\n"
         "  linear         g.npy [B,T,H,K] (optional; absent = no decay)\n"
         "  optional       h0.npy [N,HV,K,V] initial states, cu_seqlens.npy [N+1] int32/int64 (B = 1)\n"
         "  --decay softplus reads A_log.npy [H] and dt_bias.npy [H*K]; --decay bounded reads dt_bias.npy\n";
}

template <typename Scalar>
LayerInputs<Scalar> load_layer_inputs(const LayerOptions& opt) {
  if (!fs::is_directory(opt.in_dir)) throw InputError("--in: " + opt.in_dir + " is not a directory");
  const Variant variant = parse_variant(opt.variant);
  parse_form(opt.form);
  LayerInputs<Scalar> in;
  in.q = load<Scalar>(opt, "q", true);
  in.k = load<Scalar>(opt, "k", true);
  in.v = load<Scalar>(opt, "v", true);
  if (in.q.shape.size() != 4) throw InputError("q.npy: expected 4 dimensions [B,T,H,K], got " + shape_str(in.q.shape));
  if (in.v.shape.size() != 4) throw InputError("v.npy: expected 4 dimensions [B,T,HV,V], got " + shape_str(in.v.shape));
  const index_t B = in.q.dim(0), T = in.q.dim(1), H = in.q.dim(2), K = in.q.dim(3), HV = in.v.dim(2), V = in.v.dim(3);

  const bool needs_g = variant == Variant::gdn2 || variant == Variant::kda || variant == Variant::gdn;
  Tensor<Scalar> g_in = variant == Variant::deltanet ? Tensor<Scalar>{} : load<Scalar>(opt, "g", needs_g);
  if (opt.decay != "none") {
    if (variant == Variant::gdn || variant == Variant::deltanet)
      throw InputError("--decay " + opt.decay + " needs a per-channel g.npy (variants gdn2, kda, linear)");
    if (g_in.empty()) throw InputError("g.npy: missing (--decay " + opt.decay + " reads decay logits from it)");
    if (g_in.shape.size() != 4) throw InputError("g.npy: expected [B,T,H,K] logits, got " + shape_str(g_in.shape));
    const Tensor<Scalar> dt_bias = load<Scalar>(opt, "dt_bias", true);
    if (opt.decay == "softplus")
      softplus_decay(g_in, load<Scalar>(opt, "A_log", true), dt_bias);
    else if (opt.decay == "bounded")
      bounded_decay(g_in, dt_bias, opt.lower_bound);
    else
      throw InputError("unknown --decay '" + opt.decay + "' (expected none, softplus or bounded)");
  }

  Tensor<Scalar> beta;
  if (variant == Variant::kda || variant == Variant::gdn || variant == Variant::deltanet) {
    beta = load<Scalar>(opt, "beta", true);
    if (opt.gate_logits) sigmoid_gate(beta);
  }
  if (variant == Variant::gdn2) {
    in.b = load<Scalar>(opt, "b", true);
    in.w = load<Scalar>(opt, "w", true);
    if (opt.gate_logits) {
      sigmoid_gate(in.b, Scalar(opt.negative_eigen ? 2 : 1));
      sigmoid_gate(in.w);
    }
  }
  if (variant == Variant::linear && g_in.empty()) g_in = Tensor<Scalar>({B, T, H, K});  // no decay: g = 0
  tie_gates(variant, in.g, in.b, in.w, g_in, beta, B, T, H, K, HV, V);
  in.h0 = load<Scalar>(opt, "h0", false);
  if (exists(opt, "cu_seqlens"))
    in.cu_seqlens = io::to_index_vector(io::read_npy((fs::path(opt.in_dir) / "cu_seqlens.npy").string(), "cu_seqlens.npy"),
                                        "cu_seqlens.npy");
  if (opt.l2norm_qk) {
    l2normalize_last_axis(in.q);
    l2normalize_last_axis(in.k);
  }
  validate_inputs(in.q, in.k, in.v, in.g, in.b, in.w, in.h0, in.cu_seqlens, forward_options(opt));
  return in;
}
template LayerInputs<float> load_layer_inputs<float>(const LayerOptions&);
template LayerInputs<double> load_layer_inputs<double>(const LayerOptions&);

}  // namespace gdn2::tools
