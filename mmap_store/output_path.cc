#include "mmap_store/output_path.h"

#include <dirent.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <memory>
#include <optional>

#include "core/error.h"

namespace stowage::mmap_store {
namespace {

// The names an input folder's readers look for: a model folder's files and
// an offload folder's index (its NAME.dat files are matched by suffix).
constexpr std::array<std::string_view, 7> kFolderInputNames = {
    "config.json",       "generation_config.json",       "tokenizer.json", "tokenizer_config.json",
    "model.safetensors", "model.safetensors.index.json", "index.json"};

std::optional<struct stat> stat_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

bool same_file(const struct stat& a, const struct stat& b) {
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

const char* kind_of(const struct stat& st) {
  if (S_ISDIR(st.st_mode)) return "a directory";
  if (S_ISFIFO(st.st_mode)) return "a FIFO";
  if (S_ISCHR(st.st_mode)) return "a character device";
  if (S_ISBLK(st.st_mode)) return "a block device";
  if (S_ISSOCK(st.st_mode)) return "a socket";
  if (S_ISREG(st.st_mode)) return "a regular file";
  return "not a regular file";
}

std::string parent_of(const std::string& path) {
  std::string parent = std::filesystem::path(path).parent_path().string();
  return parent.empty() ? "." : parent;
}

std::string base_of(const std::string& path) {
  return std::filesystem::path(path).filename().string();
}

// Calls `visit(path, stat)` for every regular file directly inside `folder`.
template <typename Visit>
void for_each_file_in(const std::string& folder, Visit&& visit) {
  // Closed on every path: `visit` may throw.
  const std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(folder.c_str()), &::closedir);
  if (dir == nullptr) return;
  while (const dirent* entry = ::readdir(dir.get())) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    const std::string path = folder + "/" + name;
    if (auto st = stat_of(path); st && S_ISREG(st->st_mode)) visit(path, *st);
  }
}

}  // namespace

void check_output_file(const std::string& output, const std::vector<std::string>& inputs,
                       std::string_view what) {
  const std::optional<struct stat> out = stat_of(output);
  STOWAGE_EXPECTS(!out || S_ISREG(out->st_mode), InvalidInputError,
                  "{} '{}': expected a regular file to write (or a new name), found {}", what,
                  output, kind_of(*out));
  const std::optional<struct stat> out_folder = stat_of(parent_of(output));
  const std::string out_name = base_of(output);
  for (const std::string& input : inputs) {
    const std::optional<struct stat> in = stat_of(input);
    if (!in) continue;  // the command reports a missing input itself
    if (S_ISDIR(in->st_mode)) {
      if (out) {
        for_each_file_in(input, [&](const std::string& path, const struct stat& st) {
          STOWAGE_EXPECTS(!same_file(*out, st), InvalidInputError,
                          "{} '{}' is the input file '{}' (the same file through a link or "
                          "name); write the output elsewhere",
                          what, output, path);
        });
      }
      if (out_folder && same_file(*out_folder, *in)) {
        const bool reserved =
            std::find(kFolderInputNames.begin(), kFolderInputNames.end(), out_name) !=
                kFolderInputNames.end() ||
            (out_name.size() > 4 && out_name.compare(out_name.size() - 4, 4, ".dat") == 0);
        STOWAGE_EXPECTS(!reserved, InvalidInputError,
                        "{} '{}' would replace '{}' of the input folder '{}'; write the output "
                        "elsewhere",
                        what, output, out_name, input);
      }
    } else if (out) {
      STOWAGE_EXPECTS(!same_file(*out, *in), InvalidInputError,
                      "{} '{}' is the input file '{}' (the same file through a link or name); "
                      "write the output elsewhere",
                      what, output, input);
    }
  }
}

void check_output_folder(const std::string& folder, const std::vector<std::string>& inputs,
                         std::string_view what) {
  const std::optional<struct stat> out = stat_of(folder);
  if (!out) return;  // created when first written
  STOWAGE_EXPECTS(S_ISDIR(out->st_mode), InvalidInputError,
                  "{} '{}': expected a folder (or a new name), found {}", what, folder,
                  kind_of(*out));
  for (const std::string& input : inputs) {
    const std::optional<struct stat> in = stat_of(input);
    if (!in) continue;
    const bool is_input_folder = S_ISDIR(in->st_mode) && same_file(*out, *in);
    const std::optional<struct stat> in_parent = stat_of(parent_of(input));
    const bool holds_input = !S_ISDIR(in->st_mode) && in_parent && same_file(*out, *in_parent);
    STOWAGE_EXPECTS(!is_input_folder && !holds_input, InvalidInputError,
                    "{} '{}' {} the input '{}': tensors written there could replace its files; "
                    "give a folder of its own",
                    what, folder, is_input_folder ? "is" : "holds", input);
  }
}

void TemporaryFiles::add(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  paths_.insert(path);
}

void TemporaryFiles::forget(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  paths_.erase(path);
}

size_t TemporaryFiles::remove_all() {
  std::lock_guard<std::mutex> held(hold_mutex_);
  std::lock_guard<std::mutex> lock(mutex_);
  size_t removed = 0;
  for (const std::string& path : paths_) {
    std::error_code ignored;
    removed += std::filesystem::remove_all(path, ignored) > 0 ? 1 : 0;
  }
  paths_.clear();
  return removed;
}

std::unique_lock<std::mutex> TemporaryFiles::hold() { return std::unique_lock(hold_mutex_); }

}  // namespace stowage::mmap_store
