// CUDA implementations of kernels/' public calls: kernel launches through
// kernels/detail/launch.h and cuBLASLt matmuls with plans cached per shape
// in the caller's CublasLtContext.
#include "kernels/detail/cuda_ops.h"

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <tuple>
#include <utility>

#include "core/buffer.h"
#include "core/cuda_check.h"
#include "core/error.h"
#include "core/memory_resource.h"
#include "kernels/cublaslt_context.h"
#include "kernels/detail/cublaslt_check.h"
#include "kernels/detail/float_type.h"
#include "kernels/detail/launch.h"
#include "kernels/detail/scratch_layout.h"

namespace stowage::kernels {
namespace detail {
namespace {

// A cuBLASLt object owned by a unique_ptr-like, move-only holder.
template <typename Handle, cublasStatus_t (*Destroy)(Handle)>
class LtObject {
 public:
  LtObject() = default;
  explicit LtObject(Handle h) : h_(h) {}
  LtObject(LtObject&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  LtObject& operator=(LtObject&& o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  LtObject(const LtObject&) = delete;
  LtObject& operator=(const LtObject&) = delete;
  ~LtObject() { reset(); }
  Handle get() const { return h_; }

 private:
  void reset() {
    if (h_ != nullptr) Destroy(h_);  // a failure here cannot be reported
    h_ = nullptr;
  }
  Handle h_ = nullptr;
};

using MatmulDesc = LtObject<cublasLtMatmulDesc_t, cublasLtMatmulDescDestroy>;
using MatrixLayout = LtObject<cublasLtMatrixLayout_t, cublasLtMatrixLayoutDestroy>;
using MatmulPreference = LtObject<cublasLtMatmulPreference_t, cublasLtMatmulPreferenceDestroy>;

// Device memory a context keeps (workspace, scratch): from the context's
// MemoryResource when it has one (so a budget counts it), else from the
// device directly (cudaMalloc / cudaMallocAsync). Move-only.
class ContextMemory {
 public:
  ContextMemory() = default;
  ContextMemory(ContextMemory&& o) noexcept
      : resource_(std::exchange(o.resource_, nullptr)),
        buffer_(std::move(o.buffer_)),
        ptr_(std::exchange(o.ptr_, nullptr)),
        bytes_(std::exchange(o.bytes_, 0)) {}
  ContextMemory& operator=(ContextMemory&& o) noexcept {
    if (this != &o) {
      release();
      resource_ = std::exchange(o.resource_, nullptr);
      buffer_ = std::move(o.buffer_);
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  ContextMemory(const ContextMemory&) = delete;
  ContextMemory& operator=(const ContextMemory&) = delete;
  ~ContextMemory() { release(); }

  void use_resource(MemoryResource* resource) { resource_ = resource; }

  // Grows to at least `bytes` (stream-ordered: the old block is freed after
  // the stream's queued work, the new one is usable on the stream at once).
  // From a resource it grows to exactly `bytes`, so the bytes it holds are
  // the largest a call asked for (what the caller's reserve counts); from
  // the device it grows by half again to grow rarely.
  void* reserve(size_t bytes, StreamRef stream) {
    if (bytes <= size()) return get();
    if (resource_ != nullptr) {
      buffer_.reset(stream);
      buffer_ = Buffer(*resource_, bytes, stream);
      return buffer_.data();
    }
    const size_t grown = std::max(bytes, bytes_ + bytes_ / 2);
    const auto raw = static_cast<cudaStream_t>(stream.native_handle());
    if (ptr_ != nullptr) {
      STOWAGE_CUDA_TRY_FOR(cudaFreeAsync(ptr_, raw),
                           "{}: kernels: freeing {} bytes of scratch to grow it to {}",
                           ::stowage::detail::current_cuda_device(), bytes_, grown);
    }
    ptr_ = nullptr;
    bytes_ = 0;
    STOWAGE_CUDA_TRY_FOR(cudaMallocAsync(&ptr_, grown, raw),
                         "{}: kernels: allocating {} bytes of scratch",
                         ::stowage::detail::current_cuda_device(), grown);
    bytes_ = grown;
    return ptr_;
  }
  // A fixed block for the context's lifetime, usable on every stream once
  // this returns (a stream-ordered allocation is waited for).
  void allocate(size_t bytes, StreamRef stream) {
    if (resource_ != nullptr) {
      buffer_ = Buffer(*resource_, bytes, stream);
      STOWAGE_CUDA_TRY_FOR(cudaStreamSynchronize(static_cast<cudaStream_t>(stream.native_handle())),
                           "{}: kernels: waiting for the allocation of a {}-byte workspace",
                           ::stowage::detail::current_cuda_device(), bytes);
      return;
    }
    if (bytes > 0) {
      STOWAGE_CUDA_TRY_FOR(cudaMalloc(&ptr_, bytes), "{}: kernels: allocating a {}-byte workspace",
                           ::stowage::detail::current_cuda_device(), bytes);
    }
    bytes_ = bytes;
  }
  void* get() { return resource_ != nullptr ? buffer_.data() : ptr_; }
  size_t size() const { return resource_ != nullptr ? buffer_.size() : bytes_; }

  // REQUIRES: the device no longer uses the memory (the streams it was used
  // on may be gone, so the resource's free is not ordered on one).
  void release() {
    if (!buffer_.empty()) buffer_.reset(StreamRef{});
    if (ptr_ != nullptr) cudaFree(ptr_);  // synchronizes with pending stream-ordered use
    ptr_ = nullptr;
    bytes_ = 0;
  }

 private:
  MemoryResource* resource_ = nullptr;
  Buffer buffer_;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

template <typename T>
T* piece(void* base, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}

struct PlanKey {
  int kind;  // cudaDataType of A/B
  int out_type;
  int64_t m, n, k;
  int epilogue;
  int align_a, align_b, align_c;
  bool operator<(const PlanKey& o) const {
    return std::tie(kind, out_type, m, n, k, epilogue, align_a, align_b, align_c) <
           std::tie(o.kind, o.out_type, o.m, o.n, o.k, o.epilogue, o.align_a, o.align_b, o.align_c);
  }
};

struct MatmulPlan {
  MatmulDesc desc;
  MatrixLayout a, b, c;
  cublasLtMatmulAlgo_t algo{};
  bool is_int = false;
  int64_t m = 0, n = 0, k = 0;  // for describing a failed matmul
};

struct GemvKey {
  int64_t m, n, k;
  int dtype;
  bool nested;
  int blocksize;  // the ring kernel's tiles depend on it
  bool operator<(const GemvKey& o) const {
    return std::tie(m, n, k, dtype, nested, blocksize) <
           std::tie(o.m, o.n, o.k, o.dtype, o.nested, o.blocksize);
  }
};

int alignment_of(const void* p) {
  const uintptr_t v = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && v % a != 0) a >>= 1;
  return a;
}

cudaDataType_t cuda_type(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return CUDA_R_16F;
    case DType::kBF16:
      return CUDA_R_16BF;
    case DType::kF32:
      return CUDA_R_32F;
    case DType::kI8:
      return CUDA_R_8I;
    case DType::kI32:
      return CUDA_R_32I;
    default:
      throw InternalError(fmt::format("kernels: no CUDA data type for {}", short_name(dtype)));
  }
}

}  // namespace

struct CublasLtState {
  int device = -1;
  cublasLtHandle_t handle = nullptr;
  ContextMemory workspace;
  ContextMemory scratch;
  // The ring GEMV's tile counters (two unsigned ints, zero between launches).
  ContextMemory gemv_counters;
  size_t workspace_bytes = CublasLtContext::kDefaultWorkspaceBytes;
  std::map<PlanKey, std::unique_ptr<MatmulPlan>> plans;
  std::map<GemvKey, FourBitGemvPlan> gemv_plans;
  // Rows per int8 product chunk (<= 0: all rows at once). From
  // STOWAGE_INT8_ROW_CHUNK, read when the context is first used.
  int64_t int8_row_chunk_override = -1;

  ~CublasLtState() {
    if (handle != nullptr) {
      // Work queued with the workspace or scratch must end before they go
      // back to their resource (which would otherwise reuse them at once).
      int previous = 0;
      if (cudaGetDevice(&previous) == cudaSuccess && cudaSetDevice(device) == cudaSuccess) {
        cudaDeviceSynchronize();
        cudaSetDevice(previous);
      }
      workspace.release();
      scratch.release();
      gemv_counters.release();
      plans.clear();
      cublasLtDestroy(handle);
    }
  }

  // Creates the handle and workspace on the current device, once; later
  // calls must come from the same device. `stream`: where a resource-backed
  // workspace is allocated (null: the legacy default stream).
  void ensure_ready(StreamRef stream = {}) {
    int current = 0;
    STOWAGE_CUDA_TRY_FOR(cudaGetDevice(&current),
                         "kernels: asking for the current device before a cuBLASLt call");
    if (handle != nullptr) {
      STOWAGE_EXPECTS(current == device, InvalidInputError,
                      "kernels: CublasLtContext was created on cuda:{} but is used on cuda:{}; "
                      "use one context per device",
                      device, current);
      return;
    }
    STOWAGE_CUDA_TRY_FOR(cublasLtCreate(&handle), "cuda:{}: kernels: creating a cuBLASLt handle",
                         current);
    device = current;
    if (const char* env = std::getenv("STOWAGE_INT8_ROW_CHUNK")) {
      int8_row_chunk_override = std::strtoll(env, nullptr, 10);
    }
    workspace.allocate(workspace_bytes, stream);
  }
};

namespace {

// The plan for one matmul shape: created on first use, then reused.
MatmulPlan& plan_for(CublasLtState& st, cudaDataType_t ab_type, cudaDataType_t cd_type,
                     cublasComputeType_t compute, cudaDataType_t scale_type, int64_t m, int64_t n,
                     int64_t k, cublasLtEpilogue_t epilogue, const void* a_ptr, const void* b_ptr,
                     const void* c_ptr) {
  const PlanKey key{static_cast<int>(ab_type),
                    static_cast<int>(cd_type),
                    m,
                    n,
                    k,
                    static_cast<int>(epilogue),
                    alignment_of(a_ptr),
                    alignment_of(b_ptr),
                    alignment_of(c_ptr)};
  auto found = st.plans.find(key);
  if (found != st.plans.end()) return *found->second;

  // What a failing call was doing, for its message (only built on failure).
  const auto describe = [&] {
    return fmt::format(
        "{}: kernels: planning a cuBLASLt matmul of m={} n={} k={} (A/B type {}, C/D type {}, "
        "epilogue {})",
        ::stowage::detail::current_cuda_device(), m, n, k, static_cast<int>(ab_type),
        static_cast<int>(cd_type), static_cast<int>(epilogue));
  };
  // Row-major y[m, n] = x[m, k] @ w[n, k]^T is column-major y^T[n, m] =
  // op_T(w as k x n) @ x as k x m: cuBLASLt's A is w (transposed), B is x.
  auto plan = std::make_unique<MatmulPlan>();
  plan->is_int = compute == CUBLAS_COMPUTE_32I;
  plan->m = m;
  plan->n = n;
  plan->k = k;
  cublasLtMatmulDesc_t desc = nullptr;
  STOWAGE_CUDA_TRY_FOR(cublasLtMatmulDescCreate(&desc, compute, scale_type), "{}", describe());
  plan->desc = MatmulDesc(desc);
  const cublasOperation_t op_t = CUBLAS_OP_T;
  const cublasOperation_t op_n = CUBLAS_OP_N;
  STOWAGE_CUDA_TRY_FOR(
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)), "{}",
      describe());
  STOWAGE_CUDA_TRY_FOR(
      cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)), "{}",
      describe());
  STOWAGE_CUDA_TRY_FOR(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                      &epilogue, sizeof(epilogue)),
                       "{}", describe());
  cublasLtMatrixLayout_t layout = nullptr;
  STOWAGE_CUDA_TRY_FOR(cublasLtMatrixLayoutCreate(&layout, ab_type, k, n, k), "{}", describe());
  plan->a = MatrixLayout(layout);
  STOWAGE_CUDA_TRY_FOR(cublasLtMatrixLayoutCreate(&layout, ab_type, k, m, k), "{}", describe());
  plan->b = MatrixLayout(layout);
  STOWAGE_CUDA_TRY_FOR(cublasLtMatrixLayoutCreate(&layout, cd_type, n, m, n), "{}", describe());
  plan->c = MatrixLayout(layout);

