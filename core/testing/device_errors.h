// Helpers for tests of error paths: the message of an expected error, and
// whether a CUDA device is visible (where one is, the CUDA calls that fail on
// a host without one succeed, so such tests skip).
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <string>

namespace stowage::testing_support {

// The message of the error `f` throws, which must be of type E; a test
// failure (and "") when it throws another type or nothing.
template <typename E, typename F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected another error type, caught: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected an error, none was thrown";
  return {};
}

// Whether this build has CUDA and the host shows it at least one device.
bool cuda_device_visible();

}  // namespace stowage::testing_support

// Skips the test where a CUDA device is visible: the calls it expects to
// fail for want of one would run.
#define SKIP_WHERE_A_CUDA_DEVICE_IS_VISIBLE()                                  \
  if (::stowage::testing_support::cuda_device_visible()) {                     \
    GTEST_SKIP() << "a CUDA device is visible: its calls succeed, so no CUDA " \
                    "status fails here";                                       \
  }
