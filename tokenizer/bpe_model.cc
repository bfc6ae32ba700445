#include "tokenizer/detail/bpe_model.h"

#include <fmt/format.h>

#include <queue>

#include "core/error.h"
#include "tokenizer/detail/unicode.h"

namespace stowage::tokenizer::detail {
namespace {

// As `tokenizers`' default BPE cache: 10000 words, each shorter than 256 bytes.
constexpr size_t kCacheCapacity = 10000;
constexpr size_t kMaxCachedWordBytes = 256;

constexpr int32_t kMaxTokenId = 1 << 24;

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

}  // namespace

BpeModel::BpeModel(std::unordered_map<std::string, int32_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   BpeOptions options, const std::string& origin)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  int32_t max_id = -1;
  for (const auto& [token, id] : vocab_) {
    STOWAGE_EXPECTS(id >= 0, InvalidInputError,
                    "{}: model.vocab: expected non-negative ids, found {} for token '{}'", origin,
                    id, token);
    max_id = std::max(max_id, id);
  }
  // Ids index a table: a file with one huge id must not make us allocate gigabytes.
  STOWAGE_EXPECTS(max_id < kMaxTokenId, InvalidInputError,
                  "{}: model.vocab: expected ids below {}, found {}", origin, kMaxTokenId, max_id);
  id_to_token_.resize(static_cast<size_t>(max_id + 1));
  has_id_.resize(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : vocab_) {
    id_to_token_[id] = token;
    has_id_[id] = true;
  }
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    auto ia = vocab_.find(a);
    auto ib = vocab_.find(b);
    auto merged = vocab_.find(a + b);
    STOWAGE_EXPECTS(ia != vocab_.end() && ib != vocab_.end() && merged != vocab_.end(),
                    InvalidInputError,
                    "{}: model.merges[{}]: expected tokens of the vocabulary, found '{}' + '{}' "
                    "(missing: '{}')",
                    origin, rank, a, b, ia == vocab_.end() ? a : (ib == vocab_.end() ? b : a + b));
    // The first occurrence of a pair keeps its rank, as in `tokenizers`.
    merges_.emplace(pair_key(ia->second, ib->second),
                    std::make_pair(static_cast<int32_t>(rank), merged->second));
  }
  if (options_.unk_token) {
    auto it = vocab_.find(*options_.unk_token);
    STOWAGE_EXPECTS(it != vocab_.end(), InvalidInputError,
                    "{}: model.unk_token: expected a token of the vocabulary, found '{}'", origin,
                    *options_.unk_token);
    unk_id_ = it->second;
  }
  if (options_.byte_fallback) {
    byte_ids_.resize(256);
    for (int b = 0; b < 256; ++b) {
      auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
      if (it != vocab_.end()) byte_ids_[b] = it->second;
    }
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (options_.ignore_merges) {
    if (auto id = token_to_id(word)) {
      ids->push_back(*id);
      return;
    }
  }
  std::string key(word);
  {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> out;
  merge_word(word, &out);
  ids->insert(ids->end(), out.begin(), out.end());
  if (word.size() < kMaxCachedWordBytes) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::move(key), std::move(out));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>* ids) const {
  // Initial symbols: one per character, or its <0xNN> bytes, or (fused) unk.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id) {
    int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, true});
  };
  int32_t pending_unk = -1;  // an unk id not yet added (fuse_unk grows it)
  size_t i = 0;
  while (i < word.size()) {
    size_t len =
        std::min(utf8_sequence_length(static_cast<unsigned char>(word[i])), word.size() - i);
    std::string_view ch = word.substr(i, len);
    i += len;
    if (auto id = token_to_id(ch)) {
      if (pending_unk >= 0) add(pending_unk), pending_unk = -1;
      add(*id);
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<unsigned char>(c)].has_value();
      if (all) {
        // As `tokenizers`: a byte-fallback character does not flush a pending unk.
        for (char c : ch) add(*byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !options_.fuse_unk) add(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) add(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](int32_t left) {
    int32_t right = symbols[left].next;
    if (right < 0) return;
    auto it = merges_.find(pair_key(symbols[left].id, symbols[right].id));
    if (it != merges_.end()) queue.push({it->second.first, left, it->second.second});
  };
  for (int32_t s = 0; s + 1 < static_cast<int32_t>(symbols.size()); ++s) push_pair(s);
  while (!queue.empty()) {
    Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    // Skip entries made stale by an earlier merge around this position.
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.second != top.merged) continue;
    left.id = top.merged;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (const Symbol& s : symbols) {
    if (s.alive) ids->push_back(s.id);
  }
}

}  // namespace stowage::tokenizer::detail
