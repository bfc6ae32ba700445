// The one path from a failing CUDA-family status to a typed error
// (core/device_status.h), tested on a host without a GPU (issue #15 item 9:
// the error paths of the CUDA backend were tested only by running out of
// memory on a GPU).
//
// - Everywhere: STOWAGE_CUDA_TRY and STOWAGE_CUDA_TRY_FOR, the macros every
//   CUDA and cuBLASLt call of the library goes through, over a status type of
//   this test's own, so the translation is checked in a build without CUDA.
// - Where the toolkit is found: the CUDA runtime's statuses (failing values
//   fed to STOWAGE_CUDA_TRY), and, on a host with no CUDA device, the CUDA
//   backend's own calls, which fail there with real statuses: their errors
//   must reach the caller as DeviceError naming the operation, the device and
//   the sizes.
#include "core/device_status.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "core/testing/device_errors.h"

#if defined(STOWAGE_WITH_CUDA)
#include <cuda_runtime_api.h>

#include "core/cuda_check.h"
#include "core/detail/cuda_backend.h"
#include "core/memory_resource.h"
#endif

namespace stowage {

// A status type with no library behind it, as a third library's would plug in.
enum class FakeStatus { kOk = 0, kNoMemory = 7, kBroken = 9 };

template <>
struct DeviceStatusTraits<FakeStatus> {
  static bool ok(FakeStatus s) { return s == FakeStatus::kOk; }
  static DeviceStatus describe(FakeStatus s) {
    if (s == FakeStatus::kNoMemory) return {7, "FAKE_NO_MEMORY", "the fake ran out", true};
    return {static_cast<int>(s), "FAKE_BROKEN", "the fake broke", false};
  }
};

namespace {

using testing_support::message_of;

FakeStatus fake_call(FakeStatus s) { return s; }

TEST(DeviceStatus, AnOkStatusReturnsWithoutDescribingTheCall) {
  int described = 0;
  STOWAGE_CUDA_TRY_FOR(fake_call(FakeStatus::kOk), "{}", ++described);
  STOWAGE_CUDA_TRY(fake_call(FakeStatus::kOk));
  EXPECT_EQ(described, 0) << "the description is built on failure only (it is on hot paths)";
}

TEST(DeviceStatus, AFailingStatusIsADeviceErrorNamingWhatTheCallDidTheCallAndTheStatus) {
  const std::string message = message_of<DeviceError>([] {
    STOWAGE_CUDA_TRY_FOR(fake_call(FakeStatus::kBroken), "cuda:{}: copying {} bytes", 3, 4096);
  });
  EXPECT_EQ(message.rfind("cuda:3: copying 4096 bytes: fake_call(FakeStatus::kBroken) failed: "
                          "FAKE_BROKEN (9): the fake broke (at ",
                          0),
            0u)
      << message;
  EXPECT_NE(message.find("core/tests/device_status_test.cc:"), std::string::npos) << message;
}

TEST(DeviceStatus, AnOutOfMemoryStatusIsAnOutOfMemoryError) {
  const std::string message = message_of<OutOfMemoryError>([] {
    STOWAGE_CUDA_TRY_FOR(fake_call(FakeStatus::kNoMemory), "cuda:0 memory: allocating {} bytes",
                         1 << 20);
  });
  EXPECT_NE(message.find("cuda:0 memory: allocating 1048576 bytes: "), std::string::npos)
      << message;
  EXPECT_NE(message.find("FAKE_NO_MEMORY (7): the fake ran out"), std::string::npos) << message;
}

TEST(DeviceStatus, WithoutADescriptionTheMessageStartsWithTheCall) {
  const std::string message =
      message_of<DeviceError>([] { STOWAGE_CUDA_TRY(fake_call(FakeStatus::kBroken)); });
  EXPECT_EQ(message.rfind("fake_call(FakeStatus::kBroken) failed: FAKE_BROKEN (9)", 0), 0u)
      << message;
}

TEST(DeviceStatus, TheErrorKindSaysDeviceOrOutOfMemory) {
  try {
    STOWAGE_CUDA_TRY(fake_call(FakeStatus::kBroken));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kDevice);
  }
  try {
    STOWAGE_CUDA_TRY(fake_call(FakeStatus::kNoMemory));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kOutOfMemory);
  }
}

