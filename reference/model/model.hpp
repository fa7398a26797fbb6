// gdn2 model — a tiny language model around one Gated DeltaNet-2 token mixer per block, trained on the recall
// tasks with the reference's own backward (no autograd library: every step below has a hand-written VJP).
//
//   x_0 = E[token]
//   block l:  h = RMSNorm(x)·γ₁
//             q, k, v = SiLU(ShortConv(h W_q)), ...   (ShortConv: depthwise causal, width `conv`; skipped at 0)
//             q, k ← L2-normalised per head                                  (paper D.2)
//             b = σ(h W_b + c_b), w = σ(h W_w + c_w)                         (Eq. 11, erase / write gates)
//             g = −exp(A_log)·softplus(h W_g + dt_bias)                       (Eq. 12, per key channel)
//             o = GDN-2(q, k, v, g, b, w)                                     (Eq. 9, the reference's forward)
//             x ← x + (RMSNorm_head(o)·γ_o ⊙ SiLU(h W_gate)) W_o            (paper Fig. 1: output norm and gate)
//             x ← x + SiLU(RMSNorm(x)·γ₂ W_1) W_2                            (MLP)
//   logits = RMSNorm(x)·γ_f W_out
// Variants at equal state size (K × V per head) tie the gates as the reference does (Appendix A.5): kda and gdn
// project one β per head (σ(h W_β + c_β)); gdn projects one decay per head; deltanet has no decay; linear has
// no erase (b = 0) and w = 1.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/backward.hpp"
#include "core/options.hpp"
#include "core/random_inputs.hpp"
#include "tasks/tasks.hpp"

namespace gdn2::model {

using Matrix = Mat<double>;

struct ModelConfig {
  Variant variant = Variant::gdn2;  // = gdn2   // gate tying (options.hpp)
  int vocab = 64;                   // = 64     // input and output tokens
  int d_model = 64;                 // = 64     // residual stream width
  int heads = 1;                    // = 1      // H = HV
  int head_k = 32;                  // = 32     // K: key channels per head (rows of S)
  int head_v = 32;                  // = 32     // V: value channels per head (columns of S)
  int blocks = 1;                   // = 1      // [mixer + MLP] blocks
  int mlp = 128;                    // = 128    // MLP hidden width (0: no MLP)
  int conv = 4;                     // = 4      // short causal convolution width on q, k, v (0: none)
};

// The most parameters validate() accepts (the model trains on the CPU in float64).
constexpr double kMaxParameters = double(1 << 24);
void validate(const ModelConfig& cfg);  // throws InputError

// Parameters by name ("block0.W_q", "E", ...). std::map: a fixed order for the optimiser and checkpoints.
using Params = std::map<std::string, Matrix>;

// Freshly initialised parameters, deterministic for a seed.
Params init_params(const ModelConfig& cfg, std::uint64_t seed);

// Parameters that receive weight decay (matrices of projections and embeddings, not gains, biases or gate
// parameters).
bool decays(const std::string& name);

// Everything one block's forward keeps for the backward and for traces.
struct BlockCache {
  Matrix x_in, inv_rms1, h;                       // [R, D], [R, 1], [R, D]
  Matrix qc, kc, vc, qs, ks, vs, qa, ka;          // projections, after the convolution, after SiLU
  Layer<double> layer;                            // the mixer's inputs in the reference layout
  Matrix g_logits, b_logits, w_logits, beta;      // gate pre-activations (those the variant uses) and β
  Tensor<double> g_in;                            // the decay before tying (per channel, or per head for gdn)
  Tensor<double> o;                               // mixer output [Bn, T, H, V]
  Matrix inv_rms_o, o_normed, gate_logits, y;     // output norm and gate
  Matrix x_mid, inv_rms2, h2, a, m;               // MLP
};

struct ForwardResult {
  std::vector<BlockCache> blocks;
  Matrix x_final, inv_rms_f, h_final, logits;  // logits [R, vocab]
  int batch = 0, length = 0;
};

// Forward over a batch of equal-length token sequences (rows r = n·T + t).
ForwardResult forward(const ModelConfig& cfg, const Params& p, const std::vector<std::vector<int>>& tokens);

// A gate of one mixer set by hand (for teaching: "what does the model answer if this erase gate were closed?"):
// at (block, head, token) of every sequence, channel `channel` (−1: all) of b, w or g (Eq. 11-12) is replaced by
// `value` after the variant's tie, and everything downstream (later tokens, later blocks, the logits) follows.
struct GateOverride {
  enum Gate { erase_b, write_w, decay_g } gate = erase_b;
  int block = 0, head = 0, token = 0, channel = -1;
  double value = 0;
};
ForwardResult forward(const ModelConfig& cfg, const Params& p, const std::vector<std::vector<int>>& tokens,
                      const std::vector<GateOverride>& overrides);  // throws InputError for an override out of range

// Mean cross-entropy over the positions whose target is >= 0, and its gradient w.r.t. every parameter.
struct LossAndGrad {
  double loss = 0;
  int answers = 0, correct = 0;
  Params grad;
};
double loss_only(const ModelConfig& cfg, const Params& p, const std::vector<tasks::Example>& batch);
LossAndGrad loss_and_grad(const ModelConfig& cfg, const Params& p, const std::vector<tasks::Example>& batch);

// Cross-entropy of one row of logits against `target`, computed stably (log-sum-exp around the maximum), and the
// argmax of that row. Shared by the training loss and the held-out evaluation.
struct RowLoss {
  double loss = 0;
  int predicted = 0;
};
RowLoss row_loss(const Matrix& logits, Eigen::Index row, int target);

// Greedy predictions (argmax of the logits) at every position.
std::vector<std::vector<int>> predict(const ModelConfig& cfg, const Params& p,
                                      const std::vector<std::vector<int>>& tokens);

}  // namespace gdn2::model
