// gdn2::cuda — running the CUDA kernels on reference inputs and comparing with the float64 reference.
// Host-only; shared by the tests (tests/test_cuda.cpp) and gdn2-cuda-bench, which checks before it times.
#pragma once

#include <cuda_runtime.h>

#include <cstring>
#include <vector>

#include "core/backward.hpp"
#include "core/forward.hpp"
#include "core/random_inputs.hpp"
#include "gdn2/cuda.hpp"

namespace gdn2::cuda {

// Round-to-nearest-even float → bfloat16 bits (as __float2bfloat16 does), and back.
inline uint16_t to_bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float from_bf16_bits(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// A device buffer that frees itself.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : bytes(n) {
    if (n && cudaMalloc(&ptr, n) != cudaSuccess) throw Error("cudaMalloc of " + std::to_string(n) + " bytes failed");
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr, o.ptr), std::swap(bytes, o.bytes);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};

// Uploads a tensor as float32 or as bfloat16 (storage dtype).
inline DeviceBuffer upload(const Tensor<double>& t, DType dtype) {
  if (t.empty()) return {};
  const size_t n = size_t(t.numel());
  DeviceBuffer buf(n * (dtype == DType::bf16 ? 2 : 4));
  if (dtype == DType::bf16) {
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = to_bf16_bits(float(t.data[i]));
    cudaMemcpy(buf.ptr, h.data(), n * 2, cudaMemcpyHostToDevice);
  } else {
    std::vector<float> h(t.data.begin(), t.data.end());
    cudaMemcpy(buf.ptr, h.data(), n * 4, cudaMemcpyHostToDevice);
  }
  return buf;
}

inline Tensor<double> download(const DeviceBuffer& buf, const std::vector<index_t>& shape, DType dtype) {
  Tensor<double> t(shape);
  const size_t n = size_t(t.numel());
  if (dtype == DType::bf16) {
    std::vector<uint16_t> h(n);
    cudaMemcpy(h.data(), buf.ptr, n * 2, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < n; ++i) t.data[i] = from_bf16_bits(h[i]);
  } else {
    std::vector<float> h(n);
    cudaMemcpy(h.data(), buf.ptr, n * 4, cudaMemcpyDeviceToHost);
    for (size_t i = 0; i < n; ++i) t.data[i] = h[i];
  }
  return t;
}

// The inputs as the kernel sees them: q, k, v, b, w rounded to the storage dtype (g, h0 stay float32).
inline Layer<double> as_stored(const Layer<double>& x, DType dtype) {
  Layer<double> y = x;
  auto round = [&](Tensor<double>& t, bool bf16) {
    for (auto& e : t.data) e = bf16 ? from_bf16_bits(to_bf16_bits(float(e))) : double(float(e));
  };
  const bool bf16 = dtype == DType::bf16;
  for (Tensor<double>* t : {&y.q, &y.k, &y.v, &y.b, &y.w}) round(*t, bf16);
  round(y.g, false);
  round(y.h0, false);
  return y;
}

// Everything a kernel call needs, on the device.
struct DeviceLayer {
  DeviceBuffer q, k, v, g, b, w, h0, cu, o, ht;
  Problem p;
};

