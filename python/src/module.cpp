// gdn2._gdn2 — the reference (and, when built, the CUDA host API) for Python. Thin: converts NumPy arrays to the
// reference's tensors (one copy, converting float32 <-> float64 on the way when the working precision differs),
// calls the same library functions as the `gdn2` command line (tools/inputs.hpp: loading, front-end, gate tying,
// validation), and hands the results back as NumPy arrays without copying them. Bad input raises ValueError with the
// command line's one-line message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <map>

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

void require_c_contiguous(const py::array& a, const std::string& name) {
  if (!(a.flags() & py::array::c_style))
    throw InputError(name + ": the array is not C-contiguous (numpy.ascontiguousarray makes a copy that is)");
}

// The one copy: a float32 or float64 array into a Tensor<Scalar>.
template <typename Scalar>
Tensor<Scalar> to_tensor(const py::array& a, const std::string& name) {
  const std::string code = dtype_code(a);
  if (code != "f4" && code != "f8") throw InputError(name + ": dtype must be float32 or float64, got " + code);
  require_c_contiguous(a, name);
  Tensor<Scalar> x(shape_of(a), name);
  if (code == "f4") {
    const float* p = static_cast<const float*>(a.data());
    if constexpr (std::is_same_v<Scalar, float>) std::memcpy(x.ptr(), p, sizeof(float) * x.numel());
    else for (index_t i = 0; i < x.numel(); ++i) x.data[i] = static_cast<Scalar>(p[i]);
  } else {
    const double* p = static_cast<const double*>(a.data());
    if constexpr (std::is_same_v<Scalar, double>) std::memcpy(x.ptr(), p, sizeof(double) * x.numel());
    else for (index_t i = 0; i < x.numel(); ++i) x.data[i] = static_cast<Scalar>(p[i]);
  }
  return x;
}

std::vector<index_t> to_indices(const py::array& a, const std::string& name) {
  const std::string code = dtype_code(a);
  if (code != "i4" && code != "i8") throw InputError(name + ": dtype must be int32 or int64, got " + code);
  if (a.ndim() != 1) throw InputError(name + ": expected a 1-D array, got shape " + shape_str(shape_of(a)));
  require_c_contiguous(a, name);
  std::vector<index_t> out(a.shape(0));
  for (index_t i = 0; i < a.shape(0); ++i)
    out[i] = code == "i4" ? static_cast<const int32_t*>(a.data())[i] : static_cast<const int64_t*>(a.data())[i];
  return out;
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

tools::LayerOptions layer_options(const std::string& form, const std::string& precision, const std::string& variant,
                                  index_t chunk_size, std::optional<double> scale, bool l2norm_qk, bool gate_logits,
                                  bool negative_eigen, const std::string& decay, double lower_bound, int threads) {
  tools::LayerOptions opt;
  opt.form = form, opt.precision = precision, opt.variant = variant, opt.chunk_size = chunk_size, opt.scale = scale;
  opt.l2norm_qk = l2norm_qk, opt.gate_logits = gate_logits, opt.negative_eigen = negative_eigen;
  opt.decay = decay, opt.lower_bound = lower_bound, opt.threads = threads;
  // The checks the command line's option parser makes (the chunk size is checked with the inputs).
  tools::parse_form(form);
  if (precision != "f64" && precision != "f32")
    throw InputError("unknown precision '" + precision + "' (expected f64 or f32)");
  parse_variant(variant);
  if (decay != "none" && decay != "softplus" && decay != "bounded")
    throw InputError("unknown --decay '" + decay + "' (expected none, softplus or bounded)");
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
  }
  py::dict out;
  for (auto& [name, t] : grads) out[py::str(name)] = to_numpy(std::move(t));
  return out;
}

}  // namespace

}  // namespace gdn2::python

PYBIND11_MODULE(_gdn2, m) {
  using namespace gdn2;
  using namespace gdn2::python;
  m.doc() = "gdn2's C++ core: the float64 reference of Gated DeltaNet-2 (and its CUDA kernels when built). Use the "
            "gdn2 package's functions, not these.";
  // Module-local, so it is tried before the global translators other extensions (PyTorch's) register.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const InputError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  auto options = [](auto&& fn) {
    return [fn](const py::dict& arrays, const std::string& form, const std::string& precision,
                const std::string& variant, index_t chunk_size, std::optional<double> scale, bool l2norm_qk,
                bool gate_logits, bool negative_eigen, const std::string& decay, double lower_bound, int threads) {
      const tools::LayerOptions opt = layer_options(form, precision, variant, chunk_size, scale, l2norm_qk, gate_logits,
                                                    negative_eigen, decay, lower_bound, threads);
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
#ifdef GDN2_PYTHON_CUDA
  bind_cuda(m);
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
}
