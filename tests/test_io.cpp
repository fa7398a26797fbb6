// gdn2 tests [io] — .npy round trips and refusals, 64-bit index helpers (docs/numerics.md 20, 21).
#include "helpers.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <tuple>

#include "core/validate.hpp"
#include "io/npy.hpp"

using namespace gdn2;
using namespace gdn2::test;

namespace {

io::NpyArray parse(const std::string& bytes) {
  return io::parse_npy(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), "x.npy");
}

std::string with_header(const std::string& dict, size_t data_bytes, char version = 1) {
  std::string h = dict;
  h += '\n';
  std::string out = "\x93NUMPY";
  out += version;
  out += '\0';
  out += char(h.size() & 0xff);
  out += char(h.size() >> 8);
  if (version > 1) out += std::string("\0\0", 2);
  return out + h + std::string(data_bytes, '\0');
}

}  // namespace

TEST_CASE("npy: round trip of float32 and float64 tensors", "[io]") {
  Tensor<double> x({2, 3, 1});
  for (index_t i = 0; i < x.numel(); ++i) x.data[i] = 0.1 * double(i) - 0.25;
  const auto a = parse(io::encode_npy(x));
  REQUIRE(a.dtype == "f8");
  REQUIRE(a.shape == x.shape);
  REQUIRE(bitwise_equal(io::to_tensor<double>(a, "x"), x));
  const Tensor<float> xf = cast<float>(x);
  const std::string enc = io::encode_npy(xf);
  REQUIRE((enc.size() - 6 * 4) % 64 == 0);  // header padded to 64 bytes as NumPy does
  REQUIRE(bitwise_equal(io::to_tensor<float>(parse(enc), "x"), xf));
  Tensor<double> one({5});
  REQUIRE(io::encode_npy(one).find("'shape': (5,)") != std::string::npos);
  Tensor<double> scalar(std::vector<index_t>{});
  REQUIRE(parse(io::encode_npy(scalar)).shape.empty());
}

