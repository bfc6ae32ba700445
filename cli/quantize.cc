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
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/error.h"
#include "core/platform.h"
#include "kernels/weight_quantizer.h"
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
      use_cuda ? kernels::accelerator_weight_quantizer(platform->accelerator(0).memory(),
                                                       stream.ref(), /*parts_on_host=*/true)
               : quant::cpu_weight_quantizer();

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
