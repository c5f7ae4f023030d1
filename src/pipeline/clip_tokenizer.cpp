// CLIP BPE tokenizer (see clip_tokenizer.h). Mirrors transformers' CLIPTokenizer /
// CLIPTokenizerFast; written from the algorithm's description, not from either's source.
#include "pipeline/clip_tokenizer.h"

#include <algorithm>
#include <array>
#include <climits>
#include <fstream>
#include <mutex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "weights/json_text.h"

namespace hyrt::pipeline {
namespace {

struct CodePointRange {
  char32_t first;
  char32_t last;
};
struct LowerRun {
  char32_t first;
  char32_t last;
  int32_t delta;
  int32_t stride;
};
#include "pipeline/unicode_tables.inc"

template <size_t N>
bool in_ranges(const CodePointRange (&table)[N], char32_t cp) {
  const auto* it =
      std::upper_bound(std::begin(table), std::end(table), cp,
                       [](char32_t v, const CodePointRange& r) { return v < r.first; });
  return it != std::begin(table) && cp <= (it - 1)->last;
}

constexpr std::string_view kStartOfText = "<|startoftext|>";
constexpr std::string_view kEndOfText = "<|endoftext|>";
constexpr std::string_view kEndOfWord = "</w>";
constexpr size_t kMaxCachedWords = 1 << 16;

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Decodes UTF-8 strictly (no overlongs, surrogates or values past U+10FFFF); each invalid
// byte becomes U+FFFD, as Python's errors="replace" would.
std::u32string decode_utf8(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    int len = 0;
    char32_t cp = 0, min_cp = 0;
    if (b0 < 0x80) {
      len = 1, cp = b0;
    } else if ((b0 & 0xE0) == 0xC0) {
      len = 2, cp = b0 & 0x1F, min_cp = 0x80;
    } else if ((b0 & 0xF0) == 0xE0) {
      len = 3, cp = b0 & 0x0F, min_cp = 0x800;
    } else if ((b0 & 0xF8) == 0xF0) {
      len = 4, cp = b0 & 0x07, min_cp = 0x10000;
    }
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      ok = (b & 0xC0) == 0x80;
      cp = (cp << 6) | (b & 0x3F);
    }
    ok = ok && cp >= min_cp && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (ok) {
      out += cp;
      i += len;
    } else {
      out += U'\uFFFD';
      i += 1;
    }
  }
  return out;
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// are moved to U+0100 onwards, so every byte string becomes printable text without spaces.
std::array<char32_t, 256> make_byte_to_unicode() {
  std::array<char32_t, 256> map{};
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  char32_t next = 256;
  for (int b = 0; b < 256; ++b)
    map[b] = printable(b) ? static_cast<char32_t>(b) : next++;
  return map;
}

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  HYRT_CHECK(in, kIo, "cannot open ", path.string());
  std::ostringstream text;
  text << in.rdbuf();
  HYRT_CHECK(!in.bad(), kIo, "error reading ", path.string());
  return text.str();
}

}  // namespace

bool is_unicode_letter(char32_t cp) {
  return in_ranges(kLetterRanges, cp);
}
bool is_unicode_number(char32_t cp) {
  return in_ranges(kNumberRanges, cp);
}

bool is_unicode_whitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

char32_t unicode_simple_lower(char32_t cp) {
  if (cp >= 'A' && cp <= 'Z') return cp + 32;
  if (cp < 0x80) return cp;
  const auto* it = std::upper_bound(std::begin(kLowerRuns), std::end(kLowerRuns), cp,
                                    [](char32_t v, const LowerRun& r) { return v < r.first; });
  if (it == std::begin(kLowerRuns)) return cp;
  const LowerRun& run = *(it - 1);
  if (cp > run.last || (cp - run.first) % run.stride != 0) return cp;
  return static_cast<char32_t>(static_cast<int32_t>(cp) + run.delta);
}

// ---------------------------------------------------------------------------------------------

