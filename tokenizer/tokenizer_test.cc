// Specifications of the tokenizer beyond corpus parity (parity_test.cc): the
// errors a bad tokenizer.json gives, byte fallback, unknown-token fusing,
// added-token rules, ignore_merges, streaming decode, threads.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "tokenizer/streaming_decoder.h"

namespace stowage::tokenizer {
namespace {

// Expects `call` to throw ErrType whose message contains every one of `parts`.
template <typename ErrType, typename Call>
void expect_error(Call call, std::vector<std::string> parts) {
  try {
    call();
    ADD_FAILURE() << "expected an exception";
  } catch (const ErrType& e) {
    for (const std::string& p : parts) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message '" << e.what() << "' lacks '" << p << "'";
    }
  }
}

// A SentencePiece-style BPE as Llama 2's: <unk> <s> </s>, the 256 byte tokens,
// then a few pieces; normalizer Prepend + Replace, the Llama 2 decoder chain.
std::string sentencepiece_json(bool byte_fallback, bool fuse_unk) {
  std::ostringstream vocab;
  vocab << R"("<unk>":0,"<s>":1,"</s>":2)";
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab << ",\"" << name << "\":" << 3 + b;
  }
  vocab << R"(,"▁":259,"a":260,"b":261,"▁a":262,"▁ab":263)";
  return std::string(R"({"added_tokens":[
      {"id":0,"content":"<unk>","special":true,"normalized":false},
      {"id":1,"content":"<s>","special":true,"normalized":false},
      {"id":2,"content":"</s>","special":true,"normalized":false}],
    "normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},
      {"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
    "pre_tokenizer":null,
    "post_processor":{"type":"TemplateProcessing",
      "single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
      "special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
    "decoder":{"type":"Sequence","decoders":[
      {"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},
      {"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
    "model":{"type":"BPE","unk_token":"<unk>","byte_fallback":)") +
         (byte_fallback ? "true" : "false") + R"(,"fuse_unk":)" + (fuse_unk ? "true" : "false") +
         R"(,"vocab":{)" + vocab.str() + R"(},"merges":["▁ a",["▁a","b"]]}})";
}

int32_t byte_id(int b) { return 3 + b; }

// One token per character of "abcdefghijklmnopqrstuvwxyz <>/" plus a few
// merges, no normalizer or pre-tokenizer, decoder Fuse; added tokens as given.
std::string char_model_json(const std::string& added_tokens, bool ignore_merges,
                            const std::string& extra_vocab = "") {
  std::string chars = "abcdefghijklmnopqrstuvwxyz <>/";
  std::ostringstream vocab;
  for (size_t i = 0; i < chars.size(); ++i) {
    vocab << (i ? "," : "") << "\"" << chars[i] << "\":" << i;
  }
  vocab << R"(,"bc":40,"ab":41)" << extra_vocab;
  return R"({"added_tokens":[)" + added_tokens + R"(],
    "decoder":{"type":"Fuse"},
    "model":{"type":"BPE","ignore_merges":)" +
         (ignore_merges ? "true" : "false") + R"(,"vocab":{)" + vocab.str() +
         R"(},"merges":["b c","a b"]}})";
}

std::vector<int32_t> ids_of(const Tokenizer& t, const std::string& chars) {
  std::vector<int32_t> ids;
  for (char c : chars) ids.push_back(*t.token_to_id(std::string(1, c)));
  return ids;
}

// ---------------------------------------------------------------- errors

TEST(TokenizerErrors, MissingFileIsAnIoErrorNamingThePath) {
  expect_error<IoError>([] { Tokenizer::from_file("/nonexistent/tokenizer.json"); },
                        {"/nonexistent/tokenizer.json"});
}

TEST(TokenizerErrors, MalformedJsonNamesTheFile) {
  expect_error<InvalidInputError>([] { Tokenizer::from_json("{\"model\": [", "bad.json"); },
                                  {"bad.json", "expected JSON"});
}

TEST(TokenizerErrors, MissingModelNamesTheKey) {
  expect_error<InvalidInputError>([] { Tokenizer::from_json("{}", "t.json"); },
                                  {"t.json", "model", "expected this key"});
}

TEST(TokenizerErrors, MissingVocabNamesTheKey) {
  expect_error<InvalidInputError>(
      [] { Tokenizer::from_json(R"({"model":{"type":"BPE","merges":[]}})", "t.json"); },
      {"t.json", "model.vocab"});
}

TEST(TokenizerErrors, WrongJsonTypeNamesKeyAndKindFound) {
  expect_error<InvalidInputError>(
      [] { Tokenizer::from_json(R"({"model":{"type":"BPE","vocab":[],"merges":[]}})", "t.json"); },
      {"t.json", "model.vocab", "expected an object", "array"});
}

TEST(TokenizerErrors, ModelsOtherThanBpeAreRejectedNamingTheType) {
  for (const char* type : {"WordPiece", "Unigram", "WordLevel"}) {
    std::string json = std::string(R"({"model":{"type":")") + type + R"(","vocab":{}}})";
    expect_error<InvalidInputError>([&] { Tokenizer::from_json(json, "t.json"); },
                                    {"t.json", "model.type", type});
  }
}

TEST(TokenizerErrors, UnknownPreTokenizerNamesTheNestedKeyAndType) {
  std::string json = R"({"pre_tokenizer":{"type":"Sequence","pretokenizers":[
      {"type":"Digits","individual_digits":true},{"type":"Whitespace"}]},
    "model":{"type":"BPE","vocab":{},"merges":[]}})";
  expect_error<InvalidInputError>([&] { Tokenizer::from_json(json, "t.json"); },
                                  {"t.json", "pre_tokenizer.pretokenizers[1].type", "Whitespace"});
}

TEST(TokenizerErrors, UnknownNormalizerAndDecoderNameKeyAndType) {
  expect_error<InvalidInputError>(
      [] {
        Tokenizer::from_json(
            R"({"normalizer":{"type":"NFKC"},"model":{"type":"BPE","vocab":{},"merges":[]}})",
            "t.json");
      },
      {"t.json", "normalizer.type", "NFKC"});
  expect_error<InvalidInputError>(
      [] {
        Tokenizer::from_json(
            R"({"decoder":{"type":"WordPiece"},"model":{"type":"BPE","vocab":{},"merges":[]}})",
            "t.json");
      },
      {"t.json", "decoder.type", "WordPiece"});
}

TEST(TokenizerErrors, SplitRegexWithoutAScannerIsNamed) {
  std::string json = R"({"pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\w+"},
    "behavior":"Isolated","invert":false},"model":{"type":"BPE","vocab":{},"merges":[]}})";
  expect_error<InvalidInputError>([&] { Tokenizer::from_json(json, "t.json"); },
                                  {"t.json", "pre_tokenizer.pattern.Regex", "\\w+"});
}