  cublasLtMatmulPreference_t pref_raw = nullptr;
  STOWAGE_CUDA_TRY_FOR(cublasLtMatmulPreferenceCreate(&pref_raw), "{}", describe());
  MatmulPreference pref(pref_raw);
  const uint64_t ws = st.workspace.size();
  STOWAGE_CUDA_TRY_FOR(cublasLtMatmulPreferenceSetAttribute(
                           pref_raw, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
                       "{}", describe());
  const uint32_t align_a = key.align_a, align_b = key.align_b, align_c = key.align_c;
  STOWAGE_CUDA_TRY_FOR(
      cublasLtMatmulPreferenceSetAttribute(pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                           &align_a, sizeof(align_a)),
      "{}", describe());
  STOWAGE_CUDA_TRY_FOR(
      cublasLtMatmulPreferenceSetAttribute(pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                           &align_b, sizeof(align_b)),
      "{}", describe());
  STOWAGE_CUDA_TRY_FOR(
      cublasLtMatmulPreferenceSetAttribute(pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                           &align_c, sizeof(align_c)),
      "{}", describe());
  STOWAGE_CUDA_TRY_FOR(
      cublasLtMatmulPreferenceSetAttribute(pref_raw, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                           &align_c, sizeof(align_c)),
      "{}", describe());
  cublasLtMatmulHeuristicResult_t result{};
  int count = 0;
  STOWAGE_CUDA_TRY_FOR(
      cublasLtMatmulAlgoGetHeuristic(st.handle, desc, plan->a.get(), plan->b.get(), plan->c.get(),
                                     plan->c.get(), pref_raw, 1, &result, &count),
      "{}", describe());
  STOWAGE_EXPECTS(count > 0, DeviceError,
                  "kernels: cuBLASLt has no algorithm for a matmul of m={} n={} k={} (A/B type "
                  "{}, C/D type {}, epilogue {}, alignments {}/{}/{} bytes)",
                  m, n, k, static_cast<int>(ab_type), static_cast<int>(cd_type),
                  static_cast<int>(epilogue), align_a, align_b, align_c);
  plan->algo = result.algo;
  MatmulPlan& ref = *plan;
  st.plans.emplace(key, std::move(plan));
  return ref;
}

void run_plan(CublasLtState& st, MatmulPlan& plan, const void* w, const void* x, void* y,
              const void* bias, cudaStream_t stream) {
  const auto describe = [&] {
    return fmt::format("{}: kernels: cuBLASLt matmul of m={} n={} k={} ({} bytes of workspace)",
                       ::stowage::detail::current_cuda_device(), plan.m, plan.n, plan.k,
                       st.workspace.size());
  };
  if (bias != nullptr) {
    STOWAGE_CUDA_TRY_FOR(
        cublasLtMatmulDescSetAttribute(plan.desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                       sizeof(bias)),
        "{}", describe());
  }
  const float alpha_f = 1.0f, beta_f = 0.0f;
  const int32_t alpha_i = 1, beta_i = 0;
  const void* alpha = plan.is_int ? static_cast<const void*>(&alpha_i) : &alpha_f;
  const void* beta = plan.is_int ? static_cast<const void*>(&beta_i) : &beta_f;
  STOWAGE_CUDA_TRY_FOR(cublasLtMatmul(st.handle, plan.desc.get(), alpha, w, plan.a.get(), x,
                                      plan.b.get(), beta, y, plan.c.get(), y, plan.c.get(),
                                      &plan.algo, st.workspace.get(), st.workspace.size(), stream),
                       "{}", describe());
}

}  // namespace

void cuda_quantize_4bit(const void* input, DType dtype, int64_t numel, int64_t blocksize,
                        quant::WeightFormat type, uint8_t* packed, float* absmax,
                        void* stream) {
  STOWAGE_CUDA_TRY_FOR(
      launch_quantize_4bit(input, float_type(dtype), numel, static_cast<int>(blocksize), type,
                           packed, absmax, as_stream(stream)),
      "{}: kernels: quantizing {} {} elements to 4 bits (blocksize {})",
      ::stowage::detail::current_cuda_device(), numel, short_name(dtype), blocksize);
}

void cuda_dequantize_4bit(const uint8_t* packed, const float* absmax, int64_t numel,
                          int64_t blocksize, quant::WeightFormat type, void* output,
                          DType out_dtype, void* stream) {
  STOWAGE_CUDA_TRY_FOR(
      launch_dequantize_4bit(packed, absmax, numel, static_cast<int>(blocksize), type, output,
                             float_type(out_dtype), as_stream(stream)),
      "{}: kernels: dequantizing {} 4-bit elements to {} (blocksize {})",
      ::stowage::detail::current_cuda_device(), numel, short_name(out_dtype), blocksize);
}

void cuda_double_quantize_absmax(const float* absmax, int64_t count, float* offset, uint8_t* codes,
                                 float* nested_absmax, double* scratch, void* stream) {
  STOWAGE_CUDA_TRY_FOR(launch_double_quantize(absmax, count, scratch, offset, codes, nested_absmax,
                                              as_stream(stream)),
                       "{}: kernels: double-quantizing {} absmax values",
                       ::stowage::detail::current_cuda_device(), count);
}

void cuda_dequantize_absmax(const uint8_t* codes, const float* nested_absmax, float offset,
                            int64_t count, float* absmax, void* stream) {
  STOWAGE_CUDA_TRY_FOR(
      launch_dequantize_absmax(codes, nested_absmax, offset, count, absmax, as_stream(stream)),
      "{}: kernels: dequantizing {} double-quantized absmax values",
      ::stowage::detail::current_cuda_device(), count);
}

void cuda_quantize_int8_rowwise(const void* input, DType dtype, int64_t rows, int64_t cols,
                                int8_t* cb, float* scb, void* stream) {
  STOWAGE_CUDA_TRY_FOR(launch_quantize_int8_rowwise(input, float_type(dtype), rows, cols, cb, scb,
                                                    as_stream(stream)),
                       "{}: kernels: quantizing {} x {} {} to int8 row-wise",
                       ::stowage::detail::current_cuda_device(), rows, cols, short_name(dtype));
}

void cuda_dequantize_int8_rowwise(const int8_t* cb, const float* scb, int64_t rows, int64_t cols,
                                  void* output, DType out_dtype, void* stream) {
  STOWAGE_CUDA_TRY_FOR(launch_dequantize_int8_rowwise(cb, scb, rows, cols, output,
                                                      float_type(out_dtype), as_stream(stream)),
                       "{}: kernels: dequantizing {} x {} int8 row-wise to {}",
                       ::stowage::detail::current_cuda_device(), rows, cols, short_name(out_dtype));
}

void cuda_dense_gemv(const DenseGemvArgs& a, void* stream) {
  STOWAGE_CUDA_TRY_FOR(launch_dense_gemv(dense_gemv_launch(a), as_stream(stream)),
                       "{}: kernels: dense GEMV of m={} n={} k={} ({} weights)",
                       ::stowage::detail::current_cuda_device(), a.m, a.n, a.k,
                       short_name(a.weight_dtype));
}

static_assert(kDenseGemvLaunchMaxGroup == kDenseGemvMaxGroup, "one group size in gemm.h and launch.h");

void cuda_dense_gemv_group(const DenseGemvArgs* outputs, int count, void* stream) {
  DenseGemvLaunch launches[kDenseGemvMaxGroup];
  int64_t rows = 0;
  for (int i = 0; i < count; ++i) {
    launches[i] = dense_gemv_launch(outputs[i]);
    rows += outputs[i].n;
  }
  STOWAGE_CUDA_TRY_FOR(launch_dense_gemv_group(launches, count, nullptr, as_stream(stream)),
                       "{}: kernels: {} dense GEMVs of m={} k={} ({} output rows, {} weights)",
                       ::stowage::detail::current_cuda_device(), count, outputs[0].m,
                       outputs[0].k, rows, short_name(outputs[0].weight_dtype));
}

void cuda_dense_gemv_swiglu(const DenseGemvArgs& gate, const DenseGemvArgs& up, float* act,
                            void* stream) {
  const DenseGemvLaunch launches[2] = {dense_gemv_launch(gate), dense_gemv_launch(up)};
  STOWAGE_CUDA_TRY_FOR(launch_dense_gemv_group(launches, 2, act, as_stream(stream)),
                       "{}: kernels: SwiGLU dense GEMVs of m={} n={} k={} ({} weights)",
                       ::stowage::detail::current_cuda_device(), gate.m, gate.n, gate.k,
                       short_name(gate.weight_dtype));
}

void cuda_read_checksum(const void* data, uint64_t bytes, uint64_t* checksum, void* stream) {
  STOWAGE_CUDA_TRY_FOR(launch_read_checksum(data, bytes, checksum, as_stream(stream)),
                       "{}: kernels: reading {} bytes for a checksum",
                       ::stowage::detail::current_cuda_device(), bytes);
}

void cuda_upload_from_pinned(void* dst, const void* src, uint64_t bytes, void* stream) {
  // Memory the device cannot load from (pageable, or registered unmapped)
  // goes through the copy engine after all.
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, src) != cudaSuccess ||
      attributes.type != cudaMemoryTypeHost || attributes.devicePointer == nullptr) {
    cudaGetLastError();  // a pageable pointer may leave an error behind on older drivers
    STOWAGE_CUDA_TRY_FOR(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, as_stream(stream)),
        "{}: kernels: copying {} bytes from host memory at {} to {} (not mapped pinned memory)",
        ::stowage::detail::current_cuda_device(), bytes, src, dst);
    return;
  }
  STOWAGE_CUDA_TRY_FOR(launch_upload_from_pinned(dst, attributes.devicePointer, bytes, as_stream(stream)),
                       "{}: kernels: uploading {} bytes from pinned host memory at {} to {}",
                       ::stowage::detail::current_cuda_device(), bytes, src, dst);
}

