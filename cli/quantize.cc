// `stowage quantize --method int8|nf4|fp4 IN OUT` (CLI.md): streams IN
// tensor by tensor through quant::CheckpointQuantizer into OUT in the
// bitsandbytes key layout. On CUDA (--device cuda, or auto with a GPU) the
// weights are quantized by kernels/ (bit-identical to the CPU reference),
// otherwise on the CPU. OUT appears only when complete (SafetensorsWriter
// writes a temporary file and renames it on commit).
//
// Exit statuses: 2 for bad usage (unknown flag, missing argument or --method,
// a 4-bit option with int8 or the reverse, any bad flag value: an unknown
// method, a blocksize that is not a power of two in [32, 4096], an unknown
// storage dtype, a threshold that is not a finite number >= 0, a --skip that
// is not an RE2 regex, an unknown --device); 1 for bad input: OUT that is IN
// (by name or link) or not a regular file, an input that is already quantized
// or holds half of a quantization state, a non-finite weight, I/O errors. A `.weight` that is not
// 2-D is not an error: it is copied through unquantized (CLI.md's default), and the summary counts
// it.
#include "kernels/quantize.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/platform.h"
#include "mmap_store/output_path.h"
#include "mmap_store/safetensors_reader.h"
#include "mmap_store/safetensors_writer.h"
#include "quant/checkpoint_quantizer.h"

