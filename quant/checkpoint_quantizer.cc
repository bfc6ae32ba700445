#include "quant/checkpoint_quantizer.h"

#include <fmt/format.h>
#include <re2/re2.h>

#include <cmath>
#include <map>
#include <optional>

#include "core/error.h"

namespace stowage::quant {
namespace {

std::string prefix_of(const std::string& weight_name) {
  return weight_name == "weight" ? std::string()
                                 : weight_name.substr(0, weight_name.size() - 7);  // ".weight"
}

std::string describe(const TensorDecl& d) {
  return fmt::format("{} {}", safetensors_name(d.dtype), d.shape.to_string());
}

}  // namespace

WeightLayout quantized_layout(WeightFormat method, const FourBitOptions& four_bit, DType dtype,
                              const Shape& shape, bool int8_from_source) {
  if (method == WeightFormat::kInt8) {
    return WeightLayout::int8(shape, int8_from_source ? dtype : DType::kF16);
  }
  return WeightLayout::four_bit(method, shape, dtype, four_bit.blocksize, four_bit.double_quant,
                                four_bit.storage);
}

WeightLayout CheckpointQuantizeOptions::layout(DType dtype, const Shape& shape) const {
  return quantized_layout(method, four_bit, dtype, shape);
}

WeightQuantizer cpu_weight_quantizer() {
  return [](const Tensor& weight, const WeightLayout& target, MemoryResource& host,
            std::string_view name) { return quantize_cpu(weight, target, host, name); };
}

CheckpointQuantizer::CheckpointQuantizer(CheckpointQuantizeOptions options,
                                         std::vector<TensorDecl> inputs,
                                         std::function<Tensor(const std::string&)> read)
    : options_(std::move(options)), inputs_(std::move(inputs)), read_(std::move(read)) {
  if (options_.method == WeightFormat::kInt8) {
    STOWAGE_EXPECTS(std::isfinite(options_.threshold) && options_.threshold >= 0.0f,
                    InvalidInputError, "int8 threshold should be a finite number >= 0, found {}",
                    options_.threshold);
  } else {
    options_.four_bit.quant_type = options_.method;
    check_options(options_.four_bit);
  }
  if (!options_.skip_regex.empty()) {
    re2::RE2::Options quiet;
    quiet.set_log_errors(false);
    skip_ = std::make_unique<re2::RE2>(options_.skip_regex, quiet);
    STOWAGE_EXPECTS(skip_->ok(), InvalidInputError, "skip pattern '{}' is not a valid regex: {}",
                    options_.skip_regex, skip_->error());
  }
  // An input that is already quantized (or half of a state) is refused: its
  // I8/U8 tensors would be copied through as if they were plain weights.
  std::vector<std::string> names;
  for (const auto& d : inputs_) names.push_back(d.name);
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < inputs_.size(); ++i) index.emplace(inputs_[i].name, i);
  const auto found = detect_quantized_weights(names, [&](const std::string& name) {
    return index.count(name) ? std::optional<Tensor>(read_(name)) : std::nullopt;
  });
  STOWAGE_EXPECTS(found.empty(), InvalidInputError,
                  "the input already holds quantized weights ('{}' is {}); quantize an "
                  "unquantized checkpoint",
                  found.empty() ? "" : found.front().weight_name,
                  found.empty() ? "" : weight_format_name(found.front().layout.format));
}

bool selected_by_default(std::string_view name, DType dtype, const Shape& shape) {
  static constexpr std::string_view kSuffix = ".weight";
  const bool weight_name =
      name == "weight" ||
      (name.size() > kSuffix.size() && name.substr(name.size() - kSuffix.size()) == kSuffix);
  return weight_name && shape.rank() == 2 &&
         (dtype == DType::kF16 || dtype == DType::kBF16 || dtype == DType::kF32);
}

bool CheckpointQuantizer::is_target(const TensorDecl& input) const {
  if (!selected_by_default(input.name, input.dtype, input.shape)) return false;
  return !(skip_ && re2::RE2::PartialMatch(input.name, *skip_));
}

const std::vector<OutputTensor>& CheckpointQuantizer::plan() {
  if (planned_) return plan_;
  plan_.clear();
  quantized_count_ = copied_count_ = 0;
  input_bytes_ = 0;
  for (const TensorDecl& in : inputs_) {
    input_bytes_ += dtype_bytes_for(in.dtype, in.shape.numel());
    if (!is_target(in)) {
      plan_.push_back({in, in.name, false});
      ++copied_count_;
      continue;
    }
    ++quantized_count_;
    const std::string prefix = prefix_of(in.name);
    auto add = [&](std::string_view suffix, DType dtype, Shape shape) {
      plan_.push_back({{part_name(prefix, suffix), dtype, std::move(shape)}, in.name, true});
    };
    const FourBitOptions& four = options_.four_bit;
    const WeightLayout layout = options_.layout(in.dtype, in.shape);
    uint64_t json_bytes = 0;  // the state JSON's length depends on the nested offset
    if (is_four_bit(layout.format)) {
      const float offset = four.double_quant
                               ? double_quant_offset_cpu(read_(in.name), four.blocksize, in.name)
                               : 0.0f;
      json_bytes = layout.state_json(offset).size();
    }
    for (const PartLayout& part : layout.parts(json_bytes))
      add(part.suffix, part.dtype, part.shape);
  }
  planned_ = true;
  return plan_;
}

void CheckpointQuantizer::run(MemoryResource& resource, const WeightQuantizer& quantizer,
                              const std::function<void(const OutputTensor&, const Tensor&)>& emit,
                              const std::function<void(uint64_t)>& progress) {
  plan();
  size_t next = 0;  // index into plan_
  uint64_t done = 0;
  for (const TensorDecl& in : inputs_) {
    const Tensor source = read_(in.name);
    STOWAGE_EXPECTS(source.dtype() == in.dtype && source.shape() == in.shape, InvalidInputError,
                    "tensor '{}' was declared {} but reads as {} {}", in.name, describe(in),
                    safetensors_name(source.dtype()), source.shape().to_string());
    if (!is_target(in)) {
      emit(plan_.at(next++), source);
    } else {
      // The parts live only in this scope: released before the next weight.
      QuantizedWeight weight =
          quantizer(source, options_.layout(in.dtype, in.shape), resource, in.name);
      if (auto* int8 = std::get_if<Int8Weight>(&weight)) int8->threshold = options_.threshold;
      for (const QuantPart& part : parts(weight)) {
        const OutputTensor& out = plan_.at(next++);
        const bool same = out.decl.name == part_name(prefix_of(in.name), part.suffix) &&
                          out.decl.dtype == part.tensor.dtype() &&
                          out.decl.shape == part.tensor.shape();
        STOWAGE_EXPECTS(same, InternalError,
                        "quantizing '{}' gave part '{}' as {} {}, but the plan declared '{}' as {}",
                        in.name, part.suffix, safetensors_name(part.tensor.dtype()),
                        part.tensor.shape().to_string(), out.decl.name, describe(out.decl));
        emit(out, part.tensor);
      }
    }
    if (release_) release_(source);
    done += dtype_bytes_for(in.dtype, in.shape.numel());
    if (progress) progress(done);
  }
  STOWAGE_EXPECTS(next == plan_.size(), InternalError,
                  "emitted {} of the {} planned output tensors", next, plan_.size());
}

}  // namespace stowage::quant
