// gdn2-viewer — panels (panels.hpp).
//
// [SECTION] index: colours · SequencePanel · ControlsPanel · StatePanel · UpdatePanel · GatesPanel · ReadoutPanel ·
// EquationPanel
#include "panels.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "draw.hpp"
#include "tasks/scenarios.hpp"

namespace gdn2::viewer {

namespace {

// [SECTION] colours -----------------------------------------------------------------------------------------------
ImVec4 role_colour(int role) {
  switch (role) {
    case 1: return ImVec4(0.20f, 0.45f, 0.80f, 1);  // key: blue
    case 2: return ImVec4(0.85f, 0.50f, 0.10f, 1);  // value: orange
    case 3: return ImVec4(0.20f, 0.60f, 0.30f, 1);  // query: green
  }
  return ImVec4(0.30f, 0.30f, 0.33f, 1);            // filler: grey
}
constexpr ImU32 kBarErase = IM_COL32(90, 150, 230, 255);
constexpr ImU32 kBarWrite = IM_COL32(230, 140, 40, 255);
constexpr ImU32 kBarDecay = IM_COL32(150, 150, 150, 255);
constexpr ImU32 kBarRead = IM_COL32(200, 80, 80, 255);
constexpr ImU32 kBarResidual = IM_COL32(110, 190, 110, 255);

const char* kGateHelp[] = {
    "b_t, the erase gate (one per key channel, Eq. 11). The read r_t = S^T (b_t * k_t) takes the old content along "
    "the key channels where b is open; that read is subtracted as the new value is written. b = 0: nothing is "
    "erased, the new value lands on top of the old one.",
    "w_t, the write gate (one per value channel, Eq. 11). Only w_t * v_t is written: a closed channel writes nothing "
    "there (but the erase still removes the old content read along b * k).",
    "g_t, the log-decay (one per key channel, Eq. 12): alpha = exp(g) multiplies every row of S before the update. "
    "g = 0 keeps the row, g -> -inf forgets it without reading anything."};

}  // namespace

// [SECTION] SequencePanel -----------------------------------------------------------------------------------------

void SequencePanel::Draw(ViewerState& st) {
  const model::Trace& tr = st.main.trace;
  if (ImGui::Button(st.playing ? "Pause" : "Play")) st.playing = !st.playing;
  ImGui::SameLine();
  if (ImGui::Button("<")) st.set_step(st.step - 1);
  ImGui::SameLine();
  if (ImGui::Button(">")) st.set_step(st.step + 1);
  ImGui::SameLine();
  ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x * 0.55f);
  int step = st.step;
  if (ImGui::SliderInt("token", &step, 0, std::max(0, tr.T - 1))) st.set_step(step);
  ImGui::SameLine();
  ImGui::SetNextItemWidth(120);
  ImGui::SliderFloat("tokens/s", &st.tokens_per_second, 0.5f, 30.f, "%.1f");
  help_marker("Each token applies Eq. 9 once: decay the rows of S, read the old value along b*k, write w*v minus that "
              "read along k. Click a token below to jump there; Play steps through the sequence.");
  ImGui::BeginChild("strip", ImVec2(0, 0), false, ImGuiWindowFlags_HorizontalScrollbar);
  for (int t = 0; t < tr.T; ++t) {
    if (t) ImGui::SameLine(0, 2);
    ImVec4 c = role_colour(tr.roles[t]);
    if (tr.kind == "model" && tr.targets[t] >= 0 && tr.predicted[t] != tr.targets[t]) c = ImVec4(0.75f, 0.15f, 0.15f, 1);
    if (t == st.step) c = ImVec4(0.95f, 0.85f, 0.1f, 1);
    ImGui::PushStyleColor(ImGuiCol_Button, c);
    ImGui::PushStyleColor(ImGuiCol_Text, t == st.step ? ImVec4(0, 0, 0, 1) : ImVec4(1, 1, 1, 1));
    ImGui::PushID(t);
    const std::string& label = tr.labels[t];
    const float w = std::max(cell_width, ImGui::CalcTextSize(label.c_str()).x + 8);
    if (ImGui::Button(label.empty() ? "." : label.c_str(), ImVec2(w, 0))) st.set_step(t), st.playing = false;
    if (ImGui::IsItemHovered())
      ImGui::SetTooltip("token %d: %s (%s)%s", t, label.c_str(), role_name(tr.roles[t]).c_str(),
                        tr.targets[t] >= 0 ? (" answer v" + std::to_string(tr.targets[t]) + ", model says v" +
                                              std::to_string(tr.predicted[t])).c_str() : "");
    if (t == st.step && (st.playing || st.step != last_step)) ImGui::SetScrollHereX(0.5f);
    ImGui::PopID();
    ImGui::PopStyleColor(2);
  }
  ImGui::EndChild();
  last_step = st.step;
}