TEST(TokenizerErrors, MergeOfATokenOutsideTheVocabularyIsNamed) {
  std::string json = R"({"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":["a b"]}})";
  expect_error<InvalidInputError>([&] { Tokenizer::from_json(json, "t.json"); },
                                  {"t.json", "model.merges[0]", "ab"});
}

TEST(TokenizerErrors, TextThatIsNotUtf8IsRejected) {
  Tokenizer t = Tokenizer::from_json(sentencepiece_json(true, true), "sp");
  expect_error<InvalidInputError>([&] { t.encode("a\xC3(", false); }, {"UTF-8", "byte 1"});
}

TEST(TokenizerErrors, IdToTokenOfAnUnknownIdThrows) {
  Tokenizer t = Tokenizer::from_json(sentencepiece_json(true, true), "sp");
  expect_error<InvalidInputError>([&] { t.id_to_token(100000); }, {"100000"});
}

// ---------------------------------------------------------------- the model

TEST(Bpe, MergesApplyInRankOrder) {
  Tokenizer t = Tokenizer::from_json(sentencepiece_json(true, true), "sp");
  // "▁ab": "▁ a" (rank 0) then "▁a b" (rank 1).
  EXPECT_EQ(t.encode("ab", false), std::vector<int32_t>({263}));
  EXPECT_EQ(t.encode("ab", true), std::vector<int32_t>({1, 263}));
}

