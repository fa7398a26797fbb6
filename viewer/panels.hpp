// gdn2-viewer — the panels. Each is a struct whose settings are listed one per line (`= default // meaning`)
// with a Draw(); main.cpp registers them in one list and places them on a fixed grid.
#pragma once

#include <imgui.h>

#include <memory>
#include <string>
#include <vector>

#include "viewer_state.hpp"

namespace gdn2::viewer {

struct Panel {
  const char* title;
  ImVec2 pos, size;  // fractions of the window, set by the layout
  explicit Panel(const char* t) : title(t) {}
  virtual ~Panel() = default;
  virtual void Draw(ViewerState& st) = 0;
};

// Token strip (coloured by role, click to jump) and the timeline: play, pause, step, scrub, speed.
struct SequencePanel : Panel {
  float cell_width = 38.f;  // = 38 // pixels per token in the strip
  int last_step = -1;       // scroll the strip to the current token when it changes
  SequencePanel() : Panel("Sequence") {}
  void Draw(ViewerState& st) override;
};

// Where the sequence comes from, gates by hand, export, and the story of the scenario.
struct ControlsPanel : Panel {
  char sequence[512] = "";        // typed sequence (kN vN ?kN . fN)
  char checkpoint_dir[512] = "";  // path typed for "load" (checkpoint source)
  char trace_dir[512] = "";       // path typed for "load" (trace source)
  bool paths_initialised = false;
  char export_dir[256] = "viewer-export";  // export directory; relative: under the user directory (output_path)
  int override_gate = 0;          // = 0 (b) // which gate the hand-set value goes to: b, w, g
  int override_channel = -1;      // = -1    // channel, or -1 for all
  float override_value = 0.f;     // = 0
  bool override_minus_inf = false;  // = false // g = -inf (alpha = 0: the row is wiped)
  bool screenshot_requested = false;
  std::string scenario_names;     // '\0'-separated for ImGui::Combo
  ControlsPanel() : Panel("Controls") {}
  void Draw(ViewerState& st) override;
};

// S_t as a heatmap (K × V) with the fixed symmetric range of the whole sequence and its legend; in comparison
// mode both runs' memories, and their difference on its own scale where the two share a basis.
struct StatePanel : Panel {
  int hovered_row = -1, hovered_col = -1;  // shared with the equation panel
  StatePanel() : Panel("Memory S_t") {}
  void Draw(ViewerState& st) override;
};

// The update of token t decomposed (Eq. 9): decay (Diag(α)−I)S, erase −k rᵀ, write k zᵀ; in comparison mode
// for both runs, one row each.
struct UpdatePanel : Panel {
  UpdatePanel() : Panel("Update of this token") {}
  void Draw(ViewerState& st) override;
};

// Per-channel bars: b_t, α_t (K); w_t, r_t, z_t − r_t (V); in comparison mode both runs side by side.
struct GatesPanel : Panel {
  GatesPanel() : Panel("Gates of this token") {}
  void Draw(ViewerState& st) override;
};

// o_t against what was written, o_t as a mix of the stored values, every query's verdict (both runs in
// comparison mode), and the memory-capacity gauge.
struct ReadoutPanel : Panel {
  ReadoutPanel() : Panel("Readout") {}
  void Draw(ViewerState& st) override;
};

// Eq. 9 with the live numbers of one cell (the hovered one, else the largest change).
struct EquationPanel : Panel {
  const StatePanel* state = nullptr;  // for the hovered cell
  EquationPanel() : Panel("Equation 9, live") {}
  void Draw(ViewerState& st) override;
};

}  // namespace gdn2::viewer
