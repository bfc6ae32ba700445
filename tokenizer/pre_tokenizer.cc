#include "tokenizer/detail/pre_tokenizer.h"

#include <array>

#include "tokenizer/detail/unicode.h"

namespace stowage::tokenizer::detail {
namespace {

constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

bool is_newline(char32_t c) { return c == '\r' || c == '\n'; }
bool is_other(char32_t c) { return !is_whitespace(c) && !is_letter(c) && !is_number(c); }
char32_t ascii_lower(char32_t c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

// Length in code points of a contraction ('s 't 'm 'd 're 've 'll) at i, or 0.
size_t contraction_at(const std::vector<char32_t>& cp, size_t i, bool ignore_case) {
  size_t n = cp.size();
  if (cp[i] != '\'' || i + 1 >= n) return 0;
  auto fold = [&](char32_t c) { return ignore_case ? ascii_lower(c) : c; };
  char32_t a = fold(cp[i + 1]);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= n) return 0;
  char32_t b = fold(cp[i + 2]);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// The whitespace alternatives shared by all three patterns, at a whitespace
// character i: \s+(?!\S)|\s+, preceded by \s*[\r\n]+ when newline_run is set.
size_t whitespace_match_end(const std::vector<char32_t>& cp, size_t i, bool newline_run) {
  size_t n = cp.size();
  size_t j = i;
  size_t last_newline = n;
  while (j < n && is_whitespace(cp[j])) {
    if (is_newline(cp[j])) last_newline = j;
    ++j;
  }
  if (newline_run && last_newline != n) return last_newline + 1;  // \s*[\r\n]+
  if (j == n) return j;                                           // \s+(?!\S) at the end
  if (j - i >= 2) return j - 1;  // \s+(?!\S): leave the last space to the next word
  return j;                      // \s+
}

// Llama 3 and Qwen2: max_digits is 3 or 1.
size_t llama3_match_end(const std::vector<char32_t>& cp, size_t i, size_t max_digits) {
  size_t n = cp.size();
  char32_t c = cp[i];
  if (size_t len = contraction_at(cp, i, /*ignore_case=*/true)) return i + len;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  size_t letters = n;
  if (is_letter(c)) {
    letters = i;
  } else if (!is_newline(c) && !is_number(c) && i + 1 < n && is_letter(cp[i + 1])) {
    letters = i + 1;
  }
  if (letters != n) {
    size_t j = letters;
    while (j < n && is_letter(cp[j])) ++j;
    return j;
  }
  // \p{N}{1,max_digits}
  if (is_number(c)) {
    size_t j = i;
    while (j < n && j - i < max_digits && is_number(cp[j])) ++j;
    return j;
  }
  // ' '?[^\s\p{L}\p{N}]+[\r\n]*
  size_t k = (c == ' ' && i + 1 < n && is_other(cp[i + 1])) ? i + 1 : i;
  if (is_other(cp[k])) {
    size_t j = k;
    while (j < n && is_other(cp[j])) ++j;
    while (j < n && is_newline(cp[j])) ++j;
    return j;
  }
  return whitespace_match_end(cp, i, /*newline_run=*/true);
}

size_t gpt2_match_end(const std::vector<char32_t>& cp, size_t i) {
  size_t n = cp.size();
  if (size_t len = contraction_at(cp, i, /*ignore_case=*/false)) return i + len;
  size_t k = (cp[i] == ' ' && i + 1 < n) ? i + 1 : i;
  // ' '?\p{L}+ | ' '?\p{N}+ | ' '?[^\s\p{L}\p{N}]+, in that order; the optional
  // space only helps when the character after it starts the run.
  for (auto in_class : {is_letter, is_number, is_other}) {
    size_t start = in_class(cp[k]) ? k : (in_class(cp[i]) ? i : n);
    if (start == n) continue;
    size_t j = start;
    while (j < n && in_class(cp[j])) ++j;
    return j;
  }
  return whitespace_match_end(cp, i, /*newline_run=*/false);
}

void split_into(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& ranges,
                std::vector<Piece>* out) {
  for (const auto& [b, e] : ranges) {
    if (e > b) out->push_back({piece.text.substr(b, e - b), piece.at_start && b == 0});
  }
}

void metaspace(const PreTokenizerStep& step, const Piece& piece, std::vector<Piece>* out) {
  std::string text;
  text.reserve(piece.text.size() + 3);
  for (char c : piece.text) {
    if (c == ' ') {
      text += step.replacement;
    } else {
      text.push_back(c);
    }
  }
  bool starts_with_replacement = text.compare(0, step.replacement.size(), step.replacement) == 0;
  bool prepend = !starts_with_replacement &&
                 (step.prepend_scheme == PrependScheme::kAlways ||
                  (step.prepend_scheme == PrependScheme::kFirst && piece.at_start));
  if (prepend) text.insert(0, step.replacement);
  if (!step.split) {
    out->push_back({std::move(text), piece.at_start});
    return;
  }
  // Split before every replacement character (the delimiter merged with next).
  size_t begin = 0;
  size_t pos = text.find(step.replacement, 1);
  while (pos != std::string::npos) {
    out->push_back({text.substr(begin, pos - begin), piece.at_start && begin == 0});
    begin = pos;
    pos = text.find(step.replacement, pos + step.replacement.size());
  }
  if (begin < text.size()) out->push_back({text.substr(begin), piece.at_start && begin == 0});
}

void digits(const PreTokenizerStep& step, const Piece& piece, std::vector<Piece>* out) {
  CodePoints cps = decode_utf8(piece.text, "pre-tokenizer input");
  std::vector<std::pair<size_t, size_t>> ranges;
  size_t n = cps.cps.size();
  size_t i = 0;
  while (i < n) {
    size_t j = i + 1;
    bool numeric = is_number(cps.cps[i]);
    if (!numeric || !step.individual_digits) {
      while (j < n && is_number(cps.cps[j]) == numeric) ++j;
    }
    ranges.emplace_back(cps.offsets[i], cps.offsets[j]);
    i = j;
  }
  split_into(piece, ranges, out);
}

std::array<std::string, 256> make_byte_level_table() {
  std::array<std::string, 256> table;
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + extra++);
    append_utf8(cp, &table[b]);
  }
  return table;
}

void byte_level(const PreTokenizerStep& step, Piece piece, std::vector<Piece>* out) {
  if (step.add_prefix_space && (piece.text.empty() || piece.text[0] != ' ')) {
    piece.text.insert(0, " ");
  }
  std::vector<Piece> words;
  if (step.use_regex) {
    split_into(piece, scan_matches(SplitPattern::kGpt2, piece.text), &words);
  } else {
    words.push_back(std::move(piece));
  }
  for (Piece& w : words) {
    std::string mapped;
    mapped.reserve(w.text.size() * 2);
    for (char c : w.text) mapped += byte_level_char(static_cast<unsigned char>(c));
    out->push_back({std::move(mapped), w.at_start});
  }
}

}  // namespace

