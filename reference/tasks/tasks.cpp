// gdn2 tasks — generators (layout and semantics in tasks.hpp).
#include "tasks/tasks.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace gdn2::tasks {

const char* task_name(TaskKind kind) {
  switch (kind) {
    case TaskKind::mqar: return "mqar";
    case TaskKind::overwrite: return "overwrite";
    case TaskKind::mk_niah: return "mk-niah";
    case TaskKind::s_niah: return "s-niah";
  }
  return "?";
}

TaskKind parse_task(const std::string& name) {
  for (TaskKind k : {TaskKind::mqar, TaskKind::overwrite, TaskKind::mk_niah, TaskKind::s_niah})
    if (name == task_name(k)) return k;
  throw InputError("unknown task '" + name + "' (expected mqar, overwrite, mk-niah or s-niah)");
}

namespace {

bool needle_task(TaskKind k) { return k == TaskKind::mk_niah || k == TaskKind::s_niah; }
int needles(const TaskConfig& c) { return c.kind == TaskKind::s_niah ? 1 : c.pairs; }
int first_key(const TaskConfig& c) { return 1 + (needle_task(c.kind) ? c.filler_vocab : 0); }

// Uniform integer in [0, n) from the project's own generator (std::uniform_int_distribution differs between
// standard libraries, and examples must be equal on every machine).
int below(Rng& rng, int n) { return std::min(n - 1, static_cast<int>(rng.uniform() * n)); }

// The first `count` entries of a uniformly shuffled [lo, hi): distinct draws without replacement.
std::vector<int> distinct(Rng& rng, int lo, int hi, int count) {
  std::vector<int> all(hi - lo);
  std::iota(all.begin(), all.end(), lo);
  for (int i = 0; i < count; ++i) std::swap(all[i], all[i + below(rng, hi - lo - i)]);
  all.resize(count);
  return all;
}

// `count` distinct gaps in [0, space) with p(gap) ∝ a·(gap+1)^(a−1) (Zoology's MQAR query placement), each draw
// renormalised over the gaps still free.
std::vector<int> power_law_gaps(Rng& rng, int space, int count, double a) {
  std::vector<double> p(space);
  for (int g = 0; g < space; ++g) p[g] = a * std::pow(g + 1.0, a - 1.0);
  std::vector<int> out;
  for (int i = 0; i < count; ++i) {
    const double total = std::accumulate(p.begin(), p.end(), 0.0);
    double u = rng.uniform() * total;
    int g = 0;
    while (g < space - 1 && (p[g] == 0 || u >= p[g])) {
      u -= p[g];
      ++g;
    }
    while (p[g] == 0) --g;  // rounding at the end of the list
    out.push_back(g);
    p[g] = 0;
  }
  return out;
}

Example empty_example(int T) {
  return {std::vector<int>(T, 0), std::vector<int>(T, -1), std::vector<Role>(T, Role::filler), std::vector<int>(T, -1)};
}

void put(Example& ex, int pos, int token, Role role) {
  ex.tokens[pos] = token;
  ex.roles[pos] = role;
}

}  // namespace

void validate(const TaskConfig& c) {
  auto fail = [](const std::string& m) { throw InputError(m); };
  if (c.vocab < 8 || c.vocab > kMaxVocab) fail("vocab: " + std::to_string(c.vocab) + " (expected 8 .. " + std::to_string(kMaxVocab) + ")");
  if (c.length < 4 || c.length > kMaxLength)
    fail("length: " + std::to_string(c.length) + " (expected 4 .. " + std::to_string(kMaxLength) + ")");
  if (c.pairs < 1 || c.pairs > c.length) fail("pairs: " + std::to_string(c.pairs) + " (expected 1 .. length)");
  if (c.filler_vocab > kMaxVocab)
    fail("filler-vocab: " + std::to_string(c.filler_vocab) + " (expected at most " + std::to_string(kMaxVocab) + ")");
  if (!(c.power_a > 0 && c.power_a <= 1)) fail("power-a: " + std::to_string(c.power_a) + " (expected 0 < a <= 1)");
  const int keys = c.vocab / 2 - first_key(c), values = c.vocab - c.vocab / 2;
  const int P = needles(c);
  if (keys < P)
    fail("vocab " + std::to_string(c.vocab) + " has " + std::to_string(std::max(keys, 0)) + " key tokens, fewer than the " +
         std::to_string(P) + " distinct keys asked for");
  switch (c.kind) {
    case TaskKind::mqar:
      if ((c.length - 2 * c.pairs) / 2 < c.pairs)
        fail("length " + std::to_string(c.length) + " cannot hold " + std::to_string(c.pairs) +
             " pairs and their queries (MQAR needs length >= 4 * pairs)");
      if (values < P) fail("vocab " + std::to_string(c.vocab) + " has fewer value tokens than pairs");
      break;
    case TaskKind::overwrite:
      if (c.rebinds < 0 || c.rebinds > c.pairs) fail("rebinds: " + std::to_string(c.rebinds) + " (expected 0 .. pairs)");
      if (c.length - 2 * (c.pairs + c.rebinds) < c.pairs)
        fail("length " + std::to_string(c.length) + " cannot hold the pairs, the rebinds and a query per key");
      if (values < c.pairs + c.rebinds) fail("vocab " + std::to_string(c.vocab) + " has fewer value tokens than pairs + rebinds");
      break;
    case TaskKind::mk_niah:
    case TaskKind::s_niah:
      if (c.filler_vocab < 1) fail("filler-vocab: " + std::to_string(c.filler_vocab) + " (expected at least 1)");
      if (c.queries < 1 || c.queries > P) fail("queries: " + std::to_string(c.queries) + " (expected 1 .. needles)");
      if ((c.length - c.queries) / 2 < P) fail("length " + std::to_string(c.length) + " cannot hold the needles and queries");
      if (values < P) fail("vocab " + std::to_string(c.vocab) + " has fewer value tokens than needles");
      break;
  }
}