// A zero-length axis (shape (0, 9, 2, 3)): an empty tensor of that shape, in every dtype pair. Found by the fuzzer:
// the float64 read copied 0 bytes from a null pointer (undefined behaviour: the AddressSanitizer build's UBSan stops).
TEST_CASE("npy: a zero-length axis reads as an empty tensor", "[io]") {
  for (const char* descr : {"<f4", "<f8"}) {
    const auto a = parse(with_header(std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (0, 9, 2, 3), }", 0));
    const Tensor<double> d = io::to_tensor<double>(a, "v");
    const Tensor<float> f = io::to_tensor<float>(a, "v");
    std::printf("  [measured] %s shape (0, 9, 2, 3): %ld and %ld values\n", descr, long(d.numel()), long(f.numel()));
    REQUIRE(d.shape == std::vector<index_t>{0, 9, 2, 3});
    REQUIRE(f.shape == d.shape);
    REQUIRE(d.numel() == 0);
    REQUIRE(f.numel() == 0);
  }
}

// Before: "x.npy: dtype '>f8' (big-endian float64) is not supported: gdn2 reads float32, float64, int32 and int64,
// little-endian; save x.astype(x.dtype.newbyteorder('<'))", while the Python module read a '>f8' array by value: one
// file, read by one front end and refused by the other.
TEST_CASE("npy: a big-endian file is read by value, as its little-endian copy is", "[io]") {
  Rng rng(41);
  Tensor<double> f8({2, 3, 5});
  for (auto& e : f8.data) e = rng.normal() * 1e3;
  const Tensor<float> f4 = cast<float>(f8);
  Tensor<std::int32_t> i4({7});
  for (index_t i = 0; i < i4.numel(); ++i) i4.data[i] = static_cast<std::int32_t>(i * 100003 - 300000);
  std::string i8 = with_header("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", 0);
  for (const std::int64_t v : {std::int64_t(0), std::int64_t(1) << 40, std::int64_t(-5)})
    i8.append(reinterpret_cast<const char*>(&v), 8);
  for (const auto& [what, little, itemsize] : std::vector<std::tuple<std::string, std::string, size_t>>{
           {"f8", io::encode_npy(f8), 8}, {"f4", io::encode_npy(f4), 4}, {"i4", io::encode_npy(i4), 4}, {"i8", i8, 8}}) {
    const std::string big = big_endian_npy(little, itemsize);
    REQUIRE(big != little);
    const io::NpyArray want = parse(little), got = parse(big);
    // The same through the file reader (its own path: header and body read separately).
    const std::string path =
        (std::filesystem::temp_directory_path() / ("gdn2_io_big_endian_" + std::to_string(::getpid()) + "_" + what + ".npy")).string();
    std::ofstream(path, std::ios::binary) << big;
    const io::NpyArray file = io::read_npy(path, what + ".npy");
    std::filesystem::remove(path);
    std::printf("  [measured] a '>%s' file reads as dtype %s, shape %s, its bytes equal to the '<%s' file's: %s (parse), "
                "%s (read)\n", what.c_str(), got.dtype.c_str(), shape_str(got.shape).c_str(), what.c_str(),
                got.bytes == want.bytes ? "yes" : "no", file.bytes == want.bytes ? "yes" : "no");
    CHECK(got.dtype == what);
    CHECK(got.shape == want.shape);
    CHECK(got.bytes == want.bytes);
    CHECK(file.dtype == what);
    CHECK(file.bytes == want.bytes);
  }
  // The values, not merely the bytes: a '>f8' tensor reads as f8, a '>i8' index file as its offsets.
  CHECK(bitwise_equal(io::to_tensor<double>(parse(big_endian_npy(io::encode_npy(f8), 8)), "q.npy"), f8));
  CHECK(bitwise_equal(io::to_tensor<float>(parse(big_endian_npy(io::encode_npy(f4), 4)), "q.npy"), f4));
  CHECK(io::to_index_vector(parse(big_endian_npy(i8, 8)), "cu_seqlens.npy") == std::vector<index_t>{0, index_t(1) << 40, -5});
}

TEST_CASE("npy: versions 2/3 and integer index arrays", "[io]") {
  auto a = parse(with_header("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", 24, 2));
  REQUIRE(io::to_index_vector(a, "cu") == std::vector<index_t>{0, 0, 0});
  a = parse(with_header("{'descr': '<i4', 'fortran_order': False, 'shape': (2,)}", 8, 3));
  REQUIRE(io::to_index_vector(a, "cu").size() == 2);
}

TEST_CASE("npy: every malformed file is refused with a message naming it", "[io]") {
  const std::string good = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }";
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "magic"},
      {"hello world, not numpy", "magic"},
      {with_header(good, 31), "truncated"},
      {with_header(good, 33), "data bytes"},
      {with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (-2, 2), }", 32), "shape"},
      {with_header("{'descr': '<f8', 'fortran_order': False}", 8), "needs"},
      {with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), 'x': 1}", 32), "unexpected key"},
      {with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2)} junk", 32), "trailing"},
      {with_header("{'descr': '<f8, 'fortran_order': False, 'shape': (2, 2)}", 32), "header"},
      {std::string("\x93NUMPY\x09\x00\x10\x00", 10) + "{}", "version"},
      {std::string("\x93NUMPY\x01\x00\xff\x00", 10) + "{}", "truncated header"},
      {with_header("{'descr': 'hello', 'fortran_order': False, 'shape': (2,), }", 16), "not a NumPy dtype"},
      {with_header("{'descr': '<f8x', 'fortran_order': False, 'shape': (2,), }", 16), "not a NumPy dtype"},
  };
  for (const auto& [bytes, expected] : bad) {
    CAPTURE(expected);
    REQUIRE_THROWS_AS(parse(bytes), InputError);
    // A malformed file, and said so.
    REQUIRE_THROWS_WITH(parse(bytes), Catch::Contains("x.npy") && Catch::Contains("not a valid .npy file") &&
                                          Catch::Contains(expected));
  }
  REQUIRE_THROWS_WITH(parse(with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999, 99999999999, "
                                        "99999999999), }", 0)),
                      Catch::Contains("x.npy") && Catch::Contains("2^63"));
  // Integer data where floats are expected, floats where indices are expected.
  REQUIRE_THROWS_WITH(io::to_tensor<double>(parse(with_header("{'descr': '<i4', 'fortran_order': False, 'shape': (2,)}", 8)), "q.npy"),
                      Catch::Contains("q.npy") && Catch::Contains("float"));
  REQUIRE_THROWS_WITH(io::to_index_vector(parse(with_header(good, 32)), "cu_seqlens.npy"), Catch::Contains("int32 or int64"));
}

