// gdn2 reference — judging candidate outputs and gradients against the float64 reference (see check.hpp).
#include "check/check.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>

namespace gdn2::check {

namespace {

bool is_output(const std::string& name) { return name == "o" || name == "ht"; }
bool is_state(const std::string& name) { return name == "ht" || name == "dh0"; }

// Every tensor name a candidate may hold, in report order.
const std::vector<std::string>& known_names() {
  static const std::vector<std::string> names = {"o",  "ht",  "dq",   "dk",     "dv",      "dg",
                                                 "db", "dw", "dh0", "dbeta", "dA_log", "ddt_bias"};
  return names;
}
bool is_known(const std::string& name) {
  const auto& k = known_names();
  return std::find(k.begin(), k.end(), name) != k.end();
}

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

// Blocks of the local criterion for one tensor: a function from flat index to block id, and each block's
// description. Token tensors [B,T,heads,...]: one block per (sequence, chunk of C tokens, head); states
// [N,HV,K,V]: one per (sequence, head); anything else: one block.
struct Blocks {
  std::vector<Block> blocks;
  std::vector<index_t> of;  // flat index → block id
};

Blocks make_blocks(const std::string& name, const std::vector<index_t>& shape, const Dims& d,
                   const std::vector<index_t>& cu_seqlens, index_t C) {
  Blocks b;
  const index_t n = checked_numel(shape, name);
  b.of.assign(n, 0);
  if (is_state(name) && shape.size() == 4) {
    const index_t per = shape[2] * shape[3];
    for (index_t s = 0; s < shape[0]; ++s)
      for (index_t h = 0; h < shape[1]; ++h) b.blocks.push_back({s, -1, h, 0, 0});
    for (index_t i = 0; i < n; ++i) b.of[i] = i / per;
    return b;
  }
  if (shape.size() >= 3 && shape[0] == d.B && shape[1] == d.T && d.T > 0) {
    const index_t heads = shape[2];
    index_t inner = 1;
    for (size_t a = 3; a < shape.size(); ++a) inner *= shape[a];
    // Chunk id of every row of the flattened [B*T] token axis, numbered within its sequence.
    std::vector<index_t> row_block(d.B * d.T);
    for (index_t s = 0; s < d.N; ++s) {
      const SequenceSpan span = sequence_span(d, cu_seqlens, s);
      for (index_t c = 0; c * C < span.length; ++c) {
        const index_t t0 = c * C, t1 = std::min(span.length, t0 + C);
        const index_t first = static_cast<index_t>(b.blocks.size());
        for (index_t h = 0; h < heads; ++h) b.blocks.push_back({s, c, h, t0, t1});
        for (index_t t = t0; t < t1; ++t) row_block[span.row0 + t] = first;
      }
    }
    for (index_t i = 0; i < n; ++i) {
      const index_t row = i / (heads * inner), h = (i / inner) % heads;
      b.of[i] = row_block[row] + h;
    }
    return b;
  }
  b.blocks.push_back({});
  return b;
}

// A 2-norm accumulated without overflow or underflow (LAPACK's dnrm2): |x| = scale sqrt(ssq), scale the largest
// magnitude so far. Squaring directly gives |ref| = inf for values from about 1e154 (then a ratio of 0, or
// inf/inf = nan) and 0 for values under about 1e-162.
struct Norm2 {
  double scale = 0, ssq = 1;
  void add(double x) {
    const double ax = std::abs(x);
    if (ax == 0) return;
    if (!(ax <= scale)) {  // also for ax = inf or nan: the norm becomes inf or nan
      ssq = 1 + ssq * (scale / ax) * (scale / ax);
      scale = ax;
    } else {
      ssq += (ax / scale) * (ax / scale);
    }
  }
  void merge(const Norm2& o) {
    if (o.scale == 0) return;
    if (scale < o.scale) {
      ssq = o.ssq + ssq * (scale / o.scale) * (scale / o.scale);
      scale = o.scale;
    } else {
      ssq += o.ssq * (o.scale / scale) * (o.scale / scale);
    }
  }
  double value() const { return scale == 0 ? 0 : scale * std::sqrt(ssq); }
  // |this| / |other| without forming either norm (finite even where both norms exceed the largest double).
  double ratio_to(const Norm2& other) const { return scale == 0 ? 0 : (scale / other.scale) * std::sqrt(ssq / other.ssq); }
};

Row compare(const std::string& name, const io::NpyArray& cand, const Tensor<double>& ref, const Options& opt,
            const Dims& d, const std::vector<index_t>& cu_seqlens) {
  Row r;
  r.name = name;
  r.dtype = cand.dtype;
  r.shape = cand.shape;
  r.ref_shape = ref.shape;
  if (cand.dtype != "f4" && cand.dtype != "f8") {  // int32, int64: read, but not a tensor's dtype
    // No bound: nothing is compared, and auto's would be a float dtype's the candidate does not have.
    r.verdict = Verdict::fail;
    r.ratio = r.max_abs_error = r.local_ratio = INFINITY;
    r.note = "dtype must be float32 or float64, got int" + std::to_string(8 * std::atoi(cand.dtype.c_str() + 1)) +
             " ('<" + cand.dtype + "'); convert it with x.astype(np.float32)";
    return r;
  }
  r.bound = bound_for(opt.tolerance, name, cand.dtype, &r.bound_reason);
  if (cand.shape != ref.shape) {
    r.verdict = Verdict::fail;
    r.ratio = r.max_abs_error = r.local_ratio = INFINITY;
    r.note = "shape " + shape_str(cand.shape) + ", reference " + shape_str(ref.shape);
    return r;
  }
  const Tensor<double> x = io::to_tensor<double>(cand, name + ".npy");
  const index_t n = x.numel();
  const Blocks blocks = make_blocks(name, ref.shape, d, cu_seqlens, opt.layer.chunk_size);
  const size_t nb = blocks.blocks.size();
  std::vector<Norm2> err2(nb), ref2(nb);
  std::vector<double> cnt(nb, 0.0);
  Norm2 num, den;
  index_t worst = 0, first_bad = -1;
  for (index_t i = 0; i < n; ++i) {
    const double xi = x.data[i], ri = ref.data[i];
    const index_t blk = blocks.of[i];
    ref2[blk].add(ri);
    cnt[blk] += 1;
    den.add(ri);
    if (!std::isfinite(xi)) {
      if (first_bad < 0) first_bad = i;
      ++r.non_finite;
      continue;
    }
    const double e = xi - ri;
    err2[blk].add(e);
    num.add(e);
    if (std::abs(e) > r.max_abs_error) r.max_abs_error = std::abs(e), worst = i;
  }
  // Local criterion: each block's error against its reference norm, floored at the norm the block would have if its
  // head's reference (over every sequence and chunk) were spread evenly, so that blocks whose reference is ~0 are not
  // judged on rounding. Per head, not per tensor: heads are computed independently, so one head of values 1e200 must
  // not hide a wrong head of values near 1.
  std::map<index_t, std::pair<Norm2, double>> heads;  // head -> (norm of its reference, number of values)
  for (size_t k = 0; k < nb; ++k) {
    auto& h = heads[blocks.blocks[k].head];
    h.first.merge(ref2[k]);
    h.second += cnt[k];
  }
  index_t worst_blk = 0;
  for (size_t k = 0; k < nb; ++k) {
    if (cnt[k] == 0) continue;
    const auto& h = heads.at(blocks.blocks[k].head);
    const double floor = h.first.value() * std::sqrt(cnt[k] / h.second);
    const double denom = std::max(ref2[k].value(), floor);
    const double lr = denom == 0 ? err2[k].value() : err2[k].value() / denom;
    if (lr > r.local_ratio || k == 0) r.local_ratio = lr, worst_blk = static_cast<index_t>(k);
  }
  r.ratio = den.value() == 0 ? num.value() : num.ratio_to(den);
  if (first_bad >= 0) {
    r.first_non_finite = unravel_index(x.shape, first_bad);
    worst = first_bad;
    worst_blk = blocks.of[first_bad];
    r.ratio = r.max_abs_error = r.local_ratio = INFINITY;
  }
  r.worst_block = blocks.blocks[worst_blk];
  if (n) r.worst_index = unravel_index(x.shape, worst);
  if (r.non_finite) {
    r.verdict = Verdict::fail;
    r.note = std::to_string(r.non_finite) + " non-finite value(s)";
  } else if (!(r.ratio <= r.bound)) {
    r.verdict = Verdict::fail;
    r.note = "ratio over the bound";
  } else if (!(r.local_ratio <= r.bound)) {
    r.verdict = Verdict::fail;
    r.note = "local ratio over the bound";
  } else {
    r.verdict = Verdict::ok;
  }
  return r;
}

// The row of a candidate that could not be read (io::UnsupportedNpy: float16, complex, Fortran order):
// FAIL, with its dtype and shape as the file gives them and the reader's words (what is read, how to convert). No
// bound, as for a missing tensor: nothing was compared (auto's "f4" bound was shown for a float16 file).
Row unreadable(const std::string& name, const io::UnsupportedNpy& e, const Tensor<double>& ref) {
  Row r;
  r.name = name;
  r.verdict = Verdict::fail;
  r.dtype = e.dtype;
  r.shape = e.shape;
  r.ref_shape = ref.shape;
  r.ratio = r.max_abs_error = r.local_ratio = INFINITY;
  r.note = e.reason;
  return r;
}

template <typename Scalar>
index_t first_non_finite(const Tensor<Scalar>& x) {
  for (index_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(x.data[i])) return i;
  return -1;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      out += b;
    }
    else out += static_cast<char>(c);
  }
  return out + "\"";
}

