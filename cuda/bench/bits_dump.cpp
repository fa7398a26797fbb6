// gdn2-cuda-bits — one FNV-1a 64-bit hash per output tensor of the public host API on fixed seeded inputs, one line
// each, for comparing two builds of the library bit for bit (the same program linked against each; the API header is
// the same). Covers the test cases' shapes: K = 64 and 128, grouped value heads, odd T, packed sequences, a g = −inf
// reset, every state-pass slice width (16, 32 and 64 columns), decode, and inputs one element off 16-byte alignment;
// each with float32 and bf16 storage, through chunk_forward (with and without SavedForBackward), recurrent_forward
// and chunk_backward (recomputing the forward, and with the kept workspace).
//   gdn2-cuda-bits OUT.txt      (exit 77 without a usable CUDA device)
#include <cmath>
#include <cstdio>
#include <fstream>

#include "reference_check.hpp"

using namespace gdn2;
using namespace gdn2::cuda;

namespace {

double log_sigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }

uint64_t fnv1a(const void* data, size_t bytes) {
  uint64_t h = 1469598103934665603ull;
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// The raw bytes on the device (outputs in the storage dtype, states and dg in float32).
uint64_t device_hash(const DeviceBuffer& buf) {
  std::vector<unsigned char> host(buf.bytes);
  if (buf.bytes && cudaMemcpy(host.data(), buf.ptr, buf.bytes, cudaMemcpyDeviceToHost) != cudaSuccess)
    throw Error("cudaMemcpy failed");
  return fnv1a(host.data(), host.size());
}

void sync() {
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) throw Error(std::string("kernel failed: ") + cudaGetErrorString(err));
}

struct Writer {
  std::ofstream out;
  void line(const std::string& what, const std::string& tensor, uint64_t h) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
    out << what << " " << tensor << " " << hex << "\n";
  }
};

// Copies of a device layer's inputs that start one element past a 16-byte boundary.
struct Shifted {
  std::vector<DeviceBuffer> keep;
  const void* at(const DeviceBuffer& in, size_t size) {
    keep.emplace_back(in.bytes + 16);
    char* p = static_cast<char*>(keep.back().ptr) + size;
    if (cudaMemcpy(p, in.ptr, in.bytes, cudaMemcpyDeviceToDevice) != cudaSuccess) throw Error("cudaMemcpy failed");
    return p;
  }
};

void dump_case(Writer& w, const std::string& name, const Layer<double>& x, bool misaligned, bool recurrent) {
  Rng rng(1234);
  const index_t N = x.cu_seqlens.empty() ? x.q.shape[0] : index_t(x.cu_seqlens.size()) - 1;
  Tensor<double> dO(x.v.shape), dht({N, x.v.shape[2], x.k.shape[3], x.v.shape[3]});
  for (auto& e : dO.data) e = rng.normal();
  for (auto& e : dht.data) e = rng.normal();
  for (DType dtype : {DType::f32, DType::bf16}) {
    const std::string tag = name + (dtype == DType::bf16 ? " bf16" : " f32");
    DeviceLayer d = to_device(x, dtype);
    const size_t e = dtype == DType::bf16 ? 2 : 4;
    Shifted s;
    const void *q = d.q.ptr, *k = d.k.ptr, *v = d.v.ptr, *b = d.b.ptr, *wt = d.w.ptr;
    const float* g = static_cast<const float*>(d.g.ptr);
    if (misaligned) {
      q = s.at(d.q, e), k = s.at(d.k, e), v = s.at(d.v, e), b = s.at(d.b, e), wt = s.at(d.w, e);
      g = static_cast<const float*>(s.at(d.g, 4));
    }
    const auto* h0 = static_cast<const float*>(d.h0.ptr);
    const auto* cu = static_cast<const int64_t*>(d.cu.ptr);
    auto* ht = static_cast<float*>(d.ht.ptr);
    chunk_forward(d.o.ptr, ht, q, k, v, g, b, wt, h0, cu, d.p);
    sync();
    w.line(tag, "chunk.o", device_hash(d.o)), w.line(tag, "chunk.ht", device_hash(d.ht));
    {
      SavedForBackward saved;
      cudaMemset(d.o.ptr, 0, d.o.bytes), cudaMemset(d.ht.ptr, 0, d.ht.bytes);
      chunk_forward(d.o.ptr, ht, q, k, v, g, b, wt, h0, cu, d.p, 0, &saved);
      sync();
      w.line(tag, "chunk_saved.o", device_hash(d.o)), w.line(tag, "chunk_saved.ht", device_hash(d.ht));
      for (const bool kept : {false, true}) {
        DeviceGradients gr = gradients_to_device(d, dO, dht);
        chunk_backward(gr.dq.ptr, gr.dk.ptr, gr.dv.ptr, static_cast<float*>(gr.dg.ptr), gr.db.ptr, gr.dw.ptr,
                       static_cast<float*>(gr.dh0.ptr), q, k, v, g, b, wt, h0, cu, gr.do_.ptr,
                       static_cast<const float*>(gr.dht.ptr), d.p, 0, kept ? &saved : nullptr);
        sync();
        const std::string what = kept ? "backward_kept." : "backward.";
        w.line(tag, what + "dq", device_hash(gr.dq)), w.line(tag, what + "dk", device_hash(gr.dk));
        w.line(tag, what + "dv", device_hash(gr.dv)), w.line(tag, what + "dg", device_hash(gr.dg));
        w.line(tag, what + "db", device_hash(gr.db)), w.line(tag, what + "dw", device_hash(gr.dw));
        w.line(tag, what + "dh0", device_hash(gr.dh0));
      }
    }
    if (recurrent) {
      cudaMemset(d.o.ptr, 0, d.o.bytes), cudaMemset(d.ht.ptr, 0, d.ht.bytes);
      recurrent_forward(d.o.ptr, ht, d.q.ptr, d.k.ptr, d.v.ptr, static_cast<const float*>(d.g.ptr), d.b.ptr, d.w.ptr,
                        h0, cu, d.p);
      sync();
      w.line(tag, "recurrent.o", device_hash(d.o)), w.line(tag, "recurrent.ht", device_hash(d.ht));
    }
  }
}