struct ClipTokenizer::Tables {
  std::unordered_map<std::string, int32_t> token_to_id;
  std::unordered_map<std::string, int32_t> merge_rank;  // "left right" -> rank (0 = first)
  std::array<std::string, 256> byte_to_symbol;          // UTF-8 of bytes_to_unicode
  std::unordered_map<char32_t, uint8_t> symbol_to_byte;
};

struct ClipTokenizer::Cache {
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>> words;  // piece -> ids
};

ClipTokenizer::ClipTokenizer()
    : tables_(std::make_unique<Tables>()), cache_(std::make_unique<Cache>()) {}
ClipTokenizer::ClipTokenizer(ClipTokenizer&&) noexcept = default;
ClipTokenizer& ClipTokenizer::operator=(ClipTokenizer&&) noexcept = default;
ClipTokenizer::~ClipTokenizer() = default;

ClipTokenizer ClipTokenizer::load(const std::filesystem::path& dir) {
  const auto vocab = dir / "vocab.json";
  const auto merges = dir / "merges.txt";
  std::error_code ec;
  std::vector<std::string> missing;
  for (const auto& p : {vocab, merges}) {
    if (!std::filesystem::is_regular_file(p, ec)) missing.push_back(p.string());
  }
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing)
      list += (list.empty() ? "" : ", ") + m;
    fail(ErrorCode::kNotFound, "CLIP tokenizer files not found: ", list,
         " (a diffusers model folder has them under tokenizer/)");
  }
  const auto config = dir / "tokenizer_config.json";
  const std::string config_text =
      std::filesystem::is_regular_file(config, ec) ? read_text_file(config) : std::string();
  return build(read_text_file(vocab), vocab.string(), read_text_file(merges), merges.string(),
               config_text, config.string());
}

ClipTokenizer ClipTokenizer::from_files(const std::filesystem::path& vocab_json,
                                        const std::filesystem::path& merges_txt) {
  std::error_code ec;
  for (const auto& p : {vocab_json, merges_txt}) {
    HYRT_CHECK(std::filesystem::is_regular_file(p, ec), kNotFound,
               "CLIP tokenizer file not found: ", p.string());
  }
  return build(read_text_file(vocab_json), vocab_json.string(), read_text_file(merges_txt),
               merges_txt.string(), {}, {});
}

ClipTokenizer ClipTokenizer::from_strings(std::string_view vocab_json, std::string_view merges_txt,
                                          std::string_view tokenizer_config_json,
                                          std::string_view label) {
  const std::string l(label);
  return build(vocab_json, l + " vocab.json", merges_txt, l + " merges.txt", tokenizer_config_json,
               l + " tokenizer_config.json");
}

