// gdn2 model — forward and hand-written backward of the tiny model (equations in model.hpp).
//
// [SECTION] index: helpers (linear, RMSNorm, SiLU, convolution) · initialisation · block forward · forward ·
// loss and backward.
#include "model/model.hpp"

#include <cmath>

#include "core/frontend.hpp"

namespace gdn2::model {

namespace {

constexpr double kRmsEps = 1e-6;

// [SECTION] helpers -----------------------------------------------------------------------------------------------

// Row-wise RMSNorm of [R, D] with a gain γ [1, D]: y = x · inv · γ, inv = 1/sqrt(mean(x²) + eps).
Matrix rmsnorm(const Matrix& x, const Matrix& gamma, Matrix& inv) {
  inv = (x.array().square().rowwise().mean() + kRmsEps).rsqrt().matrix();
  return (x.array().colwise() * inv.col(0).array()).rowwise() * gamma.row(0).array();
}

// u = dy ⊙ γ:  dx = inv·u − x·inv³·(u·x)/D,  dγ = Σ_rows dy ⊙ x·inv.
Matrix rmsnorm_backward(const Matrix& dy, const Matrix& x, const Matrix& inv, const Matrix& gamma, Matrix& dgamma) {
  const Eigen::Index D = x.cols();
  const Matrix xn = x.array().colwise() * inv.col(0).array();
  dgamma += (dy.array() * xn.array()).colwise().sum().matrix();
  const Matrix u = dy.array().rowwise() * gamma.row(0).array();
  const Eigen::VectorXd ux = (u.array() * x.array()).rowwise().sum() / double(D);
  const Eigen::ArrayXd inv3 = inv.col(0).array().cube();
  return (u.array().colwise() * inv.col(0).array()) - (x.array().colwise() * (inv3 * ux.array()));
}

double sigmoid1(double x) { return gdn2::sigmoid(x); }
Matrix silu(const Matrix& x) { return x.unaryExpr([](double v) { return v * sigmoid1(v); }); }
// d silu(x)/dx = σ(x)(1 + x(1 − σ(x)))
Matrix silu_backward(const Matrix& dy, const Matrix& x) {
  return dy.array() * x.unaryExpr([](double v) {
    const double s = sigmoid1(v);
    return s * (1 + v * (1 - s));
  }).array();
}

// Depthwise causal convolution along t inside each sequence: y[n,t,c] = Σ_j W[j,c] x[n,t−j,c].
Matrix conv_forward(const Matrix& x, const Matrix& W, int T) {
  Matrix y = Matrix::Zero(x.rows(), x.cols());
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const int t = static_cast<int>(r % T);
    for (int j = 0; j < W.rows() && j <= t; ++j) y.row(r) += W.row(j).cwiseProduct(x.row(r - j));
  }
  return y;
}

Matrix conv_backward(const Matrix& dy, const Matrix& x, const Matrix& W, int T, Matrix& dW) {
  Matrix dx = Matrix::Zero(x.rows(), x.cols());
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const int t = static_cast<int>(r % T);
    for (int j = 0; j < W.rows() && j <= t; ++j) {
      dx.row(r - j) += W.row(j).cwiseProduct(dy.row(r));
      dW.row(j) += x.row(r - j).cwiseProduct(dy.row(r));
    }
  }
  return dx;
}

// A [R, C] matrix as the reference's [Bn, T, heads, C / heads] tensor (same row-major data).
Tensor<double> as_tensor(const Matrix& m, int Bn, int T, int heads) {
  Tensor<double> t({Bn, T, heads, m.cols() / heads});
  Eigen::Map<Matrix>(t.ptr(), m.rows(), m.cols()) = m;
  return t;
}
Matrix as_matrix(const Tensor<double>& t, Eigen::Index rows) {
  return Eigen::Map<const Matrix>(t.ptr(), rows, t.numel() / rows);
}

// Per-head view [R·heads, V] of a [R, heads·V] matrix, for the per-head output norm.
Matrix per_head(const Matrix& m, int heads) {
  return Eigen::Map<const Matrix>(m.data(), m.rows() * heads, m.cols() / heads);
}
Matrix from_per_head(const Matrix& m, int heads) {
  return Eigen::Map<const Matrix>(m.data(), m.rows() / heads, m.cols() * heads);
}

