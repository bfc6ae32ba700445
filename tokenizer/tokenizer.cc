#include "tokenizer/tokenizer.h"

#include <fmt/format.h>

#include <boost/json.hpp>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "tokenizer/detail/added_vocabulary.h"
#include "tokenizer/detail/bpe_model.h"
#include "tokenizer/detail/decoder.h"
#include "tokenizer/detail/normalizer.h"
#include "tokenizer/detail/pre_tokenizer.h"
#include "tokenizer/detail/unicode.h"

namespace stowage::tokenizer {

namespace json = boost::json;
using detail::AddedToken;
using detail::DecoderStep;
using detail::NormalizerStep;
using detail::PrependScheme;
using detail::PreTokenizerStep;

// One element of TemplateProcessing's "single" template: the sequence itself,
// or the ids of a special token.
struct TemplateItem {
  bool is_sequence = false;
  std::vector<int32_t> ids;
};

namespace detail {

// Everything loaded from a tokenizer.json; immutable once loaded.
struct TokenizerState {
  std::string origin;
  bool has_normalizer = false;
  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::unique_ptr<detail::BpeModel> model;
  std::vector<AddedToken> added;          // never resized after loading: the matchers point into it
  detail::AddedTokenMatcher raw_matcher;  // normalized: false
  detail::AddedTokenMatcher normalized_matcher;  // normalized: true
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_map<int32_t, const AddedToken*> added_by_id;
  std::unordered_set<std::string> special_contents;
  bool has_template = false;
  std::vector<TemplateItem> single_template;
  bool has_decoder = false;
  std::vector<DecoderStep> decoder;
  int64_t vocab_size = 0;
};

}  // namespace detail

using Impl = detail::TokenizerState;

namespace {

// Reads the JSON of a tokenizer.json, naming the file and the key in errors.
class ConfigReader {
 public:
  explicit ConfigReader(std::string origin) : origin_(std::move(origin)) {}
  const std::string& origin() const { return origin_; }

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw InvalidInputError(fmt::format("{}: {}: {}", origin_, key, what));
  }

  const json::object& object(const json::value& v, const std::string& key) const {
    if (!v.is_object()) fail(key, fmt::format("expected an object, found {}", kind(v)));
    return v.as_object();
  }
  const json::array& array(const json::value& v, const std::string& key) const {
    if (!v.is_array()) fail(key, fmt::format("expected an array, found {}", kind(v)));
    return v.as_array();
  }
  std::string string(const json::value& v, const std::string& key) const {
    if (!v.is_string()) fail(key, fmt::format("expected a string, found {}", kind(v)));
    return std::string(v.as_string());
  }
  bool boolean(const json::value& v, const std::string& key) const {
    if (!v.is_bool()) fail(key, fmt::format("expected true or false, found {}", kind(v)));
    return v.as_bool();
  }
  int64_t integer(const json::value& v, const std::string& key) const {
    if (v.is_int64()) return v.as_int64();
    if (v.is_uint64() && v.as_uint64() <= INT64_MAX) return static_cast<int64_t>(v.as_uint64());
    fail(key, fmt::format("expected an integer, found {}", kind(v)));
  }
  int32_t id(const json::value& v, const std::string& key) const {
    int64_t i = integer(v, key);
    if (i < 0 || i > INT32_MAX) fail(key, fmt::format("expected an id in [0, 2^31), found {}", i));
    return static_cast<int32_t>(i);
  }

  const json::value& field(const json::object& o, const std::string& parent,
                           const char* name) const {
    auto it = o.find(name);
    if (it == o.end()) fail(join(parent, name), "expected this key, found none");
    return it->value();
  }
  // A field that may be absent or null.
  const json::value* optional_field(const json::object& o, const char* name) const {
    auto it = o.find(name);
    return it == o.end() || it->value().is_null() ? nullptr : &it->value();
  }
  bool optional_bool(const json::object& o, const std::string& parent, const char* name,
                     bool fallback) const {
    const json::value* v = optional_field(o, name);
    return v ? boolean(*v, join(parent, name)) : fallback;
  }
  std::string type(const json::object& o, const std::string& parent) const {
    return string(field(o, parent, "type"), join(parent, "type"));
  }
  [[noreturn]] void unsupported(const std::string& key, const std::string& found,
                                const char* expected) const {
    fail(key, fmt::format("expected one of {}, found '{}' (not supported)", expected, found));
  }

