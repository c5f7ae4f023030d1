// A1111's prompt syntax (pipeline/prompt_syntax.h): the parser against the behaviour A1111
// documents (its wiki, "Features → Attention/emphasis", and parse_prompt_attention's examples),
// the chunking of long prompts (75 tokens, comma padding backtrack, BREAK, padding), and the
// mean-restoring emphasis. The chunk tests use a small tokenizer where every letter, digit and
// punctuation character of a word is one token, so token counts are easy to read.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/error.h"
#include "pipeline/prompt_syntax.h"
#include "test_util.h"

namespace hyrt::pipeline {
namespace {

struct Span {
  std::string text;
  double weight;
};
constexpr double kBreakMark = -1;  // how the expectations below write a BREAK

std::vector<Span> parse(std::string_view prompt) {
  std::vector<Span> out;
  for (const PromptSpan& s : parse_prompt_attention(prompt))
    out.push_back({s.is_break ? "BREAK" : s.text, s.is_break ? kBreakMark : s.weight});
  return out;
}

void expect_spans(std::string_view prompt, const std::vector<Span>& want) {
  SCOPED_TRACE(std::string("prompt: ") + std::string(prompt));
  const std::vector<Span> got = parse(prompt);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].text, want[i].text) << "span " << i;
    EXPECT_DOUBLE_EQ(got[i].weight, want[i].weight) << "span " << i << " (" << want[i].text << ")";
  }
}

void expect_refused(std::string_view prompt, std::string_view message) {
  try {
    parse_prompt_attention(prompt);
    ADD_FAILURE() << "accepted: " << prompt;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << prompt;
    EXPECT_NE(std::string(e.what()).find(message), std::string::npos)
        << prompt << " -> " << e.what();
  }
}

TEST(PromptSyntax, WikiEmphasisExamples) {
  expect_spans("a (large) dog", {{"a ", 1}, {"large", 1.1}, {" dog", 1}});
  expect_spans("a ((large)) dog", {{"a ", 1}, {"large", 1.1 * 1.1}, {" dog", 1}});
  expect_spans("a (((large))) dog", {{"a ", 1}, {"large", 1.1 * 1.1 * 1.1}, {" dog", 1}});
  expect_spans("a (large:1.5) dog", {{"a ", 1}, {"large", 1.5}, {" dog", 1}});
  expect_spans("a (large:0.25) dog", {{"a ", 1}, {"large", 0.25}, {" dog", 1}});
  expect_spans("a [large] dog", {{"a ", 1}, {"large", 1 / 1.1}, {" dog", 1}});
  expect_spans("a [[large]] dog", {{"a ", 1}, {"large", 1 / 1.1 / 1.1}, {" dog", 1}});
  expect_spans("a \\(large\\) dog", {{"a (large) dog", 1}});
  expect_spans("normal text", {{"normal text", 1}});
  expect_spans("", {{"", 1}});
}

TEST(PromptSyntax, ParsePromptAttentionExamples) {
  expect_spans("an (important) word", {{"an ", 1}, {"important", 1.1}, {" word", 1}});
  expect_spans("(unbalanced", {{"unbalanced", 1.1}});
  expect_spans("\\(literal\\]", {{"(literal]", 1}});
  expect_spans("(unnecessary)(parens)", {{"unnecessaryparens", 1.1}});
  // The (((house:1.3)) leaves one bracket open: everything after it is × 1.1.
  expect_spans("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
               {{"a ", 1},
                {"house", 1.3 * 1.1 * 1.1},
                {" ", 1.1},
                {"on", 1 / 1.1 * 1.1},
                {" a ", 1.1},
                {"hill", 0.5 * 1.1},
                {", sun, ", 1.1},
                {"sky", 1.1 * 1.1 * 1.1 * 1.1},
                {".", 1.1}});
}