bool uses(Variant v, const char* what) {
  const std::string w = what;
  if (w == "bw") return v == Variant::gdn2;
  if (w == "beta") return v == Variant::kda || v == Variant::gdn || v == Variant::deltanet;
  if (w == "g_channel") return v == Variant::gdn2 || v == Variant::kda || v == Variant::linear;
  if (w == "g_head") return v == Variant::gdn;
  return false;
}

std::string blk(int l, const char* name) { return "block" + std::to_string(l) + "." + name; }

const Matrix& at(const Params& p, const std::string& name) {
  const auto it = p.find(name);
  if (it == p.end()) throw InputError("parameter " + name + " is missing");
  return it->second;
}

}  // namespace

void validate(const ModelConfig& c) {
  auto fail = [](const std::string& m) { throw InputError(m); };
  auto positive = [&](int v, const char* name, int hi) {
    if (v < 1 || v > hi) fail(std::string(name) + ": " + std::to_string(v) + " (expected 1 .. " + std::to_string(hi) + ")");
  };
  positive(c.vocab, "vocab", 1000000);
  positive(c.d_model, "d-model", 4096);
  positive(c.heads, "heads", 64);
  positive(c.head_k, "head-k", 1024);
  positive(c.head_v, "head-v", 1024);
  positive(c.blocks, "blocks", 16);
  if (c.mlp < 0 || c.mlp > 16384) fail("mlp: " + std::to_string(c.mlp) + " (expected 0 .. 16384)");
  if (c.conv < 0 || c.conv > 16) fail("conv: " + std::to_string(c.conv) + " (expected 0 .. 16)");
  // Each size may be in range while their product is not (vocab 1000000 x d-model 4096 is 8e9 parameters): bound
  // the count, over-estimated per block, before anything is allocated. Training keeps the parameters, their
  // gradients and Adam's two moments in float64: 32 bytes each, 512 MiB at the bound.
  const double D = c.d_model, HK = double(c.heads) * c.head_k, HV = double(c.heads) * c.head_v;
  const double count = 2.0 * c.vocab * D + c.blocks * (D * (6 * HK + 4 * HV + c.heads) + 2.0 * c.mlp * D + 4 * D);
  if (count > kMaxParameters)
    fail("model too large: about " + std::to_string(static_cast<long long>(count)) + " parameters (vocab " +
         std::to_string(c.vocab) + ", d-model " + std::to_string(c.d_model) + ", blocks " + std::to_string(c.blocks) +
         ", heads " + std::to_string(c.heads) + "), over the bound of " +
         std::to_string(static_cast<long long>(kMaxParameters)));
}

bool decays(const std::string& name) {
  for (const char* m : {"W_q", "W_k", "W_v", "W_b", "W_w", "W_g", "W_beta", "W_gate", "W_o", "W_1", "W_2", "W_out"})
    if (name.size() >= std::string(m).size() && name.compare(name.size() - std::string(m).size(), std::string::npos, m) == 0)
      return true;
  return name == "E";
}

// [SECTION] initialisation ----------------------------------------------------------------------------------------