inline DeviceLayer to_device(const Layer<double>& x, DType dtype) {
  DeviceLayer d;
  d.p.B = x.q.shape[0], d.p.T = x.q.shape[1], d.p.H = x.q.shape[2], d.p.K = x.q.shape[3];
  d.p.HV = x.v.shape[2], d.p.V = x.v.shape[3];
  d.p.HG = x.g.shape[2];  // H or HV: g and b per key head or per value head (the library checks which)
  if (x.b.shape[2] != d.p.HG) throw Error("g and b must have the same head layout for the CUDA kernels");
  d.p.N = x.cu_seqlens.empty() ? d.p.B : index_t(x.cu_seqlens.size()) - 1;
  d.p.dtype = dtype;
  d.q = upload(x.q, dtype), d.k = upload(x.k, dtype), d.v = upload(x.v, dtype);
  d.b = upload(x.b, dtype), d.w = upload(x.w, dtype);
  d.g = upload(x.g, DType::f32), d.h0 = upload(x.h0, DType::f32);
  if (!x.cu_seqlens.empty()) {
    d.cu = DeviceBuffer(x.cu_seqlens.size() * 8);
    cudaMemcpy(d.cu.ptr, x.cu_seqlens.data(), x.cu_seqlens.size() * 8, cudaMemcpyHostToDevice);
  }
  d.o = DeviceBuffer(size_t(x.v.numel()) * (dtype == DType::bf16 ? 2 : 4));
  d.ht = DeviceBuffer(size_t(d.p.N * d.p.HV * d.p.K * d.p.V) * 4);
  return d;
}

// in_place: write the final state over the initial one (ht == h0), as a decoding step does.
inline void launch(Form form, DeviceLayer& d, cudaStream_t stream = 0, bool in_place = false,
                   SavedForBackward* saved = nullptr) {
  if (form == Form::chunk)
    return chunk_forward(d.o.ptr, static_cast<float*>(in_place ? d.h0.ptr : d.ht.ptr), d.q.ptr, d.k.ptr, d.v.ptr,
                         static_cast<const float*>(d.g.ptr), d.b.ptr, d.w.ptr, static_cast<const float*>(d.h0.ptr),
                         static_cast<const int64_t*>(d.cu.ptr), d.p, stream, saved);
  recurrent_forward(d.o.ptr, static_cast<float*>(in_place ? d.h0.ptr : d.ht.ptr), d.q.ptr, d.k.ptr, d.v.ptr, static_cast<const float*>(d.g.ptr), d.b.ptr,
    d.w.ptr, static_cast<const float*>(d.h0.ptr), static_cast<const int64_t*>(d.cu.ptr), d.p, stream);
}

struct Outputs {
  Tensor<double> o, ht;
};

// Runs the kernel once and returns its outputs as float64 tensors.
inline Outputs run_on_device(Form form, const Layer<double>& x, DType dtype) {
  DeviceLayer d = to_device(x, dtype);
  launch(form, d);
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) throw Error(std::string("kernel failed: ") + cudaGetErrorString(err));
  return {download(d.o, x.v.shape, dtype), download(d.ht, {d.p.N, d.p.HV, d.p.K, d.p.V}, DType::f32)};
}

// The float64 reference on the stored inputs.
inline Outputs reference_outputs(const Layer<double>& x, DType dtype) {
  Outputs r;
  ForwardOptions opt;
  opt.allow_negative_eigen = true;
  forward(Form::chunk, r.o, r.ht, as_stored(x, dtype), opt);
  return r;
}

// [SECTION] the backward ----------------------------------------------------------------------------------------

// The upstream gradients and the gradient buffers on the device, next to a DeviceLayer.
struct DeviceGradients {
  DeviceBuffer do_, dht, dq, dk, dv, dg, db, dw, dh0;
};

inline DeviceGradients gradients_to_device(const DeviceLayer& d, const Tensor<double>& do_, const Tensor<double>& dht) {
  DeviceGradients r;
  const size_t e = d.p.dtype == DType::bf16 ? 2 : 4;
  const size_t key = size_t(d.p.B * d.p.T * d.p.H * d.p.K), value = size_t(d.p.B * d.p.T * d.p.HV * d.p.V);
  const size_t gate = size_t(d.p.B * d.p.T * (d.p.HG ? d.p.HG : d.p.H) * d.p.K);  // HG = 0 means H
  r.do_ = upload(do_, d.p.dtype), r.dht = upload(dht, DType::f32);
  r.dq = DeviceBuffer(key * e), r.dk = DeviceBuffer(key * e);
  r.db = DeviceBuffer(gate * e), r.dg = DeviceBuffer(gate * 4);
  r.dv = DeviceBuffer(value * e), r.dw = DeviceBuffer(value * e);
  r.dh0 = DeviceBuffer(size_t(d.p.N * d.p.HV * d.p.K * d.p.V) * 4);
  return r;
}

