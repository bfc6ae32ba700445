// UTF-8 and the Unicode properties the pre-tokenizers, added-token rules and
// normalizers need, from the generated tables (detail/unicode_tables.h).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace stowage::tokenizer::detail {

// A string decoded into code points, with each code point's byte offset in the
// UTF-8 text (offsets has one more entry: the text's length).
struct CodePoints {
  std::vector<char32_t> cps;
  std::vector<size_t> offsets;
};

// Decodes valid UTF-8. Throws InvalidInputError naming `what` and the byte
// offset when the text is not valid UTF-8.
CodePoints decode_utf8(std::string_view text, const char* what);

void append_utf8(char32_t cp, std::string* out);

// Length of the UTF-8 sequence that starts with this lead byte (1 for an
// invalid lead byte).
size_t utf8_sequence_length(unsigned char lead);

// Rust's String::from_utf8_lossy: each maximal ill-formed subsequence becomes
// one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// True when bytes end inside a UTF-8 sequence that more bytes could complete.
bool ends_with_incomplete_utf8(std::string_view bytes);

bool is_letter(char32_t cp);      // \p{L}
bool is_number(char32_t cp);      // \p{N}
bool is_whitespace(char32_t cp);  // White_Space: \s
bool is_word(char32_t cp);        // \w

// NFC; returns the input unchanged when no code point can change under it.
std::string nfc(std::string_view text);

}  // namespace stowage::tokenizer::detail
