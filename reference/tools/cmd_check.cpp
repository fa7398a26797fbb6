// gdn2 check — loads --in and --candidate into named arrays, runs the library's check (check/check.hpp), prints
// the report as a table or JSON. Every outcome under --json is one JSON object on stdout, errors included.
#include <cstdio>
#include <filesystem>

#include "check/check.hpp"
#include "tools/commands.hpp"

namespace gdn2::tools {

namespace fs = std::filesystem;

namespace {

// Every known tensor of the candidate directory is read; any other entry is listed by name only (never read, so a
// stray file cannot make a good candidate fail to load).
check::Arrays read_candidate_dir(const std::string& dir, io::ReadTimes* times) {
  if (!fs::is_directory(dir)) throw InputError("--candidate: " + dir + " is not a directory");
  static const std::vector<std::string> known = {"o",  "ht", "dq",  "dk",    "dv",     "dg",
                                                 "db", "dw", "dh0", "dbeta", "dA_log", "ddt_bias"};
  check::Arrays out = io::read_npy_dir(dir, known, times);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string f = entry.path().filename().string();
    if (f.size() > 4 && f.substr(f.size() - 4) == ".npy") f.resize(f.size() - 4);
    if (!out.count(f) && std::find(known.begin(), known.end(), f) == known.end()) out.emplace(f, io::NpyArray{});
  }
  return out;
}

}  // namespace

int run_check(const CheckArgs& args) {
  check::Options opt;
  opt.layer = args.layer;
  opt.tolerance = args.tolerance;
  opt.only = args.only;
  io::ReadTimes times;
  check::bound_for(opt.tolerance, "o", "f8", nullptr);  // a bad --tolerance is refused before anything is read
  const io::NamedArrays inputs = read_input_dir(args.layer.in_dir, args.verbose ? &times : nullptr);
  const check::Arrays candidate = read_candidate_dir(args.candidate_dir, args.verbose ? &times : nullptr);
  const auto t0 = std::chrono::steady_clock::now();
  const check::Report report = check::run(inputs, candidate, opt);
  if (args.verbose) {
    print_read_times(times);
    std::fprintf(stderr, "gdn2: reference and comparison: %.3f s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::fputs((args.json ? check::to_json(report) : check::to_table(report, args.candidate_dir)).c_str(), stdout);
  return report.passed ? kOk : kCheckFailed;
}

}  // namespace gdn2::tools
