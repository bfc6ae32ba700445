// Normalizers: the text transformations a tokenizer.json runs on each piece of
// input between added tokens, before pre-tokenization.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace stowage::tokenizer::detail {

struct NormalizerStep {
  enum class Kind { kNfc, kPrepend, kReplace };
  Kind kind = Kind::kNfc;
  std::string text;         // kPrepend: what is prepended; kReplace: the pattern
  std::string replacement;  // kReplace
};

// Runs the steps in order; an empty piece stays empty (Prepend adds nothing to it).
std::string normalize(const std::vector<NormalizerStep>& steps, std::string_view text);

// Replaces every occurrence of `pattern` (non-empty) in text.
std::string replace_all(std::string_view text, std::string_view pattern,
                        std::string_view replacement);

}  // namespace stowage::tokenizer::detail