void cuda_gemm(CublasLtContext& context, const GemmArgs& a, StreamRef stream_ref) {
  if (a.m == 0 || a.n == 0) return;
  CublasLtState& st = context.state();
  st.ensure_ready(stream_ref);
  void* stream = stream_ref.native_handle();
  if (a.k == 0) {  // cuBLASLt refuses k = 0: y = act(bias) or 0, via a zero-k-free path
    STOWAGE_EXPECTS(a.bias == nullptr && !a.relu, InvalidInputError,
                    "kernels::gemm: k = 0 with a bias or ReLU is not supported on CUDA");
    STOWAGE_CUDA_TRY_FOR(
        cudaMemsetAsync(a.y, 0, a.m * a.n * dtype_size(a.out_dtype), as_stream(stream)),
        "cuda:{}: kernels::gemm: zeroing the {} x {} output of a k = 0 product", st.device, a.m,
        a.n);
    return;
  }
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  if (a.bias != nullptr)
    epilogue = a.relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
  else if (a.relu)
    epilogue = CUBLASLT_EPILOGUE_RELU;
  MatmulPlan& plan = plan_for(st, cuda_type(a.dtype), cuda_type(a.out_dtype), CUBLAS_COMPUTE_32F,
                              CUDA_R_32F, a.m, a.n, a.k, epilogue, a.w, a.x, a.y);
  run_plan(st, plan, a.w, a.x, a.y, a.bias, as_stream(stream));
}

