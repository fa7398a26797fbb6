// gdn2 reference — .npy reader and writer (see npy.hpp for the contract).
#include "io/npy.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)  // linux/fs.h
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

namespace gdn2::io {

namespace {

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw InputError(name + ": not a valid .npy file: " + what);
}

// A strict parser for the header dict, e.g. {'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }
struct HeaderParser {
  const std::string& s;
  const std::string& name;
  size_t i = 0;

  void skip_space() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  }
  bool take(char c) {
    skip_space();
    if (i < s.size() && s[i] == c) return ++i, true;
    return false;
  }
  void expect(char c) {
    if (!take(c)) fail(name, std::string("header: expected '") + c + "' at offset " + std::to_string(i));
  }
  std::string quoted() {
    skip_space();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) fail(name, "header: expected a quoted string");
    const char quote = s[i++];
    const size_t end = s.find(quote, i);
    if (end == std::string::npos) fail(name, "header: unterminated string");
    std::string out = s.substr(i, end - i);
    i = end + 1;
    return out;
  }
  bool boolean() {
    skip_space();
    if (s.compare(i, 4, "True") == 0) return i += 4, true;
    if (s.compare(i, 5, "False") == 0) return i += 5, false;
    fail(name, "header: fortran_order must be True or False");
  }
  std::vector<index_t> tuple() {
    expect('(');
    std::vector<index_t> shape;
    while (!take(')')) {
      skip_space();
      const size_t start = i;
      index_t v = 0;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        if (v > (INT64_MAX - 9) / 10) fail(name, "header: dimension too large");
        v = v * 10 + (s[i++] - '0');
      }
      if (i == start) fail(name, "header: shape must be a tuple of non-negative integers");
      if (shape.size() >= 32) fail(name, "header: more than 32 dimensions");
      shape.push_back(v);
      if (!take(',')) {
        expect(')');
        break;
      }
    }
    return shape;
  }
};

size_t itemsize(const std::string& dtype) { return dtype[1] == '4' ? 4 : 8; }

// A .npy header's descr as NumPy names its dtype. words: "float64", "big-endian int32", "complex128", "Python
// objects", ...; empty when descr is not a NumPy dtype string (a byte order '<', '>', '|', '=' or '!', a type code,
// the item size; a unit in brackets for datetimes).
struct DtypeName {
  std::string words;
  char kind = 0;
  int bytes = 0;
  bool big_endian = false;
};

DtypeName dtype_name(const std::string& descr) {
  DtypeName d;
  if (descr.size() < 2 || std::string("<>|=!").find(descr[0]) == std::string::npos) return d;
  d.big_endian = descr[0] == '>' || descr[0] == '!';
  d.kind = descr[1];
  size_t end = 2;
  while (end < descr.size() && end < 6 && descr[end] >= '0' && descr[end] <= '9') ++end;
  d.bytes = end > 2 ? std::atoi(descr.substr(2, end - 2).c_str()) : 0;
  const std::string unit = descr.substr(end);
  const bool time = d.kind == 'M' || d.kind == 'm';
  if (!unit.empty() && !(time && unit.size() > 2 && unit.front() == '[' && unit.back() == ']')) return d;
  const std::string bits = std::to_string(8 * d.bytes);
  std::string w;
  switch (d.kind) {
    case 'f': w = d.bytes ? "float" + bits : ""; break;
    case 'i': w = d.bytes ? "int" + bits : ""; break;
    case 'u': w = d.bytes ? "uint" + bits : ""; break;
    case 'c': w = d.bytes ? "complex" + bits : ""; break;
    case 'b': w = d.bytes == 1 ? "bool" : ""; break;
    case 'O': w = d.bytes == 0 || d.bytes == 8 ? "Python objects" : ""; break;
    case 'S': case 'a': w = "bytes"; break;
    case 'U': w = "str"; break;
    case 'V': w = "void"; break;
    case 'M': w = d.bytes == 8 ? "datetime64" : ""; break;
    case 'm': w = d.bytes == 8 ? "timedelta64" : ""; break;
    default: break;
  }
  if (!w.empty()) d.words = (d.big_endian && d.bytes > 1 ? "big-endian " : "") + w;
  return d;
}

}  // namespace

