// gdn2 tests [cuda] — the CUDA host API refuses what its kernels do not support, with a message that names the
// problem, before it touches the device: these run on every machine, with or without a GPU.
#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include "gdn2/cuda.hpp"

using gdn2::cuda::Problem;

namespace {

Problem supported() {
  Problem p;
  p.B = 2, p.T = 130, p.H = 2, p.HV = 4, p.K = 64, p.V = 64, p.N = 2;
  return p;
}

// The message of the gdn2::cuda::Error thrown by f, or "" when nothing is thrown.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const gdn2::cuda::Error& e) {
    std::printf("  [measured] refused: %s\n", e.what());
    return e.what();
  }
  return "";
}

// Non-null placeholders: the checks run before any pointer is used.
char dummy[16];
void* const any = dummy;
float* const anyf = reinterpret_cast<float*>(dummy);

std::string backward_error(const Problem& p, void* dq = any, const gdn2::cuda::SavedForBackward* saved = nullptr) {
  return error_of([&] {
    gdn2::cuda::chunk_backward(dq, any, any, anyf, any, any, anyf, any, any, any, anyf, any, any, nullptr, nullptr, any,
                               nullptr, p, 0, saved);
  });
}

}  // namespace

TEST_CASE("cuda api: unsupported problems are refused with a message naming them", "[cuda]") {
  Problem k96 = supported();
  k96.K = 96;
  const std::string fwd = error_of([&] {
    gdn2::cuda::chunk_forward(any, anyf, any, any, any, anyf, any, any, nullptr, nullptr, k96);
  });
  INFO(fwd);
  CHECK(fwd.find("chunk_forward: K = 96 is not supported") != std::string::npos);

  Problem v48 = supported();
  v48.V = 48;
  const std::string v = backward_error(v48);
  INFO(v);
  CHECK(v.find("chunk_backward: V = 48 must be a positive multiple of 32") != std::string::npos);

  Problem hv3 = supported();
  hv3.HV = 3;
  CHECK(backward_error(hv3).find("HV must be a positive multiple of H") != std::string::npos);

  // The gates g, b per key head (HG = H, or 0) or per value head (HG = HV = 4); nothing in between.
  Problem hg3 = supported();
  hg3.HG = 3;
  const std::string hg = error_of([&] {
    gdn2::cuda::recurrent_forward(any, anyf, any, any, any, anyf, any, any, nullptr, nullptr, hg3);
  });
  INFO(hg);
  CHECK(hg.find("recurrent_forward: HG = 3: g and b are taken per key head (HG = H) or per value head (HG = HV)") !=
        std::string::npos);
  hg3.HG = 1;
  CHECK(backward_error(hg3).find("chunk_backward: HG = 1:") != std::string::npos);

  CHECK(backward_error(supported(), nullptr).find("every gradient pointer is required") != std::string::npos);
}

TEST_CASE("cuda api: a kept forward workspace is refused for another problem", "[cuda]") {
  gdn2::cuda::SavedForBackward saved;
  saved.workspace_ = dummy;  // pretend chunk_forward filled it, for a problem with T = 130
  saved.problem_ = supported();
  Problem longer = supported();
  longer.T = 131;
  Problem value_head_gates = supported();  // the same sizes, the gates per value head instead of per key head
  value_head_gates.HG = value_head_gates.HV;
  const std::string e = backward_error(longer, any, &saved), e_gates = backward_error(value_head_gates, any, &saved);
  saved.workspace_ = nullptr;  // nothing to free
  INFO(e);
  CHECK(e.find("the saved workspace was made by chunk_forward for a different problem") != std::string::npos);
  CHECK(e_gates.find("the saved workspace was made by chunk_forward for a different problem") != std::string::npos);
}
