#include "weights/json_text.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace hyrt::weights {

JsonScan scan_json(std::string_view text, int depth_limit) {
  JsonScan out;
  int depth = 0;
  bool top_is_object = false;
  bool in_string = false, escaped = false;
  // At depth 1 of the outermost object, a string read after '{' or ',' is a key.
  bool expect_key = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
      continue;
    }
    switch (c) {
      case '"':
        in_string = true;
        if (depth == 1 && top_is_object && expect_key) {
          ++out.top_level_keys;
          expect_key = false;
        }
        break;
      case '{':
      case '[':
        if (depth == 0 && c == '{') top_is_object = true;
        if (++depth > depth_limit) {
          out.depth_exceeded = true;
          out.stop_offset = i;
          out.max_depth = depth;
          return out;
        }
        if (depth > out.max_depth) out.max_depth = depth;
        expect_key = depth == 1 && c == '{';
        break;
      case '}':
      case ']':
        if (depth > 0) --depth;
        break;
      case ',':
        if (depth == 1) expect_key = top_is_object;
        break;
      default:
        break;
    }
  }
  if (!top_is_object) out.top_level_keys = 0;
  return out;
}

std::string excerpt(std::string_view s, size_t max_chars) {
  if (s.size() <= max_chars) return std::string(s);
  return str_cat(s.substr(0, max_chars), "... (", s.size(), " characters)");
}

template <class Json>
Json parse_json_bounded(std::string_view text, std::string_view label, ErrorCode code) {
  const JsonScan scan = scan_json(text);
  if (scan.depth_exceeded)
    fail(code, label, ": JSON nested deeper than ", kMaxJsonDepth, " levels (at byte ",
         scan.stop_offset, "); the file is damaged");
  try {
    return Json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // nlohmann quotes the last token it read, which may be a whole megabyte-long string.
    fail(code, label, ": not valid JSON: ", excerpt(e.what(), 200));
  }
}

template nlohmann::json parse_json_bounded<nlohmann::json>(std::string_view, std::string_view,
                                                           ErrorCode);
template nlohmann::ordered_json parse_json_bounded<nlohmann::ordered_json>(std::string_view,
                                                                           std::string_view,
                                                                           ErrorCode);

void require_regular_file(const std::filesystem::path& path, bool allow_dir) {
  struct stat sb {};
  if (::stat(path.c_str(), &sb) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR)
      fail(ErrorCode::kNotFound, path.string(), ": no such file");
    fail(ErrorCode::kIo, path.string(), ": cannot stat: ", std::strerror(err));
  }
  if (S_ISREG(sb.st_mode)) return;
  if (S_ISDIR(sb.st_mode)) {
    if (allow_dir) return;
    fail(ErrorCode::kInvalidArgument, path.string(), ": is a folder, expected a file");
  }
  const char* kind = S_ISFIFO(sb.st_mode)   ? "a FIFO (named pipe)"
                     : S_ISCHR(sb.st_mode)  ? "a character device"
                     : S_ISBLK(sb.st_mode)  ? "a block device"
                     : S_ISSOCK(sb.st_mode) ? "a socket"
                                            : "not a regular file";
  fail(ErrorCode::kInvalidArgument, path.string(), ": is ", kind,
       allow_dir ? "; expected a model file or folder" : "; expected a regular file");
}

std::string read_small_file(const std::filesystem::path& path, uint64_t max_bytes) {
  require_regular_file(path);
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  HYRT_CHECK(!ec, kIo, path.string(), ": cannot read its size: ", ec.message());
  HYRT_CHECK(size <= max_bytes, kInvalidModel, path.string(), ": ", size,
             " bytes is too large for this kind of file (limit ", max_bytes, ")");
  std::ifstream in(path, std::ios::binary);
  HYRT_CHECK(in, kIo, path.string(), ": cannot open");
  std::string text(size, '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  HYRT_CHECK(!in.bad(), kIo, path.string(), ": read error");
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

nlohmann::json read_json_file_bounded(const std::filesystem::path& path, ErrorCode code) {
  return parse_json_bounded(read_small_file(path), path.string(), code);
}

}  // namespace hyrt::weights
