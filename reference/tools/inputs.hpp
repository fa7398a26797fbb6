// gdn2 command line — loading a directory of .npy inputs into reference tensors (shared by every command).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/backward.hpp"
#include "core/frontend.hpp"
#include "io/npy.hpp"

namespace gdn2::tools {

// The options every command that runs the layer shares (forward, backward, check).
struct LayerOptions {
  std::string in_dir;
  std::string form = "chunk";        // recurrent | chunk
  std::string precision = "f64";     // f64 | f32
  std::string variant = "gdn2";      // gdn2 | kda | gdn | deltanet | linear
  index_t chunk_size = 64;
  std::optional<double> scale;
  bool l2norm_qk = false;
  bool gate_logits = false;          // b, w, beta hold logits: apply σ (Eq. 11)
  bool negative_eigen = false;       // b ∈ [0, 2] (2σ with --gate-logits)
  std::string decay = "none";        // none | softplus (Eq. 12) | bounded
  double lower_bound = -5.0;         // for --decay bounded
  int threads = 0;
};

// Everything the forward takes, in the working precision, with the front-end already applied, plus what the
// backward needs to map gradients back onto the files that were read.
template <typename Scalar>
struct LayerInputs {
  Layer<Scalar> layer;                    // full Gated DeltaNet-2 inputs (gates tied, front-end applied)
  Tensor<Scalar> raw_q, raw_k;            // q, k as read (before --l2norm-qk)
  Tensor<Scalar> g_logits, A_log, dt_bias;  // --decay softplus|bounded
  Tensor<Scalar> beta;                    // the tied gate of kda, gdn, deltanet (after --gate-logits)
  bool g_read = false;                    // g.npy was read (linear: optional)
};

// Where the named inputs (q, k, v, g, b, w, beta, h0, cu_seqlens, A_log, dt_bias) come from: the files NAME.npy of a
// directory (the command line) or arrays in memory (the Python bindings). Messages name a tensor as its file,
// NAME.npy, in both, so that Python raises exactly the command line's message.
template <typename Scalar>
struct InputSource {
  std::string where;                                                     // "DIR" in "q.npy: missing from DIR"
  std::function<bool(const std::string& name)> has;                      // is NAME given?
  std::function<Tensor<Scalar>(const std::string& name)> tensor;         // NAME converted to Scalar (NAME is given)
  std::function<std::vector<index_t>(const std::string& name)> indices;  // NAME as a 1-D integer array (cu_seqlens)
};

// Reads q, k, v and the variant's gates (+ h0, cu_seqlens, A_log, dt_bias when present or needed) from `source`,
// applies the front-end and the gate tying, and validates the result. Throws InputError.
template <typename Scalar>
LayerInputs<Scalar> load_layer_inputs(const LayerOptions& opt, const InputSource<Scalar>& source);
// The same from the directory opt.in_dir, reading what gdn2 forward reads (input_names_read(opt, false)).
template <typename Scalar>
LayerInputs<Scalar> load_layer_inputs(const LayerOptions& opt);
// The same from arrays already in memory (name without ".npy" → array; what read_input_dir returns). opt.in_dir
// only names the place in messages.
template <typename Scalar>
LayerInputs<Scalar> load_layer_inputs(const LayerOptions& opt, const io::NamedArrays& arrays);

// The names an input directory may hold: q, k, v, g, b, w, beta, h0, cu_seqlens, A_log, dt_bias, do, dht.
const std::vector<std::string>& input_names();
// The same names as text, "q, k, v, ..., dht", for messages that list them.
std::string input_names_text();
// The names a command reads with these options, in input_names()' order: q, k, v; the variant's gates (gdn2: g, b,
// w; kda and gdn: g, beta; deltanet: beta; linear: g, optional); h0 and cu_seqlens (optional); dt_bias with --decay
// and A_log with --decay softplus; with `upstream` (backward, check, gradcheck) the upstream gradients do and dht.
std::vector<std::string> input_names_read(const LayerOptions& opt, bool upstream);
// The first layer option given where it has no effect with the others in `opt` (--lower-bound without --decay
// bounded, --gate-logits with --variant linear, --negative-eigen with a variant other than gdn2), as "why, and what
// it needs", or "" when none is. Options are named by their LayerOptions fields ("lower_bound", "decay", ...);
// `given(field)` says whether the caller set one, `spell(field, value)` writes it as the caller's front end does
// ("--decay bounded" on the command line, decay="bounded" in Python; value "" for the option alone), so that both
// refuse in the same words.
struct OptionWithoutEffect {
  std::string option, why;  // option spelled; "has no effect without ..."
};
std::optional<OptionWithoutEffect> layer_option_without_effect(
    const LayerOptions& opt, const std::function<bool(const std::string& field)>& given,
    const std::function<std::string(const std::string& field, const std::string& value)>& spell);
// Reads the files of `names` present in `dir` (a missing one is simply absent from the map), and no other: a file
// the command does not use is not opened, so a broken one cannot fail it. `times`, if given, receives the time spent
// per file (--verbose). Every other .npy file in `dir` is named in a note on stderr, with what `command` ("gdn2
// forward") reads. Throws InputError when dir is not a directory.
io::NamedArrays read_input_dir(const std::string& dir, const std::vector<std::string>& names, const std::string& command,
                               io::ReadTimes* times = nullptr);

// The gradients of the files that were read, named as files: dq, dk, dv, dh0 (when h0.npy was read), and per
// variant dg, db, dw or dbeta; with --decay also dA_log / ddt_bias. With a front-end the gradient is the one of the
// file's content (logits, unnormalised q/k).
template <typename Scalar>
std::vector<std::pair<std::string, Tensor<Scalar>>> file_gradients(const LayerOptions& opt, const LayerInputs<Scalar>& in,
                                                                   Gradients<Scalar> grad);

ForwardOptions forward_options(const LayerOptions& opt);
Form parse_form(const std::string& s);

// Lists the input files the chosen variant reads, for --help texts and error messages.
std::string variant_files_help();

}  // namespace gdn2::tools
