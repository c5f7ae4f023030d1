// CLIP tokenizer (pipeline/clip_tokenizer.h) against transformers' CLIPTokenizer: the golden
// tokenizer_cases.json, plus cases produced at development time with transformers 5.24
// (`CLIPTokenizer.from_pretrained(<golden>/model/tokenizer)`, padding="max_length",
// max_length=77, truncation=True; the truncated text is diffusers' batch_decode of the ids
// past position 76). Every test needs the real CLIP vocabulary in the golden folder and skips
// without it.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "pipeline/clip_tokenizer.h"
#include "test_util.h"

namespace hyrt::pipeline {
namespace {

constexpr int32_t kBos = 49406;
constexpr int32_t kEos = 49407;

// Loading the 49,408-token vocabulary takes a moment: share one tokenizer across tests.
const ClipTokenizer* golden_tokenizer() {
  static const std::unique_ptr<ClipTokenizer> tokenizer = []() -> std::unique_ptr<ClipTokenizer> {
    const auto dir = test::golden_dir();
    if (!dir) return nullptr;
    return std::make_unique<ClipTokenizer>(ClipTokenizer::load(*dir / "model" / "tokenizer"));
  }();
  return tokenizer.get();
}

#define REQUIRE_TOKENIZER()                                        \
  const ClipTokenizer* tok = golden_tokenizer();                   \
  if (tok == nullptr) {                                            \
    GTEST_SKIP() << "golden data (the CLIP vocabulary) not found"; \
  }                                                                \
  static_assert(true)

TEST(ClipTokenizer, GoldenCases) {
  REQUIRE_TOKENIZER();
  const auto dir = test::golden_dir();
  std::ifstream in(*dir / "tokenizer_cases.json");
  ASSERT_TRUE(in);
  const auto cases = nlohmann::json::parse(in);
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    const auto prompt = c["prompt"].get<std::string>();
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto got = tok->encode(prompt);
    EXPECT_EQ(got.ids, want) << "prompt: '" << prompt << "'";
  }
}

TEST(ClipTokenizer, SpecialIdsAndConfig) {
  REQUIRE_TOKENIZER();
  EXPECT_EQ(tok->start_of_text_id(), kBos);
  EXPECT_EQ(tok->end_of_text_id(), kEos);
  EXPECT_EQ(tok->vocab_size(), 49408u);
  EXPECT_EQ(tok->model_max_length(), 77);
  EXPECT_EQ(tok->token_to_id("cat</w>"), 2368);
  EXPECT_EQ(tok->token_to_id("no such token"), -1);
}

// Expected content ids (with <|startoftext|> first and the closing <|endoftext|>), the number
// of content tokens cut and diffusers' "truncated" text; everything after is padding.
struct ReferenceCase {
  std::string prompt;
  std::vector<int32_t> ids;
  int num_truncated;
  std::string truncated_text;
};

const std::string kRepeatX(300, 'x');

const std::vector<ReferenceCase>& reference_cases() {
  static const std::vector<ReferenceCase> cases = {
      {"Hello, world! It's a dog's life; we're here & they've gone.",
       {49406, 3306, 267, 1002, 256, 585, 568,  320,  1929, 568,  970,
        282,   649,  982, 763,  261, 889, 1200, 3601, 269,  49407},
       0,
       ""},
      {"I'll say: \"don't\" -- you'd (maybe) I'm ok...",
       {49406, 328,  1342, 1451, 281, 257, 847, 713,  257, 2432,
        592,   1896, 263,  3746, 264, 328, 880, 2481, 678, 49407},
       0,
       ""},
      {"numbers 0123456789, 3.14159 and 1,000,000 + 42% of $5",
       {49406, 6121, 271, 272, 273, 274, 275, 276, 277, 278, 279, 280,  267,
        274,   269,  272, 275, 272, 276, 280, 537, 272, 267, 271, 271,  271,
        267,   271,  271, 271, 266, 275, 273, 260, 539, 259, 276, 49407},
       0,
       ""},
      {"café crème brûlée, naïve Zoë, Ærøskøbing, straße",
       {49406, 15304, 1075,  12138, 614,  711,   127, 119,   75,   13489,
        267,   1097,  35689, 563,   4397, 40520, 267, 42495, 81,   17483,
        909,   17483, 5665,  267,   1894, 127,   253, 324,   49407},
       0,
       ""},
      {"emoji 🚀🔥👍🏽 and ♥ ★ ✨",
       {49406, 16327, 22400, 3191, 43722, 537, 3405, 10643, 3531, 49407},
       0,
       ""},
      {"CJK 猫が好き 日本語 中文 한국어",
       {49406, 66,  9702,  163, 234,   104, 4813,  234, 29290, 121, 4813,  491, 39121, 44353,
        34002, 508, 19759, 255, 29032, 485, 15197, 250, 31871, 255, 31625, 368, 49407},
       0,
       ""},
      {"Ελληνικά ΣΟΦΙΑ Русский ТЕКСТ עברית العربية",
       {49406, 138,   113,   138,   119,   138,   119,   138,   115,   138, 121,   138,
        117,   138,   118,   138,   361,   139,   225,   138,   123,   139, 228,   138,
        117,   138,   365,   16370, 39729, 23669, 23669, 27152, 29503, 373, 17875, 22176,
        27152, 23669, 141,   480,   147,   95,    147,   239,   147,   101, 147,   247,
        147,   359,   12973, 18843, 10948, 16378, 12046, 20915, 49407},
       0,
       ""},
      {"   multiple     spaces\t\ttabs\nnewlines   ",
       {49406, 6470, 9006, 29163, 1218, 3418, 49407},
       0,
       ""},
      {"", {49406, 49407}, 0, ""},
      {"masterpiece, best quality, (ultra-detailed:1.2), [cat|dog], <lora:foo:0.8>",
       {49406, 12066, 267,   949,  3027, 267,  263, 8118, 268,   12609, 281,
        272,   269,   273,   2361, 314,  2368, 347, 1929, 34067, 283,   2179,
        320,   281,   23435, 281,  271,  269,  279, 285,  49407},
       0,
       ""},
      {"ROCK'N'ROLL isn't DEAD'S",
       {49406, 2172, 262, 333, 262, 3341, 2923, 713, 2747, 568, 49407},
       0,
       ""},
      {"a photo of <|endoftext|> cat", {49406, 320, 1125, 539, 49407, 2368, 49407}, 0, ""},
      {kRepeatX,
       {49406, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035,
        32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035,
        32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035,
        32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035,
        32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035,
        32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 32035, 22819, 49407},
       0,
       ""},
      {"portrait of a wizard with a long beard portrait of a wizard with a long beard portrait of "
       "a wizard with a long beard portrait of a wizard with a long beard portrait of a wizard "
       "with a long beard portrait of a wizard with a long beard portrait of a wizard with a long "
       "beard portrait of a wizard with a long beard portrait of a wizard with a long beard "
       "portrait of a wizard with a long beard portrait of a wizard with a long beard portrait of "
       "a wizard with a long beard",
       {49406, 5352, 539, 320, 14295, 593, 320, 1538, 9052, 5352, 539, 320, 14295, 593, 320, 1538,
        9052,  5352, 539, 320, 14295, 593, 320, 1538, 9052, 5352, 539, 320, 14295, 593, 320, 1538,
        9052,  5352, 539, 320, 14295, 593, 320, 1538, 9052, 5352, 539, 320, 14295, 593, 320, 1538,
        9052,  5352, 539, 320, 14295, 593, 320, 1538, 9052, 5352, 539, 320, 14295, 593, 320, 1538,
        9052,  5352, 539, 320, 14295, 593, 320, 1538, 9052, 5352, 539, 320, 49407},
       21,
       "wizard with a long beard portrait of a wizard with a long beard portrait of a wizard with "
       "a long beard"},

  };
  return cases;
}

TEST(ClipTokenizer, MatchesTransformers) {
  REQUIRE_TOKENIZER();
  for (const auto& c : reference_cases()) {
    SCOPED_TRACE("prompt: '" + c.prompt + "'");
    const TokenizeResult got = tok->encode(c.prompt);
    ASSERT_EQ(got.ids.size(), 77u);
    const std::vector<int32_t> head(got.ids.begin(), got.ids.begin() + c.ids.size());
    EXPECT_EQ(head, c.ids);
    for (size_t i = c.ids.size(); i < got.ids.size(); ++i)
      ASSERT_EQ(got.ids[i], kEos) << i;
    EXPECT_EQ(got.num_truncated_tokens, c.num_truncated);
    EXPECT_EQ(got.truncated_text, c.truncated_text);
  }
}

TEST(ClipTokenizer, TruncationKeepsFinalEndOfText) {
  REQUIRE_TOKENIZER();
  std::string prompt;
  for (int i = 0; i < 100; ++i)
    prompt += "cat ";
  const auto r = tok->encode(prompt);
  ASSERT_EQ(r.ids.size(), 77u);
  EXPECT_EQ(r.ids.front(), kBos);
  for (int i = 1; i < 76; ++i)
    EXPECT_EQ(r.ids[i], 2368);
  EXPECT_EQ(r.ids.back(), kEos);
  EXPECT_EQ(r.num_truncated_tokens, 25);
  EXPECT_EQ(r.truncated_text.size(), 25u * 4 - 1);  // "cat cat ... cat"

  const auto short_form = tok->encode("a red circle", 8);
  EXPECT_EQ(short_form.ids, (std::vector<int32_t>{kBos, 320, 736, 7117, kEos, kEos, kEos, kEos}));
  const auto cut = tok->encode("a red circle", 4);
  EXPECT_EQ(cut.ids, (std::vector<int32_t>{kBos, 320, 736, kEos}));
  EXPECT_EQ(cut.num_truncated_tokens, 1);
  EXPECT_EQ(cut.truncated_text, "circle");
  EXPECT_THROW(tok->encode("x", 1), Error);
}

TEST(ClipTokenizer, DecodeRoundTrip) {
  REQUIRE_TOKENIZER();
  const std::string text = "a photo of a café, 42 cats!";
  const auto ids = tok->tokenize(text);
  EXPECT_EQ(tok->decode(ids), "a photo of a café , 4 2 cats !");
  EXPECT_EQ(tok->decode(std::vector<int32_t>{}), "");
  EXPECT_THROW(tok->decode(std::vector<int32_t>{49408}), Error);
  EXPECT_THROW(tok->decode(std::vector<int32_t>{-1}), Error);
}

TEST(ClipTokenizer, InvalidUtf8DoesNotThrow) {
  REQUIRE_TOKENIZER();
  const auto r = tok->encode(std::string("bad \xff\xfe bytes \xc3"));
  EXPECT_EQ(r.ids.front(), kBos);
  EXPECT_EQ(r.ids.size(), 77u);
}

// encode() is documented as safe to call concurrently (the BPE cache is locked).
TEST(ClipTokenizer, ConcurrentEncode) {
  REQUIRE_TOKENIZER();
  const std::vector<std::string> prompts = {"a red circle on a blue background",
                                            "A photo of an astronaut riding a horse, 4k",
                                            "naïve café déjà vu", "emoji 🚀 and CJK 猫 text"};
  std::vector<std::vector<int32_t>> want;
  for (const auto& p : prompts)
    want.push_back(tok->encode(p).ids);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 200; ++rep) {
        const size_t k = (t + rep) % prompts.size();
        // Vary the words so the cache both hits and misses.
        const auto extra = tok->encode(prompts[k] + " word" + std::to_string(rep)).ids;
        if (tok->encode(prompts[k]).ids != want[k] || extra.size() != 77) ++mismatches[t];
      }
    });
  }
  for (auto& th : threads)
    th.join();
  for (int m : mismatches)
    EXPECT_EQ(m, 0);
}

