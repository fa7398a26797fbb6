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
    std::snprintf(trace_dir, sizeof trace_dir, "%s", st.trace_dir.empty() ? "notebooks_data/traces/scenario-soft-update-gdn2" : st.trace_dir.c_str());
    paths_initialised = true;
  }
  const model::Trace& tr = st.main.trace;
  ImGui::TextWrapped("%s", tr.title.c_str());
  if (!tr.story.empty()) {
    ImGui::PushStyleColor(ImGuiCol_Text, ImVec4(0.85f, 0.85f, 0.7f, 1));
    ImGui::TextWrapped("%s", tr.story.c_str());
    ImGui::PopStyleColor();
  }
  ImGui::Separator();
  int src = static_cast<int>(st.source);
  bool reload = false;
  reload |= ImGui::RadioButton("scenario", &src, 0);
  ImGui::SameLine();
  reload |= ImGui::RadioButton("checkpoint", &src, 1);
  ImGui::SameLine();
  reload |= ImGui::RadioButton("trace", &src, 2);
  help_marker("scenario: hand-set gates on one-hot keys, one idea each (no training). checkpoint: the tiny model "
              "trained on MQAR, on a held-out sequence or one you type. trace: a directory written by gdn2 trace.");
  st.source = static_cast<SourceKind>(src);
  if (st.source == SourceKind::scenario) {
    if (scenario_names.empty())
      for (const std::string& n : tasks::scenario_names()) scenario_names += n + '\0';
    const auto names = tasks::scenario_names();
    int cur = static_cast<int>(std::find(names.begin(), names.end(), st.scenario) - names.begin());
    if (ImGui::Combo("scenario", &cur, scenario_names.c_str())) st.scenario = names[cur], reload = true;
    reload |= variant_combo("gates", st.variant);
    help_marker("How the scripted gates are tied: gdn2 keeps them as scripted; kda uses one beta per token for both b "
                "and w (their mean); gdn also averages the decay; deltanet has no decay; linear never erases.");
  } else if (st.source == SourceKind::checkpoint) {
    ImGui::SetNextItemWidth(-60);
    ImGui::InputText("##ckdir", checkpoint_dir, sizeof checkpoint_dir);
    ImGui::SameLine();
    if (ImGui::Button("load##ck")) st.checkpoint_dir = checkpoint_dir, st.checkpoint.reset(), st.compare_checkpoint.reset(), reload = true;
    static const char* kTasks[] = {"(its own)", "mqar", "overwrite", "mk-niah", "s-niah"};
    int task = 0;
    for (int j = 1; j < 5; ++j)
      if (st.task == kTasks[j]) task = j;
    ImGui::SetNextItemWidth(160);
    if (ImGui::Combo("task", &task, kTasks, 5)) st.task = task == 0 ? "" : kTasks[task], reload = true;
    help_marker("Run the model on another task of the same vocabulary and length: overwrite rebinds keys (the model "
                "never saw that in training), the needle tasks hide pairs in filler words.");
    reload |= ImGui::InputInt("example", &st.example);
    st.example = std::max(0, st.example);
    ImGui::InputTextWithHint("##seq", "type a sequence: k5 v40 k6 v41 . ?k5", sequence, sizeof sequence);
    ImGui::SameLine();
    if (ImGui::Button("run")) st.custom_sequence = sequence, reload = true;
    if (!st.custom_sequence.empty()) {
      ImGui::SameLine();
      if (ImGui::Button("clear")) st.custom_sequence.clear(), sequence[0] = 0, reload = true;
    }
    help_marker("kN is key N (1..31), vN value N (32..63), ?kN asks for key N's value, . is the filler token. The model "
                "answers at each query position.");
  } else {
    ImGui::SetNextItemWidth(-60);
    ImGui::InputText("##trdir", trace_dir, sizeof trace_dir);
    ImGui::SameLine();
    if (ImGui::Button("load##tr")) st.trace_dir = trace_dir, reload = true;
  }
  ImGui::Checkbox("compare", &st.compare);
  if (st.source == SourceKind::scenario) {
    ImGui::SameLine();
    ImGui::SetNextItemWidth(110);
    reload |= variant_combo("with", st.compare_variant);
  }
  help_marker("Comparison mode: the same sequence through a second gate tying (scenarios) or a second checkpoint "
              "(the KDA model next to the GDN-2 one), with the difference of their states.");
  ImGui::Separator();
  ImGui::Text("Set a gate by hand at token %d", st.step);
  help_marker("The sequence is re-run through the reference with this gate changed, from this token on: see what the "
              "memory does differently. For a model, o_t changes but the model's predictions shown are its own.");
  const char* gates[] = {"b (erase)", "w (write)", "g (decay)"};
  ImGui::SetNextItemWidth(110);
  ImGui::Combo("gate", &override_gate, gates, 3);
  ImGui::SameLine();
  ImGui::SetNextItemWidth(90);
  ImGui::InputInt("channel", &override_channel);
  override_channel = std::max(-1, override_channel);
  ImGui::SetNextItemWidth(160);
  ImGui::SliderFloat("value", &override_value, override_gate == 2 ? -8.f : 0.f, override_gate == 2 ? 0.f : 1.f);
  if (ImGui::Button("apply")) {
    st.overrides.push_back({static_cast<GateOverride::Gate>(override_gate), st.step, override_channel, override_value});
    st.apply_overrides();
  }
  ImGui::SameLine();
  if (ImGui::Button("reset gates")) st.overrides.clear(), reload = true;
  ImGui::SameLine();
  ImGui::Text("%zu set", st.overrides.size());
  ImGui::Separator();
  if (ImGui::Button("screenshot")) screenshot_requested = true;
  ImGui::SameLine();
  if (ImGui::Button("export trace")) {
    try {
      model::save_trace(export_dir, tr);
      st.status = std::string("trace written to ") + export_dir;
    } catch (const std::exception& e) {
      st.status = e.what();
    }
  }
  ImGui::SetNextItemWidth(-1);
  ImGui::InputText("##exportdir", export_dir, sizeof export_dir);
  if (!st.status.empty()) ImGui::TextWrapped("%s", st.status.c_str());
  if (reload) st.reload();
}

