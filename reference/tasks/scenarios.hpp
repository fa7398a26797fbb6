// gdn2 tasks — scripted gate scenarios: hand-set gates on one-hot (orthogonal) keys, no training, one idea each.
//
// Every token carries q = k, so o_t = S_tᵀ k_t is "what the memory now says about this key" (scale = 1).
// Keys are rows of S (one-hot e_i), values are columns; value vectors A, B, C, ... are fixed random unit vectors.
#pragma once

#include <string>
#include <vector>

#include "core/forward.hpp"
#include "tasks/tasks.hpp"

namespace gdn2::tasks {

struct Scenario {
  std::string name, title;
  std::string story;                 // two or three sentences: what to watch, and why it happens (Eq. 9)
  Layer<double> layer;               // B = 1, H = HV = 1: q, k, g, b [1,T,1,K]; v, w [1,T,1,V]
  double scale = 1.0;                // o_t = S_tᵀ (scale q_t)
  std::vector<std::string> labels;   // per token, e.g. "write k0 <- A", "query k0"
  std::vector<Role> roles;           // key (a write), query (a pure read), filler (gates only)
  std::vector<int> source;           // at a query: the position of the write whose value is the right answer
  std::vector<std::string> value_names;  // "A", "B", ...: the candidate values a query is judged against
  Mat<double> values;                // [n, V]: those candidates
};

std::vector<std::string> scenario_names();
std::string scenario_help();  // one line per scenario: name, what it shows

// The scenario with gates as scripted (variant gdn2), or tied as `variant` ties them (Appendix A.5):
//   kda:      b_t = w_t = β_t·1 with β_t = mean of the scripted (b_t, w_t) channels
//   gdn:      as kda, and g_t = its mean over channels;   deltanet: as kda with g = 0
//   linear:   b = 0, w = 1 (no erase, full write; decay kept)
Scenario make_scenario(const std::string& name, Variant variant = Variant::gdn2, int K = 8, int V = 8);

}  // namespace gdn2::tasks
