#include "core/memory_resource.h"

#include <cctype>
#include <cmath>
#include <cstdlib>
#include <new>

#include "core/error.h"

namespace stowage {

HostMemoryResource::HostMemoryResource(Tier tier, std::string name, bool huge_pages)
    : tier_(tier), name_(std::move(name)), huge_pages_(huge_pages) {}

HostMemoryResource::~HostMemoryResource() = default;

void* HostMemoryResource::do_allocate(size_t bytes, StreamRef) {
  if (bytes == 0) return nullptr;
  if (huge_pages_ && bytes >= kHugePageMinBytes) return mappings_.keep(HugePageMapping(bytes));
  const size_t alignment = bytes >= 4096 ? 4096 : 64;
  const size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  void* ptr = std::aligned_alloc(alignment, rounded);
  STOWAGE_EXPECTS(ptr != nullptr, OutOfMemoryError,
                  "{}: could not allocate {} bytes of host memory", name_, bytes);
  return ptr;
}

void HostMemoryResource::release(void* ptr) {
  if (mappings_.take(ptr).data() == nullptr) std::free(ptr);  // a taken mapping unmaps itself
}

void HostMemoryResource::do_deallocate(void* ptr, size_t, StreamRef stream) {
  if (stream.is_null()) {
    release(ptr);
  } else {
    // Stream-ordered: free once the work already on the stream is done.
    stream.host_task([this, ptr] { release(ptr); });
  }
}

void* StatisticsAdaptor::do_allocate(size_t bytes, StreamRef stream) {
  void* ptr = upstream_.allocate(bytes, stream);
  const uint64_t now = in_use_.fetch_add(bytes) + bytes;
  uint64_t peak = peak_.load();
  while (now > peak && !peak_.compare_exchange_weak(peak, now)) {
  }
  allocations_.fetch_add(1);
  return ptr;
}

void StatisticsAdaptor::do_deallocate(void* ptr, size_t bytes, StreamRef stream) {
  // Counted as free before the upstream frees it, as an allocation is counted
  // after the upstream gave it: so the count never runs ahead of the upstream
  // (freed upstream first, another thread's allocation of the same bytes could
  // be counted before this release, and the peak would exceed the budget).
  in_use_.fetch_sub(bytes);
  upstream_.deallocate(ptr, bytes, stream);
}

BudgetAdaptor::BudgetAdaptor(MemoryResource& upstream, uint64_t budget_bytes, std::string name)
    : upstream_(upstream),
      budget_(budget_bytes),
      name_(name.empty() ? upstream.name() : std::move(name)) {}

uint64_t BudgetAdaptor::bytes_in_use() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return in_use_;
}

uint64_t BudgetAdaptor::bytes_available() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return budget_ - in_use_;
}

void* BudgetAdaptor::do_allocate(size_t bytes, StreamRef stream) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (bytes > budget_ - in_use_) {
      throw OutOfBudgetError(fmt::format(
          "{}: allocating {} bytes would exceed its budget of {} bytes ({} bytes in use, {} free)",
          name_, bytes, budget_, in_use_, budget_ - in_use_));
    }
    in_use_ += bytes;
  }
  try {
    return upstream_.allocate(bytes, stream);
  } catch (...) {
    std::lock_guard<std::mutex> lock(mutex_);
    in_use_ -= bytes;
    throw;
  }
}

void BudgetAdaptor::do_deallocate(void* ptr, size_t bytes, StreamRef stream) {
  upstream_.deallocate(ptr, bytes, stream);
  std::lock_guard<std::mutex> lock(mutex_);
  in_use_ -= bytes;
}

FaultInjectionAdaptor::FaultInjectionAdaptor(MemoryResource& upstream, FailurePredicate should_fail)
    : upstream_(upstream), should_fail_(std::move(should_fail)) {}

void* FaultInjectionAdaptor::do_allocate(size_t bytes, StreamRef stream) {
  const uint64_t ordinal = ordinal_.fetch_add(1);
  if (should_fail_ && should_fail_(ordinal, bytes)) {
    failures_.fetch_add(1);
    throw OutOfMemoryError(
        fmt::format("{}: out of memory allocating {} bytes (injected fault, allocation #{})",
                    upstream_.name(), bytes, ordinal));
  }
  return upstream_.allocate(bytes, stream);
}

void FaultInjectionAdaptor::do_deallocate(void* ptr, size_t bytes, StreamRef stream) {
  upstream_.deallocate(ptr, bytes, stream);
}

uint64_t parse_byte_size(const std::string& text) {
  size_t pos = 0;
  while (pos < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[pos])) || text[pos] == '.'))
    ++pos;
  const std::string number = text.substr(0, pos);
  std::string unit;
  for (size_t i = pos; i < text.size(); ++i) {
    if (!std::isspace(static_cast<unsigned char>(text[i])))
      unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  }
  const auto fail = [&] {
    return InvalidInputError(
        fmt::format("invalid size '{}': expected a number with an optional unit (B, KiB, MiB, GiB, "
                    "TiB, KB, MB, GB, TB)",
                    text));
  };
  if (number.empty() || number == "." || number.find('.') != number.rfind('.')) throw fail();
  struct Unit {
    const char* name;
    double factor;
  };
  static constexpr Unit kUnits[] = {
      {"", 1},
      {"b", 1},
      {"kib", 1024.0},
      {"mib", 1048576.0},
      {"gib", 1073741824.0},
      {"tib", 1099511627776.0},
      {"kb", 1e3},
      {"mb", 1e6},
      {"gb", 1e9},
      {"tb", 1e12},
      {"k", 1024.0},
      {"m", 1048576.0},
      {"g", 1073741824.0},
      {"t", 1099511627776.0},
  };
  for (const Unit& u : kUnits) {
    if (unit != u.name) continue;
    const double value = std::strtod(number.c_str(), nullptr) * u.factor;
    if (!(value >= 0) || value >= 1.8e19) throw fail();
    if (u.factor == 1 && number.find('.') != std::string::npos) throw fail();
    return static_cast<uint64_t>(std::llround(value));
  }
  throw fail();
}

std::string format_bytes(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  static constexpr const char* kNames[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024.0;
  int unit = 0;
  while (value >= 1024.0 && unit < 3) {
    value /= 1024.0;
    ++unit;
  }
  return fmt::format("{:.2f} {}", value, kNames[unit]);
}

}  // namespace stowage
