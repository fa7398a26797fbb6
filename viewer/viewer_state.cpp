// gdn2-viewer — the panel data model (viewer_state.hpp).
#include "viewer_state.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>

namespace gdn2::viewer {

namespace {

std::string leaf(const std::string& dir) {
  std::string d = dir;
  while (!d.empty() && d.back() == '/') d.pop_back();
  return std::filesystem::path(d).filename().string();
}

model::Trace trace_checkpoint(const model::Checkpoint& ck, const tasks::Example& ex, int block, int head) {
  return model::trace_model(ck.model, ck.params, ex, block, head);
}

}  // namespace

void ViewerState::reload() {
  status.clear();
  try {
    main = {};
    other = {};
    if (source == SourceKind::scenario) {
      const Variant v = parse_variant(variant), cv = parse_variant(compare_variant);
      main.trace = model::trace_scenario(tasks::make_scenario(scenario, v), variant_name(v));
      other.trace = model::trace_scenario(tasks::make_scenario(scenario, cv), variant_name(cv));
      main.label = variant_name(v);
      other.label = variant_name(cv);
    } else if (source == SourceKind::checkpoint) {
      if (!checkpoint) checkpoint = model::load_checkpoint(checkpoint_dir);
      std::string sibling = compare_checkpoint_dir;
      if (sibling.empty()) {
        // mqar-tiny-gdn2 → mqar-tiny-kda next to it, when present
        const std::string name = leaf(checkpoint_dir);
        const auto dash = name.rfind('-');
        const std::filesystem::path cand = std::filesystem::path(checkpoint_dir).parent_path() / (name.substr(0, dash) + "-kda");
        if (dash != std::string::npos && name.substr(dash + 1) != "kda" && std::filesystem::exists(cand / "config.json"))
          sibling = cand.string();
      }
      if (!sibling.empty() && !compare_checkpoint) compare_checkpoint = model::load_checkpoint(sibling);
      model::Checkpoint shown = *checkpoint;  // the task may be swapped for another of the same vocabulary and length
      if (!task.empty()) shown.task.kind = tasks::parse_task(task);
      tasks::validate(shown.task);
      const tasks::Example ex = custom_sequence.empty() ? model::heldout_example(shown, example)
                                                        : tasks::parse_sequence(custom_sequence, checkpoint->model.vocab);
      main.trace = trace_checkpoint(*checkpoint, ex, block, head);
      main.trace.title = leaf(checkpoint_dir) + (custom_sequence.empty() ? std::string(" on held-out ") + tasks::task_name(shown.task.kind) +
                                                                          " example " + std::to_string(example)
                                                                    : std::string(" on a typed sequence"));
      main.label = std::string(variant_name(checkpoint->model.variant)) + " model (" + leaf(checkpoint_dir) + ")";
      main.trace.story =
          "A model trained on MQAR: key-value pairs, then the keys again. Each value token writes its pair into S "
          "(the short convolution lets k come from the key before it); each query reads S with its key and must "
          "return the value. Watch b and w at value tokens (erase and write), and the readout at queries. Red "
          "tokens are queries the model got wrong.";
      if (compare_checkpoint) {
        other.trace = trace_checkpoint(*compare_checkpoint, ex, std::min(block, compare_checkpoint->model.blocks - 1),
                                       std::min(head, compare_checkpoint->model.heads - 1));
        other.label = std::string(variant_name(compare_checkpoint->model.variant)) + " model (" + leaf(sibling) + ")";
      }
    } else {
      main.trace = model::load_trace(trace_dir);
      main.label = main.trace.variant + " trace (" + leaf(trace_dir) + ")";
    }
    main.layer = model::layer_of(main.trace);
    main.scale = main.trace.scale;
    if (other.trace.T > 0) {
      other.layer = model::layer_of(other.trace);
      other.scale = other.trace.scale;
    }
    if (!overrides.empty()) apply_overrides();
    update_ranges();
  } catch (const std::exception& e) {
    status = e.what();
    if (main.trace.T == 0) {  // never leave the panels without a sequence: fall back to the default scenario
      main.trace = model::trace_scenario(tasks::make_scenario("overwrite-erase"));
      main.layer = model::layer_of(main.trace);
      main.label = "gdn2";
      update_ranges();
    }
  }
  set_step(step);
}

void ViewerState::apply_overrides() {
  auto run = [&](Run& r) {
    if (r.trace.T == 0) return;
    Layer<double> x = r.layer;  // the inputs as loaded: overrides never accumulate
    for (const GateOverride& o : overrides) {
      if (o.token < 0 || o.token >= r.trace.T) continue;
      Tensor<double>& gate = o.gate == GateOverride::write_w ? x.w : o.gate == GateOverride::decay_g ? x.g : x.b;
      const index_t C = gate.shape[3];
      for (index_t c = 0; c < C; ++c)
        if (o.channel < 0 || o.channel == c) gate.data[o.token * C + c] = o.value;
    }
    r.trace = model::retrace(r.trace, x);  // keeps the labels, tokens and predictions
  };
  try {
    run(main);
    run(other);
    update_ranges();
  } catch (const std::exception& e) {
    status = e.what();
  }
}

void ViewerState::update_ranges() {
  for (Run* r : {&main, &other})
    if (r->trace.T > 0) r->state_range = state_range(r->trace), r->update_range = update_range(r->trace);
}

void ViewerState::set_step(int t) { step = std::clamp(t, 0, std::max(0, length() - 1)); }

namespace {
// The 99th percentile of the nonzero magnitudes: one outlier cell must not wash out the rest of the picture
// (values beyond the range saturate, and the hover tooltip still shows them exactly).
double robust_range(std::vector<double>& mags) {
  if (mags.empty()) return 1;
  const size_t k = std::min(mags.size() - 1, static_cast<size_t>(0.99 * mags.size()));
  std::nth_element(mags.begin(), mags.begin() + k, mags.end());
  return mags[k] > 0 ? mags[k] : 1;
}
void collect(std::vector<double>& mags, const Matrix& m) {
  for (Eigen::Index i = 0; i < m.size(); ++i)
    if (m.data()[i] != 0) mags.push_back(std::abs(m.data()[i]));
}
}  // namespace

double state_range(const model::Trace& tr) {
  std::vector<double> mags;
  for (const Matrix& S : tr.S) collect(mags, S);
  return robust_range(mags);
}

double update_range(const model::Trace& tr) {
  std::vector<double> mags;
  for (int t = 0; t < tr.T; ++t) {
    const model::UpdateParts u = model::update_parts(tr, t);
    collect(mags, u.decay), collect(mags, u.erase), collect(mags, u.write);
  }
  return robust_range(mags);
}

std::vector<QueryResult> query_results(const model::Trace& tr) {
  std::vector<QueryResult> out;
  for (int t = 0; t < tr.T; ++t) {
    if (tr.roles[t] != static_cast<int>(tasks::Role::query)) continue;
    QueryResult q;
    q.token = t;
    q.cosine = model::recall_cosine(tr, t);
    if (tr.kind == "model") {
      q.label = tr.labels[t];
      q.answer = "v" + std::to_string(tr.predicted[t]);
      q.has_expected = tr.targets[t] >= 0;
      q.expected = q.has_expected ? "v" + std::to_string(tr.targets[t]) : "";
      q.correct = q.has_expected && tr.predicted[t] == tr.targets[t];
    } else {
      q.label = tr.labels[t];
      const int nearest = model::nearest_value(tr, t);
      const double norm = tr.o.row(t).norm();
      q.answer = nearest < 0 ? "nothing (o = 0)" : tr.value_names[nearest] + " (|o| = " + std::to_string(norm).substr(0, 4) + ")";
      q.has_expected = true;
      if (tr.source[t] >= 0) {
        // the right answer: the candidate nearest to what was written at the source token (z there)
        Eigen::Index best;
        (tr.values * tr.v.row(tr.source[t]).transpose()).maxCoeff(&best);
        q.expected = tr.value_names[best];
        q.correct = nearest == best && q.cosine > 0.99;
      } else {
        q.expected = "nothing (erased)";
        q.correct = norm < 1e-9;
      }
    }
    out.push_back(q);
  }
  return out;
}

Capacity capacity(const model::Trace& tr, int t) {
  Capacity c;
  c.effective_rank = model::effective_rank(tr.S[std::clamp(t + 1, 0, tr.T)]);
  c.fraction = c.effective_rank / std::min(tr.K, tr.V);
  return c;
}

CellEquation cell_equation(const model::Trace& tr, int t, int i, int j) {
  return {tr.alpha(t, i), tr.S[t](i, j), tr.k(t, i), tr.r(t, j), tr.z(t, j), tr.S[t + 1](i, j)};
}

std::string role_name(int role) {
  switch (role) {
    case 0: return "filler";
    case 1: return "key";
    case 2: return "value";
    case 3: return "query";
  }
  return "?";
}

}  // namespace gdn2::viewer