// The shortest decimal that reads back as the same double (1e-08, not 0.000000 or 1.0000000000000000e-08).
std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  for (int digits = 1; digits <= 17; ++digits) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%.*g", digits, x);
    if (std::strtod(buf, nullptr) == x) return buf;
  }
  return fmt("%.17g", x);
}

std::string json_index(const std::vector<index_t>& idx) {
  std::string s = "[";
  for (size_t i = 0; i < idx.size(); ++i) s += (i ? ", " : "") + std::to_string(idx[i]);
  return s + "]";
}

std::string index_text(const std::vector<index_t>& idx) {
  if (idx.empty()) return "-";
  return shape_str(idx);
}

std::string block_text(const Block& b) {
  if (b.sequence < 0) return "-";
  if (b.chunk < 0) return "n" + std::to_string(b.sequence) + " h" + std::to_string(b.head);
  return "n" + std::to_string(b.sequence) + " c" + std::to_string(b.chunk) + " h" + std::to_string(b.head);
}

}  // namespace

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::ok: return "ok";
    case Verdict::fail: return "FAIL";
    case Verdict::missing: return "missing";
    case Verdict::ignored: return "ignored";
    case Verdict::not_produced: return "not-produced";
  }
  return "?";
}

bool verdict_passes(Verdict v) { return v == Verdict::ok || v == Verdict::ignored; }

