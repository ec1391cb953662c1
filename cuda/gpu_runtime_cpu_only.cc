// The GPU runtime for builds without the CUDA layer (QUIVER_CUDA=OFF or no
// nvcc): discovery finds nothing and no device can be opened, so nothing
// that allocates is reachable.
#include "cuda/gpu_resources.h"
#include "cuda/gpu_runtime.h"

namespace quiver::cuda {

namespace {
constexpr const char* kNoCuda = "built without CUDA (QUIVER_CUDA=OFF or no nvcc at build time)";
}  // namespace

bool BuiltWithCuda() { return false; }

GpuDiscovery DiscoverGpus() {
  GpuDiscovery out;
  out.unavailable_reason = kNoCuda;
  return out;
}

struct GpuDevice::Impl {};
struct GpuResources::Impl {};

Status LoadCublas() { return Status::Unavailable(kNoCuda); }
Result<std::shared_ptr<GpuDevice>> GpuDevice::Open(const GpuOptions&) { return Status::Unavailable(kNoCuda); }
GpuDevice::~GpuDevice() = default;
Result<std::unique_ptr<GpuResources>> GpuDevice::NewResources() { return Status::Unavailable(kNoCuda); }
bool GpuDevice::Reserve(size_t) { return false; }
void GpuDevice::Unreserve(size_t) {}
GpuResources::~GpuResources() = default;
Status GpuResources::Synchronize() { return Status::Unavailable(kNoCuda); }
Result<DeviceMemory> DeviceMemory::Allocate(GpuResources&, size_t, const char*) { return Status::Unavailable(kNoCuda); }
Result<DeviceMemory> DeviceMemory::AllocateLongLived(GpuDevice&, size_t, const char*) {
  return Status::Unavailable(kNoCuda);
}
void DeviceMemory::Release() {}
Status DeviceMemory::CopyFromHost(GpuResources&, const void*, size_t) { return Status::Unavailable(kNoCuda); }
Status DeviceMemory::CopyToHost(GpuResources&, void*, size_t) const { return Status::Unavailable(kNoCuda); }
Result<PinnedMemory> PinnedMemory::Allocate(size_t, const char*) { return Status::Unavailable(kNoCuda); }
void PinnedMemory::Release() {}

}  // namespace quiver::cuda
