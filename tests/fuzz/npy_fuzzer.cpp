// gdn2 fuzz target (libFuzzer, docs/numerics.md 23): the .npy reader and the command line's input path.
//
// The first byte picks a file of a small valid input directory (q, k, v, g, b, w, h0, cu_seqlens); the rest of
// the input replaces that file. The reader and load_layer_inputs + forward must either succeed or throw an
// InputError — never crash, hang, leak or trip a sanitizer. Run by scripts/fuzz_npy.sh.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/random_inputs.hpp"
#include "io/npy.hpp"
#include "tools/inputs.hpp"

namespace fs = std::filesystem;
using namespace gdn2;

namespace {

const fs::path& base_dir() {
  static const fs::path dir = [] {
    const fs::path d = fs::temp_directory_path() / ("gdn2_fuzz_" + std::to_string(::getpid()));
    fs::create_directories(d);
    Rng rng(1);
    const auto x = random_layer<double>(rng, 1, 9, 1, 2, 4, 3, [](Rng& r) { return r.uniform(-1, 0); }, true);
    const std::pair<const char*, const Tensor<double>*> files[] = {{"q", &x.q}, {"k", &x.k}, {"v", &x.v}, {"g", &x.g},
                                                                   {"b", &x.b}, {"w", &x.w}, {"h0", &x.h0}};
    for (const auto& [name, t] : files) std::ofstream(d / (std::string(name) + ".npy"), std::ios::binary) << io::encode_npy(*t);
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, size_t size) {
  try {  // the reader alone
    const io::NpyArray a = io::parse_npy(data, size, "fuzz.npy");
    if (a.dtype[0] == 'f') io::to_tensor<double>(a, "fuzz.npy");
    else io::to_index_vector(a, "fuzz.npy");
  } catch (const InputError&) {
  }
  if (size == 0) return 0;
  static const char* names[] = {"q", "k", "v", "g", "b", "w", "h0", "cu_seqlens"};
  const fs::path dir = base_dir();
  const std::string name = names[data[0] % 8];
  const std::string saved_path = (dir / (name + ".npy")).string();
  std::string saved;
  if (fs::exists(saved_path)) saved.assign(std::istreambuf_iterator<char>(std::ifstream(saved_path, std::ios::binary).rdbuf()), {});
  std::ofstream(saved_path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data + 1), std::streamsize(size - 1));
  try {  // the command line's path: load, validate, run
    tools::LayerOptions opt;
    opt.in_dir = dir.string();
    opt.threads = 1;
    const auto in = tools::load_layer_inputs<double>(opt);
    if (in.layer.q.numel() + in.layer.v.numel() < (1 << 16)) {  // keep each run short; larger inputs only exercise the reader
      Tensor<double> o, ht;
      forward(Form::chunk, o, ht, in.layer, tools::forward_options(opt));
    }
  } catch (const InputError&) {
  }
  if (saved.empty()) fs::remove(saved_path);
  else std::ofstream(saved_path, std::ios::binary | std::ios::trunc) << saved;
  return 0;
}
