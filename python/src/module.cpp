// gdn2._gdn2 — the reference (and, when built, the CUDA host API) for Python. Thin: converts NumPy arrays to the
// reference's tensors (one copy, converting float32 <-> float64 on the way when the working precision differs),
// calls the same library functions as the `gdn2` command line (tools/inputs.hpp: loading, front-end, gate tying,
// validation), and hands the results back as NumPy arrays without copying them. Bad input raises ValueError with the
// command line's one-line message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "check/check.hpp"
#include "core/random_inputs.hpp"
#include "tools/inputs.hpp"

namespace py = pybind11;

namespace gdn2::python {

#ifdef GDN2_PYTHON_CUDA
void bind_cuda(py::module_& m);  // cuda_ops.cpp
#endif

namespace {

// "f4", "f8", "i4", "i8", ...: the dtype codes of the .npy header, as the command line names them.
std::string dtype_code(const py::array& a) { return std::string(1, a.dtype().kind()) + std::to_string(a.itemsize()); }

std::vector<index_t> shape_of(const py::array& a) { return std::vector<index_t>(a.shape(), a.shape() + a.ndim()); }

// An array of a dtype other than float32, float64, int32 and int64 (float16, complex, bool, objects, ...) is refused
// as the command line refuses its .npy file (io::dtype_reason: the dtype, what is read, how to convert). A big-endian
// array of those four is read by value, as the command line reads a big-endian .npy file (io/npy.cpp).
void refuse_unsupported_dtype(const py::array& a, const std::string& name) {
  const std::string code = dtype_code(a);
  if (code != "f4" && code != "f8" && code != "i4" && code != "i8")
    throw io::unsupported_dtype(name, py::str(a.dtype().attr("str")), shape_of(a));
}

// What `gdn2 forward` / `backward` answer with exit 3: a non-finite output means the working precision overflowed
// (the update is not normal, so the state can grow even with g <= 0, b <= 1). Raised as OverflowError.
struct ResultOverflow : std::runtime_error {
  using std::runtime_error::runtime_error;
};
template <typename Scalar>
void require_finite(const std::string& name, const Tensor<Scalar>& x) {
  for (index_t i = 0; i < x.numel(); ++i)
    if (!std::isfinite(x.data[i]))
      throw ResultOverflow(name + ": non-finite value at " + index_str(x.shape, i) + ": the state overflowed " +
                           (sizeof(Scalar) == 4 ? "float32 (the update is not normal, so the state can grow even with "
                                                  "g <= 0, b <= 1); run again with precision=\"f64\""
                                                : "float64, the widest precision: these inputs have no finite result"));
}

// numpy.copyto(dst, a): one pass over a, in any memory order (C, Fortran, a transposed or sliced view), converting
// the dtype on the way where dst's differs. dst is a NumPy view of memory the caller owns.
void copy_into(void* dst, const py::dtype& dtype, const py::array& a) {
  py::array view(dtype, shape_of(a), dst, py::capsule(dst, [](void*) {}));  // a view: the capsule owns nothing
  py::module_::import("numpy").attr("copyto")(view, a, py::arg("casting") = "same_kind");
}

// The one copy: a float32 or float64 array, in any memory order, into a Tensor<Scalar>.
template <typename Scalar>
Tensor<Scalar> to_tensor(const py::array& a, const std::string& name) {
  const std::string code = dtype_code(a);
  refuse_unsupported_dtype(a, name);
  if (code != "f4" && code != "f8") throw InputError(name + ": dtype must be float32 or float64, got " + code);
  Tensor<Scalar> x(shape_of(a), name);
  if (x.numel() > 0) copy_into(x.ptr(), py::dtype::of<Scalar>(), a);
  if constexpr (std::is_same_v<Scalar, float>) {
    if (code == "f8")  // a finite float64 that became inf: named as the command line names it (io/npy.cpp)
      for (index_t i = 0; i < x.numel(); ++i) {
        if (std::isfinite(x.data[i])) continue;
        const std::vector<index_t> at = unravel_index(x.shape, i);
        const double value = a.attr("item")(py::tuple(py::cast(at))).template cast<double>();
        if (std::isfinite(value)) throw io::does_not_fit_float32(name, value, at, "precision=\"f32\"");
      }
  }
  return x;
}

std::vector<index_t> to_indices(const py::array& a, const std::string& name) {
  const std::string code = dtype_code(a);
  refuse_unsupported_dtype(a, name);
  if (code != "i4" && code != "i8") throw InputError(name + ": dtype must be int32 or int64, got " + code);
  if (a.ndim() != 1) throw InputError(name + ": expected a 1-D array, got shape " + shape_str(shape_of(a)));
  if (a.shape(0) < 2)  // the command line's words (io/npy.cpp): an empty one is not "no cu_seqlens"
    throw InputError(name + ": " + std::to_string(a.shape(0)) + " entries; needs at least 2 ([0, ..., T]: N + 1 offsets)");
  std::vector<int64_t> values(a.shape(0));
  if (!values.empty()) copy_into(values.data(), py::dtype::of<int64_t>(), a);
  return std::vector<index_t>(values.begin(), values.end());
}

// A tensor handed to NumPy without a copy: the array owns the tensor's vector through a capsule.
template <typename Scalar>
py::array to_numpy(Tensor<Scalar>&& x) {
  auto* data = new std::vector<Scalar>(std::move(x.data));
  py::capsule owner(data, [](void* p) { delete static_cast<std::vector<Scalar>*>(p); });
  return py::array_t<Scalar>(x.shape, data->data(), owner);
}

// The arguments of forward/backward: arrays by their file names (q, k, v, g, b, w, beta, h0, cu_seqlens, A_log,
// dt_bias, do, dht), None meaning absent, converted to the working precision before the GIL is released.
template <typename Scalar>
struct Converted {
  std::map<std::string, Tensor<Scalar>> tensors;
  std::map<std::string, std::vector<index_t>> indices;

