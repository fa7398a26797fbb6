// gdn2-viewer — drawing helpers (draw.hpp).
#include "draw.hpp"

#include <GL/gl.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <unordered_map>
#include <vector>

namespace gdn2::viewer {

ImU32 diverging(double x, double range) {
  const float t = static_cast<float>(std::clamp(x / range, -1.0, 1.0));
  // white at 0; toward (0.13, 0.40, 0.67) blue and (0.70, 0.09, 0.17) red: readable on a dark background
  const float a = std::abs(t);
  const float r = t > 0 ? 1 - a * (1 - 0.70f) : 1 - a * (1 - 0.13f);
  const float g = t > 0 ? 1 - a * (1 - 0.09f) : 1 - a * (1 - 0.40f);
  const float b = t > 0 ? 1 - a * (1 - 0.17f) : 1 - a * (1 - 0.67f);
  return ImGui::ColorConvertFloat4ToU32(ImVec4(r, g, b, 1));
}

Cell heatmap(const char* id, const Matrix& m, double range, ImVec2 size, const char* row_name, const char* col_name,
             int highlight_row) {
  ImDrawList* dl = ImGui::GetWindowDrawList();
  const ImVec2 p0 = ImGui::GetCursorScreenPos();
  const int R = static_cast<int>(m.rows()), C = static_cast<int>(m.cols());
  const float cw = size.x / C, ch = size.y / R;
  // One texture per heatmap (GL_NEAREST), drawn as a single quad: a 64 x 64 state as 4096 rectangles costs
  // llvmpipe far more vertex work than one textured quad (measured: docs/viewer.md, frame time).
  static std::unordered_map<ImGuiID, GLuint> textures;
  const ImGuiID key = ImGui::GetID(id);
  GLuint& tex = textures[key];
  if (tex == 0) {
    glGenTextures(1, &tex);
    glBindTexture(GL_TEXTURE_2D, tex);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
    glTexParameteri(GL_TEXTURE_2D, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
  }
  std::vector<ImU32> pixels(static_cast<size_t>(R) * C);
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < C; ++j) pixels[static_cast<size_t>(i) * C + j] = diverging(m(i, j), range);
  glBindTexture(GL_TEXTURE_2D, tex);
  glPixelStorei(GL_UNPACK_ALIGNMENT, 4);
  glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA, C, R, 0, GL_RGBA, GL_UNSIGNED_BYTE, pixels.data());  // ImU32 is RGBA in memory
  dl->AddImage(reinterpret_cast<ImTextureID>(static_cast<intptr_t>(tex)), p0, ImVec2(p0.x + size.x, p0.y + size.y));
  dl->AddRect(p0, ImVec2(p0.x + size.x, p0.y + size.y), IM_COL32(120, 120, 120, 255));
  if (highlight_row >= 0 && highlight_row < R)
    dl->AddRect(ImVec2(p0.x, p0.y + highlight_row * ch), ImVec2(p0.x + size.x, p0.y + (highlight_row + 1) * ch),
                IM_COL32(255, 220, 0, 255), 0, 0, 2);
  ImGui::InvisibleButton(id, size);
  Cell cell;
  if (ImGui::IsItemHovered()) {
    const ImVec2 mp = ImGui::GetIO().MousePos;
    cell.row = std::clamp(static_cast<int>((mp.y - p0.y) / ch), 0, R - 1);
    cell.col = std::clamp(static_cast<int>((mp.x - p0.x) / cw), 0, C - 1);
    dl->AddRect(ImVec2(p0.x + cell.col * cw, p0.y + cell.row * ch), ImVec2(p0.x + (cell.col + 1) * cw, p0.y + (cell.row + 1) * ch),
                IM_COL32(0, 0, 0, 255), 0, 0, 2);
    ImGui::SetTooltip("%s %d -> %s %d\nvalue %+.4f", row_name, cell.row, col_name, cell.col, m(cell.row, cell.col));
  }
  return cell;
}

