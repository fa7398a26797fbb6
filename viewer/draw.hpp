// gdn2-viewer — small drawing helpers on ImDrawList: diverging heatmaps with a legend, channel bars, help markers.
#pragma once

#include <imgui.h>

#include <string>

#include "model/trace.hpp"

namespace gdn2::viewer {

using model::Matrix;

// Blue (−range) → white (0) → red (+range); values beyond the range saturate (the panels' ranges are the true
// largest magnitude of what they show, so nothing does).
ImU32 diverging(double x, double range);

// Draws an R × C heatmap of `m` into a box `size` at the cursor, colour range [−range, range]. Hovering a cell
// shows `row_name i → col_name j = value`. Returns the hovered cell (or −1, −1).
struct Cell {
  int row = -1, col = -1;
};
Cell heatmap(const char* id, const Matrix& m, double range, ImVec2 size, const char* row_name = "key ch",
             const char* col_name = "value ch", int highlight_row = -1);

// A colour bar with its numbers, for a heatmap of range `range` (what it is: "largest |S| over the sequence").
void legend(double range, float width, const char* what = nullptr);

// One bar per channel of `v` (values in [lo, hi]) with a labelled axis: ticks at lo, the middle and hi (numbers
// on the left), every value printed on its bar when the bars are wide enough, and a zero drawn as a visible
// stub so that a closed gate (0) does not look like an empty plot. Hover shows channel and value. Returns the
// hovered channel.
int channel_bars(const char* id, const RowVec<double>& v, double lo, double hi, ImVec2 size, ImU32 colour, bool values = true);

// "(?)" with a tooltip in words.
void help_marker(const char* text);

}  // namespace gdn2::viewer
