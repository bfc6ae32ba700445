// libFuzzer target for the command line's text parsers (cli/args.h), whose
// input is whatever a user or a script passes: the input is split at NUL
// bytes into arguments. The first is parsed as a --max-memory list, a
// --device value and a --skip pattern; all of them go through ArgParser (with
// value, boolean and optional-value flags) and its typed getters; every
// argument is escaped for printing. Each must succeed or raise UsageError,
// HelpRequested or stowage::Error, as the subcommands expect (run_guarded
// maps those to exit statuses); anything else escaping is a bug.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cli/args.h"
#include "core/error.h"

namespace {

template <typename F>
void expecting_usage_errors(F&& f) {
  try {
    f();
  } catch (const stowage::cli::UsageError&) {
  } catch (const stowage::cli::HelpRequested&) {
  } catch (const stowage::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args;
  for (size_t start = 0;;) {
    const size_t end = text.find('\0', start);
    args.push_back(text.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  using namespace stowage::cli;
  expecting_usage_errors([&] { parse_max_memory(args[0]); });
  expecting_usage_errors([&] { parse_device_flag(args[0]); });
  expecting_usage_errors([&] { check_regex_flag("--skip", args[0]); });
  expecting_usage_errors([&] {
    ArgParser parser("fuzz", {"max-memory", "prefetch", "temperature", "model"}, {"json"},
                     {"host-cache"});
    parser.parse(args);
    (void)parser.has("json");
    (void)parser.get_or("model", "");
    (void)parser.get("host-cache");
    (void)parser.get_int("prefetch", 1, 0, 64);
    (void)parser.get_double("temperature", 0.0);
    if (auto budgets = parser.get("max-memory")) parse_max_memory(*budgets);
    parser.expect_positional(1, "FILE");
  });
  for (const auto& arg : args) {
    (void)escape_control(arg);
    (void)escape_control(arg, /*keep_newlines=*/true);
  }
  return 0;
}
