// gdn2-viewer — what the panels show, computed without any pixels (unit-tested in tests/test_viewer.cpp).
//
// The viewer never re-implements the math: a sequence becomes a trace through the reference (model/trace.hpp),
// and everything here only selects, scales and labels what the trace holds.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "model/trace.hpp"

namespace gdn2::viewer {

using model::Matrix;

enum class SourceKind { scenario, checkpoint, trace_dir };

// One sequence through one layer head: the trace and the inputs it was computed from (kept so that hand-set
// gates can be re-run through the reference).
struct Run {
  std::string label;            // "gdn2", "kda", or the checkpoint's name
  Layer<double> layer;          // B = 1, the traced head's inputs (H = HV = 1)
  double scale = 1;
  model::Trace trace;
  double state_range = 1, update_range = 1;  // colour ranges of the whole trace (computed once per trace)
};

// A gate set by hand at one token: channel −1 means every channel.
struct GateOverride {
  enum Gate { erase_b, write_w, decay_g } gate = erase_b;
  int token = 0, channel = -1;
  double value = 0;
};

struct ViewerState {
  // [what is loaded]
  SourceKind source = SourceKind::scenario;  // = scenario  // where the sequence comes from
  std::string scenario = "overwrite-erase";  // = overwrite-erase
  std::string variant = "gdn2";              // = gdn2      // gates of the main run (scenarios are tied as this)
  std::string compare_variant = "kda";       // = kda       // the comparison run (scenarios)
  std::string checkpoint_dir;                // checkpoint of the main run (source = checkpoint)
  std::string compare_checkpoint_dir;        // optional second checkpoint for the comparison
  std::string trace_dir;                     // source = trace_dir
  int example = 0;                           // = 0         // held-out example of the checkpoint's task
  std::string task;                          // empty: the checkpoint's own task; else mqar, overwrite, mk-niah, s-niah
                                             //   (the model meets a task it was not trained on: see what breaks)
  std::string custom_sequence;               // typed tokens (kN vN ?kN . fN); empty: the task's example
  int head = 0, block = 0;                   // traced mixer
  std::vector<GateOverride> overrides;

  Run main, other;                           // other.trace.T == 0 when there is nothing to compare
  std::optional<model::Checkpoint> checkpoint, compare_checkpoint;
  std::string status;                        // last error or note, shown in the controls

  // [playback]
  int step = 0;                              // token shown: S after token `step` (0-based)
  bool playing = false;
  float tokens_per_second = 2.f;             // = 2
  bool compare = false;                      // comparison mode on

  // Re-reads the source and recomputes both runs (keeps step within range). Errors land in `status`.
  void reload();
  // Re-runs the traces from the kept inputs with the hand-set gates applied (no reload of the source).
  void apply_overrides();
  void set_step(int t);
  void update_ranges();
  int length() const { return main.trace.T; }
};

// [panel data] ---------------------------------------------------------------------------------------------------

// A symmetric colour range [−range, range] for a whole trace, fixed over all steps so colours can be compared:
// the 99th percentile of the nonzero magnitudes (larger values saturate).
double state_range(const model::Trace& tr);
double update_range(const model::Trace& tr);

// Per query token: did the model (or the nearest scenario value) give the right answer, and how well o_t matches
// what was written (cosine with z at the source position).
struct QueryResult {
  int token = 0;
  std::string label;          // "?k12 -> v40" or "query k0"
  std::string answer;         // what came out: "v40" or "D"
  std::string expected;       // what should have: "v40", "D", or "" when nothing was stored
  bool has_expected = false, correct = false;
  double cosine = 0;
};
std::vector<QueryResult> query_results(const model::Trace& tr);

// Memory use at step t: effective rank of S_t and its ratio to min(K, V).
struct Capacity {
  double effective_rank = 0, fraction = 0;
};
Capacity capacity(const model::Trace& tr, int t);

// The live numbers of Eq. 9 for one cell (i, j) of S at token t:
//   S_t[i,j] = α_i S_{t-1}[i,j] − k_i r_j + k_i z_j
struct CellEquation {
  double alpha, prev, k, r, z, next;
};
CellEquation cell_equation(const model::Trace& tr, int t, int i, int j);

// Colour of a token in the strip by its role (filler grey, key blue, value orange, query green/red when judged).
std::string role_name(int role);

}  // namespace gdn2::viewer