// [SECTION] ControlsPanel -----------------------------------------------------------------------------------------

void ControlsPanel::Draw(ViewerState& st) {
  static const char* kVariants[] = {"gdn2", "kda", "gdn", "deltanet", "linear"};
  auto variant_combo = [](const char* label, std::string& v) {
    int i = 0;
    for (int j = 0; j < 5; ++j)
      if (v == kVariants[j]) i = j;
    const bool changed = ImGui::Combo(label, &i, kVariants, 5);
    v = kVariants[i];
    return changed;
  };
  if (!paths_initialised) {
    std::snprintf(checkpoint_dir, sizeof checkpoint_dir, "%s", st.checkpoint_dir.c_str());
    std::snprintf(trace_dir, sizeof trace_dir, "%s", st.trace_dir.c_str());
    paths_initialised = true;
  }
  // The guided tour: one step at a time, Next/Back (or the N/B keys), free exploration one click away.
  const auto& steps = tour_steps();
  if (st.tour >= 0) {
    const TourStep& s = steps[st.tour];
    ImGui::PushStyleColor(ImGuiCol_Text, ImVec4(1.0f, 0.85f, 0.3f, 1));
    ImGui::Text("Tour %d of %zu: %s", st.tour + 1, steps.size(), s.title.c_str() + 3);
    ImGui::PopStyleColor();
    ImGui::TextWrapped("%s", s.text.c_str());
    ImGui::TextDisabled("Look at: %s (outlined)", s.panel.c_str());
    if (st.tour == 0) ImGui::BeginDisabled();
    if (ImGui::Button("< Back")) st.handle_key(Key::back);
    if (st.tour == 0) ImGui::EndDisabled();
    ImGui::SameLine();
    if (st.tour + 1 == static_cast<int>(steps.size())) ImGui::BeginDisabled();
    if (ImGui::Button("Next >")) st.handle_key(Key::next);
    if (st.tour + 1 == static_cast<int>(steps.size())) ImGui::EndDisabled();
    ImGui::SameLine();
    if (ImGui::Button("explore freely")) st.end_tour();
    help_marker("Keys: N or Page Down for the next step, B or Page Up for the previous one, Esc to explore freely; "
                "left/right arrows step through the tokens, space plays.");
  } else {
    if (ImGui::Button("guided tour")) st.start_tour(0);
    ImGui::SameLine();
    ImGui::TextDisabled("keys: left/right step, space plays");
  }
  ImGui::Separator();
  const model::Trace& tr = st.main.trace;
  ImGui::TextWrapped("%s", tr.title.c_str());
  const std::string story = st.story();
  if (!story.empty()) {
    ImGui::PushStyleColor(ImGuiCol_Text, ImVec4(0.85f, 0.85f, 0.7f, 1));
    ImGui::TextWrapped("%s", story.c_str());
    ImGui::PopStyleColor();
  }
  ImGui::Separator();
  int src = static_cast<int>(st.source);
  bool reload = false, changed_source = false;
  changed_source |= ImGui::RadioButton("scenario##source", &src, 0);
  ImGui::SameLine();
  changed_source |= ImGui::RadioButton("checkpoint##source", &src, 1);
  ImGui::SameLine();
  changed_source |= ImGui::RadioButton("trace##source", &src, 2);
  help_marker("scenario: hand-set gates on one-hot keys, one idea each (no training). checkpoint: the tiny model "
              "trained on MQAR, on a held-out sequence or one you type. trace: a directory written by gdn2 trace.");
  if (changed_source) st.select_source(static_cast<SourceKind>(src));
  const float label_room = ImGui::CalcTextSize("checkpoint ").x;
  if (st.source == SourceKind::scenario) {
    if (scenario_names.empty())
      for (const std::string& n : tasks::scenario_names()) scenario_names += n + '\0';
    const auto names = tasks::scenario_names();
    int cur = static_cast<int>(std::find(names.begin(), names.end(), st.scenario) - names.begin());
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x - label_room);
    if (ImGui::Combo("scenario##combo", &cur, scenario_names.c_str())) st.scenario = names[cur], reload = true;
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x - label_room);
    reload |= variant_combo("gates", st.variant);
    help_marker("How the scripted gates are tied: gdn2 keeps them as scripted; kda uses one beta per token for both b "
                "and w (their mean); gdn also averages the decay; deltanet has no decay; linear never erases.");
  } else if (st.source == SourceKind::checkpoint) {
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x - 50);
    ImGui::InputTextWithHint("##ckdir", "checkpoint directory", checkpoint_dir, sizeof checkpoint_dir);
    ImGui::SameLine();
    if (ImGui::Button("load##ck")) st.checkpoint_dir = checkpoint_dir, st.checkpoint.reset(), st.compare_checkpoint.reset(),
                                   st.compare_checkpoint_dir.clear(), reload = true;
    static const char* kTasks[] = {"(its own)", "mqar", "overwrite", "mk-niah", "s-niah"};
    int task = 0;
    for (int j = 1; j < 5; ++j)
      if (st.task == kTasks[j]) task = j;
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x - label_room);
    if (ImGui::Combo("task", &task, kTasks, 5)) st.task = task == 0 ? "" : kTasks[task], reload = true;
    help_marker("Run the model on another task of the same vocabulary and length: overwrite rebinds keys (the model "
                "never saw that in training), the needle tasks hide pairs in filler words.");
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x - label_room);
    reload |= ImGui::InputInt("example", &st.example);
    st.example = std::max(0, st.example);
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x - 50);
    ImGui::InputTextWithHint("##seq", "type: k5 v40 k6 v41 . ?k5", sequence, sizeof sequence);
    ImGui::SameLine();
    if (ImGui::Button("run")) st.custom_sequence = sequence, reload = true;
    if (!st.custom_sequence.empty()) {
      if (ImGui::Button("clear typed sequence")) st.custom_sequence.clear(), sequence[0] = 0, reload = true;
    }
    help_marker("kN is key N (1..31), vN value N (32..63), ?kN asks for key N's value, . is the filler token. The model "
                "answers at each query position.");
  } else {
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x - 50);
    ImGui::InputTextWithHint("##trdir", "trace directory", trace_dir, sizeof trace_dir);
    ImGui::SameLine();
    if (ImGui::Button("load##tr")) st.trace_dir = trace_dir, reload = true;
  }
  ImGui::Checkbox("compare", &st.compare);
  if (st.source == SourceKind::scenario) {
    ImGui::SameLine();
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x - ImGui::CalcTextSize("with (?) ").x);
    reload |= variant_combo("with", st.compare_variant);
  }
  help_marker("Comparison mode: the same sequence through a second gate tying (scenarios) or a second checkpoint "
              "(the KDA model next to the GDN-2 one): both runs' memories, updates, gates, readouts and verdicts "
              "side by side. Scenarios share their key and value basis, so the difference of the states is shown "
              "too (on its own scale); two trained models do not, so compare their readouts.");
  ImGui::Separator();
  ImGui::Text("Set a gate by hand at token %d", st.step);
  help_marker("The sequence is re-run through the reference with this gate changed at this token: for a scenario "
              "the recurrence, for a checkpoint the whole model, so later tokens and the model's answers follow. "
              "The story above says what changed. 'reset gates' undoes them all.");
  const char* gates[] = {"b (erase)", "w (write)", "g (decay)"};
  ImGui::SetNextItemWidth(ImGui::CalcTextSize("g (decay)").x + 30);
  if (ImGui::Combo("gate", &override_gate, gates, 3)) override_value = override_gate == 2 ? -1.f : 0.f;
  ImGui::SameLine();
  ImGui::SetNextItemWidth(std::max(60.f, ImGui::GetContentRegionAvail().x - ImGui::CalcTextSize("channel (-1 = all)").x));
  ImGui::InputInt("channel (-1 = all)", &override_channel);
  override_channel = std::max(-1, override_channel);
  if (override_gate == 2) {
    ImGui::Checkbox("-inf", &override_minus_inf);
    ImGui::SameLine();
    if (override_minus_inf) ImGui::BeginDisabled();
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x - ImGui::CalcTextSize("value").x - 8);
    ImGui::SliderFloat("value", &override_value, -10.f, 0.f, "g = %.2f");
    if (override_minus_inf) ImGui::EndDisabled();
  } else {
    ImGui::SetNextItemWidth(ImGui::GetContentRegionAvail().x - ImGui::CalcTextSize("value").x - 8);
    ImGui::SliderFloat("value", &override_value, 0.f, 1.f, "%.2f");
  }
  if (ImGui::Button("apply")) {
    const double value = override_gate == 2 && override_minus_inf ? -INFINITY : std::clamp(override_value, override_gate == 2 ? -1e9f : 0.f,
                                                                                          override_gate == 2 ? 0.f : 1.f);
    st.set_gate(static_cast<GateOverride::Gate>(override_gate), override_channel, value);
  }
  ImGui::SameLine();
  if (ImGui::Button("reset gates")) st.overrides.clear(), reload = true;
  ImGui::SameLine();
  ImGui::Text("%zu set", st.overrides.size());
  ImGui::Separator();
  if (ImGui::Button("screenshot")) screenshot_requested = true;
  ImGui::SameLine();
  if (ImGui::Button("export trace")) {
    const std::string dir = trace_export_path(export_dir);
    try {
      model::save_trace(dir, tr);
      st.status = "trace written to " + dir;
    } catch (const std::exception& e) {
      st.status = e.what();
    }
  }
  help_marker("Both go to the directory below: a screenshot as gdn2-viewer-<step>.png, a trace into its trace/ "
              "folder (the next export replaces it). A relative name is placed under your user directory "
              "(~/.local/share/gdn2-viewer), never into the working directory. The status line says where.");
  ImGui::SetNextItemWidth(-1);
  ImGui::InputText("##exportdir", export_dir, sizeof export_dir);
  if (!st.status.empty()) ImGui::TextWrapped("%s", st.status.c_str());
  if (reload) st.reload();
}