  explicit Converted(const py::dict& arrays) {
    for (auto [key, value] : arrays) {
      const std::string name = py::cast<std::string>(key);
      if (value.is_none()) continue;
      if (!py::isinstance<py::array>(value))
        throw InputError(name + ".npy: expected a NumPy array, got " + std::string(py::str(value.attr("__class__").attr("__name__"))));
      const py::array a = py::reinterpret_borrow<py::array>(value);
      if (a.ndim() == 0)  // as the command line refuses a 0-d .npy (io/npy.cpp), instead of running as if absent
        throw InputError(name + ".npy: a 0-d array (shape ()); every tensor of the layer has at least one axis");
      if (name == "cu_seqlens")
        indices[name] = to_indices(a, name + ".npy");
      else
        tensors[name] = to_tensor<Scalar>(a, name + ".npy");
    }
  }

  tools::InputSource<Scalar> source() {
    tools::InputSource<Scalar> src;
    src.where = "the arguments";
    src.has = [this](const std::string& n) { return tensors.count(n) > 0 || indices.count(n) > 0; };
    src.tensor = [this](const std::string& n) { return std::move(tensors.at(n)); };  // each name is read once
    src.indices = [this](const std::string& n) { return indices.at(n); };
    return src;
  }

  Tensor<Scalar> take(const std::string& n) {
    auto it = tensors.find(n);
    return it == tensors.end() ? Tensor<Scalar>{} : std::move(it->second);
  }
};

// `variant="kda"`: an option's value as the keyword argument is written.
std::string keyword(const std::string& name, const std::string& value) { return name + "=\"" + value + "\""; }

// An option given where it has no effect is refused in the command line's words (tools::layer_option_without_effect),
// with the keyword arguments' names. lower_bound counts as given only when the caller passed it (None is its default).
void refuse_options_without_effect(const tools::LayerOptions& opt, bool lower_bound_given) {
  const auto refusal = tools::layer_option_without_effect(
      opt,
      [&](const std::string& field) {
        return field == "lower_bound" ? lower_bound_given : field == "gate_logits" ? opt.gate_logits : opt.negative_eigen;
      },
      [](const std::string& field, const std::string& value) { return value.empty() ? field : keyword(field, value); });
  if (refusal) throw InputError(refusal->option + ": " + refusal->why);
}

// An array given that the variant and the decay do not read (tools::input_names_read: what the command line reads
// from --in with these options) is refused, naming what would read it: it would otherwise be ignored without a word
// (beta with variant="gdn2", b and w with a tied variant, A_log and dt_bias without a decay). `arrays` is keyed by the
// command line's file names, which are the keyword arguments' names for every array that can be refused (h0, the
// initial_state, is always read).
void refuse_arrays_without_effect(const py::dict& arrays, const tools::LayerOptions& opt) {
  const std::vector<std::string> read = tools::input_names_read(opt, true);
  for (const std::string& name : tools::input_names()) {
    if (!arrays.contains(name) || arrays[py::str(name)].is_none()) continue;
    if (std::find(read.begin(), read.end(), name) != read.end()) continue;
    if (name == "A_log")
      throw InputError("A_log: has no effect without decay=\"softplus\" (g = -exp(A_log) softplus(g + dt_bias), Eq. 12); "
                       "give decay=\"softplus\", or leave A_log out");
    if (name == "dt_bias")
      throw InputError("dt_bias: has no effect without a decay (decay=\"softplus\": g = -exp(A_log) softplus(g + "
                       "dt_bias); decay=\"bounded\": g = lower_bound sigmoid(g + dt_bias)); give one, or leave dt_bias out");
    // The rest are the gates a variant reads or not: b, w (gdn2), beta (kda, gdn, deltanet), g (all but deltanet).
    const bool linear = opt.variant == "linear";
    std::string why = "no decay: g = 0", give = "variant=\"gdn2\", \"kda\", \"gdn\" or \"linear\"";  // g
    if (name == "b" || name == "w") {
      why = linear ? "no erase gate, w = 1" : "b = w = beta*1, tied to beta";
      give = "variant=\"gdn2\"";
    } else if (name == "beta") {
      why = linear ? "no erase gate, w = 1" : "its gates are g, b and w; beta is the tied gate of kda, gdn and deltanet";
      give = "variant=\"kda\", \"gdn\" or \"deltanet\"";
    }
    throw InputError(name + ": has no effect with " + keyword("variant", opt.variant) + " (" + why + "); give " + give +
                     ", or leave " + name + " out");
  }
}

tools::LayerOptions layer_options(const std::string& form, const std::string& precision, const std::string& variant,
                                  index_t chunk_size, std::optional<double> scale, bool l2norm_qk, bool gate_logits,
                                  bool negative_eigen, const std::string& decay, std::optional<double> lower_bound,
                                  int threads) {
  tools::LayerOptions opt;
  opt.form = form, opt.precision = precision, opt.variant = variant, opt.chunk_size = chunk_size, opt.scale = scale;
  opt.l2norm_qk = l2norm_qk, opt.gate_logits = gate_logits, opt.negative_eigen = negative_eigen;
  opt.decay = decay, opt.threads = threads;
  if (lower_bound) opt.lower_bound = *lower_bound;  // else the command line's default
  // The checks the command line's option parser makes (tools/cmd_forward.cpp; the chunk size is checked with the
  // inputs), in the keyword arguments' names.
  if (scale && !std::isfinite(*scale)) throw InputError("scale: expected a finite number, got " + std::to_string(*scale));
  if (lower_bound && !(std::isfinite(*lower_bound) && *lower_bound >= -1e6 && *lower_bound < 0))
    throw InputError("lower_bound: expected a finite number in [-1e+06, 0), got " + std::to_string(*lower_bound));
  if (threads < 0 || threads > 4096) throw InputError("num_threads: expected an integer in [0, 4096], got " + std::to_string(threads));
  tools::parse_form(form);
  if (precision != "f64" && precision != "f32")
    throw InputError("unknown precision '" + precision + "' (expected f64 or f32)");
  parse_variant(variant);
  if (decay != "none" && decay != "softplus" && decay != "bounded")
    throw InputError("unknown --decay '" + decay + "' (expected none, softplus or bounded)");
  refuse_options_without_effect(opt, lower_bound.has_value());
  return opt;
}

template <typename Scalar>
py::tuple forward_in(const py::dict& arrays, const tools::LayerOptions& opt) {
  Converted<Scalar> in(arrays);
  Tensor<Scalar> o, ht;
  {
    py::gil_scoped_release release;
    const tools::LayerInputs<Scalar> x = tools::load_layer_inputs(opt, in.source());
    forward(tools::parse_form(opt.form), o, ht, x.layer, tools::forward_options(opt));
    require_finite("o", o), require_finite("ht", ht);
  }
  return py::make_tuple(to_numpy(std::move(o)), to_numpy(std::move(ht)));
}

template <typename Scalar>
py::dict backward_in(const py::dict& arrays, const tools::LayerOptions& opt) {
  Converted<Scalar> in(arrays);
  const Tensor<Scalar> do_ = in.take("do"), dht = in.take("dht");
  std::vector<std::pair<std::string, Tensor<Scalar>>> grads;
  {
    py::gil_scoped_release release;
    const tools::LayerInputs<Scalar> x = tools::load_layer_inputs(opt, in.source());
    grads = tools::file_gradients(opt, x,
                                  backward(tools::parse_form(opt.form), x.layer, do_, dht, tools::forward_options(opt)));
    for (const auto& [name, t] : grads) require_finite(name, t);
  }
  py::dict out;
  for (auto& [name, t] : grads) out[py::str(name)] = to_numpy(std::move(t));
  return out;
}

// An array as the check reads it (the raw bytes of a .npy file's body): float32/float64/int32/int64, C order. Another
// dtype raises io::UnsupportedNpy.
io::NpyArray to_npy_array(const py::handle& value, const std::string& name) {
  if (!py::isinstance<py::array>(value))
    throw InputError(name + ".npy: expected a NumPy array, got " + std::string(py::str(value.attr("__class__").attr("__name__"))));
  const py::array a = py::reinterpret_borrow<py::array>(value);
  const std::string code = dtype_code(a);
  refuse_unsupported_dtype(a, name + ".npy");
  io::NpyArray x;
  x.dtype = code;
  x.shape = shape_of(a);
  x.bytes.resize(a.nbytes());
  // The body in C order and in this machine's byte order (a '>f4' array's values, not its bytes), as the command
  // line's reader holds a .npy file's body (a '>f4' file's swapped to little-endian).
  const auto native = py::reinterpret_borrow<py::dtype>(a.dtype().attr("newbyteorder")("="));
  if (!x.bytes.empty()) copy_into(x.bytes.data(), native, a);
  return x;
}

check::Arrays to_arrays(const py::dict& d) {
  check::Arrays out;
  for (auto [key, value] : d)
    if (!value.is_none()) out[py::cast<std::string>(key)] = to_npy_array(value, py::cast<std::string>(key));
  return out;
}

// Inputs drawn as the reference's tests draw them (core/random_inputs.hpp): unit-norm q, k; v ~ N(0,1);
// b, w ~ U(0,1); g ~ U(g_low, 0); h0 ~ N(0, 1/4); and upstream gradients do, dht ~ N(0,1). Deterministic by seed.
py::dict random_inputs(index_t B, index_t T, index_t H, index_t HV, index_t K, index_t V, double g_low, bool h0,
                       std::uint64_t seed) {
  Rng rng(seed);
  Layer<double> x = random_layer<double>(rng, B, T, H, HV, K, V, [&](Rng& r) { return r.uniform(g_low, 0); }, h0);
  Tensor<double> do_({B, T, HV, V}, "do"), dht({B, HV, K, V}, "dht");
  for (auto& e : do_.data) e = rng.normal();
  for (auto& e : dht.data) e = rng.normal();
  py::dict out;
  out["q"] = to_numpy(std::move(x.q)), out["k"] = to_numpy(std::move(x.k)), out["v"] = to_numpy(std::move(x.v));
  out["g"] = to_numpy(std::move(x.g)), out["b"] = to_numpy(std::move(x.b)), out["w"] = to_numpy(std::move(x.w));
  if (h0) out["h0"] = to_numpy(std::move(x.h0));
  out["do"] = to_numpy(std::move(do_)), out["dht"] = to_numpy(std::move(dht));
  return out;
}

void bind_check(py::module_& m) {
  using check::Block;
  using check::Report;
  using check::Row;
  py::class_<Block>(m, "Block", "One (sequence, chunk of C tokens, head) block of the local criterion")
      .def_readonly("sequence", &Block::sequence)
      .def_readonly("chunk", &Block::chunk)
      .def_readonly("head", &Block::head)
      .def_readonly("t0", &Block::t0)
      .def_readonly("t1", &Block::t1);
  py::class_<Row>(m, "Row", "One tensor of a check report (reference/check/check.hpp says what each field means)")
      .def_readonly("name", &Row::name)
      .def_property_readonly("verdict", [](const Row& r) { return std::string(check::verdict_name(r.verdict)); })
      .def_property_readonly("passed", [](const Row& r) { return check::verdict_passes(r.verdict); })
      .def_readonly("dtype", &Row::dtype)
      .def_readonly("shape", &Row::shape)
      .def_readonly("ref_shape", &Row::ref_shape)
      .def_readonly("ratio", &Row::ratio)
      .def_readonly("max_abs_error", &Row::max_abs_error)
      .def_readonly("worst_index", &Row::worst_index)
      .def_readonly("non_finite", &Row::non_finite)
      .def_readonly("first_non_finite", &Row::first_non_finite)
      .def_readonly("worst_block", &Row::worst_block)
      .def_readonly("local_ratio", &Row::local_ratio)
      .def_readonly("bound", &Row::bound)
      .def_readonly("bound_reason", &Row::bound_reason)
      .def_readonly("note", &Row::note)
      .def("__repr__", [](const Row& r) {
        return "<gdn2 check row " + r.name + ": " + check::verdict_name(r.verdict) + ", ratio " + std::to_string(r.ratio) + ">";
      });
  py::class_<Report>(m, "Report", "The verdict of gdn2.check: .passed, .rows, printable as the CLI's table")
      .def_readonly("passed", &Report::passed)
      .def_readonly("form", &Report::form)
      .def_readonly("chunk_size", &Report::chunk_size)
      .def_readonly("gradients", &Report::gradients)
      .def_readonly("rows", &Report::rows)
      .def_property_readonly("table", [](const Report& r) { return check::to_table(r, "candidate"); })
      .def_property_readonly("json", [](const Report& r) { return check::to_json(r); })
      .def("__str__", [](const Report& r) { return check::to_table(r, "candidate"); })
      .def("__bool__", [](const Report& r) { return r.passed; });

  m.def(
      "check",
      [](const py::dict& inputs, const py::dict& candidate, const std::string& tolerance,
         const std::vector<std::string>& only, const std::string& form, const std::string& variant, index_t chunk_size,
         std::optional<double> scale, bool l2norm_qk, bool gate_logits, bool negative_eigen, const std::string& decay,
         std::optional<double> lower_bound, int threads) {
        check::Options opt;
        opt.layer = layer_options(form, "f64", variant, chunk_size, scale, l2norm_qk, gate_logits, negative_eigen, decay,
                                  lower_bound, threads);
        opt.layer.in_dir = "the inputs";
        // A misnamed input (initial_state for h0, say) would otherwise be left out unseen, and a candidate that
        // ignores it could pass: every name must be one the command line reads from --in.
        const std::vector<std::string>& known = tools::input_names();
        for (auto item : inputs) {
          const std::string name = py::cast<std::string>(item.first);
          if (std::find(known.begin(), known.end(), name) == known.end())
            throw InputError("inputs: unknown name '" + name + "' (the inputs are named as gdn2 check --in files: " +
                             tools::input_names_text() + ")");
        }
        refuse_arrays_without_effect(inputs, opt.layer);
        opt.tolerance = tolerance;
        opt.only = only;
        const check::Arrays in = to_arrays(inputs);
        // A candidate of a dtype gdn2 does not read (float16, say) fails its row, as its .npy file does in `gdn2
        // check` (check::run's loader): it is entered unread, and reading it raises the refusal.
        check::Arrays cand;
        std::map<std::string, io::UnsupportedNpy> unreadable;
        for (auto [key, value] : candidate) {
          if (value.is_none()) continue;
          const std::string name = py::cast<std::string>(key);
          try {
            cand[name] = to_npy_array(value, name);
          } catch (const io::UnsupportedNpy& e) {
            cand[name] = io::NpyArray{};
            unreadable.emplace(name, e);
          }
        }
        const check::Loader load = [&unreadable](const std::string& name) -> io::NpyArray { throw unreadable.at(name); };
        py::gil_scoped_release release;
        return check::run(in, cand, opt, load);
      },
      "gdn2 check on arrays in memory", py::arg("inputs"), py::arg("candidate"), py::arg("tolerance"), py::arg("only"),
      py::arg("form"), py::arg("variant"), py::arg("chunk_size"), py::arg("scale"), py::arg("l2norm_qk"),
      py::arg("gate_logits"), py::arg("negative_eigen"), py::arg("decay"), py::arg("lower_bound"), py::arg("threads"));
  m.def("random_inputs", &random_inputs, py::arg("B"), py::arg("T"), py::arg("H"), py::arg("HV"), py::arg("K"),
        py::arg("V"), py::arg("g_low"), py::arg("h0"), py::arg("seed"));
}

}  // namespace

}  // namespace gdn2::python

