// libFuzzer target for A1111's prompt syntax (pipeline/prompt_syntax.h): arbitrary prompts are
// parsed and laid out in chunks with a small built-in vocabulary (every printable ASCII symbol,
// alone and word-final). Only hyrt::Error may escape; every chunk must be [start, tokens, end,
// padding] inside the vocabulary, with a finite weight per id and at most the chunk limit; LoRA
// tags (extract_lora_tags) are named, with finite multipliers.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"
#include "pipeline/prompt_syntax.h"

namespace {

using hyrt::pipeline::ClipTokenizer;

const ClipTokenizer& builtin() {
  static const ClipTokenizer tok = [] {
    std::string vocab = "{";
    int id = 0;
    for (char c = '!'; c <= '~'; ++c) {
      std::string s(1, c);
      if (c == '"' || c == '\\') s = "\\" + s;
      vocab += "\"" + s + "\":" + std::to_string(id++) + ",\"" + s +
               "</w>\":" + std::to_string(id++) + ",";
    }
    vocab += "\"qz\":" + std::to_string(id++) + ",\"qz</w>\":" + std::to_string(id++) + ",";
    vocab += "\"<|startoftext|>\":" + std::to_string(id++) +
             ",\"<|endoftext|>\":" + std::to_string(id++) + "}";
    return ClipTokenizer::from_strings(vocab, "#version: 0.2\nq z\n", R"({"pad_token": "!"})");
  }();
  return tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view prompt(reinterpret_cast<const char*>(data), size);
  const ClipTokenizer& tok = builtin();
  try {
    for (const auto& span : hyrt::pipeline::parse_prompt_attention(prompt))
      if (!std::isfinite(static_cast<float>(span.weight))) __builtin_trap();
    auto c = hyrt::pipeline::chunk_prompt(tok, prompt, 4);
    if (c.num_chunks < 1 || c.num_chunks > 4) __builtin_trap();
    hyrt::pipeline::pad_prompt_chunks(c, tok, 5);
    const size_t length = static_cast<size_t>(c.chunk_length);
    if (c.ids.size() != 5 * length || c.weights.size() != c.ids.size()) __builtin_trap();
    for (size_t i = 0; i < c.ids.size(); ++i) {
      if (c.ids[i] < 0 || static_cast<size_t>(c.ids[i]) >= tok.vocab_size()) __builtin_trap();
      if (!std::isfinite(c.weights[i])) __builtin_trap();
    }
    for (size_t k = 0; k < 5; ++k)
      if (c.ids[k * length] != tok.start_of_text_id()) __builtin_trap();
  } catch (const hyrt::Error&) {
  }
  // LoRA tags: removed text only, named, finite multipliers.
  try {
    const auto tags = hyrt::pipeline::extract_lora_tags(prompt);
    if (tags.prompt.size() > prompt.size()) __builtin_trap();
    for (const auto& t : tags.loras)
      if (t.name.empty() || !std::isfinite(t.multiplier)) __builtin_trap();
  } catch (const hyrt::Error&) {
  }
  return 0;
}
