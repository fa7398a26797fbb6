// gdn2 reference — a dense row-major tensor and the 64-bit index helpers.
//
// Dimension letters (used in every file): B batch, T tokens, H key heads, HV value heads,
// K key dim, V value dim, C chunk size, N number of sequences (B, or len(cu_seqlens) - 1).
//
// Every offset is computed in int64_t: ((B-1)*T*H + H-1)*K exceeds 2^31 for realistic shapes
// (docs/numerics.md 21), so no index helper ever multiplies in int.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace gdn2 {

using index_t = std::int64_t;

// Thrown for input the reference refuses (docs/numerics.md 20). The message names the tensor and the problem.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Product of the dimensions, refusing to overflow int64 (a hostile .npy header can ask for 2^70 elements).
inline index_t checked_numel(const std::vector<index_t>& shape, const std::string& name) {
  for (index_t d : shape)
    if (d < 0) throw InputError(name + ": negative dimension " + std::to_string(d));
  for (index_t d : shape)  // a zero-length axis: no elements, however large the others (their product may overflow)
    if (d == 0) return 0;
  index_t n = 1;
  for (index_t d : shape) {
    if (n > INT64_MAX / d) throw InputError(name + ": shape has more than 2^63 elements");
    n *= d;
  }
  return n;
}

// Refuses an allocation that cannot succeed (more bytes than the machine has memory) with a message
// instead of a crash or an out-of-memory kill (docs/numerics.md 21).
inline void check_allocation(index_t numel, index_t bytes_per_element, const std::string& name) {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  const double have = pages > 0 && page > 0 ? double(pages) * double(page) : 1e300;
  const double need = double(numel) * double(bytes_per_element);
  if (need > have)
    throw InputError(name + ": needs " + std::to_string(need / (1 << 30)) + " GiB, more than this machine's " +
                     std::to_string(have / (1 << 30)) + " GiB of memory");
}

inline std::string shape_str(const std::vector<index_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

// The multi-index of element `flat` of a C-order array of `shape` (a zero-length axis gives index 0).
inline std::vector<index_t> unravel_index(const std::vector<index_t>& shape, index_t flat) {
  std::vector<index_t> idx(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    idx[i] = shape[i] ? flat % shape[i] : 0;
    flat = shape[i] ? flat / shape[i] : 0;
  }
  return idx;
}

// A dense C-order (row-major) tensor. Deliberately plain: a shape and a flat vector, so that
// a reader sees exactly where every element lives and `numpy.load` gives the same layout.
template <typename Scalar>
struct Tensor {
  std::vector<index_t> shape;
  std::vector<Scalar> data;

  Tensor() = default;
  explicit Tensor(std::vector<index_t> s, const std::string& name = "tensor") : shape(std::move(s)) {
    const index_t n = checked_numel(shape, name);
    check_allocation(n, sizeof(Scalar), name);
    data.resize(n);
  }

  bool empty() const { return shape.empty(); }  // "absent" (e.g. no initial state), not "zero elements"
  index_t numel() const { return static_cast<index_t>(data.size()); }
  index_t dim(size_t i) const { return shape.at(i); }
  Scalar* ptr() { return data.data(); }
  const Scalar* ptr() const { return data.data(); }
};

template <typename To, typename From>
Tensor<To> cast(const Tensor<From>& x) {
  Tensor<To> y;
  y.shape = x.shape;
  y.data.assign(x.data.begin(), x.data.end());
  return y;
}

// Offset of element [row, h, 0] of a [B*T, H, D] view (row = n*T + t, or a packed varlen row).
inline index_t offset_row(index_t row, index_t h, index_t H, index_t D) { return (row * H + h) * D; }

// Offset of element [n, t, h, 0] in a [B, T, H, D] tensor (q, k, g, b use D = K; v, w use D = V).
inline index_t offset_bthd(index_t n, index_t t, index_t h, index_t T, index_t H, index_t D) {
  return offset_row(n * T + t, h, H, D);
}

// Offset of state [n, hv, 0, 0] in an [N, HV, K, V] tensor (h0, ht).
inline index_t offset_state(index_t n, index_t hv, index_t HV, index_t K, index_t V) {
  return (n * HV + hv) * K * V;
}

}  // namespace gdn2