Params init_params(const ModelConfig& c, std::uint64_t seed) {
  validate(c);
  Rng rng(seed);
  Params p;
  auto normal = [&](Eigen::Index r, Eigen::Index cols, double std) {
    Matrix m(r, cols);
    for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = std * rng.normal();
    return m;
  };
  auto linear = [&](Eigen::Index in, Eigen::Index out, double gain = 1.0) { return normal(in, out, gain / std::sqrt(double(in))); };
  const int D = c.d_model, HK = c.heads * c.head_k, HV = c.heads * c.head_v;
  p["E"] = normal(c.vocab, D, 1.0);
  const double residual_gain = 1.0 / std::sqrt(2.0 * c.blocks);
  for (int l = 0; l < c.blocks; ++l) {
    p[blk(l, "norm1")] = Matrix::Ones(1, D);
    p[blk(l, "W_q")] = linear(D, HK);
    p[blk(l, "W_k")] = linear(D, HK);
    p[blk(l, "W_v")] = linear(D, HV);
    if (c.conv > 0) {
      // Uniform ±1/sqrt(width) (PyTorch's Conv1d default), plus 1 on the current token so that at the start
      // each position sees mostly itself.
      for (const char* name : {"conv_q", "conv_k", "conv_v"}) {
        const int C = std::string(name) == "conv_v" ? HV : HK;
        Matrix w(c.conv, C);
        for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = rng.uniform(-1, 1) / std::sqrt(double(c.conv));
        w.row(0).array() += 1.0;
        p[blk(l, name)] = w;
      }
    }
    if (uses(c.variant, "bw")) {
      p[blk(l, "W_b")] = linear(D, HK);
      p[blk(l, "c_b")] = Matrix::Zero(1, HK);
      p[blk(l, "W_w")] = linear(D, HV);
      p[blk(l, "c_w")] = Matrix::Zero(1, HV);
    }
    if (uses(c.variant, "beta")) {
      p[blk(l, "W_beta")] = linear(D, c.heads);
      p[blk(l, "c_beta")] = Matrix::Zero(1, c.heads);
    }
    if (uses(c.variant, "g_channel") || uses(c.variant, "g_head")) {
      const int G = uses(c.variant, "g_head") ? c.heads : HK;
      p[blk(l, "W_g")] = linear(D, G);
      // flash-linear-attention's initialisation: A ~ U(1, 16), dt log-uniform in [1e-3, 1e-1], dt_bias = softplus⁻¹(dt).
      Matrix A_log(1, c.heads), dt_bias(1, G);
      for (int h = 0; h < c.heads; ++h) A_log(0, h) = std::log(rng.uniform(1, 16));
      for (int i = 0; i < G; ++i) {
        const double dt = std::exp(rng.uniform(std::log(1e-3), std::log(1e-1)));
        dt_bias(0, i) = dt + std::log(-std::expm1(-dt));
      }
      p[blk(l, "A_log")] = A_log;
      p[blk(l, "dt_bias")] = dt_bias;
    }
    p[blk(l, "norm_o")] = Matrix::Ones(1, c.head_v);
    p[blk(l, "W_gate")] = linear(D, HV);
    p[blk(l, "W_o")] = linear(HV, D, residual_gain);
    if (c.mlp > 0) {
      p[blk(l, "norm2")] = Matrix::Ones(1, D);
      p[blk(l, "W_1")] = linear(D, c.mlp);
      p[blk(l, "W_2")] = linear(c.mlp, D, residual_gain);
    }
  }
  p["norm_f"] = Matrix::Ones(1, D);
  p["W_out"] = linear(D, c.vocab);
  return p;
}

// [SECTION] forward -----------------------------------------------------------------------------------------------

