#include "tokenizer/detail/unicode.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/detail/unicode_tables.h"

namespace stowage::tokenizer::detail {
namespace {

bool in_ranges(const CodepointRange* ranges, size_t count, char32_t cp) {
  const CodepointRange* end = ranges + count;
  const CodepointRange* it = std::upper_bound(
      ranges, end, cp, [](char32_t c, const CodepointRange& r) { return c < r.first; });
  return it != ranges && cp <= (it - 1)->last;
}

// Hangul syllable composition constants (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr char32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300) return 0;
  const CombiningClass* end = kCombiningClasses + kCombiningClasses_count;
  const CombiningClass* it = std::lower_bound(
      kCombiningClasses, end, cp,
      [](const CombiningClass& c, char32_t value) { return c.code_point < value; });
  return it != end && it->code_point == cp ? it->combining_class : 0;
}

void decompose(char32_t cp, std::vector<char32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    char32_t s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* end = kDecompositions + kDecompositions_count;
  const Decomposition* it =
      std::lower_bound(kDecompositions, end, cp,
                       [](const Decomposition& d, char32_t value) { return d.code_point < value; });
  if (it == end || it->code_point != cp) {
    out->push_back(cp);
    return;
  }
  decompose(it->first, out);
  if (it->second != 0) decompose(it->second, out);
}

char32_t compose(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase &&
      second < kVBase + kVCount) {
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  }
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 &&
      second > kTBase && second < kTBase + kTCount) {
    return first + (second - kTBase);
  }
  const Composition* end = kCompositions + kCompositions_count;
  const Composition* it =
      std::lower_bound(kCompositions, end, std::make_pair(first, second),
                       [](const Composition& c, const std::pair<char32_t, char32_t>& key) {
                         return std::make_pair(c.first, c.second) < key;
                       });
  if (it != end && it->first == first && it->second == second) return it->composite;
  return 0;
}

}  // namespace

size_t utf8_sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 1;
}

namespace {

// The valid range of the second byte of a sequence, by lead byte (Unicode
// Table 3-7); later continuation bytes are always 0x80..0xBF.
bool valid_second_byte(unsigned char lead, unsigned char b) {
  if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
  if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
  if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
  if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
  return b >= 0x80 && b <= 0xBF;
}

// Length of the valid sequence at text[i], or 0 with *valid_prefix set to the
// length of its longest valid prefix (at least 1).
size_t valid_sequence_at(std::string_view text, size_t i, size_t* valid_prefix) {
  auto lead = static_cast<unsigned char>(text[i]);
  if (lead < 0x80) return 1;
  size_t len = utf8_sequence_length(lead);
  *valid_prefix = 1;
  if (len == 1) return 0;
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= text.size()) return 0;
    auto b = static_cast<unsigned char>(text[i + k]);
    bool ok = k == 1 ? valid_second_byte(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return 0;
    *valid_prefix = k + 1;
  }
  return len;
}

char32_t decode_at(std::string_view text, size_t i, size_t len) {
  auto b0 = static_cast<unsigned char>(text[i]);
  if (len == 1) return b0;
  char32_t cp = b0 & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k)
    cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
  return cp;
}

}  // namespace

CodePoints decode_utf8(std::string_view text, const char* what) {
  CodePoints out;
  out.cps.reserve(text.size());
  out.offsets.reserve(text.size() + 1);
  size_t i = 0;
  while (i < text.size()) {
    size_t prefix = 0;
    size_t len = valid_sequence_at(text, i, &prefix);
    STOWAGE_EXPECTS(len != 0, InvalidInputError,
                    "{}: expected valid UTF-8, found an ill-formed sequence at byte {} (0x{:02X})",
                    what, i, static_cast<unsigned char>(text[i]));
    out.cps.push_back(decode_at(text, i, len));
    out.offsets.push_back(i);
    i += len;
  }
  out.offsets.push_back(text.size());
  return out;
}

void append_utf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    size_t prefix = 0;
    size_t len = valid_sequence_at(bytes, i, &prefix);
    if (len != 0) {
      out.append(bytes.substr(i, len));
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");
      i += prefix;
    }
  }
  return out;
}

bool ends_with_incomplete_utf8(std::string_view bytes) {
  // Look back at most 3 bytes for a lead byte whose sequence runs past the end.
  for (size_t back = 1; back <= 3 && back <= bytes.size(); ++back) {
    size_t i = bytes.size() - back;
    auto b = static_cast<unsigned char>(bytes[i]);
    if (b >= 0x80 && b <= 0xBF) continue;  // a continuation byte: keep looking
    size_t len = utf8_sequence_length(b);
    if (len <= back) return false;
    size_t prefix = 0;
    valid_sequence_at(bytes, i, &prefix);
    return prefix == back;  // every byte present so far is valid
  }
  return false;
}

bool is_letter(char32_t cp) {
  if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
  return in_ranges(kLetterRanges, kLetterRanges_count, cp);
}

bool is_number(char32_t cp) {
  if (cp < 0x80) return cp >= '0' && cp <= '9';
  return in_ranges(kNumberRanges, kNumberRanges_count, cp);
}

bool is_whitespace(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x9 && cp <= 0xD);
  return in_ranges(kWhitespaceRanges, kWhitespaceRanges_count, cp);
}

bool is_word(char32_t cp) {
  if (cp < 0x80) return is_letter(cp) || is_number(cp) || cp == '_';
  return in_ranges(kWordRanges, kWordRanges_count, cp);
}

std::string nfc(std::string_view text) {
  CodePoints in = decode_utf8(text, "text to normalize (NFC)");
  bool unsafe = false;
  for (char32_t cp : in.cps) {
    if (cp >= 0x300 && in_ranges(kNfcUnsafeRanges, kNfcUnsafeRanges_count, cp)) {
      unsafe = true;
      break;
    }
  }
  if (!unsafe) return std::string(text);

  std::vector<char32_t> d;
  d.reserve(in.cps.size() + 8);
  for (char32_t cp : in.cps) decompose(cp, &d);
  // Canonical ordering: stable sort of each run of non-starters by class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + i, d.begin() + j, [](char32_t a, char32_t b) {
      return combining_class(a) < combining_class(b);
    });
    i = j;
  }
  // Canonical composition (the algorithm of UAX #15's sample code).
  std::vector<char32_t> c;
  c.reserve(d.size());
  if (!d.empty()) {
    c.push_back(d[0]);
    size_t starter_pos = 0;
    int last_class = combining_class(d[0]) == 0 ? 0 : 256;
    for (size_t i = 1; i < d.size(); ++i) {
      char32_t ch = d[i];
      int ch_class = combining_class(ch);
      char32_t composite = last_class == 256 ? 0 : compose(c[starter_pos], ch);
      if (composite != 0 && (last_class < ch_class || last_class == 0)) {
        c[starter_pos] = composite;
        continue;
      }
      if (ch_class == 0) starter_pos = c.size();
      last_class = ch_class;
      c.push_back(ch);
    }
  }
  std::string out;
  out.reserve(text.size());
  for (char32_t cp : c) append_utf8(cp, &out);
  return out;
}

}  // namespace stowage::tokenizer::detail
