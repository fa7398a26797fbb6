// gdn2-viewer — the panel data model (viewer_state.hpp).
#include "viewer_state.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace gdn2::viewer {

namespace {

std::string leaf(const std::string& dir) {
  std::string d = dir;
  while (!d.empty() && d.back() == '/') d.pop_back();
  return std::filesystem::path(d).filename().string();
}

std::string fixed(double x, int digits = 2) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}

const char* gate_name(GateOverride::Gate g) {
  return g == GateOverride::erase_b ? "b" : g == GateOverride::write_w ? "w" : "g";
}

// The example a checkpoint run shows (held-out, or typed), for the task chosen.
tasks::Example shown_example(const ViewerState& st) {
  model::Checkpoint shown = *st.checkpoint;  // the task may be swapped for another of the same vocabulary and length
  if (!st.task.empty()) shown.task.kind = tasks::parse_task(st.task);
  tasks::validate(shown.task);
  return st.custom_sequence.empty() ? model::heldout_example(shown, st.example)
                                    : tasks::parse_sequence(st.custom_sequence, st.checkpoint->model.vocab);
}

const char* kModelStory =
    "A model trained on MQAR: key-value pairs, then the keys again. Each value token writes its pair into S "
    "(the short convolution lets k come from the key before it); each query reads S with its key and must "
    "return the value. Watch b and w at value tokens (erase and write), and the readout at queries. Red "
    "tokens are queries the model got wrong.";

}  // namespace

// [SECTION] loading -----------------------------------------------------------------------------------------------

void ViewerState::reload() {
  status.clear();
  override_note.clear();
  try {
    main = {};
    other = {};
    if (source == SourceKind::scenario) {
      const Variant v = parse_variant(variant), cv = parse_variant(compare_variant);
      main.trace = model::trace_scenario(tasks::make_scenario(scenario, v), variant_name(v));
      other.trace = model::trace_scenario(tasks::make_scenario(scenario, cv), variant_name(cv));
      main.label = main.variant = variant_name(v);
      other.label = other.variant = variant_name(cv);
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
      compare_checkpoint_dir = sibling;
      const tasks::Example ex = shown_example(*this);
      main.trace = model::trace_model(checkpoint->model, checkpoint->params, ex, block, head);
      main.trace.title = leaf(checkpoint_dir) + (custom_sequence.empty() ? " on held-out " + (task.empty() ? std::string(tasks::task_name(checkpoint->task.kind)) : task) +
                                                                          " example " + std::to_string(example)
                                                                    : std::string(" on a typed sequence"));
      main.variant = variant_name(checkpoint->model.variant);
      main.label = main.variant + " model (" + leaf(checkpoint_dir) + ")";
      main.trace.story = kModelStory;
      if (compare_checkpoint) {
        const model::ModelConfig& mc = compare_checkpoint->model;
        other.trace = model::trace_model(mc, compare_checkpoint->params, ex, std::min(block, mc.blocks - 1), std::min(head, mc.heads - 1));
        other.variant = variant_name(mc.variant);
        other.label = other.variant + " model (" + leaf(sibling) + ")";
      }
    } else {
      main.trace = model::load_trace(trace_dir);
      main.variant = main.trace.variant;
      main.label = main.trace.variant + " trace (" + leaf(trace_dir) + ")";
    }
    main.layer = model::layer_of(main.trace);
    if (other.trace.T > 0) other.layer = model::layer_of(other.trace);
    main.queries = query_results(main.trace);
    other.queries = query_results(other.trace);
    main_before_overrides = main.queries;
    if (!overrides.empty()) apply_overrides();
    update_ranges();
  } catch (const std::exception& e) {
    status = e.what();
    if (main.trace.T == 0) {  // never leave the panels without a sequence: fall back to the default scenario
      main = {};
      main.trace = model::trace_scenario(tasks::make_scenario("overwrite-erase"));
      main.layer = model::layer_of(main.trace);
      main.label = main.variant = "gdn2";
      main.queries = main_before_overrides = query_results(main.trace);
      other = {};
      update_ranges();
    }
  }
  set_step(step);
}

