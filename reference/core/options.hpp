// gdn2 reference — options shared by every form, and the tied-gate variants.
#pragma once

#include <optional>
#include <string>

#include "tensor.hpp"

namespace gdn2 {

// The five variants are one algorithm with tied gates (paper Sec. 3.1, Appendix A.5):
//   gdn2      b_t ∈ [0,1]^K (erase), w_t ∈ [0,1]^V (write), g_t ∈ [-inf,0]^K     (Eq. 10)
//   kda       b_t = β_t·1_K, w_t = β_t·1_V                                        (Eq. 7)
//   gdn       as kda, and g_t = g_t·1_K (one decay per head)
//   deltanet  as gdn with g = 0
//   linear    no erase (b = 0) and w = 1: gated linear attention S_t = Diag(α_t) S_{t-1} + k_t v_tᵀ
enum class Variant { gdn2, kda, gdn, deltanet, linear };

inline const char* variant_name(Variant v) {
  switch (v) {
    case Variant::gdn2: return "gdn2";
    case Variant::kda: return "kda";
    case Variant::gdn: return "gdn";
    case Variant::deltanet: return "deltanet";
    case Variant::linear: return "linear";
  }
  return "?";
}

inline Variant parse_variant(const std::string& s) {
  for (Variant v : {Variant::gdn2, Variant::kda, Variant::gdn, Variant::deltanet, Variant::linear})
    if (s == variant_name(v)) return v;
  throw InputError("unknown variant '" + s + "' (expected gdn2, kda, gdn, deltanet or linear)");
}

struct ForwardOptions {
  std::optional<double> scale;  // = K^-0.5   // o_t = S_tᵀ (scale · q_t)
  index_t chunk_size = 64;      // = 64       // C of the chunkwise WY form; any C >= 1 is exact
  bool allow_negative_eigen = false;  // = false  // b ∈ [0,2]^K instead of [0,1]^K (paper Sec. 3.1)
  int num_threads = 0;          // = 0 (all cores) // (sequence, value head) pairs run in parallel;
                                //                  results are bitwise independent of this number
};

}  // namespace gdn2
