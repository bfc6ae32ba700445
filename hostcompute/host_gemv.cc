#include "hostcompute/host_gemv.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "hostcompute/detail/gemv_isa.h"
#include "hostcompute/worker_team.h"
#include "quant/quant_rules.h"

namespace stowage::hostcompute {

const char* host_isa_name(HostIsa isa) {
  switch (isa) {
    case HostIsa::kScalar:
      return "scalar";
    case HostIsa::kAvx2:
      return "avx2+fma";
    case HostIsa::kAvx512:
      return "avx512";
  }
  return "?";
}

HostIsa best_host_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return HostIsa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return HostIsa::kAvx2;
  }
#endif
  return HostIsa::kScalar;
}

namespace {

constexpr const char* kWhere = "host linear";

void check_arguments(const HostLinearArgs& a) {
  const quant::WeightView& w = a.weight;
  STOWAGE_EXPECTS(a.m >= 0 && w.out >= 0 && w.in >= 0, InvalidInputError,
                  "{}: expected non-negative sizes, found m {} n {} k {}", kWhere, a.m, w.out,
                  w.in);
  const bool outputs = a.m > 0 && w.out > 0;
  const bool reads = outputs && w.in > 0;
  STOWAGE_EXPECTS(!outputs || a.y != nullptr, InvalidInputError,
                  "{}: expected an output y of [{}, {}] floats, found a null pointer", kWhere, a.m,
                  w.out);
  STOWAGE_EXPECTS(!reads || a.x != nullptr, InvalidInputError,
                  "{}: expected an input x of [{}, {}] floats, found a null pointer", kWhere, a.m,
                  w.in);
  w.validate(kWhere);
  STOWAGE_EXPECTS(!reads || w.format != quant::WeightFormat::kFloat || w.dtype == DType::kBF16 ||
                      w.dtype == DType::kF16,
                  InvalidInputError, "{}: expected float weight values of bf16 or f16, found {}",
                  kWhere, short_name(w.dtype));
  STOWAGE_EXPECTS(
      a.bias_dtype == DType::kF32 || a.bias_dtype == DType::kF16 || a.bias_dtype == DType::kBF16,
      InvalidInputError, "{}: expected a bias dtype of f32, f16 or bf16, found {}", kWhere,
      short_name(a.bias_dtype));
}

detail::GemvJob make_job(const HostLinearArgs& args, const float* dynamic_map) {
  detail::GemvJob job;
  job.args = args;
  const quant::WeightView& w = args.weight;
  if (!quant::is_four_bit(w.format)) return job;
  for (int q = 0; q < 16; ++q) {
    job.code[q] =
        w.quant_map != nullptr ? w.quant_map[q] : quant_rules::four_bit_code_value(w.format, q);
  }
  job.nested_code = w.nested_quant_map != nullptr ? w.nested_quant_map : dynamic_map;
  return job;
}

using RowKernel = void (*)(const detail::GemvJob&, int64_t, int64_t);

RowKernel row_kernel(HostIsa isa) {
  switch (isa) {
    case HostIsa::kAvx512:
      return detail::gemv_rows_avx512;
    case HostIsa::kAvx2:
      return detail::gemv_rows_avx2;
    case HostIsa::kScalar:
      break;
  }
  return detail::gemv_rows_scalar;
}

}  // namespace

HostGemv::HostGemv(int threads, std::optional<HostIsa> isa) : isa_(isa.value_or(best_host_isa())) {
  STOWAGE_EXPECTS(static_cast<int>(isa_) <= static_cast<int>(best_host_isa()), InvalidInputError,
                  "{}: expected an instruction set this CPU runs (at most {}), found {}", kWhere,
                  host_isa_name(best_host_isa()), host_isa_name(isa_));
  for (int q = 0; q < 256; ++q) dynamic_map_[q] = quant_rules::dynamic_map_value(q);
  team_ = std::make_unique<WorkerTeam>(threads);
}

HostGemv::~HostGemv() = default;

int HostGemv::threads() const { return team_->size(); }

void HostGemv::linear(const HostLinearArgs& args) {
  check_arguments(args);
  if (args.m == 0 || args.weight.out == 0) return;
  if (args.weight.in == 0) {
    // An empty sum: y is the bias (or 0).
    for (int64_t i = 0; i < args.m; ++i) {
      for (int64_t r = 0; r < args.weight.out; ++r) {
        const float bias = args.bias != nullptr
                               ? load_as_float(args.bias, args.bias_dtype, static_cast<size_t>(r))
                               : 0.0f;
        args.y[i * args.weight.out + r] = args.relu && bias < 0.0f ? 0.0f : bias;
      }
    }
    return;
  }
  const detail::GemvJob job = make_job(args, dynamic_map_.data());
  const RowKernel kernel = row_kernel(isa_);
  // Contiguous shares of the rows: each thread streams one run of W.
  const int64_t members = std::min<int64_t>(team_->size(), args.weight.out);
  team_->run([&](int member) {
    if (member >= members) return;
    const int64_t begin = args.weight.out * member / members;
    const int64_t end = args.weight.out * (member + 1) / members;
    kernel(job, begin, end);
  });
}

void HostGemv::linear_batch(const HostLinearArgs* args, int count) {
  STOWAGE_EXPECTS(count >= 0 && (count == 0 || args != nullptr), InvalidInputError,
                  "{}: expected a batch of linears, found {} at {}", kWhere, count,
                  static_cast<const void*>(args));
  for (int i = 0; i < count; ++i) check_arguments(args[i]);
  // The calls the team runs in one pass; the degenerate ones as linear() does.
  std::vector<detail::GemvJob> jobs;
  std::vector<int64_t> first_row{0};  // of each job in the concatenated rows
  for (int i = 0; i < count; ++i) {
    if (args[i].m == 0 || args[i].weight.out == 0 || args[i].weight.in == 0) {
      linear(args[i]);
      continue;
    }
    jobs.push_back(make_job(args[i], dynamic_map_.data()));
    first_row.push_back(first_row.back() + args[i].weight.out);
  }
  const int64_t rows = first_row.back();
  if (rows == 0) return;
  const RowKernel kernel = row_kernel(isa_);
  const int64_t members = std::min<int64_t>(team_->size(), rows);
  team_->run([&](int member) {
    if (member >= members) return;
    const int64_t begin = rows * member / members;
    const int64_t end = rows * (member + 1) / members;
    for (size_t j = 0; j < jobs.size(); ++j) {
      const int64_t from = std::max(begin, first_row[j]);
      const int64_t to = std::min(end, first_row[j + 1]);
      if (from < to) kernel(jobs[j], from - first_row[j], to - first_row[j]);
    }
  });
}

}  // namespace stowage::hostcompute