void ViewerState::apply_overrides() {
  override_note.clear();
  auto run_scenario = [&](Run& r) {  // one head is the whole computation: re-run the recurrence
    if (r.trace.T == 0) return;
    Layer<double> x = r.layer;        // the inputs as loaded: overrides never accumulate
    for (const GateOverride& o : overrides) {
      if (o.token < 0 || o.token >= r.trace.T) continue;
      Tensor<double>& gate = o.gate == GateOverride::write_w ? x.w : o.gate == GateOverride::decay_g ? x.g : x.b;
      const index_t C = gate.shape[3];
      for (index_t c = 0; c < C; ++c)
        if (o.channel < 0 || o.channel == c) gate.data[o.token * C + c] = o.value;
    }
    r.trace = model::retrace(r.trace, x);
  };
  try {
    if (source == SourceKind::checkpoint && checkpoint) {
      // The whole model re-runs with the gates set (model.hpp): later tokens, later blocks and the logits follow.
      const tasks::Example ex = shown_example(*this);
      const std::string title = main.trace.title, story = main.trace.story;
      main.trace = model::trace_model(checkpoint->model, checkpoint->params, ex, block, head, overrides);
      main.trace.title = title, main.trace.story = story;
      if (compare_checkpoint && other.trace.T > 0) {
        const model::ModelConfig& mc = compare_checkpoint->model;
        std::vector<GateOverride> theirs = overrides;
        for (GateOverride& o : theirs) o.block = std::min(block, mc.blocks - 1), o.head = std::min(head, mc.heads - 1);
        other.trace = model::trace_model(mc, compare_checkpoint->params, ex, theirs.empty() ? 0 : theirs[0].block,
                                         theirs.empty() ? 0 : theirs[0].head, theirs);
      }
    } else {
      run_scenario(main);
      run_scenario(other);
    }
    main.queries = query_results(main.trace);
    other.queries = query_results(other.trace);
    update_ranges();
  } catch (const std::exception& e) {
    status = e.what();
    overrides.pop_back();  // the last one was refused: keep what ran
    return;
  }
  if (overrides.empty()) return;
  std::string note = "Set by hand (re-run through the reference):";
  for (const GateOverride& o : overrides)
    note += std::string(" ") + gate_name(o.gate) + " = " + (std::isinf(o.value) ? std::string("-inf") : fixed(o.value)) +
            " at token " + std::to_string(o.token) + (o.channel < 0 ? " (all channels);" : " (channel " + std::to_string(o.channel) + ");");
  note.pop_back();
  note += ".";
  std::string changed;
  for (size_t i = 0; i < main.queries.size() && i < main_before_overrides.size(); ++i) {
    const QueryResult &a = main_before_overrides[i], &b = main.queries[i];
    if (a.answer != b.answer || a.correct != b.correct)
      changed += " " + b.label + ": " + (a.correct ? "ok " : "X ") + a.answer + " -> " + (b.correct ? "ok " : "X ") + b.answer + ";";
  }
  if (changed.empty()) note += " No query's answer changed.";
  else changed.pop_back(), note += " Now:" + changed + ".";
  override_note = note;
}

void ViewerState::set_gate(GateOverride::Gate gate, int channel, double value) {
  GateOverride o;
  o.gate = gate, o.block = block, o.head = head, o.token = step, o.channel = channel, o.value = value;
  status.clear();
  overrides.push_back(o);
  apply_overrides();
}

void ViewerState::select_source(SourceKind kind) {
  if (kind == source) return;
  source = kind;
  overrides.clear();
  if (kind == SourceKind::trace_dir && trace_dir.empty()) {
    status = "type a trace directory (written by gdn2 trace or the export button) and press load";
    return;
  }
  if (kind == SourceKind::checkpoint && checkpoint_dir.empty()) {
    status = "type a checkpoint directory (written by gdn2 train) and press load";
    return;
  }
  reload();
}

void ViewerState::update_ranges() {
  for (Run* r : {&main, &other})
    if (r->trace.T > 0) r->state_range = state_range(r->trace);
}