// [SECTION] StatePanel --------------------------------------------------------------------------------------------

void StatePanel::Draw(ViewerState& st) {
  const model::Trace& tr = st.main.trace;
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  hovered_row = hovered_col = -1;
  int row = -1;  // highlight the row of a one-hot key
  Eigen::Index arg;
  if (tr.k.row(st.step).cwiseAbs().maxCoeff(&arg) > 0.99) row = static_cast<int>(arg);
  const bool cmp = st.compare && st.other.trace.T > 0;
  if (!cmp) {
    ImGui::Text("S after token %d (%s), %d key channels x %d value channels", st.step, tr.labels[st.step].c_str(), tr.K, tr.V);
    help_marker("The memory: row i belongs to key channel i, column j to value channel j. A key k reads the memory as "
                "o = S^T q: a stored association k -> v is the outer product k v^T. The colour range is the largest "
                "|S| of the whole sequence (nothing saturates) so colours compare across tokens. Hover a cell for its value.");
    const float side = std::min(avail.x, avail.y - 50);
    const Cell c = heatmap("S", tr.S[st.step + 1], st.main.state_range,
                           ImVec2(side * tr.V / std::max(tr.K, tr.V), side * tr.K / std::max(tr.K, tr.V)), "key ch", "value ch", row);
    hovered_row = c.row, hovered_col = c.col;
    legend(st.main.state_range, std::min(side, 320.f), "largest |S| in the sequence");
    return;
  }
  const model::Trace& ot = st.other.trace;
  const int t = std::min(st.step, ot.T - 1);
  const bool diff = st.states_comparable();
  const int n = diff ? 3 : 2;
  const float side = std::min((avail.x - 8 * n) / n, avail.y - 90);
  auto box = [&](const model::Trace& x) { return ImVec2(side * x.V / std::max(x.K, x.V), side * x.K / std::max(x.K, x.V)); };
  const double shared = diff ? std::max(st.main.state_range, st.other.state_range) : 0;
  const Run* runs[] = {&st.main, &st.other};
  for (int i = 0; i < 2; ++i) {
    if (i) ImGui::SameLine();
    ImGui::BeginGroup();
    ImGui::TextUnformatted(("S of " + runs[i]->label).c_str());
    const model::Trace& x = runs[i]->trace;
    const Cell c = heatmap(i ? "S_other" : "S_main", x.S[(i ? t : st.step) + 1], diff ? shared : runs[i]->state_range, box(x),
                           "key ch", "value ch", row);
    if (i == 0) hovered_row = c.row, hovered_col = c.col;
    if (!diff) legend(runs[i]->state_range, side, nullptr);
    ImGui::EndGroup();
  }
  if (diff) {
    const Matrix d = tr.S[st.step + 1] - ot.S[t + 1];
    const double dr = difference_range(tr, ot);
    ImGui::SameLine();
    ImGui::BeginGroup();
    ImGui::TextUnformatted(st.difference_label().c_str());
    heatmap("S_diff", d, dr, box(tr));
    legend(dr, side, nullptr);
    ImGui::EndGroup();
    legend(shared, std::min(2 * side, 320.f), "both memories (largest |S|)");
    ImGui::Text("|%s| (Frobenius) = %.4f   the difference has its own scale", st.difference_label().c_str(), d.norm());
  } else {
    ImGui::TextWrapped("Two trained models: each learned its own key and value basis, so their memories are not "
                       "compared cell by cell. Compare readouts and verdicts (Readout panel). Each on its own scale.");
  }
  help_marker("Left: this run's memory; middle: the same tokens with the other gate tying (or the other model); right "
              "(scenarios only): their difference, on its own colour scale.");
}