ClipTokenizer ClipTokenizer::build(std::string_view vocab_text, const std::string& vocab_json,
                                   std::string_view merges_text, const std::string& merges_txt,
                                   std::string_view config_text, const std::string& config_label) {
  ClipTokenizer tok;
  Tables& t = *tok.tables_;

  const auto bytes_map = make_byte_to_unicode();
  for (int b = 0; b < 256; ++b) {
    append_utf8(t.byte_to_symbol[b], bytes_map[b]);
    t.symbol_to_byte[bytes_map[b]] = static_cast<uint8_t>(b);
  }

  // vocab.json: {"token": id, ...} with ids 0..n-1.
  try {
    const auto j = weights::parse_json_bounded(vocab_text, vocab_json);
    HYRT_CHECK(j.is_object() && !j.empty(), kInvalidModel, vocab_json,
               ": expected a non-empty JSON object of token -> id");
    tok.id_to_token_.assign(j.size(), std::string());
    for (const auto& [token, id_json] : j.items()) {
      HYRT_CHECK(id_json.is_number_integer(), kInvalidModel, vocab_json, ": token '", token,
                 "' has a non-integer id");
      const int64_t id = id_json.get<int64_t>();
      HYRT_CHECK(id >= 0 && id < static_cast<int64_t>(j.size()), kInvalidModel, vocab_json,
                 ": token '", token, "' has id ", id, " outside [0, ", j.size(), ")");
      HYRT_CHECK(tok.id_to_token_[id].empty(), kInvalidModel, vocab_json, ": id ", id,
                 " is used twice");
      tok.id_to_token_[id] = token;
      t.token_to_id.emplace(token, static_cast<int32_t>(id));
    }
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorCode::kInvalidModel, vocab_json, ": not valid JSON: ", e.what());
  }
  const auto find_special = [&](std::string_view name) {
    const auto it = t.token_to_id.find(std::string(name));
    HYRT_CHECK(it != t.token_to_id.end(), kInvalidModel, vocab_json, ": no '", name, "' token");
    return it->second;
  };
  tok.bos_id_ = find_special(kStartOfText);
  tok.eos_id_ = find_special(kEndOfText);

  // merges.txt: an optional "#version" line, then one "left right" pair per line, best first.
  std::istringstream lines{std::string(merges_text)};
  std::string line;
  int line_number = 0;
  int32_t rank = 0;
  while (std::getline(lines, line)) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_number == 1 && line.starts_with("#version"))) continue;
    const size_t space = line.find(' ');
    HYRT_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                   line.find(' ', space + 1) == std::string::npos,
               kInvalidModel, merges_txt, ":", line_number,
               ": expected two symbols separated by one space, got '", line, "'");
    t.merge_rank.emplace(line, rank++);  // the first occurrence of a duplicate wins
  }
  HYRT_CHECK(rank > 0, kInvalidModel, merges_txt, ": no merges");
  if (!config_text.empty()) {
    try {
      const auto j = weights::parse_json_bounded(config_text, config_label);
      // Some configs store a huge sentinel (1e30) meaning "no limit": keep CLIP's 77 then.
      if (j.contains("model_max_length") && j["model_max_length"].is_number()) {
        const double v = j["model_max_length"].get<double>();
        if (v >= 2 && v <= 1 << 20) tok.max_length_ = static_cast<int>(v);
      }
      // The padding token: SD 1.5's tokenizer pads with <|endoftext|>, SDXL's second with
      // "!" (id 0). transformers writes it as a string or as {"content": ...}.
      if (j.contains("pad_token") && !j["pad_token"].is_null()) {
        const auto& pt = j["pad_token"];
        const auto* content = pt.is_object() && pt.contains("content") ? &pt["content"] : &pt;
        HYRT_CHECK(content->is_string(), kInvalidModel, config_label,
                   ": field `pad_token` must be a string, found ", weights::json_excerpt(pt));
        const std::string name = content->get<std::string>();
        const auto it = t.token_to_id.find(name);
        HYRT_CHECK(it != t.token_to_id.end(), kInvalidModel, config_label, ": `pad_token` '", name,
                   "' is not in ", vocab_json);
        tok.pad_id_ = it->second;
        // A pad token that is not one of CLIP's own specials is an "added token" to
        // transformers: its text is split out of a prompt before BPE (SDXL's "!!" becomes
        // two "!" ids, not the merged "!!</w>").
        if (name != kStartOfText && name != kEndOfText) tok.added_token_ = name;
      }
    } catch (const nlohmann::json::exception& e) {
      fail(ErrorCode::kInvalidModel, config_label, ": not valid JSON: ", e.what());
    }
  }
  return tok;
}

int32_t ClipTokenizer::token_to_id(std::string_view token) const {
  const auto it = tables_->token_to_id.find(std::string(token));
  return it == tables_->token_to_id.end() ? -1 : it->second;
}

