// Incremental decoding of generated ids, for streaming output.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace stowage::tokenizer {

// Turns a stream of generated ids into text as it comes: append() returns the
// text that the new id completes, holding back bytes of an unfinished UTF-8
// character (a trailing U+FFFD in the decode) and applying the decoder's
// leading-space rule (Metaspace / Strip) only at the start of the stream, so
// that the concatenation of everything returned, plus finish(), equals
// tokenizer.decode(all ids, skip_special_tokens).
//
// Not thread-safe (one stream, one caller); several decoders may share one
// Tokenizer from several threads.
class StreamingDecoder {
 public:
  StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens);

  std::string append(int32_t id);
  // What is still held back (as U+FFFD where incomplete); the stream ends.
  std::string finish();

 private:
  Tokenizer tokenizer_;  // a copy: shares the tables
  bool skip_special_tokens_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // ids_[prefix_offset_, read_offset_) are emitted context
  size_t read_offset_ = 0;    // ids_[read_offset_, ...) are not yet emitted
};

}  // namespace stowage::tokenizer