namespace {

// The header of a .npy file: its dtype and shape, where the data starts and how many bytes it has.
struct Header {
  std::string dtype;
  std::vector<index_t> shape;
  size_t data_start = 0, data_bytes = 0;
  bool big_endian = false;  // the body's items are big-endian ('>f8'): swapped to little-endian once read
};

// Length of the fixed prefix (magic, version, header length) of a file whose first bytes are `data`, or 0 if the
// magic or the version is wrong (refused by parse_header).
size_t prefix_length(const unsigned char* data, size_t size) {
  static const unsigned char magic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 8 || std::memcmp(data, magic, 6) != 0 || data[6] < 1 || data[6] > 3) return 0;
  return data[6] == 1 ? 10 : 12;
}

// NumPy writes headers of a few hundred bytes; a longer one is refused before it is read.
constexpr size_t kMaxHeader = size_t(1) << 20;

// Validates magic, version, header dict and the data length against `file_size`. `data` holds at least the prefix
// and the header (`size` bytes of the file's start).
Header parse_header(const unsigned char* data, size_t size, size_t file_size, const std::string& name) {
  static const unsigned char magic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 10 || std::memcmp(data, magic, 6) != 0) fail(name, "missing the \\x93NUMPY magic");
  const int major = data[6];
  if (major < 1 || major > 3) fail(name, "unsupported format version " + std::to_string(major));
  size_t header_len, header_start;
  if (major == 1) {
    header_len = data[8] | (size_t(data[9]) << 8);
    header_start = 10;
  } else {
    if (size < 12) fail(name, "truncated header");
    header_len = data[8] | (size_t(data[9]) << 8) | (size_t(data[10]) << 16) | (size_t(data[11]) << 24);
    header_start = 12;
  }
  if (header_len > kMaxHeader) fail(name, "header length " + std::to_string(header_len) + " bytes (more than 1 MiB)");
  if (header_len > size - header_start) fail(name, "truncated header");
  std::string header(reinterpret_cast<const char*>(data + header_start), header_len);
  while (!header.empty() && (header.back() == '\n' || header.back() == ' ' || header.back() == '\0')) header.pop_back();

  HeaderParser p{header, name};
  std::string descr;
  bool fortran = false, have_descr = false, have_order = false, have_shape = false;
  Header h;
  p.expect('{');
  while (!p.take('}')) {
    const std::string key = p.quoted();
    p.expect(':');
    if (key == "descr") descr = p.quoted(), have_descr = true;
    else if (key == "fortran_order") fortran = p.boolean(), have_order = true;
    else if (key == "shape") h.shape = p.tuple(), have_shape = true;
    else fail(name, "header: unexpected key '" + key + "'");
    if (!p.take(',')) {
      p.expect('}');
      break;
    }
  }
  p.skip_space();
  if (p.i != header.size()) fail(name, "header: trailing characters after the dict");
  if (!have_descr || !have_order || !have_shape) fail(name, "header: needs 'descr', 'fortran_order' and 'shape'");
  // A dtype NumPy does not know makes the file malformed; one it knows that gdn2 does not read (complex, objects,
  // float16, ...) makes a valid file that is refused as such, with what gdn2 reads and how to convert. Either byte
  // order is read ('>f8' by value, as the Python module reads a '>f8' array), so that both front ends take one file.
  const DtypeName dtype = dtype_name(descr);
  if (dtype.words.empty())
    fail(name, "dtype '" + descr + "' is not a NumPy dtype (expected a byte order and a type code, e.g. '<f8')");
  h.dtype = descr.substr(1);
  if (h.dtype != "f4" && h.dtype != "f8" && h.dtype != "i4" && h.dtype != "i8") throw unsupported_dtype(name, descr, h.shape);
  h.big_endian = dtype.big_endian;
  if (fortran)
    throw UnsupportedNpy(name, "fortran_order=True (Fortran memory order) is not supported: gdn2 reads C order; save "
                               "np.ascontiguousarray(x)", h.dtype, h.shape);

  const index_t numel = checked_numel(h.shape, name);
  h.data_start = header_start + header_len;
  const size_t available = file_size - h.data_start;
  if (static_cast<uint64_t>(numel) > available / itemsize(h.dtype) ||
      static_cast<size_t>(numel) * itemsize(h.dtype) != available) {
    std::ostringstream msg;
    msg << "shape " << shape_str(h.shape) << " of dtype " << descr << " needs " << numel << " elements, but the file holds "
        << available << " data bytes" << (static_cast<uint64_t>(numel) * itemsize(h.dtype) > available ? " (truncated)" : "");
    fail(name, msg.str());
  }
  h.data_bytes = available;
  return h;
}

