// gdn2-viewer — what the panels show, computed without any pixels (unit-tested in tests/test_viewer.cpp).
//
// The viewer never re-implements the math: a sequence becomes a trace through the reference (model/trace.hpp),
// a hand-set gate re-runs the reference (the whole model for a checkpoint), and everything here only selects,
// scales and labels what the traces hold.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/trace.hpp"

namespace gdn2::viewer {

using model::Matrix;

enum class SourceKind { scenario, checkpoint, trace_dir };

// A gate set by hand (model.hpp): block and head are the traced mixer's, channel −1 means every channel.
using GateOverride = model::GateOverride;

// Per query token: what came out, what should have, and the verdict.
//   Scenario: o_t is read as a mix of the values stored so far (model::readout_mix, e.g. "0.25 A + 0.75 D"); the
//   query is right when the expected value dominates the mix: its coefficient is at least kFadedBelow, every other
//   coefficient at most 5% of it, and at most 5% of |o_t| is left unexplained. A query whose key was erased is right
//   when o_t = 0.
//   Model: the model's own prediction (argmax of the logits, recomputed with any hand-set gates).
struct QueryResult {
  int token = 0;
  std::string label;          // "?k12" or "query k0"
  std::string answer;         // what came out: "v40", or the mix "0.25 A + 0.75 D"
  std::string expected;       // what should have: "v40", "D", or "nothing (erased)"
  std::string mix;            // o_t as a mix of the stored values (both kinds of trace)
  bool has_expected = false, correct = false;
  double cosine = 0;          // cosine of o_t with z at the source token
};
constexpr double kFadedBelow = 0.1;  // a stored value read back at less than 10% of its strength has faded
std::vector<QueryResult> query_results(const model::Trace& tr);
// "0.25 A + 0.75 D", coefficients below 0.005 left out, "+ 71% unexplained" when the residual exceeds 5%.
std::string mix_text(const model::ReadoutMix& m);

// One sequence through one layer head: the trace, the inputs it was computed from (kept so that hand-set gates
// can be re-run through the reference), and the verdicts.
struct Run {
  std::string label;            // "gdn2", "kda", or "gdn2 model (mqar-tiny-gdn2)"
  std::string variant;          // the gate tying: gdn2, kda, ...
  Layer<double> layer;          // B = 1, the traced head's inputs (H = HV = 1)
  model::Trace trace;
  std::vector<QueryResult> queries;
  double state_range = 1;       // colour range of S over the whole trace (computed once per trace)
};

// One step of the guided tour: what to load, where to stand, what to look at, and what it shows.
struct TourStep {
  std::string title, text;
  SourceKind source = SourceKind::scenario;
  std::string scenario;             // source = scenario
  std::string compare_variant = "kda";
  bool compare = false;
  int step = 0;                     // the token to stand on
  std::string panel;                // the panel to look at (its title), highlighted
};
const std::vector<TourStep>& tour_steps();

// Keys the viewer reacts to (main.cpp maps GLFW keys to these).
enum class Key { left, right, home, end, play, next, back, escape };

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
  std::vector<QueryResult> main_before_overrides;  // the verdicts as loaded, to say what the hand-set gates changed
  std::optional<model::Checkpoint> checkpoint, compare_checkpoint;
  std::string status;                        // last error or note, shown in the controls
  std::string override_note;                 // what the hand-set gates are and what they changed (the story's tail)

  // [playback]
  int step = 0;                              // token shown: S after token `step` (0-based)
  bool playing = false;
  float tokens_per_second = 2.f;             // = 2
  bool compare = false;                      // comparison mode on

  // [tour]
  int tour = -1;                             // step of the guided tour shown, −1: free exploration

  // Re-reads the source and recomputes both runs (keeps step within range). Errors land in `status`.
  void reload();
  // Re-runs both runs from the source with the hand-set gates applied: a scenario through the reference's
  // recurrence, a checkpoint through the whole model (its predictions follow). Sets override_note.
  void apply_overrides();
  // Adds a hand-set gate at the current token of the traced mixer and re-runs.
  void set_gate(GateOverride::Gate gate, int channel, double value);
  // Switches the source; a source that needs a path not given yet waits for "load" instead of failing.
  void select_source(SourceKind kind);
  void set_step(int t);
  void handle_key(Key key);
  void start_tour(int index = 0);  // loads tour step `index`
  void end_tour();                 // free exploration, keeping what is shown
  void update_ranges();
  int length() const { return main.trace.T; }
  // The story shown for the main run: the trace's story plus what the hand-set gates changed.
  std::string story() const;
  // Comparison: the two runs' states can be subtracted cell by cell (same K, V, T and the same key and value
  // basis: both are scenarios); two trained models learned different bases, so only readouts compare.
  bool states_comparable() const;
  std::string difference_label() const;  // "S_gdn2 - S_kda"
};

// [panel data] ---------------------------------------------------------------------------------------------------

// The symmetric colour range [−range, range] of S over a whole trace, fixed over all steps so colours can be
// compared: the largest magnitude it holds (nothing saturates; 1 for an all-zero trace).
double state_range(const model::Trace& tr);
// The colour range of token t's three update terms (decay, erase, write): their largest magnitude at this token.
// Per token, not per sequence: one large write elsewhere would wash out every other token's decomposition.
double update_range(const model::Trace& tr, int t);
// The same for the difference of two runs' states over the sequence.
double difference_range(const model::Trace& a, const model::Trace& b);

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

// [files] --------------------------------------------------------------------------------------------------------

// Where a file typed into the export or screenshot box goes: an absolute path as typed, a relative one under the
// user's directory for viewer output ($XDG_DATA_HOME/gdn2-viewer, else ~/.local/share/gdn2-viewer), never the
// working directory (which is often the repository).
std::string user_output_dir();
std::string output_path(const std::string& typed);
// Where "export trace" writes for an export directory typed in the box: its trace/ folder, which each export replaces
// as a whole (gdn2 trace's directory), so the screenshots beside it (gdn2-viewer-<step>.png) are never touched.
std::string trace_export_path(const std::string& typed);
// A path the viewer will not write: it exists and is not a regular file (a symbolic link, FIFO, device, socket or
// directory), which a rename would replace. The command line's exit status 2.
struct OutputRefused : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Throws OutputRefused when `path` exists and is not a regular file; an absent path or a regular file passes.
void check_output_file(const std::string& path);
// Writes `bytes` to `path` through a temporary file (written, fsynced) renamed into place. A `path` that is not a
// regular file is refused (OutputRefused) before anything is written. On any failure (full disk, no such directory)
// it throws std::runtime_error naming the path and the system's reason, and leaves neither the file, the temporary
// nor the parent directories it created behind.
void write_file_checked(const std::string& path, const std::string& bytes);

}  // namespace gdn2::viewer
