// The constant tables the 4-bit GEMV kernels decode with, passed to them as
// a __grid_constant__ parameter: indexing it reads the parameter bank, with
// no per-thread copy and no per-block recomputation.
#pragma once

#include "quant/quant_rules.h"
#include "quant/weight_format.h"

namespace stowage::kernels::detail {

// The code values of the weight's 4-bit type and the signed dynamic map of
// double quantization.
struct GemvTables {
  float value[16];
  float nested_map[256];
};

// The tables of `type` (NF4 or FP4), built once on the host.
inline const GemvTables& gemv_tables(quant::WeightFormat type) {
  static const auto build = [](quant::WeightFormat t) {
    GemvTables tables;
    for (int i = 0; i < 16; ++i) tables.value[i] = quant_rules::four_bit_code_value(t, i);
    for (int i = 0; i < 256; ++i) tables.nested_map[i] = quant_rules::dynamic_map_value(i);
    return tables;
  };
  static const GemvTables nf4 = build(quant::WeightFormat::kNf4);
  static const GemvTables fp4 = build(quant::WeightFormat::kFp4);
  return type == quant::WeightFormat::kFp4 ? fp4 : nf4;
}

}  // namespace stowage::kernels::detail
