// gdn2 model — reading the JSON files of checkpoints (config.json) and traces (trace.json) strictly.
//
// Every refusal is one InputError line that names the file and the key, never the JSON library's exception text:
// a FIFO, device or directory is refused without blocking (io::read_regular_file), an empty file, a syntax error
// (by byte offset), a number that overflows a double (by key), a duplicate key, a top level that is not an object,
// a missing key and a value of the wrong type or range.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.hpp"
#include "io/npy.hpp"

namespace gdn2::model::json_file {

using nlohmann::json;

// The top-level object of the JSON file `file`.
inline json parse_object(const std::string& file) {
  const std::string text = io::read_regular_file(file, "JSON file");
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) throw InputError(file + ": is empty (expected a JSON object {...})");
  // The key being read at each open object, so that an error inside a value names its key ("model.d_model").
  std::vector<std::string> path;
  std::vector<std::set<std::string>> keys;  // the keys seen so far in each open object
  std::string duplicate;
  auto key_name = [&] {
    std::string k;
    for (const std::string& p : path)
      if (!p.empty()) k += (k.empty() ? "" : ".") + p;
    return k;
  };
  json::parser_callback_t cb = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      keys.emplace_back();
      path.emplace_back();
    } else if (event == json::parse_event_t::object_end && !keys.empty()) {
      keys.pop_back();
      path.pop_back();
    } else if (event == json::parse_event_t::key && !keys.empty()) {
      path.back() = parsed.get<std::string>();
      if (!keys.back().insert(path.back()).second && duplicate.empty()) duplicate = key_name();
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text, cb);
  } catch (const json::parse_error& e) {
    throw InputError(file + ": not valid JSON (syntax error at byte " + std::to_string(e.byte) +
                     (path.empty() || key_name().empty() ? std::string() : ", in key '" + key_name() + "'") + ")");
  } catch (const json::out_of_range&) {  // a number beyond the range of a double, e.g. 1e999
    throw InputError(file + ": key '" + key_name() + "' holds a number too large for a double");
  } catch (const json::exception&) {
    throw InputError(file + ": not valid JSON" + (key_name().empty() ? std::string() : " (in key '" + key_name() + "')"));
  }
  if (!duplicate.empty()) throw InputError(file + ": key '" + duplicate + "' appears twice in one object");
  if (!j.is_object()) throw InputError(file + ": the top level must be an object {...}, got " + std::string(j.type_name()));
  return j;
}

// The name of `key` inside `section` ("model.d_model"; `section` "" for top-level keys).
inline std::string field_name(const std::string& section, const char* key) {
  return section.empty() ? std::string(key) : section + "." + key;
}

// The object under `key` of `j`; it must be there and be an object {...}.
inline const json& section(const json& j, const char* key, const std::string& file) {
  if (!j.contains(key)) throw InputError(file + ": key '" + std::string(key) + "' is missing");
  const json& v = j.at(key);
  if (!v.is_object())
    throw InputError(file + ": key '" + std::string(key) + "' must be an object {...}, got " + std::string(v.type_name()));
  return v;
}

// Reads one field exactly: an integer field must hold an integer that fits its type (64.9 and 2^32 + 64 are
// refused, not truncated or wrapped), a real field a finite number, a string field a string, a list of strings a
// list of strings. `section` names the enclosing object in messages ("model" gives key 'model.d_model').
// A missing field is refused when `required`; otherwise `out` keeps its value.
template <typename T>
void read(const json& j, const std::string& section, const char* key, T& out, const std::string& file, bool required = true) {
  const std::string name = field_name(section, key);
  if (!j.contains(key)) {
    if (required) throw InputError(file + ": key '" + name + "' is missing");
    return;
  }
  const json& v = j.at(key);
  auto wrong = [&](const std::string& what) {
    throw InputError(file + ": key '" + name + "' " + what + " (got " + v.dump().substr(0, 40) + ")");
  };
  if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) wrong("must be an integer");
    if (v.is_number_unsigned()) {
      const auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) wrong("is out of range");
    } else {
      const auto i = v.get<std::int64_t>();
      if (i < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
          (std::is_signed_v<T> && i > static_cast<std::int64_t>(std::numeric_limits<T>::max())))
        wrong("is out of range");
    }
    out = v.get<T>();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) wrong("must be a number");
    out = v.get<T>();
    if (!std::isfinite(out)) wrong("must be finite");
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    if (!v.is_array()) wrong("must be a list of strings");
    for (const json& e : v)
      if (!e.is_string()) wrong("must be a list of strings");
    out = v.get<T>();
  } else {
    static_assert(std::is_same_v<T, std::string>);
    if (!v.is_string()) wrong("must be a string");
    out = v.get<T>();
  }
}

// A JSON file gdn2 writes into a directory (config.json of a checkpoint, trace.json of a trace): its path and its
// object, once the file is found and its "format" key is `format`. `what` says which directory it belongs in.
struct Written {
  std::string file;
  json object;
};
inline Written parse_written(const std::string& dir, const char* name, const char* format, const char* what) {
  Written w{(std::filesystem::path(dir) / name).string(), {}};
  std::error_code ec;
  if (!std::filesystem::exists(w.file, ec))
    throw InputError(w.file + ": cannot open (is '" + dir + "' " + what + "?)");
  w.object = parse_object(w.file);
  std::string found;
  read(w.object, "", "format", found, w.file);
  if (found != format) throw InputError(w.file + ": key 'format' is not \"" + format + "\"");
  return w;
}

}  // namespace gdn2::model::json_file