namespace {

ForwardOptions mixer_options() {
  ForwardOptions opt;
  opt.num_threads = 0;  // sequences in parallel; bitwise independent of the thread count (backward.hpp)
  return opt;
}

// Sets the hand-set gates of block l in the tied gate tensors g, b [Bn,T,H,K] and w [Bn,T,H,V].
void apply_overrides(const std::vector<GateOverride>& overrides, int l, Layer<double>& L, int Bn, int T, int H) {
  for (const GateOverride& o : overrides) {
    if (o.block != l) continue;
    Tensor<double>& gate = o.gate == GateOverride::write_w ? L.w : o.gate == GateOverride::decay_g ? L.g : L.b;
    const index_t C = gate.shape[3];
    for (int n = 0; n < Bn; ++n)
      for (index_t c = 0; c < C; ++c)
        if (o.channel < 0 || o.channel == c) gate.data[((index_t(n) * T + o.token) * H + o.head) * C + c] = o.value;
  }
}

Matrix block_forward(const ModelConfig& c, const Params& p, int l, const Matrix& x, int Bn, int T, BlockCache& bc,
                     const std::vector<GateOverride>& overrides) {
  const int H = c.heads, K = c.head_k, V = c.head_v;
  const Eigen::Index R = x.rows();
  bc.x_in = x;
  bc.h = rmsnorm(x, at(p, blk(l, "norm1")), bc.inv_rms1);
  const Matrix& h = bc.h;
  bc.qc = h * at(p, blk(l, "W_q"));
  bc.kc = h * at(p, blk(l, "W_k"));
  bc.vc = h * at(p, blk(l, "W_v"));
  Matrix va;
  if (c.conv > 0) {
    bc.qs = conv_forward(bc.qc, at(p, blk(l, "conv_q")), T);
    bc.ks = conv_forward(bc.kc, at(p, blk(l, "conv_k")), T);
    bc.vs = conv_forward(bc.vc, at(p, blk(l, "conv_v")), T);
    bc.qa = silu(bc.qs);
    bc.ka = silu(bc.ks);
    va = silu(bc.vs);
  } else {
    bc.qa = bc.qc;
    bc.ka = bc.kc;
    va = bc.vc;
  }
  Layer<double>& L = bc.layer;
  L.q = as_tensor(bc.qa, Bn, T, H);
  L.k = as_tensor(bc.ka, Bn, T, H);
  l2normalize_last_axis(L.q);  // paper D.2
  l2normalize_last_axis(L.k);
  L.v = as_tensor(va, Bn, T, H);

  // Gates (Eq. 11-12), then the variant's tie (Appendix A.5).
  Tensor<double> beta;
  if (uses(c.variant, "bw")) {
    bc.b_logits = (h * at(p, blk(l, "W_b"))).rowwise() + at(p, blk(l, "c_b")).row(0);
    bc.w_logits = (h * at(p, blk(l, "W_w"))).rowwise() + at(p, blk(l, "c_w")).row(0);
    L.b = as_tensor(bc.b_logits, Bn, T, H);
    L.w = as_tensor(bc.w_logits, Bn, T, H);
    sigmoid_gate(L.b);
    sigmoid_gate(L.w);
  }
  if (uses(c.variant, "beta")) {
    bc.beta = ((h * at(p, blk(l, "W_beta"))).rowwise() + at(p, blk(l, "c_beta")).row(0))
                  .unaryExpr([](double v) { return sigmoid1(v); });
    beta = Tensor<double>({Bn, T, H});
    Eigen::Map<Matrix>(beta.ptr(), R, H) = bc.beta;
  }
  if (uses(c.variant, "g_channel") || uses(c.variant, "g_head")) {
    bc.g_logits = h * at(p, blk(l, "W_g"));
    const int G = static_cast<int>(bc.g_logits.cols()) / H;
    bc.g_in = as_tensor(bc.g_logits, Bn, T, H);
    Tensor<double> A_log({H}), dt_bias({H * G});
    Eigen::Map<Matrix>(A_log.ptr(), 1, H) = at(p, blk(l, "A_log"));
    Eigen::Map<Matrix>(dt_bias.ptr(), 1, H * G) = at(p, blk(l, "dt_bias"));
    softplus_decay(bc.g_in, A_log, dt_bias);
    if (G == 1) bc.g_in.shape = {Bn, T, H};  // one decay per head (gdn)
  }
  tie_gates(c.variant, L.g, L.b, L.w, bc.g_in, beta, Bn, T, H, K, H, V);  // deltanet: g = 0
  apply_overrides(overrides, l, L, Bn, T, H);

  Tensor<double> ht;
  gdn2::forward(Form::recurrent, bc.o, ht, L, mixer_options());

  // Output norm per head and SiLU gate (Fig. 1), projection back to the residual stream.
  const Matrix o = as_matrix(bc.o, R);
  Matrix inv_o;
  const Matrix on = rmsnorm(per_head(o, H), at(p, blk(l, "norm_o")), inv_o);
  bc.inv_rms_o = inv_o;
  bc.o_normed = from_per_head(on, H);
  bc.gate_logits = h * at(p, blk(l, "W_gate"));
  bc.y = bc.o_normed.cwiseProduct(silu(bc.gate_logits));
  bc.x_mid = x + bc.y * at(p, blk(l, "W_o"));
  if (c.mlp == 0) return bc.x_mid;
  bc.h2 = rmsnorm(bc.x_mid, at(p, blk(l, "norm2")), bc.inv_rms2);
  bc.a = bc.h2 * at(p, blk(l, "W_1"));
  bc.m = silu(bc.a);
  return bc.x_mid + bc.m * at(p, blk(l, "W_2"));
}

}  // namespace

ForwardResult forward(const ModelConfig& c, const Params& p, const std::vector<std::vector<int>>& tokens) {
  return forward(c, p, tokens, {});
}

