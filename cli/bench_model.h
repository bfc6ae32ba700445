// `stowage bench --model DIR` for a Hugging Face model folder of the
// transformer family: prefill and decode tokens/s, resident and under the
// given budgets, against the pinned host-to-device rate measured in the same
// run (CLI.md).
#pragma once

#include <string>
#include <vector>

namespace stowage::cli {

// Whether `path` is a model folder (a directory holding config.json).
bool is_model_folder(const std::string& path);

// The bench of a model folder; args as given to `stowage bench`.
int bench_model_folder(const std::vector<std::string>& args);

}  // namespace stowage::cli
