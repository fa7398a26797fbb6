// gdn2 tests [cuda] — the CUDA kernels against the float64 reference (NUMERICS.md 1-13, 19). Exits 77 (reported as
// skipped by CTest) when no CUDA device can be used, e.g. on a machine without a GPU.
#define CATCH_CONFIG_RUNNER
#include "helpers.hpp"

#include "../cuda/src/reference_check.hpp"

using namespace gdn2;
using namespace gdn2::test;
using namespace gdn2::cuda;

namespace {

// NUMERICS.md 19 budgets: float32 storage with fp32 compute ≤ 1e-5; bf16 storage ≤ 5e-3 (outputs).
double budget(DType d) { return d == DType::bf16 ? 5e-3 : 1e-5; }
const char* name(DType d) { return d == DType::bf16 ? "bf16" : "f32"; }

void check_against_reference(const std::string& what, const Layer<double>& x, Form form = Form::chunk) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    const Outputs got = run_on_device(form, x, dtype);
    const Outputs ref = reference_outputs(x, dtype);
    REQUIRE(all_finite(got.o));
    REQUIRE(all_finite(got.ht));
    const std::string tag = what + (form == Form::chunk ? " chunk " : " recurrent ") + name(dtype);
    require_ratio(tag + " o", got.o, ref.o, budget(dtype));
    require_ratio(tag + " ht", got.ht, ref.ht, budget(dtype) / 5);  // the state is fp32 in both modes
  }
}

template <typename Gate>
Layer<double> layer(unsigned seed, index_t B, index_t T, index_t H, index_t HV, index_t K, index_t V, Gate gate,
                    bool h0 = true, index_t N = -1) {
  Rng rng(seed);
  return random_layer<double>(rng, B, T, H, HV, K, V, gate, h0, N);
}

}  // namespace

TEST_CASE("cuda: chunk and recurrent kernels on the NUMERICS.md cases", "[cuda]") {
  const auto mild = [](Rng& r) { return r.uniform(-0.05, 0); };
  for (index_t K : {64, 128}) {
    const std::string k = "K=" + std::to_string(K);
    check_against_reference(k + " mild", layer(1, 2, 200, 2, 2, K, 128, mild));
    check_against_reference(k + " mild", layer(1, 2, 200, 2, 2, K, 128, mild), Form::recurrent);
    for (index_t T : {1, 15, 63, 64, 65, 130})
      check_against_reference(k + " T=" + std::to_string(T), layer(3, 2, T, 2, 2, K, 64, mild));
    check_against_reference(k + " GVA HV=2H", layer(4, 2, 150, 2, 4, K, 96, mild));
  }
  check_against_reference("const g=-1.40", layer(5, 2, 200, 2, 2, 64, 128, [](Rng&) { return -1.40; }));
  check_against_reference("const g=-11.2", layer(5, 2, 200, 2, 2, 64, 128, [](Rng&) { return -11.2; }));
  check_against_reference("stress", layer(8, 2, 200, 2, 2, 64, 128, [](Rng& r) {
                            return r.uniform() < 0.5 ? -1000.0 : log_sigmoid(r.normal());
                          }));
  check_against_reference("g=0", layer(9, 2, 200, 2, 2, 64, 128, [](Rng&) { return 0.0; }));
  for (double reset : {-1e4, -1e6, -double(INFINITY)}) {
    auto x = layer(7, 2, 200, 2, 2, 64, 128, mild);
    for (index_t n = 0; n < 2; ++n)
      for (index_t h = 0; h < 2; ++h)
        for (index_t d = 0; d < 64; ++d) x.g.data[offset_bthd(n, 100, h, 200, 2, 64) + d] = reset;
    check_against_reference("reset g=" + std::to_string(reset), x);
    check_against_reference("reset g=" + std::to_string(reset), x, Form::recurrent);
  }
}

