// gdn2 bench — speed of the reference itself (a benchmark, not a test): token-heads per second of both forms.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "core/random_inputs.hpp"
#include "tools/commands.hpp"

namespace gdn2::tools {

int run_bench(const BenchArgs& args) {
  if (!args.json)
    std::printf("gdn2 bench: reference forward, float64, B=1, T=%ld, H=HV=%ld, C=64, %d thread(s), median of %d\n"
                "%-6s %-10s %-12s %-16s %-10s\n",
                long(args.T), long(args.H), args.threads, args.repeats, "K=V", "form", "seconds", "token-heads/s",
                "ratio");
  for (index_t D : args.dims) {
    if (D <= 0) throw InputError("--dims: head dimensions must be positive");
    Rng rng(7);
    const auto x = random_layer<double>(rng, 1, args.T, args.H, args.H, D, D, [](Rng& r) { return r.uniform(-0.05, 0); });
    ForwardOptions opt;
    opt.num_threads = args.threads;
    Tensor<double> ref_o, ref_ht;
    for (Form form : {Form::recurrent, Form::chunk}) {
      std::vector<double> seconds;
      Tensor<double> o, ht;
      for (int rep = 0; rep < args.repeats; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        forward(form, o, ht, x.q, x.k, x.v, x.g, x.b, x.w, x.h0, {}, opt);
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(seconds.begin(), seconds.end());
      const double s = seconds[seconds.size() / 2];
      if (form == Form::recurrent) ref_o = o;
      const double err = ratio(o, ref_o);  // the chunk form is checked against the recurrence it is timed beside
      const char* name = form == Form::recurrent ? "recurrent" : "chunk";
      const double ths = double(args.T * args.H) / s;
      if (args.json)
        std::printf("{\"K\": %ld, \"V\": %ld, \"T\": %ld, \"H\": %ld, \"threads\": %d, \"form\": \"%s\", \"seconds\": %.6f, "
                    "\"token_heads_per_s\": %.1f, \"ratio_vs_recurrent\": %.3e}\n",
                    long(D), long(D), long(args.T), long(args.H), args.threads, name, s, ths, err);
      else
        std::printf("%-6ld %-10s %-12.4f %-16.0f %-10.1e\n", long(D), name, s, ths, err);
    }
  }
  return kOk;
}

}  // namespace gdn2::tools
