#include "core/error.h"

namespace stowage {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidInput:
      return "invalid input";
    case ErrorKind::kOutOfBudget:
      return "out of budget";
    case ErrorKind::kOutOfMemory:
      return "out of memory";
    case ErrorKind::kDevice:
      return "device error";
    case ErrorKind::kIo:
      return "I/O error";
    case ErrorKind::kInternal:
      return "internal error";
  }
  return "error";
}

namespace detail {
void throw_status_error(const char* call, const char* file, int line,
                        const std::string& status_text, bool out_of_memory) {
  std::string message = fmt::format("{} failed: {} (at {}:{})", call, status_text, file, line);
  if (out_of_memory) throw OutOfMemoryError(message);
  throw DeviceError(message);
}
}  // namespace detail

}  // namespace stowage