ForwardResult forward(const ModelConfig& c, const Params& p, const std::vector<std::vector<int>>& tokens,
                      const std::vector<GateOverride>& overrides) {
  validate(c);
  ForwardResult f;
  f.batch = static_cast<int>(tokens.size());
  if (f.batch == 0) throw InputError("tokens: empty batch");
  f.length = static_cast<int>(tokens[0].size());
  const Matrix& E = at(p, "E");
  Matrix x(Eigen::Index(f.batch) * f.length, c.d_model);
  for (int n = 0; n < f.batch; ++n) {
    if (static_cast<int>(tokens[n].size()) != f.length) throw InputError("tokens: sequences of different lengths in one batch");
    for (int t = 0; t < f.length; ++t) {
      const int tok = tokens[n][t];
      if (tok < 0 || tok >= c.vocab)
        throw InputError("token " + std::to_string(tok) + " at [" + std::to_string(n) + "," + std::to_string(t) +
                         "] is outside the vocabulary 0.." + std::to_string(c.vocab - 1));
      x.row(Eigen::Index(n) * f.length + t) = E.row(tok);
    }
  }
  for (const GateOverride& o : overrides) {
    const int channels = o.gate == GateOverride::write_w ? c.head_v : c.head_k;
    const bool in_range = o.gate == GateOverride::decay_g ? o.value <= 0 && !std::isnan(o.value) : o.value >= 0 && o.value <= 1;
    if (o.block < 0 || o.block >= c.blocks || o.head < 0 || o.head >= c.heads || o.token < 0 || o.token >= f.length ||
        o.channel < -1 || o.channel >= channels || !in_range)
      throw InputError("gate override: block " + std::to_string(o.block) + ", head " + std::to_string(o.head) + ", token " +
                       std::to_string(o.token) + ", channel " + std::to_string(o.channel) + ", value " +
                       std::to_string(o.value) + " is outside the model or the gate's range (b, w in [0, 1], g <= 0)");
  }
  f.blocks.resize(c.blocks);
  for (int l = 0; l < c.blocks; ++l) x = block_forward(c, p, l, x, f.batch, f.length, f.blocks[l], overrides);
  f.x_final = x;
  f.h_final = rmsnorm(x, at(p, "norm_f"), f.inv_rms_f);
  f.logits = f.h_final * at(p, "W_out");
  return f;
}

RowLoss row_loss(const Matrix& logits, Eigen::Index row, int target) {
  Eigen::Index best;
  const double mx = logits.row(row).maxCoeff(&best);
  return {std::log((logits.row(row).array() - mx).exp().sum()) - (logits(row, target) - mx), static_cast<int>(best)};
}

std::vector<std::vector<int>> predict(const ModelConfig& c, const Params& p, const std::vector<std::vector<int>>& tokens) {
  const ForwardResult f = forward(c, p, tokens);
  std::vector<std::vector<int>> out(f.batch, std::vector<int>(f.length));
  for (int n = 0; n < f.batch; ++n)
    for (int t = 0; t < f.length; ++t) {
      Eigen::Index best;
      f.logits.row(Eigen::Index(n) * f.length + t).maxCoeff(&best);
      out[n][t] = static_cast<int>(best);
    }
  return out;
}

// [SECTION] loss and backward -------------------------------------------------------------------------------------

