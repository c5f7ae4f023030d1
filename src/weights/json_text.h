// Bounded reading of the JSON and text files a model brings with it (configs, tokenizer
// files, safetensors headers and metadata).
//
// Every file hyrt reads may come from a broken download or a hand edit. nlohmann-json
// parses recursively (one stack frame per nesting level) and its error messages can quote
// what it read, so a parse is guarded here by construction: the text is scanned once,
// iteratively, before nlohmann sees it, and anything put into a message is cut short.
// All functions are pure or read one file; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace hyrt::weights {

// Deepest nesting of arrays and objects accepted in any JSON hyrt reads. Real configs and
// headers need 4 at most; 64 leaves room while keeping nlohmann's recursion shallow.
inline constexpr int kMaxJsonDepth = 64;
// Largest config, tokenizer or index file read whole into memory (CLIP's vocab.json is
// 1 MiB, merges.txt 0.5 MiB).
inline constexpr uint64_t kMaxSmallFileBytes = 64ull << 20;

struct JsonScan {
  int max_depth = 0;            // deepest nesting of [ and {
  size_t top_level_keys = 0;    // keys of the outermost object (0 when it is not an object)
  bool depth_exceeded = false;  // scanning stopped at the first level past the limit
  size_t stop_offset = 0;       // where it stopped, when depth_exceeded
};

// One linear, non-recursive pass over `text`, following strings and escapes; it does not
// validate the JSON (nlohmann does that afterwards), it only measures it.
JsonScan scan_json(std::string_view text, int depth_limit = kMaxJsonDepth);

// Parses `text` as JSON after checking its nesting depth. Failures throw `code` with
// "<label>: ..." and at most a short excerpt of the input.
template <class Json = nlohmann::json>
Json parse_json_bounded(std::string_view text, std::string_view label,
                        ErrorCode code = ErrorCode::kInvalidModel);

// " ... " cut to `max_chars` (with a note of the full length) for quoting in messages.
std::string excerpt(std::string_view s, size_t max_chars = 80);
// A JSON value as it would be written, cut the same way.
template <class Json>
std::string json_excerpt(const Json& v, size_t max_chars = 80) {
  return excerpt(v.dump(), max_chars);
}

// Fails unless `path` is a regular file (after following links) or, with `allow_dir`, a
// folder: FIFOs, sockets and devices such as /dev/zero would block or never end.
// kNotFound when it does not exist, kInvalidArgument for any other kind.
void require_regular_file(const std::filesystem::path& path, bool allow_dir = false);

// The whole of a small file (a regular file of at most `max_bytes`).
std::string read_small_file(const std::filesystem::path& path,
                            uint64_t max_bytes = kMaxSmallFileBytes);

// read_small_file + parse_json_bounded, labelled with the path.
nlohmann::json read_json_file_bounded(const std::filesystem::path& path,
                                      ErrorCode code = ErrorCode::kInvalidModel);

}  // namespace hyrt::weights
