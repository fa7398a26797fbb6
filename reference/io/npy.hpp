// gdn2 reference — .npy tensors (NumPy format 1.0/2.0/3.0), strict on read.
//
// Why not xtensor's xnpy: the CLI reads files from users and fuzzers, so every field is validated
// before anything is allocated (magic, version, header length, dtype, order, shape overflow, exact data
// length) and every refusal is an InputError naming the file. The format spec is short:
// https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.hpp"

namespace gdn2::io {

// dtype codes accepted: "f4" float32, "f8" float64, "i4" int32, "i8" int64 (little-endian, C order).
struct NpyArray {
  std::string dtype;
  std::vector<index_t> shape;
  std::vector<unsigned char> bytes;  // raw little-endian data, numel * itemsize
};

// Parses a whole .npy file held in memory; `name` is used in error messages.
NpyArray parse_npy(const unsigned char* data, size_t size, const std::string& name);
NpyArray read_npy(const std::string& path, const std::string& name);

// Converts a float32/float64 array to the working precision; integer arrays are refused.
template <typename Scalar>
Tensor<Scalar> to_tensor(const NpyArray& a, const std::string& name);
// A 1-D int32/int64 array (cu_seqlens).
std::vector<index_t> to_index_vector(const NpyArray& a, const std::string& name);

// Encodes a tensor as a version 1.0 .npy file (float32 for float, float64 for double, int32 for int32_t).
template <typename Scalar>
std::string encode_npy(const Tensor<Scalar>& x);

// Writes every (file name, bytes) pair into `dir` (created if missing) so that either all files appear
// or none do: each is written to a temporary name first and renamed only after all writes succeeded.
void write_files_atomically(const std::string& dir, const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace gdn2::io