namespace {

std::vector<std::vector<int>> tokens_of(const std::vector<tasks::Example>& batch) {
  std::vector<std::vector<int>> t;
  for (const auto& ex : batch) t.push_back(ex.tokens);
  return t;
}

// Mean cross-entropy at answer positions; dlogits (when asked) = (softmax − onehot) / answers.
double cross_entropy(const ForwardResult& f, const std::vector<tasks::Example>& batch, Matrix* dlogits, int& answers,
                     int& correct) {
  answers = correct = 0;
  double loss = 0;
  if (dlogits) *dlogits = Matrix::Zero(f.logits.rows(), f.logits.cols());
  for (int n = 0; n < f.batch; ++n)
    for (int t = 0; t < f.length; ++t) {
      const int target = batch[n].targets[t];
      if (target < 0) continue;
      const Eigen::Index r = Eigen::Index(n) * f.length + t;
      const RowLoss rl = row_loss(f.logits, r, target);
      loss += rl.loss;
      ++answers;
      correct += rl.predicted == target;
      if (dlogits) {  // softmax − onehot
        const Eigen::RowVectorXd e = (f.logits.row(r).array() - f.logits.row(r).maxCoeff()).exp();
        dlogits->row(r) = e / e.sum();
        (*dlogits)(r, target) -= 1;
      }
    }
  if (answers == 0) throw InputError("batch has no answer positions (no target >= 0)");
  if (dlogits) *dlogits /= answers;
  return loss / answers;
}

void add(Params& g, const std::string& name, const Matrix& d) {
  auto it = g.find(name);
  if (it == g.end())
    g.emplace(name, d);
  else
    it->second += d;
}

// Backward of one block: dx (gradient at the block's output) in, gradient at its input out.
Matrix block_backward(const ModelConfig& c, const Params& p, int l, const BlockCache& bc, const Matrix& dx_out, int Bn,
                      int T, Params& g) {
  const int H = c.heads;
  const Eigen::Index R = dx_out.rows();
  Matrix dx = dx_out;  // residual
  Matrix dx_mid = dx_out;
  if (c.mlp > 0) {
    add(g, blk(l, "W_2"), bc.m.transpose() * dx_out);
    const Matrix da = silu_backward(dx_out * at(p, blk(l, "W_2")).transpose(), bc.a);
    add(g, blk(l, "W_1"), bc.h2.transpose() * da);
    Matrix dgamma = Matrix::Zero(1, c.d_model);
    dx_mid += rmsnorm_backward(da * at(p, blk(l, "W_1")).transpose(), bc.x_mid, bc.inv_rms2, at(p, blk(l, "norm2")), dgamma);
    add(g, blk(l, "norm2"), dgamma);
  }
  // x_mid = x_in + y W_o
  dx = dx_mid;
  add(g, blk(l, "W_o"), bc.y.transpose() * dx_mid);
  const Matrix dy = dx_mid * at(p, blk(l, "W_o")).transpose();
  const Matrix sg = silu(bc.gate_logits);
  const Matrix dgate_logits = silu_backward(dy.cwiseProduct(bc.o_normed), bc.gate_logits);
  Matrix dh = dgate_logits * at(p, blk(l, "W_gate")).transpose();
  add(g, blk(l, "W_gate"), bc.h.transpose() * dgate_logits);
  Matrix dnorm_o = Matrix::Zero(1, c.head_v);
  const Matrix o = as_matrix(bc.o, R);
  const Matrix do_m =
      from_per_head(rmsnorm_backward(per_head(dy.cwiseProduct(sg), H), per_head(o, H), bc.inv_rms_o, at(p, blk(l, "norm_o")), dnorm_o), H);
  add(g, blk(l, "norm_o"), dnorm_o);

  // The mixer: the reference's backward (Eq. 9 reversed in time).
  const Layer<double>& L = bc.layer;
  const Gradients<double> gr = gdn2::backward(Form::recurrent, L, as_tensor(do_m, Bn, T, H), Tensor<double>{}, mixer_options());
  Tensor<double> dg_in, dbeta;
  tie_gates_backward(c.variant, dg_in, dbeta, gr.dg, gr.db, gr.dw);

  if (uses(c.variant, "bw")) {
    Tensor<double> db = gr.db, dw = gr.dw;
    sigmoid_gate_backward(db, L.b);
    sigmoid_gate_backward(dw, L.w);
    const Matrix dbl = as_matrix(db, R), dwl = as_matrix(dw, R);
    add(g, blk(l, "W_b"), bc.h.transpose() * dbl);
    add(g, blk(l, "c_b"), dbl.colwise().sum());
    add(g, blk(l, "W_w"), bc.h.transpose() * dwl);
    add(g, blk(l, "c_w"), dwl.colwise().sum());
    dh += dbl * at(p, blk(l, "W_b")).transpose() + dwl * at(p, blk(l, "W_w")).transpose();
  }
  if (uses(c.variant, "beta")) {
    const Matrix dbl = Eigen::Map<const Matrix>(dbeta.ptr(), R, H).cwiseProduct(
        bc.beta.unaryExpr([](double s) { return s * (1 - s); }));
    add(g, blk(l, "W_beta"), bc.h.transpose() * dbl);
    add(g, blk(l, "c_beta"), dbl.colwise().sum());
    dh += dbl * at(p, blk(l, "W_beta")).transpose();
  }
  if (uses(c.variant, "g_channel") || uses(c.variant, "g_head")) {
    const int G = static_cast<int>(bc.g_logits.cols()) / H;
    Tensor<double> dgl = dg_in, x = as_tensor(bc.g_logits, Bn, T, H), gval = bc.g_in;
    dgl.shape = x.shape;
    gval.shape = x.shape;
    Tensor<double> A_log({H}), dt_bias({H * G}), dA_log, ddt_bias;
    Eigen::Map<Matrix>(A_log.ptr(), 1, H) = at(p, blk(l, "A_log"));
    Eigen::Map<Matrix>(dt_bias.ptr(), 1, H * G) = at(p, blk(l, "dt_bias"));
    softplus_decay_backward(dgl, dA_log, ddt_bias, x, gval, A_log, dt_bias);
    const Matrix dglm = as_matrix(dgl, R);
    add(g, blk(l, "W_g"), bc.h.transpose() * dglm);
    add(g, blk(l, "A_log"), Eigen::Map<const Matrix>(dA_log.ptr(), 1, H));
    add(g, blk(l, "dt_bias"), Eigen::Map<const Matrix>(ddt_bias.ptr(), 1, H * G));
    dh += dglm * at(p, blk(l, "W_g")).transpose();
  }

  // q, k: L2 norm (D.2), SiLU, convolution, projection. v: SiLU, convolution, projection.
  Tensor<double> dq = gr.dq, dk = gr.dk;
  l2normalize_backward(dq, as_tensor(bc.qa, Bn, T, H));
  l2normalize_backward(dk, as_tensor(bc.ka, Bn, T, H));
  Matrix dqc = as_matrix(dq, R), dkc = as_matrix(dk, R), dvc = as_matrix(gr.dv, R);
  if (c.conv > 0) {
    Matrix dcq = Matrix::Zero(c.conv, dqc.cols()), dck = dcq, dcv = Matrix::Zero(c.conv, dvc.cols());
    dqc = conv_backward(silu_backward(dqc, bc.qs), bc.qc, at(p, blk(l, "conv_q")), T, dcq);
    dkc = conv_backward(silu_backward(dkc, bc.ks), bc.kc, at(p, blk(l, "conv_k")), T, dck);
    dvc = conv_backward(silu_backward(dvc, bc.vs), bc.vc, at(p, blk(l, "conv_v")), T, dcv);
    add(g, blk(l, "conv_q"), dcq);
    add(g, blk(l, "conv_k"), dck);
    add(g, blk(l, "conv_v"), dcv);
  }
  add(g, blk(l, "W_q"), bc.h.transpose() * dqc);
  add(g, blk(l, "W_k"), bc.h.transpose() * dkc);
  add(g, blk(l, "W_v"), bc.h.transpose() * dvc);
  dh += dqc * at(p, blk(l, "W_q")).transpose() + dkc * at(p, blk(l, "W_k")).transpose() +
        dvc * at(p, blk(l, "W_v")).transpose();
  Matrix dgamma = Matrix::Zero(1, c.d_model);
  dx += rmsnorm_backward(dh, bc.x_in, bc.inv_rms1, at(p, blk(l, "norm1")), dgamma);
  add(g, blk(l, "norm1"), dgamma);
  return dx;
}

}  // namespace