template <typename Gate>
Layer<double> layer(unsigned seed, index_t B, index_t T, index_t H, index_t HV, index_t K, index_t V, Gate gate,
                    bool h0 = true, index_t N = -1) {
  Rng rng(seed);
  return random_layer<double>(rng, B, T, H, HV, K, V, gate, h0, N);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: gdn2-cuda-bits OUT.txt\n");
    return 2;
  }
  std::string why;
  if (!device_available(&why)) {
    std::printf("SKIPPED: no usable CUDA device (%s)\n", why.c_str());
    return 77;
  }
  Writer w;
  w.out.open(argv[1]);
  if (!w.out) {
    std::fprintf(stderr, "gdn2-cuda-bits: cannot write %s\n", argv[1]);
    return 2;
  }
  const auto mild = [](Rng& r) { return r.uniform(-0.05, 0); };
  const auto gate = [](Rng& r) { return r.uniform(-0.2, 0); };
  for (index_t K : {64, 128}) {
    const std::string k = "K=" + std::to_string(K);
    dump_case(w, k + "_mild", layer(1, 2, 200, 2, 2, K, 128, mild), false, true);
    dump_case(w, k + "_T=65", layer(3, 2, 65, 2, 2, K, 64, mild), false, true);
    dump_case(w, k + "_T=1", layer(3, 2, 1, 2, 2, K, 64, mild), false, true);
    dump_case(w, k + "_GVA", layer(4, 2, 150, 2, 4, K, 96, mild), false, true);
  }
  dump_case(w, "no_h0", layer(6, 2, 100, 2, 2, 64, 64, mild, false), false, true);
  dump_case(w, "stress", layer(8, 2, 200, 2, 2, 64, 128, [](Rng& r) {
              return r.uniform() < 0.5 ? -1000.0 : log_sigmoid(r.normal());
            }), false, true);
  {
    auto x = layer(13, 1, 256, 2, 2, 64, 64, gate, true, 3);
    x.cu_seqlens = {0, 15, 100, 256};
    dump_case(w, "packed", x, false, true);
  }
  {
    auto x = layer(31, 1, 130, 1, 2, 64, 64, [](Rng& r) { return r.uniform(-0.3, 0); }, true, 3);
    x.cu_seqlens = {0, 1, 71, 130};
    dump_case(w, "packed_GVA", x, false, true);
  }
  {
    auto x = layer(45, 2, 200, 2, 2, 128, 128, gate);
    for (index_t n = 0; n < 2; ++n)
      for (index_t h = 0; h < 2; ++h)
        for (index_t d = 0; d < 128; ++d) x.g.data[offset_bthd(n, 100, h, 200, 2, 128) + d] = -double(INFINITY);
    dump_case(w, "reset_g=-inf", x, false, true);
  }
  dump_case(w, "pass64", layer(46, 5, 130, 16, 16, 128, 128, gate), false, false);
  dump_case(w, "pass64_K=64_HV=22", layer(14, 3, 150, 11, 22, 64, 128, mild), false, false);
  dump_case(w, "pass32_K=128_HV=12", layer(15, 3, 100, 6, 12, 128, 128, mild), false, false);
  dump_case(w, "decode_B=70", layer(22, 70, 1, 2, 2, 128, 128, gate), false, true);
  dump_case(w, "decode_B=16", layer(21, 16, 1, 4, 4, 128, 128, gate), false, true);
  dump_case(w, "misaligned_K=128", layer(47, 2, 150, 2, 2, 128, 128, gate), true, false);
  dump_case(w, "misaligned_K=64_GVA", layer(48, 2, 130, 2, 4, 64, 64, gate), true, false);
  std::printf("gdn2-cuda-bits: wrote %s\n", argv[1]);
  return 0;
}
