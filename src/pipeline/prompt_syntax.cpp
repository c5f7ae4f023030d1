// A1111's prompt syntax (see prompt_syntax.h). The parser walks the prompt once, trying at each
// position what A1111's attention regex tries, in its order: the escapes, a lone backslash, the
// opening brackets, a ":number)" weight, the closing brackets, a run of plain text, a lone colon.
#include "pipeline/prompt_syntax.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <system_error>

#include "core/error.h"
#include "weights/json_text.h"

namespace hyrt::pipeline {
namespace {

constexpr double kRoundMultiplier = 1.1;
constexpr double kSquareMultiplier = 1 / 1.1;
constexpr std::string_view kBreak = "BREAK";

// The code point starting at s[i] and its byte length (a bad byte reads as U+FFFD, length 1).
char32_t decode_at(std::string_view s, size_t i, size_t* len) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  *len = 1;
  if (b0 < 0x80) return b0;
  const size_t n = b0 >= 0xF8 ? 0 : b0 >= 0xF0 ? 3 : b0 >= 0xE0 ? 2 : b0 >= 0xC0 ? 1 : 0;
  if (n == 0 || i + n >= s.size()) return 0xFFFD;
  char32_t cp = b0 & (0x3F >> n);
  for (size_t k = 1; k <= n; ++k) {
    const auto b = static_cast<uint8_t>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0xFFFD;
    cp = (cp << 6) | (b & 0x3F);
  }
  *len = n + 1;
  return cp;
}

// The code point ending just before s[i] (i > 0) and its byte length.
char32_t decode_before(std::string_view s, size_t i, size_t* len) {
  size_t start = i - 1;
  while (start > 0 && i - start < 4 && (static_cast<uint8_t>(s[start]) & 0xC0) == 0x80)
    --start;
  size_t l = 0;
  const char32_t cp = decode_at(s, start, &l);
  if (start + l != i) {  // not a well-formed sequence ending at i: the last byte alone
    *len = 1;
    return 0xFFFD;
  }
  *len = l;
  return cp;
}

// Python's `\s` and `\w` on str (the classes A1111's regexes use).
bool is_space(char32_t cp) {
  return is_unicode_whitespace(cp) || (cp >= 0x1C && cp <= 0x1F);
}
bool is_word(char32_t cp) {
  return cp == U'_' || is_unicode_letter(cp) || is_unicode_number(cp);
}

size_t skip_space(std::string_view s, size_t i) {
  while (i < s.size()) {
    size_t len = 0;
    if (!is_space(decode_at(s, i, &len))) break;
    i += len;
  }
  return i;
}

bool is_special(char c) {
  return c != 0 && std::strchr("\\()[]:", c) != nullptr;
}

std::string quote(std::string_view s) {
  return "\"" + weights::excerpt(s, 60) + "\"";
}

// A weight A1111's regex took ([+-]?[.0-9]+): Python's float() of it, refused where float()
// fails (no digit, two dots) or the value is not a finite 32-bit float.
double parse_weight(std::string_view number, std::string_view context) {
  std::string_view v = number;
  if (!v.empty() && v[0] == '+') v.remove_prefix(1);
  const std::string_view mag = !v.empty() && v[0] == '-' ? v.substr(1) : v;
  const auto digits =
      std::count_if(mag.begin(), mag.end(), [](char c) { return c >= '0' && c <= '9'; });
  const auto dots = std::count(mag.begin(), mag.end(), '.');
  if (digits == 0 || dots > 1)
    fail(ErrorCode::kInvalidArgument, "prompt: the weight ", quote(number), " in ", quote(context),
         " is not a number (write a weight as (text:1.5))");
  double w = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), w);
  if (ec == std::errc::result_out_of_range) {
    // Underflow reads as 0 (as Python's float() does); overflow is refused below.
    const size_t int_end = std::min(mag.find('.'), mag.size());
    const bool int_part_nonzero = std::any_of(mag.begin(), mag.begin() + int_end,
                                              [](char c) { return c >= '1' && c <= '9'; });
    w = int_part_nonzero ? std::numeric_limits<double>::infinity() : 0.0;
  } else if (ec != std::errc() || end != v.data() + v.size()) {
    fail(ErrorCode::kInvalidArgument, "prompt: the weight ", quote(number), " in ", quote(context),
         " is not a number (write a weight as (text:1.5))");
  }
  if (!std::isfinite(w) || !std::isfinite(static_cast<float>(w)))
    fail(ErrorCode::kInvalidArgument, "prompt: the weight ", quote(number), " in ", quote(context),
         " is out of range (at most ", std::numeric_limits<float>::max(), ")");
  return w;
}

