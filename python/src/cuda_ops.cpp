// gdn2._gdn2's CUDA part: the host API of cuda/include/gdn2/cuda.hpp with device pointers and the stream passed as
// integers (PyTorch's tensor.data_ptr() and torch.cuda.current_stream().cuda_stream), so the extension needs no
// PyTorch headers. Shapes and dtypes are the caller's responsibility (gdn2/torch.py checks them); the library checks
// what the kernels support and throws gdn2::cuda::Error (RuntimeError in Python) naming the problem.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "gdn2/cuda.hpp"

namespace py = pybind11;

namespace gdn2::python {

namespace {

using gdn2::cuda::Problem;
using gdn2::cuda::SavedForBackward;

template <typename T = void>
T* ptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

// HG: the heads of the gates g and b, H (per key head) or HV (per value head); 0 means H.
Problem problem(int64_t B, int64_t T, int64_t H, int64_t HV, int64_t K, int64_t V, int64_t N, int64_t HG, double scale,
                const std::string& dtype) {
  Problem p;
  p.B = B, p.T = T, p.H = H, p.HV = HV, p.K = K, p.V = V, p.N = N, p.HG = HG, p.scale = static_cast<float>(scale);
  if (dtype == "bf16") p.dtype = gdn2::cuda::DType::bf16;
  else if (dtype == "f32") p.dtype = gdn2::cuda::DType::f32;
  else throw gdn2::cuda::Error("dtype '" + dtype + "' is not supported by the CUDA kernels (bf16 or f32)");
  return p;
}

void set_device(int device) {
  if (cudaSetDevice(device) != cudaSuccess) {
    cudaGetLastError();
    throw gdn2::cuda::Error("cannot use CUDA device " + std::to_string(device));
  }
}

}  // namespace

void bind_cuda(py::module_& m) {
  py::class_<SavedForBackward>(m, "SavedForBackward",
                               "chunk_forward's float32 workspace kept for chunk_backward (the training fast path)")
      .def(py::init<>())
      .def_property_readonly("bytes", &SavedForBackward::bytes)
      .def("empty", &SavedForBackward::empty)
      .def("reset", &SavedForBackward::reset, py::call_guard<py::gil_scoped_release>());

  m.def("cuda_device_available", [] {
    std::string why;
    const bool ok = gdn2::cuda::device_available(&why);
    return py::make_tuple(ok, why);
  });
  m.def("cuda_trim_workspace_memory", &gdn2::cuda::trim_workspace_memory);

  m.def(
      "cuda_chunk_forward",
      [](std::uintptr_t o, std::uintptr_t ht, std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t g,
         std::uintptr_t b, std::uintptr_t w, std::uintptr_t h0, std::uintptr_t cu_seqlens, int64_t B, int64_t T,
         int64_t H, int64_t HV, int64_t K, int64_t V, int64_t N, int64_t HG, double scale, const std::string& dtype,
         std::uintptr_t stream, int device, SavedForBackward* saved) {
        const Problem p = problem(B, T, H, HV, K, V, N, HG, scale, dtype);
        py::gil_scoped_release release;
        set_device(device);
        gdn2::cuda::chunk_forward(ptr(o), ptr<float>(ht), ptr(q), ptr(k), ptr(v), ptr<float>(g), ptr(b), ptr(w),
                                  ptr<float>(h0), ptr<int64_t>(cu_seqlens), p, ptr<CUstream_st>(stream), saved);
      },
      py::arg("o"), py::arg("ht"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("g"), py::arg("b"), py::arg("w"),
      py::arg("h0"), py::arg("cu_seqlens"), py::arg("B"), py::arg("T"), py::arg("H"), py::arg("HV"), py::arg("K"),
      py::arg("V"), py::arg("N"), py::arg("HG"), py::arg("scale"), py::arg("dtype"), py::arg("stream"),
      py::arg("device"), py::arg("saved") = nullptr);
  m.def(
      "cuda_recurrent_forward",
      [](std::uintptr_t o, std::uintptr_t ht, std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t g,
         std::uintptr_t b, std::uintptr_t w, std::uintptr_t h0, std::uintptr_t cu_seqlens, int64_t B, int64_t T,
         int64_t H, int64_t HV, int64_t K, int64_t V, int64_t N, int64_t HG, double scale, const std::string& dtype,
         std::uintptr_t stream, int device) {
        const Problem p = problem(B, T, H, HV, K, V, N, HG, scale, dtype);
        py::gil_scoped_release release;
        set_device(device);
        gdn2::cuda::recurrent_forward(ptr(o), ptr<float>(ht), ptr(q), ptr(k), ptr(v), ptr<float>(g), ptr(b), ptr(w),
                                      ptr<float>(h0), ptr<int64_t>(cu_seqlens), p, ptr<CUstream_st>(stream));
      },
      py::arg("o"), py::arg("ht"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("g"), py::arg("b"), py::arg("w"),
      py::arg("h0"), py::arg("cu_seqlens"), py::arg("B"), py::arg("T"), py::arg("H"), py::arg("HV"), py::arg("K"),
      py::arg("V"), py::arg("N"), py::arg("HG"), py::arg("scale"), py::arg("dtype"), py::arg("stream"),
      py::arg("device"));
  m.def(
      "cuda_chunk_backward",
      [](std::uintptr_t dq, std::uintptr_t dk, std::uintptr_t dv, std::uintptr_t dg, std::uintptr_t db,
         std::uintptr_t dw, std::uintptr_t dh0, std::uintptr_t q, std::uintptr_t k, std::uintptr_t v, std::uintptr_t g,
         std::uintptr_t b, std::uintptr_t w, std::uintptr_t h0, std::uintptr_t cu_seqlens, std::uintptr_t do_,
         std::uintptr_t dht, int64_t B, int64_t T, int64_t H, int64_t HV, int64_t K, int64_t V, int64_t N,
         int64_t HG, double scale, const std::string& dtype, std::uintptr_t stream, int device,
         const SavedForBackward* saved) {
        const Problem p = problem(B, T, H, HV, K, V, N, HG, scale, dtype);
        py::gil_scoped_release release;
        set_device(device);
        gdn2::cuda::chunk_backward(ptr(dq), ptr(dk), ptr(dv), ptr<float>(dg), ptr(db), ptr(dw), ptr<float>(dh0),
                                   ptr(q), ptr(k), ptr(v), ptr<float>(g), ptr(b), ptr(w), ptr<float>(h0),
                                   ptr<int64_t>(cu_seqlens), ptr(do_), ptr<float>(dht), p, ptr<CUstream_st>(stream),
                                   saved);
      },
      py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("dg"), py::arg("db"), py::arg("dw"), py::arg("dh0"),
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("g"), py::arg("b"), py::arg("w"), py::arg("h0"),
      py::arg("cu_seqlens"), py::arg("do"), py::arg("dht"), py::arg("B"), py::arg("T"), py::arg("H"), py::arg("HV"),
      py::arg("K"), py::arg("V"), py::arg("N"), py::arg("HG"), py::arg("scale"), py::arg("dtype"),
      py::arg("stream"), py::arg("device"), py::arg("saved") = nullptr);
}

}  // namespace gdn2::python
