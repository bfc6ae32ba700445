#include "hostcache/catalog.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "hostcache/cache_key.h"
#include "hostcache/lock_file.h"
#include "hostcache/segment.h"

namespace stowage::hostcache {
namespace {

bool is_id(const std::string& s) {
  return s.size() == 16 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string recipe_in(const std::string& key_text) {
  const size_t at = key_text.find("recipe=");
  if (at == std::string::npos) return "";
  const size_t end = key_text.find('\n', at);
  return key_text.substr(at + 7, end == std::string::npos ? std::string::npos : end - at - 7);
}

}  // namespace

std::vector<std::string> segment_names(const std::string& prefix) {
  std::vector<std::string> names;
  DIR* dir = ::opendir("/dev/shm");
  if (dir == nullptr) return names;
  while (dirent* e = ::readdir(dir)) {
    const std::string n = e->d_name;
    if (n.size() == prefix.size() + 17 && n.compare(0, prefix.size() + 1, prefix + "-") == 0 &&
        is_id(n.substr(prefix.size() + 1))) {
      names.push_back(n);
    }
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

// The listing of segment `name`; nullopt when it is gone or unreadable.
static std::optional<SegmentListing> describe(const std::string& prefix,
                                              const std::string& name) {
  std::unique_ptr<Segment> s;
  try {
    s = Segment::open(name, true);
  } catch (const Error&) {
    return std::nullopt;  // unreadable (another user's): not listed
  }
  if (!s) return std::nullopt;  // removed since the scan
  {
    SegmentListing l;
    l.name = name;
    l.id = name.substr(prefix.size() + 1);
    struct stat st {};
    if (::stat(Segment::path_of(name).c_str(), &st) == 0) {
      l.resident_bytes = static_cast<uint64_t>(st.st_blocks) * 512;
    }
    l.bytes = s->size();
    const SegmentCondition c = s->condition();
    l.state = condition_name(c);
    if (c == SegmentCondition::kForeign || c == SegmentCondition::kOtherVersion) return l;
    l.attached = s->attached();
    l.keep = s->header().keep != 0;
    if (c == SegmentCondition::kReady) {
      l.model = s->model();
      const std::string key = s->key_text();
      l.recipe = recipe_in(key);
      l.bytes = s->header().data_bytes;
      l.stale = l.attached.empty() && !files_unchanged(key);
    } else if (c == SegmentCondition::kBuilding) {
      const ProcessId builder = s->header().builder;
      const bool running = process_alive(builder);
      l.state = running ? "building" : "abandoned";
      if (s->header().model_length <= detail::kMaxModelBytes) l.model = s->model();
      l.stale = !running && l.attached.empty();
    } else {
      l.stale = l.attached.empty();
    }
    return l;
  }
}

std::vector<SegmentListing> list_segments(const std::string& prefix) {
  std::vector<SegmentListing> out;
  for (const std::string& name : segment_names(prefix)) {
    if (auto l = describe(prefix, name)) out.push_back(std::move(*l));
  }
  return out;
}

std::vector<std::string> drop_segments(const std::string& prefix, DropSelection selection,
                                       const std::string& id) {
  std::vector<std::string> dropped;
  bool found = false;
  for (const SegmentListing& l : list_segments(prefix)) {
    bool drop = false;
    switch (selection) {
      case DropSelection::kOne:
        drop = l.id == id;
        break;
      case DropSelection::kAll:
        drop = l.state != "foreign";
        break;
      case DropSelection::kStale:
        drop = l.stale;
        break;
    }
    found = found || l.id == id;
    if (!drop) continue;
    LockFile lock(Segment::lock_path_of(l.name));
    if (selection == DropSelection::kStale) {
      // Seen again under the lock: a build that was starting may be ready now.
      const auto now = describe(prefix, l.name);
      if (!now || !now->stale) continue;
    }
    Segment::remove(l.name);
    lock.remove();
    dropped.push_back(l.name);
  }
  STOWAGE_EXPECTS(selection != DropSelection::kOne || found, InvalidInputError,
                  "host cache: no segment {}-{} (stowage cache list shows the segments)", prefix,
                  id);
  return dropped;
}

}  // namespace stowage::hostcache
