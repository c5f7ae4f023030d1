// libFuzzer target for the CLIP tokenizer. Input: a prompt, encoded with a small built-in
// vocabulary (every byte symbol, a few merges); or, when it holds two "\n--\n" separators,
// vocab.json, merges.txt and a prompt, all three from the fuzzer. Only hyrt::Error may
// escape; an encoding must be exactly max_length ids, each inside the vocabulary.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/error.h"
#include "pipeline/clip_tokenizer.h"

namespace {

using hyrt::pipeline::ClipTokenizer;

// GPT-2's byte -> printable-symbol table, as CLIP's vocab.json spells bytes.
std::string byte_symbol(int b) {
  int cp = b;
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
  if (!printable) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

const ClipTokenizer& builtin() {
  static const ClipTokenizer tok = [] {
    std::string vocab = "{";
    int id = 0;
    for (int b = 0; b < 256; ++b) {
      vocab += json_string(byte_symbol(b)) + ":" + std::to_string(id++) + ",";
      vocab += json_string(byte_symbol(b) + "</w>") + ":" + std::to_string(id++) + ",";
    }
    const std::string merges = "#version: 0.2\nt h\nth e</w>\na n\nan d</w>\n";
    vocab += "\"th\":" + std::to_string(id++) + ",\"the</w>\":" + std::to_string(id++) +
             ",\"an\":" + std::to_string(id++) + ",\"and</w>\":" + std::to_string(id++) + ",";
    vocab += "\"<|startoftext|>\":" + std::to_string(id++) +
             ",\"<|endoftext|>\":" + std::to_string(id++) + "}";
    return ClipTokenizer::from_strings(vocab, merges);
  }();
  return tok;
}

void check(const ClipTokenizer& tok, std::string_view prompt) {
  const auto r = tok.encode(prompt);
  if (static_cast<int>(r.ids.size()) != tok.model_max_length()) __builtin_trap();
  for (int32_t id : r.ids)
    if (id < 0 || static_cast<size_t>(id) >= tok.vocab_size()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const size_t a = text.find("\n--\n");
  const size_t b = a == std::string_view::npos ? a : text.find("\n--\n", a + 4);
  try {
    if (b == std::string_view::npos) {
      check(builtin(), text);
    } else {
      const auto tok =
          ClipTokenizer::from_strings(text.substr(0, a), text.substr(a + 4, b - a - 4));
      check(tok, text.substr(b + 4));
    }
  } catch (const hyrt::Error&) {
  }
  return 0;
}