inline void launch_backward(DeviceLayer& d, DeviceGradients& gr, cudaStream_t stream = 0,
                            const SavedForBackward* saved = nullptr) {
  chunk_backward(gr.dq.ptr, gr.dk.ptr, gr.dv.ptr, static_cast<float*>(gr.dg.ptr), gr.db.ptr, gr.dw.ptr,
                 static_cast<float*>(gr.dh0.ptr), d.q.ptr, d.k.ptr, d.v.ptr, static_cast<const float*>(d.g.ptr), d.b.ptr,
                 d.w.ptr, static_cast<const float*>(d.h0.ptr), static_cast<const int64_t*>(d.cu.ptr), gr.do_.ptr,
                 static_cast<const float*>(gr.dht.ptr), d.p, stream, saved);
}

// Runs the backward once and returns its gradients as float64 tensors. keep_forward: the forward runs first and keeps
// its workspace for the backward (SavedForBackward); otherwise the backward recomputes it.
inline Gradients<double> backward_on_device(const Layer<double>& x, const Tensor<double>& do_,
                                            const Tensor<double>& dht, DType dtype, bool keep_forward = false) {
  DeviceLayer d = to_device(x, dtype);
  DeviceGradients gr = gradients_to_device(d, do_, dht);
  SavedForBackward saved;
  if (keep_forward) {
    launch(Form::chunk, d, 0, false, &saved);
    if (saved.empty() && x.q.shape[1] > 0) throw Error("chunk_forward kept no workspace");
  }
  launch_backward(d, gr, 0, &saved);
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) throw Error(std::string("backward kernel failed: ") + cudaGetErrorString(err));
  Gradients<double> r;
  r.dq = download(gr.dq, x.q.shape, dtype), r.dk = download(gr.dk, x.k.shape, dtype);
  r.dv = download(gr.dv, x.v.shape, dtype), r.dg = download(gr.dg, x.g.shape, DType::f32);
  r.db = download(gr.db, x.b.shape, dtype), r.dw = download(gr.dw, x.w.shape, dtype);
  r.dh0 = download(gr.dh0, {d.p.N, d.p.HV, d.p.K, d.p.V}, DType::f32);
  return r;
}

// The float64 reference backward on the stored inputs and the stored upstream gradient.
inline Gradients<double> reference_gradients(const Layer<double>& x, const Tensor<double>& do_,
                                             const Tensor<double>& dht, DType dtype) {
  ForwardOptions opt;
  opt.allow_negative_eigen = true;
  Tensor<double> dO = do_;
  for (auto& e : dO.data) e = dtype == DType::bf16 ? from_bf16_bits(to_bf16_bits(float(e))) : double(float(e));
  Tensor<double> dS = dht;
  for (auto& e : dS.data) e = double(float(e));
  return backward(Form::chunk, as_stored(x, dtype), dO, dS, opt);
}

// docs/numerics.md 19: fp32 compute, gradients ≤ 1e-4; bf16 storage: dq, dk, dv ≤ 1e-2, db, dw, dg ≤ 2e-2 (dh0, fp32 in
// both modes, takes the dq budget).
struct GradientRatios {
  double dq, dk, dv, dg, db, dw, dh0;
};
inline GradientRatios gradient_ratios(const Gradients<double>& a, const Gradients<double>& r) {
  return {ratio(a.dq, r.dq), ratio(a.dk, r.dk), ratio(a.dv, r.dv), ratio(a.dg, r.dg),
          ratio(a.db, r.db), ratio(a.dw, r.dw), ratio(a.dh0, r.dh0)};
}
inline double gradient_budget(DType dtype, bool gate) { return dtype == DType::bf16 ? (gate ? 2e-2 : 1e-2) : 1e-4; }

}  // namespace gdn2::cuda