void check_tokens(const TaskConfig& c, long long sequences, const std::string& what) {
  if (sequences * c.length > kMaxTokens)
    throw InputError(what + " sequences of " + std::to_string(c.length) + " tokens: " + std::to_string(sequences * c.length) +
                     " tokens at once, over the bound of " + std::to_string(kMaxTokens));
}

Example make_example(const TaskConfig& c, Rng& rng) {
  const int T = c.length, P = needles(c), key0 = first_key(c), V2 = c.vocab / 2;
  Example ex = empty_example(T);
  switch (c.kind) {
    case TaskKind::mqar: {
      // k1 v1 k2 v2 ... kP vP, then key i asked at 2P + 2·gap_i (Zoology: keys and values drawn without replacement).
      const std::vector<int> keys = distinct(rng, key0, V2, P), values = distinct(rng, V2, c.vocab, P);
      for (int i = 0; i < P; ++i) {
        put(ex, 2 * i, keys[i], Role::key);
        put(ex, 2 * i + 1, values[i], Role::value);
      }
      const std::vector<int> gaps = power_law_gaps(rng, (T - 2 * P) / 2, P, c.power_a);
      for (int i = 0; i < P; ++i) {
        const int pos = 2 * P + 2 * gaps[i];
        put(ex, pos, keys[i], Role::query);
        ex.targets[pos] = values[i];
        ex.source[pos] = 2 * i + 1;
      }
      break;
    }
    case TaskKind::overwrite: {
      // P pairs, then R of the keys bound again to fresh values; every key is asked once, after all bindings.
      const std::vector<int> keys = distinct(rng, key0, V2, P), values = distinct(rng, V2, c.vocab, P + c.rebinds);
      std::vector<int> newest(P), newest_pos(P);
      for (int i = 0; i < P; ++i) {
        put(ex, 2 * i, keys[i], Role::key);
        put(ex, 2 * i + 1, values[i], Role::value);
        newest[i] = values[i];
        newest_pos[i] = 2 * i + 1;
      }
      const std::vector<int> rebound = distinct(rng, 0, P, c.rebinds);
      for (int j = 0; j < c.rebinds; ++j) {
        const int pos = 2 * (P + j), i = rebound[j];
        put(ex, pos, keys[i], Role::key);
        put(ex, pos + 1, values[P + j], Role::value);
        newest[i] = values[P + j];
        newest_pos[i] = pos + 1;
      }
      const int start = 2 * (P + c.rebinds);
      std::vector<int> slots = distinct(rng, start, T, P), order = distinct(rng, 0, P, P);
      std::sort(slots.begin(), slots.end());
      for (int j = 0; j < P; ++j) {
        const int i = order[j];
        put(ex, slots[j], keys[i], Role::query);
        ex.targets[slots[j]] = newest[i];
        ex.source[slots[j]] = newest_pos[i];
      }
      break;
    }
    case TaskKind::mk_niah:
    case TaskKind::s_niah: {
      // A haystack of filler words with P key-value needles at random even offsets; the last Q tokens ask
      // for Q of the needles (the other needles are the distractors).
      for (int t = 0; t < T; ++t) ex.tokens[t] = 1 + below(rng, c.filler_vocab);
      const std::vector<int> keys = distinct(rng, key0, V2, P), values = distinct(rng, V2, c.vocab, P);
      std::vector<int> slots = distinct(rng, 0, (T - c.queries) / 2, P);
      std::vector<int> value_pos(P);
      for (int i = 0; i < P; ++i) {
        put(ex, 2 * slots[i], keys[i], Role::key);
        put(ex, 2 * slots[i] + 1, values[i], Role::value);
        value_pos[i] = 2 * slots[i] + 1;
      }
      const std::vector<int> asked = distinct(rng, 0, P, c.queries);
      for (int j = 0; j < c.queries; ++j) {
        const int pos = T - c.queries + j, i = asked[j];
        put(ex, pos, keys[i], Role::query);
        ex.targets[pos] = values[i];
        ex.source[pos] = value_pos[i];
      }
      break;
    }
  }
  return ex;
}