namespace stowage::cli {
namespace {

using quant::CheckpointQuantizeOptions;
using quant::WeightFormat;

CheckpointQuantizeOptions parse_options(const ArgParser& p) {
  CheckpointQuantizeOptions opt;
  const auto method_text = p.get("method");
  if (!method_text) throw UsageError("--method is required: int8, nf4 or fp4");
  const auto method = quant::quantized_format_from_name(*method_text);
  if (!method) {
    throw UsageError(
        fmt::format("--method: unknown quantization method '{}'; expected int8, nf4 "
                    "or fp4",
                    *method_text));
  }
  opt.method = *method;
  const bool four_bit = opt.method != WeightFormat::kInt8;
  for (const char* flag : {"blocksize", "quant-storage", "double-quant"}) {
    if (!four_bit && p.has(flag)) {
      throw UsageError(fmt::format("--{} applies to nf4 and fp4, not int8", flag));
    }
  }
  if (four_bit && p.has("threshold")) throw UsageError("--threshold applies to int8 only");

  opt.four_bit.quant_type = opt.method;
  opt.four_bit.blocksize = p.get_int("blocksize", 64, std::numeric_limits<int64_t>::min(),
                                     std::numeric_limits<int64_t>::max());
  if (!quant::is_valid_blocksize(opt.four_bit.blocksize)) {
    throw UsageError(fmt::format("--blocksize should be a power of two in [{}, {}], found {}",
                                 quant::kMinBlocksize, quant::kMaxBlocksize,
                                 opt.four_bit.blocksize));
  }
  opt.four_bit.double_quant = p.has("double-quant");
  const std::string storage = p.get_or("quant-storage", "uint8");
  const auto storage_dtype = dtype_from_torch_name(storage);
  if (!storage_dtype || !quant::is_valid_storage_dtype(*storage_dtype)) {
    throw UsageError(fmt::format(
        "--quant-storage should be uint8, float16, bfloat16 or float32, found '{}'", storage));
  }
  opt.four_bit.storage = *storage_dtype;
  const double threshold = p.get_double("threshold", 6.0);
  if (!(threshold >= 0) || !std::isfinite(threshold)) {
    throw UsageError(
        fmt::format("--threshold should be a finite number >= 0, found {}", threshold));
  }
  opt.threshold = static_cast<float>(threshold);
  opt.skip_regex = p.get_or("skip", "");
  check_regex_flag("skip", opt.skip_regex);
  return opt;
}

// Drops the pages of an mmap'd (disk-tier) input tensor from this process once
// it has been quantized or copied: the file stays in the page cache, but the
// process's resident memory stays near one tensor instead of growing with the
// model. Harmless on a read-only mapping (a later read faults the pages back).
void drop_mapped_pages(const Tensor& t) {
  if (t.tier().kind() != TierKind::kDisk || t.bytes() == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data()) & ~(page - 1);
  const uintptr_t end =
      (reinterpret_cast<uintptr_t>(t.data()) + t.bytes() + page - 1) & ~(page - 1);
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);  // advisory: ignore errors
}

// Device-memory scratch for one weight, freed (stream-ordered) at scope end.
Tensor device_empty(Accelerator& acc, StreamRef stream, DType dtype, int64_t count) {
  return Tensor::empty(acc.memory(), dtype, Shape{count}, stream);
}

// Quantizes on the GPU with kernels/, giving the CPU reference's bytes.
quant::WeightQuantizer cuda_weight_quantizer(const CheckpointQuantizeOptions& opt, Accelerator& acc,
                                             StreamRef stream) {
  return [opt, &acc, stream](const Tensor& weight, const std::string& name,
                             MemoryResource& host) -> quant::QuantizedWeight {
    quant::check_finite_cpu(weight, name);  // the CPU quantizer's check, same errors
    const int64_t n = static_cast<int64_t>(weight.numel());
    if (opt.method == WeightFormat::kInt8) {
      // bitsandbytes quantizes int8 weights from float16: convert first.
      Tensor f16 = weight;
      if (weight.dtype() != DType::kF16) {
        f16 = Tensor::empty(host, DType::kF16, weight.shape());
        // Through an aligned copy: a tensor in a file may sit at any offset.
        Tensor aligned = Tensor::empty(host, weight.dtype(), weight.shape());
        std::memcpy(aligned.data(), weight.data(), weight.bytes());
        for (int64_t i = 0; i < n; ++i) {
          store_from_float(f16.data(), DType::kF16, i,
                           load_as_float(aligned.data(), aligned.dtype(), i));
        }
        quant::check_finite_cpu(f16, name);
      }
      const int64_t rows = weight.shape()[0];
      const int64_t cols = weight.shape()[1];
      Tensor d_in = device_empty(acc, stream, DType::kF16, n);
      Tensor d_cb = device_empty(acc, stream, DType::kI8, n);
      Tensor d_scb = device_empty(acc, stream, DType::kF32, rows);
      stream.copy(d_in.data(), f16.data(), f16.bytes());
      kernels::quantize_int8_rowwise(d_in.data(), DType::kF16, rows, cols, d_cb.data_as<int8_t>(),
                                     d_scb.data_as<float>(), stream);
      quant::Int8Weight w;
      w.threshold = opt.threshold;
      w.cb = Tensor::empty(host, DType::kI8, weight.shape());
      w.scb = Tensor::empty(host, DType::kF32, Shape{rows});
      w.weight_format = Tensor::empty(host, DType::kU8, Shape{});
      *w.weight_format.data_as<uint8_t>() = 0;
      stream.copy(w.cb.data(), d_cb.data(), w.cb.bytes());
      stream.copy(w.scb.data(), d_scb.data(), w.scb.bytes());
      stream.synchronize();
      return w;
    }
    const quant::FourBitOptions& four = opt.four_bit;
    const auto type =
        opt.method == WeightFormat::kFp4 ? quant::WeightFormat::kFp4 : quant::WeightFormat::kNf4;
    const int64_t blocks = quant::block_count(n, four.blocksize);
    const int64_t packed_bytes = quant::packed_code_bytes(n);
    Tensor d_in = device_empty(acc, stream, weight.dtype(), n);
    Tensor d_packed = device_empty(acc, stream, DType::kU8, packed_bytes);
    Tensor d_absmax = device_empty(acc, stream, DType::kF32, blocks);
    stream.copy(d_in.data(), weight.data(), weight.bytes());
    kernels::quantize_4bit(d_in.data(), weight.dtype(), n, four.blocksize, type,
                           d_packed.data_as<uint8_t>(), d_absmax.data_as<float>(), stream);
    quant::FourBitWeight w;
    w.quant_type = opt.method;
    w.blocksize = four.blocksize;
    w.dtype = weight.dtype();
    w.shape = weight.shape();
    w.packed = Tensor::empty(host, four.storage, quant::packed_shape(n, four.storage));
    std::fill_n(w.packed.data_as<uint8_t>(), w.packed.bytes(), uint8_t{0});
    stream.copy(w.packed.data(), d_packed.data(), static_cast<size_t>(packed_bytes));
    w.quant_map = Tensor::empty(host, DType::kF32, Shape{16});
    for (int i = 0; i < 16; ++i) {
      w.quant_map.data_as<float>()[i] = quant::stored_quant_map_value(opt.method, i);
    }
    if (!four.double_quant) {
      w.absmax = Tensor::empty(host, DType::kF32, Shape{blocks});
      stream.copy(w.absmax.data(), d_absmax.data(), w.absmax.bytes());
    } else {
      const int64_t nested = quant::nested_block_count(blocks);
      Tensor d_offset = device_empty(acc, stream, DType::kF32, 1);
      Tensor d_codes = device_empty(acc, stream, DType::kU8, blocks);
      Tensor d_nested = device_empty(acc, stream, DType::kF32, nested);
      Tensor d_scratch = device_empty(acc, stream, DType::kF64, nested);
      kernels::double_quantize_absmax(d_absmax.data_as<float>(), blocks, d_offset.data_as<float>(),
                                      d_codes.data_as<uint8_t>(), d_nested.data_as<float>(),
                                      d_scratch.data_as<double>(), stream);
      w.absmax = Tensor::empty(host, DType::kU8, Shape{blocks});
      w.nested_absmax = Tensor::empty(host, DType::kF32, Shape{nested});
      w.nested_quant_map = Tensor::empty(host, DType::kF32, Shape{256});
      for (int i = 0; i < 256; ++i) {
        w.nested_quant_map.data_as<float>()[i] = quant_rules::dynamic_map_value(i);
      }
      stream.copy(w.absmax.data(), d_codes.data(), w.absmax.bytes());
      stream.copy(w.nested_absmax.data(), d_nested.data(), w.nested_absmax.bytes());
      stream.copy(&w.nested_offset, d_offset.data(), sizeof(float));
      stream.synchronize();
    }
    stream.synchronize();
    w.quant_state = quant::make_state_tensor(w.layout().state_json(w.nested_offset), host);
    return w;
  };
}

}  // namespace