  static std::string join(const std::string& parent, const char* name) {
    return parent.empty() ? name : parent + "." + name;
  }
  static std::string index(const std::string& parent, size_t i) {
    return fmt::format("{}[{}]", parent, i);
  }
  static std::string kind(const json::value& v) { return std::string(json::to_string(v.kind())); }

 private:
  std::string origin_;
};

void parse_normalizer(const ConfigReader& r, const json::value& v, const std::string& key,
                      std::vector<NormalizerStep>* out) {
  const json::object& o = r.object(v, key);
  std::string type = r.type(o, key);
  if (type == "Sequence") {
    std::string list_key = ConfigReader::join(key, "normalizers");
    const json::array& list = r.array(r.field(o, key, "normalizers"), list_key);
    for (size_t i = 0; i < list.size(); ++i) {
      parse_normalizer(r, list[i], ConfigReader::index(list_key, i), out);
    }
  } else if (type == "NFC") {
    out->push_back({NormalizerStep::Kind::kNfc, "", ""});
  } else if (type == "Prepend") {
    out->push_back({NormalizerStep::Kind::kPrepend,
                    r.string(r.field(o, key, "prepend"), ConfigReader::join(key, "prepend")), ""});
  } else if (type == "Replace") {
    std::string pattern_key = ConfigReader::join(key, "pattern");
    const json::object& pattern = r.object(r.field(o, key, "pattern"), pattern_key);
    if (pattern.find("String") == pattern.end()) {
      r.fail(pattern_key, fmt::format("expected a String pattern, found {} (regex replacements "
                                      "are not supported)",
                                      json::serialize(pattern)));
    }
    std::string text = r.string(pattern.at("String"), ConfigReader::join(pattern_key, "String"));
    if (text.empty()) r.fail(pattern_key, "expected a non-empty String pattern, found \"\"");
    out->push_back({NormalizerStep::Kind::kReplace, text,
                    r.string(r.field(o, key, "content"), ConfigReader::join(key, "content"))});
  } else {
    r.unsupported(ConfigReader::join(key, "type"), type, "NFC, Prepend, Replace, Sequence");
  }
}

PrependScheme parse_prepend_scheme(const ConfigReader& r, const json::object& o,
                                   const std::string& key) {
  if (const json::value* v = r.optional_field(o, "prepend_scheme")) {
    std::string s = r.string(*v, ConfigReader::join(key, "prepend_scheme"));
    if (s == "always") return PrependScheme::kAlways;
    if (s == "first") return PrependScheme::kFirst;
    if (s == "never") return PrependScheme::kNever;
    r.unsupported(ConfigReader::join(key, "prepend_scheme"), s, "always, first, never");
  }
  // Files written before prepend_scheme existed say add_prefix_space.
  return r.optional_bool(o, key, "add_prefix_space", true) ? PrependScheme::kAlways
                                                           : PrependScheme::kNever;
}

std::string parse_replacement(const ConfigReader& r, const json::object& o,
                              const std::string& key) {
  std::string replacement_key = ConfigReader::join(key, "replacement");
  std::string s = r.string(r.field(o, key, "replacement"), replacement_key);
  if (detail::decode_utf8(s, replacement_key.c_str()).cps.size() != 1) {
    r.fail(replacement_key, fmt::format("expected one character, found '{}'", s));
  }
  return s;
}

void parse_pre_tokenizer(const ConfigReader& r, const json::value& v, const std::string& key,
                         std::vector<PreTokenizerStep>* out) {
  const json::object& o = r.object(v, key);
  std::string type = r.type(o, key);
  PreTokenizerStep step;
  if (type == "Sequence") {
    std::string list_key = ConfigReader::join(key, "pretokenizers");
    const json::array& list = r.array(r.field(o, key, "pretokenizers"), list_key);
    for (size_t i = 0; i < list.size(); ++i) {
      parse_pre_tokenizer(r, list[i], ConfigReader::index(list_key, i), out);
    }
    return;
  } else if (type == "Split") {
    step.kind = PreTokenizerStep::Kind::kSplit;
    std::string pattern_key = ConfigReader::join(key, "pattern");
    const json::object& pattern = r.object(r.field(o, key, "pattern"), pattern_key);
    auto regex = pattern.find("Regex");
    if (regex == pattern.end()) {
      r.fail(pattern_key,
             fmt::format("expected a Regex pattern, found {}", json::serialize(pattern)));
    }
    std::string source = r.string(regex->value(), ConfigReader::join(pattern_key, "Regex"));
    if (!detail::split_pattern_from_regex(source, &step.pattern)) {
      r.fail(ConfigReader::join(pattern_key, "Regex"),
             fmt::format("expected the Llama 3, Qwen2 or GPT-2 split regex, found '{}' (no "
                         "scanner for it)",
                         source));
    }
    std::string behavior =
        r.string(r.field(o, key, "behavior"), ConfigReader::join(key, "behavior"));
    if (behavior != "Isolated") {
      r.unsupported(ConfigReader::join(key, "behavior"), behavior, "Isolated");
    }
    if (r.optional_bool(o, key, "invert", false)) {
      r.fail(ConfigReader::join(key, "invert"), "expected false, found true (not supported)");
    }
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::Kind::kByteLevel;
    step.add_prefix_space = r.optional_bool(o, key, "add_prefix_space", true);
    step.use_regex = r.optional_bool(o, key, "use_regex", true);
  } else if (type == "Digits") {
    step.kind = PreTokenizerStep::Kind::kDigits;
    step.individual_digits = r.optional_bool(o, key, "individual_digits", false);
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::Kind::kMetaspace;
    step.replacement = parse_replacement(r, o, key);
    step.prepend_scheme = parse_prepend_scheme(r, o, key);
    step.split = r.optional_bool(o, key, "split", true);
  } else {
    r.unsupported(ConfigReader::join(key, "type"), type,
                  "Split, ByteLevel, Digits, Metaspace, Sequence");
  }
  out->push_back(step);
}

void parse_decoder(const ConfigReader& r, const json::value& v, const std::string& key,
                   std::vector<DecoderStep>* out) {
  const json::object& o = r.object(v, key);
  std::string type = r.type(o, key);
  DecoderStep step;
  if (type == "Sequence") {
    std::string list_key = ConfigReader::join(key, "decoders");
    const json::array& list = r.array(r.field(o, key, "decoders"), list_key);
    for (size_t i = 0; i < list.size(); ++i) {
      parse_decoder(r, list[i], ConfigReader::index(list_key, i), out);
    }
    return;
  } else if (type == "ByteLevel") {
    step.kind = DecoderStep::Kind::kByteLevel;
  } else if (type == "Metaspace") {
    step.kind = DecoderStep::Kind::kMetaspace;
    step.pattern = parse_replacement(r, o, key);
    step.prepend_scheme = parse_prepend_scheme(r, o, key);
  } else if (type == "Replace") {
    step.kind = DecoderStep::Kind::kReplace;
    std::string pattern_key = ConfigReader::join(key, "pattern");
    const json::object& pattern = r.object(r.field(o, key, "pattern"), pattern_key);
    if (pattern.find("String") == pattern.end()) {
      r.fail(pattern_key,
             fmt::format("expected a String pattern, found {}", json::serialize(pattern)));
    }
    step.pattern = r.string(pattern.at("String"), ConfigReader::join(pattern_key, "String"));
    if (step.pattern.empty()) r.fail(pattern_key, "expected a non-empty String, found \"\"");
    step.content = r.string(r.field(o, key, "content"), ConfigReader::join(key, "content"));
  } else if (type == "ByteFallback") {
    step.kind = DecoderStep::Kind::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = DecoderStep::Kind::kFuse;
  } else if (type == "Strip") {
    step.kind = DecoderStep::Kind::kStrip;
    std::string content_key = ConfigReader::join(key, "content");
    step.content = r.string(r.field(o, key, "content"), content_key);
    if (detail::decode_utf8(step.content, content_key.c_str()).cps.size() != 1) {
      r.fail(content_key, fmt::format("expected one character, found '{}'", step.content));
    }
    step.start =
        static_cast<size_t>(r.id(r.field(o, key, "start"), ConfigReader::join(key, "start")));
    step.stop = static_cast<size_t>(r.id(r.field(o, key, "stop"), ConfigReader::join(key, "stop")));
  } else {
    r.unsupported(ConfigReader::join(key, "type"), type,
                  "ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, Sequence");
  }
  out->push_back(step);
}

void parse_post_processor(const ConfigReader& r, const json::value& v, const std::string& key,
                          Impl* impl);

std::unique_ptr<detail::BpeModel> parse_model(const ConfigReader& r, const json::value& v) {
  const std::string key = "model";
  const json::object& o = r.object(v, key);
  // Files written by old versions of `tokenizers` may omit the type of a BPE model.
  std::string type = o.find("type") == o.end() ? "BPE" : r.type(o, key);
  if (type != "BPE") r.unsupported("model.type", type, "BPE");
  if (const json::value* d = r.optional_field(o, "dropout")) {
    if (!d->is_number() || json::value_to<double>(*d) != 0.0) {
      r.fail("model.dropout",
             fmt::format("expected null (no dropout), found {}", json::serialize(*d)));
    }
  }
  for (const char* name : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const json::value* s = r.optional_field(o, name)) {
      if (!r.string(*s, ConfigReader::join(key, name)).empty()) {
        r.fail(ConfigReader::join(key, name),
               fmt::format("expected null, found {} (not supported)", json::serialize(*s)));
      }
    }
  }
  detail::BpeOptions options;
  if (const json::value* unk = r.optional_field(o, "unk_token")) {
    options.unk_token = r.string(*unk, "model.unk_token");
  }
  options.fuse_unk = r.optional_bool(o, key, "fuse_unk", false);
  options.byte_fallback = r.optional_bool(o, key, "byte_fallback", false);
  options.ignore_merges = r.optional_bool(o, key, "ignore_merges", false);