void legend(double range, float width, const char* what) {
  ImDrawList* dl = ImGui::GetWindowDrawList();
  const ImVec2 p0 = ImGui::GetCursorScreenPos();
  const int n = 64;
  const float h = 10;
  for (int i = 0; i < n; ++i)
    dl->AddRectFilled(ImVec2(p0.x + width * i / n, p0.y), ImVec2(p0.x + width * (i + 1) / n, p0.y + h),
                      diverging(range * (2.0 * (i + 0.5) / n - 1), range));
  ImGui::Dummy(ImVec2(width, h));
  ImGui::Text("%+.3g", -range);
  ImGui::SameLine(width / 2 - 4);
  ImGui::Text("0");
  ImGui::SameLine(width - 40);
  ImGui::Text("%+.3g", range);
  if (what) {
    ImGui::SameLine(width + 12);
    ImGui::TextDisabled("%s", what);
  }
}

int channel_bars(const char* id, const RowVec<double>& v, double lo, double hi, ImVec2 size, ImU32 colour, bool values) {
  ImDrawList* dl = ImGui::GetWindowDrawList();
  const float axis = 46;  // room for the tick numbers on the left
  const ImVec2 q0 = ImGui::GetCursorScreenPos();
  const ImVec2 p0(q0.x + axis, q0.y);
  const ImVec2 box(std::max(10.f, size.x - axis), size.y);
  const int n = static_cast<int>(v.size());
  const float bw = box.x / std::max(1, n);
  auto y_of = [&](double x) { return static_cast<float>(p0.y + box.y * (hi - std::clamp(x, lo, hi)) / (hi - lo)); };
  const float zero = y_of(0);
  dl->AddRectFilled(p0, ImVec2(p0.x + box.x, p0.y + box.y), IM_COL32(30, 30, 36, 255));
  // ticks: lo, middle, hi
  char buf[32];
  for (const double tick : {lo, (lo + hi) / 2, hi}) {
    const float y = y_of(tick);
    if (tick != lo && tick != hi && box.y < 40) continue;  // no room for a middle number
    dl->AddLine(ImVec2(p0.x - 4, y), ImVec2(p0.x + box.x, y), IM_COL32(70, 70, 80, 255));
    std::snprintf(buf, sizeof buf, "%.3g", std::abs(tick) < 1e-12 ? 0.0 : tick);
    const float tw = ImGui::CalcTextSize(buf).x;
    const float th = ImGui::GetTextLineHeight();
    const float ty = tick == hi ? p0.y - 2 : tick == lo ? p0.y + box.y - th + 2 : y - th / 2;  // inside the plot's height
    dl->AddText(ImVec2(p0.x - 6 - tw, ty), IM_COL32(170, 170, 170, 255), buf);
  }
  const bool labels = values && bw >= 30;  // "0.75" fits
  for (int i = 0; i < n; ++i) {
    const float y = y_of(v(i));
    float top = std::min(y, zero), bottom = std::max(y, zero);
    if (bottom - top < 2) top = zero - 1, bottom = zero + 1;  // a zero is a stub, not nothing
    dl->AddRectFilled(ImVec2(p0.x + i * bw + 1, top), ImVec2(p0.x + (i + 1) * bw - 1, bottom), colour);
    if (labels) {
      std::snprintf(buf, sizeof buf, "%.2f", v(i));
      const ImVec2 ts = ImGui::CalcTextSize(buf);
      if (ts.x > bw - 2) continue;  // would run into its neighbour
      const float ty = std::clamp(v(i) >= 0 ? top - ts.y : bottom, p0.y, p0.y + box.y - ts.y);
      dl->AddText(ImVec2(p0.x + i * bw + (bw - ts.x) / 2, ty), IM_COL32(235, 235, 235, 255), buf);
    }
  }
  dl->AddLine(ImVec2(p0.x, zero), ImVec2(p0.x + box.x, zero), IM_COL32(160, 160, 160, 255));
  ImGui::InvisibleButton(id, ImVec2(box.x + axis, box.y));
  if (ImGui::IsItemHovered() && n > 0) {
    const int i = std::clamp(static_cast<int>((ImGui::GetIO().MousePos.x - p0.x) / bw), 0, n - 1);
    ImGui::SetTooltip("channel %d: %+.4f", i, v(i));
    return i;
  }
  return -1;
}

void help_marker(const char* text) {
  ImGui::SameLine();
  ImGui::TextDisabled("(?)");
  if (ImGui::IsItemHovered()) {
    ImGui::BeginTooltip();
    ImGui::PushTextWrapPos(ImGui::GetFontSize() * 32.0f);
    ImGui::TextUnformatted(text);
    ImGui::PopTextWrapPos();
    ImGui::EndTooltip();
  }
}

}  // namespace gdn2::viewer
