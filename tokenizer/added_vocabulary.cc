#include "tokenizer/detail/added_vocabulary.h"

#include <algorithm>

#include "tokenizer/detail/unicode.h"

namespace stowage::tokenizer::detail {
namespace {

// The code point that ends at `end` (text[..end] is valid UTF-8).
char32_t code_point_before(std::string_view text, size_t end) {
  size_t begin = end - 1;
  while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
  return decode_utf8(text.substr(begin, end - begin), "text").cps[0];
}

char32_t code_point_at(std::string_view text, size_t begin) {
  size_t len = utf8_sequence_length(static_cast<unsigned char>(text[begin]));
  return decode_utf8(text.substr(begin, len), "text").cps[0];
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<const AddedToken*> tokens)
    : tokens_(std::move(tokens)) {
  for (const AddedToken* t : tokens_) {
    if (t->pattern.empty()) continue;
    by_first_byte_[static_cast<unsigned char>(t->pattern[0])].push_back(t);
  }
  for (auto& [byte, list] : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [](const AddedToken* a, const AddedToken* b) {
      return a->pattern.size() > b->pattern.size();
    });
  }
}

std::vector<Segment> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<Segment> out;
  size_t start_offset = 0;  // end of the last kept match
  size_t pos = 0;           // where the search for the next match resumes
  while (pos < text.size()) {
    auto it = by_first_byte_.find(static_cast<unsigned char>(text[pos]));
    const AddedToken* match = nullptr;
    if (it != by_first_byte_.end()) {
      for (const AddedToken* t : it->second) {
        if (text.compare(pos, t->pattern.size(), t->pattern) == 0) {
          match = t;
          break;
        }
      }
    }
    if (match == nullptr) {
      ++pos;
      continue;
    }
    size_t start = pos;
    size_t stop = pos + match->pattern.size();
    pos = stop;  // a discarded match is not searched again from inside
    if (match->single_word) {
      bool start_space = start == 0 || !is_word(code_point_before(text, start));
      bool stop_space = stop == text.size() || !is_word(code_point_at(text, stop));
      if (!start_space || !stop_space) continue;
    }
    if (match->lstrip) {
      size_t s = start;
      while (s > 0) {
        size_t prev = s - 1;
        while (prev > 0 && (static_cast<unsigned char>(text[prev]) & 0xC0) == 0x80) --prev;
        if (!is_whitespace(code_point_at(text, prev))) break;
        s = prev;
      }
      start = std::max(s, start_offset);
    }
    if (match->rstrip) {
      while (stop < text.size()) {
        size_t len = utf8_sequence_length(static_cast<unsigned char>(text[stop]));
        if (!is_whitespace(code_point_at(text, stop))) break;
        stop += len;
      }
      pos = stop;
    }
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, match->id});
    start_offset = stop;
  }
  if (start_offset < text.size()) out.push_back({start_offset, text.size(), -1});
  return out;
}

}  // namespace stowage::tokenizer::detail