struct Parser {
  std::string_view s;
  std::vector<PromptSpan> res;
  std::vector<size_t> round, square;  // res.size() when each open bracket was read
  std::vector<size_t> round_at;       // byte offset of each open round bracket (for messages)

  void multiply(size_t start, double m) {
    for (size_t p = start; p < res.size(); ++p)
      if (!res[p].is_break) res[p].weight *= m;
  }

  // A run of plain text, split at each BREAK (A1111's `\s*\bBREAK\b\s*`).
  void push_text(std::string_view t) {
    size_t from = 0, scan = 0;
    for (;;) {
      const size_t at = t.find(kBreak, scan);
      if (at == std::string_view::npos) break;
      size_t len = 0;
      const bool left = at == 0 || !is_word(decode_before(t, at, &len));
      const bool right =
          at + kBreak.size() == t.size() || !is_word(decode_at(t, at + kBreak.size(), &len));
      if (!left || !right) {
        scan = at + 1;
        continue;
      }
      size_t b = at;
      while (b > from) {
        const char32_t cp = decode_before(t, b, &len);
        if (!is_space(cp)) break;
        b -= len;
      }
      res.push_back({std::string(t.substr(from, b - from)), 1.0, false});
      res.push_back({"", 1.0, true});
      from = scan = skip_space(t, at + kBreak.size());
    }
    res.push_back({std::string(t.substr(from)), 1.0, false});
  }

  void open(std::vector<size_t>& stack, size_t at) {
    if (round.size() + square.size() >= static_cast<size_t>(kMaxPromptBracketDepth))
      fail(ErrorCode::kInvalidArgument, "prompt: more than ", kMaxPromptBracketDepth,
           " brackets open at once (at byte ", at, ")");
    stack.push_back(res.size());
  }

  void parse() {
    bool escaped_colon = false;  // a lone backslash just before this colon
    for (size_t i = 0; i < s.size();) {
      const char c = s[i];
      const bool after_backslash = escaped_colon;
      escaped_colon = false;
      if (c == '\\') {
        const char next = i + 1 < s.size() ? s[i + 1] : 0;
        if (next != 0 && std::strchr("()[]\\", next) != nullptr) {
          res.push_back({std::string(1, next), 1.0, false});
          i += 2;
        } else {
          res.push_back({"", 1.0, false});  // A1111 keeps what follows the backslash: nothing
          escaped_colon = next == ':';
          i += 1;
        }
      } else if (c == '(') {
        open(round, i);
        round_at.push_back(i);
        ++i;
      } else if (c == '[') {
        open(square, i);
        ++i;
      } else if (c == ':') {
        i = colon(i, after_backslash);
      } else if (c == ')' && !round.empty()) {
        multiply(round.back(), kRoundMultiplier);
        round.pop_back();
        round_at.pop_back();
        ++i;
      } else if (c == ']' && !square.empty()) {
        multiply(square.back(), kSquareMultiplier);
        square.pop_back();
        ++i;
      } else if (c == ')' || c == ']') {
        push_text(s.substr(i, 1));
        ++i;
      } else {
        size_t j = i;
        while (j < s.size() && !is_special(s[j]))
          ++j;
        push_text(s.substr(i, j - i));
        i = j;
      }
    }
    for (size_t pos : round)
      multiply(pos, kRoundMultiplier);
    for (size_t pos : square)
      multiply(pos, kSquareMultiplier);
  }