TEST(ClipTokenizer, MissingFilesNameEachPath) {
  try {
    ClipTokenizer::load("/nonexistent/tokenizer");
    FAIL() << "expected kNotFound";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("/nonexistent/tokenizer/vocab.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("/nonexistent/tokenizer/merges.txt"), std::string::npos) << msg;
  }
}

TEST(ClipTokenizer, MalformedFiles) {
  const auto dir = std::filesystem::temp_directory_path() / "hyrt_tokenizer_test";
  std::filesystem::create_directories(dir);
  auto write = [&](const char* name, const std::string& text) {
    std::ofstream(dir / name, std::ios::binary) << text;
  };
  // A tiny well-formed vocabulary: BPE merges "c a" and "ca t</w>".
  write("vocab.json",
        R"({"c": 0, "a": 1, "t</w>": 2, "ca": 3, "cat</w>": 4, "<|startoftext|>": 5,
            "<|endoftext|>": 6})");
  write("merges.txt", "#version: 0.2\nc a\nca t</w>\n");
  const auto tiny = ClipTokenizer::load(dir);
  EXPECT_EQ(tiny.tokenize("CAT"), (std::vector<int32_t>{4}));
  EXPECT_EQ(tiny.tokenize("cta"), (std::vector<int32_t>{0, 6, 6}));  // unknown symbols -> unk
  EXPECT_EQ(tiny.encode("cat", 4).ids, (std::vector<int32_t>{5, 4, 6, 6}));

  write("merges.txt", "#version: 0.2\nc a b\n");
  try {
    ClipTokenizer::load(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidModel);
    EXPECT_NE(std::string(e.what()).find("merges.txt:2"), std::string::npos) << e.what();
  }
  write("merges.txt", "c a\n");
  write("vocab.json", R"({"c": 0, "a": 1})");
  EXPECT_THROW(ClipTokenizer::load(dir), Error);  // no <|startoftext|>
  write("vocab.json", "[1, 2");
  EXPECT_THROW(ClipTokenizer::load(dir), Error);
  std::filesystem::remove_all(dir);
}