// Allocates the data bytes of `name`, naming it when the memory is not there.
void allocate(std::vector<unsigned char>& bytes, size_t n, const std::string& name) {
  check_allocation(static_cast<index_t>(n), 1, name);
  try {
    bytes.resize(n);
  } catch (const std::bad_alloc&) {
    throw InputError(name + ": out of memory allocating " + std::to_string(n) + " bytes for its data");
  }
}

// Reads exactly n bytes (fewer only at end of file); returns the count. Large reads: the kernel gets the whole
// request at once, so a file loads at disk (or page-cache) speed.
size_t read_full(int fd, unsigned char* out, size_t n, const std::string& name) {
  size_t done = 0;
  while (done < n) {
    const size_t want = std::min<size_t>(n - done, size_t(1) << 30);
    const ssize_t got = ::read(fd, out + done, want);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw InputError(name + ": read failed: " + std::strerror(errno));
    }
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  return done;
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// A big-endian body in NpyArray's order (little-endian, this machine's: the readers memcpy items into floats and
// integers): each item's bytes reversed, in place.
void to_little_endian(const Header& h, std::vector<unsigned char>& bytes) {
  if (!h.big_endian) return;
  const size_t size = itemsize(h.dtype);
  for (size_t i = 0; i + size <= bytes.size(); i += size) std::reverse(bytes.begin() + i, bytes.begin() + i + size);
}

}  // namespace

NpyArray parse_npy(const unsigned char* data, size_t size, const std::string& name) {
  const Header h = parse_header(data, size, size, name);
  NpyArray a{h.dtype, h.shape, {}};
  allocate(a.bytes, h.data_bytes, name);
  if (h.data_bytes) std::memcpy(a.bytes.data(), data + h.data_start, h.data_bytes);
  to_little_endian(h, a.bytes);
  return a;
}

namespace {

// Opens `path` for reading, refusing anything but a regular file (a FIFO, device, socket or directory) by `name`
// without blocking: O_NONBLOCK, so that opening a FIFO does not wait for a writer; cleared again for the reads.
// `what` says what was expected (".npy file"). The caller owns the descriptor.
int open_regular(const std::string& path, const std::string& name, const char* what, struct stat& st) {
  Fd f{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC)};
  // "name: path ..." unless the name is the path itself (config.json, trace.json are named by their path).
  const std::string who = name == path ? path : name + ": " + path;
  if (f.fd < 0) throw InputError(name + ": cannot open " + (name == path ? std::string() : path + ": ") + std::strerror(errno));
  if (::fstat(f.fd, &st) != 0) throw InputError(who + ": cannot stat: " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw InputError(who + " is a directory, not a " + what);
  if (!S_ISREG(st.st_mode))
    throw InputError(who + " is not a regular file (" +
                     (S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "a socket or special file") +
                     "); a " + what + " must be a regular file");
  const int flags = ::fcntl(f.fd, F_GETFL);
  if (flags >= 0) ::fcntl(f.fd, F_SETFL, flags & ~O_NONBLOCK);
  const int fd = f.fd;
  f.fd = -1;
  return fd;
}

}  // namespace

std::string read_regular_file(const std::string& path, const char* what) {
  struct stat st {};
  Fd f{open_regular(path, path, what, st)};
  std::string text;
  char buf[1 << 16];
  for (;;) {
    const ssize_t got = ::read(f.fd, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) throw InputError(path + ": cannot read: " + std::strerror(errno));
    if (got == 0) break;
    text.append(buf, static_cast<size_t>(got));
  }
  return text;
}