  // At a colon: A1111's `:\s*([+-]?[.\d]+)\s*\)`, else a literal colon. Returns the next offset.
  size_t colon(size_t i, bool after_backslash) {
    size_t j = skip_space(s, i + 1);
    const size_t num_begin = j;
    if (j < s.size() && (s[j] == '+' || s[j] == '-')) ++j;
    const size_t digits_begin = j;
    while (j < s.size() && ((s[j] >= '0' && s[j] <= '9') || s[j] == '.'))
      ++j;
    if (j > digits_begin) {
      const size_t close = skip_space(s, j);
      if (close < s.size() && s[close] == ')') {
        if (round.empty()) {
          push_text(s.substr(i, close + 1 - i));  // not inside (: literal text, as in A1111
        } else {
          const std::string_view context = s.substr(round_at.back(), close + 1 - round_at.back());
          multiply(round.back(), parse_weight(s.substr(num_begin, j - num_begin), context));
          round.pop_back();
          round_at.pop_back();
        }
        return close + 1;
      }
    }
    if (!round.empty() && !after_backslash) {
      // One word between the colon and the closing bracket: meant as a weight, and not one.
      size_t k = skip_space(s, i + 1);
      const size_t word_begin = k;
      while (k < s.size()) {
        size_t len = 0;
        const char32_t cp = decode_at(s, k, &len);
        if (is_space(cp) || is_special(s[k])) break;
        k += len;
      }
      const size_t word_end = k;
      k = skip_space(s, k);
      if (word_end > word_begin && k < s.size() && s[k] == ')')
        fail(ErrorCode::kInvalidArgument, "prompt: the weight ",
             quote(s.substr(word_begin, word_end - word_begin)), " in ",
             quote(s.substr(round_at.back(), k + 1 - round_at.back())),
             " is not a number (write a weight as (text:1.5); write \\: for a colon in the text)");
    }
    push_text(s.substr(i, 1));
    return i + 1;
  }
};

}  // namespace

std::vector<PromptSpan> parse_prompt_attention(std::string_view prompt) {
  HYRT_CHECK(prompt.size() <= kMaxPromptBytes, kInvalidArgument, "prompt: ", prompt.size(),
             " bytes; at most ", kMaxPromptBytes, " are read");
  Parser p{prompt, {}, {}, {}, {}};
  p.parse();
  // Join runs of equal weight (A1111 does, before tokenising), drop empty text.
  std::vector<PromptSpan> out;
  for (PromptSpan& r : p.res) {
    if (!out.empty() && !out.back().is_break && !r.is_break && out.back().weight == r.weight) {
      out.back().text += r.text;
    } else {
      out.push_back(std::move(r));
    }
  }
  std::erase_if(out, [](const PromptSpan& r) { return !r.is_break && r.text.empty(); });
  for (const PromptSpan& r : out)
    HYRT_CHECK(std::isfinite(static_cast<float>(r.weight)), kInvalidArgument,
               "prompt: ", quote(r.text), " weighs ", r.weight,
               " after its brackets' multipliers, beyond ", std::numeric_limits<float>::max());
  if (out.empty()) out.push_back({"", 1.0, false});
  return out;
}

bool PromptChunks::weighted() const {
  return std::any_of(weights.begin(), weights.end(), [](float w) { return w != 1.0f; });
}

