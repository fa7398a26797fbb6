// gdn2 tasks — synthetic associative-recall sequences, deterministic by seed.
//
// Token layout shared by every task (so one model and one viewer read them all):
//   0                         filler / padding ("nothing to remember")
//   [1, 1 + filler_vocab)     haystack words of the needle tasks (empty for MQAR and overwrite)
//   [1 + filler_vocab, V/2)   keys
//   [V/2, V)                  values
// A query repeats a key; the model must predict that key's value *at the query position* (loss only there,
// the Zoology convention). These are token-level analogues of the recall benchmarks the paper reports, not the
// benchmarks themselves: MQAR follows Zoology (Arora et al. 2023); the needle tasks are small analogues of
// RULER's S-NIAH and MK-NIAH (Hsieh et al. 2024), with no natural-language haystack.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/random_inputs.hpp"

namespace gdn2::tasks {

enum class Role : int { filler = 0, key = 1, value = 2, query = 3 };

enum class TaskKind { mqar, overwrite, mk_niah, s_niah };
const char* task_name(TaskKind kind);
TaskKind parse_task(const std::string& name);  // throws InputError naming the choices

struct TaskConfig {
  TaskKind kind = TaskKind::mqar;  // = mqar      // which generator
  int vocab = 64;                  // = 64        // tokens 0..vocab-1 (layout above)
  int length = 64;                 // = 64        // tokens per sequence
  int pairs = 8;                   // = 8         // key-value pairs (needles for the needle tasks)
  double power_a = 0.01;           // = 0.01      // MQAR query gaps: p(gap) ∝ a·gap^(a−1) (Zoology's default)
  int rebinds = 2;                 // = 2         // overwrite: keys bound again to a new value
  int filler_vocab = 8;            // = 8         // needle tasks: distinct haystack words
  int queries = 1;                 // = 1         // needle tasks: needles asked about at the end
};

// Bounds on the sizes of a task, so that an absurd one is refused before anything is allocated: a vocabulary (and
// its haystack words) of at most kMaxVocab tokens, sequences of at most kMaxLength tokens, and at most kMaxTokens
// tokens generated at once (sequences x length; 4 ints each: 1 GiB).
constexpr int kMaxVocab = 1000000;
constexpr int kMaxLength = 1000000;
constexpr long long kMaxTokens = 1LL << 26;

// Throws InputError when the sequence cannot hold what the configuration asks for, or a size is over its bound.
void validate(const TaskConfig& cfg);
// Throws InputError when `sequences` sequences of cfg.length tokens exceed kMaxTokens; `what` names the count
// ("--count 100000").
void check_tokens(const TaskConfig& cfg, long long sequences, const std::string& what);

struct Example {
  std::vector<int> tokens;   // [length]
  std::vector<int> targets;  // [length]; the value to predict at a query position, -1 elsewhere
  std::vector<Role> roles;   // [length]
  std::vector<int> source;   // [length]; at a query: the position of the (newest) value it asks for, else -1
};

// One example from `rng` (advances it). Equal seeds give equal examples on every machine.
Example make_example(const TaskConfig& cfg, Rng& rng);

// A whole batch; example i of seed s is always the same sequence.
std::vector<Example> make_batch(const TaskConfig& cfg, std::uint64_t seed, int count);
// Example `index` of make_batch(cfg, seed, index + 1), generated alone.
Example example_at(const TaskConfig& cfg, std::uint64_t seed, int index);

// Distance query position − position of the value it asks for; bucket boundaries 1, 2, 4, 8, ... (bucket_of).
int bucket_of(int distance);
std::string bucket_label(int bucket);

// The example as text: one line of tokens with their roles (k12 v40 ... ?k12→v40), for docs and `gdn2 task`.
std::string describe(const Example& ex, const TaskConfig& cfg);

// Parses the text form of describe(): "k5 v40 k6 v41 . ?k5" (kN key, vN value, ?kN query, fN haystack word,
// . filler 0; an optional "->vM" after a query is ignored). A query's target is the value after the newest
// occurrence of its key (-1 when the key was never bound). Throws InputError naming the bad word.
Example parse_sequence(const std::string& text, int vocab);

}  // namespace gdn2::tasks