#if defined(STOWAGE_WITH_CUDA)

cudaError_t runtime_call(cudaError_t s) { return s; }

TEST(CudaStatus, EveryFailingRuntimeStatusIsTranslatedWithTheRuntimesNameAndText) {
  const std::vector<cudaError_t> failing = {cudaErrorInvalidValue,
                                            cudaErrorInvalidDevice,
                                            cudaErrorInitializationError,
                                            cudaErrorLaunchFailure,
                                            cudaErrorIllegalAddress,
                                            cudaErrorNotReady,
                                            cudaErrorInsufficientDriver,
                                            cudaErrorNoDevice,
                                            cudaErrorStreamCaptureUnsupported,
                                            cudaErrorUnknown};
  for (const cudaError_t status : failing) {
    const std::string message = message_of<DeviceError>(
        [status] { STOWAGE_CUDA_TRY_FOR(runtime_call(status), "cuda:{}: an operation", 1); });
    const std::string expected = fmt::format(
        "cuda:1: an operation: runtime_call(status) failed: {} "
        "({}): {} (at ",
        cudaGetErrorName(status), static_cast<int>(status), cudaGetErrorString(status));
    EXPECT_EQ(message.rfind(expected, 0), 0u) << message;
  }
}

TEST(CudaStatus, TheRuntimesOutOfMemoryIsAnOutOfMemoryError) {
  const std::string message = message_of<OutOfMemoryError>(
      [] { STOWAGE_CUDA_TRY(runtime_call(cudaErrorMemoryAllocation)); });
  EXPECT_NE(message.find("cudaErrorMemoryAllocation"), std::string::npos) << message;
  STOWAGE_CUDA_TRY(runtime_call(cudaSuccess));  // and success is silent
}

TEST(CudaBackendWithoutADevice, OpeningAnAcceleratorIsADeviceErrorNamingTheDeviceAndTheCall) {
  SKIP_WHERE_A_CUDA_DEVICE_IS_VISIBLE();
  const std::string message = message_of<DeviceError>([] { detail::make_cuda_accelerator(2); });
  EXPECT_EQ(message.rfind("cuda:2: reading the device's properties: cudaGetDeviceProperties(", 0),
            0u)
      << message;
  EXPECT_NE(message.find("failed: cudaError"), std::string::npos) << message;
  EXPECT_NE(message.find("core/cuda_backend.cc:"), std::string::npos) << message;
}

TEST(CudaBackendWithoutADevice, APinnedAllocationIsADeviceErrorNamingTheBytes) {
  SKIP_WHERE_A_CUDA_DEVICE_IS_VISIBLE();
  auto pinned = detail::make_cuda_pinned_host_memory();
  const std::string message =
      message_of<DeviceError>([&] { pinned->allocate(12345, StreamRef{}); });
  EXPECT_EQ(message.rfind("pinned host memory: allocating 12345 bytes: cudaHostAlloc(", 0), 0u)
      << message;
}

TEST(CudaBackendWithoutADevice, AHostRegistrationIsADeviceErrorNamingTheBytes) {
  SKIP_WHERE_A_CUDA_DEVICE_IS_VISIBLE();
  std::vector<char> bytes(8192);
  const std::string message = message_of<DeviceError>(
      [&] { detail::cuda_host_register(bytes.data(), bytes.size(), /*read_only=*/true); });
  EXPECT_EQ(message.rfind("registering 8192 bytes of read-only host memory at ", 0), 0u) << message;
  EXPECT_NE(message.find("cudaHostRegister("), std::string::npos) << message;
}

#endif  // STOWAGE_WITH_CUDA

}  // namespace
}  // namespace stowage