bool split_pattern_from_regex(std::string_view regex, SplitPattern* pattern) {
  if (regex == kLlama3Regex) {
    *pattern = SplitPattern::kLlama3;
  } else if (regex == kQwen2Regex) {
    *pattern = SplitPattern::kQwen2;
  } else if (regex == kGpt2Regex) {
    *pattern = SplitPattern::kGpt2;
  } else {
    return false;
  }
  return true;
}

std::vector<std::pair<size_t, size_t>> scan_matches(SplitPattern pattern, std::string_view text) {
  CodePoints cps = decode_utf8(text, "pre-tokenizer input");
  std::vector<std::pair<size_t, size_t>> ranges;
  size_t n = cps.cps.size();
  size_t i = 0;
  while (i < n) {
    size_t j = pattern == SplitPattern::kGpt2
                   ? gpt2_match_end(cps.cps, i)
                   : llama3_match_end(cps.cps, i, pattern == SplitPattern::kLlama3 ? 3 : 1);
    ranges.emplace_back(cps.offsets[i], cps.offsets[j]);
    i = j;
  }
  return ranges;
}

const std::string& byte_level_char(unsigned char byte) {
  static const std::array<std::string, 256> table = make_byte_level_table();
  return table[byte];
}

std::vector<Piece> pre_tokenize(const std::vector<PreTokenizerStep>& steps, Piece piece) {
  std::vector<Piece> pieces;
  pieces.push_back(std::move(piece));
  for (const PreTokenizerStep& step : steps) {
    std::vector<Piece> next;
    next.reserve(pieces.size());
    for (Piece& p : pieces) {
      switch (step.kind) {
        case PreTokenizerStep::Kind::kSplit:
          split_into(p, scan_matches(step.pattern, p.text), &next);
          break;
        case PreTokenizerStep::Kind::kByteLevel:
          byte_level(step, std::move(p), &next);
          break;
        case PreTokenizerStep::Kind::kDigits:
          digits(step, p, &next);
          break;
        case PreTokenizerStep::Kind::kMetaspace:
          metaspace(step, p, &next);
          break;
      }
    }
    pieces = std::move(next);
  }
  return pieces;
}

}  // namespace stowage::tokenizer::detail