void ViewerState::set_step(int t) { step = std::clamp(t, 0, std::max(0, length() - 1)); }

void ViewerState::handle_key(Key key) {
  switch (key) {
    case Key::left: set_step(step - 1), playing = false; break;
    case Key::right: set_step(step + 1), playing = false; break;
    case Key::home: set_step(0), playing = false; break;
    case Key::end: set_step(length() - 1), playing = false; break;
    case Key::play: playing = !playing; break;
    case Key::next:
      if (tour >= 0 && tour + 1 < static_cast<int>(tour_steps().size())) start_tour(tour + 1);
      break;
    case Key::back:
      if (tour > 0) start_tour(tour - 1);
      break;
    case Key::escape: end_tour(); break;
  }
}

std::string ViewerState::story() const {
  return override_note.empty() ? main.trace.story : main.trace.story + "\n\n" + override_note;
}

bool ViewerState::states_comparable() const {
  return other.trace.T == main.trace.T && other.trace.K == main.trace.K && other.trace.V == main.trace.V &&
         main.trace.kind == "scenario" && other.trace.kind == "scenario";
}

std::string ViewerState::difference_label() const { return "S_" + main.variant + " - S_" + other.variant; }

// [SECTION] tour --------------------------------------------------------------------------------------------------

const std::vector<TourStep>& tour_steps() {
  // step −1: the first query of the sequence
  static const std::vector<TourStep> steps = {
      {"1. A write", "Token 0 writes A along key k0: the write heatmap is the outer product k z^T, so row 0 of S "
       "now holds A. Keys are rows of S, values are columns.", SourceKind::scenario, "overwrite-erase", "kda", false, 0,
       "Update of this token"},
      {"2. Overwrite without erase", "k0 held A and token 3 rebinds it to D with the erase gate closed (b = 0): "
       "nothing is read back, D lands on top of A. The query of k0 returns 1.00 A + 1.00 D: marked wrong.",
       SourceKind::scenario, "overwrite-no-erase", "kda", false, 4, "Readout"},
      {"3. Overwrite with erase", "The same rebinding with b = 1: the read r = S^T (b*k) is A, and the erase "
       "heatmap removes exactly A from row 0 as D is written. The query of k0 (token 4) returns 1.00 D.",
       SourceKind::scenario, "overwrite-erase", "kda", false, 3, "Update of this token"},
      {"4. A partial write", "w = 1 on the first half of the value channels only: the query at token 2 gets half "
       "of A and is marked wrong. Step to token 4: a second write (b = 0, the other half) completes it, 1.00 A.",
       SourceKind::scenario, "partial-write", "kda", false, 2, "Readout"},
      {"5. Forgetting by decay", "Four tokens decay key channels 0 and 1 (g = -1, alpha = 0.37 each) and write "
       "nothing: rows 0 and 1 fade to 2% without any read. The query of k0 returns 0.02 A (faded); k3 still 1.00 D.",
       SourceKind::scenario, "decay-forgetting", "kda", false, 8, "Readout"},
      {"6. What one shared beta cannot do", "The update wants b = 1 (erase A fully) and w = 0.5 (write D at half "
       "strength). GDN-2 erases A and writes 0.50 D; tied as KDA, one beta = 0.75 erases 75% of A and writes 0.75 D: "
       "its query returns 0.25 A + 0.75 D (Readout).",
       SourceKind::scenario, "soft-update", "kda", true, 2, "Update of this token"},
      {"7. A trained model", "The tiny model trained on MQAR, next to its KDA twin on the same tokens: both answer "
       "every query. Their memories use different bases, so compare readouts and verdicts, not cells. Now set a "
       "gate by hand: w = 0 at the value token this query needs, and the model's answer breaks.",
       SourceKind::checkpoint, "", "kda", true, -1, "Readout"},
  };
  return steps;
}

