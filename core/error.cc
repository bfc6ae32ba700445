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

}  // namespace stowage
