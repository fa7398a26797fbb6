// gdn2 model — traces (trace.hpp).
#include "model/trace.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/npy.hpp"
#include "model/json_file.hpp"

namespace gdn2::model {

Trace trace_layer(const Layer<double>& x, int n, int hv, double scale) {
  const Dims d = validate_inputs(x.q, x.k, x.v, x.g, x.b, x.w, x.h0, x.cu_seqlens, ForwardOptions{});
  if (n < 0 || n >= d.N || hv < 0 || hv >= d.HV)
    throw InputError("trace: sequence " + std::to_string(n) + " / head " + std::to_string(hv) + " does not exist");
  const SequenceSpan span = sequence_span(d, x.cu_seqlens, n);
  const index_t h = head_for_value_head(hv, d.H, d.HV), L = span.length;
  Trace tr;
  tr.K = static_cast<int>(d.K);
  tr.V = static_cast<int>(d.V);
  tr.T = static_cast<int>(L);
  tr.scale = scale;
  tr.q = detail::gather_head(x.q, span.row0, L, h);
  tr.k = detail::gather_head(x.k, span.row0, L, h);
  tr.g = detail::gather_head(x.g, span.row0, L, head_for_value_head(hv, d.HG, d.HV));
  tr.b = detail::gather_head(x.b, span.row0, L, head_for_value_head(hv, d.HB, d.HV));
  tr.v = detail::gather_head(x.v, span.row0, L, hv);
  tr.w = detail::gather_head(x.w, span.row0, L, hv);
  tr.alpha = tr.e = Matrix(L, d.K);
  tr.z = tr.r = tr.o = Matrix(L, d.V);
  Matrix S = Matrix::Zero(d.K, d.V);
  if (!x.h0.empty()) S = Eigen::Map<const Matrix>(x.h0.ptr() + offset_state(n, hv, d.HV, d.K, d.V), d.K, d.V);
  tr.S.push_back(S);
  StepTerms<double> terms;
  for (index_t t = 0; t < L; ++t) {
    const RowVec<double> q = scale * tr.q.row(t);
    recurrent_step(S, tr.o.row(t), q, tr.k.row(t), tr.v.row(t), tr.g.row(t), tr.b.row(t), tr.w.row(t), &terms);
    tr.alpha.row(t) = terms.alpha;
    tr.e.row(t) = terms.e;
    tr.z.row(t) = terms.z;
    tr.r.row(t) = terms.r;
    tr.S.push_back(S);
  }
  const std::vector<int> none(L, -1);
  tr.tokens = tr.targets = tr.source = tr.predicted = tr.roles = none;
  tr.labels.assign(L, "");
  return tr;
}

Trace trace_scenario(const tasks::Scenario& sc, const std::string& variant_label) {
  Trace tr = trace_layer(sc.layer, 0, 0, sc.scale);
  tr.kind = "scenario";
  tr.title = sc.title;
  tr.story = sc.story;
  tr.variant = variant_label;
  tr.labels = sc.labels;
  for (int t = 0; t < tr.T; ++t) tr.roles[t] = static_cast<int>(sc.roles[t]);
  tr.source = sc.source;
  tr.value_names = sc.value_names;
  tr.values = sc.values;
  return tr;
}

Trace trace_model(const ModelConfig& mc, const Params& p, const tasks::Example& ex, int block, int head,
                  const std::vector<GateOverride>& overrides) {
  if (block < 0 || block >= mc.blocks) throw InputError("trace: block " + std::to_string(block) + " does not exist");
  if (head < 0 || head >= mc.heads) throw InputError("trace: head " + std::to_string(head) + " does not exist");
  const ForwardResult f = forward(mc, p, {ex.tokens}, overrides);
  Trace tr = trace_layer(f.blocks[block].layer, 0, head, 1.0 / std::sqrt(double(mc.head_k)));
  tr.kind = "model";
  tr.variant = variant_name(mc.variant);
  tr.tokens = ex.tokens;
  tr.targets = ex.targets;
  tr.source = ex.source;
  for (int t = 0; t < tr.T; ++t) {
    tr.roles[t] = static_cast<int>(ex.roles[t]);
    Eigen::Index best;
    f.logits.row(t).maxCoeff(&best);
    tr.predicted[t] = static_cast<int>(best);
    const int tok = ex.tokens[t];
    switch (ex.roles[t]) {
      case tasks::Role::filler: tr.labels[t] = tok == 0 ? "." : "f" + std::to_string(tok); break;
      case tasks::Role::key: tr.labels[t] = "k" + std::to_string(tok); break;
      case tasks::Role::value: tr.labels[t] = "v" + std::to_string(tok); break;
      case tasks::Role::query: tr.labels[t] = "?k" + std::to_string(tok); break;
    }
  }
  return tr;
}

Layer<double> layer_of(const Trace& tr) {
  Layer<double> x;
  auto put = [&](Tensor<double>& dst, const Matrix& m) {
    dst = Tensor<double>({1, tr.T, 1, m.cols()});
    Eigen::Map<Matrix>(dst.ptr(), m.rows(), m.cols()) = m;
  };
  put(x.q, tr.q), put(x.k, tr.k), put(x.g, tr.g), put(x.b, tr.b), put(x.v, tr.v), put(x.w, tr.w);
  x.h0 = Tensor<double>({1, 1, tr.K, tr.V});
  Eigen::Map<Matrix>(x.h0.ptr(), tr.K, tr.V) = tr.S[0];
  return x;
}

Trace retrace(const Trace& meta, const Layer<double>& x) {
  Trace tr = trace_layer(x, 0, 0, meta.scale);
  tr.title = meta.title, tr.story = meta.story, tr.kind = meta.kind, tr.variant = meta.variant;
  tr.labels = meta.labels, tr.tokens = meta.tokens, tr.roles = meta.roles, tr.targets = meta.targets;
  tr.source = meta.source, tr.predicted = meta.predicted, tr.value_names = meta.value_names, tr.values = meta.values;
  return tr;
}

tasks::Example heldout_example(const Checkpoint& ck, int index) {
  if (index < 0) throw InputError("example index must be >= 0");
  // A stream apart from the evaluation's own (heldout_seed), so the shown examples are not the scored ones.
  return tasks::example_at(ck.task, heldout_seed(ck.train.seed) + 7919, index);
}

UpdateParts update_parts(const Trace& tr, int t) {
  if (t < 0 || t >= tr.T) throw InputError("update_parts: step " + std::to_string(t) + " outside 0.." + std::to_string(tr.T - 1));
  const Matrix& prev = tr.S[t];
  UpdateParts u;
  u.decay = (tr.alpha.row(t).array() - 1.0).matrix().transpose().asDiagonal() * prev;  // (Diag(α) − I) S_{t−1}
  u.erase = -tr.k.row(t).transpose() * tr.r.row(t);                                     // −k_t r_tᵀ
  u.write = tr.k.row(t).transpose() * tr.z.row(t);                                      // k_t z_tᵀ
  return u;
}

double recall_cosine(const Trace& tr, int t) {
  if (t < 0 || t >= tr.T || tr.source[t] < 0) return 0;
  const RowVec<double> a = tr.o.row(t), b = tr.z.row(tr.source[t]);
  const double na = a.norm(), nb = b.norm();
  return na > 0 && nb > 0 ? a.dot(b) / (na * nb) : 0;
}

int nearest_value(const Trace& tr, int t) {
  if (tr.values.rows() == 0 || t < 0 || t >= tr.T) return -1;
  const double no = tr.o.row(t).norm();
  if (no < 1e-9) return -1;
  Eigen::Index best;
  (tr.values * tr.o.row(t).transpose()).maxCoeff(&best);  // candidates are unit vectors
  return static_cast<int>(best);
}

ReadoutMix readout_mix(const Trace& tr, int t) {
  ReadoutMix mix;
  if (t < 0 || t >= tr.T) return mix;
  std::vector<RowVec<double>> basis;
  for (int s = 0; s <= t; ++s) {
    if (tr.kind == "model") {
      if (tr.roles[s] != static_cast<int>(tasks::Role::value)) continue;
      mix.names.push_back(tr.labels[s]), mix.basis.push_back(s), basis.push_back(tr.v.row(s));
      continue;
    }
    if (tr.z.row(s).squaredNorm() == 0) continue;
    for (Eigen::Index c = 0; c < tr.values.rows(); ++c)
      if ((tr.v.row(s) - tr.values.row(c)).norm() < 1e-12 &&
          std::find(mix.basis.begin(), mix.basis.end(), static_cast<int>(c)) == mix.basis.end())
        mix.names.push_back(tr.value_names[c]), mix.basis.push_back(static_cast<int>(c)), basis.push_back(tr.values.row(c));
  }
  const RowVec<double> o = tr.o.row(t);
  mix.norm = o.norm();
  if (basis.empty()) {
    mix.residual = mix.norm > 0 ? 1 : 0;
    return mix;
  }
  Matrix U(tr.V, static_cast<Eigen::Index>(basis.size()));  // one stored value per column
  for (size_t i = 0; i < basis.size(); ++i) U.col(static_cast<Eigen::Index>(i)) = basis[i].transpose();
  const Eigen::VectorXd c = U.colPivHouseholderQr().solve(o.transpose());
  mix.coefficients.assign(c.data(), c.data() + c.size());
  mix.residual = mix.norm > 0 ? (o.transpose() - U * c).norm() / mix.norm : 0;
  return mix;
}

double effective_rank(const Matrix& S) {
  // Singular values as square roots of the eigenvalues of the smaller Gram matrix: several times faster than an SVD
  // (the viewer's gauge recomputes it every frame) and accurate enough for a gauge — the tiny singular values it
  // gets less accurately weigh almost nothing in the entropy.
  const Eigen::MatrixXd gram = S.rows() <= S.cols() ? Eigen::MatrixXd(S * S.transpose()) : Eigen::MatrixXd(S.transpose() * S);
  const Eigen::VectorXd s =
      Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd>(gram, Eigen::EigenvaluesOnly).eigenvalues().cwiseMax(0.0).cwiseSqrt();
  const double total = s.sum();
  if (total <= 0) return 0;
  double h = 0;
  for (Eigen::Index i = 0; i < s.size(); ++i)
    if (s(i) > 0) h -= s(i) / total * std::log(s(i) / total);
  return std::exp(h);
}

// [SECTION] files -------------------------------------------------------------------------------------------------

namespace {

using nlohmann::json;

std::string npy_of(const Matrix& m) {
  Tensor<double> t({m.rows(), m.cols()});
  Eigen::Map<Matrix>(t.ptr(), m.rows(), m.cols()) = m;
  return io::encode_npy(t);
}
std::string npy_of(const std::vector<int>& v) {
  Tensor<std::int32_t> t({static_cast<index_t>(v.size())});
  for (size_t i = 0; i < v.size(); ++i) t.data[i] = v[i];
  return io::encode_npy(t);
}

Matrix read_matrix(const std::string& dir, const std::string& name, index_t rows, index_t cols) {
  const std::string path = (std::filesystem::path(dir) / (name + ".npy")).string();
  const Tensor<double> t = io::to_tensor<double>(io::read_npy(path, path), path);
  if (t.numel() != rows * cols)
    throw InputError(path + ": shape " + shape_str(t.shape) + ", expected " + std::to_string(rows) + " x " + std::to_string(cols));
  return Eigen::Map<const Matrix>(t.ptr(), rows, cols);
}

// T integers, each in [lo, hi] (an int64 entry is refused rather than truncated to int).
std::vector<int> read_ints(const std::string& dir, const std::string& name, int T, index_t lo, index_t hi) {
  const std::string path = (std::filesystem::path(dir) / (name + ".npy")).string();
  const std::vector<index_t> v = io::to_index_vector(io::read_npy(path, path), path);
  if (static_cast<int>(v.size()) != T) throw InputError(path + ": " + std::to_string(v.size()) + " entries, expected T = " + std::to_string(T));
  for (size_t t = 0; t < v.size(); ++t)
    if (v[t] < lo || v[t] > hi)
      throw InputError(path + ": " + std::to_string(v[t]) + " at token " + std::to_string(t) + " (expected " +
                       std::to_string(lo) + " .. " + std::to_string(hi) + ")");
  return std::vector<int>(v.begin(), v.end());
}

// K, V and T of trace.json: integers in [1, hi] (8.5 is refused, not truncated to 8).
int read_size(const json& j, const char* key, int hi, const std::string& file) {
  if (!j.contains(key)) throw InputError(file + ": key '" + std::string(key) + "' is missing");
  const json& v = j.at(key);
  if (!v.is_number_integer() || v.get<std::int64_t>() < 1 || v.get<std::int64_t>() > hi)
    throw InputError(file + ": key '" + std::string(key) + "' must be an integer in 1 .. " + std::to_string(hi) + " (got " +
                     v.dump().substr(0, 40) + ")");
  return v.get<int>();
}

}  // namespace

void save_trace(const std::string& dir, const Trace& tr) {
  json meta = {{"format", "gdn2-trace-1"}, {"title", tr.title}, {"story", tr.story}, {"kind", tr.kind},
               {"variant", tr.variant}, {"K", tr.K}, {"V", tr.V}, {"T", tr.T}, {"scale", tr.scale},
               {"labels", tr.labels}, {"value_names", tr.value_names},
               {"equation", "S_t = (I - k_t (b_t*k_t)^T) Diag(exp g_t) S_{t-1} + k_t (w_t*v_t)^T, o_t = S_t^T (scale q_t) (Eq. 9)"}};
  std::vector<std::pair<std::string, std::string>> files = {{"trace.json", meta.dump(2) + "\n"}};
  const std::pair<const char*, const Matrix*> arrays[] = {{"q", &tr.q}, {"k", &tr.k}, {"g", &tr.g}, {"b", &tr.b},
                                                          {"alpha", &tr.alpha}, {"e", &tr.e}, {"v", &tr.v}, {"w", &tr.w},
                                                          {"z", &tr.z}, {"r", &tr.r}, {"o", &tr.o}};
  for (const auto& [name, m] : arrays) files.emplace_back(std::string(name) + ".npy", npy_of(*m));
  Tensor<double> S({tr.T + 1, tr.K, tr.V});
  for (int t = 0; t <= tr.T; ++t) Eigen::Map<Matrix>(S.ptr() + index_t(t) * tr.K * tr.V, tr.K, tr.V) = tr.S[t];
  files.emplace_back("S.npy", io::encode_npy(S));
  // Convenience for readers: the residual z_t − r_t that is written along k_t.
  files.emplace_back("z_minus_r.npy", npy_of(Matrix(tr.z - tr.r)));
  const std::pair<const char*, const std::vector<int>*> ints[] = {{"tokens", &tr.tokens}, {"roles", &tr.roles},
                                                                  {"targets", &tr.targets}, {"source", &tr.source},
                                                                  {"predicted", &tr.predicted}};
  for (const auto& [name, v] : ints) files.emplace_back(std::string(name) + ".npy", npy_of(*v));
  if (tr.values.rows() > 0) files.emplace_back("values.npy", npy_of(tr.values));
  io::write_files_atomically(dir, files);
}

Trace load_trace(const std::string& dir) {
  using json_file::read;
  const json_file::Written written = json_file::parse_written(dir, "trace.json", "gdn2-trace-1", "a trace directory written by gdn2 trace");
  const std::string& file = written.file;
  const json& j = written.object;
  Trace tr;
  // Every key save_trace writes is required (but "equation", which is for human readers).
  read(j, "", "title", tr.title, file);
  read(j, "", "story", tr.story, file);
  read(j, "", "kind", tr.kind, file);
  if (tr.kind != "scenario" && tr.kind != "model" && tr.kind != "random")
    throw InputError(file + ": key 'kind' is '" + tr.kind.substr(0, 40) + "' (expected scenario, model or random)");
  read(j, "", "variant", tr.variant, file);
  try {
    parse_variant(tr.variant);
  } catch (const InputError& e) {
    throw InputError(file + ": key 'variant': " + e.what());
  }
  tr.K = read_size(j, "K", 4096, file);
  tr.V = read_size(j, "V", 4096, file);
  tr.T = read_size(j, "T", 1000000, file);
  read(j, "", "scale", tr.scale, file);
  read(j, "", "labels", tr.labels, file);
  read(j, "", "value_names", tr.value_names, file);
  if (static_cast<int>(tr.labels.size()) != tr.T) throw InputError(file + ": labels has " + std::to_string(tr.labels.size()) + " entries, expected T");
  for (auto [name, m, cols] : {std::tuple{"q", &tr.q, tr.K}, {"k", &tr.k, tr.K}, {"g", &tr.g, tr.K}, {"b", &tr.b, tr.K},
                               {"alpha", &tr.alpha, tr.K}, {"e", &tr.e, tr.K}, {"v", &tr.v, tr.V}, {"w", &tr.w, tr.V},
                               {"z", &tr.z, tr.V}, {"r", &tr.r, tr.V}, {"o", &tr.o, tr.V}})
    *m = read_matrix(dir, name, tr.T, cols);
  const Matrix S = read_matrix(dir, "S", index_t(tr.T + 1) * tr.K, tr.V);
  for (int t = 0; t <= tr.T; ++t) tr.S.push_back(S.middleRows(index_t(t) * tr.K, tr.K));
  // Token ids of the model's vocabulary (tasks allow at most 1000000); -1 marks "none" (scenario traces have no
  // tokens; non-query positions no target or prediction).
  tr.tokens = read_ints(dir, "tokens", tr.T, -1, 999999);
  tr.roles = read_ints(dir, "roles", tr.T, -1, 3);
  tr.targets = read_ints(dir, "targets", tr.T, -1, 999999);
  tr.source = read_ints(dir, "source", tr.T, -1, tr.T - 1);
  tr.predicted = read_ints(dir, "predicted", tr.T, -1, 999999);
  if (tr.kind == "scenario" && tr.value_names.empty())
    throw InputError(file + ": value_names is empty (a scenario trace names its candidate values A, B, ...)");
  if (!tr.value_names.empty()) tr.values = read_matrix(dir, "values", static_cast<index_t>(tr.value_names.size()), tr.V);
  if (!(tr.g.array() <= 0).all()) throw InputError(file + ": g.npy holds values outside [-inf, 0]");
  const Matrix* arrays[] = {&tr.q, &tr.k, &tr.b, &tr.alpha, &tr.e, &tr.v, &tr.w, &tr.z, &tr.r, &tr.o, &tr.values};
  const char* names[] = {"q", "k", "b", "alpha", "e", "v", "w", "z", "r", "o", "values"};
  for (int i = 0; i < 11; ++i)
    if (!arrays[i]->allFinite()) throw InputError(file + ": " + names[i] + ".npy holds non-finite values");
  for (const Matrix& S : tr.S)
    if (!S.allFinite()) throw InputError(file + ": S.npy holds non-finite values");
  return tr;
}

}  // namespace gdn2::model
