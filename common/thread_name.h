// Names the calling thread so that `top -H`, `ps -L`, perf and gdb show what
// each of quiverd's threads is for. Linux keeps at most 15 characters.
#pragma once

#include <pthread.h>

#include <string>

namespace quiver {

inline void NameThisThread(const std::string& name) {
  // Longer names make pthread_setname_np fail with ERANGE; keep the start.
  pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
}

}  // namespace quiver
