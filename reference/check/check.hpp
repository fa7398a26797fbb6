// gdn2 reference — judging someone else's outputs and gradients against the float64 reference ("is my kernel
// right?"). The logic behind `gdn2 check` and the Python `gdn2.check`: both hand in named in-memory arrays and get a
// Report back; the CLI only loads directories into the maps and prints the report.
//
// What is expected: every tensor the reference can produce for these inputs (o, ht, and when the inputs hold an
// upstream gradient do / dht, the gradients of the files read: dq, dk, dv, dh0 with h0, and per variant dg, db, dw or
// dbeta, dA_log / ddt_bias with --decay). A missing one is a FAIL ("missing") unless Options::only names the subset
// to compare. A candidate name the reference knows but cannot produce for these inputs (dh0 without h0, dbeta for
// gdn2, a gradient without do/dht) is "not-produced" and fails; any other name is "ignored" (listed, harmless).
//
// Two criteria per tensor, both must hold:
//   global  ratio = |x - ref| / |ref| (2-norms over the whole tensor) <= bound
//   local   for every block of one (sequence, chunk of C tokens, head) — or one (sequence, head) state for ht/dh0 —
//           |x_blk - ref_blk| / max(|ref_blk|, |ref_head| sqrt(n_blk / n_head)) <= bound, where ref_head is the
//           reference of the block's head over every sequence and chunk (n_head values).
//           The floor in the denominator (the norm a block of that size would have if its head's reference were
//           spread evenly) keeps blocks whose reference is nearly zero from failing on rounding alone; it is taken
//           per head because heads are computed independently (a head of values 1e200 must not hide a wrong head of
//           values near 1). Tensors without a token axis (dA_log, ddt_bias) have one block: the local ratio is the
//           global one.
// The norms are accumulated with a running scale (LAPACK's dnrm2), so that they neither overflow nor underflow for
// values of any finite magnitude (1e200 and 1e-200 included).
// Non-finite candidate values fail the tensor; they are counted, the first is located, and the worst index points
// at the first one.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "io/npy.hpp"
#include "tools/inputs.hpp"

namespace gdn2::check {

// name (without ".npy") → array, e.g. {"q": ..., "k": ..., "do": ...}. The inputs map holds what `--in` holds
// (q, k, v, gates, optional h0, cu_seqlens, A_log, dt_bias, and the upstream gradients do, dht); the candidate map
// what `--candidate` holds.
using Arrays = std::map<std::string, io::NpyArray>;

// Thrown when the float64 reference itself overflows on these inputs (the `gdn2 check` exit status 3, as for
// `gdn2 forward`): no verdict on the candidate is possible. Bad inputs throw gdn2::InputError (exit 2).
struct ReferenceOverflow : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  tools::LayerOptions layer;      // variant, form, chunk size C, scale, front-end; in_dir and precision are unused
  std::string tolerance = "auto";  // auto | f64 | f32 | bf16 | a positive number (see bound_for)
  std::vector<std::string> only;  // non-empty: compare exactly these names, and a missing one among them fails
};

enum class Verdict {
  ok,            // present, finite, global and local ratio within the bound
  fail,          // present but wrong: a ratio over the bound, a non-finite value, or a shape/dtype mismatch
  missing,       // expected (the reference produces it, and --only names it or is empty) but not in the candidate
  ignored,       // in the candidate but not a tensor gdn2 knows (a stray file): listed, never judged
  not_produced,  // a tensor gdn2 knows (dh0, dbeta, dg, ...) that the reference cannot produce for these inputs
};
const char* verdict_name(Verdict v);  // "ok", "FAIL", "missing", "ignored", "not-produced"
bool verdict_passes(Verdict v);       // ok and ignored pass; the others fail the check

// One (sequence, chunk, head) block of the local criterion.
struct Block {
  index_t sequence = -1;  // n: batch row, or the packed sequence of cu_seqlens; -1 when the tensor has no blocks
  index_t chunk = -1;     // chunk index c within sequence n (tokens [c*C, min((c+1)*C, T_n)) of it); -1 for ht/dh0
  index_t head = -1;      // the tensor's own head axis: key head for dq/dk/dg/db/dbeta, value head for o/dv/dw/ht/dh0
  index_t t0 = 0, t1 = 0; // the block's tokens within sequence n, [t0, t1)
};

