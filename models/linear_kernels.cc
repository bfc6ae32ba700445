// LinearKernels over kernels/: cuBLASLt GEMM (float32 compute), LLM.int8
// matmul and the 4-bit matmul, with float32 activations. On sim streams
// kernels/ runs its CPU counterparts, so the same code runs on both backends.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <mutex>

#include "core/buffer.h"
#include "core/error.h"
#include "kernels/cublaslt_context.h"
#include "kernels/gemm.h"
#include "kernels/int8_matmul.h"
#include "kernels/nf4_matmul.h"
#include "kernels/quantize.h"
#include "models/linear.h"
#include "models/linear_spec.h"

#if defined(STOWAGE_MODELS_WITH_CUDA)
#include <cuda_runtime_api.h>

#include "core/cuda_check.h"
#endif

namespace stowage::models {

#if defined(STOWAGE_MODELS_WITH_CUDA)
namespace cuda {
int convert_16bit_to_f32(const void* src, int kind, int64_t n, float* dst, void* stream);
int relu_f32(float* data, int64_t n, void* stream);
int convert_f32_to_16bit(const float* src, int kind, int64_t n, void* dst, void* stream);
}  // namespace cuda
#endif

namespace {

class AcceleratorLinearKernels final : public LinearKernels {
 public:
  AcceleratorLinearKernels(MemoryResource& scratch, size_t workspace_bytes)
      : scratch_(scratch), context_(&scratch, workspace_bytes) {}

  void linear(StreamRef stream, const LinearWeights& w, const TensorView& x, const TensorView& y,
              bool relu) override {
    check_linear_arguments(w, x, y, "linear layer");
    const int64_t m = x.shape()[0], n = w.out_features, k = w.in_features;
    if (takes_dense_gemv(w, m)) {
      // Small batches of 16-bit weights: the GEMV reads float32 activations
      // and the bias as they are (no scratch, no context).
      kernels::dense_gemv(dense_gemv_args(w, x, y, relu), stream);
      return;
    }
    // One cuBLASLt context is not safe for concurrent use (kernels/).
    std::lock_guard<std::mutex> lock(mutex_);
    Buffer bias_f32;
    const void* bias = nullptr;
    if (w.bias.data() != nullptr) {
      if (w.bias.dtype() == DType::kF32) {
        bias = w.bias.data();
      } else {
        bias_f32 = Buffer(scratch_, static_cast<size_t>(n) * 4, stream);
        to_f32(w.bias, static_cast<float*>(bias_f32.data()), stream);
        bias = bias_f32.data();
      }
    }
    switch (w.format) {
      case quant::WeightFormat::kFloat: {
        // 16-bit weights: the activations are rounded to the weight's dtype
        // (a batch x in scratch, not a float32 copy of the weight, so the
        // scratch stays small under tight budgets); products accumulate in
        // float32 and y is float32.
        Buffer x16;
        const void* xs = x.data();
        if (w.weight.dtype() != DType::kF32) {
          x16 = Buffer(scratch_, static_cast<size_t>(m * k) * 2, stream);
          from_f32(x, w.weight.dtype(), x16.data(), stream);
          xs = x16.data();
        }
        kernels::GemmArgs a;
        a.m = m;
        a.n = n;
        a.k = k;
        a.dtype = w.weight.dtype();
        a.out_dtype = DType::kF32;
        a.x = xs;
        a.w = w.weight.data();
        a.bias = bias;
        a.relu = relu;
        a.y = y.data();
        kernels::gemm(context_, a, stream);
        return;  // scratch buffers free stream-ordered
      }
      case quant::WeightFormat::kInt8: {
        kernels::Int8MatmulArgs a;
        a.m = m;
        a.n = n;
        a.k = k;
        a.dtype = DType::kF32;
        a.x = x.data();
        a.cb = w.weight.data_as<int8_t>();
        a.scb = w.scb.data_as<float>();
        a.bias = bias;
        a.threshold = w.threshold;
        a.y = y.data();
        kernels::int8_matmul(context_, a, stream);
        break;
      }
      case quant::WeightFormat::kNf4:
      case quant::WeightFormat::kFp4: {
        kernels::FourBitMatmulArgs a;
        a.m = m;
        a.dtype = DType::kF32;
        a.x = x.data();
        a.weight = w.view();
        a.bias = bias;
        a.y = y.data();
        kernels::four_bit_matmul(context_, a, stream);
        break;
      }
    }
    if (relu) relu_in_place(y, stream);
  }
  void linear_group(StreamRef stream, const LinearWeights* const* w, const TensorView* y,
                    int count, const TensorView& x) override {
    const int64_t m = x.shape()[0];
    bool one_launch = count >= 1 && count <= kernels::kDenseGemvMaxGroup;
    for (int i = 0; i < count && one_launch; ++i) {
      one_launch = takes_dense_gemv(*w[i], m) && w[i]->weight.dtype() == w[0]->weight.dtype();
    }
    if (!one_launch) {
      LinearKernels::linear_group(stream, w, y, count, x);
      return;
    }
    std::array<kernels::DenseGemvArgs, kernels::kDenseGemvMaxGroup> args;
    for (int i = 0; i < count; ++i) {
      check_linear_arguments(*w[i], x, y[i], "linear layer");
      args[static_cast<size_t>(i)] = dense_gemv_args(*w[i], x, y[i], false);
    }
    kernels::dense_gemv_group(args.data(), count, stream);
  }