double bound_for(const std::string& spec, const std::string& name, const std::string& dtype, std::string* reason) {
  const bool output = is_output(name);
  const std::string kind = output ? "output" : "gradient";
  auto say = [&](const std::string& why) {
    if (reason) *reason = why;
  };
  if (spec == "auto") {
    if (dtype == "f8") return say("auto: f8"), 1e-10;
    return say("auto: f4 " + kind), output ? 1e-5 : 1e-4;
  }
  if (spec == "f64") return say("f64"), 1e-10;
  if (spec == "f32") return say("f32 " + kind), output ? 1e-5 : 1e-4;
  if (spec == "bf16") {  // bf16 storage, fp32 accumulation
    if (output) return say("bf16 output"), 5e-3;
    if (name == "dq" || name == "dk" || name == "dv" || name == "dh0") return say("bf16 dq/dk/dv/dh0"), 1e-2;
    return say("bf16 gate gradient"), 2e-2;
  }
  char* end = nullptr;
  const double x = std::strtod(spec.c_str(), &end);
  if (!spec.empty() && end == spec.c_str() + spec.size() && std::isfinite(x) && x > 0) return say("--tolerance " + spec), x;
  throw InputError("--tolerance: expected auto, f64, f32, bf16 or a positive finite number, got '" + spec + "'");
}