// [SECTION] StatePanel --------------------------------------------------------------------------------------------

void StatePanel::Draw(ViewerState& st) {
  const model::Trace& tr = st.main.trace;
  const double range = st.main.state_range;
  ImGui::Text("S after token %d (%s), %d key channels x %d value channels", st.step, tr.labels[st.step].c_str(), tr.K, tr.V);
  help_marker("The memory: row i belongs to key channel i, column j to value channel j. A key k reads the memory as "
              "o = S^T q: a stored association k -> v is the outer product k v^T. The colour range is fixed for the "
              "whole sequence so colours compare across tokens. Hover a cell for its value.");
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  const float side = std::min(avail.x, avail.y - 50);
  int row = -1;  // highlight the row of a one-hot key
  Eigen::Index arg;
  if (tr.k.row(st.step).cwiseAbs().maxCoeff(&arg) > 0.99) row = static_cast<int>(arg);
  const Cell c = heatmap("S", tr.S[st.step + 1], range, ImVec2(side * tr.V / std::max(tr.K, tr.V), side * tr.K / std::max(tr.K, tr.V)),
                         "key ch", "value ch", row);
  hovered_row = c.row, hovered_col = c.col;
  legend(range, std::min(side, 320.f));
}

// [SECTION] UpdatePanel -------------------------------------------------------------------------------------------

void UpdatePanel::Draw(ViewerState& st) {
  const model::Trace& tr = st.main.trace;
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  const float side = std::min((avail.x - 24) / 3, avail.y - 70);
  const ImVec2 box(side * tr.V / std::max(tr.K, tr.V), side * tr.K / std::max(tr.K, tr.V));
  if (st.compare && st.other.trace.T > 0) {
    const model::Trace& ot = st.other.trace;
    const int t = std::min(st.step, ot.T - 1);
    const double range = std::max(st.main.state_range, st.other.state_range);
    const Matrix diff = tr.S[st.step + 1] - ot.S[t + 1];
    const char* names[] = {st.main.label.c_str(), st.other.label.c_str(), "difference"};
    const Matrix* ms[] = {&tr.S[st.step + 1], &ot.S[t + 1], &diff};
    for (int i = 0; i < 3; ++i) {
      if (i) ImGui::SameLine();
      ImGui::BeginGroup();
      ImGui::TextUnformatted(names[i]);
      heatmap(names[i], *ms[i], range, box);
      ImGui::EndGroup();
    }
    ImGui::Text("|S_gdn2 - S_other| (Frobenius) = %.4f", diff.norm());
    help_marker("Left: this run's memory; middle: the same tokens with the other gate tying (or the other model); "
                "right: their difference. Where they differ, the decoupled erase and write gates did something one "
                "shared beta cannot.");
    legend(range, std::min(avail.x, 320.f));
    return;
  }
  const model::UpdateParts u = model::update_parts(tr, st.step);
  const double range = st.main.update_range;
  const char* names[] = {"decay  (Diag(a)-I) S", "erase  -k r^T", "write  k z^T"};
  const char* help[] = {"What the decay removed: each row of the previous S times (alpha_i - 1). Zero when g = 0.",
                        "What the erase removed: the old content read along b*k (r = S^T (b*k)), taken out along k.",
                        "What was written: w*v along k."};
  const Matrix* ms[] = {&u.decay, &u.erase, &u.write};
  for (int i = 0; i < 3; ++i) {
    if (i) ImGui::SameLine();
    ImGui::BeginGroup();
    ImGui::TextUnformatted(names[i]);
    help_marker(help[i]);
    heatmap(names[i], *ms[i], range, box);
    ImGui::EndGroup();
  }
  ImGui::Text("S_t = S_{t-1} + decay + erase + write   (Eq. 9; colour range fixed for the sequence)");
  legend(range, std::min(avail.x, 320.f));
}