  void swiglu_linear(StreamRef stream, const LinearWeights& gate, const LinearWeights& up,
                     const TensorView& x, const TensorView& gate_out, const TensorView& up_out,
                     const TensorView& act) override {
    const int64_t m = x.shape()[0];
    if (!takes_dense_gemv(gate, m) || !takes_dense_gemv(up, m) ||
        gate.weight.dtype() != up.weight.dtype() || gate.out_features != up.out_features) {
      LinearKernels::swiglu_linear(stream, gate, up, x, gate_out, up_out, act);
      return;
    }
    check_linear_arguments(gate, x, gate_out, "SwiGLU gate projection");
    check_linear_arguments(up, x, up_out, "SwiGLU up projection");
    check_linear_arguments(gate, x, act, "SwiGLU activation");
    kernels::dense_gemv_swiglu(dense_gemv_args(gate, x, gate_out, false),
                               dense_gemv_args(up, x, up_out, false), act.data_as<float>(), stream);
  }

  void norm_linear_group(StreamRef stream, const InputNorm& norm, const TensorView& x,
                         const TensorView& normed, const LinearWeights* const* w,
                         const TensorView* y, int count) override {
    const int64_t m = x.shape()[0];
    bool one_launch = count >= 1 && count <= kernels::kDenseGemvMaxGroup;
    for (int i = 0; i < count && one_launch; ++i) {
      one_launch = takes_dense_gemv(*w[i], m) && w[i]->weight.dtype() == w[0]->weight.dtype();
    }
    if (!one_launch) {
      LinearKernels::norm_linear_group(stream, norm, x, normed, w, y, count);
      return;
    }
    check_normed(x, normed);
    std::array<kernels::DenseGemvArgs, kernels::kDenseGemvMaxGroup> args;
    for (int i = 0; i < count; ++i) {
      check_linear_arguments(*w[i], x, y[i], "linear layer");
      args[static_cast<size_t>(i)] = dense_gemv_args(*w[i], x, y[i], false);
    }
    kernels::dense_gemv_group(args.data(), count, input_norm(norm, normed), stream);
  }

  void norm_swiglu_linear(StreamRef stream, const InputNorm& norm, const TensorView& x,
                          const TensorView& normed, const LinearWeights& gate,
                          const LinearWeights& up, const TensorView& gate_out,
                          const TensorView& up_out, const TensorView& act) override {
    const int64_t m = x.shape()[0];
    if (!takes_dense_gemv(gate, m) || !takes_dense_gemv(up, m) ||
        gate.weight.dtype() != up.weight.dtype() || gate.out_features != up.out_features) {
      LinearKernels::norm_swiglu_linear(stream, norm, x, normed, gate, up, gate_out, up_out, act);
      return;
    }
    check_normed(x, normed);
    check_linear_arguments(gate, x, gate_out, "SwiGLU gate projection");
    check_linear_arguments(up, x, up_out, "SwiGLU up projection");
    check_linear_arguments(gate, x, act, "SwiGLU activation");
    kernels::dense_gemv_swiglu(dense_gemv_args(gate, x, gate_out, false),
                               dense_gemv_args(up, x, up_out, false), input_norm(norm, normed),
                               act.data_as<float>(), stream);
  }

