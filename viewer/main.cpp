// gdn2-viewer — watch the erase and write gates of Gated DeltaNet-2 edit the memory, token by token.
//
// Shaped like Dear ImGui's example_glfw_opengl3: options, setup, state, loop, render, cleanup.
// With no display it re-runs itself under xvfb-run and writes a screenshot instead (headless mode).
#include <GLFW/glfw3.h>
#include <imgui.h>
#include <backends/imgui_impl_glfw.h>
#include <backends/imgui_impl_opengl3.h>
#include <stb_image_write.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "panels.hpp"
#include "tasks/scenarios.hpp"

using namespace gdn2::viewer;

namespace {

struct Options {
  std::string scenario, checkpoint, trace, variant = "gdn2", compare_with = "kda", sequence, screenshot, size = "1600x900", task;
  int step = -1, example = 0, bench_frames = 0, tour_step = 0;
  bool headless = false, compare = false, no_tour = false;
};

// The default: the shipped MQAR checkpoint when it can be found (from the working directory or the source tree),
// else the first scripted scenario.
std::string default_checkpoint() {
  for (const std::string& root : {std::string("."), std::string(GDN2_SOURCE_DIR)}) {
    const auto p = std::filesystem::path(root) / "notebooks_data/checkpoints/mqar-tiny-gdn2";
    if (std::filesystem::exists(p / "config.json")) return p.string();
  }
  return "";
}

// Encodes the back buffer as PNG in memory and writes it through write_file_checked (throws: nothing is left
// behind on a failed write, e.g. a full disk).
void write_screenshot(const std::string& path, int w, int h) {
  std::vector<unsigned char> px(static_cast<size_t>(w) * h * 3);
  glPixelStorei(GL_PACK_ALIGNMENT, 1);
  glReadBuffer(GL_BACK);
  glReadPixels(0, 0, w, h, GL_RGB, GL_UNSIGNED_BYTE, px.data());
  stbi_flip_vertically_on_write(1);  // OpenGL's rows start at the bottom
  std::string png;
  auto append = [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), size); };
  if (!stbi_write_png_to_func(append, &png, w, h, 3, px.data(), w * 3)) throw std::runtime_error("cannot encode " + path);
  write_file_checked(path, png);
}

// The keys of the viewer (ImGui 1.86's GLFW backend indexes KeysDown by GLFW key codes), unless a text box has focus.
void handle_keys(ViewerState& st) {
  if (ImGui::GetIO().WantTextInput) return;
  const std::pair<int, Key> keys[] = {{GLFW_KEY_LEFT, Key::left},      {GLFW_KEY_RIGHT, Key::right},  {GLFW_KEY_HOME, Key::home},
                                      {GLFW_KEY_END, Key::end},        {GLFW_KEY_SPACE, Key::play},   {GLFW_KEY_N, Key::next},
                                      {GLFW_KEY_PAGE_DOWN, Key::next}, {GLFW_KEY_B, Key::back},       {GLFW_KEY_PAGE_UP, Key::back},
                                      {GLFW_KEY_ESCAPE, Key::escape}};
  // Only the arrows repeat while held: a tour step that loads a checkpoint makes a long frame, which would otherwise
  // count as a held key and skip a step.
  for (const auto& [glfw_key, key] : keys)
    if (ImGui::IsKeyPressed(glfw_key, key == Key::left || key == Key::right)) st.handle_key(key);
}

// Places the panels on a fixed grid (fractions of the window), so screenshots are reproducible.
void layout(std::vector<Panel*>& panels) {
  const float top = 0.13f;
  auto at = [](Panel* p, float x, float y, float w, float h) { p->pos = ImVec2(x, y), p->size = ImVec2(w, h); };
  at(panels[0], 0, 0, 1, top);                 // sequence
  at(panels[1], 0, top, 0.24f, 1 - top);       // controls
  at(panels[2], 0.24f, top, 0.36f, 0.52f);     // state
  at(panels[3], 0.24f, top + 0.52f, 0.36f, 1 - top - 0.52f);  // update / compare
  at(panels[4], 0.60f, top, 0.40f, 0.34f);     // gates
  at(panels[5], 0.60f, top + 0.34f, 0.40f, 0.34f);  // readout
  at(panels[6], 0.60f, top + 0.68f, 0.40f, 1 - top - 0.68f);  // equation
}

}  // namespace

