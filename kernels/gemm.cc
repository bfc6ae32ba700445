// Argument checks on the calling thread, then the CPU counterpart (null stream:
// now; sim stream: enqueued with host_task) or the CUDA implementation.
#include "kernels/gemm.h"

#include <array>

#include "core/error.h"
#include "kernels/cpu_reference.h"
#include "kernels/cpu_transformer_ops.h"
#include "kernels/detail/arg_checks.h"
#include "kernels/detail/cuda_ops.h"
#include "kernels/detail/cuda_transformer_ops.h"
#include "kernels/detail/dispatch.h"

namespace stowage::kernels {

using detail::dispatch;
using detail::expect_float_dtype;
using detail::expect_non_negative;
using detail::expect_pointer;

void gemm(CublasLtContext& context, const GemmArgs& a, StreamRef stream) {
  const char* call = "gemm";
  expect_float_dtype(call, "dtype", a.dtype);
  STOWAGE_EXPECTS(a.out_dtype == DType::kF32 || a.out_dtype == a.dtype, InvalidInputError,
                  "kernels::gemm: out_dtype must be f32 or the input dtype {}, found {}",
                  short_name(a.dtype), short_name(a.out_dtype));
  expect_non_negative(call, "m", a.m);
  expect_non_negative(call, "n", a.n);
  expect_non_negative(call, "k", a.k);
  expect_pointer(call, "x", a.x, a.m * a.k > 0);
  expect_pointer(call, "w", a.w, a.n * a.k > 0);
  expect_pointer(call, "y", a.y, a.m * a.n > 0);
  dispatch(
      stream, [a] { cpu::gemm(a); }, [&](void*) { detail::cuda_gemm(context, a, stream); });
}

namespace {

void check_dense_gemv(const DenseGemvArgs& a) {
  const char* call = "dense_gemv";
  STOWAGE_EXPECTS(a.weight_dtype == DType::kF16 || a.weight_dtype == DType::kBF16,
                  InvalidInputError, "kernels::dense_gemv: weight dtype must be f16 or bf16, found {}",
                  short_name(a.weight_dtype));
  STOWAGE_EXPECTS(a.bias == nullptr || a.bias_dtype == DType::kF32 || a.bias_dtype == a.weight_dtype,
                  InvalidInputError,
                  "kernels::dense_gemv: bias dtype must be f32 or the weight's {}, found {}",
                  short_name(a.weight_dtype), short_name(a.bias_dtype));
  STOWAGE_EXPECTS(a.m >= 1 && a.m <= kDenseGemvMaxRows, InvalidInputError,
                  "kernels::dense_gemv: m must be in 1..{}, found {}", kDenseGemvMaxRows, a.m);
  expect_non_negative(call, "n", a.n);
  expect_non_negative(call, "k", a.k);
  expect_pointer(call, "x", a.x, a.k > 0);
  expect_pointer(call, "w", a.w, a.n * a.k > 0);
  expect_pointer(call, "y", a.y, a.n > 0);
}

}  // namespace

void dense_gemv(const DenseGemvArgs& a, StreamRef stream) {
  check_dense_gemv(a);
  if (a.n == 0) return;
  dispatch(
      stream, [a] { cpu::dense_gemv(a); }, [&](void* s) { detail::cuda_dense_gemv(a, s); });
}

namespace {

// The group's arguments, checked: 1..kDenseGemvMaxGroup GEMVs over one x.
std::array<DenseGemvArgs, kDenseGemvMaxGroup> checked_group(const DenseGemvArgs* outputs,
                                                            int count) {
  STOWAGE_EXPECTS(outputs != nullptr && count >= 1 && count <= kDenseGemvMaxGroup,
                  InvalidInputError, "kernels::dense_gemv_group: expected 1..{} outputs, found {}",
                  kDenseGemvMaxGroup, count);
  std::array<DenseGemvArgs, kDenseGemvMaxGroup> group;
  for (int i = 0; i < count; ++i) {
    const DenseGemvArgs& a = outputs[i];
    check_dense_gemv(a);
    STOWAGE_EXPECTS(a.x == outputs[0].x && a.m == outputs[0].m && a.k == outputs[0].k &&
                        a.weight_dtype == outputs[0].weight_dtype,
                    InvalidInputError,
                    "kernels::dense_gemv_group: output {} expected output 0's x, m={}, k={} and "
                    "{} weights, found m={}, k={}, {} weights{}",
                    i, outputs[0].m, outputs[0].k, short_name(outputs[0].weight_dtype), a.m, a.k,
                    short_name(a.weight_dtype), a.x == outputs[0].x ? "" : " and another x");
    group[static_cast<size_t>(i)] = a;
  }
  return group;
}

void check_swiglu(const DenseGemvArgs& gate, const DenseGemvArgs& up, const float* act) {
  check_dense_gemv(gate);
  check_dense_gemv(up);
  STOWAGE_EXPECTS(gate.x == up.x && gate.m == up.m && gate.n == up.n && gate.k == up.k &&
                      gate.weight_dtype == up.weight_dtype && !gate.relu && !up.relu &&
                      !gate.accumulate && !up.accumulate,
                  InvalidInputError,
                  "kernels::dense_gemv_swiglu: expected gate and up with the same x, m, n, k and "
                  "weight dtype and no relu or accumulate, found gate m={} n={} k={} {} and up "
                  "m={} n={} k={} {}",
                  gate.m, gate.n, gate.k, short_name(gate.weight_dtype), up.m, up.n, up.k,
                  short_name(up.weight_dtype));
  expect_pointer("dense_gemv_swiglu", "act", act, gate.n > 0);
}

void check_input_norm(const char* call, const DenseGemvInputNorm& norm, int64_t k) {
  expect_float_dtype(call, "norm.dtype", norm.dtype);
  expect_pointer(call, "norm.weight", norm.weight, k > 0);
  expect_pointer(call, "norm.out", norm.out, k > 0);
}

// The norm's CPU counterpart: rms_norm of x [m, k] into norm.out.
void cpu_input_norm(const DenseGemvArgs& first, const DenseGemvInputNorm& norm) {
  cpu::rms_norm({first.m, first.k, first.x, norm.weight, norm.dtype, norm.eps, norm.out});
}

}  // namespace

void dense_gemv_group(const DenseGemvArgs* outputs, int count, StreamRef stream) {
  const std::array<DenseGemvArgs, kDenseGemvMaxGroup> group = checked_group(outputs, count);
  dispatch(
      stream,
      [group, count] {
        for (int i = 0; i < count; ++i) {
          if (group[static_cast<size_t>(i)].n > 0) cpu::dense_gemv(group[static_cast<size_t>(i)]);
        }
      },
      [&](void* s) { detail::cuda_dense_gemv_group(group.data(), count, s); });
}

void dense_gemv_group(const DenseGemvArgs* outputs, int count, const DenseGemvInputNorm& norm,
                      StreamRef stream) {
  const std::array<DenseGemvArgs, kDenseGemvMaxGroup> group = checked_group(outputs, count);
  check_input_norm("dense_gemv_group", norm, group[0].k);
  if (group[0].k == 0) return;
  dispatch(
      stream,
      [group, count, norm] {
        cpu_input_norm(group[0], norm);
        for (int i = 0; i < count; ++i) {
          DenseGemvArgs a = group[static_cast<size_t>(i)];
          a.x = norm.out;
          if (a.n > 0) cpu::dense_gemv(a);
        }
      },
      [&](void* s) {
        detail::cuda_rms_norm_dense_gemv_group(group.data(), count, norm, nullptr, s);
      });
}

void dense_gemv_swiglu(const DenseGemvArgs& gate, const DenseGemvArgs& up, float* act,
                       StreamRef stream) {
  check_swiglu(gate, up, act);
  if (gate.n == 0) return;
  dispatch(
      stream,
      [gate, up, act] {
        cpu::dense_gemv(gate);
        cpu::dense_gemv(up);
        cpu::swiglu({gate.m, gate.n, gate.y, gate.n, up.y, up.n, act});
      },
      [&](void* s) { detail::cuda_dense_gemv_swiglu(gate, up, act, s); });
}

void dense_gemv_swiglu(const DenseGemvArgs& gate, const DenseGemvArgs& up,
                       const DenseGemvInputNorm& norm, float* act, StreamRef stream) {
  check_swiglu(gate, up, act);
  check_input_norm("dense_gemv_swiglu", norm, gate.k);
  if (gate.k == 0 && gate.n == 0) return;
  dispatch(
      stream,
      [gate, up, norm, act] {
        cpu_input_norm(gate, norm);
        if (gate.n == 0) return;
        DenseGemvArgs g = gate, u = up;
        g.x = u.x = norm.out;
        cpu::dense_gemv(g);
        cpu::dense_gemv(u);
        cpu::swiglu({g.m, g.n, g.y, g.n, u.y, u.n, act});
      },
      [&](void* s) {
        const DenseGemvArgs pair[2] = {gate, up};
        detail::cuda_rms_norm_dense_gemv_group(pair, 2, norm, act, s);
      });
}

}  // namespace stowage::kernels