  void linear_add(StreamRef stream, const LinearWeights& w, const TensorView& x,
                  const TensorView& tmp, const TensorView& h) override {
    if (!takes_dense_gemv(w, x.shape()[0])) {
      LinearKernels::linear_add(stream, w, x, tmp, h);
      return;
    }
    check_linear_arguments(w, x, h, "linear layer (residual)");
    kernels::DenseGemvArgs a = dense_gemv_args(w, x, h, false);
    a.accumulate = true;
    kernels::dense_gemv(a, stream);
  }

  const char* name() const override { return "kernels/ (cuBLASLt on CUDA)"; }

  uint64_t working_bytes(const std::vector<LinearSpec>& layers, int64_t batch) const override {
    // On sim streams kernels/ runs its CPU counterparts: the context is never
    // used, only linear()'s own conversions below come from scratch_.
    const bool cuda = scratch_.tier().backend() == Backend::kCuda;
    uint64_t largest_call = 0;     // allocated and freed within one linear()
    uint64_t largest_context = 0;  // the context's scratch block grows to this
    for (const LinearSpec& l : layers) {
      const int64_t n = l.out_features(), k = l.in_features();
      uint64_t call = 0;
      if (l.has_bias) call += static_cast<uint64_t>(n) * 4;  // a 16-bit bias as float32
      uint64_t context = 0;
      switch (l.layout.format) {
        case quant::WeightFormat::kFloat:
          if (l.layout.storage != DType::kF32 && batch > kernels::kDenseGemvMaxRows) {
            call += static_cast<uint64_t>(batch * k) * 2;
          }
          break;
        case quant::WeightFormat::kInt8:
          context = kernels::int8_matmul_scratch_bytes(batch, n, k, l.threshold);
          break;
        case quant::WeightFormat::kNf4:
        case quant::WeightFormat::kFp4:
          context = kernels::four_bit_matmul_scratch_bytes(
              batch, n, k, DType::kF32, l.layout.blocksize, l.layout.double_quant);
          break;
      }
      largest_call = std::max(largest_call, call);
      largest_context = std::max(largest_context, context);
    }
    if (!cuda) return largest_call;
    return largest_call + largest_context + context_.workspace_bytes();
  }

 private:
  static kernels::DenseGemvArgs dense_gemv_args(const LinearWeights& w, const TensorView& x,
                                                const TensorView& y, bool relu) {
    kernels::DenseGemvArgs a;
    a.m = x.shape()[0];
    a.n = w.out_features;
    a.k = w.in_features;
    a.weight_dtype = w.weight.dtype();
    a.bias_dtype = w.bias.data() != nullptr ? w.bias.dtype() : DType::kF32;
    a.x = x.data_as<float>();
    a.w = w.weight.data();
    a.bias = w.bias.data();
    a.relu = relu;
    a.y = y.data_as<float>();
    return a;
  }

  static kernels::DenseGemvInputNorm input_norm(const InputNorm& norm, const TensorView& normed) {
    kernels::DenseGemvInputNorm n;
    n.weight = norm.weight;
    n.dtype = norm.dtype;
    n.eps = norm.eps;
    n.out = normed.data_as<float>();
    return n;
  }

  static void check_normed(const TensorView& x, const TensorView& normed) {
    STOWAGE_EXPECTS(
        normed.dtype() == DType::kF32 && normed.shape() == x.shape() && normed.data() != x.data(),
        InvalidInputError,
        "input RMSNorm: expected a separate float32 output of the input's shape {}, "
        "found {} {}",
        x.shape().to_string(), short_name(normed.dtype()), normed.shape().to_string());
  }

