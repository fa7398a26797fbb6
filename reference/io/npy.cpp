// gdn2 reference — .npy reader and writer (see npy.hpp for the contract).
#include "io/npy.hpp"

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

}  // namespace

NpyArray parse_npy(const unsigned char* data, size_t size, const std::string& name) {
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
  if (header_len > size - header_start) fail(name, "truncated header");
  std::string header(reinterpret_cast<const char*>(data + header_start), header_len);
  while (!header.empty() && (header.back() == '\n' || header.back() == ' ' || header.back() == '\0')) header.pop_back();

  HeaderParser p{header, name};
  std::string descr;
  bool fortran = false, have_descr = false, have_order = false, have_shape = false;
  NpyArray a;
  p.expect('{');
  while (!p.take('}')) {
    const std::string key = p.quoted();
    p.expect(':');
    if (key == "descr") descr = p.quoted(), have_descr = true;
    else if (key == "fortran_order") fortran = p.boolean(), have_order = true;
    else if (key == "shape") a.shape = p.tuple(), have_shape = true;
    else fail(name, "header: unexpected key '" + key + "'");
    if (!p.take(',')) {
      p.expect('}');
      break;
    }
  }
  p.skip_space();
  if (p.i != header.size()) fail(name, "header: trailing characters after the dict");
  if (!have_descr || !have_order || !have_shape) fail(name, "header: needs 'descr', 'fortran_order' and 'shape'");
  if (fortran) fail(name, "fortran_order=True is not supported; save np.ascontiguousarray(x) instead");
  if (descr.size() != 3 || (descr[0] != '<' && descr[0] != '|' && descr[0] != '='))
    fail(name, "dtype '" + descr + "' is not little-endian float32/float64/int32/int64");
  a.dtype = descr.substr(1);
  if (a.dtype != "f4" && a.dtype != "f8" && a.dtype != "i4" && a.dtype != "i8")
    fail(name, "dtype '" + descr + "' is not supported (float32, float64, int32, int64)");

  const index_t numel = checked_numel(a.shape, name);
  const size_t data_start = header_start + header_len;
  const size_t available = size - data_start;
  if (static_cast<uint64_t>(numel) > available / itemsize(a.dtype) ||
      static_cast<size_t>(numel) * itemsize(a.dtype) != available) {
    std::ostringstream msg;
    msg << "shape " << shape_str(a.shape) << " of dtype " << descr << " needs " << numel << " elements, but the file holds "
        << available << " data bytes" << (static_cast<uint64_t>(numel) * itemsize(a.dtype) > available ? " (truncated)" : "");
    fail(name, msg.str());
  }
  a.bytes.assign(data + data_start, data + size);
  return a;
}

NpyArray read_npy(const std::string& path, const std::string& name) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(name + ": cannot open " + path);
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_npy(bytes.data(), bytes.size(), name);
}

template <typename Scalar>
Tensor<Scalar> to_tensor(const NpyArray& a, const std::string& name) {
  if (a.dtype != "f4" && a.dtype != "f8") throw InputError(name + ": dtype must be float32 or float64, got " + a.dtype);
  Tensor<Scalar> x(a.shape);
  for (index_t i = 0; i < x.numel(); ++i) {
    if (a.dtype == "f4") {
      float f;
      std::memcpy(&f, a.bytes.data() + 4 * i, 4);
      x.data[i] = static_cast<Scalar>(f);
    } else {
      double f;
      std::memcpy(&f, a.bytes.data() + 8 * i, 8);
      x.data[i] = static_cast<Scalar>(f);
    }
  }
  return x;
}
template Tensor<float> to_tensor<float>(const NpyArray&, const std::string&);
template Tensor<double> to_tensor<double>(const NpyArray&, const std::string&);

std::vector<index_t> to_index_vector(const NpyArray& a, const std::string& name) {
  if (a.dtype != "i4" && a.dtype != "i8") throw InputError(name + ": dtype must be int32 or int64, got " + a.dtype);
  if (a.shape.size() != 1) throw InputError(name + ": expected a 1-D array, got shape " + shape_str(a.shape));
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

void write_files_atomically(const std::string& dir, const std::vector<std::pair<std::string, std::string>>& files) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create output directory " + dir + ": " + ec.message());
  std::vector<std::string> temps;
  auto cleanup = [&] {
    for (const auto& t : temps) fs::remove(t, ec);
  };
  for (const auto& [file, bytes] : files) {
    const std::string tmp = (fs::path(dir) / ("." + file + ".partial")).string();
    temps.push_back(tmp);
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      cleanup();
      throw std::runtime_error("cannot write " + tmp + " (disk full or no permission?)");
    }
  }
  for (size_t i = 0; i < files.size(); ++i) {
    fs::rename(temps[i], fs::path(dir) / files[i].first, ec);
    if (ec) {
      cleanup();
      throw std::runtime_error("cannot rename " + temps[i] + ": " + ec.message());
    }
  }
}

}  // namespace gdn2::io