double loss_only(const ModelConfig& c, const Params& p, const std::vector<tasks::Example>& batch) {
  const ForwardResult f = forward(c, p, tokens_of(batch));
  int answers, correct;
  return cross_entropy(f, batch, nullptr, answers, correct);
}

LossAndGrad loss_and_grad(const ModelConfig& c, const Params& p, const std::vector<tasks::Example>& batch) {
  const ForwardResult f = forward(c, p, tokens_of(batch));
  LossAndGrad out;
  Matrix dlogits;
  out.loss = cross_entropy(f, batch, &dlogits, out.answers, out.correct);
  Params& g = out.grad;
  add(g, "W_out", f.h_final.transpose() * dlogits);
  Matrix dgamma = Matrix::Zero(1, c.d_model);
  Matrix dx = rmsnorm_backward(dlogits * at(p, "W_out").transpose(), f.x_final, f.inv_rms_f, at(p, "norm_f"), dgamma);
  add(g, "norm_f", dgamma);
  for (int l = c.blocks - 1; l >= 0; --l) dx = block_backward(c, p, l, f.blocks[l], dx, f.batch, f.length, g);
  Matrix dE = Matrix::Zero(c.vocab, c.d_model);
  for (int n = 0; n < f.batch; ++n)
    for (int t = 0; t < f.length; ++t) dE.row(batch[n].tokens[t]) += dx.row(Eigen::Index(n) * f.length + t);
  add(g, "E", dE);
  for (const auto& [name, value] : p)  // every parameter has a gradient entry, even one that got none
    if (!g.count(name)) g.emplace(name, Matrix::Zero(value.rows(), value.cols()));
  return out;
}

}  // namespace gdn2::model