  const json::object& vocab_json = r.object(r.field(o, key, "vocab"), "model.vocab");
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(vocab_json.size());
  for (const auto& kv : vocab_json) {
    std::string token(kv.key());
    vocab.emplace(token, r.id(kv.value(), fmt::format("model.vocab[\"{}\"]", token)));
  }
  const json::array& merges_json = r.array(r.field(o, key, "merges"), "model.merges");
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(merges_json.size());
  for (size_t i = 0; i < merges_json.size(); ++i) {
    std::string merge_key = ConfigReader::index("model.merges", i);
    const json::value& m = merges_json[i];
    if (m.is_string()) {
      // "a b": exactly one space, as `tokenizers` requires.
      std::string s(m.as_string());
      size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        r.fail(merge_key, fmt::format("expected two tokens separated by one space, found '{}'", s));
      }
      merges.emplace_back(s.substr(0, space), s.substr(space + 1));
    } else {
      const json::array& pair = r.array(m, merge_key);
      if (pair.size() != 2) {
        r.fail(merge_key, fmt::format("expected a pair of tokens, found {} items", pair.size()));
      }
      merges.emplace_back(r.string(pair[0], ConfigReader::index(merge_key, 0)),
                          r.string(pair[1], ConfigReader::index(merge_key, 1)));
    }
  }
  return std::make_unique<detail::BpeModel>(std::move(vocab), merges, std::move(options),
                                            r.origin());
}

