// How a failing status of a CUDA-family call (the CUDA runtime, cuBLASLt)
// becomes a typed error: the one path every checked call takes.
//
// STOWAGE_CUDA_TRY(call) and STOWAGE_CUDA_TRY_FOR(call, format, args...)
// expand to detail::check_status(status, site, what), a template over the
// status type. A library's status type plugs in by specializing
// DeviceStatusTraits: core/cuda_check.h for cudaError_t,
// kernels/detail/cublaslt_check.h for cublasStatus_t. Nothing in this header
// needs CUDA, so the translation and both macros are tested on hosts without
// it through a status type of the test's own (core/tests/device_status_test.cc),
// and with failing cudaError_t and cublasStatus_t values where the toolkit is
// found (core/tests/cuda_status_test.cc, kernels/tests/cublaslt_status_test.cc).
#pragma once

#include <fmt/format.h>

#include <string>

#include "core/error.h"

namespace stowage {

// A failing status in the library's own words: its numeric code, its name
// ("cudaErrorInvalidValue", "CUBLAS_STATUS_NOT_SUPPORTED") and its text.
// `out_of_memory` says the device or host ran out of memory, which is an
// OutOfMemoryError rather than a DeviceError.
struct DeviceStatus {
  int code = 0;
  std::string name;
  std::string text;
  bool out_of_memory = false;
};

// Where a checked call is written: the call's source text, file and line.
struct DeviceCallSite {
  const char* call;
  const char* file;
  int line;
};

// Specialized for each status type:
//   static bool ok(Status);                    // the call succeeded
//   static DeviceStatus describe(Status);      // called for a failing status only
template <typename Status>
struct DeviceStatusTraits;

namespace detail {

// The message of a failing call: "<what>: <call> failed: <name> (<code>):
// <text> (at <file>:<line>)", without "<what>: " when `what` is empty.
// `what` says what the call was doing, on which device, with which sizes.
std::string device_status_message(const DeviceStatus& status, const DeviceCallSite& site,
                                  const std::string& what);

// Throws OutOfMemoryError when status.out_of_memory, else DeviceError, with
// device_status_message's text.
[[noreturn]] void throw_device_status(const DeviceStatus& status, const DeviceCallSite& site,
                                      const std::string& what);

// No description of what a call was doing (STOWAGE_CUDA_TRY).
struct NoContext {
  std::string operator()() const { return {}; }
};

// Returns when `status` is OK; otherwise throws through throw_device_status.
// `what()` returns the description and is called only for a failing status,
// so describing a call costs nothing on the success path.
template <typename Status, typename What>
void check_status(Status status, const DeviceCallSite& site, const What& what) {
  using Traits = DeviceStatusTraits<Status>;
  if (Traits::ok(status)) return;
  // Described before `what()` runs, which may call the library again.
  const DeviceStatus described = Traits::describe(status);
  throw_device_status(described, site, what());
}

}  // namespace detail
}  // namespace stowage

// Checks a CUDA runtime or cuBLASLt call; throws with the call, file and line.
// The DeviceStatusTraits of the call's status type must be visible (include
// core/cuda_check.h or kernels/detail/cublaslt_check.h).
#define STOWAGE_CUDA_TRY(call)                                                                  \
  ::stowage::detail::check_status((call), ::stowage::DeviceCallSite{#call, __FILE__, __LINE__}, \
                                  ::stowage::detail::NoContext{})

// STOWAGE_CUDA_TRY, with what the call was doing before the message:
// STOWAGE_CUDA_TRY_FOR(cudaMemcpyAsync(...), "cuda:{}: copying {} bytes", d, n).
// The format's arguments are evaluated only when the call failed.
#define STOWAGE_CUDA_TRY_FOR(call, ...)                                                         \
  ::stowage::detail::check_status((call), ::stowage::DeviceCallSite{#call, __FILE__, __LINE__}, \
                                  [&] { return fmt::format(__VA_ARGS__); })