PromptChunks chunk_prompt(const ClipTokenizer& tokenizer, std::string_view prompt, int max_chunks) {
  HYRT_CHECK(max_chunks >= 1, kInvalidArgument, "chunk_prompt: max_chunks ", max_chunks);
  const int length = tokenizer.model_max_length();
  HYRT_CHECK(length >= 3, kInvalidArgument, "chunk_prompt: the tokenizer's length ", length,
             " leaves no room for a token");
  const size_t room = static_cast<size_t>(length - 2);
  PromptChunks out;
  out.chunk_length = length;

  std::string_view head = prompt;
  if (prompt.size() > kMaxPromptBytes) {
    size_t cut = kMaxPromptBytes;
    while (cut > 0 && (static_cast<uint8_t>(prompt[cut]) & 0xC0) == 0x80)
      --cut;
    head = prompt.substr(0, cut);
    out.num_truncated_tokens = -1;
    out.truncated_text = weights::excerpt(prompt.substr(cut), 200);
  }
  const std::vector<PromptSpan> spans = parse_prompt_attention(head);

  // A1111's tokenize_line, without textual-inversion embeddings.
  struct Chunk {
    std::vector<int32_t> tokens;
    std::vector<float> weights;
  };
  std::vector<Chunk> chunks;
  Chunk chunk;
  int64_t last_comma = -1;
  const int32_t comma = tokenizer.token_to_id(",</w>");
  const auto next_chunk = [&] {
    chunks.push_back(std::move(chunk));
    chunk = Chunk{};
    last_comma = -1;
  };
  for (const PromptSpan& span : spans) {
    if (span.is_break) {
      next_chunk();
      continue;
    }
    const auto weight = static_cast<float>(span.weight);
    for (int32_t token : tokenizer.tokenize(span.text)) {
      const auto size = static_cast<int64_t>(chunk.tokens.size());
      if (token == comma) {
        last_comma = size;
      } else if (size == static_cast<int64_t>(room) && last_comma != -1 &&
                 size - last_comma <= kCommaPaddingBacktrack) {
        // Full, and a comma near the end: the words after it start the next chunk.
        Chunk moved;
        moved.tokens.assign(chunk.tokens.begin() + last_comma + 1, chunk.tokens.end());
        moved.weights.assign(chunk.weights.begin() + last_comma + 1, chunk.weights.end());
        chunk.tokens.resize(last_comma + 1);
        chunk.weights.resize(last_comma + 1);
        next_chunk();
        chunk = std::move(moved);
      }
      if (chunk.tokens.size() == room) next_chunk();
      chunk.tokens.push_back(token);
      chunk.weights.push_back(weight);
    }
  }
  if (!chunk.tokens.empty() || chunks.empty()) next_chunk();

  if (chunks.size() > static_cast<size_t>(max_chunks)) {
    std::vector<int32_t> dropped;
    for (size_t k = max_chunks; k < chunks.size(); ++k)
      dropped.insert(dropped.end(), chunks[k].tokens.begin(), chunks[k].tokens.end());
    chunks.resize(max_chunks);
    out.num_truncated_tokens =
        std::max<int>(out.num_truncated_tokens, 0) + static_cast<int>(dropped.size());
    if (!dropped.empty()) {
      const std::string shown = tokenizer.decode(std::span<const int32_t>(dropped).first(
          std::min<size_t>(dropped.size(), kMaxTruncatedTokensShown)));
      out.truncated_text = weights::excerpt(shown, 200);
      if (dropped.size() > kMaxTruncatedTokensShown || prompt.size() > head.size())
        out.truncated_text += " ...";
    } else if (out.truncated_text.empty()) {
      out.truncated_text = "BREAK";
    }
  }

  out.num_chunks = static_cast<int>(chunks.size());
  out.ids.reserve(chunks.size() * length);
  out.weights.reserve(chunks.size() * length);
  for (const Chunk& c : chunks) {
    const size_t begin = out.ids.size();
    out.ids.push_back(tokenizer.start_of_text_id());
    out.ids.insert(out.ids.end(), c.tokens.begin(), c.tokens.end());
    out.ids.push_back(tokenizer.end_of_text_id());
    out.ids.resize(begin + length, tokenizer.pad_id());
    out.weights.push_back(1.0f);
    out.weights.insert(out.weights.end(), c.weights.begin(), c.weights.end());
    out.weights.resize(begin + length, 1.0f);
  }
  return out;
}

void pad_prompt_chunks(PromptChunks& chunks, const ClipTokenizer& tokenizer, int num_chunks) {
  HYRT_CHECK(chunks.chunk_length == tokenizer.model_max_length(), kInvalidArgument,
             "pad_prompt_chunks: chunks of ", chunks.chunk_length, " ids, tokenizer length ",
             tokenizer.model_max_length());
  const int length = chunks.chunk_length;
  for (; chunks.num_chunks < num_chunks; ++chunks.num_chunks) {
    const size_t begin = chunks.ids.size();
    chunks.ids.push_back(tokenizer.start_of_text_id());
    chunks.ids.push_back(tokenizer.end_of_text_id());
    chunks.ids.resize(begin + length, tokenizer.pad_id());
    chunks.weights.resize(begin + length, 1.0f);
  }
}