void parse_post_processor(const ConfigReader& r, const json::value& v, const std::string& key,
                          Impl* impl) {
  const json::object& o = r.object(v, key);
  std::string type = r.type(o, key);
  if (type == "Sequence") {
    std::string list_key = ConfigReader::join(key, "processors");
    const json::array& list = r.array(r.field(o, key, "processors"), list_key);
    for (size_t i = 0; i < list.size(); ++i) {
      parse_post_processor(r, list[i], ConfigReader::index(list_key, i), impl);
    }
  } else if (type == "ByteLevel") {
    // Only adjusts offsets, which this library does not report.
  } else if (type == "TemplateProcessing") {
    std::string specials_key = ConfigReader::join(key, "special_tokens");
    const json::object& specials = r.object(r.field(o, key, "special_tokens"), specials_key);
    std::string single_key = ConfigReader::join(key, "single");
    const json::array& single = r.array(r.field(o, key, "single"), single_key);
    impl->has_template = true;
    impl->single_template.clear();
    for (size_t i = 0; i < single.size(); ++i) {
      std::string item_key = ConfigReader::index(single_key, i);
      const json::object& item = r.object(single[i], item_key);
      TemplateItem t;
      if (item.find("Sequence") != item.end()) {
        t.is_sequence = true;
      } else if (item.find("SpecialToken") != item.end()) {
        std::string special_key = ConfigReader::join(item_key, "SpecialToken");
        const json::object& special = r.object(item.at("SpecialToken"), special_key);
        std::string name =
            r.string(r.field(special, special_key, "id"), ConfigReader::join(special_key, "id"));
        auto it = specials.find(name);
        if (it == specials.end()) {
          r.fail(specials_key, fmt::format("expected an entry for '{}', found none", name));
        }
        std::string entry_key = fmt::format("{}[\"{}\"]", specials_key, name);
        const json::object& entry = r.object(it->value(), entry_key);
        std::string ids_key = ConfigReader::join(entry_key, "ids");
        const json::array& ids = r.array(r.field(entry, entry_key, "ids"), ids_key);
        for (size_t k = 0; k < ids.size(); ++k) {
          t.ids.push_back(r.id(ids[k], ConfigReader::index(ids_key, k)));
        }
      } else {
        r.fail(item_key,
               fmt::format("expected Sequence or SpecialToken, found {}", json::serialize(item)));
      }
      impl->single_template.push_back(std::move(t));
    }
  } else {
    r.unsupported(ConfigReader::join(key, "type"), type, "TemplateProcessing, ByteLevel, Sequence");
  }
}