// [SECTION] UpdatePanel -------------------------------------------------------------------------------------------

namespace {
void update_row(const char* id, const model::Trace& tr, int t, double range, ImVec2 box, bool with_help) {
  const model::UpdateParts u = model::update_parts(tr, t);
  const char* long_names[] = {"decay  (Diag(a)-I) S", "erase  -k r^T", "write  k z^T"};
  const char* short_names[] = {"decay", "erase -k r^T", "write k z^T"};
  const bool fits = ImGui::CalcTextSize(long_names[0]).x + 30 < box.x;
  const char* const* names = fits ? long_names : short_names;
  const char* help[] = {"What the decay removed: each row of the previous S times (alpha_i - 1). Zero when g = 0.",
                        "What the erase removed: the old content read along b*k (r = S^T (b*k)), taken out along k.",
                        "What was written: w*v along k."};
  const Matrix* ms[] = {&u.decay, &u.erase, &u.write};
  for (int i = 0; i < 3; ++i) {
    if (i) ImGui::SameLine(0, std::max(8.f, ImGui::CalcTextSize(names[i - 1]).x - box.x + 8));
    ImGui::BeginGroup();
    ImGui::TextUnformatted(names[i]);
    if (with_help) help_marker(help[i]);
    heatmap((std::string(id) + short_names[i]).c_str(), *ms[i], range, box);
    ImGui::EndGroup();
  }
}
}  // namespace

