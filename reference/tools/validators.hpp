// gdn2 command line — numeric option checks with one short error line each (CLI11's own ranges print DBL_MAX with
// all 309 digits), refusing nan and inf where a number must be finite, and absurd sizes before anything is allocated.
#pragma once

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <string>

namespace gdn2::tools {

namespace detail {
inline std::string short_number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}
// Parses the whole string as a number; false for anything else (trailing text, empty).
inline bool parse_number(const std::string& s, double& x) {
  char* end = nullptr;
  x = std::strtod(s.c_str(), &end);
  return !s.empty() && end == s.c_str() + s.size();
}
}  // namespace detail

// A finite number in [lo, hi] (lo_open / hi_open: the end itself excluded).
inline CLI::Validator finite_in(double lo, double hi, bool lo_open = false, bool hi_open = false) {
  std::string range = std::string(lo_open ? "(" : "[") + (std::isinf(lo) ? "-inf" : detail::short_number(lo)) + ", " +
                      (std::isinf(hi) ? "inf" : detail::short_number(hi)) + (hi_open ? ")" : "]");
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        double x;
        if (!detail::parse_number(s, x) || !std::isfinite(x) || x < lo || x > hi || (lo_open && x == lo) || (hi_open && x == hi))
          return "expected a finite number in " + range + ", got '" + s.substr(0, 40) + "'";
        return {};
      },
      "finite in " + range);
}

// An integer in [lo, hi]: sizes and counts, bounded so that an absurd value is refused before any allocation.
inline CLI::Validator integer_in(long long lo, long long hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        double x;
        if (!detail::parse_number(s, x) || x != std::floor(x) || x < double(lo) || x > double(hi))
          return "expected an integer in " + range + ", got '" + s.substr(0, 40) + "'";
        return {};
      },
      "integer in " + range);
}

// A seed: a non-negative integer written in decimal digits that fits in `hi` (a 64-bit or 32-bit seed). "-1" is
// refused rather than wrapped to 2^64 - 1, and a seed too large for its type rather than truncated.
inline CLI::Validator seed_in(std::uint64_t hi) {
  const std::string range = "[0, " + std::to_string(hi) + "]";
  return CLI::Validator(
      [=](std::string& s) -> std::string {
        bool ok = !s.empty() && s.size() <= 20 && s.find_first_not_of("0123456789") == std::string::npos;
        if (ok) {
          errno = 0;
          const unsigned long long x = std::strtoull(s.c_str(), nullptr, 10);
          ok = errno == 0 && x <= hi;
        }
        if (!ok) return "expected a seed, an integer in " + range + ", got '" + s.substr(0, 40) + "'";
        return {};
      },
      "integer in " + range);
}

}  // namespace gdn2::tools
