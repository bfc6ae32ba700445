// libFuzzer target for a model folder's config.json and
// generation_config.json (models/transformer_config.h): the input is split at
// the first NUL byte into the two texts. Any text must parse into a
// consistent config or raise stowage::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "models/transformer_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const size_t split = text.find('\0');
  const std::string config = text.substr(0, split);
  const std::string generation = split == std::string::npos ? "" : text.substr(split + 1);
  try {
    const auto c = stowage::models::parse_transformer_config(config, generation, "fuzz");
    // What the runner derives from a parsed config must not overflow or trap.
    if (c.head_dim > 0 && c.head_dim <= 4096) stowage::models::rope_inverse_frequencies(c);
  } catch (const stowage::Error&) {
  }
  return 0;
}
