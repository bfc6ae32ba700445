// A Hugging Face tokenizer.json, encoded and decoded as the Python `tokenizers`
// package does, for byte-level BPE (Llama 3, Qwen2, SmolLM2 / GPT-2) and
// SentencePiece-style BPE (Llama 2, Mistral) files.
//
// Supported pipeline pieces (anything else is an InvalidInputError naming the
// JSON key and the type found):
//   normalizer     NFC, Prepend, Replace (string pattern), Sequence of these
//   pre_tokenizer  Split (the Llama 3, Qwen2 or GPT-2 regex, Isolated),
//                  ByteLevel, Digits, Metaspace, Sequence of these
//   model          BPE (byte_fallback, fuse_unk, ignore_merges, unk_token)
//   post_processor TemplateProcessing (single), ByteLevel, Sequence of these
//   decoder        ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip,
//                  Sequence of these
//   added_tokens   special, normalized, lstrip, rstrip, single_word
//
// Unicode properties (\p{L}, \p{N}, White_Space) and NFC come from Unicode
// 14.0 tables (tokenizer/unicode_tables.cc, generated).
//
// Thread safety: a Tokenizer is immutable after from_file / from_json except
// for an internal, locked cache of encoded words: every const method may be
// called from several threads at once. Copies are cheap and share the tables.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace stowage::tokenizer {

namespace detail {
struct TokenizerState;
}  // namespace detail

class Tokenizer {
 public:
  // Reads a tokenizer.json. Throws IoError when the file cannot be read, and
  // InvalidInputError naming the file and the JSON key when it is malformed,
  // lacks a key, or names a type this library does not implement.
  static Tokenizer from_file(const std::string& path);
  // The same from JSON text; `origin` names it in error messages.
  static Tokenizer from_json(std::string_view json, const std::string& origin);

  // The ids of text (valid UTF-8, else InvalidInputError). add_special_tokens
  // runs the post-processor (e.g. prepends BOS where the file's template says
  // so); special-token strings in text are always recognised as those tokens.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;

  // The text of ids. skip_special_tokens drops added tokens marked special.
  // Ids that no token has are skipped, as in `tokenizers`. Byte sequences that
  // are not valid UTF-8 become U+FFFD.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const;

  // One more than the highest id of the model's vocabulary and added tokens.
  int64_t vocab_size() const;
  // The id of a token of the vocabulary or an added token (by its content).
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The token string of an id (an added token's content first); throws
  // InvalidInputError for an id no token has.
  std::string id_to_token(int32_t id) const;
  // True for an added token marked special (BOS, EOS, <|eot_id|>, ...).
  bool is_special(int32_t id) const;

 private:
  explicit Tokenizer(std::shared_ptr<const detail::TokenizerState> state);
  std::shared_ptr<const detail::TokenizerState> impl_;
};

}  // namespace stowage::tokenizer