TEST(Bpe, CharactersOutsideTheVocabularyFallBackToByteTokens) {
  Tokenizer t = Tokenizer::from_json(sentencepiece_json(true, true), "sp");
  // "é" is C3 A9.
  std::vector<int32_t> ids = t.encode("a é", false);
  EXPECT_EQ(ids, std::vector<int32_t>({262, 259, byte_id(0xC3), byte_id(0xA9)}));
  EXPECT_EQ(t.decode(ids, false), "a é");
  // An invalid byte sequence decodes to one U+FFFD per byte, as ByteFallback does.
  EXPECT_EQ(t.decode({260, byte_id(0xC3)}, false), "a\xEF\xBF\xBD");
}

TEST(Bpe, WithoutByteFallbackUnknownCharactersFuseIntoOneUnk) {
  Tokenizer fused = Tokenizer::from_json(sentencepiece_json(false, true), "sp");
  EXPECT_EQ(fused.encode("a ééé", false), std::vector<int32_t>({262, 259, 0}));
  Tokenizer unfused = Tokenizer::from_json(sentencepiece_json(false, false), "sp");
  EXPECT_EQ(unfused.encode("a ééé", false), std::vector<int32_t>({262, 259, 0, 0, 0}));
}

TEST(Bpe, IgnoreMergesEmitsAWordOfTheVocabularyWhole) {
  // "abc" by merges: "b c" (rank 0) first, then "a" + "bc" has no merge.
  Tokenizer merging = Tokenizer::from_json(char_model_json("", false, R"(,"abc":42)"), "c");
  EXPECT_EQ(merging.encode("abc", false), std::vector<int32_t>({0, 40}));
  Tokenizer whole = Tokenizer::from_json(char_model_json("", true, R"(,"abc":42)"), "c");
  EXPECT_EQ(whole.encode("abc", false), std::vector<int32_t>({42}));
  // A word not in the vocabulary still goes through the merges.
  EXPECT_EQ(whole.encode("abcd", false), std::vector<int32_t>({0, 40, 3}));
}

// ---------------------------------------------------------------- added tokens

const char kAdded[] = R"(
  {"id":100,"content":"<s>","special":true,"normalized":false},
  {"id":101,"content":"<mask>","special":false,"normalized":false,"lstrip":true,"rstrip":true},
  {"id":102,"content":"hello","special":false,"normalized":false,"single_word":true},
  {"id":103,"content":"<s>>","special":true,"normalized":false})";

TEST(AddedTokens, AreSplitOutBeforeTheModelRuns) {
  Tokenizer t = Tokenizer::from_json(char_model_json(kAdded, false), "c");
  std::vector<int32_t> expected = ids_of(t, "x");
  expected.push_back(100);
  for (int32_t id : ids_of(t, "y")) expected.push_back(id);
  EXPECT_EQ(t.encode("x<s>y", false), expected);
}

TEST(AddedTokens, TheLongestMatchAtTheLeftmostPositionWins) {
  Tokenizer t = Tokenizer::from_json(char_model_json(kAdded, false), "c");
  EXPECT_EQ(t.encode("<s>>", false), std::vector<int32_t>({103}));
}

TEST(AddedTokens, LstripAndRstripTakeTheSpacesAround) {
  Tokenizer t = Tokenizer::from_json(char_model_json(kAdded, false), "c");
  std::vector<int32_t> expected = ids_of(t, "x");
  expected.push_back(101);
  for (int32_t id : ids_of(t, "y")) expected.push_back(id);
  EXPECT_EQ(t.encode("x   <mask>  y", false), expected);
}

TEST(AddedTokens, SingleWordMatchesOnlyBetweenNonWordCharacters) {
  Tokenizer t = Tokenizer::from_json(char_model_json(kAdded, false), "c");
  std::vector<int32_t> expected = {102};
  for (int32_t id : ids_of(t, " x")) expected.push_back(id);
  EXPECT_EQ(t.encode("hello x", false), expected);
  EXPECT_EQ(t.encode("helloworld", false), t.encode("helloworld", false));
  std::vector<int32_t> inside = t.encode("ahellob", false);
  EXPECT_EQ(std::count(inside.begin(), inside.end(), 102), 0);
  std::vector<int32_t> before = t.encode("helloworld", false);
  EXPECT_EQ(std::count(before.begin(), before.end(), 102), 0);
}

