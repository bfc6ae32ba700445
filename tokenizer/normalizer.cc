#include "tokenizer/detail/normalizer.h"

#include "tokenizer/detail/unicode.h"

namespace stowage::tokenizer::detail {

std::string replace_all(std::string_view text, std::string_view pattern,
                        std::string_view replacement) {
  std::string out;
  out.reserve(text.size());
  size_t begin = 0;
  size_t pos = text.find(pattern);
  while (pos != std::string_view::npos) {
    out.append(text.substr(begin, pos - begin));
    out.append(replacement);
    begin = pos + pattern.size();
    pos = text.find(pattern, begin);
  }
  out.append(text.substr(begin));
  return out;
}

std::string normalize(const std::vector<NormalizerStep>& steps, std::string_view text) {
  std::string s(text);
  for (const NormalizerStep& step : steps) {
    switch (step.kind) {
      case NormalizerStep::Kind::kNfc:
        s = nfc(s);
        break;
      case NormalizerStep::Kind::kPrepend:
        if (!s.empty()) s.insert(0, step.text);
        break;
      case NormalizerStep::Kind::kReplace:
        s = replace_all(s, step.text, step.replacement);
        break;
    }
  }
  return s;
}

}  // namespace stowage::tokenizer::detail
