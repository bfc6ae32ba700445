// Rules for the files and folders a command writes, checked before anything
// is written, and the temporary files a command has in flight.
//
// An output never replaces an input: not by the same name, not through a
// symbolic or hard link (the same device and inode), not by writing a name
// that an input folder's readers look for (a model folder's config.json, an
// offload folder's index.json). An output that already exists must be a
// regular file, so a folder, FIFO or device is never opened as one.
//
// The atomic writer (a temporary name beside the target, renamed on commit)
// calls these checks and registers its temporary file in a TemporaryFiles
// object, which the command's interrupt handler empties when SIGINT or
// SIGTERM arrives.
#pragma once

#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "mmap_store/atomic_file.h"

namespace stowage::mmap_store {

// Throws InvalidInputError, naming `what` (e.g. "OUT" or "--dump-logits") and
// both paths, when `output` exists and is not a regular file (after following
// links), is the same file as one of `inputs`, or is a file inside an input
// folder that its readers use. An input may be a file or a folder (every file
// directly inside a folder counts as an input).
void check_output_file(const std::string& output, const std::vector<std::string>& inputs,
                       std::string_view what);

// Throws InvalidInputError, naming `what` (e.g. "--offload-dir"), when
// `folder` exists and is not a directory, or is one of `inputs` (a folder),
// or holds one of them (a file directly inside it): tensors written there
// could replace the input's own files.
void check_output_folder(const std::string& folder, const std::vector<std::string>& inputs,
                         std::string_view what);

// The temporary files and folders a command is writing (atomic_file.h's
// registry), removed all at once when the command is interrupted. Owned by
// the command's process setup (cli/interrupt_cleanup.h), passed to writers.
//
// Thread safety: every member may be called from any thread.
class TemporaryFiles final : public TemporaryFileRegistry {
 public:
  // Records a temporary file (or a folder, removed with its contents).
  void add(const std::string& path) override;
  // Forgets `path` (committed, or already removed by its owner).
  void forget(const std::string& path) override;
  // While the returned lock is held, remove_all() waits: hold it from
  // creating a temporary file until it is added, so an interrupt in between
  // cannot leave it behind.
  std::unique_lock<std::mutex> hold() override;
  // Removes every recorded path, returns how many were removed, forgets them.
  size_t remove_all();

 private:
  std::mutex hold_mutex_;  // taken by hold() and remove_all(), before mutex_
  std::mutex mutex_;
  std::set<std::string> paths_;
};

}  // namespace stowage::mmap_store