void ViewerState::start_tour(int index) {
  const auto& steps = tour_steps();
  tour = std::clamp(index, 0, static_cast<int>(steps.size()) - 1);
  const TourStep& s = steps[tour];
  overrides.clear();
  source = s.source;
  if (s.source == SourceKind::scenario) scenario = s.scenario, variant = "gdn2";
  else task.clear(), custom_sequence.clear(), example = 0;
  compare_variant = s.compare_variant;
  compare = s.compare;
  playing = false;
  reload();
  if (s.step >= 0) set_step(s.step);
  else
    for (int t = 0; t < length(); ++t)
      if (main.trace.roles[t] == static_cast<int>(tasks::Role::query)) {
        set_step(t);
        break;
      }
}

void ViewerState::end_tour() { tour = -1; }

// [SECTION] verdicts ----------------------------------------------------------------------------------------------

std::string mix_text(const model::ReadoutMix& m) {
  std::string s;
  for (size_t i = 0; i < m.coefficients.size(); ++i) {
    const double c = m.coefficients[i];
    if (std::abs(c) < 0.005) continue;
    s += s.empty() ? (c < 0 ? "-" : "") : (c < 0 ? " - " : " + ");
    s += fixed(std::abs(c)) + " " + m.names[i];
  }
  if (s.empty()) s = m.norm < 1e-9 ? "0" : "none of the stored values";
  if (m.residual > 0.05 && !m.coefficients.empty()) s += " + " + fixed(100 * m.residual, 0) + "% unexplained";
  return s;
}

std::vector<QueryResult> query_results(const model::Trace& tr) {
  std::vector<QueryResult> out;
  for (int t = 0; t < tr.T; ++t) {
    if (tr.roles[t] != static_cast<int>(tasks::Role::query)) continue;
    QueryResult q;
    q.token = t;
    q.label = tr.labels[t];
    q.cosine = model::recall_cosine(tr, t);
    const model::ReadoutMix m = model::readout_mix(tr, t);
    q.mix = mix_text(m);
    if (tr.kind == "model") {
      q.answer = "v" + std::to_string(tr.predicted[t]);
      q.has_expected = tr.targets[t] >= 0;
      q.expected = q.has_expected ? "v" + std::to_string(tr.targets[t]) : "";
      q.correct = q.has_expected && tr.predicted[t] == tr.targets[t];
      out.push_back(q);
      continue;
    }
    q.has_expected = true;
    q.answer = m.norm < 1e-9 ? "nothing (o = 0)" : q.mix;
    const int src = tr.source[t];
    if (src < 0) {
      q.expected = "nothing (erased)";
      q.correct = m.norm < 1e-9;
      out.push_back(q);
      continue;
    }
    // The expected value: the candidate presented at the source token (the one written, whatever its gates).
    int expected = -1;
    for (Eigen::Index c = 0; c < tr.values.rows(); ++c)
      if ((tr.v.row(src) - tr.values.row(c)).norm() < 1e-12) expected = static_cast<int>(c);
    if (expected < 0 && tr.values.rows() > 0) {
      Eigen::Index best;
      (tr.values * tr.v.row(src).transpose()).maxCoeff(&best);
      expected = static_cast<int>(best);
    }
    if (expected < 0) {
      q.expected = "?";
      out.push_back(q);
      continue;
    }
    q.expected = tr.value_names[expected];
    double own = 0, others = 0;
    for (size_t i = 0; i < m.basis.size(); ++i)
      if (m.basis[i] == expected) own = m.coefficients[i];
      else others = std::max(others, std::abs(m.coefficients[i]));
    q.correct = own >= kFadedBelow && others <= 0.05 * own && m.residual <= 0.05;
    if (own > 0 && own < kFadedBelow && others <= 0.05 * own) q.answer += " (faded)";
    out.push_back(q);
  }
  return out;
}

// [SECTION] scales ------------------------------------------------------------------------------------------------

namespace {
double max_abs(double sofar, const Matrix& m) { return m.size() ? std::max(sofar, m.cwiseAbs().maxCoeff()) : sofar; }
double or_one(double r) { return r > 0 && std::isfinite(r) ? r : 1; }
}  // namespace

double state_range(const model::Trace& tr) {
  double r = 0;
  for (const Matrix& S : tr.S) r = max_abs(r, S);
  return or_one(r);
}

