// Typed errors with context. CUDA-family calls are checked by
// STOWAGE_CUDA_TRY (core/device_status.h), which throws these types.
//
// Every failure the library reports is a stowage::Error (a std::runtime_error)
// whose kind says what went wrong and whose message says what was expected and
// what was found, naming the file, tensor, module or resource involved.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace stowage {

enum class ErrorKind {
  kInvalidInput,  // malformed file, bad argument, missing tensor, dtype mismatch
  kOutOfBudget,   // an allocation or plan that does not fit a tier's budget
  kOutOfMemory,   // the device or host itself has no memory left
  kDevice,        // a CUDA / cuBLASLt / simulated-device failure
  kIo,            // read/write/mmap failure, short read, EIO
  kInternal,      // a broken invariant inside the library
};

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

class InvalidInputError : public Error {
 public:
  explicit InvalidInputError(const std::string& m) : Error(ErrorKind::kInvalidInput, m) {}
};
class OutOfBudgetError : public Error {
 public:
  explicit OutOfBudgetError(const std::string& m) : Error(ErrorKind::kOutOfBudget, m) {}
};
class OutOfMemoryError : public Error {
 public:
  explicit OutOfMemoryError(const std::string& m) : Error(ErrorKind::kOutOfMemory, m) {}
};
class DeviceError : public Error {
 public:
  explicit DeviceError(const std::string& m) : Error(ErrorKind::kDevice, m) {}
};
class IoError : public Error {
 public:
  explicit IoError(const std::string& m) : Error(ErrorKind::kIo, m) {}
};
class InternalError : public Error {
 public:
  explicit InternalError(const std::string& m) : Error(ErrorKind::kInternal, m) {}
};

}  // namespace stowage

// Throws ErrType with a fmt-formatted message when cond is false.
#define STOWAGE_EXPECTS(cond, ErrType, ...)               \
  do {                                                    \
    if (!(cond)) throw ErrType(fmt::format(__VA_ARGS__)); \
  } while (0)