void ClipTokenizer::bpe_piece(std::string_view piece, std::vector<int32_t>& out) const {
  {
    std::lock_guard lock(cache_->mutex);
    const auto it = cache_->words.find(std::string(piece));
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const Tables& t = *tables_;
  // One symbol per byte, the last marked as the end of the word.
  std::vector<std::string> symbols;
  symbols.reserve(piece.size());
  for (unsigned char b : piece)
    symbols.push_back(t.byte_to_symbol[b]);
  if (symbols.empty()) return;
  symbols.back() += kEndOfWord;

  // Repeatedly merge the adjacent pair with the best (lowest) rank, every occurrence of it
  // left to right, until no adjacent pair is a known merge.
  std::string key;
  while (symbols.size() > 1) {
    int32_t best_rank = INT32_MAX;
    size_t best_at = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      key.assign(symbols[i]).append(" ").append(symbols[i + 1]);
      const auto it = t.merge_rank.find(key);
      if (it != t.merge_rank.end() && it->second < best_rank) {
        best_rank = it->second;
        best_at = i;
      }
    }
    if (best_rank == INT32_MAX) break;
    const std::string left = symbols[best_at];
    const std::string right = symbols[best_at + 1];
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == left && symbols[i + 1] == right) {
        merged.push_back(left + right);
        i += 2;
      } else {
        merged.push_back(std::move(symbols[i]));
        i += 1;
      }
    }
    symbols.swap(merged);
  }

  std::vector<int32_t> ids;
  ids.reserve(symbols.size());
  for (const auto& s : symbols) {
    const auto it = t.token_to_id.find(s);
    ids.push_back(it == t.token_to_id.end() ? eos_id_ : it->second);  // unk is <|endoftext|>
  }
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard lock(cache_->mutex);
  if (cache_->words.size() >= kMaxCachedWords) cache_->words.clear();
  cache_->words.emplace(std::string(piece), std::move(ids));
}

std::vector<int32_t> ClipTokenizer::tokenize(std::string_view text) const {
  std::vector<int32_t> ids;
  // Special tokens written literally in the prompt are matched before normalisation.
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t next = std::string_view::npos;
    std::string_view special;
    for (std::string_view s : {kStartOfText, kEndOfText, std::string_view(added_token_)}) {
      if (s.empty()) continue;
      const size_t at = text.find(s, pos);
      if (at < next) next = at, special = s;
    }
    const std::string_view chunk =
        text.substr(pos, next == std::string_view::npos ? text.npos : next - pos);

    // Normalise: white-space runs -> one space, lower-case.
    const std::u32string cps = decode_utf8(chunk);
    std::u32string norm;
    norm.reserve(cps.size());
    for (char32_t cp : cps) {
      if (is_unicode_whitespace(cp)) {
        if (norm.empty() || norm.back() != U' ') norm += U' ';
      } else if (cp == 0x130) {  // İ lower-cases to two code points
        norm += U'i';
        norm += U'\u0307';
      } else {
        norm += unicode_simple_lower(cp);
      }
    }

    // Pre-tokenise with CLIP's regex; alternatives are tried in the regex's order.
    std::string piece;
    for (size_t i = 0; i < norm.size();) {
      const char32_t c = norm[i];
      size_t len = 0;
      if (c == U' ') {
        ++i;
        continue;
      }
      if (c == U'\'' && i + 1 < norm.size()) {
        const char32_t c1 = norm[i + 1];
        const char32_t c2 = i + 2 < norm.size() ? norm[i + 2] : 0;
        if (c1 == U's' || c1 == U't' || c1 == U'm' || c1 == U'd') {
          len = 2;
        } else if ((c1 == U'r' && c2 == U'e') || (c1 == U'v' && c2 == U'e') ||
                   (c1 == U'l' && c2 == U'l')) {
          len = 3;
        }
      }
      if (len == 0 && norm.compare(i, kStartOfText.size(), U"<|startoftext|>") == 0) {
        len = kStartOfText.size();
      } else if (len == 0 && norm.compare(i, kEndOfText.size(), U"<|endoftext|>") == 0) {
        len = kEndOfText.size();
      }
      if (len == 0) {
        if (is_unicode_letter(c)) {
          len = 1;
          while (i + len < norm.size() && is_unicode_letter(norm[i + len]))
            ++len;
        } else if (is_unicode_number(c)) {
          len = 1;
        } else {
          auto other = [](char32_t x) {
            return !is_unicode_whitespace(x) && !is_unicode_letter(x) && !is_unicode_number(x);
          };
          len = 1;
          while (i + len < norm.size() && other(norm[i + len]))
            ++len;
        }
      }
      piece.clear();
      for (size_t k = i; k < i + len; ++k)
        append_utf8(piece, norm[k]);
      bpe_piece(piece, ids);
      i += len;
    }

    if (next == std::string_view::npos) break;
    ids.push_back(special == kStartOfText ? bos_id_ : special == kEndOfText ? eos_id_ : pad_id_);
    pos = next + special.size();
  }
  return ids;
}