void cuda_int8_gemm_s32(CublasLtContext& context, const int8_t* a, const int8_t* b, int32_t* c,
                        int64_t m, int64_t n, int64_t k, void* stream) {
  CublasLtState& st = context.state();
  st.ensure_ready();
  MatmulPlan& plan = plan_for(st, CUDA_R_8I, CUDA_R_32I, CUBLAS_COMPUTE_32I, CUDA_R_32I, m, n, k,
                              CUBLASLT_EPILOGUE_DEFAULT, b, a, c);
  run_plan(st, plan, b, a, c, nullptr, as_stream(stream));
}

namespace {

// Rows of x per int8 product. One product over all rows by default: on an
// H100 at m=4096, n=k=8192, chunks of 512 rows (to keep the int32
// accumulators in L2 for the epilogue) measured 765 us against 486 us, the
// weight being re-read per chunk. STOWAGE_INT8_ROW_CHUNK=<rows> sets a chunk
// size (for such experiments).
int64_t int8_row_chunk(const CublasLtState& st, int64_t m) {
  return st.int8_row_chunk_override > 0 ? std::min(m, st.int8_row_chunk_override) : m;
}

}  // namespace

void cuda_int8_matmul(CublasLtContext& context, const Int8MatmulArgs& a, StreamRef stream_ref) {
  if (a.m == 0 || a.n == 0) return;
  CublasLtState& st = context.state();
  st.ensure_ready(stream_ref);
  void* stream_raw = stream_ref.native_handle();
  const cudaStream_t stream = as_stream(stream_raw);
  const bool outliers = a.threshold > 0.0f;
  const int cap = outliers ? static_cast<int>(std::min<int64_t>(a.k, kInt8OutlierColumnCap)) : 0;
  const int64_t chunk = int8_row_chunk(st, a.m);

  const Int8Scratch layout = int8_scratch(chunk, a.n, a.k, outliers, cap);
  void* base = st.scratch.reserve(layout.bytes, stream_ref);
  int* flags = outliers ? piece<int>(base, layout.flags) : nullptr;
  int* cols = outliers ? piece<int>(base, layout.cols) : nullptr;
  int* count = outliers ? piece<int>(base, layout.count) : nullptr;
  float* w_outlier = outliers ? piece<float>(base, layout.w_outlier) : nullptr;
  int8_t* xq = piece<int8_t>(base, layout.xq);
  float* sca = piece<float>(base, layout.sca);
  int32_t* acc = piece<int32_t>(base, layout.acc);

  if (outliers) {
    STOWAGE_CUDA_TRY_FOR(launch_find_outlier_columns(a.x, float_type(a.dtype), a.m, a.k,
                                                     a.threshold, flags, cols, count, stream),
                         "cuda:{}: kernels::int8_matmul of m={} n={} k={}: finding outlier columns "
                         "(threshold {})",
                         st.device, a.m, a.n, a.k, a.threshold);
    STOWAGE_CUDA_TRY_FOR(
        launch_gather_outlier_weights(a.cb, a.scb, a.n, a.k, cols, count, cap, w_outlier, stream),
        "cuda:{}: kernels::int8_matmul of m={} n={} k={}: gathering up to {} outlier columns",
        st.device, a.m, a.n, a.k, cap);
  }
  const size_t elem = dtype_size(a.dtype);
  for (int64_t r0 = 0; r0 < a.m; r0 += chunk) {
    const int64_t rows = std::min(chunk, a.m - r0);
    const void* x = static_cast<const char*>(a.x) + r0 * a.k * elem;
    STOWAGE_CUDA_TRY_FOR(
        launch_quantize_activations(x, float_type(a.dtype), rows, a.k, flags, xq, sca, stream),
        "cuda:{}: kernels::int8_matmul of m={} n={} k={}: quantizing rows {}..{}", st.device, a.m,
        a.n, a.k, r0, r0 + rows);
    cuda_int8_gemm_s32(context, xq, a.cb, acc, rows, a.n, a.k, stream);
    Int8EpilogueArgs e;
    e.acc = acc;
    e.sca = sca;
    e.scb = a.scb;
    e.bias = a.bias;
    e.x = x;
    e.cb = a.cb;
    e.outlier_cols = cols;
    e.outlier_count = count;
    e.w_outlier = w_outlier;
    e.cap = cap;
    e.m = rows;
    e.n = a.n;
    e.k = a.k;
    e.dtype = float_type(a.dtype);
    e.y = static_cast<char*>(a.y) + r0 * a.n * elem;
    STOWAGE_CUDA_TRY_FOR(launch_int8_epilogue(e, stream),
                         "cuda:{}: kernels::int8_matmul of m={} n={} k={}: epilogue of rows {}..{}",
                         st.device, a.m, a.n, a.k, r0, r0 + rows);
  }
}