TEST(PromptSyntax, NestingAndUnbalancedBrackets) {
  expect_spans("((a) b)", {{"a", 1.1 * 1.1}, {" b", 1.1}});
  expect_spans("([a])", {{"a", 1 / 1.1 * 1.1}});
  expect_spans("((a:1.5))", {{"a", 1.5 * 1.1}});
  expect_spans("[a (b:2)]", {{"a ", 1 / 1.1}, {"b", 2 / 1.1}});
  expect_spans("a) b]", {{"a) b]", 1}});  // stray closing brackets are text
  expect_spans("[unbalanced", {{"unbalanced", 1 / 1.1}});
  expect_spans("((a", {{"a", 1.1 * 1.1}});
  expect_spans("(a] b)", {{"a] b", 1.1}});  // ] closes no (
  expect_spans("()", {{"", 1}});
  expect_spans("(café)", {{"café", 1.1}});
  double deep = 1;
  for (int i = 0; i < 256; ++i)
    deep *= 1.1;
  expect_spans(std::string(256, '(') + "a", {{"a", deep}});  // kMaxPromptBracketDepth
}

TEST(PromptSyntax, WeightsAndColons) {
  expect_spans("(a: 1.5 )", {{"a", 1.5}});
  expect_spans("(a:-1)", {{"a", -1}});
  expect_spans("(a:+.5)", {{"a", 0.5}});
  expect_spans("(a:5.)", {{"a", 5}});
  expect_spans("(a:0)", {{"a", 0}});
  expect_spans("(12:30)", {{"12", 30}});             // A1111 reads a weight here too
  expect_spans("word:1.5)", {{"word:1.5)", 1}});     // no ( open: text
  expect_spans("(word:1.5]", {{"word:1.5]", 1.1}});  // only ) closes a weight
  expect_spans("[word:1.5]", {{"word:1.5", 1 / 1.1}});
  expect_spans("(a:1.5", {{"a:1.5", 1.1}});  // never closed: text, × 1.1
  expect_spans("(time: 10 am)", {{"time: 10 am", 1.1}});
  expect_spans("(word:)", {{"word:", 1.1}});
  expect_spans("a:b", {{"a:b", 1}});
  expect_spans("(style\\: anime)", {{"style: anime", 1.1}});  // \: keeps the colon as text
  expect_spans("(a\\:1.5)", {{"a", 1.5}});                    // ... and a weight stays a weight
  expect_spans("a\\b \\\\ c", {{"ab \\ c", 1}});              // a lone backslash is dropped
  expect_spans("(a:0." + std::string(400, '0') + "1)", {{"a", 0}});  // underflow: 0
}

TEST(PromptSyntax, MalformedWeightsAreRefused) {
  expect_refused("a (word:abc) b", "\"abc\" in \"(word:abc)\" is not a number");
  expect_refused("(style: anime)", "not a number");
  expect_refused("(word:1e5)", "\"1e5\"");
  expect_refused("(word:nan)", "not a number");
  expect_refused("(word:inf)", "not a number");
  expect_refused("(word:1.2.3)", "not a number");
  expect_refused("(word:.)", "not a number");
  expect_refused("(word:-)", "not a number");
  expect_refused("((word:1.5x) b)", "\"1.5x\"");
  expect_refused("(word:1" + std::string(400, '0') + ")", "out of range");
  expect_refused("(word:4" + std::string(38, '0') + ")", "out of range");  // 4e38 > float max
  // 3e38 fits a float; × 1.21 does not.
  expect_refused("(((word:3" + std::string(38, '0') + ")))", "beyond");
  expect_refused(std::string(257, '(') + "a", "brackets open at once");
  expect_refused(std::string(kMaxPromptBytes + 1, 'a'), "bytes");
}

TEST(PromptSyntax, Break) {
  expect_spans("a BREAK b", {{"a", 1}, {"BREAK", kBreakMark}, {"b", 1}});
  expect_spans("a,BREAK,b", {{"a,", 1}, {"BREAK", kBreakMark}, {",b", 1}});
  expect_spans("BREAK a", {{"BREAK", kBreakMark}, {"a", 1}});
  expect_spans("a BREAK BREAK b",
               {{"a", 1}, {"BREAK", kBreakMark}, {"BREAK", kBreakMark}, {"b", 1}});
  expect_spans("(a BREAK b)", {{"a", 1.1}, {"BREAK", kBreakMark}, {"b", 1.1}});
  // Not a whole upper-case word: text.
  expect_spans("aBREAK BREAKfast break BREAK_", {{"aBREAK BREAKfast break BREAK_", 1}});
  expect_spans("éBREAK", {{"éBREAK", 1}});
}