TokenizeResult ClipTokenizer::encode(std::string_view prompt, int max_length) const {
  HYRT_CHECK(max_length >= 2, kInvalidArgument, "tokenizer max_length must be at least 2, got ",
             max_length);
  // Work bounded by construction: BPE is quadratic in the length of one word, and a prompt
  // of megabytes would be tokenised whole only to keep its first max_length tokens. Every
  // CLIP token is at most a few dozen bytes, so the first kMaxEncodedPromptBytes hold every
  // token that can be kept (cut on a UTF-8 boundary; the cut can only change tokens far past
  // the kept ones), and what lies beyond is reported as truncated all the same.
  const size_t limit = std::max<size_t>(kMaxEncodedPromptBytes, 64u * max_length);
  if (prompt.size() > limit) {
    size_t cut = limit;
    while (cut > 0 && (static_cast<uint8_t>(prompt[cut]) & 0xC0) == 0x80)
      --cut;
    prompt = prompt.substr(0, cut);
  }
  const std::vector<int32_t> content = tokenize(prompt);
  const size_t room = static_cast<size_t>(max_length - 2);
  TokenizeResult result;
  result.ids.reserve(max_length);
  result.ids.push_back(bos_id_);
  const size_t kept = std::min(content.size(), room);
  result.ids.insert(result.ids.end(), content.begin(), content.begin() + kept);
  result.ids.push_back(eos_id_);
  result.ids.resize(max_length, pad_id_ >= 0 ? pad_id_ : eos_id_);
  if (content.size() > room) {
    result.num_truncated_tokens = static_cast<int>(content.size() - room);
    // Only what a warning can show: a pasted essay must not come back whole in a message.
    const auto dropped = std::span(content).subspan(room);
    result.truncated_text = weights::excerpt(
        decode(dropped.first(std::min<size_t>(dropped.size(), kMaxTruncatedTokensShown))), 200);
    if (dropped.size() > kMaxTruncatedTokensShown) result.truncated_text += " ...";
  }
  return result;
}

std::string ClipTokenizer::decode(std::span<const int32_t> ids) const {
  std::string joined;
  for (int32_t id : ids) {
    HYRT_CHECK(id >= 0 && static_cast<size_t>(id) < id_to_token_.size(), kInvalidArgument,
               "token id ", id, " is outside the vocabulary [0, ", id_to_token_.size(), ")");
    joined += id_to_token_[id];
  }
  // Undo the byte mapping (code points outside it, which no vocabulary token has, are kept).
  std::string bytes;
  for (char32_t cp : decode_utf8(joined)) {
    const auto it = tables_->symbol_to_byte.find(cp);
    if (it != tables_->symbol_to_byte.end()) {
      bytes += static_cast<char>(it->second);
    } else {
      append_utf8(bytes, cp);
    }
  }
  std::string text;
  for (size_t i = 0; i < bytes.size();) {
    if (bytes.compare(i, kEndOfWord.size(), kEndOfWord) == 0) {
      text += ' ';
      i += kEndOfWord.size();
    } else {
      text += bytes[i++];
    }
  }
  const size_t begin = text.find_first_not_of(' ');
  if (begin == std::string::npos) return "";
  const size_t end = text.find_last_not_of(' ');
  return text.substr(begin, end - begin + 1);
}

}  // namespace hyrt::pipeline