int run_quantize(const std::vector<std::string>& args,
                 mmap_store::TemporaryFileRegistry* temporaries) {
  ArgParser p("quantize", {"method", "blocksize", "quant-storage", "threshold", "skip", "device"},
              {"double-quant"});
  p.parse(args);
  p.expect_positional(2, "IN OUT");
  const std::string in_path = p.positional()[0];
  const std::string out_path = p.positional()[1];
  const CheckpointQuantizeOptions opt = parse_options(p);
  const DeviceChoice device = parse_device_flag(p.get_or("device", "auto"));
  mmap_store::check_output_file(out_path, {in_path}, "OUT");

  auto file = mmap_store::SafetensorsFile::open(in_path);
  std::vector<quant::TensorDecl> inputs;
  for (const std::string& name : file->names()) {
    const auto& info = file->info(name);
    inputs.push_back({name, info.dtype, info.shape});
  }
  quant::CheckpointQuantizer quantizer(opt, inputs,
                                       [&](const std::string& name) { return file->tensor(name); });
  quantizer.set_release(drop_mapped_pages);

  // CUDA where present (or asked for); the CPU reference otherwise.
  std::unique_ptr<Platform> platform;
  Stream stream;
  const bool use_cuda =
      device == DeviceChoice::kCuda || (device == DeviceChoice::kAuto && cuda_device_available());
  if (use_cuda) {
    platform = Platform::create(DeviceChoice::kCuda);
    stream = platform->accelerator(0).create_stream();
  }
  const quant::WeightQuantizer weight_quantizer =
      use_cuda ? cuda_weight_quantizer(opt, platform->accelerator(0), stream.ref())
               : quant::cpu_weight_quantizer(opt);

  const auto& plan = quantizer.plan();
  mmap_store::AtomicFileOptions out_options;
  out_options.registry = temporaries;  // removed by the interrupt handler
  mmap_store::SafetensorsWriter writer(out_path, out_options);
  writer.set_metadata(file->metadata());
  for (const auto& out : plan) writer.declare(out.decl.name, out.decl.dtype, out.decl.shape);

  HostMemoryResource host;
  StatisticsAdaptor stats(host);
  ProgressBar bar("quantize", quantizer.input_bytes());
  uint64_t out_bytes = 0;
  quantizer.run(
      stats, weight_quantizer,
      [&](const quant::OutputTensor& out, const Tensor& t) {
        writer.write(out.decl.name, t.view());
        out_bytes += t.bytes();
      },
      [&](uint64_t done) { bar.update(done); });
  writer.commit();
  bar.finish();

  std::string what(quant::weight_format_name(opt.method));
  if (opt.method != WeightFormat::kInt8) {
    what += fmt::format(", blocksize {}{}, storage {}", opt.four_bit.blocksize,
                        opt.four_bit.double_quant ? ", double quant" : "",
                        torch_name(opt.four_bit.storage));
  }
  std::printf(
      "quantized %zu weights (%s) on %s, copied %zu tensors unchanged: %s (%s) -> %s (%s); "
      "peak quantizer host memory %s\n",
      quantizer.quantized_count(), what.c_str(), use_cuda ? "cuda" : "cpu",
      quantizer.copied_count(), in_path.c_str(), format_bytes(quantizer.input_bytes()).c_str(),
      out_path.c_str(), format_bytes(out_bytes).c_str(), format_bytes(stats.peak_bytes()).c_str());
  return 0;
}

}  // namespace stowage::cli