void UpdatePanel::Draw(ViewerState& st) {
  const model::Trace& tr = st.main.trace;
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  auto box_of = [](const model::Trace& x, float side) { return ImVec2(side * x.V / std::max(x.K, x.V), side * x.K / std::max(x.K, x.V)); };
  if (st.compare && st.other.trace.T > 0) {
    const model::Trace& ot = st.other.trace;
    const int t = std::min(st.step, ot.T - 1);
    const float side = std::min((avail.x - 24) / 3, (avail.y - 4 * ImGui::GetTextLineHeightWithSpacing()) / 2 - 20);
    const Run* runs[] = {&st.main, &st.other};
    for (int i = 0; i < 2; ++i) {
      const int ti = i ? t : st.step;
      const double range = update_range(runs[i]->trace, ti);
      ImGui::Text("%s, token %d   (range +-%.3g)", runs[i]->label.c_str(), ti, range);
      if (i == 0) help_marker("Each run's update terms on its own colour range: the largest of its three terms at this token.");
      update_row(i ? "o" : "m", runs[i]->trace, ti, range, box_of(runs[i]->trace, side), false);
    }
    return;
  }
  const float side = std::min((avail.x - 24) / 3, avail.y - 70);
  const double range = update_range(tr, st.step);
  update_row("m", tr, st.step, range, box_of(tr, side), true);
  ImGui::Text("S_t = S_{t-1} + decay + erase + write   (Eq. 9)");
  legend(range, std::min(avail.x, 320.f), "largest of the three at this token");
}

