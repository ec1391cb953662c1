// Discovery for builds without the CUDA layer (QUIVER_CUDA=OFF or no nvcc).
#include "cuda/gpu_runtime.h"

namespace quiver::cuda {

bool BuiltWithCuda() { return false; }

GpuDiscovery DiscoverGpus() {
  GpuDiscovery out;
  out.unavailable_reason = "built without CUDA (QUIVER_CUDA=OFF or no nvcc at build time)";
  return out;
}

}  // namespace quiver::cuda