NpyArray read_npy(const std::string& path, const std::string& name, ReadTimes* times) {
  const auto start = std::chrono::steady_clock::now();
  struct stat st {};
  Fd f{open_regular(path, name, ".npy file", st)};
  const size_t file_size = static_cast<size_t>(st.st_size);
#ifdef POSIX_FADV_SEQUENTIAL
  ::posix_fadvise(f.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
  // The header first (at most 64 KiB in version 1, and whatever version 2/3 declare, bounded by the file size).
  std::vector<unsigned char> head(std::min<size_t>(file_size, 12));
  if (read_full(f.fd, head.data(), head.size(), name) != head.size()) fail(name, "truncated header");
  const size_t prefix = prefix_length(head.data(), head.size());
  if (prefix && prefix <= head.size()) {
    const size_t header_len = prefix == 10 ? (head[8] | (size_t(head[9]) << 8))
                                           : (head[8] | (size_t(head[9]) << 8) | (size_t(head[10]) << 16) | (size_t(head[11]) << 24));
    const size_t want = std::min(file_size, prefix + std::min(header_len, kMaxHeader + 1));
    const size_t have = head.size();
    head.resize(std::max(want, have));
    if (want > have && read_full(f.fd, head.data() + have, want - have, name) != want - have) fail(name, "truncated header");
  }
  const Header h = parse_header(head.data(), head.size(), file_size, name);
  NpyArray a{h.dtype, h.shape, {}};
  allocate(a.bytes, h.data_bytes, name);
  // Bytes of the data that were already read with the header (only when the header read overshot).
  const size_t already = head.size() > h.data_start ? head.size() - h.data_start : 0;
  if (already) std::memcpy(a.bytes.data(), head.data() + h.data_start, already);
  if (read_full(f.fd, a.bytes.data() + already, h.data_bytes - already, name) != h.data_bytes - already)
    fail(name, "the file became shorter while it was read");
  to_little_endian(h, a.bytes);
  if (times)
    times->files.push_back({name, file_size, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
  return a;
}

NamedArrays read_npy_dir(const std::string& dir, const std::vector<std::string>& names, ReadTimes* times) {
  namespace fs = std::filesystem;
  NamedArrays out;
  for (const auto& n : names) {
    const fs::path p = fs::path(dir) / (n + ".npy");
    std::error_code ec;
    const auto st = fs::symlink_status(p, ec);
    if (ec || !fs::exists(st)) continue;
    out.emplace(n, read_npy(p.string(), n + ".npy", times));
  }
  return out;
}

template <typename Scalar>
Tensor<Scalar> to_tensor(const NpyArray& a, const std::string& name) {
  if (a.dtype != "f4" && a.dtype != "f8") throw InputError(name + ": dtype must be float32 or float64, got " + a.dtype);
  if (a.shape.empty()) throw InputError(name + ": a 0-d array (shape ()); every tensor of the layer has at least one axis");
  Tensor<Scalar> x;
  x.shape = a.shape;
  const index_t n = checked_numel(a.shape, name);
  check_allocation(n, sizeof(Scalar), name);
  try {
    x.data.resize(n);
  } catch (const std::bad_alloc&) {
    throw InputError(name + ": out of memory allocating " + std::to_string(n) + " values");
  }
  if (a.bytes.size() != static_cast<size_t>(n) * itemsize(a.dtype)) throw InputError(name + ": data size does not match its shape");
  if (n == 0) return x;  // a zero-length axis: no bytes (and memcpy from an empty vector's null data() is undefined)
  if (a.dtype == "f4") {
    if constexpr (std::is_same_v<Scalar, float>) {
      std::memcpy(x.data.data(), a.bytes.data(), a.bytes.size());
    } else {
      const unsigned char* src = a.bytes.data();
      for (index_t i = 0; i < n; ++i) {
        float f;
        std::memcpy(&f, src + 4 * i, 4);
        x.data[i] = static_cast<Scalar>(f);
      }
    }
  } else {
    if constexpr (std::is_same_v<Scalar, double>) {
      std::memcpy(x.data.data(), a.bytes.data(), a.bytes.size());
    } else {
      const unsigned char* src = a.bytes.data();
      for (index_t i = 0; i < n; ++i) {
        double f;
        std::memcpy(&f, src + 8 * i, 8);
        x.data[i] = static_cast<Scalar>(f);
        if (std::isfinite(f) && !std::isfinite(x.data[i])) {  // named here, not later as an inf the file does not hold
          throw does_not_fit_float32(name, f, unravel_index(a.shape, i), "--precision f32");
        }
      }
    }
  }
  return x;
}
template Tensor<float> to_tensor<float>(const NpyArray&, const std::string&);
template Tensor<double> to_tensor<double>(const NpyArray&, const std::string&);

InputError does_not_fit_float32(const std::string& name, double value, const std::vector<index_t>& at,
                                const std::string& precision) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return InputError(name + ": value " + text + " at " + shape_str(at) + " does not fit float32, the working precision" +
                    (precision.empty() ? "" : " of " + precision) + " (|x| < 3.4e38)");
}

std::string dtype_reason(const std::string& name, const std::string& descr) {
  const DtypeName d = dtype_name(descr);
  const bool index_file = name.find("cu_seqlens") != std::string::npos;
  if (d.kind == 'f' && d.bytes != 4 && d.bytes != 8 && !d.words.empty() && !index_file)
    return float_dtype_refusal(name, descr).substr(name.size() + 2);
  std::string how;
  if (d.kind == 'c')
    how = "gdn2's tensors are real: save x.real if its imaginary part is zero";
  else if (d.kind == 'i' || d.kind == 'u' || d.kind == 'b' || d.kind == 'O' || d.kind == 'f')  // numbers
    how = std::string("convert it with x.astype(np.") + (index_file ? "int64" : "float32") + ")";
  return "dtype '" + descr + "' (" + (d.words.empty() ? "unknown" : d.words) +
         ") is not supported: gdn2 reads float32, float64, int32 and int64" + (how.empty() ? "" : "; " + how);
}

UnsupportedNpy unsupported_dtype(const std::string& name, const std::string& descr, std::vector<index_t> shape) {
  const bool plain = !descr.empty() && (descr[0] == '<' || descr[0] == '|' || descr[0] == '=');
  return UnsupportedNpy(name, dtype_reason(name, descr), plain ? descr.substr(1) : descr, std::move(shape));
}

std::string float_dtype_refusal(const std::string& name, const std::string& descr) {
  const int bytes = std::atoi(descr.c_str() + 2);
  return name + ": dtype must be float32 or float64, got float" + std::to_string(8 * bytes) + " ('" + descr +
         "'); convert it with x.astype(np." + (bytes < 4 ? "float32" : "float64") + ")";
}

std::vector<index_t> to_index_vector(const NpyArray& a, const std::string& name) {
  if (a.dtype != "i4" && a.dtype != "i8") throw InputError(name + ": dtype must be int32 or int64, got " + a.dtype);
  if (a.shape.size() != 1) throw InputError(name + ": expected a 1-D array, got shape " + shape_str(a.shape));
  if (a.shape[0] < 2)
    throw InputError(name + ": " + std::to_string(a.shape[0]) + " entries; needs at least 2 ([0, ..., T]: N + 1 offsets)");
  std::vector<index_t> out(a.shape[0]);
  for (index_t i = 0; i < a.shape[0]; ++i) {
    if (a.dtype == "i4") {
      int32_t v;
      std::memcpy(&v, a.bytes.data() + 4 * i, 4);
      out[i] = v;
    } else {
      int64_t v;
      std::memcpy(&v, a.bytes.data() + 8 * i, 8);
      out[i] = v;
    }
  }
  return out;
}

template <typename Scalar>
std::string encode_npy(const Tensor<Scalar>& x) {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double> || std::is_same_v<Scalar, std::int32_t>);
  std::string shape = "(";  // NumPy's spelling: "()", "(5,)", "(2, 3)"
  for (size_t i = 0; i < x.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(x.shape[i]);
  shape += x.shape.size() == 1 ? ",)" : ")";
  std::string header = std::string("{'descr': '<") + (std::is_same_v<Scalar, std::int32_t> ? "i4" : sizeof(Scalar) == 4 ? "f4" : "f8") +
                       "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so that magic + length + header + '\n' is a multiple of 64 (as NumPy does).
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(reinterpret_cast<const char*>(x.ptr()), x.data.size() * sizeof(Scalar));
  return out;
}
template std::string encode_npy<float>(const Tensor<float>&);
template std::string encode_npy<double>(const Tensor<double>&);
template std::string encode_npy<std::int32_t>(const Tensor<std::int32_t>&);

namespace {

[[noreturn]] void write_fail(const std::string& what, int err) {
  throw WriteError(what + ": " + std::strerror(err));
}

// Holds SIGINT, SIGTERM, SIGHUP and SIGQUIT back for its lifetime; a signal that arrived meanwhile is delivered
// (with its default action: the process ends) when the previous mask is restored.
struct HoldSignals {
  sigset_t old;
  HoldSignals() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) sigaddset(&set, s);
    pthread_sigmask(SIG_BLOCK, &set, &old);
  }
  ~HoldSignals() { pthread_sigmask(SIG_SETMASK, &old, nullptr); }
};

void write_all(int fd, const std::string& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, std::min<size_t>(bytes.size() - done, size_t(1) << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      write_fail("cannot write " + path, errno);
    }
    done += static_cast<size_t>(n);
  }
}

