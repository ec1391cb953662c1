// kernels/gpu_search.h for builds without the CUDA layer: no device can be
// opened there, so these are reached only by a caller that ignored that.
#include "kernels/gpu_search.h"

namespace quiver::kernels::gpu {

namespace {
Status NoCuda() { return Status::Unavailable("built without CUDA: GPU kernels are not available"); }
}  // namespace

Result<DeviceFlatBase> DeviceFlatBase::Upload(cuda::GpuResources&, const BaseView&, bool) { return NoCuda(); }

Status FlatSearch(cuda::GpuResources&, const DeviceFlatBase&, const uint64_t*, const float*, size_t,
                  const FlatSearchParams&, int64_t*, float*) {
  return NoCuda();
}

Status FlatSearch(cuda::GpuResources&, const BaseView&, const float*, size_t, const FlatSearchParams&, int64_t*,
                  float*) {
  return NoCuda();
}

Result<DeviceIvfFlat> DeviceIvfFlat::Upload(cuda::GpuResources&, const IvfFlatIndex&, bool) { return NoCuda(); }

Status IvfFlatSearch(cuda::GpuResources&, const DeviceIvfFlat&, const uint64_t*, const float*, size_t, size_t, uint32_t,
                     int64_t*, float*) {
  return NoCuda();
}

Status IvfFlatSearch(cuda::GpuResources&, const IvfFlatIndex&, const uint64_t*, const float*, size_t, size_t, uint32_t,
                     int64_t*, float*) {
  return NoCuda();
}

Result<DeviceIvfPq> DeviceIvfPq::Upload(cuda::GpuResources&, const IvfPqIndex&, bool) { return NoCuda(); }

Status IvfPqSearch(cuda::GpuResources&, const DeviceIvfPq&, const BaseView&, const float*, size_t, size_t, uint32_t,
                   uint32_t, int64_t*, float*) {
  return NoCuda();
}

Status IvfPqSearch(cuda::GpuResources&, const IvfPqIndex&, const BaseView&, const float*, size_t, size_t, uint32_t,
                   uint32_t, int64_t*, float*) {
  return NoCuda();
}

Result<DeviceGraph> DeviceGraph::Upload(cuda::GpuResources&, const GraphIndex&, const BaseView&, bool) {
  return NoCuda();
}

Status GraphSearch(cuda::GpuResources&, const DeviceGraph&, const uint64_t*, const float*, size_t, size_t, uint32_t,
                   uint32_t, int64_t*, float*) {
  return NoCuda();
}

Status GraphSearch(cuda::GpuResources&, const GraphIndex&, const BaseView&, const float*, size_t, size_t, uint32_t,
                   uint32_t, int64_t*, float*) {
  return NoCuda();
}

Status KnnGraph(cuda::GpuResources&, Metric, const float*, size_t, size_t, size_t, uint32_t*) { return NoCuda(); }

Status PruneByDetours(cuda::GpuResources&, const uint32_t*, size_t, size_t, size_t, uint32_t*) { return NoCuda(); }

Status SelectK(cuda::GpuResources&, const float*, size_t, size_t, size_t, bool, int64_t*, float*) { return NoCuda(); }

}  // namespace quiver::kernels::gpu
