// CUDA build of the discovery layer.
#include <cuda_runtime_api.h>

#include <string>

#include "cuda/gpu_runtime.h"

namespace quiver::cuda {

bool BuiltWithCuda() { return true; }

GpuDiscovery DiscoverGpus() {
  GpuDiscovery out;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    // Without a driver this is "CUDA driver version is insufficient", not
    // cudaErrorNoDevice: every error is treated as "no GPU".
    out.unavailable_reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
    (void)cudaGetLastError();  // clear the sticky error state
    return out;
  }
  if (count == 0) {
    out.unavailable_reason = "no CUDA device";
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    out.devices.push_back({i, prop.name, prop.totalGlobalMem, prop.major, prop.minor});
  }
  if (out.devices.empty()) out.unavailable_reason = "no CUDA device answered cudaGetDeviceProperties";
  return out;
}

}  // namespace quiver::cuda
