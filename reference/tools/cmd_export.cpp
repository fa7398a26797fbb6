// gdn2 command line — export: regenerates every data file the notebooks read, deterministically.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/backward.hpp"
#include "io/npy.hpp"
#include "model/trace.hpp"
#include "tasks/scenarios.hpp"
#include "tools/model_commands.hpp"

namespace gdn2::tools {

namespace {

namespace fs = std::filesystem;

void write_layer_dir(const std::string& dir, const std::vector<std::pair<std::string, const Tensor<double>*>>& tensors) {
  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& [name, t] : tensors) files.emplace_back(name + ".npy", io::encode_npy(*t));
  io::write_files_atomically(dir, files);
}

// A layer call with a non-trivial mix of gates (docs/numerics.md defaults), small enough to read in a notebook.
Layer<double> notebook_layer(std::uint64_t seed, index_t T, index_t K, index_t V) {
  Rng rng(seed);
  return random_layer<double>(rng, 1, T, 1, 1, K, V, [](Rng& r) { return r.uniform(-0.3, 0); });
}

}  // namespace

int run_export(const ExportArgs& args) {
  const fs::path root = args.out_dir;
  int written = 0;
  auto done = [&](const std::string& what) {
    ++written;
    std::fprintf(stderr, "  %s\n", what.c_str());
  };
  auto scenario_dir = [&](const std::string& name, Variant v) {
    return (root / "traces" / ("scenario-" + name + "-" + variant_name(v))).string();
  };
  auto example_dir = [&](const std::string& ck_name) { return (root / "traces" / (ck_name + "-example0")).string(); };
  const char* const checkpoints[] = {"mqar-tiny-gdn2", "mqar-tiny-kda"};
  {  // every directory this export replaces, refused (check_output_dir) before any is written
    std::vector<std::string> dirs;
    for (const std::string& name : tasks::scenario_names())
      for (Variant v : {Variant::gdn2, Variant::kda}) dirs.push_back(scenario_dir(name, v));
    for (const char* ck_name : checkpoints)
      if (fs::exists(root / "checkpoints" / ck_name / "config.json")) dirs.push_back(example_dir(ck_name));
    for (const char* d : {"layer", "gradcheck/inputs", "gradcheck/reference", "gradcheck/planted-bug"})
      dirs.push_back((root / d).string());
    for (const std::string& d : dirs) io::check_output_dir(d, "--out");
  }
  std::fprintf(stderr, "gdn2 export: writing into %s\n", root.string().c_str());

  // 1. Scenario traces, as scripted (gdn2) and tied as KDA.
  for (const std::string& name : tasks::scenario_names())
    for (Variant v : {Variant::gdn2, Variant::kda}) {
      const std::string dir = scenario_dir(name, v);
      model::save_trace(dir, model::trace_scenario(tasks::make_scenario(name, v), variant_name(v)));
      done(dir);
    }

  // 2. Model traces of the shipped checkpoints on the same held-out example.
  for (const char* ck_name : checkpoints) {
    const fs::path ck_dir = root / "checkpoints" / ck_name;
    if (!fs::exists(ck_dir / "config.json")) {
      std::fprintf(stderr, "  (no %s: skipped its trace)\n", ck_dir.string().c_str());
      continue;
    }
    const model::Checkpoint ck = model::load_checkpoint(ck_dir.string());
    model::Trace tr = model::trace_model(ck.model, ck.params, model::heldout_example(ck, 0));
    tr.title = std::string(ck_name) + " on held-out example 0";
    const std::string dir = example_dir(ck_name);
    model::save_trace(dir, tr);
    done(dir);
  }

  // 3. One layer call through both forms (recurrence vs chunk notebook).
  {
    const Layer<double> x = notebook_layer(1, 100, 16, 16);
    ForwardOptions opt;
    opt.chunk_size = 32;
    Tensor<double> o_rec, ht_rec, o_chunk, ht_chunk;
    forward(Form::recurrent, o_rec, ht_rec, x, opt);
    forward(Form::chunk, o_chunk, ht_chunk, x, opt);
    const std::string dir = (root / "layer").string();
    write_layer_dir(dir, {{"q", &x.q}, {"k", &x.k}, {"v", &x.v}, {"g", &x.g}, {"b", &x.b}, {"w", &x.w},
                          {"o_recurrent", &o_rec}, {"ht_recurrent", &ht_rec}, {"o_chunk", &o_chunk}, {"ht_chunk", &ht_chunk}});
    done(dir + " (T = 100, K = V = 16, chunk size 32)");
  }

  // 4. Gradient checking: inputs, the reference's gradients, and a candidate with a planted bug.
  {
    const Layer<double> x = notebook_layer(2, 40, 6, 5);
    Rng rng(3);
    Tensor<double> do_({1, 40, 1, 5});
    for (auto& e : do_.data) e = rng.normal();
    ForwardOptions opt;
    opt.chunk_size = 16;
    Tensor<double> o, ht;
    forward(Form::chunk, o, ht, x, opt);
    const Gradients<double> gr = backward(Form::chunk, x, do_, Tensor<double>{}, opt);
    const fs::path dir = root / "gradcheck";
    write_layer_dir((dir / "inputs").string(), {{"q", &x.q}, {"k", &x.k}, {"v", &x.v}, {"g", &x.g}, {"b", &x.b}, {"w", &x.w}, {"do", &do_}});
    write_layer_dir((dir / "reference").string(), {{"o", &o}, {"ht", &ht}, {"dq", &gr.dq}, {"dk", &gr.dk}, {"dv", &gr.dv},
                                                   {"dg", &gr.dg}, {"db", &gr.db}, {"dw", &gr.dw}});
    // The planted bug: an off-by-one in the reverse cumulative sum of dg for tokens 16..30 (each takes its
    // successor's value, the classic mistake of an exclusive instead of inclusive scan; token 31 is spared).
    // Everything else is right.
    Tensor<double> dg_bug = gr.dg;
    for (index_t t = 16; t < 31; ++t)
      for (index_t c = 0; c < 6; ++c) dg_bug.data[t * 6 + c] = gr.dg.data[(t + 1) * 6 + c];
    write_layer_dir((dir / "planted-bug").string(), {{"o", &o}, {"ht", &ht}, {"dq", &gr.dq}, {"dk", &gr.dk}, {"dv", &gr.dv},
                                                     {"dg", &dg_bug}, {"db", &gr.db}, {"dw", &gr.dw}});
    done(dir.string() + " (inputs, reference, planted-bug)");
  }

  // 5. The sweep and the CUDA benchmark JSON are produced by their own long runs; say where they stand.
  const fs::path sweep = root / "sweep" / "results.jsonl";
  std::fprintf(stderr, "  %s: %s\n", sweep.string().c_str(),
               fs::exists(sweep) ? "kept (regenerate with tools/sweep.sh, about 15 minutes)" : "missing: run tools/sweep.sh");
  for (const char* b : {"cuda_bf16.json", "cuda_f32.json"}) {
    const fs::path p = root / "bench" / b;
    std::fprintf(stderr, "  %s: %s\n", p.string().c_str(),
                 fs::exists(p) ? "kept (regenerate on an H100: docs/cuda.md)" : "absent (no GPU run yet)");
  }
  std::fprintf(stderr, "gdn2 export: %d directories written\n", written);
  return kOk;
}