TEST(AddedTokens, SkipSpecialTokensDropsOnlySpecialOnes) {
  Tokenizer t = Tokenizer::from_json(char_model_json(kAdded, false), "c");
  std::vector<int32_t> ids = t.encode("a<s>b<mask>", false);
  EXPECT_EQ(t.decode(ids, false), "a<s>b<mask>");
  EXPECT_EQ(t.decode(ids, true), "ab<mask>");
  EXPECT_TRUE(t.is_special(100));
  EXPECT_FALSE(t.is_special(101));
}

TEST(AddedTokens, LookupsSeeAddedTokensAndTheVocabulary) {
  Tokenizer t = Tokenizer::from_json(char_model_json(kAdded, false), "c");
  EXPECT_EQ(t.token_to_id("<s>"), 100);
  EXPECT_EQ(t.token_to_id("bc"), 40);
  EXPECT_EQ(t.token_to_id("nope"), std::nullopt);
  EXPECT_EQ(t.id_to_token(101), "<mask>");
  EXPECT_EQ(t.id_to_token(41), "ab");
  EXPECT_EQ(t.vocab_size(), 104);
}

// ---------------------------------------------------------------- streaming

TEST(StreamingDecoder, HoldsBackAnIncompleteUtf8Character) {
  Tokenizer t = Tokenizer::from_json(sentencepiece_json(true, true), "sp");
  StreamingDecoder stream(t, true);
  EXPECT_EQ(stream.append(1), "");     // <s>, skipped
  EXPECT_EQ(stream.append(262), "a");  // "▁a": the leading space of the text is stripped
  EXPECT_EQ(stream.append(259), " ");  // "▁"
  EXPECT_EQ(stream.append(byte_id(0xC3)), "");
  EXPECT_EQ(stream.append(byte_id(0xA9)), "é");
  EXPECT_EQ(stream.append(263), " ab");  // later tokens keep their leading space
  EXPECT_EQ(stream.finish(), "");
}

TEST(StreamingDecoder, FinishFlushesWhatIsHeldBack) {
  Tokenizer t = Tokenizer::from_json(sentencepiece_json(true, true), "sp");
  StreamingDecoder stream(t, false);
  EXPECT_EQ(stream.append(260), "a");
  EXPECT_EQ(stream.append(byte_id(0xE2)), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");
}

// ---------------------------------------------------------------- long inputs

// The pre-tokenizer scanners never backtrack: inputs that make a backtracking
// regex engine quadratic (long whitespace runs before a letter, long runs of
// one class) encode in time proportional to their length.
TEST(LongInputs, EncodeInLinearTime) {
  Tokenizer t = Tokenizer::from_file("tokenizer/testdata/llama3_style.tokenizer.json");
  const size_t n = 200000;
  std::string contractions;
  for (size_t i = 0; i < n / 2; ++i) contractions += "'s";
  for (const std::string& text :
       {std::string(n, ' ') + "x", std::string(n, 'a'), std::string(n, '\n') + " \t", contractions,
        std::string(n, '!') + "\r\n"}) {
    auto start = std::chrono::steady_clock::now();
    std::vector<int32_t> ids = t.encode(text, false);
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(t.decode(ids, false), text);
    EXPECT_LT(seconds, 2.0) << "input of " << text.size() << " bytes";
  }
}

// ---------------------------------------------------------------- threads

TEST(TokenizerThreads, ConstMethodsRunFromSeveralThreadsAtOnce) {
  Tokenizer t = Tokenizer::from_file("tokenizer/testdata/llama3_style.tokenizer.json");
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back("Thread " + std::to_string(i) + ": héllo wörld, 你好 🤖 don't " +
                    std::string(i % 7, ' ') + std::to_string(i * 7919));
  }
  std::vector<std::vector<int32_t>> serial;
  {
    Tokenizer fresh = Tokenizer::from_file("tokenizer/testdata/llama3_style.tokenizer.json");
    for (const auto& s : texts) serial.push_back(fresh.encode(s, true));
  }
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int w = 0; w < 4; ++w) {
    threads.emplace_back([&, w] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          size_t k = (i + w * 37) % texts.size();  // each thread in its own order
          std::vector<int32_t> ids = t.encode(texts[k], true);
          if (ids != serial[k] || t.decode(ids, true) != texts[k]) ++mismatches[w];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int w = 0; w < 4; ++w) EXPECT_EQ(mismatches[w], 0) << "thread " << w;
}

}  // namespace
}  // namespace stowage::tokenizer
