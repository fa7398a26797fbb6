// gdn2 reference — .npy tensors (NumPy format 1.0/2.0/3.0), strict on read.
//
// Why not xtensor's xnpy: the CLI reads files from users and fuzzers, so every field is validated
// before anything is allocated (magic, version, header length, dtype, order, shape overflow, exact data
// length) and every refusal is an InputError naming the file. The format spec is short:
// https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.hpp"

namespace gdn2::io {

// dtype codes accepted: "f4" float32, "f8" float64, "i4" int32, "i8" int64 (either byte order: '<f8' and '>f8' are
// both "f8"; C order).
struct NpyArray {
  std::string dtype;
  std::vector<index_t> shape;
  std::vector<unsigned char> bytes;  // raw little-endian data, numel * itemsize (a big-endian file's, swapped)
};

// name (without ".npy") → array: a directory of tensors, or the same arrays handed in from memory (Python).
using NamedArrays = std::map<std::string, NpyArray>;

// Where the time of reading went (gdn2 --verbose): per file, its size and the wall time of open + header + body.
struct ReadTimes {
  struct File {
    std::string name;
    size_t bytes = 0;
    double seconds = 0;
  };
  std::vector<File> files;
};

// Parses a whole .npy file held in memory; `name` is used in error messages.
NpyArray parse_npy(const unsigned char* data, size_t size, const std::string& name);
// Reads one file: refuses anything but a regular file (a FIFO, device or directory) without blocking, validates
// the header against the file's size before the body is allocated or read, then reads the body in large reads.
// An allocation that fails names the tensor. `times`, if given, gets one entry.
NpyArray read_npy(const std::string& path, const std::string& name, ReadTimes* times = nullptr);
// Reads a whole small text file (config.json, trace.json) with read_npy's guard: a FIFO, device or directory is
// refused without blocking, by an InputError naming the path; `what` names the kind of file expected ("JSON file").
std::string read_regular_file(const std::string& path, const char* what);
// Reads dir/NAME.npy for every NAME in `names` that exists there (absent files are absent from the map).
NamedArrays read_npy_dir(const std::string& dir, const std::vector<std::string>& names, ReadTimes* times = nullptr);

// Converts a float32/float64 array to the working precision; integer arrays and 0-d arrays (no tensor of the
// layer is a scalar; an empty shape would read as "absent") are refused.
template <typename Scalar>
Tensor<Scalar> to_tensor(const NpyArray& a, const std::string& name);
// A 1-D int32/int64 array of at least 2 entries (cu_seqlens: [0, ..., T]).
std::vector<index_t> to_index_vector(const NpyArray& a, const std::string& name);

// A valid .npy file (or NumPy array) that gdn2 does not read: a dtype other than float32, float64, int32 and int64
// (in either byte order), or Fortran order. what() is the whole message ("o.npy: dtype must be float32 or float64,
// got float16 ('<f2'); convert it with x.astype(np.float32)"); `reason` is the same after "o.npy: ", `dtype` the
// descr without a '<', '|' or '=' byte order ("f2", "c16", "O", ">c16"), `shape` the array's. Bad input like any
// InputError, except to gdn2 check, for which a candidate's is a FAIL row of that tensor (check::run).
struct UnsupportedNpy : InputError {
  UnsupportedNpy(const std::string& name, std::string reason_, std::string dtype_, std::vector<index_t> shape_)
      : InputError(name + ": " + reason_), reason(std::move(reason_)), dtype(std::move(dtype_)), shape(std::move(shape_)) {}
  std::string reason, dtype;
  std::vector<index_t> shape;
};

// Why a valid .npy file's dtype is not read (`descr` as the header gives it: '>c16', '<c16', '|O', '<f2', ...): the
// dtype in words, what gdn2 reads and how to convert, e.g. "dtype '<c16' (complex128) is not supported: gdn2 reads
// float32, float64, int32 and int64; gdn2's tensors are real: save x.real if its imaginary part is zero"; a float of
// another width gets float_dtype_refusal's words, an index file (`name` cu_seqlens.npy) is told x.astype(np.int64).
// A malformed file is refused as "not a valid .npy file" instead.
std::string dtype_reason(const std::string& name, const std::string& descr);
// The refusal of a finite float64 value that float32 cannot hold (|x| ≥ 3.4e38 rounds to inf) at index `at` of
// `name`, when float32 is the precision the layer runs in (`precision`, as the caller spells it, e.g. "--precision
// f32"; may be empty): named where it is read, not later as an inf the input does not hold.
InputError does_not_fit_float32(const std::string& name, double value, const std::vector<index_t>& at,
                                const std::string& precision);
// UnsupportedNpy(name, dtype_reason(name, descr), ...) for an array of that descr and shape.
UnsupportedNpy unsupported_dtype(const std::string& name, const std::string& descr, std::vector<index_t> shape);
// The refusal of a floating-point dtype gdn2 does not read (float16 above all: a bfloat16 kernel's outputs are often
// saved so), in to_tensor's words plus the conversion: "q.npy: dtype must be float32 or float64, got float16 ('<f2');
// convert it with x.astype(np.float32)". `descr` as NumPy writes it ('<f2'); shared by the .npy reader and the
// Python bindings.
std::string float_dtype_refusal(const std::string& name, const std::string& descr);

// Encodes a tensor as a version 1.0 .npy file (float32 for float, float64 for double, int32 for int32_t).
template <typename Scalar>
std::string encode_npy(const Tensor<Scalar>& x);

// A file could not be written (disk full, permissions, a rename that failed): the message names the file and the
// system's reason, captured when the call failed. The command line's exit status 4.
struct WriteError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Refuses, before any work, an output directory that write_files_atomically could not replace as a whole, or should
// not: a path that exists and is not a directory, a directory that holds subdirectories, the input directory itself
// (input_dir, when given), or a directory holding a file that no earlier gdn2 run wrote there (its .gdn2-outputs
// list does not name it) — gdn2 deletes nothing it did not write. `option` names it in the message ("--out").
// Throws InputError.
void check_output_dir(const std::string& dir, const std::string& option, const std::string& input_dir = {});

// The list write_files_atomically leaves in every directory it writes (a reader of the directory skips it).
inline constexpr const char* kOutputList = ".gdn2-outputs";

// Proves, before the work (gdn2 forward, backward, train), that write_files_atomically(dir, ...) can create its temporary directory:
// creates dir's missing parents and the temporary beside dir, then removes all of them again (SIGINT, SIGTERM, SIGHUP
// and SIGQUIT held back meanwhile). A WriteError names the path and the system's reason (a read-only file system,
// permissions). Also removes, now rather than when the run writes, the temporaries that killed writers into dir left
// beside it (directories named exactly .DIR.gdn2-tmp-PID or .DIR.gdn2-tmp-PID-old whose process PID is gone; nothing
// else), unless a writer into dir's parent is running. Call after check_output_dir.
void check_output_writable(const std::string& dir);

// Writes every (file name, bytes) pair into `dir` so that a reader sees either all of the new files or none of
// them, never a mix of two runs:
//   1. an exclusive lock (flock) on dir's parent directory: a concurrent writer into the same place waits;
//   2. a sibling temporary directory receives the new files;
//   3. one rename makes it `dir` (renameat2 RENAME_EXCHANGE when `dir` exists; the old one is then removed).
// Afterwards `dir` holds exactly `files` and their list, .gdn2-outputs: nothing of the old directory is kept (outputs
// of an earlier run or of another command; a directory holding anything else is refused, check_output_dir).
// SIGINT, SIGTERM, SIGHUP and SIGQUIT are held back while this runs and delivered after it, so an interrupted run
// leaves either the old directory or the new one, and no temporary files; the temporaries of a killed writer
// (SIGKILL) are removed by the next run into `dir` (check_output_writable, at its start, and here), and nothing else
// of a similar name. On failure `dir` is left as it was (not created when it did not exist)
// and a WriteError names the file and the reason. `dir`'s missing parents are created, and removed again (those this
// call created, when still empty) if the write fails.
void write_files_atomically(const std::string& dir, const std::vector<std::pair<std::string, std::string>>& files);

}  // namespace gdn2::io