// [SECTION] GatesPanel --------------------------------------------------------------------------------------------

namespace {
void gate_bars(const Run& run, int t, float w, float h, bool with_help, const char* id) {
  const model::Trace& tr = run.trace;
  double vr = std::max(tr.r.row(t).cwiseAbs().maxCoeff(), (tr.z.row(t) - tr.r.row(t)).cwiseAbs().maxCoeff());
  if (!(vr > 1e-12)) vr = 1;  // nothing read or written: a unit scale, the bars sit at 0
  ImGui::PushID(id);
  ImGui::Text("b_t  erase gate (K)");
  if (with_help) help_marker(kGateHelp[0]);
  channel_bars("b", tr.b.row(t), 0, 1, ImVec2(w, h), kBarErase);
  ImGui::Text("alpha_t = exp(g_t)  decay (K)");
  if (with_help) help_marker(kGateHelp[2]);
  channel_bars("alpha", tr.alpha.row(t), 0, 1, ImVec2(w, h), kBarDecay);
  ImGui::Text("w_t  write gate (V)");
  if (with_help) help_marker(kGateHelp[1]);
  channel_bars("w", tr.w.row(t), 0, 1, ImVec2(w, h), kBarWrite);
  ImGui::Text("r_t = S^T (b*k)  the read (V)");
  if (with_help) help_marker("The old content the erase gate reads back: what the memory held along b*k before this "
                             "token. Same scale as the residual below (the larger of the two).");
  channel_bars("r", tr.r.row(t), -vr, vr, ImVec2(w, h), kBarRead);
  ImGui::Text("z_t - r_t  written along k (V)");
  if (with_help) help_marker("The delta-rule residual: new value w*v minus the read. Near zero when the memory already held it.");
  channel_bars("zr", tr.z.row(t) - tr.r.row(t), -vr, vr, ImVec2(w, h), kBarResidual);
  ImGui::PopID();
}
}  // namespace