PYBIND11_MODULE(_gdn2, m) {
  using namespace gdn2;
  using namespace gdn2::python;
#if PYBIND11_VERSION_HEX < 0x020C0000
  // pybind11 before 2.12 reads NumPy's dtype structures with NumPy 1's layout: under NumPy 2 every dtype would read
  // as size 0 ("got f0"). Refuse to load rather than mislead.
  const auto numpy_version = py::module_::import("numpy").attr("__version__").cast<std::string>();
  if (std::stoi(numpy_version) >= 2) {
    PyErr_SetString(PyExc_ImportError, ("gdn2 was built with pybind11 " PYBIND11_TOSTRING(PYBIND11_VERSION_MAJOR) "."
                                        PYBIND11_TOSTRING(PYBIND11_VERSION_MINOR) ", which cannot read NumPy " +
                                        numpy_version + "'s arrays: rebuild it with pybind11 >= 2.12 (pip install "
                                        "pybind11; cmake -Dpybind11_DIR=$(python3 -m pybind11 --cmakedir))")
                                           .c_str());
    throw py::error_already_set();
  }
#endif
  m.doc() = "gdn2's C++ core: the float64 reference of Gated DeltaNet-2 (and its CUDA kernels when built). Use the "
            "gdn2 package's functions, not these.";
  // Module-local, so it is tried before the global translators other extensions (PyTorch's) register.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const InputError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const ResultOverflow& e) {  // `gdn2 forward` / `backward` exit 3
      PyErr_SetString(PyExc_OverflowError, e.what());
    } catch (const check::ReferenceOverflow& e) {  // `gdn2 check` exit 3: the float64 reference itself overflowed
      PyErr_SetString(PyExc_OverflowError, e.what());
    }
  });

  auto options = [](auto&& fn) {
    return [fn](const py::dict& arrays, const std::string& form, const std::string& precision,
                const std::string& variant, index_t chunk_size, std::optional<double> scale, bool l2norm_qk,
                bool gate_logits, bool negative_eigen, const std::string& decay, std::optional<double> lower_bound,
                int threads) {
      const tools::LayerOptions opt = layer_options(form, precision, variant, chunk_size, scale, l2norm_qk, gate_logits,
                                                    negative_eigen, decay, lower_bound, threads);
      refuse_arrays_without_effect(arrays, opt);
      return fn(arrays, opt);
    };
  };
  const auto args = std::make_tuple(py::arg("arrays"), py::arg("form"), py::arg("precision"), py::arg("variant"),
                                    py::arg("chunk_size"), py::arg("scale"), py::arg("l2norm_qk"), py::arg("gate_logits"),
                                    py::arg("negative_eigen"), py::arg("decay"), py::arg("lower_bound"),
                                    py::arg("threads"));
  auto def = [&](const char* name, auto fn, const char* doc) {
    std::apply([&](auto... a) { m.def(name, options(fn), doc, a...); }, args);
  };
  def("forward",
      [](const py::dict& arrays, const tools::LayerOptions& opt) {
        return opt.precision == "f32" ? forward_in<float>(arrays, opt) : forward_in<double>(arrays, opt);
      },
      "(o, ht) of `gdn2 forward` for arrays named as its input files");
  def("backward",
      [](const py::dict& arrays, const tools::LayerOptions& opt) {
        return opt.precision == "f32" ? backward_in<float>(arrays, opt) : backward_in<double>(arrays, opt);
      },
      "{name: gradient} of `gdn2 backward` for arrays named as its input files (with do, dht)");
  bind_check(m);
#ifdef GDN2_PYTHON_CUDA
  bind_cuda(m);
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
}