double update_range(const model::Trace& tr, int t) {
  const model::UpdateParts u = model::update_parts(tr, t);
  return or_one(max_abs(max_abs(max_abs(0, u.decay), u.erase), u.write));
}

double difference_range(const model::Trace& a, const model::Trace& b) {
  double r = 0;
  for (size_t t = 0; t < a.S.size() && t < b.S.size(); ++t)
    if (a.S[t].rows() == b.S[t].rows() && a.S[t].cols() == b.S[t].cols()) r = max_abs(r, a.S[t] - b.S[t]);
  return or_one(r);
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

// [SECTION] files -------------------------------------------------------------------------------------------------

std::string user_output_dir() {
  const char* xdg = std::getenv("XDG_DATA_HOME");
  if (xdg && *xdg == '/') return (std::filesystem::path(xdg) / "gdn2-viewer").string();
  const char* home = std::getenv("HOME");
  if (home && *home == '/') return (std::filesystem::path(home) / ".local/share/gdn2-viewer").string();
  return (std::filesystem::temp_directory_path() / "gdn2-viewer").string();
}

std::string output_path(const std::string& typed) {
  const std::filesystem::path p(typed);
  return (p.is_absolute() ? p : std::filesystem::path(user_output_dir()) / p).lexically_normal().string();
}

std::string trace_export_path(const std::string& typed) {
  return output_path((std::filesystem::path(typed) / "trace").string());
}

void check_output_file(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;  // absent: it will be created
  if (S_ISREG(st.st_mode)) return;              // a regular file: replaced as a whole
  const char* what = S_ISLNK(st.st_mode) ? "a symbolic link" : S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                     : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : S_ISSOCK(st.st_mode) ? "a socket" : "not a regular file";
  throw OutputRefused(path + " is " + what + "; the viewer writes a regular file (replacing it), so give the path of one");
}

void write_file_checked(const std::string& path, const std::string& bytes) {
  namespace fs = std::filesystem;
  check_output_file(path);
  const fs::path target(path);
  std::error_code ec;
  // The missing parent directories this call creates, outermost first: removed again (when empty) on failure.
  std::vector<fs::path> created;
  if (target.has_parent_path()) {
    std::vector<fs::path> missing;
    for (fs::path p = target.parent_path(); !p.empty() && !fs::exists(fs::symlink_status(p, ec)); p = p.parent_path())
      missing.insert(missing.begin(), p);
    for (const fs::path& p : missing) {
      if (::mkdir(p.c_str(), 0777) != 0 && errno != EEXIST) break;  // reported by the open below
      created.push_back(p);
    }
  }
  const std::string tmp = path + ".partial" + std::to_string(::getpid());
  std::string failure;  // what failed, with the system's reason
  auto fail_with = [&](const std::string& what) {
    failure = what + ": " + std::strerror(errno);
    return false;
  };
  bool ok = false;
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (fd < 0) {
    fail_with("cannot write " + path);
  } else {
    ok = true;
    for (size_t done = 0; ok && done < bytes.size();) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) ok = fail_with("cannot write " + path);
      else done += static_cast<size_t>(n);
    }
    if (ok && ::fsync(fd) != 0) ok = fail_with("cannot write " + path);
    if (::close(fd) != 0 && ok) ok = fail_with("cannot write " + path);
    // Checked again just before the rename, which would replace a link, FIFO or device that appeared meanwhile.
    if (ok) {
      try {
        check_output_file(path);
      } catch (const OutputRefused& e) {
        ::unlink(tmp.c_str());
        for (auto it = created.rbegin(); it != created.rend(); ++it) ::rmdir(it->c_str());
        throw;
      }
    }
    if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) ok = fail_with("cannot rename the new file to " + path);
  }
  if (ok) return;
  ::unlink(tmp.c_str());
  for (auto it = created.rbegin(); it != created.rend(); ++it) ::rmdir(it->c_str());  // never a non-empty one
  throw std::runtime_error(failure);
}

}  // namespace gdn2::viewer
