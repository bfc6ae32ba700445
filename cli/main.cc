// The `stowage` command: dispatches to the subcommands of CLI.md.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/args.h"
#include "cli/commands.h"

namespace {

struct Subcommand {
  const char* name;
  int (*run)(const std::vector<std::string>&);
  const char* summary;
};

constexpr Subcommand kSubcommands[] = {
    {"demo", stowage::cli::run_demo,
     "run a synthetic model resident and offloaded, compare, print a table"},
    {"inspect", stowage::cli::run_inspect,
     "list the tensors of a .safetensors file or an offload folder"},
    {"quantize", stowage::cli::run_quantize,
     "quantize a checkpoint to int8, nf4 or fp4 (bitsandbytes layout)"},
    {"plan", stowage::cli::run_plan, "print the device map of a checkpoint under memory budgets"},
    {"run", stowage::cli::run_run, "run an MLP-family checkpoint on an input"},
    {"bench", stowage::cli::run_bench, "time resident and offloaded forwards of a checkpoint"},
    {"generate", stowage::cli::run_generate,
     "generate text with a Hugging Face model folder (Llama, Qwen2, Mistral)"},
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
    if (name == sub.name) return stowage::cli::run_guarded(name, sub.run, args);
  }
  std::fprintf(stderr, "stowage: unknown command '%s'\n", name.c_str());
  print_usage(stderr);
  return 2;
}
