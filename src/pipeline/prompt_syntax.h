// AUTOMATIC1111's prompt syntax: emphasis weights, BREAK, and prompts longer than the text
// encoder's 77-token window, encoded in chunks of 75 tokens.
//
// Emphasis (A1111's parse_prompt_attention, from its documented behaviour):
//   (text)        the text's weight × 1.1; brackets nest: ((text)) × 1.21
//   (text:1.5)    × 1.5 instead of × 1.1 (spaces allowed around the number)
//   [text]        ÷ 1.1
//   \( \) \[ \]   literal brackets; \\ a literal backslash; any other backslash is dropped
//   BREAK         (upper case, a whole word) ends the current 75-token chunk
// An opening bracket never closed multiplies everything after it; a closing bracket with no
// open bracket of its kind is literal text; `(text:1.5]` is not a weight (only `)` closes one),
// nor is `text:1.5)` outside a round bracket (both literal text, as A1111 reads them).
// Adjacent spans of equal weight are joined before tokenisation, so `(a)(b)` reads "ab".
// A weight is the number A1111 accepts: [+-]?[.0-9]+ with at least one digit and one dot at most.
//
// Errors (kInvalidArgument, with the offending text quoted) — everything else is accepted:
//   - inside an open round bracket, a colon followed by one word and the closing bracket, where
//     the word is not such a number: `(word:abc)`, `(style: anime)`, `(word:1e5)`, `(word:nan)`
//     (A1111 reads these as text with weight 1.1; refusing them catches a mistyped weight), and
//     `(word:1.2.3)`, `(word:.)` (A1111 fails on these). A colon followed by several words,
//     `(time: 10 am)`, or by nothing, `(word:)`, stays text; `\:` keeps a colon as text without
//     the check, `(style\: anime)` (A1111 drops the backslash and reads the same text; as there,
//     `(word\:1.5)` is still a weight).
//   - a weight, or a product of nested weights, that is not a finite 32-bit float
//     (`(word:1` followed by 40 zeros `)`, `((((word:1e38))))`): A1111 would propagate inf/NaN;
//   - more than kMaxPromptBracketDepth brackets open at once (bounds the work per prompt);
//   - parse_prompt_attention on more than kMaxPromptBytes (chunk_prompt cuts instead).
//
// Departures from A1111, on purpose: BREAK inside brackets still breaks (A1111 multiplies its
// marker's weight and then tokenises it as the word "break"); prompt editing `[a:b:0.5]`,
// alternation `[a|b]` and textual-inversion embeddings are not interpreted (read as emphasis
// and text); Unicode digits other than 0-9 are not weight digits.
//
// Chunks (A1111's tokenize_line, with its default "comma padding backtrack" of 20 tokens): the
// spans' tokens fill chunks of chunk_length - 2 = 75 tokens; when a chunk is full and the next
// token is not a comma, the tokens after the chunk's last comma move to the next chunk if there
// are at most 19 of them. BREAK starts a new chunk. A chunk's ids are laid out as the tokenizer
// pads a short prompt: [<|startoftext|>, tokens..., <|endoftext|>, pad_id()...] (so a prompt of
// at most 75 tokens without syntax gives exactly ClipTokenizer::encode's ids); start, end and
// padding weigh 1. An empty prompt is one chunk of padding.
//
// Thread safety: free functions without state; safe to call concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pipeline/clip_tokenizer.h"

namespace hyrt::pipeline {

// parse_prompt_attention refuses longer text; chunk_prompt reads only this many bytes (cut on
// a UTF-8 boundary) and reports the rest as ignored.
inline constexpr size_t kMaxPromptBytes = 64 * 1024;
// Brackets open at once (A1111 has no limit; 1.1^256 is already 4e10).
inline constexpr int kMaxPromptBracketDepth = 256;
// chunk_prompt keeps at most this many chunks (16 × 75 = 1200 tokens) and reports the rest of
// the prompt as ignored: it bounds the UNet's cross-attention length (T = 77 · chunks).
inline constexpr int kMaxPromptChunks = 16;
// A1111's `comma_padding_backtrack` default.
inline constexpr int kCommaPaddingBacktrack = 20;

struct PromptSpan {
  std::string text;     // unescaped text ("" for a break)
  double weight = 1.0;  // product of the enclosing brackets' multipliers (1 for a break)
  bool is_break = false;
};

// The prompt's spans in order, adjacent spans of equal weight joined, empty spans dropped;
// at least one span (`{"", 1.0}` for an empty prompt). Throws kInvalidArgument (see above).
std::vector<PromptSpan> parse_prompt_attention(std::string_view prompt);

// A prompt tokenised into chunks for one tokenizer.
struct PromptChunks {
  int chunk_length = 0;        // ids per chunk: the tokenizer's model_max_length (77)
  int num_chunks = 0;          // ≥ 1
  std::vector<int32_t> ids;    // num_chunks × chunk_length
  std::vector<float> weights;  // one per id
  // Tokens of the prompt not kept (past max_chunks chunks or past kMaxPromptBytes bytes; then
  // > 0, or -1 when only bytes were cut) and a short excerpt of them, as TokenizeResult has.
  int num_truncated_tokens = 0;
  std::string truncated_text;
  // Any weight other than 1.
  bool weighted() const;
};

// Parses `prompt` and lays its tokens out in chunks (at most `max_chunks` ≥ 1). The tokenizer's
// model_max_length must be at least 3. Throws kInvalidArgument for a syntax error.
PromptChunks chunk_prompt(const ClipTokenizer& tokenizer, std::string_view prompt,
                          int max_chunks = kMaxPromptChunks);

// Appends empty chunks ([start, end, padding...], weights 1 — the encoding of "") up to
// `num_chunks` (no-op when `chunks` already has as many), as A1111 pads the shorter of the
// prompt and the negative prompt so that both condition the UNet at one length.
void pad_prompt_chunks(PromptChunks& chunks, const ClipTokenizer& tokenizer, int num_chunks);

// A1111's default ("Original") emphasis on one encoded chunk: hidden [tokens, channels]
// (row-major) is multiplied row by row by `weights` (one per token), then scaled as a whole so
// its mean equals the mean before (original_mean / new_mean). Unchanged when every weight is 1;
// the rescale is skipped where the new mean is 0 or the ratio not finite.
void apply_emphasis(std::span<float> hidden, std::span<const float> weights, int64_t channels);

// A1111's extra-network tags for LoRAs: `<lora:NAME>` or `<lora:NAME:MULTIPLIER>` anywhere in a
// prompt (NAME: any text without `:` or `>`, looked up as a file by the caller; MULTIPLIER: a
// number, default 1). `<lyco:...>` (the LyCORIS extension's spelling) reads the same.
struct LoraTag {
  std::string name;
  float multiplier = 1.0f;
};
struct PromptLoras {
  std::string prompt;          // the prompt with the tags removed (what is encoded)
  std::vector<LoraTag> loras;  // in the order written
};
// Removes the LoRA tags from `prompt`. Other `<...>` text is left as it is (A1111 tokenizes
// it). Throws kInvalidArgument, quoting the tag, for an empty name, a multiplier that is not a
// finite number, or more than two fields.
PromptLoras extract_lora_tags(std::string_view prompt);

// The file a tag names: `lora_dir`/NAME.safetensors (NAME as written when it already ends so).
// Throws kInvalidArgument when `lora_dir` is empty (`setting` says how a user sets it, e.g.
// "--lora-dir") or the file is not there.
std::filesystem::path lora_tag_file(const std::string& lora_dir, const LoraTag& tag,
                                    std::string_view setting);

}  // namespace hyrt::pipeline