// [SECTION] GatesPanel --------------------------------------------------------------------------------------------

void GatesPanel::Draw(ViewerState& st) {
  const model::Trace& tr = st.main.trace;
  const int t = st.step;
  const float w = ImGui::GetContentRegionAvail().x;
  const float h = std::max(14.f, (ImGui::GetContentRegionAvail().y - 5 * ImGui::GetFrameHeightWithSpacing()) / 5 - 4);
  const double vr = std::max({1e-9, tr.v.row(t).cwiseAbs().maxCoeff(), tr.r.row(t).cwiseAbs().maxCoeff(),
                              (tr.z.row(t) - tr.r.row(t)).cwiseAbs().maxCoeff()});
  ImGui::Text("b_t  erase gate (K)");
  help_marker(kGateHelp[0]);
  channel_bars("b", tr.b.row(t), 0, 1, ImVec2(w, h), kBarErase);
  ImGui::Text("alpha_t = exp(g_t)  decay (K)");
  help_marker(kGateHelp[2]);
  channel_bars("alpha", tr.alpha.row(t), 0, 1, ImVec2(w, h), kBarDecay);
  ImGui::Text("w_t  write gate (V)");
  help_marker(kGateHelp[1]);
  channel_bars("w", tr.w.row(t), 0, 1, ImVec2(w, h), kBarWrite);
  ImGui::Text("r_t = S^T (b*k)  the read (V)");
  help_marker("The old content the erase gate reads back: what the memory held along b*k before this token.");
  channel_bars("r", tr.r.row(t), -vr, vr, ImVec2(w, h), kBarRead);
  ImGui::Text("z_t - r_t  what is written along k (V)");
  help_marker("The delta-rule residual: new value w*v minus the read. Near zero when the memory already held it.");
  channel_bars("zr", tr.z.row(t) - tr.r.row(t), -vr, vr, ImVec2(w, h), kBarResidual);
}

// [SECTION] ReadoutPanel ------------------------------------------------------------------------------------------

void ReadoutPanel::Draw(ViewerState& st) {
  const model::Trace& tr = st.main.trace;
  const int t = st.step;
  const float w = ImGui::GetContentRegionAvail().x;
  const std::vector<QueryResult> qs = query_results(tr);
  const int src = tr.source[t];
  const double orange = std::max({1e-9, tr.o.row(t).cwiseAbs().maxCoeff(), src >= 0 ? tr.z.row(src).cwiseAbs().maxCoeff() : 0.0});
  ImGui::Text("o_t = S_t^T q_t  (V)");
  help_marker("What the memory returns for this token's query vector. At a query it should match what was written "
              "for that key (the bars below).");
  channel_bars("o", tr.o.row(t), -orange, orange, ImVec2(w * 0.48f, 40), IM_COL32(200, 200, 90, 255));
  ImGui::SameLine();
  if (src >= 0) {
    channel_bars("target", tr.z.row(src), -orange, orange, ImVec2(w * 0.48f, 40), kBarWrite);
    ImGui::Text("left: o_t   right: w*v written at token %d   cosine %.3f", src, model::recall_cosine(tr, t));
  } else {
    ImGui::Dummy(ImVec2(w * 0.48f, 40));
    ImGui::TextDisabled("(not a query)");
  }
  const Capacity cap = capacity(tr, t);
  char overlay[64];
  std::snprintf(overlay, sizeof overlay, "effective rank %.1f of %d", cap.effective_rank, std::min(tr.K, tr.V));
  ImGui::ProgressBar(static_cast<float>(cap.fraction), ImVec2(w - 30, 0), overlay);
  help_marker("Memory use: how many independent directions S holds (exp of the entropy of its singular values). "
              "A K x V memory holds at most min(K, V) orthogonal associations; beyond that, new ones interfere.");
  int correct = 0;
  for (const auto& q : qs) correct += q.correct;
  ImGui::Text("queries: %d of %zu right", correct, qs.size());
  if (ImGui::BeginTable("queries", 4, ImGuiTableFlags_RowBg | ImGuiTableFlags_ScrollY | ImGuiTableFlags_SizingStretchProp)) {
    ImGui::TableSetupColumn("query");
    ImGui::TableSetupColumn("answer");
    ImGui::TableSetupColumn("expected");
    ImGui::TableSetupColumn("cos");
    ImGui::TableHeadersRow();
    for (const auto& q : qs) {
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::PushID(q.token);
      if (ImGui::Selectable(q.label.c_str(), q.token == t, ImGuiSelectableFlags_SpanAllColumns)) st.set_step(q.token);
      ImGui::PopID();
      ImGui::TableNextColumn();
      ImGui::TextColored(q.correct ? ImVec4(0.4f, 0.9f, 0.4f, 1) : ImVec4(1, 0.4f, 0.4f, 1), "%s %s",
                         q.correct ? "ok" : "X", q.answer.c_str());
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