// ---- chunks ----

// Every byte symbol as a token, alone and word-final: "ab c" is a, b</w>, c</w>.
const ClipTokenizer& letters(bool pad_with_bang = false) {
  static const auto make = [](bool bang) {
    std::string vocab = "{";
    int id = 0;
    // One id per entry, in order (each increment its own statement: the operands of one
    // expression are unsequenced).
    auto entry = [&](const std::string& key) {
      vocab += "\"" + key + "\":" + std::to_string(id++) + ",";
    };
    for (char c = '!'; c <= '~'; ++c) {
      std::string s(1, c);
      if (c == '"' || c == '\\') s = "\\" + s;
      entry(s);
      entry(s + "</w>");
    }
    entry("qz");
    entry("qz</w>");
    entry("<|startoftext|>");
    vocab += "\"<|endoftext|>\":" + std::to_string(id) + "}";
    return ClipTokenizer::from_strings(vocab, "#version: 0.2\nq z\n",
                                       bang ? R"({"pad_token": "!"})" : "");
  };
  static const ClipTokenizer plain = make(false), bang = make(true);
  return pad_with_bang ? bang : plain;
}

// n one-letter words: "a a a ..."
std::string words(int n, char c = 'a') {
  std::string s;
  for (int i = 0; i < n; ++i)
    s += (i ? " " : "") + std::string(1, c);
  return s;
}

// The content tokens of chunk k (between its start and end tokens).
std::vector<int32_t> content(const PromptChunks& c, const ClipTokenizer& tok, int k) {
  const auto begin = c.ids.begin() + static_cast<ptrdiff_t>(k) * c.chunk_length;
  EXPECT_EQ(*begin, tok.start_of_text_id());
  const auto end = std::find(begin + 1, begin + c.chunk_length, tok.end_of_text_id());
  EXPECT_NE(end, begin + c.chunk_length) << "chunk " << k << " has no end token";
  for (auto it = end + 1; it != begin + c.chunk_length; ++it)
    EXPECT_EQ(*it, tok.pad_id());
  return std::vector<int32_t>(begin + 1, end);
}

TEST(PromptChunks, ShortPromptIsTheTokenizersEncoding) {
  const ClipTokenizer& tok = letters();
  for (const std::string& p :
       std::vector<std::string>{"", "a b c", "a, (b) [c:1.2] d", words(75)}) {
    const PromptChunks c = chunk_prompt(tok, p);
    ASSERT_EQ(c.num_chunks, 1) << p;
    ASSERT_EQ(c.chunk_length, 77);
    // Brackets are syntax: compare with the text they leave.
    std::string text;
    for (const PromptSpan& s : parse_prompt_attention(p))
      text += s.text;
    EXPECT_EQ(c.ids, tok.encode(text).ids) << p;
    EXPECT_EQ(c.num_truncated_tokens, 0);
  }
  EXPECT_FALSE(chunk_prompt(tok, "a b c").weighted());
  const PromptChunks w = chunk_prompt(tok, "a (b) [c]");
  ASSERT_TRUE(w.weighted());
  EXPECT_EQ(w.weights[0], 1.0f);  // start
  EXPECT_EQ(w.weights[1], 1.0f);
  EXPECT_EQ(w.weights[2], static_cast<float>(1.1));
  EXPECT_EQ(w.weights[3], static_cast<float>(1 / 1.1));
  EXPECT_EQ(w.weights[4], 1.0f);  // end
}

