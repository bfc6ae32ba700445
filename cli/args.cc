#include "cli/args.h"

#include <errno.h>
#include <fmt/format.h>
#include <re2/re2.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>

#include "core/error.h"
#include "core/memory_resource.h"

namespace stowage::cli {

ArgParser::ArgParser(std::string command, std::vector<std::string> value_flags,
                     std::vector<std::string> bool_flags,
                     std::vector<std::string> optional_value_flags)
    : command_(std::move(command)),
      value_flags_(std::move(value_flags)),
      bool_flags_(std::move(bool_flags)),
      optional_value_flags_(std::move(optional_value_flags)) {}

void ArgParser::allow_repeated(std::vector<std::string> flags) {
  repeated_flags_ = std::move(flags);
}

void ArgParser::parse(const std::vector<std::string>& args) {
  auto contains = [](const std::vector<std::string>& list, const std::string& x) {
    return std::find(list.begin(), list.end(), x) != list.end();
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg.size() < 2 || arg.compare(0, 2, "--") != 0) {
      positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (name == "help" && !inline_value) throw HelpRequested(help());
    if (values_.count(name) != 0 && !contains(repeated_flags_, name)) {
      throw UsageError(fmt::format("--{} given more than once", name));
    }
    if (contains(optional_value_flags_, name)) {
      values_[name] = inline_value.value_or("");
    } else if (contains(bool_flags_, name)) {
      if (inline_value) throw UsageError(fmt::format("--{} takes no value", name));
      values_[name] = "";
    } else if (contains(value_flags_, name)) {
      if (inline_value) {
        values_[name] = *inline_value;
      } else {
        if (i + 1 >= args.size()) throw UsageError(fmt::format("--{} needs a value", name));
        values_[name] = args[++i];
      }
      all_values_[name].push_back(values_[name]);
    } else {
      throw UsageError(fmt::format("unknown flag --{} for 'stowage {}'", name, command_));
    }
  }
}

std::string ArgParser::help() const {
  std::string text = fmt::format("usage: stowage {} [FLAGS] [ARGUMENTS]\nflags:\n", command_);
  for (const auto& flag : value_flags_) {
    const bool repeated =
        std::find(repeated_flags_.begin(), repeated_flags_.end(), flag) != repeated_flags_.end();
    text += fmt::format("  --{} VALUE{}\n", flag, repeated ? " (repeatable)" : "");
  }
  for (const auto& flag : bool_flags_) text += fmt::format("  --{}\n", flag);
  for (const auto& flag : optional_value_flags_) text += fmt::format("  --{}[=VALUE]\n", flag);
  text += "  --help\n";
  return text;
}

bool ArgParser::has(const std::string& flag) const { return values_.count(flag) != 0; }

std::optional<std::string> ArgParser::get(const std::string& flag) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string> ArgParser::get_all(const std::string& flag) const {
  auto it = all_values_.find(flag);
  return it == all_values_.end() ? std::vector<std::string>{} : it->second;
}

std::string ArgParser::get_or(const std::string& flag, const std::string& fallback) const {
  return get(flag).value_or(fallback);
}

int64_t ArgParser::get_int(const std::string& flag, int64_t fallback, int64_t min_value,
                           int64_t max_value) const {
  auto text = get(flag);
  if (!text) return fallback;
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(*text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text->size()) {
    throw UsageError(fmt::format("--{} expects an integer, found '{}'", flag, *text));
  }
  if (value < min_value || value > max_value) {
    throw UsageError(
        fmt::format("--{} must be in [{}, {}], found {}", flag, min_value, max_value, value));
  }
  return value;
}

double ArgParser::get_double(const std::string& flag, double fallback) const {
  auto text = get(flag);
  if (!text) return fallback;
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(*text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text->size()) {
    throw UsageError(fmt::format("--{} expects a number, found '{}'", flag, *text));
  }
  return value;
}

void ArgParser::expect_positional(size_t count, const std::string& names) const {
  if (positional_.size() != count) {
    throw UsageError(fmt::format("'stowage {}' expects {} ({} argument{}), found {}", command_,
                                 names, count, count == 1 ? "" : "s", positional_.size()));
  }
}

MemoryBudgets parse_max_memory(const std::string& text) {
  MemoryBudgets budgets;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(start, end - start);
    const size_t eq = item.find('=');
    if (item.empty() || eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
      throw UsageError(
          fmt::format("--max-memory: expected KEY=SIZE items separated by commas (e.g. "
                      "0=2GiB,cpu=16GiB), found '{}'",
                      item));
    }
    const std::string key = item.substr(0, eq);
    uint64_t bytes = 0;
    try {
      bytes = parse_byte_size(item.substr(eq + 1));
    } catch (const Error& e) {
      throw UsageError(fmt::format("--max-memory {}: {}", key, e.what()));
    }
    const bool repeated = (key == "cpu" && budgets.cpu) || (key == "disk" && budgets.disk) ||
                          (key.find_first_not_of("0123456789") == std::string::npos &&
                           key.size() < 5 && budgets.accelerators.count(std::stoi(key)) != 0);
    if (repeated) {
      throw UsageError(fmt::format("--max-memory: key '{}' given more than once", key));
    }
    if (key == "cpu") {
      budgets.cpu = bytes;
    } else if (key == "disk") {
      budgets.disk = bytes;
    } else if (!key.empty() &&
               std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
               key.size() < 5) {
      budgets.accelerators[std::stoi(key)] = bytes;
    } else {
      throw UsageError(fmt::format(
          "--max-memory: unknown key '{}': expected an accelerator index, cpu or disk", key));
    }
    start = end + 1;
  }
  return budgets;
}

