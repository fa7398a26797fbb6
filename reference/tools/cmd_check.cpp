// gdn2 check — loads --in and --candidate into named arrays, runs the library's check (check/check.hpp), prints
// the report as a table or JSON. Every outcome under --json is one JSON object on stdout, errors included.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "check/check.hpp"
#include "tools/commands.hpp"

namespace gdn2::tools {

namespace fs = std::filesystem;

namespace {

// The candidate directory by name only: every entry becomes an empty array ("not read yet"), a .npy file under its
// name without ".npy", anything else under its whole name. The check reads a file only when it compares it
// (check::run's loader), so a file it does not compare — left out by --only, one the reference cannot produce, a stray
// file, a FIFO — is never opened.
check::Arrays list_candidate_dir(const std::string& dir) {
  if (!fs::is_directory(dir)) throw InputError("--candidate: " + dir + " is not a directory");
  static const std::vector<std::string> known = {"o",  "ht", "dq",  "dk",    "dv",     "dg",
                                                 "db", "dw", "dh0", "dbeta", "dA_log", "ddt_bias"};
  check::Arrays out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    std::string f = entry.path().filename().string();
    if (f == io::kOutputList) continue;  // the list of what gdn2 wrote there, not a tensor
    if (f.size() > 4 && f.substr(f.size() - 4) == ".npy") f.resize(f.size() - 4);
    else if (std::find(known.begin(), known.end(), f) != known.end()) continue;  // "o" without .npy: not the tensor o
    out.emplace(f, io::NpyArray{});
  }
  if (ec) throw InputError("--candidate: cannot list " + dir + ": " + ec.message());
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
  const io::NamedArrays inputs = read_input_dir(args.layer.in_dir, input_names_read(args.layer, true), "gdn2 check",
                                                args.verbose ? &times : nullptr);
  const check::Arrays candidate = list_candidate_dir(args.candidate_dir);
  io::ReadTimes* const read_times = args.verbose ? &times : nullptr;
  const auto load = [&](const std::string& name) {
    return io::read_npy((fs::path(args.candidate_dir) / (name + ".npy")).string(), name + ".npy", read_times);
  };
  const auto t0 = std::chrono::steady_clock::now();
  const check::Report report = check::run(inputs, candidate, opt, load);
  if (args.verbose) {
    print_read_times(times);
    std::fprintf(stderr, "gdn2: reference and comparison: %.3f s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::fputs((args.json ? check::to_json(report) : check::to_table(report, args.candidate_dir)).c_str(), stdout);
  return report.passed ? kOk : kCheckFailed;
}

}  // namespace gdn2::tools