TEST(PromptChunks, LongPromptsSplitIntoChunksOf75) {
  const ClipTokenizer& tok = letters();
  PromptChunks c = chunk_prompt(tok, words(76));
  ASSERT_EQ(c.num_chunks, 2);
  EXPECT_EQ(content(c, tok, 0).size(), 75u);
  EXPECT_EQ(content(c, tok, 1).size(), 1u);
  c = chunk_prompt(tok, words(200));
  ASSERT_EQ(c.num_chunks, 3);
  EXPECT_EQ(c.ids.size(), 3u * 77);
  EXPECT_EQ(content(c, tok, 2).size(), 50u);
  // Weights follow their tokens across chunks.
  c = chunk_prompt(tok, words(74) + " (b c)");
  ASSERT_EQ(c.num_chunks, 2);
  EXPECT_EQ(c.weights[75], static_cast<float>(1.1));
  EXPECT_EQ(c.weights[77 + 1], static_cast<float>(1.1));
  EXPECT_EQ(c.weights[77 + 2], 1.0f);
}

TEST(PromptChunks, CommaPaddingBacktrack) {
  const ClipTokenizer& tok = letters();
  const int32_t comma = tok.token_to_id(",</w>");
  ASSERT_GE(comma, 0);
  // A comma at index i of a full chunk: the 74 - i tokens after it move on if at most 19.
  for (int i : {70, 55, 54, 30}) {
    const std::string p = words(i) + " ," + " " + words(100 - i, 'b');
    const PromptChunks c = chunk_prompt(tok, p);
    const auto first = content(c, tok, 0);
    const bool moved = 75 - i <= kCommaPaddingBacktrack;
    SCOPED_TRACE(i);
    ASSERT_EQ(first.size(), moved ? static_cast<size_t>(i + 1) : 75u);
    if (moved) {
      EXPECT_EQ(first.back(), comma);
    }
    ASSERT_EQ(c.num_chunks, 2);
    EXPECT_EQ(content(c, tok, 1).size(), 101 - first.size());
  }
  // A comma that is itself the 76th token opens the next chunk.
  const PromptChunks c = chunk_prompt(tok, words(75) + " , b");
  ASSERT_EQ(c.num_chunks, 2);
  EXPECT_EQ(content(c, tok, 1), (std::vector<int32_t>{comma, tok.token_to_id("b</w>")}));
}

TEST(PromptChunks, BreakStartsAChunk) {
  const ClipTokenizer& tok = letters();
  PromptChunks c = chunk_prompt(tok, "a BREAK b c");
  ASSERT_EQ(c.num_chunks, 2);
  EXPECT_EQ(content(c, tok, 0).size(), 1u);
  EXPECT_EQ(content(c, tok, 1).size(), 2u);
  EXPECT_EQ(chunk_prompt(tok, "a BREAK").num_chunks, 1);  // nothing after it: no chunk
  c = chunk_prompt(tok, "BREAK a");                       // an empty chunk first
  ASSERT_EQ(c.num_chunks, 2);
  EXPECT_TRUE(content(c, tok, 0).empty());
  EXPECT_EQ(chunk_prompt(tok, "a BREAK BREAK b").num_chunks, 3);
  EXPECT_EQ(chunk_prompt(tok, words(75) + " BREAK b").num_chunks, 2);
}

TEST(PromptChunks, PaddingToTheLongerPrompt) {
  for (bool bang : {false, true}) {
    const ClipTokenizer& tok = letters(bang);
    PromptChunks c = chunk_prompt(tok, "a (b)");
    pad_prompt_chunks(c, tok, 3);
    ASSERT_EQ(c.num_chunks, 3);
    ASSERT_EQ(c.ids.size(), 3u * 77);
    ASSERT_EQ(c.weights.size(), 3u * 77);
    const std::vector<int32_t> empty = tok.encode("").ids;
    for (int k = 1; k < 3; ++k) {
      EXPECT_EQ(std::vector<int32_t>(c.ids.begin() + k * 77, c.ids.begin() + (k + 1) * 77), empty);
      for (int t = 0; t < 77; ++t)
        EXPECT_EQ(c.weights[k * 77 + t], 1.0f);
    }
    EXPECT_EQ(c.ids[3], tok.end_of_text_id());
    EXPECT_EQ(c.ids[4], tok.pad_id());  // "!" for SDXL's second tokenizer
    pad_prompt_chunks(c, tok, 2);       // never shrinks
    EXPECT_EQ(c.num_chunks, 3);
  }
}