// Removes a temporary directory of ours and its (flat) contents; errors are ignored (best effort on a path
// that is already failing).
void remove_flat_dir(const std::string& path) {
  std::error_code ec;
  const auto st = std::filesystem::symlink_status(path, ec);
  if (!std::filesystem::is_directory(st)) {  // a link (never followed) or a stray file: remove that entry alone
    if (std::filesystem::exists(st) || std::filesystem::is_symlink(st)) ::unlink(path.c_str());
    return;
  }
  for (const auto& e : std::filesystem::directory_iterator(path, ec)) ::unlink(e.path().c_str());
  ::rmdir(path.c_str());
}

bool pid_alive(long pid) { return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

// The names of write_files_atomically's temporaries for an output directory named `base`: ".BASE.gdn2-tmp-PID" (the
// new outputs being written) and ".BASE.gdn2-tmp-PID-old" (the old directory moved aside), PID the writer's.
std::string temp_prefix(const std::string& base) { return "." + base + ".gdn2-tmp-"; }

// The writer's pid when `name` is exactly one of those names (PID decimal digits, no sign or leading zero), else 0: a
// user's ".out.gdn2-tmp-notes" or ".out.gdn2-tmp-1.bak" is not one.
long temp_writer(const std::string& name, const std::string& prefix) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return 0;
  std::string pid = name.substr(prefix.size());
  if (pid.size() > 4 && pid.compare(pid.size() - 4, 4, "-old") == 0) pid.resize(pid.size() - 4);
  if (pid.empty() || pid.size() > 10 || pid[0] == '0' || pid.find_first_not_of("0123456789") != std::string::npos) return 0;
  return std::stol(pid);
}