// Before, each began "x.npy: not a valid .npy file:" ("... dtype '<c16' is not supported (float32, float64, int32,
// int64, little-endian)"), although NumPy writes and reads every one of these files.
TEST_CASE("npy: a valid file of a dtype or order gdn2 does not read is refused as such, saying what it reads", "[io]") {
  const std::string reads = "is not supported: gdn2 reads float32, float64, int32 and int64";
  const std::vector<std::pair<std::string, std::string>> unsupported = {
      {with_header("{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }", 32),
       "x.npy: dtype '<c16' (complex128) " + reads + "; gdn2's tensors are real: save x.real if its imaginary part is "
       "zero"},
      {with_header("{'descr': '>c8', 'fortran_order': False, 'shape': (2,), }", 16),
       "x.npy: dtype '>c8' (big-endian complex64) " + reads + "; gdn2's tensors are real: save x.real if its imaginary "
       "part is zero"},
      {with_header("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", 16),
       "x.npy: dtype '|O' (Python objects) " + reads + "; convert it with x.astype(np.float32)"},
      {with_header("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", 2),
       "x.npy: dtype '|b1' (bool) " + reads + "; convert it with x.astype(np.float32)"},
      {with_header("{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }", 8),
       "x.npy: dtype '<u4' (uint32) " + reads + "; convert it with x.astype(np.float32)"},
      {with_header("{'descr': '<U3', 'fortran_order': False, 'shape': (2,), }", 24),
       "x.npy: dtype '<U3' (str) " + reads},
      {with_header("{'descr': '<M8[ns]', 'fortran_order': False, 'shape': (2,), }", 16),
       "x.npy: dtype '<M8[ns]' (datetime64) " + reads},
      {with_header("{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }", 4),  // (the float16 message, kept)
       "x.npy: dtype must be float32 or float64, got float16 ('<f2'); convert it with x.astype(np.float32)"},
      {with_header("{'descr': '>f2', 'fortran_order': False, 'shape': (2,), }", 4),  // (was: "... newbyteorder('<')")
       "x.npy: dtype must be float32 or float64, got float16 ('>f2'); convert it with x.astype(np.float32)"},
      {with_header("{'descr': '<f8', 'fortran_order': True, 'shape': (2, 2), }", 32),
       "x.npy: fortran_order=True (Fortran memory order) is not supported: gdn2 reads C order; save "
       "np.ascontiguousarray(x)"},
  };
  const auto refusal = [](const std::string& bytes, const std::string& name) -> std::string {
    try {
      io::parse_npy(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), name);
    } catch (const InputError& e) {
      return e.what();
    }
    return "(accepted)";
  };
  for (const auto& [bytes, expected] : unsupported) {
    const std::string message = refusal(bytes, "x.npy");
    std::printf("  [measured] %s\n", message.c_str());
    CHECK(message == expected);
    CHECK_THAT(message, !Catch::Contains("not a valid"));
  }
  // An index file is told to become int64.
  const std::string message = refusal(with_header("{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }", 8),
                                      "cu_seqlens.npy");
  std::printf("  [measured] %s\n", message.c_str());
  CHECK(message == "cu_seqlens.npy: dtype '<u4' (uint32) " + reads + "; convert it with x.astype(np.int64)");
}

