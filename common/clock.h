// Wall-clock time as Quiver records it (backup manifests, request ids).
#pragma once

#include <chrono>
#include <cstdint>

namespace quiver {

/// Milliseconds since the Unix epoch, now.
inline int64_t UnixMillisNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace quiver