// Removes the temporaries that writers of `base` in `parent` left when they were killed (SIGKILL, which cannot be held
// back, or a crash): a directory (never a link or a file) named exactly as temp_writer reads, whose writer is no longer
// running. Anything else is left alone: a user's file or directory of a similar name, a running writer's temporary.
// The caller holds the lock on `parent` that write_files_atomically takes.
void remove_stale_temporaries(const std::filesystem::path& parent, const std::string& base) {
  namespace fs = std::filesystem;
  const std::string prefix = temp_prefix(base);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const long pid = temp_writer(e.path().filename().string(), prefix);
    if (pid > 0 && !pid_alive(pid) && fs::is_directory(e.symlink_status(ec))) remove_flat_dir(e.path().string());
  }
}

// kOutputList: the names of the files that run wrote, one per line, sorted. A later run replaces only a directory
// whose every file is named there (or an empty one).
std::string output_list(std::vector<std::string> names) {
  std::sort(names.begin(), names.end());
  std::string text = "# gdn2 wrote this directory as a whole. A later gdn2 run given it as --out replaces it, unless it\n"
                     "# then holds a file not named below.\n";
  for (const auto& n : names) text += n + "\n";
  return text;
}

// The names in dir's list (none when it has no list, or an unreadable one).
std::vector<std::string> listed_outputs(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  std::ifstream in(dir / kOutputList);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] != '#') names.push_back(line);
  return names;
}

}  // namespace