int main(int argc, char** argv) {
  // [options]
  Options opt;
  CLI::App app{"gdn2-viewer — watch Gated DeltaNet-2's erase and write gates edit the memory S, token by token.\n"
               "With no arguments: the guided tour (seven steps from a single write to the trained MQAR model next to its\n"
               "KDA twin; N/B or Page Down/Up step through it, Esc explores freely). Keys: left/right step a token, space plays.",
               "gdn2-viewer"};
  app.add_option("--scenario", opt.scenario, "Open a scripted gate scenario:\n" + gdn2::tasks::scenario_help());
  app.add_option("--checkpoint", opt.checkpoint, "Open a model checkpoint (gdn2 train --out DIR)");
  app.add_option("--trace", opt.trace, "Open a trace directory (gdn2 trace --out DIR)");
  app.add_option("--variant", opt.variant, "Scenario gates tied as gdn2, kda, gdn, deltanet, linear")->capture_default_str();
  app.add_option("--compare-with", opt.compare_with, "Scenario comparison tying")->capture_default_str();
  app.add_flag("--compare", opt.compare, "Start in comparison mode");
  app.add_option("--example", opt.example, "Held-out example of the checkpoint's task")->capture_default_str();
  app.add_option("--task", opt.task, "Show the checkpoint on another task: mqar, overwrite, mk-niah, s-niah");
  app.add_option("--sequence", opt.sequence, "A typed sequence for the checkpoint, e.g. \"k5 v40 k6 v41 . ?k5\"");
  CLI::Option* step_option = app.add_option("--step", opt.step, "Token to show (default: the first query, or 0)");
  app.add_flag("--headless", opt.headless, "Render without showing a window (needs a display server, e.g. under xvfb-run)");
  CLI::Option* screenshot_option = app.add_option("--screenshot", opt.screenshot, "Write a PNG of the first frame and exit (with --headless)");
  app.add_option("--size", opt.size, "Window size WxH")->capture_default_str();
  app.add_option("--bench-frames", opt.bench_frames, "Render N frames stepping through the sequence; print frame times")
      ->check(CLI::Range(0, 1000000));
  app.add_flag("--no-tour", opt.no_tour, "Open in free exploration (the default view without arguments is the guided tour)");
  app.add_option("--tour", opt.tour_step, "Open the guided tour at step N (1.." + std::to_string(tour_steps().size()) + ")")
      ->check(CLI::Range(1, static_cast<int>(tour_steps().size())));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::fprintf(stderr, "gdn2-viewer: error: %s (see --help)\n", e.what());  // bad input: one line, exit 2
    return 2;
  }
  if (screenshot_option->count() && opt.screenshot.empty()) {  // an empty path would write nothing and exit 0
    std::fprintf(stderr, "gdn2-viewer: error: --screenshot needs a file name (got an empty path)\n");
    return 2;
  }
  if (!opt.screenshot.empty()) {  // before any rendering: a link, FIFO or device is refused, never replaced
    try {
      check_output_file(opt.screenshot);
    } catch (const OutputRefused& e) {
      std::fprintf(stderr, "gdn2-viewer: error: --screenshot %s\n", e.what());
      return 2;
    }
  }
  int width = 1600, height = 900;
  if (std::sscanf(opt.size.c_str(), "%dx%d", &width, &height) != 2 || width < 640 || height < 480 || width > 8192 || height > 8192) {
    std::fprintf(stderr, "gdn2-viewer: --size must be WxH, at least 640x480\n");
    return 2;
  }

  // [state]
  ViewerState st;
  st.variant = opt.variant;
  st.compare_variant = opt.compare_with;
  st.compare = opt.compare;
  st.example = opt.example;
  st.custom_sequence = opt.sequence;
  st.task = opt.task;
  st.checkpoint_dir = opt.checkpoint.empty() ? default_checkpoint() : opt.checkpoint;  // also for switching to it later
  if (!opt.trace.empty()) st.source = SourceKind::trace_dir, st.trace_dir = opt.trace;
  else if (!opt.scenario.empty()) st.source = SourceKind::scenario, st.scenario = opt.scenario;
  else if (!st.checkpoint_dir.empty()) st.source = SourceKind::checkpoint;
  const bool tour = opt.tour_step > 0 || (!opt.no_tour && opt.trace.empty() && opt.scenario.empty() && opt.checkpoint.empty() && opt.sequence.empty() &&
                    opt.task.empty() && !opt.compare && !step_option->count());
  if (tour) st.start_tour(std::max(0, opt.tour_step - 1));
  else st.reload();
  if (!st.status.empty()) {
    std::fprintf(stderr, "gdn2-viewer: error: %s\n", st.status.c_str());
    return 2;
  }
  if (step_option->count()) {  // a token of the sequence shown, never clamped silently
    if (opt.step < 0 || opt.step >= st.length()) {
      std::fprintf(stderr, "gdn2-viewer: error: --step %d is outside 0 .. %d (the sequence shown has %d tokens)\n", opt.step,
                   st.length() - 1, st.length());
      return 2;
    }
    st.set_step(opt.step);
  } else if (!tour)
    for (int t = 0; t < st.length(); ++t)
      if (st.main.trace.roles[t] == 3) {
        st.set_step(t);
        break;
      }

  // [setup]
  glfwSetErrorCallback([](int code, const char* msg) { std::fprintf(stderr, "gdn2-viewer: GLFW error %d: %s\n", code, msg); });
  if (!glfwInit()) {
    // No display: re-run under a virtual one and write a screenshot, unless that is what already failed.
    if (!getenv("GDN2_VIEWER_UNDER_XVFB") && std::system("command -v xvfb-run > /dev/null 2>&1") == 0) {
      const std::string shot = opt.screenshot.empty() ? "gdn2-viewer.png" : opt.screenshot;
      std::fprintf(stderr, "gdn2-viewer: no display; rendering one frame under xvfb-run into %s instead\n", shot.c_str());
      setenv("GDN2_VIEWER_UNDER_XVFB", "1", 1);
      std::vector<std::string> args = {"xvfb-run", "-a", "-s", "-screen 0 " + std::to_string(width) + "x" + std::to_string(height) + "x24",
                                       argv[0]};
      if (!opt.headless) args.push_back("--headless");
      if (opt.screenshot.empty()) args.insert(args.end(), {"--screenshot", shot});
      for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
      std::vector<char*> cargs;
      for (auto& a : args) cargs.push_back(a.data());
      cargs.push_back(nullptr);
      execvp("xvfb-run", cargs.data());
    }
    std::fprintf(stderr, "gdn2-viewer: error: no display (DISPLAY is not set) and xvfb-run is not installed; "
                         "run `apt-get install xvfb` or use a desktop session\n");
    return 2;
  }
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 3);
  glfwWindowHint(GLFW_OPENGL_PROFILE, GLFW_OPENGL_CORE_PROFILE);
  if (opt.headless) glfwWindowHint(GLFW_VISIBLE, GLFW_FALSE);
  GLFWwindow* window = glfwCreateWindow(width, height, "gdn2-viewer — Gated DeltaNet-2 memory", nullptr, nullptr);
  if (!window) {
    std::fprintf(stderr, "gdn2-viewer: error: cannot create an OpenGL 3.3 core window\n");
    glfwTerminate();
    return 2;
  }
  glfwMakeContextCurrent(window);
  glfwSwapInterval(opt.headless || opt.bench_frames ? 0 : 1);
  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGui::GetIO().IniFilename = nullptr;  // the layout is fixed; nothing to remember between runs
  ImGui::StyleColorsDark();
  ImGui_ImplGlfw_InitForOpenGL(window, true);
  ImGui_ImplOpenGL3_Init("#version 330 core");

  SequencePanel sequence;
  ControlsPanel controls;
  StatePanel state;
  UpdatePanel update;
  GatesPanel gates;
  ReadoutPanel readout;
  EquationPanel equation;
  equation.state = &state;
  std::vector<Panel*> panels = {&sequence, &controls, &state, &update, &gates, &readout, &equation};
  layout(panels);

  // [loop]
  const int frames_before_shot = 3;  // ImGui sizes some items on the first frames
  int frame = 0, exit_code = 0;
  double since_step = 0;
  std::vector<double> frame_ms;
  auto last = std::chrono::steady_clock::now();
  while (!glfwWindowShouldClose(window)) {
    glfwPollEvents();
    const auto now = std::chrono::steady_clock::now();
    const double dt = std::chrono::duration<double>(now - last).count();
    last = now;
    if (opt.bench_frames > 0 && frame > frames_before_shot) {
      frame_ms.push_back(dt * 1e3);
      st.set_step((st.step + 1) % std::max(1, st.length()));
    }
    if (st.playing) {
      since_step += dt;
      if (since_step > 1.0 / st.tokens_per_second) {
        since_step = 0;
        if (st.step + 1 >= st.length()) st.playing = false;
        else st.set_step(st.step + 1);
      }
    }
    ImGui_ImplOpenGL3_NewFrame();
    ImGui_ImplGlfw_NewFrame();
    ImGui::NewFrame();
    int fw, fh;
    glfwGetFramebufferSize(window, &fw, &fh);
    if (opt.bench_frames == 0) handle_keys(st);
    const std::string look_at = st.tour >= 0 ? tour_steps()[st.tour].panel : "";
    for (Panel* p : panels) {
      ImGui::SetNextWindowPos(ImVec2(p->pos.x * fw, p->pos.y * fh));
      ImGui::SetNextWindowSize(ImVec2(p->size.x * fw, p->size.y * fh));
      const bool outlined = look_at == p->title;  // the panel the tour step points at
      if (outlined) {
        ImGui::PushStyleVar(ImGuiStyleVar_WindowBorderSize, 3.f);
        ImGui::PushStyleColor(ImGuiCol_Border, ImVec4(1.0f, 0.85f, 0.3f, 1));
        ImGui::PushStyleColor(ImGuiCol_TitleBg, ImVec4(0.45f, 0.35f, 0.05f, 1));
        ImGui::PushStyleColor(ImGuiCol_TitleBgActive, ImVec4(0.55f, 0.42f, 0.05f, 1));
      }
      // No window background: the clear colour is the same, and llvmpipe is fill-bound (one layer less to blend).
      ImGui::Begin(p->title, nullptr,
                   ImGuiWindowFlags_NoMove | ImGuiWindowFlags_NoResize | ImGuiWindowFlags_NoCollapse | ImGuiWindowFlags_NoBackground);
      p->Draw(st);
      ImGui::End();
      if (outlined) ImGui::PopStyleColor(3), ImGui::PopStyleVar();
    }
    // [render]
    ImGui::Render();
    glViewport(0, 0, fw, fh);
    const ImVec4 bg = ImGui::GetStyle().Colors[ImGuiCol_WindowBg];
    glClearColor(bg.x, bg.y, bg.z, 1);
    glClear(GL_COLOR_BUFFER_BIT);
    ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
    if (const GLenum err = glGetError(); err != GL_NO_ERROR) {
      std::fprintf(stderr, "gdn2-viewer: OpenGL error 0x%x\n", err);
      exit_code = 1;
    }
    ++frame;
    if (controls.screenshot_requested || (!opt.screenshot.empty() && frame == frames_before_shot)) {
      // The button's name goes under the export box's directory (user directory for a relative one); the
      // command line's --screenshot path is taken as typed.
      const std::string path = opt.screenshot.empty()
                                   ? output_path((std::filesystem::path(controls.export_dir) / ("gdn2-viewer-" + std::to_string(st.step) + ".png")).string())
                                   : opt.screenshot;
      try {
        write_screenshot(path, fw, fh);
        std::fprintf(stderr, "gdn2-viewer: wrote %s (%dx%d, token %d)\n", path.c_str(), fw, fh, st.step);
        st.status = "screenshot written to " + path;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "gdn2-viewer: error: %s\n", e.what());
        st.status = e.what();
        if (!opt.screenshot.empty()) exit_code = 4;  // the output could not be written, as gdn2's exit 4
      }
      controls.screenshot_requested = false;
      if (!opt.screenshot.empty() && opt.bench_frames == 0) break;
    }
    if (opt.bench_frames > 0 && static_cast<int>(frame_ms.size()) >= opt.bench_frames) break;
    glfwSwapBuffers(window);
    if (opt.headless && opt.screenshot.empty() && opt.bench_frames == 0) break;  // one frame, nothing to keep
  }
  if (!frame_ms.empty()) {
    std::sort(frame_ms.begin(), frame_ms.end());
    double sum = 0;
    for (double m : frame_ms) sum += m;
    std::printf("{\"frames\": %zu, \"K\": %d, \"V\": %d, \"T\": %d, \"mean_ms\": %.2f, \"median_ms\": %.2f, \"p95_ms\": %.2f}\n",
                frame_ms.size(), st.main.trace.K, st.main.trace.V, st.main.trace.T, sum / frame_ms.size(),
                frame_ms[frame_ms.size() / 2], frame_ms[frame_ms.size() * 95 / 100]);
  }

  // [cleanup]
  ImGui_ImplOpenGL3_Shutdown();
  ImGui_ImplGlfw_Shutdown();
  ImGui::DestroyContext();
  glfwDestroyWindow(window);
  glfwTerminate();
  return exit_code;
}