Report run(const Arrays& inputs, const Arrays& candidate, const Options& opt, const Loader& load) {
  tools::LayerOptions layer = opt.layer;
  layer.precision = "f64";  // the reference is always float64
  if (layer.in_dir.empty()) layer.in_dir = "the inputs";
  bound_for(opt.tolerance, "o", "f8", nullptr);  // refuse a bad --tolerance before any work
  for (const auto& name : opt.only)
    if (!is_known(name))
      throw InputError("--only: unknown tensor '" + name + "' (expected o, ht, dq, dk, dv, dg, db, dw, dh0, dbeta, dA_log, ddt_bias)");
  const tools::LayerInputs<double> in = tools::load_layer_inputs<double>(layer, inputs);
  auto upstream = [&](const char* name) {
    const auto it = inputs.find(name);
    return it == inputs.end() ? Tensor<double>{} : io::to_tensor<double>(it->second, std::string(name) + ".npy");
  };
  const Tensor<double> do_ = upstream("do"), dht = upstream("dht");
  const Form form = tools::parse_form(layer.form);
  const ForwardOptions fopt = tools::forward_options(layer);
  const Dims d = validate_inputs(in.layer.q, in.layer.k, in.layer.v, in.layer.g, in.layer.b, in.layer.w, in.layer.h0,
                                 in.layer.cu_seqlens, fopt);

  Report report;
  report.form = layer.form;
  report.chunk_size = layer.chunk_size;
  report.gradients = !do_.empty() || !dht.empty();

  // The reference tensors: o and ht always; the gradients of the files read when an upstream gradient was given.
  std::vector<std::pair<std::string, Tensor<double>>> refs;
  {
    Tensor<double> o, ht;
    forward(form, o, ht, in.layer, fopt);
    refs.emplace_back("o", std::move(o));
    refs.emplace_back("ht", std::move(ht));
  }
  // Only compute gradients when some candidate or --only asks for one (the backward costs about twice the forward).
  bool wants_gradients = false;
  for (const auto& [name, a] : candidate) wants_gradients |= is_known(name) && !is_output(name);
  for (const auto& name : opt.only) wants_gradients |= !is_output(name);
  if (opt.only.empty() && report.gradients) wants_gradients = true;
  if (report.gradients && wants_gradients)
    for (auto& [name, t] : tools::file_gradients(layer, in, backward(form, in.layer, do_, dht, fopt)))
      refs.emplace_back(name, std::move(t));
  for (const auto& [name, t] : refs)
    if (const index_t i = first_non_finite(t); i >= 0)
      throw ReferenceOverflow(name + ": the float64 reference itself is not finite at " + index_str(t.shape, i) +
                              " (the state overflowed: the update is not normal, so it can grow even with g <= 0, "
                              "b <= 1); no verdict is possible on these inputs");

  auto expected = [&](const std::string& name) {
    return opt.only.empty() || std::find(opt.only.begin(), opt.only.end(), name) != opt.only.end();
  };
  std::set<std::string> produced;
  for (const auto& [name, ref] : refs) {
    produced.insert(name);
    const auto it = candidate.find(name);
    if (it == candidate.end()) {
      if (!expected(name)) continue;
      Row r;
      r.name = name;
      r.verdict = Verdict::missing;
      r.ref_shape = ref.shape;
      r.ratio = r.max_abs_error = r.local_ratio = INFINITY;  // no bound: nothing was compared (shown as "-")
      r.note = "expected " + name + ".npy " + shape_str(ref.shape) + (opt.only.empty() ? " (or name a subset with --only)" : "");
      report.rows.push_back(std::move(r));
      continue;
    }
    if (!expected(name)) {  // present but left out by --only: listed, not judged
      Row r;
      r.name = name;
      r.verdict = Verdict::ignored;
      r.dtype = it->second.dtype;
      r.shape = it->second.shape;
      r.note = "not in --only";
      report.rows.push_back(std::move(r));
      continue;
    }
    if (it->second.dtype.empty()) {  // a file not read yet: read it now that it is compared
      if (!load) throw InputError(name + ": an empty array (no dtype)");
      io::NpyArray cand;
      try {
        cand = load(name);
      } catch (const io::UnsupportedNpy& e) {
        // A valid file of a dtype (or order) gdn2 does not read fails this tensor, as an int32 one does; it is not
        // bad input to the whole check.
        report.rows.push_back(unreadable(name, e, ref));
        continue;
      }
      report.rows.push_back(compare(name, cand, ref, opt, d, in.layer.cu_seqlens));
    } else {
      report.rows.push_back(compare(name, it->second, ref, opt, d, in.layer.cu_seqlens));
    }
  }
  // Names gdn2 knows that the reference does not produce here, then everything else.
  auto why_not = [&](const std::string& name) -> std::string {
    if (!report.gradients) return "the inputs hold neither do.npy nor dht.npy, so no gradient is computed";
    if (name == "dh0") return "the inputs hold no h0.npy";
    if (name == "dbeta") return "variant " + layer.variant + " has no beta";
    if (name == "db" || name == "dw") return "variant " + layer.variant + " reads no " + name.substr(1) + ".npy";
    if (name == "dg") return "variant " + layer.variant + " reads no g.npy";
    return "the reference does not produce it with these options (--decay " + layer.decay + ")";
  };
  std::vector<Row> tail;
  for (const auto& [name, a] : candidate) {
    if (produced.count(name)) continue;
    Row r;
    r.name = name;
    r.dtype = a.dtype;
    r.shape = a.shape;
    if (is_known(name)) {
      r.verdict = Verdict::not_produced;
      r.ratio = r.max_abs_error = r.local_ratio = INFINITY;
      r.note = why_not(name);
      report.rows.push_back(std::move(r));
    } else {
      r.verdict = Verdict::ignored;
      r.note = "not a tensor gdn2 check knows";
      tail.push_back(std::move(r));
    }
  }
  for (const auto& name : opt.only)
    if (!produced.count(name) && !candidate.count(name)) {
      Row r;
      r.name = name;
      r.verdict = Verdict::not_produced;
      r.ratio = r.max_abs_error = r.local_ratio = INFINITY;
      r.note = "named by --only, but " + why_not(name);
      report.rows.push_back(std::move(r));
    }
  for (auto& r : tail) report.rows.push_back(std::move(r));

  bool compared = false;
  report.passed = true;
  for (const auto& r : report.rows) {
    report.passed = report.passed && verdict_passes(r.verdict);
    compared = compared || r.verdict != Verdict::ignored;
  }
  report.passed = report.passed && compared;
  return report;
}

