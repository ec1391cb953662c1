// GPU discovery: which CUDA devices this process can use, without exposing a
// CUDA type. Any CUDA error while probing (no driver, "driver version is
// insufficient", no device) means "no GPU": the node serves on the CPU.
//
// Example:
//   GpuDiscovery gpus = DiscoverGpus();
//   if (gpus.devices.empty()) spdlog::info("CPU only: {}", gpus.unavailable_reason);
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace quiver::cuda {

struct GpuDeviceInfo {
  int ordinal = 0;
  std::string name;
  size_t total_memory_bytes = 0;
  int compute_capability_major = 0;
  int compute_capability_minor = 0;
};

struct GpuDiscovery {
  std::vector<GpuDeviceInfo> devices;
  /// Why `devices` is empty (e.g. "built without CUDA", the CUDA error text).
  std::string unavailable_reason;
};

/// True if this binary was built with the CUDA layer.
bool BuiltWithCuda();

/// Probes the CUDA runtime once per call; never throws or aborts.
GpuDiscovery DiscoverGpus();

}  // namespace quiver::cuda