TEST(ClipTokenizer, UnicodeClasses) {
  EXPECT_TRUE(is_unicode_letter(U'a'));
  EXPECT_TRUE(is_unicode_letter(U'é'));
  EXPECT_TRUE(is_unicode_letter(U'Ж'));
  EXPECT_TRUE(is_unicode_letter(U'猫'));
  EXPECT_TRUE(is_unicode_letter(U'한'));
  EXPECT_FALSE(is_unicode_letter(U'1'));
  EXPECT_FALSE(is_unicode_letter(U'🚀'));
  EXPECT_FALSE(is_unicode_letter(U'\u0301'));  // a combining mark is category Mn
  EXPECT_TRUE(is_unicode_number(U'7'));
  EXPECT_TRUE(is_unicode_number(U'½'));
  EXPECT_TRUE(is_unicode_number(U'٣'));
  EXPECT_FALSE(is_unicode_number(U'x'));
  EXPECT_TRUE(is_unicode_whitespace(U'\u3000'));
  EXPECT_FALSE(is_unicode_whitespace(U'_'));
  EXPECT_EQ(unicode_simple_lower(U'Q'), U'q');
  EXPECT_EQ(unicode_simple_lower(U'É'), U'é');
  EXPECT_EQ(unicode_simple_lower(U'Σ'), U'σ');
  EXPECT_EQ(unicode_simple_lower(U'Ж'), U'ж');
  EXPECT_EQ(unicode_simple_lower(U'Ā'), U'ā');  // a stride-2 run
  EXPECT_EQ(unicode_simple_lower(U'ā'), U'ā');
  EXPECT_EQ(unicode_simple_lower(U'猫'), U'猫');
}

}  // namespace
}  // namespace hyrt::pipeline