  static bool takes_dense_gemv(const LinearWeights& w, int64_t m) {
    const DType wt = w.weight.dtype();
    return w.format == quant::WeightFormat::kFloat && (wt == DType::kF16 || wt == DType::kBF16) &&
           m >= 1 && m <= kernels::kDenseGemvMaxRows &&
           (w.bias.data() == nullptr || w.bias.dtype() == DType::kF32 || w.bias.dtype() == wt);
  }

  void from_f32(const TensorView& src, DType dtype, void* dst, StreamRef stream) {
    const int64_t n = static_cast<int64_t>(src.numel());
    if (stream.backend() == Backend::kSim) {
      stream.host_task([src, dtype, dst, n] {
        for (int64_t i = 0; i < n; ++i) store_from_float(dst, dtype, i, src.data_as<float>()[i]);
      });
      return;
    }
#if defined(STOWAGE_MODELS_WITH_CUDA)
    STOWAGE_EXPECTS(dtype == DType::kF16 || dtype == DType::kBF16, InvalidInputError,
                    "linear layer: cannot convert float32 to {} on the accelerator",
                    short_name(dtype));
    // convert.cu returns the launch's cudaError_t as an int (it is built apart).
    STOWAGE_CUDA_TRY_FOR(
        static_cast<cudaError_t>(cuda::convert_f32_to_16bit(
            src.data_as<float>(), dtype == DType::kF16 ? 0 : 1, n, dst, stream.native_handle())),
        "{}: linear layer: converting {} float32 values to {}",
        ::stowage::detail::current_cuda_device(), n, short_name(dtype));
#else
    throw DeviceError("this build has no CUDA kernels for the MLP");
#endif
  }
  void to_f32(const TensorView& src, float* dst, StreamRef stream) {
    const int64_t n = static_cast<int64_t>(src.numel());
    if (stream.backend() == Backend::kSim) {
      stream.host_task([src, dst, n] {
        for (int64_t i = 0; i < n; ++i) dst[i] = load_as_float(src.data(), src.dtype(), i);
      });
      return;
    }
#if defined(STOWAGE_MODELS_WITH_CUDA)
    STOWAGE_EXPECTS(src.dtype() == DType::kF16 || src.dtype() == DType::kBF16, InvalidInputError,
                    "linear layer: cannot convert {} to float32 on the accelerator",
                    short_name(src.dtype()));
    STOWAGE_CUDA_TRY_FOR(
        static_cast<cudaError_t>(cuda::convert_16bit_to_f32(
            src.data(), src.dtype() == DType::kF16 ? 0 : 1, n, dst, stream.native_handle())),
        "{}: linear layer: converting {} {} values to float32",
        ::stowage::detail::current_cuda_device(), n, short_name(src.dtype()));
#else
    throw DeviceError("this build has no CUDA kernels for the MLP");
#endif
  }
  void relu_in_place(const TensorView& y, StreamRef stream) {
    // The int8 and 4-bit matmuls have no ReLU epilogue: a separate pass.
    if (stream.backend() == Backend::kSim) {
      stream.host_task([y] {
        float* p = y.data_as<float>();
        for (uint64_t i = 0; i < y.numel(); ++i) p[i] = p[i] < 0.0f ? 0.0f : p[i];
      });
      return;
    }
#if defined(STOWAGE_MODELS_WITH_CUDA)
    STOWAGE_CUDA_TRY_FOR(
        static_cast<cudaError_t>(cuda::relu_f32(y.data_as<float>(), static_cast<int64_t>(y.numel()),
                                                stream.native_handle())),
        "{}: linear layer: ReLU over {} float32 values", ::stowage::detail::current_cuda_device(),
        y.numel());
#endif
  }

  MemoryResource& scratch_;
  std::mutex mutex_;
  kernels::CublasLtContext context_;
};

}  // namespace

std::unique_ptr<LinearKernels> make_accelerator_linear_kernels(MemoryResource& scratch,
                                                               size_t workspace_bytes) {
  return std::make_unique<AcceleratorLinearKernels>(scratch, workspace_bytes);
}

}  // namespace stowage::models
