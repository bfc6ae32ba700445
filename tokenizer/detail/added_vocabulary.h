// Added tokens (special and not): found in the text before the model runs,
// with `tokenizers`' rules for single_word, lstrip, rstrip and normalized.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace stowage::tokenizer::detail {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool normalized = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  // What is matched (and decoded): content, or for a normalized token the
  // normalizer's output for content.
  std::string pattern;
};

// A piece of text between added tokens, or one added token (token_id >= 0).
struct Segment {
  size_t begin;
  size_t end;
  int32_t token_id;  // -1: plain text
};

// Leftmost-longest matching of a set of patterns, then the added-token rules.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<const AddedToken*> tokens);

  bool empty() const { return tokens_.empty(); }
  // Splits text (valid UTF-8) into segments that cover it, as `tokenizers`'
  // AddedVocabulary::find_matches does.
  std::vector<Segment> split(std::string_view text) const;

 private:
  std::vector<const AddedToken*> tokens_;
  // First byte of a pattern -> tokens, longest pattern first.
  std::unordered_map<unsigned char, std::vector<const AddedToken*>> by_first_byte_;
};

}  // namespace stowage::tokenizer::detail
