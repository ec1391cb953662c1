#include "kernels/blas.h"

#include <cblas.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "kernels/simd.h"

namespace quiver::kernels {
namespace {

bool IsGenericCore(const std::string& name) {
  // OpenBLAS's names for cores without AVX2 kernels.
  static const char* kGeneric[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Katmai",
                                   "Coppermine", "Northwood", "Banias", "Atom", "Opteron", "Barcelona",
                                   "Sandybridge", "Bulldozer", "Piledriver", "Steamroller", "Excavator",
                                   "Unknown"};
  for (const char* g : kGeneric) {
    if (name == g) return true;
  }
  return false;
}

}  // namespace

std::string BlasCoreName() {
  const char* name = openblas_get_corename();
  return name != nullptr ? std::string(name) : std::string("unknown");
}

bool BlasOnSlowPath() {
  return DetectSimdLevel() >= SimdLevel::kAvx2 && IsGenericCore(BlasCoreName());
}

void EnsureFastBlas(char** argv, BlasWorkers workers) {
  bool reexecute = false;
  if (workers == BlasWorkers::kNone && openblas_get_num_threads() > 1 &&
      std::getenv("OPENBLAS_NUM_THREADS") == nullptr) {
    ::setenv("OPENBLAS_NUM_THREADS", "1", 1);
    reexecute = true;
  }
  openblas_set_num_threads(1);
  if (BlasOnSlowPath()) {
    if (std::getenv("OPENBLAS_CORETYPE") != nullptr) {
      // Someone chose the core on purpose (or our re-exec did and OpenBLAS
      // ignored it): say so loudly rather than loop.
      std::fprintf(stderr,
                   "quiver: warning: OpenBLAS runs its %s kernels although the CPU has %s (OPENBLAS_CORETYPE=%s)\n",
                   BlasCoreName().c_str(), SimdLevelName(DetectSimdLevel()), std::getenv("OPENBLAS_CORETYPE"));
    } else {
      ::setenv("OPENBLAS_CORETYPE", DetectSimdLevel() == SimdLevel::kAvx512 ? "SkylakeX" : "Haswell", 1);
      reexecute = true;
    }
  }
  if (!reexecute) return;
  // Execute the binary's own path, not /proc/self/exe: the kernel names the
  // process after the file executed, and "exe" would hide quiverd from ps,
  // top, pgrep and pkill. /proc/self/exe stays the fallback for a binary
  // replaced on disk since it started (its link then ends in " (deleted)").
  char self[4096];
  ssize_t length = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (length > 0) {
    self[length] = '\0';
    if (::access(self, X_OK) == 0) ::execv(self, argv);
  }
  ::execv("/proc/self/exe", argv);
  std::fprintf(stderr, "quiver: warning: could not re-execute with OPENBLAS_CORETYPE=%s OPENBLAS_NUM_THREADS=%s: %s\n",
               std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE") : "(unset)",
               std::getenv("OPENBLAS_NUM_THREADS") ? std::getenv("OPENBLAS_NUM_THREADS") : "(unset)",
               std::strerror(errno));
}

}  // namespace quiver::kernels