namespace {

// The one place a 4-bit call becomes the launches' device-side arguments.
FourBitGemvArgs gemv_args(const FourBitMatmulArgs& a) {
  const quant::WeightView& w = a.weight;
  FourBitGemvArgs g;
  g.packed = w.codes();
  g.absmax = w.absmax;
  g.absmax_codes = w.absmax_codes;
  g.nested_absmax = w.nested_absmax;
  g.nested_offset = w.nested_offset;
  g.x = a.x;
  g.bias = a.bias;
  g.y = a.y;
  g.m = a.m;
  g.n = w.out;
  g.k = w.in;
  g.blocksize = static_cast<int>(w.blocksize);
  g.type = w.format;
  g.dtype = float_type(a.dtype);
  return g;
}

const FourBitGemvPlan& gemv_plan(CublasLtState& st, const FourBitGemvArgs& g) {
  const GemvKey key{g.m, g.n, g.k, static_cast<int>(g.dtype), g.absmax == nullptr, g.blocksize};
  auto found = st.gemv_plans.find(key);
  if (found != st.gemv_plans.end()) return found->second;
  FourBitGemvPlan plan;
  STOWAGE_CUDA_TRY_FOR(plan_four_bit_gemv(g, st.device, &plan),
                       "cuda:{}: kernels: planning a 4-bit GEMV of m={} n={} k={}", st.device, g.m,
                       g.n, g.k);
  return st.gemv_plans.emplace(key, plan).first->second;
}

}  // namespace

