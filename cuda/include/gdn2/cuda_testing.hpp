// gdn2::cuda::testing — hooks for the library's own tests; not part of the API a model uses.
#pragma once

namespace gdn2::cuda::testing {

// With on, every float32 workspace the kernels allocate from now on is filled with NaN first (all bits 1), so that a
// kernel reading a part of it that no kernel wrote fails the checks instead of passing on values an earlier call left
// in the memory pool. Off by default; test_cuda turns it on.
void poison_workspaces(bool on);

}  // namespace gdn2::cuda::testing
