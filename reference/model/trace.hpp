// gdn2 model — traces: one head of one sequence, every step of Eq. 9 kept, for the viewer and the notebooks.
//
// A trace is computed by the reference's own step (recurrent_step), never by a re-implementation, and saved
// as a directory: trace.json (metadata, token labels) and one .npy per array:
//   q k g b alpha e [T,K]   v w z r o [T,V]   S [T+1,K,V] (S[0] = S_0, S[t+1] after token t)
//   tokens roles targets source predicted [T] int32 (-1 where not applicable)   values [n,V] (scenario candidates)
#pragma once

#include <string>
#include <vector>

#include "model/train.hpp"
#include "tasks/scenarios.hpp"

namespace gdn2::model {

struct Trace {
  std::string title, story, kind;   // kind: "scenario", "model", or "random" (gdn2 trace --random)
  std::string variant = "gdn2";
  int K = 0, V = 0, T = 0;
  double scale = 1;
  std::vector<std::string> labels;  // per token
  std::vector<int> tokens, roles, targets, source, predicted;
  std::vector<std::string> value_names;
  Matrix values;                    // scenario candidates [n, V]
  Matrix q, k, g, b, alpha, e, v, w, z, r, o;
  std::vector<Matrix> S;            // T + 1 states
};

// Runs sequence n, value head hv of a layer call through recurrent_step and keeps every term.
Trace trace_layer(const Layer<double>& x, int n, int hv, double scale);

Trace trace_scenario(const tasks::Scenario& sc, const std::string& variant_label = "gdn2");

// The model on one example; the mixer of `block`, head `head` is traced, predictions come from the whole model,
// with the hand-set gates `overrides` applied (model.hpp: they change every later token and the logits).
Trace trace_model(const ModelConfig& mc, const Params& p, const tasks::Example& ex, int block = 0, int head = 0,
                  const std::vector<GateOverride>& overrides = {});

// The single-head layer call a trace was computed from (B = 1, H = HV = 1): re-running trace_layer on it with
// the trace's scale gives the trace again. Used to re-run a sequence with hand-set gates.
Layer<double> layer_of(const Trace& tr);
// A trace recomputed from `x` (one head, as layer_of returns) that keeps `meta`'s labels, tokens and predictions.
Trace retrace(const Trace& meta, const Layer<double>& x);

// The held-out example `index` that `gdn2 trace --checkpoint` and the viewer show for a checkpoint.
tasks::Example heldout_example(const Checkpoint& ck, int index);

// The update of token t split into its three parts (Eq. 9):  S_t = S_{t-1} + decay + erase + write with
//   decay = (Diag(α_t) − I) S_{t-1},  erase = −k_t r_tᵀ,  write = k_t z_tᵀ.
struct UpdateParts {
  Matrix decay, erase, write;
};
UpdateParts update_parts(const Trace& tr, int t);

// How well o_t recalls what was written at `source[t]`: cosine between o_t and z at that position (0 if none).
double recall_cosine(const Trace& tr, int t);
// Scenario traces: index of the candidate value nearest to o_t by cosine (-1 if o_t = 0 or no candidates).
int nearest_value(const Trace& tr, int t);
// o_t read as a mix of the values stored so far: the least-squares coefficients c minimising |o_t − Σ c_i u_i|
// over the basis u_i = the candidate values written (z ≠ 0) at tokens <= t (scenario traces; names "A", "B", ...)
// or the value vectors v of the value tokens <= t (model traces; names are their labels, "v40"). `residual` is
// |o_t − Σ c_i u_i| / |o_t| (0 when o_t = 0): the part of o_t that no stored value explains.
struct ReadoutMix {
  std::vector<std::string> names;
  std::vector<int> basis;            // candidate index (scenario) or token (model) of each name
  std::vector<double> coefficients;
  double norm = 0, residual = 0;     // |o_t|, relative residual
};
ReadoutMix readout_mix(const Trace& tr, int t);
// exp(entropy of the normalised singular values): how many independent directions S holds (0 for S = 0).
double effective_rank(const Matrix& S);

void save_trace(const std::string& dir, const Trace& tr);
// Throws InputError naming the file; checks what the panels index with: roles in -1..3, source within
// the sequence, a scenario trace's value_names and values (at least one candidate), every array finite (g in [-inf, 0]).
Trace load_trace(const std::string& dir);

}  // namespace gdn2::model
