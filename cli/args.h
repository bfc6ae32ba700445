// Small helpers shared by the subcommands: flag parsing in the CLI.md style
// (--flag VALUE or --flag=VALUE), usage errors, and common option values.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/platform.h"
#include "core/tier.h"

namespace stowage::mmap_store {
class TemporaryFileRegistry;
}

namespace stowage::cli {

// Thrown for bad usage; the subcommand prints it and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown by ArgParser::parse for --help; what() is ArgParser::help().
// run_guarded prints it to stdout and exits 0.
class HelpRequested : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses `args` against the declared flags. Flags taking a value accept
// "--name VALUE" and "--name=VALUE"; boolean flags take none. Anything not
// starting with "--" is a positional argument. Unknown flags, missing values
// and repeated flags throw UsageError. --help (unless given as another flag's
// value) throws HelpRequested: every command gets it from here.
class ArgParser {
 public:
  // `optional_value_flags` take a value only as "--name=VALUE"; given bare,
  // get() returns "" (e.g. --host-cache and --host-cache=keep).
  ArgParser(std::string command, std::vector<std::string> value_flags,
            std::vector<std::string> bool_flags = {},
            std::vector<std::string> optional_value_flags = {});
  // Value flags that may be given more than once (e.g. --override-tensor):
  // get() returns the last value, get_all() every value in order. Call
  // before parse.
  void allow_repeated(std::vector<std::string> flags);
  void parse(const std::vector<std::string>& args);

  bool has(const std::string& flag) const;
  std::optional<std::string> get(const std::string& flag) const;
  std::vector<std::string> get_all(const std::string& flag) const;
  std::string get_or(const std::string& flag, const std::string& fallback) const;
  int64_t get_int(const std::string& flag, int64_t fallback, int64_t min_value,
                  int64_t max_value) const;
  double get_double(const std::string& flag, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }
  // Throws UsageError unless exactly `count` positional arguments were given.
  void expect_positional(size_t count, const std::string& names) const;
  // "usage: stowage COMMAND [FLAGS] [ARGUMENTS]", then every declared flag, one
  // a line ("--name VALUE" or "--name"), in declaration order.
  std::string help() const;

 private:
  std::string command_;
  std::vector<std::string> value_flags_;
  std::vector<std::string> bool_flags_;
  std::vector<std::string> optional_value_flags_;
  std::vector<std::string> repeated_flags_;
  std::map<std::string, std::string> values_;
  std::map<std::string, std::vector<std::string>> all_values_;
  std::vector<std::string> positional_;
};

// Per-tier budgets from "--max-memory 0=2GiB,1=4GiB,cpu=16GiB,disk=100GiB".
// Integer keys are accelerator indices; a tier absent from the map has no
// budget limit. Throws UsageError on a malformed list or a key given twice.
struct MemoryBudgets {
  std::map<int, uint64_t> accelerators;
  std::optional<uint64_t> cpu;
  std::optional<uint64_t> disk;
};
MemoryBudgets parse_max_memory(const std::string& text);

// A comma-separated list of integers in [min_value, max_value] ("1,2,4"),
// in the order given. Throws UsageError naming `flag`, the expected range and
// the item otherwise.
std::vector<int64_t> parse_int_list(const std::string& flag, const std::string& text,
                                    int64_t min_value, int64_t max_value);

// --device's value; UsageError naming the flag for anything but auto, cuda
// and sim.
DeviceChoice parse_device_flag(const std::string& text);

// Throws UsageError naming `flag`, the pattern and RE2's reason when
// `pattern` is not a valid RE2 regular expression (--skip, --no-split).
void check_regex_flag(const std::string& flag, const std::string& pattern);

// `text` with its control characters (and DEL) written as \xNN, so a
// tensor or file name cannot move the cursor or hide text on a terminal.
// Newlines and tabs are kept when `keep_newlines` (multi-line reports).
std::string escape_control(std::string_view text, bool keep_newlines = false);

// Runs a subcommand body, mapping exceptions to exit statuses: UsageError ->
// 2, stowage::Error and other std::exceptions -> 1, each printed to stderr as
// "stowage COMMAND: message" (control characters escaped). A body that
// succeeded but whose standard output could not be written (a full disk, a
// closed pipe) exits 1 with a message saying so. `temporaries` (may be null)
// is passed to the body.
using CommandBody = int (*)(const std::vector<std::string>&, mmap_store::TemporaryFileRegistry*);
int run_guarded(const std::string& command, CommandBody body, const std::vector<std::string>& args,
                mmap_store::TemporaryFileRegistry* temporaries = nullptr);
int run_guarded(const std::string& command, int (*body)(const std::vector<std::string>&),
                const std::vector<std::string>& args);

// Whether stderr is a terminal (progress bars show only then).
bool stderr_is_terminal();

// A progress bar on stderr, drawn only when stderr is a terminal.
class ProgressBar {
 public:
  ProgressBar(std::string label, uint64_t total);
  void update(uint64_t done);
  void finish();
  ~ProgressBar();

 private:
  std::string label_;
  uint64_t total_;
  bool enabled_;
  int last_percent_ = -1;
  bool finished_ = false;
};

}  // namespace stowage::cli