TEST_CASE("cuda: packed sequences, isolation and prefix causality (bitwise)", "[cuda]") {
  const auto gate = [](Rng& r) { return r.uniform(-0.2, 0); };
  auto x = layer(13, 1, 256, 2, 2, 64, 64, gate, true, 3);
  x.cu_seqlens = {0, 15, 100, 256};
  check_against_reference("packed [0,15,100,256]", x);
  check_against_reference("packed [0,15,100,256]", x, Form::recurrent);
  for (Form form : {Form::chunk, Form::recurrent}) {
    const Outputs a = run_on_device(form, x, DType::f32);
    auto y = x;  // change sequence 1 only
    for (index_t i = offset_row(15, 0, 2, 64); i < offset_row(100, 0, 2, 64); ++i) y.v.data[i] += 1.0;
    const Outputs b = run_on_device(form, y, DType::f32);
    for (index_t row : {index_t(0), index_t(14), index_t(100), index_t(255)})
      for (index_t i = offset_row(row, 0, 2, 64); i < offset_row(row + 1, 0, 2, 64); ++i) REQUIRE(a.o.data[i] == b.o.data[i]);
    // Prefix causality: perturb everything at t >= P; outputs before P must not change by a single bit.
    auto z = layer(11, 2, 130, 2, 2, 64, 64, gate);
    const Outputs base = run_on_device(form, z, DType::f32);
    for (index_t P : {1, 17, 64, 100}) {
      auto p = z;
      for (Tensor<double>* t : {&p.q, &p.k, &p.v, &p.g, &p.b, &p.w})
        for (index_t n = 0; n < 2; ++n)
          for (index_t i = offset_bthd(n, P, 0, 130, t->shape[2], t->shape[3]); i < offset_bthd(n, 130, 0, 130, t->shape[2], t->shape[3]); ++i)
            t->data[i] = (t == &p.g) ? -1.0 : (t == &p.b || t == &p.w) ? 0.5 : t->data[i] + 1.0;
      const Outputs q = run_on_device(form, p, DType::f32);
      bool same = true;
      for (index_t n = 0; n < 2; ++n)
        for (index_t i = offset_bthd(n, 0, 0, 130, 2, 64); i < offset_bthd(n, P, 0, 130, 2, 64); ++i)
          if (!(q.o.data[i] == base.o.data[i]) && same) {  // print the first mismatch: index, before, after
            same = false;
            std::printf("  first mismatch at %s: %.17g vs %.17g\n", index_str(q.o.shape, i).c_str(), base.o.data[i], q.o.data[i]);
          }
      std::printf("  [measured] %s P=%ld: outputs before P bitwise unchanged: %d\n", form == Form::chunk ? "chunk" : "recurrent", long(P), same);
      REQUIRE(same);
    }
  }
}

TEST_CASE("cuda: a decode step updates the state in place", "[cuda]") {
  auto x = layer(21, 16, 1, 4, 4, 128, 128, [](Rng& r) { return r.uniform(-0.2, 0); });
  for (DType dtype : {DType::f32, DType::bf16}) {
    DeviceLayer d = to_device(x, dtype);
    launch(Form::recurrent, d, 0, true);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    const Outputs ref = reference_outputs(x, dtype);
    require_ratio(std::string("decode in place ") + name(dtype) + " state", download(d.h0, ref.ht.shape, DType::f32), ref.ht, 1e-6);
    require_ratio(std::string("decode in place ") + name(dtype) + " o", download(d.o, x.v.shape, dtype), ref.o, budget(dtype));
  }
}

TEST_CASE("cuda: small packed case for compute-sanitizer memcheck", "[cuda][sanitizer]") {
  // Run under `compute-sanitizer --tool memcheck build/tests/test_cuda '[sanitizer]'`: ragged chunks, packed
  // sequences of lengths 1, 70 and 59, grouped value heads, both kernels and both dtypes.
  auto x = layer(31, 1, 130, 1, 2, 64, 64, [](Rng& r) { return r.uniform(-0.3, 0); }, true, 3);
  x.cu_seqlens = {0, 1, 71, 130};
  check_against_reference("sanitizer case", x);
  check_against_reference("sanitizer case", x, Form::recurrent);
}

int main(int argc, char** argv) {
  std::string why;
  if (!device_available(&why)) {
    std::printf("SKIPPED: no usable CUDA device (%s)\n", why.c_str());
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
