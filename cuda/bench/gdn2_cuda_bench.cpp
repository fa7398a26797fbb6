// gdn2-cuda-bench — times the CUDA kernels on the docs/performance.md shapes after checking each against the float64 reference.
//
// For each case: random inputs (never zeros), the kernel's outputs compared with the reference (ratio printed; the
// case is refused if it exceeds the budget), then `--repeats` timed runs with CUDA events, L2 flushed before each,
// and the median reported with token-heads/s, GB/s, ns per token-head and the ratio to the memory floor (3.0 TB/s
// measured device copy). The peer is not compared here: python/bench/bench_peer.py times both in one process on the
// same tensors (docs/performance.md).
// The "train" cases time a training step's kernels, chunk_forward keeping its workspace then chunk_backward using it,
// after checking every gradient against the float64 reference backward; the backward alone and the memory-saving
// path (chunk_forward, then chunk_backward recomputing the forward) are reported too.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <utility>

#include "reference_check.hpp"

using namespace gdn2;
using namespace gdn2::cuda;

namespace {

struct Case {
  std::string kind;  // "chunk", "decode" or "train" (forward + backward)
  index_t B, T;
};

double ratio_max(const Outputs& a, const Outputs& r) { return std::max(ratio(a.o, r.o), ratio(a.ht, r.ht)); }

// A case's random inputs (docs/numerics.md defaults, mild gates, an initial state) and, for training, the upstream
// gradients dL/do and dL/dht, by (sequence, head) slice on every host thread, each slice from its own generator.
// random_layer draws every number from one generator in turn, which took 16 s of the B = 8, T = 4096 case's 26 s on
// one core of an H100 host; the host work is most of what a device run pays for.
struct CaseInputs {
  Layer<double> x;
  Tensor<double> dO, dht;
};
CaseInputs random_case(uint64_t seed, index_t B, index_t T, index_t H, index_t K, bool train) {
  CaseInputs c;
  const std::vector<index_t> rows{B, T, H, K}, states{B, H, K, K};
  c.x = Layer<double>{Tensor<double>(rows), Tensor<double>(rows), Tensor<double>(rows), Tensor<double>(rows),
                      Tensor<double>(rows), Tensor<double>(rows), Tensor<double>(states), {}};
  if (train) c.dO = Tensor<double>(rows), c.dht = Tensor<double>(states);
  detail::parallel_for_heads(B, H, 0, [&](index_t b, index_t h) {
    Rng rng(seed + uint64_t(b * H + h) * 0x9E3779B97F4A7C15ull);
    const Layer<double> s =
        random_layer<double>(rng, 1, T, 1, 1, K, K, [](Rng& r) { return r.uniform(-0.2, 0); }, true);
    const auto row = [&](index_t t) { return ((b * T + t) * H + h) * K; };  // sequence b, head h, token t
    for (auto [dst, src] : {std::pair{&c.x.q, &s.q}, {&c.x.k, &s.k}, {&c.x.v, &s.v}, {&c.x.g, &s.g}, {&c.x.b, &s.b},
                            {&c.x.w, &s.w}})
      for (index_t t = 0; t < T; ++t) std::copy_n(src->data.begin() + t * K, K, dst->data.begin() + row(t));
    std::copy_n(s.h0.data.begin(), K * K, c.x.h0.data.begin() + (b * H + h) * K * K);
    if (train) {
      for (index_t t = 0; t < T; ++t)
        for (index_t d = 0; d < K; ++d) c.dO.data[row(t) + d] = rng.normal();
      for (index_t i = 0; i < K * K; ++i) c.dht.data[(b * H + h) * K * K + i] = rng.normal();
    }
  });
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gdn2-cuda-bench: time the CUDA kernels on the docs/performance.md shapes (H = 16, K = V = 128), each checked "
               "against the float64 reference first. Cases: chunk forward (B=1,T=4096; B=8,T=4096; B=2,T=16384; "
               "B=1,T=65536), decode step (B = 1, 16, 64, 256), forward + backward (train: B=1,T=4096; B=8,T=4096)"};
  std::string dtype_name = "bf16", json_path;
  int repeats = 20;
  bool decode_only = false, chunk_only = false, train_only = false, skip_check = false, release_pool = false;
  std::vector<index_t> only_batch, only_tokens;
  index_t H = 16, K = 128;
  app.add_option("--dtype", dtype_name, "Storage dtype of q, k, v, b, w, o: bf16 or f32 (g and the state are fp32)")
      ->capture_default_str()->check(CLI::IsMember({"bf16", "f32"}));
  app.add_option("--repeats", repeats, "Timed runs per case (median reported)")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--json", json_path, "Also write the results as JSON to this file");
  app.add_flag("--decode", decode_only, "Only the decode cases (B in 1, 16, 64, 256)");
  app.add_flag("--chunk", chunk_only, "Only the chunk-forward cases");
  app.add_flag("--train", train_only,
               "Only the forward + backward cases (ms = chunk_forward keeping its workspace + chunk_backward using it; "
               "backward_ms = that backward alone; recompute_ms = forward + a backward that recomputes the forward)");
  app.add_flag("--release-pool", release_pool,
               "Give the library's workspace memory back to the driver before every timed run "
               "(gdn2::cuda::trim_workspace_memory), so each run maps it again; by default the pool keeps it");
  app.add_option("--batch", only_batch,
                 "Only the cases with these batch sizes B (with the flags above, among their cases), e.g. --chunk "
                 "--batch 8 for B=8,T=4096 alone: a device run pays for every case's host work")
      ->delimiter(',');
  app.add_option("--tokens", only_tokens, "Only the cases with these sequence lengths T, e.g. --tokens 4096")
      ->delimiter(',');
  app.add_flag("--no-check", skip_check, "Skip the reference check (not recommended: the numbers may be of wrong code)");
  CLI11_PARSE(app, argc, argv);
  std::vector<Case> cases;
  const bool all = !decode_only && !chunk_only && !train_only;
  if (all || chunk_only)
    cases.insert(cases.end(), {{"chunk", 1, 4096}, {"chunk", 8, 4096}, {"chunk", 2, 16384}, {"chunk", 1, 65536}});
  if (all || decode_only) cases.insert(cases.end(), {{"decode", 1, 1}, {"decode", 16, 1}, {"decode", 64, 1}, {"decode", 256, 1}});
  if (all || train_only) cases.insert(cases.end(), {{"train", 1, 4096}, {"train", 8, 4096}});
  const auto listed = [](const std::vector<index_t>& only, index_t x) {
    return only.empty() || std::find(only.begin(), only.end(), x) != only.end();
  };
  cases.erase(std::remove_if(cases.begin(), cases.end(),
                             [&](const Case& c) { return !listed(only_batch, c.B) || !listed(only_tokens, c.T); }),
              cases.end());
  if (cases.empty()) {
    std::fprintf(stderr, "gdn2-cuda-bench: no case has the --batch and --tokens given (cases: chunk B=1,8,2,1 with "
                         "T=4096,4096,16384,65536; decode B=1,16,64,256 with T=1; train B=1,8 with T=4096)\n");
    return 2;
  }
  std::string why;
  if (!device_available(&why)) {
    std::fprintf(stderr, "gdn2-cuda-bench: no usable CUDA device (%s)\n", why.c_str());
    return 77;
  }
  const DType dtype = dtype_name == "bf16" ? DType::bf16 : DType::f32;
  const double budget = dtype == DType::bf16 ? 5e-3 : 1e-5;  // docs/numerics.md 19
  const double elem = dtype == DType::bf16 ? 2 : 4;
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);

  DeviceBuffer flush(size_t(256) << 20);  // larger than the 50 MB L2
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::ostringstream json;
  json << "{\"device\": \"" << prop.name << "\", \"dtype\": \"" << dtype_name << "\", \"pool\": \""
       << (release_pool ? "trimmed" : "kept") << "\", \"H\": " << H << ", \"K\": " << K
       << ", \"V\": " << K << ", \"cases\": [";
  std::printf("gdn2-cuda-bench on %s (%d SMs), %s storage, H=%ld, K=V=%ld, median of %d, L2 flushed, memory pool %s\n",
              prop.name, prop.multiProcessorCount, dtype_name.c_str(), long(H), long(K), repeats,
              release_pool ? "trimmed before each run" : "kept between runs");
  std::printf("%-7s %-4s %-6s %-10s %-9s %-10s %-10s %-9s %-9s\n", "op", "B", "T", "ms", "ns/th", "GB/s", "ratio",
              "x floor", "check");
  bool first = true;
  // Where a case's wall time goes (on stderr, so the table on stdout stays as scripts read it): most of a run is host
  // work — random inputs in float64 and the reference check — and its length is what a device lease pays for.
  using Clock = std::chrono::steady_clock;
  const auto seconds = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); };
  for (const Case& c : cases) {
    const Clock::time_point t_start = Clock::now();
    const Form form = c.kind == "decode" ? Form::recurrent : Form::chunk;
    const bool train = c.kind == "train";
    CaseInputs inputs = random_case(uint64_t(c.B * 1000 + c.T), c.B, c.T, H, K, train);
    const Layer<double>& x = inputs.x;
    const Tensor<double>& dO = inputs.dO;
    const Tensor<double>& dht = inputs.dht;
    const Clock::time_point t_inputs = Clock::now();
    double err = -1;
    if (!skip_check && train) {
      const GradientRatios r = gradient_ratios(backward_on_device(x, dO, dht, dtype), reference_gradients(x, dO, dht, dtype));
      const double key = gradient_budget(dtype, false), gate = gradient_budget(dtype, true);
      err = std::max({r.dq, r.dk, r.dv, r.dh0});
      const double err_gate = std::max({r.dg, r.db, r.dw});
      if (!(err <= key) || !(err_gate <= gate)) {
        std::fprintf(stderr, "gdn2-cuda-bench: train B=%ld T=%ld: gradient ratios dq %.2e dk %.2e dv %.2e dh0 %.2e (budget %.0e), "
                     "dg %.2e db %.2e dw %.2e (budget %.0e); not timing it\n", long(c.B), long(c.T), r.dq, r.dk, r.dv, r.dh0,
                     key, r.dg, r.db, r.dw, gate);
        return 1;
      }
      err = std::max(err, err_gate);
    } else if (!skip_check) {
      const Outputs got = run_on_device(form, x, dtype);
      const Outputs ref = reference_outputs(x, dtype);
      err = ratio_max(got, ref);
      if (!(err <= budget)) {
        std::fprintf(stderr, "gdn2-cuda-bench: %s B=%ld T=%ld: ratio %.3e exceeds the budget %.0e; not timing it\n",
                     c.kind.c_str(), long(c.B), long(c.T), err, budget);
        return 1;
      }
    }
    const Clock::time_point t_checked = Clock::now();
    DeviceLayer d = to_device(x, dtype);
    DeviceGradients gr;
    if (train) gr = gradients_to_device(d, dO, dht);
    std::vector<float> ms, backward_ms, recompute_ms;
    cudaEvent_t middle;
    cudaEventCreate(&middle);
    SavedForBackward saved;
    size_t saved_bytes = 0;
    for (int path = 0; path < (train ? 2 : 1); ++path)  // train: 0 = kept workspace, 1 = recompute
      for (int rep = 0; rep < repeats + 2; ++rep) {
        cudaMemsetAsync(flush.ptr, rep, flush.bytes);
        saved.reset();  // (synchronises; outside the timed region)
        if (release_pool) cudaDeviceSynchronize(), trim_workspace_memory();
        cudaEventRecord(start);
        launch(form, d, 0, c.kind == "decode", train && path == 0 ? &saved : nullptr);  // decoding: ht == h0
        cudaEventRecord(middle);
        if (train) launch_backward(d, gr, 0, path == 0 ? &saved : nullptr);
        cudaEventRecord(stop);
        cudaEventSynchronize(stop);
        float t = 0, tb = 0;
        cudaEventElapsedTime(&t, start, stop);
        cudaEventElapsedTime(&tb, middle, stop);
        if (rep < 2) continue;  // two warm-up runs
        if (path == 0) ms.push_back(t), backward_ms.push_back(tb), saved_bytes = saved.bytes();
        else recompute_ms.push_back(t);
      }
    cudaEventDestroy(middle);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
      std::fprintf(stderr, "gdn2-cuda-bench: CUDA error %s\n", cudaGetErrorString(e));
      return 1;
    }
    std::fprintf(stderr, "gdn2-cuda-bench: %s B=%ld T=%ld took %.1f s: inputs %.1f s, reference check %.1f s, upload and "
                 "timed runs %.1f s\n", c.kind.c_str(), long(c.B), long(c.T), seconds(t_start, Clock::now()),
                 seconds(t_start, t_inputs), seconds(t_inputs, t_checked), seconds(t_checked, Clock::now()));
    std::sort(ms.begin(), ms.end());
    std::sort(backward_ms.begin(), backward_ms.end());
    std::sort(recompute_ms.begin(), recompute_ms.end());
    const double med = ms[ms.size() / 2], med_backward = backward_ms[backward_ms.size() / 2];
    const double med_recompute = train ? recompute_ms[recompute_ms.size() / 2] : 0;
    const double th = double(c.B * c.T * H);
    // Bytes: inputs read once, outputs written once (docs/performance.md): q, k, b (K each) and v, w (V) in the storage dtype,
    // g fp32, o in the storage dtype; the fp32 state read and written once per sequence and head.
    const double bytes = th * (elem * (3 * K + 2 * K) + 4 * K + elem * K) + 2.0 * c.B * H * K * K * 4;
    const double floor_ms = bytes / 3.0e12 * 1e3;
    char err_text[32] = "-";
    if (err >= 0) std::snprintf(err_text, sizeof err_text, "%.2e", err);
    std::printf("%-7s %-4ld %-6ld %-10.4f %-9.2f %-10.0f %-10s %-9.1f %-9s\n", c.kind.c_str(), long(c.B), long(c.T), med,
                med * 1e6 / th, bytes / (med * 1e-3) / 1e9, err_text, med / floor_ms, err >= 0 ? "ok" : "skipped");
    if (train)
      std::printf("        (backward alone %.4f ms, using the forward's kept workspace of %.2f GB; recomputing the forward "
                  "instead: %.4f ms in all; x floor counts the forward's bytes only)\n",
                  med_backward, saved_bytes / 1e9, med_recompute);
    json << (first ? "" : ", ") << "{\"op\": \"" << c.kind << "\", \"B\": " << c.B << ", \"T\": " << c.T
         << ", \"ms\": " << med << ", \"ns_per_token_head\": " << med * 1e6 / th << ", \"GBps\": " << bytes / (med * 1e-3) / 1e9
         << (train ? ", \"backward_ms\": " + std::to_string(med_backward) + ", \"recompute_ms\": " +
                         std::to_string(med_recompute) + ", \"saved_bytes\": " + std::to_string(saved_bytes)
                   : std::string())
         << ", \"floor_ms\": " << floor_ms << ", \"ratio_vs_reference\": " << err << "}";
    first = false;
  }
  json << "]}\n";
  std::printf("x floor: time / (bytes / 3.0 TB/s); the peer is timed side by side by python/bench/bench_peer.py\n");
  if (!json_path.empty()) std::ofstream(json_path) << json.str();
  return 0;
}
