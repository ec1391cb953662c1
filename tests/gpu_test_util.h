// The GPU the tests share, and the backends a kernel test runs on. GPU cases
// skip with the reason (no driver, no device, built without CUDA) where no
// device can be opened, so the same fixtures run everywhere.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "cuda/gpu_resources.h"
#include "kernels/flat_search.h"

namespace quiver::testing {

enum class Backend { kCpu, kGpu };

inline const char* BackendName(Backend b) { return b == Backend::kCpu ? "Cpu" : "Gpu"; }

struct TestGpu {
  std::shared_ptr<cuda::GpuDevice> device;
  std::unique_ptr<cuda::GpuResources> resources;  // the test thread's
  std::string unavailable_reason;
};

/// Releases the shared GPU after the last test, while the CUDA runtime is
/// still up, so compute-sanitizer's leak check finds nothing left behind.
class ReleaseTestGpuAtEnd : public ::testing::Environment {
 public:
  explicit ReleaseTestGpuAtEnd(TestGpu* gpu) : gpu_(gpu) {}
  void TearDown() override {
    gpu_->resources.reset();
    gpu_->device.reset();
    gpu_->unavailable_reason = "released after the last test";
  }

 private:
  TestGpu* gpu_;
};

/// Opened once per process. Base tiles of 1,000 rows, so the tests' sizes
/// cross tiles; a 4 GiB budget.
inline TestGpu& SharedTestGpu() {
  static TestGpu* gpu = [] {
    auto* g = new TestGpu();
    cuda::GpuOptions options;
    options.memory_budget_bytes = size_t{4} << 30;
    options.flat_base_tile_rows = 1000;
    auto device = cuda::GpuDevice::Open(options);
    if (!device.ok()) {
      g->unavailable_reason = device.status().ToString();
      return g;
    }
    auto res = (*device)->NewResources();
    if (!res.ok()) {
      g->unavailable_reason = res.status().ToString();
      return g;
    }
    g->device = *device;
    g->resources = std::move(res).value();
    ::testing::AddGlobalTestEnvironment(new ReleaseTestGpuAtEnd(g));  // gtest owns it
    return g;
  }();
  return *gpu;
}

/// Kernel resources for `backend` (the shared GPU's, or the CPU's).
inline kernels::Resources ResourcesFor(Backend backend) {
  kernels::Resources res;
  if (backend == Backend::kGpu) res.gpu = SharedTestGpu().resources.get();
  return res;
}

}  // namespace quiver::testing

/// Skips the current test unless a GPU could be opened, naming why not.
#define QUIVER_SKIP_WITHOUT_GPU()                                                                  \
  do {                                                                                             \
    if (!::quiver::testing::SharedTestGpu().resources) {                                           \
      GTEST_SKIP() << "no GPU: " << ::quiver::testing::SharedTestGpu().unavailable_reason;         \
    }                                                                                              \
  } while (0)

#define QUIVER_SKIP_UNLESS_BACKEND_AVAILABLE(backend)                     \
  do {                                                                    \
    if ((backend) == ::quiver::testing::Backend::kGpu) QUIVER_SKIP_WITHOUT_GPU(); \
  } while (0)
