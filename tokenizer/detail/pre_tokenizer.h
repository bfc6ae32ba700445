// Pre-tokenizers: split a normalized piece of text into the words the BPE
// model sees. The split patterns of the supported families are hand-written
// linear-time scanners, each equivalent to one regex that tokenizer.json files
// carry (the regex is matched exactly as a string when the file is loaded).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace stowage::tokenizer::detail {

enum class SplitPattern {
  kLlama3,  // (?i:'s|'t|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|...
  kQwen2,   // as kLlama3 with \p{N} (single digits)
  kGpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
};

// The pattern whose regex source is exactly `regex`, if it is one we scan.
bool split_pattern_from_regex(std::string_view regex, SplitPattern* pattern);

// Byte ranges [begin, end) of the matches of `pattern` over text, which must be
// valid UTF-8; matches cover the text with no gaps (every character matches).
std::vector<std::pair<size_t, size_t>> scan_matches(SplitPattern pattern, std::string_view text);

enum class PrependScheme { kAlways, kFirst, kNever };

struct PreTokenizerStep {
  enum class Kind { kSplit, kByteLevel, kDigits, kMetaspace };
  Kind kind = Kind::kSplit;
  SplitPattern pattern = SplitPattern::kGpt2;  // kSplit
  bool add_prefix_space = false;               // kByteLevel
  bool use_regex = false;                      // kByteLevel
  bool individual_digits = false;              // kDigits
  std::string replacement;                     // kMetaspace (one character, UTF-8)
  PrependScheme prepend_scheme = PrependScheme::kAlways;
  bool split = true;  // kMetaspace
};

// A piece of text between pre-tokenizer steps; at_start is true when it begins
// at offset 0 of the original input (Metaspace's "first" scheme asks).
struct Piece {
  std::string text;
  bool at_start = false;
};

// Runs the steps in order over one piece and returns the words.
std::vector<Piece> pre_tokenize(const std::vector<PreTokenizerStep>& steps, Piece piece);

// GPT-2's byte-to-character table: the character each byte is written as.
const std::string& byte_level_char(unsigned char byte);

}  // namespace stowage::tokenizer::detail
