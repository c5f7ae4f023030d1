// hyrt public API: the one exception type every hyrt call may throw.
//
// hyrt reports failures by throwing hyrt::Error. Each error carries a machine-readable
// code and a message written for a person: it names the file, tensor, node or flag at
// fault and what was expected. The CLI turns it into a message and a non-zero exit.
#pragma once

#include <stdexcept>
#include <string>

namespace hyrt {

enum class ErrorCode {
  kInvalidArgument,  // a caller passed a bad value (flag, shape, option)
  kInvalidModel,     // a model file or folder is malformed or inconsistent
  kNotFound,         // a file, component, tensor or key is missing
  kUnsupported,      // valid input hyrt does not handle (yet)
  kOutOfMemory,      // an allocation failed
  kIo,               // reading or writing a file failed
  kInternal,         // a broken invariant inside hyrt: a bug
  kCancelled,        // the caller cancelled the call (hyrt::CancelToken)
};

const char* error_code_name(ErrorCode code);

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

// A call stopped by its CancelToken (code kCancelled).
class Cancelled : public Error {
 public:
  explicit Cancelled(const std::string& message) : Error(ErrorCode::kCancelled, message) {}
};

}  // namespace hyrt