std::string to_table(const Report& rep, const std::string& label) {
  std::string s = "gdn2 check: " + label + " vs the float64 reference (" + rep.form + " form; local blocks of C = " +
                  std::to_string(rep.chunk_size) + " tokens per head)\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-9s %-5s %-9s %-9s %-14s %-10s %-16s %-10s %-7s %-22s %s\n", "tensor", "dtype", "ratio",
                "local", "worst block", "max abs", "worst index", "non-finite", "bound", "(why)", "verdict");
  s += line;
  int failed = 0, compared = 0, ignored = 0;
  for (const auto& r : rep.rows) {
    // Values were compared (a wrong dtype or shape, or a file that could not be read, fails with no numbers to show:
    // "-", not inf; only non-finite values make a compared ratio inf).
    const bool judged = (r.verdict == Verdict::ok || r.verdict == Verdict::fail) && r.shape == r.ref_shape &&
                        (r.dtype == "f4" || r.dtype == "f8") && (std::isfinite(r.ratio) || r.non_finite > 0);
    if (r.verdict == Verdict::ignored) ++ignored;
    else ++compared;
    if (!verdict_passes(r.verdict)) ++failed;
    auto num = [&](double x) { return judged ? fmt("%.2e", x) : std::string("-"); };
    std::string verdict = verdict_name(r.verdict);
    if (!r.note.empty() && r.verdict != Verdict::ok) verdict += " (" + r.note + ")";
    std::snprintf(line, sizeof line, "%-9s %-5s %-9s %-9s %-14s %-10s %-16s %-10s %-7s %-22s %s\n", r.name.c_str(),
                  r.dtype.empty() ? "-" : r.dtype.c_str(), num(r.ratio).c_str(), num(r.local_ratio).c_str(),
                  judged ? block_text(r.worst_block).c_str() : "-", num(r.max_abs_error).c_str(),
                  judged ? index_text(r.worst_index).c_str() : "-", judged ? std::to_string(r.non_finite).c_str() : "-",
                  r.bound > 0 ? fmt("%.0e", r.bound).c_str() : "-", r.bound_reason.empty() ? "-" : r.bound_reason.c_str(),
                  verdict.c_str());
    s += line;
    if (r.non_finite)
      s += "          first non-finite value at " + index_text(r.first_non_finite) + "\n";
  }
  if (rep.passed)
    s += "PASSED: " + std::to_string(compared) + " tensor(s) compared";
  else
    s += "FAILED: " + std::to_string(failed) + " of " + std::to_string(compared) + " tensor(s)";
  if (ignored) s += ", " + std::to_string(ignored) + " ignored";
  s += "; ratio = |x - ref| / |ref| (2-norms), local = the same per (sequence, chunk, head) block\n";
  return s;
}