void GatesPanel::Draw(ViewerState& st) {
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  const float h = std::max(14.f, (avail.y - 6 * ImGui::GetTextLineHeightWithSpacing()) / 5 - 4);
  if (st.compare && st.other.trace.T > 0) {
    const float w = avail.x / 2 - 6;
    ImGui::BeginGroup();
    ImGui::TextDisabled("%s", st.main.label.c_str());
    gate_bars(st.main, st.step, w, h, false, "main");
    ImGui::EndGroup();
    ImGui::SameLine();
    ImGui::BeginGroup();
    ImGui::TextDisabled("%s", st.other.label.c_str());
    gate_bars(st.other, std::min(st.step, st.other.trace.T - 1), w, h, false, "other");
    ImGui::EndGroup();
    return;
  }
  gate_bars(st.main, st.step, avail.x, h, true, "main");
}

// [SECTION] ReadoutPanel ------------------------------------------------------------------------------------------

void ReadoutPanel::Draw(ViewerState& st) {
  const model::Trace& tr = st.main.trace;
  const int t = st.step;
  const float w = ImGui::GetContentRegionAvail().x;
  const int src = tr.source[t];
  // o_t and what was written each on its own scale (their magnitudes differ: a model's o_t is scaled by 1/sqrt(K))
  const double o_range = std::max(1e-9, tr.o.row(t).cwiseAbs().maxCoeff());
  ImGui::Text("o_t = S_t^T q_t (V), scale +-%.3g", o_range);
  help_marker("What the memory returns for this token's query vector. At a query it should match what was written "
              "for that key (right). The two plots have separate scales: compare shapes, the cosine compares directions.");
  if (src >= 0) {
    ImGui::SameLine(w * 0.5f);
    ImGui::Text("w*v written at token %d, scale +-%.3g", src, std::max(1e-9, tr.z.row(src).cwiseAbs().maxCoeff()));
  }
  channel_bars("o", tr.o.row(t), -o_range, o_range, ImVec2(w * 0.49f, 40), IM_COL32(200, 200, 90, 255), false);
  ImGui::SameLine();
  if (src >= 0) {
    const double z_range = std::max(1e-9, tr.z.row(src).cwiseAbs().maxCoeff());
    channel_bars("target", tr.z.row(src), -z_range, z_range, ImVec2(w * 0.49f, 40), kBarWrite, false);
  } else {
    ImGui::Dummy(ImVec2(w * 0.49f, 40));
  }
  const model::ReadoutMix mix = model::readout_mix(tr, t);
  ImGui::TextWrapped("o_t as a mix of the values stored so far: %s%s", mix_text(mix).c_str(),
                     src >= 0 ? ("   (cosine with what was written " + std::to_string(model::recall_cosine(tr, t)).substr(0, 5) + ")").c_str() : "");
  help_marker("The least-squares coefficients of o_t over the values written up to this token (scenarios: the "
              "candidates A, B, C, D; a model: the value vectors v of its value tokens). 'unexplained' is the part "
              "of o_t no stored value accounts for.");
  const bool cmp = st.compare && st.other.trace.T > 0;
  if (cmp) {
    const int ot = std::min(t, st.other.trace.T - 1);
    ImGui::TextWrapped("%s: %s", st.other.label.c_str(), mix_text(model::readout_mix(st.other.trace, ot)).c_str());
  }
  const Capacity cap = capacity(tr, t);
  char overlay[64];
  std::snprintf(overlay, sizeof overlay, "effective rank %.1f of %d", cap.effective_rank, std::min(tr.K, tr.V));
  ImGui::ProgressBar(static_cast<float>(cap.fraction), ImVec2(w - 30, 0), overlay);
  help_marker("Memory use: how many independent directions S holds (exp of the entropy of its singular values). "
              "A K x V memory holds at most min(K, V) orthogonal associations; beyond that, new ones interfere.");
  const std::vector<QueryResult>& qs = st.main.queries;
  auto right = [](const std::vector<QueryResult>& v) {
    int n = 0;
    for (const auto& q : v) n += q.correct;
    return n;
  };
  if (cmp) ImGui::Text("queries right: %s %d of %zu, %s %d of %zu", st.main.variant.c_str(), right(qs), qs.size(),
                       st.other.variant.c_str(), right(st.other.queries), st.other.queries.size());
  else ImGui::Text("queries: %d of %zu right", right(qs), qs.size());
  const int cols = cmp ? 5 : 4;
  if (ImGui::BeginTable("queries", cols, ImGuiTableFlags_RowBg | ImGuiTableFlags_ScrollY | ImGuiTableFlags_SizingStretchProp)) {
    ImGui::TableSetupScrollFreeze(0, 1);
    ImGui::TableSetupColumn("query");
    ImGui::TableSetupColumn(cmp ? st.main.variant.c_str() : "answer", ImGuiTableColumnFlags_WidthStretch, 2.f);
    if (cmp) ImGui::TableSetupColumn(st.other.variant.c_str(), ImGuiTableColumnFlags_WidthStretch, 2.f);
    ImGui::TableSetupColumn("expected");
    ImGui::TableSetupColumn("cos");
    ImGui::TableHeadersRow();
    auto verdict = [](const QueryResult& q) {
      ImGui::TextColored(q.correct ? ImVec4(0.4f, 0.9f, 0.4f, 1) : ImVec4(1, 0.4f, 0.4f, 1), "%s %s", q.correct ? "ok" : "X",
                         q.answer.c_str());
      if (ImGui::IsItemHovered()) ImGui::SetTooltip("o_t = %s", q.mix.c_str());
    };
    for (size_t i = 0; i < qs.size(); ++i) {
      const QueryResult& q = qs[i];
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::PushID(q.token);
      if (ImGui::Selectable(q.label.c_str(), q.token == t, ImGuiSelectableFlags_SpanAllColumns | ImGuiSelectableFlags_AllowItemOverlap))
        st.set_step(q.token);
      ImGui::PopID();
      ImGui::TableNextColumn();
      verdict(q);
      if (cmp) {
        ImGui::TableNextColumn();
        if (i < st.other.queries.size()) verdict(st.other.queries[i]);
      }
      ImGui::TableNextColumn();
      ImGui::TextUnformatted(q.expected.c_str());
      ImGui::TableNextColumn();
      ImGui::Text("%.2f", q.cosine);
    }
    ImGui::EndTable();
  }
}