int run_random_trace(const std::string& out_dir, int T, int K, int V, std::uint64_t seed) {
  // A trace keeps every step's state and its three update terms (K x V each, float64): bound T x K x V before
  // allocating, as the sizes of task and train are bounded (1 GiB of those matrices at the bound).
  constexpr double kMaxStateValues = double(1 << 25);
  if (double(T) * K * V > kMaxStateValues)
    throw InputError("--random " + std::to_string(T) + " with --K " + std::to_string(K) + " --V " + std::to_string(V) +
                     ": T x K x V = " + std::to_string(static_cast<long long>(double(T) * K * V)) +
                     " state values to trace, over the bound of " + std::to_string(static_cast<long long>(kMaxStateValues)));
  Rng rng(seed);
  const Layer<double> x = random_layer<double>(rng, 1, T, 1, 1, K, V, [](Rng& r) { return r.uniform(-0.1, 0); });
  model::Trace tr = model::trace_layer(x, 0, 0, 1.0 / std::sqrt(double(K)));
  tr.kind = "random";
  tr.title = "random inputs, T = " + std::to_string(T) + ", K = " + std::to_string(K) + ", V = " + std::to_string(V);
  for (int t = 0; t < T; ++t) tr.labels[t] = std::to_string(t);
  model::save_trace(out_dir, tr);
  std::printf("trace: %s written to %s\n", tr.title.c_str(), out_dir.c_str());
  return kOk;
}

}  // namespace gdn2::tools
