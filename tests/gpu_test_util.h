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

/// kGpuTf32x3: the GPU with FLAT's GEMM on the tensor cores
/// (cuda::FlatGemm::kTf32x3), held to the same references as kGpu.
enum class Backend { kCpu, kGpu, kGpuTf32x3 };

inline const char* BackendName(Backend b) {
  return b == Backend::kCpu ? "Cpu" : b == Backend::kGpu ? "Gpu" : "GpuTf32x3";
}

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

/// Opened once per process (per FLAT GEMM). Base tiles of 1,000 rows, so
/// the tests' sizes cross tiles; a 4 GiB budget.
inline TestGpu& SharedTestGpu(cuda::FlatGemm gemm = cuda::FlatGemm::kFp32) {
  static auto open = [](cuda::FlatGemm flat_gemm) {
    auto* g = new TestGpu();
    cuda::GpuOptions options;
    options.memory_budget_bytes = size_t{4} << 30;
    options.flat_base_tile_rows = 1000;
    options.flat_gemm = flat_gemm;
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
  };
  if (gemm == cuda::FlatGemm::kTf32x3) {
    static TestGpu* tensor_gpu = open(gemm);
    return *tensor_gpu;
  }
  static TestGpu* gpu = open(gemm);
  return *gpu;
}

/// The shared GPU a GPU backend runs on.
inline TestGpu& TestGpuFor(Backend backend) {
  return SharedTestGpu(backend == Backend::kGpuTf32x3 ? cuda::FlatGemm::kTf32x3 : cuda::FlatGemm::kFp32);
}

/// Kernel resources for `backend` (the shared GPU's, or the CPU's).
inline kernels::Resources ResourcesFor(Backend backend) {
  kernels::Resources res;
  if (backend != Backend::kCpu) res.gpu = TestGpuFor(backend).resources.get();
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

#define QUIVER_SKIP_UNLESS_BACKEND_AVAILABLE(backend)                                                \
  do {                                                                                               \
    if ((backend) != ::quiver::testing::Backend::kCpu && !::quiver::testing::TestGpuFor(backend).resources) { \
      GTEST_SKIP() << "no GPU: " << ::quiver::testing::TestGpuFor(backend).unavailable_reason;       \
    }                                                                                                \
  } while (0)
