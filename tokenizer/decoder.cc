#include "tokenizer/detail/decoder.h"

#include <array>
#include <optional>
#include <unordered_map>

#include "tokenizer/detail/normalizer.h"
#include "tokenizer/detail/unicode.h"

namespace stowage::tokenizer::detail {
namespace {

const std::unordered_map<char32_t, unsigned char>& byte_level_bytes() {
  static const std::unordered_map<char32_t, unsigned char> table = [] {
    std::unordered_map<char32_t, unsigned char> t;
    for (int b = 0; b < 256; ++b) {
      CodePoints c = decode_utf8(byte_level_char(static_cast<unsigned char>(b)), "byte table");
      t.emplace(c.cps[0], static_cast<unsigned char>(b));
    }
    return t;
  }();
  return table;
}

std::vector<std::string> byte_level(std::vector<std::string> tokens) {
  const auto& table = byte_level_bytes();
  std::string bytes;
  for (const std::string& t : tokens) {
    // A token with any character outside the table contributes its own bytes.
    CodePoints c = decode_utf8(t, "token");
    std::string mapped;
    bool all = true;
    for (char32_t cp : c.cps) {
      auto it = table.find(cp);
      if (it == table.end()) {
        all = false;
        break;
      }
      mapped.push_back(static_cast<char>(it->second));
    }
    bytes += all ? mapped : t;
  }
  return {utf8_lossy(bytes)};
}

std::optional<unsigned char> byte_token(const std::string& t) {
  // `<0xNN>`; the two characters parse as Rust's u8::from_str_radix(_, 16).
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  int hi = t[3] == '+' ? 0 : hex(t[3]);
  int lo = hex(t[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<unsigned char>(hi * 16 + lo);
}

std::vector<std::string> byte_fallback(std::vector<std::string> tokens) {
  std::vector<std::string> out;
  std::string pending;
  auto flush = [&] {
    if (pending.empty()) return;
    if (utf8_lossy(pending) == pending) {
      out.push_back(pending);
    } else {
      for (size_t i = 0; i < pending.size(); ++i) out.push_back("\xEF\xBF\xBD");
    }
    pending.clear();
  };
  for (std::string& t : tokens) {
    if (auto b = byte_token(t)) {
      pending.push_back(static_cast<char>(*b));
    } else {
      flush();
      out.push_back(std::move(t));
    }
  }
  flush();
  return out;
}

std::vector<std::string> metaspace(const DecoderStep& step, std::vector<std::string> tokens) {
  for (size_t i = 0; i < tokens.size(); ++i) {
    bool drop = i == 0 && step.prepend_scheme != PrependScheme::kNever;
    tokens[i] = replace_all(tokens[i], step.pattern, drop ? "" : " ");
  }
  return tokens;
}

std::vector<std::string> strip(const DecoderStep& step, std::vector<std::string> tokens) {
  CodePoints content = decode_utf8(step.content, "Strip content");
  char32_t ch = content.cps.empty() ? 0 : content.cps[0];
  for (std::string& t : tokens) {
    CodePoints c = decode_utf8(t, "token");
    size_t n = c.cps.size();
    size_t start_cut = 0;
    for (size_t i = 0; i < step.start && i < n && c.cps[i] == ch; ++i) start_cut = i + 1;
    size_t stop_cut = n;
    for (size_t i = 0; i < step.stop && i < n && c.cps[n - i - 1] == ch; ++i) stop_cut = n - i - 1;
    if (stop_cut < start_cut) stop_cut = start_cut;
    t = t.substr(c.offsets[start_cut], c.offsets[stop_cut] - c.offsets[start_cut]);
  }
  return tokens;
}

}  // namespace

std::string decode_tokens(const std::vector<DecoderStep>& steps, bool has_decoder,
                          std::vector<std::string> tokens) {
  std::string out;
  if (!has_decoder) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i > 0) out.push_back(' ');
      out += tokens[i];
    }
    return out;
  }
  for (const DecoderStep& step : steps) {
    switch (step.kind) {
      case DecoderStep::Kind::kByteLevel:
        tokens = byte_level(std::move(tokens));
        break;
      case DecoderStep::Kind::kMetaspace:
        tokens = metaspace(step, std::move(tokens));
        break;
      case DecoderStep::Kind::kReplace:
        for (std::string& t : tokens) t = replace_all(t, step.pattern, step.content);
        break;
      case DecoderStep::Kind::kByteFallback:
        tokens = byte_fallback(std::move(tokens));
        break;
      case DecoderStep::Kind::kFuse: {
        std::string fused;
        for (const std::string& t : tokens) fused += t;
        tokens.assign(1, std::move(fused));
        break;
      }
      case DecoderStep::Kind::kStrip:
        tokens = strip(step, std::move(tokens));
        break;
    }
  }
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace stowage::tokenizer::detail