struct Row {
  std::string name;                    // tensor name without ".npy", e.g. "db"
  Verdict verdict = Verdict::ok;
  std::string dtype;                   // candidate dtype code: "f4", "f8", "i4", "i8" (or one gdn2 does not read:
                                       // "f2", "c16", ">c16"); empty when missing or not read
  std::vector<index_t> shape;          // candidate shape (empty when missing)
  std::vector<index_t> ref_shape;      // reference shape (empty for ignored / not-produced)
  double ratio = 0;                    // global |x - ref| / |ref| (2-norms); +inf when not comparable or non-finite
  double max_abs_error = 0;            // max_i |x_i - ref_i| (+inf when a value is non-finite)
  std::vector<index_t> worst_index;    // index of the largest |x_i - ref_i| (the first non-finite one if any)
  index_t non_finite = 0;              // number of NaN / ±inf candidate values
  std::vector<index_t> first_non_finite;  // index of the first of them (empty when none)
  Block worst_block;                   // the block with the largest local ratio
  double local_ratio = 0;              // that block's local ratio (see the file comment)
  double bound = 0;                    // the bound both ratios were held to; 0 when nothing was compared (missing,
                                       // or a dtype other than float32 / float64): "-" in the table, JSON null
  std::string bound_reason;            // why that bound: e.g. "f4 gradient (auto)", "bf16 output", "--tolerance 1e-3"
  std::string note;                    // what went wrong in words, e.g. "shape [2,3], reference [2,4]"; empty when ok
};

struct Report {
  bool passed = false;           // every row passes (ok or ignored) and at least one tensor was compared
  std::string form;              // "chunk" or "recurrent": the reference form used
  index_t chunk_size = 0;        // C of the local criterion's blocks (also the chunk form's C)
  bool gradients = false;        // the inputs held do and/or dht, so gradients were expected
  std::vector<Row> rows;         // expected tensors first (o, ht, then gradients), then not-produced, then ignored
};

// The bound for one tensor: auto follows the candidate's dtype (f8: 1e-10; f4: 1e-5 outputs o/ht, 1e-4 gradients);
// f64 1e-10; f32 as auto's f4; bf16 5e-3 outputs, 1e-2 dq/dk/dv/dh0, 2e-2 gate gradients; or a positive number.
// Throws InputError (naming --tolerance) for anything else. `reason` receives the why for Row::bound_reason.
double bound_for(const std::string& tolerance, const std::string& name, const std::string& dtype, std::string* reason);

// Runs the float64 reference on `inputs` (with the front-end and variant of opt.layer), computes the gradients when
// `inputs` holds do and/or dht, and judges every candidate tensor. Throws InputError on bad inputs or options and
// ReferenceOverflow when the reference's own outputs are not finite.
// An entry of `candidate` whose dtype is empty stands for a file that has not been read: `load(name)` reads it
// when, and only when, it is compared (one it refuses with io::UnsupportedNpy, a float16 or complex file say, fails
// its row with the refusal's words, as an int32 one does; any other exception ends the check) (a file that is not compared — left out by --only, not produced by the
// reference, or unknown — is never opened, so it cannot turn a good candidate into an error). Such a row shows no
// dtype and shape. Without `load`, every entry must hold its array.
using Loader = std::function<io::NpyArray(const std::string& name)>;
Report run(const Arrays& inputs, const Arrays& candidate, const Options& opt, const Loader& load = {});

// The report as the CLI's table (header line, one line per row, a PASSED/FAILED summary line) ...
std::string to_table(const Report& report, const std::string& candidate_label);
// ... and as one JSON object: {"passed": bool, "form": ..., "chunk_size": C, "gradients": bool, "tensors": [ {"name",
// "verdict", "dtype", "shape", "ratio", "max_abs_error", "worst_index": [..], "non_finite", "first_non_finite": [..],
// "local_ratio", "worst_block": {"sequence","chunk","head","t0","t1"}, "bound", "bound_reason", "note"} ]}.
// Numbers in full precision (%.17g); a non-finite number is written as null.
std::string to_json(const Report& report);
// The JSON object of an error outcome: {"passed": false, "error": message, "exit_status": status}.
std::string error_json(const std::string& message, int exit_status);

}  // namespace gdn2::check