void check_output_dir(const std::string& dir, const std::string& option, const std::string& input_dir) {
  namespace fs = std::filesystem;
  if (dir.empty()) throw InputError(option + ": an empty path");
  std::error_code ec;
  if (fs::is_symlink(fs::symlink_status(dir, ec)))
    throw InputError(option + ": " + dir + " is a symbolic link; give the directory it points to (gdn2 replaces its " +
                     "output directory as a whole, and would replace the link)");
  const auto st = fs::status(dir, ec);
  if (!fs::exists(st)) {
    // The nearest existing ancestor must be a directory.
    fs::path p = fs::absolute(dir, ec).parent_path();
    while (!p.empty() && !fs::exists(p, ec) && p != p.root_path()) p = p.parent_path();
    if (!p.empty() && fs::exists(p, ec) && !fs::is_directory(p, ec))
      throw InputError(option + ": " + dir + " cannot be created: " + p.string() + " is not a directory");
    return;
  }
  if (!fs::is_directory(st)) throw InputError(option + ": " + dir + " exists and is not a directory");
  if (!input_dir.empty() && fs::equivalent(dir, input_dir, ec))
    throw InputError(option + ": " + dir + " is also the input directory; gdn2 replaces its output directory as a " +
                     "whole, which would delete the inputs, so give it a directory of its own");
  const std::vector<std::string> listed = listed_outputs(dir);
  std::vector<std::string> foreign;  // files an earlier gdn2 run did not write here: never deleted
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory(ec))
      throw InputError(option + ": " + dir + " holds a subdirectory (" + name +
                       "/); gdn2 replaces its output directory as a whole, so give it a directory of its own");
    if (name != kOutputList && std::find(listed.begin(), listed.end(), name) == listed.end()) foreign.push_back(name);
  }
  if (!foreign.empty()) {
    std::sort(foreign.begin(), foreign.end());
    std::string names;
    for (size_t i = 0; i < foreign.size() && i < 3; ++i) names += (i ? ", " : "") + foreign[i];
    if (foreign.size() > 3) names += " and " + std::to_string(foreign.size() - 3) + " more";
    throw InputError(option + ": " + dir + " holds files gdn2 did not write there (" + names + "); gdn2 replaces its " +
                     "output directory as a whole, so give it a new or empty directory, or one an earlier gdn2 run wrote");
  }
}

void check_output_writable(const std::string& dir_arg) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir = fs::absolute(dir_arg, ec).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "out/" → "out"
  const fs::path parent = dir.parent_path();
  // SIGINT, SIGTERM, SIGHUP and SIGQUIT wait until the probe below and the parents made for it are removed again
  // (declared first, so released last).
  HoldSignals hold;
  std::vector<fs::path> created;  // missing parents made here, outermost first; removed again below
  struct Undo {
    std::vector<fs::path>& dirs;
    ~Undo() {
      for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) ::rmdir(it->c_str());
    }
  } undo{created};
  std::vector<fs::path> missing;
  for (fs::path p = parent; !p.empty() && !fs::exists(fs::symlink_status(p, ec)); p = p.parent_path())
    missing.insert(missing.begin(), p);
  for (const fs::path& p : missing) {
    if (::mkdir(p.c_str(), 0777) == 0) created.push_back(p);
    else if (errno != EEXIST) write_fail("cannot create " + p.string(), errno);
  }
  const std::string base = dir.filename().string();
  // The temporaries of killed writers into the same --out are removed now, at the start of the run, rather than
  // when it writes (minutes later, or never if it fails): under the writers' lock, when no writer holds it (one
  // that does removes them itself).
  if (base != "." && base != "..") {
    Fd lock{::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
    if (lock.fd >= 0 && ::flock(lock.fd, LOCK_EX | LOCK_NB) == 0) remove_stale_temporaries(parent, base);
  }
  // The same name write_files_atomically gives its temporary (a writer that is running now uses its own pid).
  const fs::path tmp = parent / (temp_prefix(base) + std::to_string(::getpid()));
  remove_flat_dir(tmp.string());  // a killed writer's, whose pid this process now has
  if (::mkdir(tmp.c_str(), 0777) != 0) write_fail("cannot create " + tmp.string() + " (to write " + dir.string() + ")", errno);
  ::rmdir(tmp.c_str());
}

