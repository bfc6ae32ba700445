#include "core/device_status.h"

namespace stowage::detail {

std::string device_status_message(const DeviceStatus& status, const DeviceCallSite& site,
                                  const std::string& what) {
  std::string message = what.empty() ? std::string() : what + ": ";
  message += fmt::format("{} failed: {} ({}): {} (at {}:{})", site.call, status.name, status.code,
                         status.text, site.file, site.line);
  return message;
}

void throw_device_status(const DeviceStatus& status, const DeviceCallSite& site,
                         const std::string& what) {
  const std::string message = device_status_message(status, site, what);
  if (status.out_of_memory) throw OutOfMemoryError(message);
  throw DeviceError(message);
}

}  // namespace stowage::detail