TEST_CASE("21. 64-bit offsets and allocation refusal", "[io]") {
  // ((B-1)·T·H + H-1)·K > 2^31 for B = 64, T = 65536, H = 16, K = 128: the helpers must not wrap.
  const index_t B = 64, T = 65536, H = 16, K = 128;
  const index_t last = offset_bthd(B - 1, T - 1, H - 1, T, H, K);
  const index_t expected = (((B - 1) * T + (T - 1)) * H + (H - 1)) * K;
  log_measure("last offset / 2^31 (must exceed 1)", double(last) / 2147483648.0, 1.0);
  REQUIRE(last == expected);
  REQUIRE(last > (index_t(1) << 31));
  REQUIRE(offset_state(1023, 63, 64, 256, 256) == ((index_t(1023) * 64 + 63) * 256 * 256));
  REQUIRE_THROWS_WITH(Tensor<double>({index_t(1) << 24, index_t(1) << 24}, "ht"), Catch::Contains("ht") && Catch::Contains("GiB"));
  REQUIRE_THROWS_WITH(Tensor<double>({index_t(1) << 40, index_t(1) << 40}, "o"), Catch::Contains("2^63"));
  // A zero-length axis holds no elements however large the others: before, (2^32, 2^32, 2^32, 0) was refused as
  // "more than 2^63 elements".
  const auto empty = parse(with_header("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, "
                                       "4294967296, 0), }", 0));
  REQUIRE(io::to_tensor<double>(empty, "x.npy").numel() == 0);
}

TEST_CASE("20. validation names the tensor and the problem", "[io]") {
  Rng rng(20);
  auto x = random_layer<double>(rng, 1, 5, 2, 2, 4, 3, [](Rng& r) { return r.uniform(-0.1, 0); });
  auto expect = [&](const Layer<double>& y, const std::vector<index_t>& cu, const char* tensor, const char* problem,
                    ForwardOptions opt = {}) {
    CAPTURE(tensor, problem);
    REQUIRE_THROWS_WITH(validate_inputs(y.q, y.k, y.v, y.g, y.b, y.w, y.h0, cu, opt),
                        Catch::StartsWith(tensor) && Catch::Contains(problem));
  };
  auto y = x;
  y.k = Tensor<double>({1, 5, 2, 5});
  expect(y, {}, "k", "shape");
  y = x;
  y.v = Tensor<double>({1, 5, 3, 3});
  y.w = Tensor<double>({1, 5, 3, 3});
  expect(y, {}, "v", "multiple");
  y = x;
  y.q = Tensor<double>({1, 5, 2, 0});
  expect(y, {}, "q", "K = 0");
  y = x;
  y.g.data[3] = 0.5;
  expect(y, {}, "g", "[-inf, 0]");
  y = x;
  y.g.data[3] = NAN;
  expect(y, {}, "g", "nan");
  y = x;
  y.q.data[0] = INFINITY;
  expect(y, {}, "q", "finite");
  y = x;
  y.b.data[1] = 1.5;
  expect(y, {}, "b", "[0, 1]");
  y = x;
  y.w.data[1] = -0.1;
  expect(y, {}, "w", "[0, 1]");
  y = x;
  y.h0 = Tensor<double>({2, 2, 4, 3});
  expect(y, {}, "h0", "initial state");
  expect(x, {0, 2, 1, 5}, "cu_seqlens", "monotone");
  expect(x, {1, 5}, "cu_seqlens", "start at 0");
  expect(x, {0, 4}, "cu_seqlens", "end at T");
  ForwardOptions bad_chunk;
  bad_chunk.chunk_size = 0;
  expect(x, {}, "chunk size", ">= 1", bad_chunk);
  y = random_layer<double>(rng, 2, 5, 2, 2, 4, 3, [](Rng& r) { return r.uniform(-0.1, 0); });
  expect(y, {0, 5}, "cu_seqlens", "B = 1");
}
