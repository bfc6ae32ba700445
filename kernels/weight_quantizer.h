// The accelerator implementation of quant's weight quantizer
// (quant::WeightQuantizer): quantizes a float weight to a WeightLayout with
// kernels/quantize.h on a stream, giving the same bytes as
// quant::quantize_cpu (the CPU reference). `stowage quantize` and the
// streaming loader both obtain it from accelerator_weight_quantizer.
#pragma once

#include <string_view>

#include "core/memory_resource.h"
#include "core/stream.h"
#include "core/tensor.h"
#include "quant/checkpoint_quantizer.h"
#include "quant/quant_state.h"
#include "quant/weight_layout.h"

namespace stowage::kernels {

// Quantizes `source` (F16, BF16 or F32, host-readable: host memory or a disk
// mapping) to `target` (kInt8, or a 4-bit layout: its format, blocksize,
// double_quant and storage are used; its shape must be `source`'s, a 4-bit
// target's dtype too). int8 computes the codes from `target.dtype`: F16
// (WeightLayout::int8's default) rounds a source of another dtype to
// float16 on the host first, as bitsandbytes and quant::quantize_int8_cpu
// do, refusing a value float16 cannot hold; the source's own dtype
// quantizes it as it is. The large parts (codes, absmax, SCB, nested
// absmax) are allocated from `device` (memory of `stream`'s device,
// stream-ordered); the small constant ones (quant_map, nested_quant_map,
// weight_format and the state JSON) from `host`. Returns once `stream` has
// finished the work. Values are not otherwise checked for being finite
// (quant::check_finite_cpu does). Throws InvalidInputError for a bad source
// or target, naming `name`.
quant::QuantizedWeight quantize_on_accelerator(const Tensor& source,
                                               const quant::WeightLayout& target,
                                               MemoryResource& device, MemoryResource& host,
                                               StreamRef stream, std::string_view name);

// quantize_on_accelerator as a quant::WeightQuantizer on `stream`, the large
// parts from `device` (both must outlive it), the small ones from the host
// resource it is called with. With `parts_on_host` (a file writer's case) it
// first checks the weight as the CPU quantizer does (quant::check_finite_cpu,
// the same errors) and returns every part copied into that host resource;
// without, the large parts stay in `device` (the loader places them).
quant::WeightQuantizer accelerator_weight_quantizer(MemoryResource& device, StreamRef stream,
                                                    bool parts_on_host);

}  // namespace stowage::kernels
