// A main for the libFuzzer targets without libFuzzer: runs
// LLVMFuzzerTestOneInput once on the empty input and once on every file
// under the folders or files given as arguments, then prints how many ran.
// Linked into a cc_test per target (tools/fuzz/BUILD), so CI builds every
// fuzz target with the library as it is and replays its seeds under the
// sanitizers of the configuration; the long runs stay in build_and_run.sh.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

int replay(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "replay: cannot read %s\n", file.c_str());
    return 1;
  }
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  LLVMFuzzerTestOneInput(nullptr, 0);
  int inputs = 1;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path root(argv[i]);
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(root)) {
      for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
      }
    } else {
      files.push_back(root);
    }
    if (files.empty()) {
      std::fprintf(stderr, "replay: expected inputs under %s, found none\n", argv[i]);
      return 1;
    }
    for (const auto& file : files) {
      if (replay(file) != 0) return 1;
      ++inputs;
    }
  }
  std::printf("replayed %d inputs without a crash\n", inputs);
  return 0;
}