// [SECTION] EquationPanel -----------------------------------------------------------------------------------------

void EquationPanel::Draw(ViewerState& st) {
  const model::Trace& tr = st.main.trace;
  const int t = st.step;
  ImGui::TextUnformatted("S_t = (I - k_t (b_t*k_t)^T) Diag(exp g_t) S_{t-1} + k_t (w_t*v_t)^T");
  ImGui::TextUnformatted("    = Diag(alpha) S_{t-1} - k_t r_t^T + k_t z_t^T");
  int i = state ? state->hovered_row : -1, j = state ? state->hovered_col : -1;
  const char* which = "hovered cell";
  if (i < 0) {  // the cell that changed most
    Eigen::Index a, b;
    (tr.S[t + 1] - tr.S[t]).cwiseAbs().maxCoeff(&a, &b);
    i = static_cast<int>(a), j = static_cast<int>(b);
    which = "cell that changed most";
  }
  const CellEquation e = cell_equation(tr, t, i, j);
  ImGui::Separator();
  ImGui::Text("token %d, %s S[%d,%d]:", t, which, i, j);
  ImGui::Text("  %+.4f = %.3f x %+.4f  -  %+.3f x %+.4f  +  %+.3f x %+.4f", e.next, e.alpha, e.prev, e.k, e.r, e.k, e.z);
  ImGui::TextDisabled("  S_t[i,j] = alpha_i S_{t-1}[i,j] - k_i r_j + k_i z_j");
  ImGui::Text("|e_t| = |b*k| = %.3f   |z_t| = |w*v| = %.3f   |r_t| = %.3f", tr.e.row(t).norm(), tr.z.row(t).norm(),
              tr.r.row(t).norm());
  help_marker("e = b*k is where the erase reads; z = w*v is what is written; r = S^T e is the old content read back. "
              "Hover a cell of S to see its own numbers.");
}

}  // namespace gdn2::viewer
