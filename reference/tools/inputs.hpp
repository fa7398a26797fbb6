// gdn2 command line — loading a directory of .npy inputs into reference tensors (shared by every command).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/forward.hpp"
#include "core/frontend.hpp"

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

// Everything the forward takes, in the working precision, with the front-end already applied.
template <typename Scalar>
struct LayerInputs {
  Tensor<Scalar> q, k, v, g, b, w, h0;
  std::vector<index_t> cu_seqlens;
};

// Reads q, k, v and the variant's gates (+ h0, cu_seqlens, A_log, dt_bias when present or needed) from
// opt.in_dir, applies the front-end and the gate tying, and validates the result. Throws InputError.
template <typename Scalar>
LayerInputs<Scalar> load_layer_inputs(const LayerOptions& opt);

ForwardOptions forward_options(const LayerOptions& opt);
Form parse_form(const std::string& s);

// Lists the input files the chosen variant reads, for --help texts and error messages.
std::string variant_files_help();

}  // namespace gdn2::tools
