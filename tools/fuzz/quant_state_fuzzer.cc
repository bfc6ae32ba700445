// libFuzzer target for the bitsandbytes 4-bit quant-state JSON parser
// (quant/weight_layout.h): any text must parse or raise stowage::Error; never
// crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "quant/weight_layout.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto state = stowage::quant::parse_quant_state_json(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.weight");
    (void)state;
  } catch (const stowage::Error&) {
  }
  return 0;
}