namespace {
// One generator per example, seeded from (seed, index): example i never depends on how many came before.
Example example_from(const TaskConfig& cfg, std::uint64_t seed, std::uint64_t index) {
  Rng rng(seed * 0x9E3779B97F4A7C15ull + index * 0xBF58476D1CE4E5B9ull + 1);
  return make_example(cfg, rng);
}
}  // namespace

std::vector<Example> make_batch(const TaskConfig& cfg, std::uint64_t seed, int count) {
  validate(cfg);
  std::vector<Example> out;
  out.reserve(count);
  for (int i = 0; i < count; ++i) out.push_back(example_from(cfg, seed, static_cast<std::uint64_t>(i)));
  return out;
}

Example example_at(const TaskConfig& cfg, std::uint64_t seed, int index) {
  validate(cfg);
  if (index < 0) throw InputError("example index must be >= 0, got " + std::to_string(index));
  return example_from(cfg, seed, static_cast<std::uint64_t>(index));
}

int bucket_of(int distance) {
  int b = 0;
  while ((2 << b) <= distance) ++b;
  return b;  // distances [2^b, 2^(b+1))
}

std::string bucket_label(int bucket) {
  return std::to_string(1 << bucket) + "-" + std::to_string((2 << bucket) - 1);
}

std::string describe(const Example& ex, const TaskConfig& cfg) {
  (void)cfg;
  std::string s;
  for (size_t t = 0; t < ex.tokens.size(); ++t) {
    if (t) s += ' ';
    const int tok = ex.tokens[t];
    switch (ex.roles[t]) {
      case Role::filler: s += tok == 0 ? "." : "f" + std::to_string(tok); break;
      case Role::key: s += "k" + std::to_string(tok); break;
      case Role::value: s += "v" + std::to_string(tok); break;
      case Role::query: s += "?k" + std::to_string(tok) + "->v" + std::to_string(ex.targets[t]); break;
    }
  }
  return s;
}

Example parse_sequence(const std::string& text, int vocab) {
  Example ex;
  std::string word;
  std::vector<std::string> words;
  for (char ch : text + " ") {
    if (ch == ' ' || ch == ',' || ch == '\t' || ch == '\n') {
      if (!word.empty()) words.push_back(word);
      word.clear();
    } else {
      word += ch;
    }
  }
  if (words.empty()) throw InputError("sequence: empty (example: k5 v40 k6 v41 . ?k5)");
  for (const std::string& w0 : words) {
    std::string w = w0.substr(0, w0.find("->"));
    Role role = Role::filler;
    int token = 0;
    if (w != ".") {
      std::string digits;
      if (w.rfind("?k", 0) == 0) role = Role::query, digits = w.substr(2);
      else if (w[0] == 'k') role = Role::key, digits = w.substr(1);
      else if (w[0] == 'v') role = Role::value, digits = w.substr(1);
      else if (w[0] == 'f') role = Role::filler, digits = w.substr(1);
      if (digits.empty() || digits.size() > 7 || digits.find_first_not_of("0123456789") != std::string::npos)
        throw InputError("sequence: cannot read '" + w0 + "' (expected kN, vN, ?kN, fN or .)");
      token = std::stoi(digits);
      if (token >= vocab) throw InputError("sequence: token " + std::to_string(token) + " in '" + w0 + "' is outside the vocabulary 0.." + std::to_string(vocab - 1));
    }
    int target = -1, source = -1;
    if (role == Role::query)
      for (int u = static_cast<int>(ex.tokens.size()) - 2; u >= 0; --u)
        if (ex.roles[u] == Role::key && ex.tokens[u] == token && ex.roles[u + 1] == Role::value) {
          target = ex.tokens[u + 1];
          source = u + 1;
          break;
        }
    ex.tokens.push_back(token);
    ex.roles.push_back(role);
    ex.targets.push_back(target);
    ex.source.push_back(source);
  }
  return ex;
}

}  // namespace gdn2::tasks
