// gdn2-cuda-decode-controls — what bounds the decode step: recurrent_forward at each slice width beside two controls
// timed the same way, an empty kernel (launch and timing overhead) and a plain copy of the state's bytes (read once,
// written once, 16-byte accesses: what the memory system gives). bf16, H = 16, K = V = 128, T = 1, B = 1, 16, 64, 256;
// CUDA events, L2 flushed (a 256 MB memset) before each run, median of 101. Every slice width is checked against the
// width recurrent_forward chooses (max |difference| of o and ht; widths differ only in which thread owns a column).
// It includes the kernel's source to reach the slice widths, which the library's API does not expose.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "../src/recurrent_forward.cu"

using namespace gdn2::cuda;
using namespace gdn2::cuda::detail;
using bf16 = __nv_bfloat16;

namespace controls {  // (named: an anonymous namespace here would be ambiguous with the kernel file's in the stub)

__global__ void empty_kernel() {}
__global__ void copy_state(float4* out, const float4* in, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) out[i] = in[i];
}

template <typename T>
T* device_copy(const std::vector<T>& host) {
  T* p = nullptr;
  GDN2_CUDA_CHECK(cudaMalloc(&p, host.size() * sizeof(T)));
  GDN2_CUDA_CHECK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

}  // namespace controls

using namespace controls;

int main(int argc, char**) {
  if (argc > 1) {
    std::printf("usage: gdn2-cuda-decode-controls (no options; an H100-class GPU, about 1 GB of device memory)\n");
    return 2;
  }
  std::string why;
  if (!device_available(&why)) {
    std::printf("SKIPPED: no usable CUDA device (%s)\n", why.c_str());
    return 77;
  }
  const int H = 16, K = 128, V = 128;
  void* flush = nullptr;
  GDN2_CUDA_CHECK(cudaMalloc(&flush, size_t(256) << 20));
  std::printf("decode step and controls, bf16, H = 16, K = V = 128; CUDA events, L2 flushed, median of 101\n");
  std::printf("%-5s %-30s %10s %9s %14s\n", "B", "what", "us", "TB/s", "max |diff|");
  for (int B : {1, 16, 64, 256}) {
    Problem p;
    p.B = B, p.T = 1, p.H = H, p.HV = H, p.K = K, p.V = V, p.N = B, p.dtype = DType::bf16;
    const size_t tok = size_t(B) * H * K, st = size_t(B) * H * K * V;
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<bf16> hq(tok), hk(tok), hv(tok), hb(tok), hw(tok);
    std::vector<float> hg(tok), hs(st);
    for (size_t i = 0; i < tok; ++i) {
      hq[i] = __float2bfloat16(u(rng)), hk[i] = __float2bfloat16(u(rng) * 0.088f), hv[i] = __float2bfloat16(u(rng));
      hb[i] = __float2bfloat16(0.5f + 0.5f * u(rng)), hw[i] = __float2bfloat16(0.5f + 0.5f * u(rng));
      hg[i] = -0.1f + 0.1f * u(rng);
    }
    for (auto& x : hs) x = u(rng);
    bf16 *q = device_copy(hq), *k = device_copy(hk), *v = device_copy(hv), *b = device_copy(hb), *w = device_copy(hw);
    bf16* o = device_copy(std::vector<bf16>(tok));
    float *g = device_copy(hg), *h0 = device_copy(hs), *ht = device_copy(std::vector<float>(st));
    const std::vector<std::pair<const char*, std::function<void()>>> cases = {
        {"recurrent_forward (its choice)", [&] { recurrent_forward_run(o, ht, q, k, v, g, b, w, h0, nullptr, p, 0); }},
        {"  32-column slices", [&] { launch_recurrent<128, 1, bf16>(o, ht, q, k, v, g, b, w, h0, nullptr, p, 0); }},
        {"  64-column slices", [&] { launch_recurrent<128, 2, bf16>(o, ht, q, k, v, g, b, w, h0, nullptr, p, 0); }},
        {"  128-column slices", [&] { launch_recurrent<128, 4, bf16>(o, ht, q, k, v, g, b, w, h0, nullptr, p, 0); }},
        {"control: empty kernel", [&] { empty_kernel<<<64, 128>>>(); }},
        {"control: copy of the state", [&] { copy_state<<<132, 1024>>>((float4*)ht, (const float4*)h0, st / 4); }},
    };
    std::vector<bf16> ref_o(tok), got_o(tok);
    std::vector<float> ref_s(st), got_s(st);
    cudaEvent_t e0, e1;
    GDN2_CUDA_CHECK(cudaEventCreate(&e0));
    GDN2_CUDA_CHECK(cudaEventCreate(&e1));
    for (size_t c = 0; c < cases.size(); ++c) {
      const bool control = c >= 4;
      cases[c].second();
      GDN2_CUDA_CHECK(cudaDeviceSynchronize());
      double diff = 0;
      if (!control) {
        GDN2_CUDA_CHECK(cudaMemcpy(got_o.data(), o, tok * 2, cudaMemcpyDeviceToHost));
        GDN2_CUDA_CHECK(cudaMemcpy(got_s.data(), ht, st * 4, cudaMemcpyDeviceToHost));
        if (c == 0) ref_o = got_o, ref_s = got_s;
        for (size_t i = 0; i < tok; ++i)
          diff = std::max(diff, double(std::fabs(__bfloat162float(got_o[i]) - __bfloat162float(ref_o[i]))));
        for (size_t i = 0; i < st; ++i) diff = std::max(diff, double(std::fabs(got_s[i] - ref_s[i])));
      }
      std::vector<float> ms;
      for (int r = 0; r < 101; ++r) {
        GDN2_CUDA_CHECK(cudaMemsetAsync(flush, r, size_t(256) << 20));
        GDN2_CUDA_CHECK(cudaEventRecord(e0));
        cases[c].second();
        GDN2_CUDA_CHECK(cudaEventRecord(e1));
        GDN2_CUDA_CHECK(cudaEventSynchronize(e1));
        float t = 0;
        GDN2_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
        ms.push_back(t);
      }
      std::sort(ms.begin(), ms.end());
      const double us = ms[ms.size() / 2] * 1e3, state_bytes = 2.0 * st * 4;  // TB/s of state traffic
      if (control) std::printf("%-5d %-30s %10.2f %9.3f %14s\n", B, cases[c].first, us, state_bytes / us * 1e-6, "-");
      else std::printf("%-5d %-30s %10.2f %9.3f %14.3g\n", B, cases[c].first, us, state_bytes / us * 1e-6, diff);
    }
    for (void* ptr : {(void*)q, (void*)k, (void*)v, (void*)b, (void*)w, (void*)o, (void*)g, (void*)h0, (void*)ht})
      GDN2_CUDA_CHECK(cudaFree(ptr));
    GDN2_CUDA_CHECK(cudaEventDestroy(e0));
    GDN2_CUDA_CHECK(cudaEventDestroy(e1));
  }
  GDN2_CUDA_CHECK(cudaFree(flush));
  return 0;
}
