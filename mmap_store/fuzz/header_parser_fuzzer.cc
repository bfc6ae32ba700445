// libFuzzer target for the safetensors header parser: any input must either
// parse or raise stowage::Error; never crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "mmap_store/detail/header_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto header = stowage::mmap_store::detail::parse_safetensors_header(data, size, size, "fuzz");
    // Touch what a reader would use: every tensor must lie inside the data.
    for (const auto& t : header.tensors) {
      if (t.end > header.data_bytes || header.data_start + header.data_bytes != size)
        __builtin_trap();
    }
  } catch (const stowage::Error&) {
  }
  return 0;
}
