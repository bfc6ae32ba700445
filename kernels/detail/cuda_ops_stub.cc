// The CUDA side where no CUDA toolkit was found: every call throws
// DeviceError (a CUDA stream cannot exist in such a build, so these are
// reached only through a broken invariant).
#include "core/error.h"
#include "kernels/detail/cuda_ops.h"

namespace stowage::kernels {
namespace detail {

struct CublasLtState {};

namespace {
[[noreturn]] void no_cuda(const char* what) {
  throw DeviceError(fmt::format("kernels::{}: this build has no CUDA support", what));
}
}  // namespace

void cuda_quantize_4bit(const void*, DType, int64_t, int64_t, quant::WeightFormat, uint8_t*, float*,
                        void*) {
  no_cuda("quantize_4bit");
}
void cuda_dequantize_4bit(const uint8_t*, const float*, int64_t, int64_t, quant::WeightFormat,
                          void*, DType, void*) {
  no_cuda("dequantize_4bit");
}
void cuda_double_quantize_absmax(const float*, int64_t, float*, uint8_t*, float*, double*, void*) {
  no_cuda("double_quantize_absmax");
}
void cuda_dequantize_absmax(const uint8_t*, const float*, float, int64_t, float*, void*) {
  no_cuda("dequantize_absmax");
}
void cuda_quantize_int8_rowwise(const void*, DType, int64_t, int64_t, int8_t*, float*, void*) {
  no_cuda("quantize_int8_rowwise");
}
void cuda_dequantize_int8_rowwise(const int8_t*, const float*, int64_t, int64_t, void*, DType,
                                  void*) {
  no_cuda("dequantize_int8_rowwise");
}
void cuda_gemm(CublasLtContext&, const GemmArgs&, StreamRef) { no_cuda("gemm"); }
void cuda_dense_gemv(const DenseGemvArgs&, void*) { no_cuda("dense_gemv"); }
void cuda_dense_gemv_group(const DenseGemvArgs*, int, void*) { no_cuda("dense_gemv_group"); }
void cuda_dense_gemv_swiglu(const DenseGemvArgs&, const DenseGemvArgs&, float*, void*) {
  no_cuda("dense_gemv_swiglu");
}
void cuda_read_checksum(const void*, uint64_t, uint64_t*, void*) { no_cuda("read_checksum"); }
void cuda_upload_from_pinned(void*, const void*, uint64_t, void*) { no_cuda("upload_from_pinned"); }
void cuda_int8_matmul(CublasLtContext&, const Int8MatmulArgs&, StreamRef) {
  no_cuda("int8_matmul");
}
void cuda_four_bit_matmul(CublasLtContext&, const FourBitMatmulArgs&, StreamRef) {
  no_cuda("four_bit_matmul");
}
void cuda_int8_gemm_s32(CublasLtContext&, const int8_t*, const int8_t*, int32_t*, int64_t, int64_t,
                        int64_t, void*) {
  no_cuda("int8_gemm_s32");
}
bool cuda_four_bit_uses_gemv(CublasLtContext&, const FourBitMatmulArgs&) { return false; }

void CublasLtStateDeleter::operator()(CublasLtState* state) const noexcept { delete state; }
CublasLtStatePtr make_cublaslt_state(MemoryResource*, size_t) {
  return CublasLtStatePtr(new CublasLtState);
}
size_t cached_plan_count(const CublasLtState&) { return 0; }

}  // namespace detail
}  // namespace stowage::kernels
