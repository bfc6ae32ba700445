// The `stowage` subcommands. Each is implemented in its own file (and Bazel
// target) in this folder and returns the process exit status: 0 success,
// 1 failure (message on stderr), 2 bad usage (CLI.md).
#pragma once

#include <string>
#include <vector>

namespace stowage::cli {

// args: the arguments after the subcommand name.
int run_inspect(const std::vector<std::string>& args);
int run_quantize(const std::vector<std::string>& args);
int run_plan(const std::vector<std::string>& args);
int run_run(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);
int run_demo(const std::vector<std::string>& args);
int run_generate(const std::vector<std::string>& args);

}  // namespace stowage::cli