bool cuda_four_bit_uses_gemv(CublasLtContext& context, const FourBitMatmulArgs& a) {
  CublasLtState& st = context.state();
  st.ensure_ready();
  const FourBitGemvArgs g = gemv_args(a);
  if (four_bit_f32_gemv_applies(g)) return true;
  return reinterpret_cast<uintptr_t>(g.packed) % 16 == 0 && gemv_plan(st, g).variant >= 0;
}

void cuda_four_bit_matmul(CublasLtContext& context, const FourBitMatmulArgs& a,
                          StreamRef stream_ref) {
  if (a.m == 0 || a.weight.out == 0) return;
  const cudaStream_t stream = as_stream(stream_ref.native_handle());
  const FourBitGemvArgs g = gemv_args(a);
  if (four_bit_f32_gemv_applies(g)) {
    // Needs no context: nothing of it is allocated.
    STOWAGE_CUDA_TRY_FOR(launch_four_bit_f32_gemv(g, stream),
                         "{}: kernels::four_bit_matmul (float32 GEMV) of m={} n={} k={}",
                         ::stowage::detail::current_cuda_device(), g.m, g.n, g.k);
    return;
  }
  CublasLtState& st = context.state();
  st.ensure_ready(stream_ref);
  if (reinterpret_cast<uintptr_t>(g.packed) % 16 == 0) {
    const FourBitGemvPlan& plan = gemv_plan(st, g);
    if (plan.variant >= 0) {
      unsigned* counters = nullptr;
      if (plan.ring_rows > 0) {
        if (st.gemv_counters.size() == 0) {
          st.gemv_counters.allocate(2 * sizeof(unsigned), stream_ref);
          STOWAGE_CUDA_TRY_FOR(
              cudaMemsetAsync(st.gemv_counters.get(), 0, 2 * sizeof(unsigned), stream),
              "cuda:{}: kernels::four_bit_matmul: zeroing the GEMV's tile counters", st.device);
        }
        counters = static_cast<unsigned*>(st.gemv_counters.get());
      }
      STOWAGE_CUDA_TRY_FOR(launch_four_bit_gemv(plan, g, counters, stream),
                           "cuda:{}: kernels::four_bit_matmul (GEMV variant {}) of m={} n={} k={}",
                           st.device, plan.variant, g.m, g.n, g.k);
      return;
    }
  }
  // Dequantize into scratch, then a cuBLASLt GEMM.
  const int64_t numel = a.weight.numel();
  const int64_t blocks = a.weight.block_count();
  const bool nested = a.weight.double_quant();
  const FourBitScratch layout =
      four_bit_scratch(g.n, g.k, a.weight.blocksize, nested, dtype_size(a.dtype));
  void* base = st.scratch.reserve(layout.bytes, stream_ref);
  void* w = piece<char>(base, layout.weight);
  const float* use_absmax = a.weight.absmax;
  if (nested) {
    float* absmax = piece<float>(base, layout.absmax);
    STOWAGE_CUDA_TRY_FOR(launch_dequantize_absmax(g.absmax_codes, g.nested_absmax, g.nested_offset,
                                                  blocks, absmax, stream),
                         "cuda:{}: kernels::four_bit_matmul of m={} n={} k={}: dequantizing {} "
                         "absmax values",
                         st.device, g.m, g.n, g.k, blocks);
    use_absmax = absmax;
  }
  STOWAGE_CUDA_TRY_FOR(
      launch_dequantize_4bit(g.packed, use_absmax, numel, g.blocksize, g.type, w, g.dtype, stream),
      "cuda:{}: kernels::four_bit_matmul of m={} n={} k={}: dequantizing the "
      "weight into {} bytes of scratch",
      st.device, g.m, g.n, g.k, layout.bytes);
  GemmArgs ga;
  ga.m = a.m;
  ga.n = g.n;
  ga.k = g.k;
  ga.dtype = a.dtype;
  ga.out_dtype = a.dtype;
  ga.x = a.x;
  ga.w = w;
  ga.bias = a.bias;
  ga.y = a.y;
  cuda_gemm(context, ga, stream_ref);
}

void CublasLtStateDeleter::operator()(CublasLtState* state) const noexcept { delete state; }

CublasLtStatePtr make_cublaslt_state(MemoryResource* memory, size_t workspace_bytes) {
  CublasLtStatePtr state(new CublasLtState);
  state->workspace.use_resource(memory);
  state->scratch.use_resource(memory);
  state->gemv_counters.use_resource(memory);
  state->workspace_bytes = workspace_bytes;
  return state;
}

size_t cached_plan_count(const CublasLtState& state) {
  return state.plans.size() + state.gemv_plans.size();
}

}  // namespace detail
}  // namespace stowage::kernels