void write_files_atomically(const std::string& dir_arg, const std::vector<std::pair<std::string, std::string>>& files) {
  namespace fs = std::filesystem;
  check_output_dir(dir_arg, "output directory");
  std::error_code ec;
  fs::path dir = fs::absolute(dir_arg, ec).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "out/" → "out"
  const fs::path parent = dir.parent_path();
  const std::string base = dir.filename().string();
  if (base.empty() || base == "." || base == "..") throw InputError("output directory " + dir_arg + ": give it a name of its own");

  HoldSignals hold;
  // The missing parents this run creates, outermost first: removed again (when still empty) if the write fails, so
  // that a failed run leaves the file system as it found it.
  struct CreatedParents {
    std::vector<fs::path> dirs;
    bool armed = true;
    ~CreatedParents() {
      if (armed)
        for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) ::rmdir(it->c_str());  // never a non-empty one
    }
  } created;
  Fd lock{-1};
  for (;;) {
    if (!fs::exists(parent, ec)) {
      std::vector<fs::path> missing;  // outermost first
      for (fs::path p = parent; !p.empty() && !fs::exists(fs::symlink_status(p, ec)); p = p.parent_path())
        missing.insert(missing.begin(), p);
      for (const fs::path& p : missing) {
        if (::mkdir(p.c_str(), 0777) == 0) created.dirs.push_back(p);
        else if (errno != EEXIST) write_fail("cannot create " + p.string(), errno);
      }
    }
    lock.fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lock.fd < 0) write_fail("cannot open " + parent.string(), errno);
    if (::flock(lock.fd, LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK) write_fail("cannot lock " + parent.string(), errno);
      std::fprintf(stderr, "gdn2: waiting for another gdn2 writing into %s\n", parent.c_str());
      while (::flock(lock.fd, LOCK_EX) != 0)
        if (errno != EINTR) write_fail("cannot lock " + parent.string(), errno);
    }
    // The run we waited for may have failed and removed the parent it had created: then create it again.
    struct stat st;
    if (::fstat(lock.fd, &st) == 0 && st.st_nlink > 0) break;
    ::close(lock.fd);
    lock.fd = -1;
  }
  // Temporaries of writers that were killed (SIGKILL cannot be held back): those killed since check_output_writable
  // swept at this run's start, or all of them for a caller that does not call it (gdn2 export, trace).
  remove_stale_temporaries(parent, base);
  const std::string prefix = temp_prefix(base);
  const fs::path tmp = parent / (prefix + std::to_string(::getpid()));
  remove_flat_dir(tmp.string());
  if (::mkdir(tmp.c_str(), 0777) != 0) write_fail("cannot create " + tmp.string(), errno);
  struct Cleanup {
    std::string path;
    bool armed = true;
    ~Cleanup() {
      if (armed) remove_flat_dir(path);
    }
  } cleanup{tmp.string()};

  auto write_file = [&](const std::string& file, const std::string& bytes) {
    const std::string path = (tmp / file).string();
    Fd out{::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666)};
    if (out.fd < 0) write_fail("cannot create " + (dir / file).string(), errno);
    write_all(out.fd, bytes, (dir / file).string());
    if (::fsync(out.fd) != 0) write_fail("cannot write " + (dir / file).string(), errno);
  };
  std::vector<std::string> names;
  for (const auto& [file, bytes] : files) write_file(file, bytes), names.push_back(file);
  write_file(kOutputList, output_list(names));
  struct stat old_st;
  if (::stat(dir.c_str(), &old_st) == 0) {  // the replacement keeps the old directory's group and permissions
    [[maybe_unused]] const int kept_group = ::chown(tmp.c_str(), static_cast<uid_t>(-1), old_st.st_gid);  // else ours
    ::chmod(tmp.c_str(), old_st.st_mode & 07777);
  }
  if (fs::exists(dir, ec)) {
    // The new directory holds exactly this run's files: nothing of the old one is carried over (a gradient or
    // checkpoint file of an earlier run must not sit beside this run's outputs as if it were one of them).
    for (const auto& e : fs::directory_iterator(dir, ec))
      if (e.is_directory(ec))  // removing the old directory below would leave it behind
        throw InputError("output directory " + dir.string() + " holds a subdirectory (" + e.path().filename().string() + "/)");
    if (::syscall(SYS_renameat2, AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) != 0) {
      if (errno != EINVAL && errno != ENOSYS) write_fail("cannot replace " + dir.string() + " by the new outputs", errno);
      // No RENAME_EXCHANGE on this file system: move the old directory aside, then the new one in (a reader may
      // briefly find no directory, never a mix of two runs).
      const fs::path old = parent / (prefix + std::to_string(::getpid()) + "-old");
      if (::rename(dir.c_str(), old.c_str()) != 0) write_fail("cannot move " + dir.string() + " aside", errno);
      if (::rename(tmp.c_str(), dir.c_str()) != 0) {
        const int err = errno;
        ::rename(old.c_str(), dir.c_str());
        write_fail("cannot rename the new outputs to " + dir.string(), err);
      }
      cleanup.path = old.string();
    }
    // cleanup.path now names the old directory: removed on return.
  } else {
    if (::rename(tmp.c_str(), dir.c_str()) != 0) write_fail("cannot rename the new outputs to " + dir.string(), errno);
    cleanup.armed = false;
  }
  created.armed = false;
  ::fsync(lock.fd);
}

}  // namespace gdn2::io
