#include "hostcompute/host_gemv.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "hostcompute/detail/gemv_isa.h"
#include "hostcompute/worker_team.h"
#include "quant/quant_rules.h"

namespace stowage::hostcompute {

const char* host_weight_format_name(HostWeightFormat format) {
  switch (format) {
    case HostWeightFormat::kBF16:
      return "bf16";
    case HostWeightFormat::kF16:
      return "f16";
    case HostWeightFormat::kInt8:
      return "int8";
    case HostWeightFormat::kNf4:
      return "nf4";
    case HostWeightFormat::kFp4:
      return "fp4";
  }
  return "?";
}

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

bool is_four_bit(HostWeightFormat format) {
  return format == HostWeightFormat::kNf4 || format == HostWeightFormat::kFp4;
}

void check_arguments(const HostLinearArgs& a) {
  STOWAGE_EXPECTS(a.m >= 0 && a.n >= 0 && a.k >= 0, InvalidInputError,
                  "{}: expected non-negative sizes, found m {} n {} k {}", kWhere, a.m, a.n, a.k);
  const bool outputs = a.m > 0 && a.n > 0;
  const bool reads = outputs && a.k > 0;
  STOWAGE_EXPECTS(!outputs || a.y != nullptr, InvalidInputError,
                  "{}: expected an output y of [{}, {}] floats, found a null pointer", kWhere, a.m,
                  a.n);
  STOWAGE_EXPECTS(!reads || a.x != nullptr, InvalidInputError,
                  "{}: expected an input x of [{}, {}] floats, found a null pointer", kWhere, a.m,
                  a.k);
  const HostWeight& w = a.weight;
  const char* format = host_weight_format_name(w.format);
  STOWAGE_EXPECTS(!reads || w.data != nullptr, InvalidInputError,
                  "{}: expected {} weight data for [{}, {}], found a null pointer", kWhere, format,
                  a.n, a.k);
  STOWAGE_EXPECTS(
      a.bias_dtype == DType::kF32 || a.bias_dtype == DType::kF16 || a.bias_dtype == DType::kBF16,
      InvalidInputError, "{}: expected a bias dtype of f32, f16 or bf16, found {}", kWhere,
      short_name(a.bias_dtype));
  if (w.format == HostWeightFormat::kInt8) {
    STOWAGE_EXPECTS(!outputs || w.scb != nullptr, InvalidInputError,
                    "{}: expected int8 row scales SCB of {} floats, found a null pointer", kWhere,
                    a.n);
  }
  if (!is_four_bit(w.format)) return;
  STOWAGE_EXPECTS(w.blocksize > 0, InvalidInputError,
                  "{}: expected a positive {} blocksize, found {}", kWhere, format, w.blocksize);
  if (!reads) return;
  const int64_t blocks = quant_rules::block_count(a.n * a.k, w.blocksize);
  STOWAGE_EXPECTS((w.absmax != nullptr) != (w.absmax_codes != nullptr), InvalidInputError,
                  "{}: expected either float absmax or double-quantized absmax codes ({} blocks), "
                  "found {}",
                  kWhere, blocks, w.absmax != nullptr ? "both" : "neither");
  if (w.absmax_codes != nullptr) {
    STOWAGE_EXPECTS(w.nested_blocksize > 0, InvalidInputError,
                    "{}: expected a positive nested blocksize, found {}", kWhere,
                    w.nested_blocksize);
    STOWAGE_EXPECTS(w.nested_absmax != nullptr, InvalidInputError,
                    "{}: expected nested_absmax of {} floats with double quantization, found a "
                    "null pointer",
                    kWhere, quant_rules::block_count(blocks, w.nested_blocksize));
  }
}

detail::GemvJob make_job(const HostLinearArgs& args, const float* dynamic_map) {
  detail::GemvJob job;
  job.args = args;
  const HostWeight& w = args.weight;
  if (!is_four_bit(w.format)) return job;
  const auto type =
      w.format == HostWeightFormat::kFp4 ? quant::WeightFormat::kFp4 : quant::WeightFormat::kNf4;
  for (int q = 0; q < 16; ++q) {
    job.code[q] =
        w.quant_map != nullptr ? w.quant_map[q] : quant_rules::four_bit_code_value(type, q);
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
  if (args.m == 0 || args.n == 0) return;
  if (args.k == 0) {
    // An empty sum: y is the bias (or 0).
    for (int64_t i = 0; i < args.m; ++i) {
      for (int64_t r = 0; r < args.n; ++r) {
        const float bias = args.bias != nullptr
                               ? load_as_float(args.bias, args.bias_dtype, static_cast<size_t>(r))
                               : 0.0f;
        args.y[i * args.n + r] = args.relu && bias < 0.0f ? 0.0f : bias;
      }
    }
    return;
  }
  const detail::GemvJob job = make_job(args, dynamic_map_.data());
  const RowKernel kernel = row_kernel(isa_);
  // Contiguous shares of the rows: each thread streams one run of W.
  const int64_t members = std::min<int64_t>(team_->size(), args.n);
  team_->run([&](int member) {
    if (member >= members) return;
    const int64_t begin = args.n * member / members;
    const int64_t end = args.n * (member + 1) / members;
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
    if (args[i].m == 0 || args[i].n == 0 || args[i].k == 0) {
      linear(args[i]);
      continue;
    }
    jobs.push_back(make_job(args[i], dynamic_map_.data()));
    first_row.push_back(first_row.back() + args[i].n);
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

uint64_t host_weight_bytes(const HostWeight& weight, int64_t n, int64_t k) {
  const uint64_t elements = static_cast<uint64_t>(n) * static_cast<uint64_t>(k);
  switch (weight.format) {
    case HostWeightFormat::kBF16:
    case HostWeightFormat::kF16:
      return elements * 2;
    case HostWeightFormat::kInt8:
      return elements + static_cast<uint64_t>(n) * sizeof(float);
    case HostWeightFormat::kNf4:
    case HostWeightFormat::kFp4: {
      const int64_t blocks =
          quant_rules::block_count(n * k, std::max<int64_t>(1, weight.blocksize));
      uint64_t bytes = quant_rules::packed_code_bytes(n * k);
      if (weight.absmax_codes != nullptr) {
        bytes += blocks +
                 quant_rules::block_count(blocks, std::max<int64_t>(1, weight.nested_blocksize)) *
                     sizeof(float);
      } else {
        bytes += blocks * sizeof(float);
      }
      return bytes;
    }
  }
  return 0;
}

}  // namespace stowage::hostcompute
