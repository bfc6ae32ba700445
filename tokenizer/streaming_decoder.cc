#include "tokenizer/streaming_decoder.h"

namespace stowage::tokenizer {
namespace {

constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

bool ends_with_replacement(const std::string& s) {
  return s.size() >= kReplacementCharacter.size() &&
         s.compare(s.size() - kReplacementCharacter.size(), kReplacementCharacter.size(),
                   kReplacementCharacter) == 0;
}

}  // namespace

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_tokens_(skip_special_tokens) {}

// The window ids_[prefix_offset_, ...) starts with ids already emitted, so the
// decoder's start-of-text rules (Strip, Metaspace's first token) apply to text
// that both decodes share, and only the difference is new.
std::string StreamingDecoder::append(int32_t id) {
  ids_.push_back(id);
  std::vector<int32_t> context(ids_.begin() + prefix_offset_, ids_.begin() + read_offset_);
  std::vector<int32_t> window(ids_.begin() + prefix_offset_, ids_.end());
  std::string before = tokenizer_.decode(context, skip_special_tokens_);
  std::string after = tokenizer_.decode(window, skip_special_tokens_);
  if (after.size() <= before.size() || ends_with_replacement(after)) return "";
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return after.substr(before.size());
}

std::string StreamingDecoder::finish() {
  if (read_offset_ == ids_.size()) return "";
  std::vector<int32_t> context(ids_.begin() + prefix_offset_, ids_.begin() + read_offset_);
  std::vector<int32_t> window(ids_.begin() + prefix_offset_, ids_.end());
  std::string before = tokenizer_.decode(context, skip_special_tokens_);
  std::string after = tokenizer_.decode(window, skip_special_tokens_);
  prefix_offset_ = read_offset_ = ids_.size();
  return after.size() > before.size() ? after.substr(before.size()) : "";
}

}  // namespace stowage::tokenizer
