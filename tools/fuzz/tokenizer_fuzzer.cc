// libFuzzer target for tokenizer.json (tokenizer/tokenizer.h's
// Tokenizer::from_json): any text must give a tokenizer or raise
// stowage::Error; a tokenizer that loads must encode and decode a fixed text
// without crashing.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto tok = stowage::tokenizer::Tokenizer::from_json(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz/tokenizer.json");
    const auto ids = tok.encode("Hello, wörld! 123 \t\n<s>", true);
    (void)tok.decode(ids, true);
  } catch (const stowage::Error&) {
  }
  return 0;
}
