// Decoders: turn a sequence of token strings back into text, each step a
// transformation of the token list as in `tokenizers` (decode_chain), the
// result their concatenation.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/detail/pre_tokenizer.h"

namespace stowage::tokenizer::detail {

struct DecoderStep {
  enum class Kind { kByteLevel, kMetaspace, kReplace, kByteFallback, kFuse, kStrip };
  Kind kind = Kind::kByteLevel;
  std::string pattern;  // kReplace: what is replaced; kMetaspace: the replacement char
  std::string content;  // kReplace: by what; kStrip: the character stripped
  PrependScheme prepend_scheme = PrependScheme::kAlways;  // kMetaspace
  size_t start = 0;                                       // kStrip
  size_t stop = 0;                                        // kStrip
};

// has_decoder false: tokens joined with spaces, as `tokenizers` does without one.
std::string decode_tokens(const std::vector<DecoderStep>& steps, bool has_decoder,
                          std::vector<std::string> tokens);

}  // namespace stowage::tokenizer::detail
