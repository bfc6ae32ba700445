// The kernels' failing CUDA and cuBLASLt statuses reach the caller as typed
// errors naming the operation, the device and the sizes (issue #15 item 9),
// on a host without a GPU:
// - cuBLASLt's statuses through STOWAGE_CUDA_TRY (core/device_status.h and
//   kernels/detail/cublaslt_check.h), failing values fed in and one real
//   failing cuBLASLt call (it needs no GPU);
// - on a host with no CUDA device, the kernels' own launches and cuBLASLt
//   setup, which fail there with real statuses.
// Skipped where the build has no CUDA toolkit (there are no such calls).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "core/testing/device_errors.h"
#include "kernels/cublaslt_context.h"
#include "kernels/detail/cuda_ops.h"
#include "kernels/gemm.h"
#include "kernels/transformer_ops.h"

#if defined(STOWAGE_WITH_CUDA)
#include <cublasLt.h>

#include "kernels/detail/cublaslt_check.h"
#include "kernels/detail/cuda_transformer_ops.h"
#endif

namespace stowage::kernels {
namespace {

#if defined(STOWAGE_WITH_CUDA)

using testing_support::message_of;

cublasStatus_t lt_call(cublasStatus_t s) { return s; }

TEST(CublasLtStatus, EveryFailingStatusIsTranslatedWithCublasLtsNameAndText) {
  const std::vector<cublasStatus_t> failing = {
      CUBLAS_STATUS_NOT_INITIALIZED, CUBLAS_STATUS_INVALID_VALUE,    CUBLAS_STATUS_ARCH_MISMATCH,
      CUBLAS_STATUS_MAPPING_ERROR,   CUBLAS_STATUS_EXECUTION_FAILED, CUBLAS_STATUS_INTERNAL_ERROR,
      CUBLAS_STATUS_NOT_SUPPORTED,   CUBLAS_STATUS_LICENSE_ERROR};
  for (const cublasStatus_t status : failing) {
    const std::string message = message_of<DeviceError>([status] {
      STOWAGE_CUDA_TRY_FOR(lt_call(status), "cuda:0: a matmul of m={} n={} k={}", 1, 2, 3);
    });
    const std::string expected = fmt::format(
        "cuda:0: a matmul of m=1 n=2 k=3: lt_call(status) failed: {} ({}): {} (at ",
        cublasLtGetStatusName(status), static_cast<int>(status), cublasLtGetStatusString(status));
    EXPECT_EQ(message.rfind(expected, 0), 0u) << message;
  }
}

TEST(CublasLtStatus, AllocFailedIsAnOutOfMemoryError) {
  const std::string message =
      message_of<OutOfMemoryError>([] { STOWAGE_CUDA_TRY(lt_call(CUBLAS_STATUS_ALLOC_FAILED)); });
  EXPECT_NE(message.find("CUBLAS_STATUS_ALLOC_FAILED"), std::string::npos) << message;
  STOWAGE_CUDA_TRY(lt_call(CUBLAS_STATUS_SUCCESS));  // and success is silent
}

TEST(CublasLtStatus, ARealFailingCublasLtCallIsADeviceError) {
  // cuBLASLt checks an attribute's size on the host: no GPU needed.
  cublasLtMatmulPreference_t preference = nullptr;
  STOWAGE_CUDA_TRY(cublasLtMatmulPreferenceCreate(&preference));
  const char one_byte = 0;
  const std::string message = message_of<DeviceError>([&] {
    STOWAGE_CUDA_TRY_FOR(
        cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &one_byte, sizeof(one_byte)),
        "setting a {}-byte workspace limit", sizeof(one_byte));
  });
  cublasLtMatmulPreferenceDestroy(preference);
  EXPECT_EQ(
      message.rfind("setting a 1-byte workspace limit: cublasLtMatmulPreferenceSetAttribute(", 0),
      0u)
      << message;
  EXPECT_NE(message.find("CUBLAS_STATUS_INVALID_VALUE"), std::string::npos) << message;
}

TEST(KernelsWithoutACudaDevice, AQuantizeLaunchIsADeviceErrorNamingTheOperationAndSizes) {
  SKIP_WHERE_A_CUDA_DEVICE_IS_VISIBLE();
  const std::string message = message_of<DeviceError>([] {
    detail::cuda_quantize_4bit(nullptr, DType::kBF16, 4096, 64, quant::WeightFormat::kNf4, nullptr,
                               nullptr, nullptr);
  });
  EXPECT_EQ(message.rfind("cuda:?: kernels: quantizing 4096 bf16 elements to 4 bits (blocksize "
                          "64): launch_quantize_4bit(",
                          0),
            0u)
      << message;
  EXPECT_NE(message.find("failed: cudaError"), std::string::npos) << message;
  EXPECT_NE(message.find("kernels/detail/cuda_ops.cc:"), std::string::npos) << message;
}

TEST(KernelsWithoutACudaDevice, ATransformerLaunchIsADeviceErrorNamingTheOperationAndSizes) {
  SKIP_WHERE_A_CUDA_DEVICE_IS_VISIBLE();
  RmsNormArgs args;
  args.rows = 4;
  args.cols = 64;
  const std::string message =
      message_of<DeviceError>([&] { detail::cuda_rms_norm(args, nullptr); });
  EXPECT_EQ(message.rfind("cuda:?: kernels::rms_norm of 4 x 64: launch_rms_norm(", 0), 0u)
      << message;
}

TEST(KernelsWithoutACudaDevice, AGemmsCublasLtSetupIsADeviceError) {
  SKIP_WHERE_A_CUDA_DEVICE_IS_VISIBLE();
  CublasLtContext context;
  GemmArgs args;
  args.m = 2;
  args.n = 3;
  args.k = 4;
  const std::string message =
      message_of<DeviceError>([&] { detail::cuda_gemm(context, args, StreamRef{}); });
  EXPECT_EQ(message.rfind("kernels: asking for the current device before a cuBLASLt call: "
                          "cudaGetDevice(",
                          0),
            0u)
      << message;
}

#else

TEST(CublasLtStatus, NeedsTheCudaToolkit) { GTEST_SKIP() << "no CUDA toolkit in this build"; }

#endif  // STOWAGE_WITH_CUDA

}  // namespace
}  // namespace stowage::kernels
