// The `stowage` subcommands. Each is implemented in its own file (and Bazel
// target) in this folder and returns the process exit status: 0 success,
// 1 failure (message on stderr), 2 bad usage (CLI.md).
#pragma once

#include <string>
#include <vector>

namespace stowage::mmap_store {
class TemporaryFileRegistry;
}

namespace stowage::cli {

// args: the arguments after the subcommand name. The commands that write
// files register their temporary files in `temporaries` (when given), which
// the process's interrupt handler removes (cli/interrupt_cleanup.h).
int run_inspect(const std::vector<std::string>& args);
int run_quantize(const std::vector<std::string>& args,
                 mmap_store::TemporaryFileRegistry* temporaries = nullptr);
int run_plan(const std::vector<std::string>& args);
int run_run(const std::vector<std::string>& args,
            mmap_store::TemporaryFileRegistry* temporaries = nullptr);
int run_bench(const std::vector<std::string>& args);
int run_demo(const std::vector<std::string>& args,
             mmap_store::TemporaryFileRegistry* temporaries = nullptr);
int run_generate(const std::vector<std::string>& args,
                 mmap_store::TemporaryFileRegistry* temporaries = nullptr);
int run_cache(const std::vector<std::string>& args);

}  // namespace stowage::cli
