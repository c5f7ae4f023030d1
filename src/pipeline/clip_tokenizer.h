// CLIP byte-level BPE tokenizer for Stable Diffusion prompts.
//
// Mirrors transformers' CLIPTokenizer as SD pipelines use it (the `tokenizers`-backed
// CLIPTokenizerFast, which is what `CLIPTokenizer` is in transformers 5):
//   1. literal `<|startoftext|>` / `<|endoftext|>` in the prompt become their ids directly;
//   2. normalisation: every run of Unicode white space becomes one space, then each code point
//      is lower-cased (simple one-to-one case mapping, plus U+0130 → "i̇");
//   3. pre-tokenisation by CLIP's regex
//        <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//      (white space between pieces is dropped; so each digit is its own piece);
//   4. each piece's UTF-8 bytes are mapped to printable characters (GPT-2's bytes_to_unicode),
//      the last one gets the `</w>` end-of-word suffix, and BPE merges them by merges.txt rank;
//   5. ids come from vocab.json; `<|startoftext|>` and `<|endoftext|>` ids are read from it.
// Approximations, documented: \p{L} / \p{N} and lower-casing use tables generated from Unicode
// 14 (unicode_tables.inc); the NFC normalisation step of the fast tokenizer is not applied, so a
// prompt in decomposed form (e.g. "e" + U+0301) tokenises differently from its precomposed
// form (prompts typed on common keyboards are already NFC); ftfy's text repairs and HTML-entity
// decoding (the legacy slow path) are not done. Invalid UTF-8 bytes are read as U+FFFD.
//
// Ownership and thread safety: a ClipTokenizer owns its tables (a few MB) and is movable, not
// copyable. All const methods are safe to call concurrently: the per-word BPE cache behind
// encode() is guarded by a mutex (it is bounded and cleared when full).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace hyrt::pipeline {

// encode()'s result: exactly max_length ids
//   [<|startoftext|>, content..., <|endoftext|>, padding...] (padding: pad_id())
// If the prompt had more than max_length - 2 content tokens, the tail was cut (the final
// <|endoftext|> is kept) and what was cut is reported so the caller can warn, as diffusers'
// StableDiffusionPipeline does ("The following part of your input was truncated ...").
inline constexpr size_t kMaxTruncatedTokensShown = 64;
// encode() reads at most this many bytes of a prompt (or 64 per token of max_length, if more):
// far past anything that fits, so the ids are the same, and the work stays bounded.
inline constexpr size_t kMaxEncodedPromptBytes = 64 * 1024;

struct TokenizeResult {
  std::vector<int32_t> ids;
  int num_truncated_tokens = 0;  // content tokens dropped (0 when nothing was cut)
  // decode() of the dropped tokens ("" when nothing was cut), at most its first
  // kMaxTruncatedTokensShown tokens and 200 characters (then marked with "...").
  std::string truncated_text;
};

class ClipTokenizer {
 public:
  static constexpr int kDefaultMaxLength = 77;  // CLIP ViT-L/14's context length

  // Loads `tokenizer_dir`/vocab.json and merges.txt (and model_max_length from
  // tokenizer_config.json when present). A missing file throws kNotFound naming every path
  // looked for; malformed contents throw kInvalidModel naming the file and line/key.
  static ClipTokenizer load(const std::filesystem::path& tokenizer_dir);
  // Same from explicit paths; `max_length` = kDefaultMaxLength.
  static ClipTokenizer from_files(const std::filesystem::path& vocab_json,
                                  const std::filesystem::path& merges_txt);
  // Same from the files' contents (a hyrt model file embeds them, weights/hyrt_format.h).
  // `tokenizer_config_json` may be empty (max length = kDefaultMaxLength); `label` names
  // the source in messages ("<label> vocab.json: ..."). Malformed contents: kInvalidModel.
  static ClipTokenizer from_strings(std::string_view vocab_json, std::string_view merges_txt,
                                    std::string_view tokenizer_config_json = {},
                                    std::string_view label = "tokenizer");

  ClipTokenizer(ClipTokenizer&&) noexcept;
  ClipTokenizer& operator=(ClipTokenizer&&) noexcept;
  ~ClipTokenizer();

  // Tokenises, adds <|startoftext|>/<|endoftext|>, truncates and pads to max_length (≥ 2).
  // Reads at most kMaxEncodedPromptBytes of the prompt (num_truncated_tokens then counts the
  // dropped tokens of that part only).
  TokenizeResult encode(std::string_view prompt, int max_length) const;
  TokenizeResult encode(std::string_view prompt) const { return encode(prompt, max_length_); }

  // The content ids only: no start/end tokens, no truncation or padding.
  std::vector<int32_t> tokenize(std::string_view text) const;

  // Joins tokens, undoes the byte mapping, turns each `</w>` into a space and trims the ends
  // (transformers' convert_tokens_to_string). Special tokens are kept as their text. Ids
  // outside the vocabulary throw kInvalidArgument.
  std::string decode(std::span<const int32_t> ids) const;

  int32_t start_of_text_id() const { return bos_id_; }
  int32_t end_of_text_id() const { return eos_id_; }  // also the unknown token
  // The padding token: tokenizer_config.json's `pad_token` ("!" = id 0 in SDXL's second
  // tokenizer), else <|endoftext|>.
  int32_t pad_id() const { return pad_id_ >= 0 ? pad_id_ : eos_id_; }
  int model_max_length() const { return max_length_; }
  size_t vocab_size() const { return id_to_token_.size(); }
  // The id of a vocabulary entry (byte-level form, e.g. "cat</w>"), or -1.
  int32_t token_to_id(std::string_view token) const;

 private:
  ClipTokenizer();
  // The three factories' common part: texts plus the names messages give them.
  static ClipTokenizer build(std::string_view vocab_json, const std::string& vocab_label,
                             std::string_view merges_txt, const std::string& merges_label,
                             std::string_view tokenizer_config_json,
                             const std::string& config_label);
  // BPE of one pre-tokenised piece (raw UTF-8), appending ids to `out`.
  void bpe_piece(std::string_view piece, std::vector<int32_t>& out) const;

  struct Tables;
  struct Cache;
  std::unique_ptr<Tables> tables_;
  std::unique_ptr<Cache> cache_;
  std::vector<std::string> id_to_token_;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  int32_t pad_id_ = -1;      // -1: pad with eos_id_
  std::string added_token_;  // the pad token's text when it is not a CLIP special, else ""
  int max_length_ = kDefaultMaxLength;
};

// Code-point classes used by the pre-tokenizer (exposed for tests).
bool is_unicode_letter(char32_t cp);      // general category L*
bool is_unicode_number(char32_t cp);      // general category N*
bool is_unicode_whitespace(char32_t cp);  // the White_Space property (regex \s)
char32_t unicode_simple_lower(char32_t cp);

}  // namespace hyrt::pipeline