TEST(PromptChunks, LengthIsBounded) {
  const ClipTokenizer& tok = letters();
  PromptChunks c = chunk_prompt(tok, words(200), 2);
  EXPECT_EQ(c.num_chunks, 2);
  EXPECT_EQ(c.num_truncated_tokens, 50);
  EXPECT_EQ(c.truncated_text.substr(0, 6), "a a a ");
  // Past kMaxPromptBytes the text is not read at all.
  const std::string huge = words(40000) + " (b:abc)";
  c = chunk_prompt(tok, huge);
  EXPECT_EQ(c.num_chunks, kMaxPromptChunks);
  EXPECT_GT(c.num_truncated_tokens, 0);
  EXPECT_LT(c.truncated_text.size(), 300u);
  EXPECT_THROW(chunk_prompt(tok, "(b:abc)"), Error);
}

// ---- emphasis ----

double mean(const std::vector<float>& v) {
  double s = 0;
  for (float x : v)
    s += x;
  return s / static_cast<double>(v.size());
}

TEST(PromptEmphasis, WeightsTokensAndRestoresTheMean) {
  constexpr int kTokens = 77, kChannels = 16;
  std::vector<float> h = test::random_floats(kTokens * kChannels, 7);
  for (float& x : h)
    x += 0.5f;  // a clearly non-zero mean
  const std::vector<float> before = h;

  std::vector<float> ones(kTokens, 1.0f);
  apply_emphasis(h, ones, kChannels);
  EXPECT_EQ(h, before);  // no weight: untouched, bit for bit

  std::vector<float> w(kTokens, 1.0f);
  w[3] = 1.5f;
  w[4] = 0.5f;
  apply_emphasis(h, w, kChannels);
  EXPECT_NEAR(mean(h), mean(before), 1e-6 * std::abs(mean(before)));
  // Every row is scaled by one factor r, the weighted rows by r · weight.
  const double r = h[0] / before[0];
  for (int t = 0; t < kTokens; ++t)
    for (int c = 0; c < kChannels; ++c) {
      const size_t i = static_cast<size_t>(t) * kChannels + c;
      EXPECT_NEAR(h[i], before[i] * w[t] * r, 1e-5) << t << "," << c;
    }
  EXPECT_NE(r, 1.0);
  EXPECT_THROW(apply_emphasis(h, std::vector<float>(3, 1.0f), kChannels), Error);
}

// A1111's extra-network tags: removed from the text, read in order, default multiplier 1.
TEST(PromptSyntax, LoraTags) {
  const PromptLoras a = extract_lora_tags("a cat <lora:pixel_art:0.8>, sitting<lora:ink>");
  EXPECT_EQ(a.prompt, "a cat , sitting");
  ASSERT_EQ(a.loras.size(), 2u);
  EXPECT_EQ(a.loras[0].name, "pixel_art");
  EXPECT_FLOAT_EQ(a.loras[0].multiplier, 0.8f);
  EXPECT_EQ(a.loras[1].name, "ink");
  EXPECT_FLOAT_EQ(a.loras[1].multiplier, 1.0f);
  const PromptLoras b = extract_lora_tags("<lyco:my style:-0.5> (red:1.2) <other:x>");
  EXPECT_EQ(b.prompt, " (red:1.2) <other:x>");
  ASSERT_EQ(b.loras.size(), 1u);
  EXPECT_EQ(b.loras[0].name, "my style");
  EXPECT_FLOAT_EQ(b.loras[0].multiplier, -0.5f);
  EXPECT_EQ(extract_lora_tags("no tags").prompt, "no tags");
  EXPECT_TRUE(extract_lora_tags("").loras.empty());
  for (const char* bad : {"<lora:x:abc>", "<lora::1>", "<lora:x:1:2>", "<lora:x:nan>",
                          "<lora:x:1e99>", "a <lora:x", "<lora:x:>"})
    EXPECT_THROW(extract_lora_tags(bad), Error) << bad;
}

}  // namespace
}  // namespace hyrt::pipeline
