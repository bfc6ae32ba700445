// The `stowage` command: dispatches to the subcommands of CLI.md.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"
#include "cli/interrupt_cleanup.h"

namespace {

using stowage::mmap_store::TemporaryFileRegistry;
using Args = std::vector<std::string>;

struct Subcommand {
  const char* name;
  stowage::cli::CommandBody run;
  const char* summary;
};

// Commands that write files get the registry of temporary files.
constexpr Subcommand kSubcommands[] = {
    {"demo", [](const Args& a, TemporaryFileRegistry* t) { return stowage::cli::run_demo(a, t); },
     "run a synthetic model resident and offloaded, compare, print a table"},
    {"inspect", [](const Args& a, TemporaryFileRegistry*) { return stowage::cli::run_inspect(a); },
     "list the tensors of a .safetensors file or an offload folder"},
    {"quantize",
     [](const Args& a, TemporaryFileRegistry* t) { return stowage::cli::run_quantize(a, t); },
     "quantize a checkpoint to int8, nf4 or fp4 (bitsandbytes layout)"},
    {"plan", [](const Args& a, TemporaryFileRegistry*) { return stowage::cli::run_plan(a); },
     "print the device map of a checkpoint under memory budgets"},
    {"run", [](const Args& a, TemporaryFileRegistry* t) { return stowage::cli::run_run(a, t); },
     "run an MLP-family checkpoint on an input"},
    {"bench", [](const Args& a, TemporaryFileRegistry*) { return stowage::cli::run_bench(a); },
     "time resident and offloaded forwards of a checkpoint"},
    {"generate",
     [](const Args& a, TemporaryFileRegistry* t) { return stowage::cli::run_generate(a, t); },
     "generate text with a Hugging Face model folder (Llama, Qwen2, Mistral)"},
    {"cache", [](const Args& a, TemporaryFileRegistry*) { return stowage::cli::run_cache(a); },
     "list or drop the host's shared weight segments (--host-cache)"},
};

void print_usage(std::FILE* out) {
  std::fprintf(out, "usage: stowage COMMAND [ARGS]\n\ncommands:\n");
  for (const auto& sub : kSubcommands) std::fprintf(out, "  %-9s %s\n", sub.name, sub.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  for (const auto& sub : kSubcommands) {
    if (name != sub.name) continue;
    // Before any thread starts: SIGINT/SIGTERM remove the temporary files.
    stowage::cli::InterruptCleanup interrupts;
    return stowage::cli::run_guarded(name, sub.run, args, &interrupts.temporaries());
  }
  std::fprintf(stderr, "stowage: unknown command '%s'\n",
               stowage::cli::escape_control(name).c_str());
  print_usage(stderr);
  return 2;
}