std::string to_json(const Report& rep) {
  std::string s = "{\"passed\": " + std::string(rep.passed ? "true" : "false") + ", \"form\": " + json_string(rep.form) +
                  ", \"chunk_size\": " + std::to_string(rep.chunk_size) +
                  ", \"gradients\": " + (rep.gradients ? "true" : "false") + ", \"tensors\": [";
  for (size_t i = 0; i < rep.rows.size(); ++i) {
    const Row& r = rep.rows[i];
    const Block& b = r.worst_block;
    s += std::string(i ? ", " : "") + "{\"name\": " + json_string(r.name) + ", \"verdict\": " + json_string(verdict_name(r.verdict)) +
         ", \"passed\": " + (verdict_passes(r.verdict) ? "true" : "false") + ", \"dtype\": " + json_string(r.dtype) +
         ", \"shape\": " + json_index(r.shape) + ", \"reference_shape\": " + json_index(r.ref_shape) +
         ", \"ratio\": " + json_number(r.ratio) + ", \"max_abs_error\": " + json_number(r.max_abs_error) +
         ", \"worst_index\": " + json_index(r.worst_index) + ", \"non_finite\": " + std::to_string(r.non_finite) +
         ", \"first_non_finite\": " + json_index(r.first_non_finite) + ", \"local_ratio\": " + json_number(r.local_ratio) +
         ", \"worst_block\": {\"sequence\": " + std::to_string(b.sequence) + ", \"chunk\": " + std::to_string(b.chunk) +
         ", \"head\": " + std::to_string(b.head) + ", \"t0\": " + std::to_string(b.t0) + ", \"t1\": " + std::to_string(b.t1) +
         "}, \"bound\": " + (r.bound > 0 ? json_number(r.bound) : "null") + ", \"bound_reason\": " + json_string(r.bound_reason) +
         ", \"note\": " + json_string(r.note) + "}";
  }
  return s + "]}\n";
}

std::string error_json(const std::string& message, int exit_status) {
  return "{\"passed\": false, \"error\": " + json_string(message) + ", \"exit_status\": " + std::to_string(exit_status) + "}\n";
}

}  // namespace gdn2::check