void apply_emphasis(std::span<float> hidden, std::span<const float> weights, int64_t channels) {
  HYRT_CHECK(channels > 0 && hidden.size() == weights.size() * static_cast<size_t>(channels),
             kInvalidArgument, "apply_emphasis: ", hidden.size(), " values for ", weights.size(),
             " tokens of ", channels, " channels");
  if (std::all_of(weights.begin(), weights.end(), [](float w) { return w == 1.0f; })) return;
  // Means as sums: the element counts cancel in the ratio.
  double before = 0, after = 0;
  for (size_t t = 0; t < weights.size(); ++t) {
    float* row = hidden.data() + t * channels;
    for (int64_t c = 0; c < channels; ++c) {
      before += row[c];
      row[c] *= weights[t];
      after += row[c];
    }
  }
  const double ratio = before / after;
  if (after == 0 || !std::isfinite(ratio)) return;
  const auto r = static_cast<float>(ratio);
  for (float& x : hidden)
    x *= r;
}

PromptLoras extract_lora_tags(std::string_view prompt) {
  PromptLoras out;
  size_t pos = 0;
  while (pos < prompt.size()) {
    size_t open = std::string_view::npos;
    size_t skip = 0;
    for (std::string_view tag : {"<lora:", "<lyco:"}) {
      const size_t at = prompt.find(tag, pos);
      if (at < open) open = at, skip = tag.size();
    }
    if (open == std::string_view::npos) break;
    const size_t close = prompt.find('>', open);
    HYRT_CHECK(close != std::string_view::npos, kInvalidArgument, "the LoRA tag '",
               prompt.substr(open, 40), "' has no closing '>'");
    const std::string_view tag = prompt.substr(open, close + 1 - open);
    const std::string_view body = prompt.substr(open + skip, close - open - skip);
    LoraTag t;
    const size_t colon = body.find(':');
    t.name = std::string(body.substr(0, colon));
    while (!t.name.empty() && t.name.back() == ' ')
      t.name.pop_back();
    HYRT_CHECK(!t.name.empty(), kInvalidArgument, "the LoRA tag '", tag, "' names no LoRA");
    if (colon != std::string_view::npos) {
      const std::string number(body.substr(colon + 1));
      HYRT_CHECK(number.find(':') == std::string::npos, kInvalidArgument, "the LoRA tag '", tag,
                 "' has more than a name and a multiplier (hyrt reads <lora:NAME:MULTIPLIER>)");
      char* end = nullptr;
      const double v = std::strtod(number.c_str(), &end);
      while (end && *end == ' ')
        ++end;
      HYRT_CHECK(!number.empty() && end && *end == '\0' && std::isfinite(v) && std::abs(v) < 1e6,
                 kInvalidArgument, "the LoRA tag '", tag, "': '", number,
                 "' is not a multiplier (a number such as 0.8)");
      t.multiplier = static_cast<float>(v);
    }
    out.prompt += prompt.substr(pos, open - pos);
    out.loras.push_back(std::move(t));
    pos = close + 1;
  }
  out.prompt += prompt.substr(std::min(pos, prompt.size()));
  return out;
}

std::filesystem::path lora_tag_file(const std::string& lora_dir, const LoraTag& tag,
                                    std::string_view setting) {
  HYRT_CHECK(!lora_dir.empty(), kInvalidArgument, "the prompt names the LoRA '", tag.name,
             "' (<lora:", tag.name, ":...>) but no ", setting, " says where LoRAs are");
  std::filesystem::path file = std::filesystem::path(lora_dir) / tag.name;
  if (file.extension() != ".safetensors") file += ".safetensors";
  HYRT_CHECK(std::filesystem::is_regular_file(file), kInvalidArgument,
             "the prompt names the LoRA '", tag.name, "', but there is no ", file.string());
  return file;
}

}  // namespace hyrt::pipeline
