// gdn2 tests — shared helpers: running the reference, gate sets of docs/numerics.md, logging measured errors.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "core/forward.hpp"
#include "core/random_inputs.hpp"

namespace gdn2::test {

template <typename Scalar>
struct Out {
  Tensor<Scalar> o, ht;
};

template <typename Scalar>
Out<Scalar> run(Form form, const Layer<Scalar>& x, index_t C = 64, const std::vector<index_t>& cu = {},
                int threads = 1) {
  ForwardOptions opt;
  opt.chunk_size = C;
  opt.num_threads = threads;
  Out<Scalar> r;
  forward(form, r.o, r.ht, x.q, x.k, x.v, x.g, x.b, x.w, x.h0, cu, opt);
  return r;
}

template <typename To, typename From>
Layer<To> cast_layer(const Layer<From>& x) {
  return {cast<To>(x.q), cast<To>(x.k), cast<To>(x.v), cast<To>(x.g), cast<To>(x.b), cast<To>(x.w), cast<To>(x.h0)};
}

template <typename Scalar>
bool all_finite(const Tensor<Scalar>& x) {
  for (auto v : x.data)
    if (!std::isfinite(v)) return false;
  return true;
}

// Prints the measured value next to its bound (always, so the log shows how much margin there is), and
// records it for Catch's failure report.
inline void log_measure(const std::string& what, double value, double bound) {
  std::printf("  [measured] %-58s %.3e  (bound %.0e)\n", what.c_str(), value, bound);
  UNSCOPED_INFO(what << " = " << value << " (bound " << bound << ")");
}

// Checks ratio(x, ref) <= bound after logging it.
template <typename A, typename B>
void require_ratio(const std::string& what, const Tensor<A>& x, const Tensor<B>& ref, double bound) {
  const double r = ratio(x, ref);
  log_measure(what, r, bound);
  REQUIRE(r <= bound);
}

template <typename Scalar>
bool bitwise_equal(const Tensor<Scalar>& a, const Tensor<Scalar>& b) {
  return a.shape == b.shape && std::memcmp(a.ptr(), b.ptr(), a.data.size() * sizeof(Scalar)) == 0;
}

// docs/numerics.md defaults: B=2, H=2, K=64, V=128, unit q/k, v ~ N(0,1), b, w ~ U(0,1).
struct Shape {
  index_t B = 2, T = 200, H = 2, HV = 2, K = 64, V = 128;
};

inline double log_sigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }

// The big-endian copy of a little-endian version 1.0 .npy file of `itemsize`-byte items (io::encode_npy's, or NumPy's
// '<f4', '<f8', '<i4', '<i8'): descr '<..' -> '>..' and each item's bytes reversed, as NumPy's
// np.save(x.astype(x.dtype.newbyteorder('>'))) writes it.
inline std::string big_endian_npy(std::string npy, size_t itemsize) {
  const size_t at = npy.find("'descr': '<");
  REQUIRE(at != std::string::npos);
  npy[at + 10] = '>';
  const size_t start = 10 + (static_cast<unsigned char>(npy[8]) | (static_cast<size_t>(static_cast<unsigned char>(npy[9])) << 8));
  REQUIRE((npy.size() - start) % itemsize == 0);
  for (size_t i = start; i < npy.size(); i += itemsize) std::reverse(npy.begin() + i, npy.begin() + i + itemsize);
  return npy;
}

}  // namespace gdn2::test
