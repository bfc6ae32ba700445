// libFuzzer target for the two index files read from disk: a sharded
// checkpoint's model.safetensors.index.json (mmap_store/sharded_checkpoint.h)
// and an offload folder's index.json (mmap_store/offload_folder.h). The first
// input byte picks the parser, the rest is the file's text, written into a
// scratch folder that also holds a valid shard "a.safetensors" (tensor "t",
// F32 [2]) and an offload file "t.dat" (8 bytes), so entries can reach them.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "mmap_store/offload_folder.h"
#include "mmap_store/sharded_checkpoint.h"

namespace {

void write_file(const std::string& path, const std::string& bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
}

const std::string& scratch() {
  static const std::string folder = [] {
    // In memory where /dev/shm exists: every execution rewrites the index.
    std::string pattern = (::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    pattern += "/stowage_index_fuzz_XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) std::abort();
    const std::string dir = pattern;
    const std::string header = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    std::string shard(8, '\0');
    for (int i = 0; i < 8; ++i) shard[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    shard += header + std::string(8, '\0');
    write_file(dir + "/a.safetensors", shard);
    write_file(dir + "/t.dat", std::string(8, '\0'));
    return dir;
  }();
  return folder;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string& dir = scratch();
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    if (data[0] & 1) {
      write_file(dir + "/index.json", text);
      auto folder = stowage::mmap_store::OffloadFolder::open(dir);
      for (const auto& name : folder->names()) (void)folder->tensor(name);
    } else {
      write_file(dir + "/model.safetensors.index.json", text);
      auto ckpt =
          stowage::mmap_store::ShardedCheckpoint::open(dir + "/model.safetensors.index.json");
      for (const auto& name : ckpt->names()) (void)ckpt->tensor(name);
    }
  } catch (const stowage::Error&) {
  }
  return 0;
}