std::vector<int64_t> parse_int_list(const std::string& flag, const std::string& text,
                                    int64_t min_value, int64_t max_value) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? comma : comma - pos);
    size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || value < min_value || value > max_value) {
      throw UsageError(fmt::format("--{}: expected comma-separated numbers in {}..{}, found '{}'",
                                   flag, min_value, max_value, item));
    }
    out.push_back(value);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

DeviceChoice parse_device_flag(const std::string& text) {
  try {
    return parse_device_choice(text);
  } catch (const Error&) {
    throw UsageError(fmt::format("--device expects auto, cuda or sim, found '{}'", text));
  }
}

void check_regex_flag(const std::string& flag, const std::string& pattern) {
  re2::RE2::Options quiet;
  quiet.set_log_errors(false);
  const re2::RE2 re(pattern, quiet);
  if (!re.ok()) {
    throw UsageError(fmt::format("--{}: '{}' is not a valid regular expression (RE2 syntax): {}",
                                 flag, pattern, re.error()));
  }
}

std::string escape_control(std::string_view text, bool keep_newlines) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 || byte == 0x7f) && !(keep_newlines && (c == '\n' || c == '\t'))) {
      out += fmt::format("\\x{:02x}", byte);
    } else {
      out += c;
    }
  }
  return out;
}

namespace {

// A Boost error's what() ends in its source location ("... [boost.json:25 at
// /usr/include/boost/json/...]"): nothing a user can act on, so it is cut.
std::string without_library_locations(std::string message) {
  for (size_t at; (at = message.find("[boost.")) != std::string::npos;) {
    const size_t end = message.find(']', at);
    const size_t begin = at > 0 && message[at - 1] == ' ' ? at - 1 : at;
    message.erase(begin, end == std::string::npos ? std::string::npos : end + 1 - begin);
  }
  return message;
}

std::string user_message(const char* what) {
  return escape_control(without_library_locations(what));
}

int guarded(const std::string& command, const std::function<int()>& body) {
  int status = 1;
  try {
    status = body();
  } catch (const HelpRequested& help) {
    std::fputs(help.what(), stdout);
    status = 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "stowage %s: %s\n", command.c_str(), user_message(e.what()).c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stowage %s: %s\n", command.c_str(), user_message(e.what()).c_str());
    return 1;
  }
  errno = 0;
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "stowage %s: writing to standard output failed: %s\n", command.c_str(),
                 errno != 0 ? std::strerror(errno) : "write error");
    return 1;
  }
  return status;
}

}  // namespace

int run_guarded(const std::string& command, CommandBody body, const std::vector<std::string>& args,
                mmap_store::TemporaryFileRegistry* temporaries) {
  return guarded(command, [&] { return body(args, temporaries); });
}

int run_guarded(const std::string& command, int (*body)(const std::vector<std::string>&),
                const std::vector<std::string>& args) {
  return guarded(command, [&] { return body(args); });
}

bool stderr_is_terminal() { return isatty(STDERR_FILENO) == 1; }

ProgressBar::ProgressBar(std::string label, uint64_t total)
    : label_(std::move(label)), total_(total), enabled_(stderr_is_terminal()) {}

void ProgressBar::update(uint64_t done) {
  if (!enabled_ || finished_) return;
  const int percent =
      total_ == 0 ? 100 : static_cast<int>(100.0 * static_cast<double>(done) / total_);
  if (percent == last_percent_) return;
  last_percent_ = percent;
  const int width = 30;
  const int filled = percent * width / 100;
  std::fprintf(stderr, "\r%s [%s%s] %3d%%", label_.c_str(), std::string(filled, '#').c_str(),
               std::string(width - filled, ' ').c_str(), percent);
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (!enabled_ || finished_) return;
  update(total_);
  std::fprintf(stderr, "\n");
  finished_ = true;
}

ProgressBar::~ProgressBar() { finish(); }

}  // namespace stowage::cli