void parse_added_tokens(const ConfigReader& r, const json::value& v, Impl* impl) {
  const json::array& list = r.array(v, "added_tokens");
  impl->added.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) {
    std::string key = ConfigReader::index("added_tokens", i);
    const json::object& o = r.object(list[i], key);
    AddedToken t;
    t.id = r.id(r.field(o, key, "id"), ConfigReader::join(key, "id"));
    t.content = r.string(r.field(o, key, "content"), ConfigReader::join(key, "content"));
    if (t.content.empty()) r.fail(ConfigReader::join(key, "content"), "expected text, found \"\"");
    detail::decode_utf8(t.content, "added token");
    t.special = r.optional_bool(o, key, "special", false);
    t.normalized = r.optional_bool(o, key, "normalized", !t.special);
    t.lstrip = r.optional_bool(o, key, "lstrip", false);
    t.rstrip = r.optional_bool(o, key, "rstrip", false);
    t.single_word = r.optional_bool(o, key, "single_word", false);
    // A normalized token is looked for in normalized text, so in its normalized form.
    t.pattern = t.normalized && impl->has_normalizer
                    ? detail::normalize(impl->normalizer, t.content)
                    : t.content;
    impl->added.push_back(std::move(t));
  }
  std::vector<const AddedToken*> raw, normalized;
  for (const AddedToken& t : impl->added) {
    impl->added_by_content[t.content] = t.id;
    impl->added_by_id[t.id] = &t;
    if (t.special) impl->special_contents.insert(t.content);
    (t.normalized ? normalized : raw).push_back(&t);
  }
  impl->raw_matcher = detail::AddedTokenMatcher(std::move(raw));
  impl->normalized_matcher = detail::AddedTokenMatcher(std::move(normalized));
}

}  // namespace

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  STOWAGE_EXPECTS(static_cast<bool>(in), IoError, "{}: cannot open the tokenizer file for reading",
                  path);
  std::ostringstream text;
  text << in.rdbuf();
  STOWAGE_EXPECTS(!in.bad(), IoError, "{}: read failed", path);
  return from_json(text.str(), path);
}

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& origin) {
  ConfigReader r(origin);
  json::error_code ec;
  json::value root = json::parse(json::string_view(json_text.data(), json_text.size()), ec);
  if (ec) {
    throw InvalidInputError(fmt::format("{}: expected JSON, found: {}", origin, ec.message()));
  }
  const json::object& o = r.object(root, "(top level)");
  auto impl = std::make_shared<Impl>();
  impl->origin = origin;
  if (const json::value* v = r.optional_field(o, "normalizer")) {
    impl->has_normalizer = true;
    parse_normalizer(r, *v, "normalizer", &impl->normalizer);
  }
  if (const json::value* v = r.optional_field(o, "pre_tokenizer")) {
    parse_pre_tokenizer(r, *v, "pre_tokenizer", &impl->pre_tokenizer);
  }
  impl->model = parse_model(r, r.field(o, "", "model"));
  if (const json::value* v = r.optional_field(o, "added_tokens")) {
    parse_added_tokens(r, *v, impl.get());
  }
  if (const json::value* v = r.optional_field(o, "post_processor")) {
    parse_post_processor(r, *v, "post_processor", impl.get());
  }
  if (const json::value* v = r.optional_field(o, "decoder")) {
    impl->has_decoder = true;
    parse_decoder(r, *v, "decoder", &impl->decoder);
  }
  int64_t max_id = impl->model->max_id();
  for (const AddedToken& t : impl->added) max_id = std::max<int64_t>(max_id, t.id);
  impl->vocab_size = max_id + 1;
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  detail::decode_utf8(text, "text to encode");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  auto encode_piece = [&](std::string_view piece, bool at_start) {
    std::string normalized =
        m.has_normalizer ? detail::normalize(m.normalizer, piece) : std::string(piece);
    std::vector<detail::Segment> segments =
        m.normalized_matcher.empty() ? std::vector<detail::Segment>{{0, normalized.size(), -1}}
                                     : m.normalized_matcher.split(normalized);
    for (const detail::Segment& s : segments) {
      if (s.token_id >= 0) {
        ids.push_back(s.token_id);
        continue;
      }
      detail::Piece p{normalized.substr(s.begin, s.end - s.begin), at_start && s.begin == 0};
      for (const detail::Piece& word : detail::pre_tokenize(m.pre_tokenizer, std::move(p))) {
        m.model->encode_word(word.text, &ids);
      }
    }
  };
  if (m.raw_matcher.empty()) {
    encode_piece(text, true);
  } else {
    for (const detail::Segment& s : m.raw_matcher.split(text)) {
      if (s.token_id >= 0) {
        ids.push_back(s.token_id);
      } else {
        encode_piece(text.substr(s.begin, s.end - s.begin), s.begin == 0);
      }
    }
  }
  if (!add_special_tokens || !m.has_template) return ids;
  std::vector<int32_t> out;
  out.reserve(ids.size() + 4);
  for (const TemplateItem& t : m.single_template) {
    if (t.is_sequence) {
      out.insert(out.end(), ids.begin(), ids.end());
    } else {
      out.insert(out.end(), t.ids.begin(), t.ids.end());
    }
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    auto added = m.added_by_id.find(id);
    const std::string* model_token = nullptr;
    if (added == m.added_by_id.end()) {
      model_token = m.model->id_to_token(id);
      if (model_token == nullptr) continue;  // no token has this id
    }
    const std::string& token = model_token ? *model_token : added->second->pattern;
    if (skip_special_tokens && m.special_contents.count(token) != 0) continue;
    tokens.push_back(token);
  }
  return detail::decode_tokens(m.decoder, m.has_decoder, std::move(tokens));
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->added_by_content.find(std::string(token));
  if (it != impl_->added_by_content.end()) return it->second;
  return impl_->model->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  auto added = impl_->added_by_id.find(id);
  if (added != impl_->added_by_id.end()) return added->second->content;
  const std::string* token = impl_->model->id_to_token(id);
  STOWAGE_EXPECTS(token != nullptr, InvalidInputError,
                  "{}: expected a token id in [0, {}), found {} (no token has it)", impl_->origin,
                  impl_->vocab_size, id);
  return *token;
}

bool Tokenizer::is_special(int32_t id) const {
  auto added = impl_->added_by_id.find(id);
  return added != impl_->added_by_id.end() && added->second->special;
}

}  // namespace stowage::tokenizer
