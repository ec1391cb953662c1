// The GPU runtime handles every GPU call takes: a device (memory pool with a
// budget, shared by threads) and per-thread resources (a stream and a cuBLAS
// handle), plus RAII device and pinned buffers. No CUDA type appears here, so
// code above cuda/ and kernels/gpu includes this header in any build; in a
// build without CUDA, GpuDevice::Open returns UNAVAILABLE and nothing else is
// reachable.
//
// Ownership rules (the bugs of shared or embedded GPU handles are well known):
// - one GpuDevice per physical device, shared (std::shared_ptr) by everything
//   that allocates on it; it is thread-safe;
// - one GpuResources per thread, passed first to every GPU call and never
//   stored inside an index; it is not thread-safe;
// - a DeviceBuffer allocated through a GpuResources is stream-ordered on that
//   resources' stream and must be released before the resources are; one
//   allocated through the GpuDevice (long-lived data, e.g. a resident segment)
//   may outlive any GpuResources.
//
// Example:
//   QUIVER_ASSIGN_OR_RETURN(auto device, cuda::GpuDevice::Open({.device = 0}));
//   QUIVER_ASSIGN_OR_RETURN(auto res, device->NewResources());
//   QUIVER_ASSIGN_OR_RETURN(auto buf, cuda::DeviceBuffer<float>::Allocate(*res, n, "queries"));
//   QUIVER_RETURN_IF_ERROR(buf.CopyFromHost(*res, host_queries, n));
//   ...
//   QUIVER_RETURN_IF_ERROR(res->Synchronize());
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "common/status.h"

namespace quiver::cuda {

/// How FLAT search (and IVF's coarse search) forms the dot products it
/// selects from; the winners' final scores are recomputed in plain fp32
/// either way.
enum class FlatGemm {
  /// kTf32x3 where the device has TF32 tensor cores (compute capability 8.0
  /// and up), else kFp32. GpuDevice::Open resolves it: options() says which.
  kAuto,
  /// cuBLAS SGEMM on the FP32 cores (67 TFLOP/s on an H100).
  kFp32,
  /// FP32 accuracy from the tensor cores ("3xTF32"): each value split into
  /// its TF32 part and the fp32 remainder, and one TF32 GEMM over the three
  /// products hi*hi + lo*hi + hi*lo (dimension 3 x dim); the term left out,
  /// lo*lo, is below 2^-21 of the product, under fp32's own rounding of a
  /// sum of dim products. Three times the FLOPs, on 495 TFLOP/s cores. On
  /// an H100 (1M x 128, 10k queries, k 10): 1.9x faster than kFp32, ids
  /// equal to kFp32's but for 4 in 100,000 (near-ties at rank k), scores
  /// identical (the winners' are recomputed in fp32).
  kTf32x3,
};

struct GpuOptions {
  /// CUDA device ordinal. Default: 0.
  int device = 0;
  /// Bytes of device memory Quiver may hold at once on this device (every
  /// buffer counts, cached segments and per-call workspace alike); an
  /// allocation beyond it fails with RESOURCE_EXHAUSTED, which callers treat
  /// as "serve this on the CPU". 0 = 90% of the memory free when the device
  /// is opened. Default: 0.
  size_t memory_budget_bytes = 0;
  /// FLAT search: base rows per tile of the distance matrix; 0 = chosen
  /// (262,144 rows, fewer for long rows with kTf32x3). Tests set it small so
  /// that every size crosses tiles. Default: 0.
  size_t flat_base_tile_rows = 0;
  /// FLAT search: queries per tile; 0 = as many as the workspace (at most
  /// 4 GiB or half the free budget) holds, at most 16,384. quiver-gpu-bench
  /// flat --tiles sweeps both. Default: 0.
  size_t flat_query_tile_rows = 0;
  /// GRAPH search: thread blocks per query (each its own beam, results
  /// merged), at most 32; 0 = as many (at most 8) as spread a small batch over the SMs
  /// (1 once there are as many queries as SMs). quiver-gpu-bench graph
  /// --blocks-per-query sweeps it. Default: 0.
  size_t graph_blocks_per_query = 0;
  /// FLAT search's GEMM (FlatGemm). quiver-gpu-bench flat --tiles
  /// 0x0:fp32,0x0:3xtf32 compares them. Default: kAuto.
  FlatGemm flat_gemm = FlatGemm::kAuto;
};

class GpuResources;

/// Loads cuBLAS with dlopen (once per process; later calls return the first
/// outcome). UNAVAILABLE naming the library and the loader's error if it
/// cannot be loaded or lacks a function; GpuDevice::Open calls it, so a GPU
/// host without cuBLAS serves on the CPU and says why.
Status LoadCublas();

/// One CUDA device: its memory pool and budget. Thread-safe.
class GpuDevice : public std::enable_shared_from_this<GpuDevice> {
 public:
  /// Opens the device: checks it answers, creates a stream-ordered memory pool
  /// (freed memory stays cached up to the budget) and an internal stream for
  /// long-lived allocations. UNAVAILABLE (naming the CUDA error) if the
  /// device cannot be used, cuBLAS cannot be loaded (LoadCublas) or the build
  /// has no CUDA layer.
  static Result<std::shared_ptr<GpuDevice>> Open(const GpuOptions& options);
  ~GpuDevice();
  GpuDevice(const GpuDevice&) = delete;
  GpuDevice& operator=(const GpuDevice&) = delete;

  /// New per-thread resources (a non-blocking stream and a cuBLAS handle).
  Result<std::unique_ptr<GpuResources>> NewResources();

  const GpuOptions& options() const { return options_; }
  const std::string& name() const { return name_; }
  size_t budget_bytes() const { return budget_bytes_; }
  size_t bytes_in_use() const { return bytes_in_use_.load(std::memory_order_relaxed); }
  size_t peak_bytes() const { return peak_bytes_.load(std::memory_order_relaxed); }

  // ---- for cuda/ and kernels/gpu only ----
  struct Impl;
  Impl& impl() { return *impl_; }
  /// Counts `bytes` against the budget; false (and nothing counted) if they
  /// do not fit.
  bool Reserve(size_t bytes);
  void Unreserve(size_t bytes);

 private:
  GpuDevice(const GpuOptions& options, std::unique_ptr<Impl> impl, std::string name, size_t budget);

  GpuOptions options_;
  std::unique_ptr<Impl> impl_;
  std::string name_;
  size_t budget_bytes_ = 0;
  std::atomic<size_t> bytes_in_use_{0};
  std::atomic<size_t> peak_bytes_{0};
};

/// Per-thread handles: a stream and a cuBLAS handle bound to it. Not
/// thread-safe; create one per thread with GpuDevice::NewResources.
class GpuResources {
 public:
  ~GpuResources();
  GpuResources(const GpuResources&) = delete;
  GpuResources& operator=(const GpuResources&) = delete;

  GpuDevice& device() { return *device_; }
  /// Waits for everything queued on this stream; the first CUDA error of the
  /// queued work, if any, as a Status naming the call.
  Status Synchronize();

  // ---- for cuda/ and kernels/gpu only ----
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  friend class GpuDevice;
  GpuResources(std::shared_ptr<GpuDevice> device, std::unique_ptr<Impl> impl);

  std::shared_ptr<GpuDevice> device_;
  std::unique_ptr<Impl> impl_;
};

/// Untyped device memory, counted against its device's budget, released (stream
/// ordered) when destroyed. Move-only.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  /// Stream-ordered on `res`'s stream: for memory used within one call.
  static Result<DeviceMemory> Allocate(GpuResources& res, size_t bytes, const char* what);
  /// On the device's internal stream, synchronised: for long-lived memory that
  /// outlives the calling thread's resources.
  static Result<DeviceMemory> AllocateLongLived(GpuDevice& device, size_t bytes, const char* what);
  ~DeviceMemory() { Release(); }
  DeviceMemory(DeviceMemory&& o) noexcept { *this = std::move(o); }
  DeviceMemory& operator=(DeviceMemory&& o) noexcept {
    if (this != &o) {
      Release();
      device_ = std::move(o.device_);
      stream_ = std::exchange(o.stream_, nullptr);
      data_ = std::exchange(o.data_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
      long_lived_ = o.long_lived_;
    }
    return *this;
  }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

  /// Copies `bytes` from host memory at `src` to offset 0 (queued on `res`'s stream).
  Status CopyFromHost(GpuResources& res, const void* src, size_t bytes);
  /// Copies `bytes` from offset 0 to host memory at `dst` (queued on `res`'s
  /// stream; the host data is valid after res.Synchronize()).
  Status CopyToHost(GpuResources& res, void* dst, size_t bytes) const;

 private:
  void Release();

  std::shared_ptr<GpuDevice> device_;
  void* stream_ = nullptr;  // cudaStream_t the memory is freed on
  void* data_ = nullptr;
  size_t bytes_ = 0;
  bool long_lived_ = false;  // other streams may read it: wait for the device before freeing
};

/// Typed view over DeviceMemory.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static Result<DeviceBuffer> Allocate(GpuResources& res, size_t count, const char* what) {
    QUIVER_ASSIGN_OR_RETURN(DeviceMemory mem, DeviceMemory::Allocate(res, count * sizeof(T), what));
    return DeviceBuffer(std::move(mem), count);
  }
  static Result<DeviceBuffer> AllocateLongLived(GpuDevice& device, size_t count, const char* what) {
    QUIVER_ASSIGN_OR_RETURN(DeviceMemory mem, DeviceMemory::AllocateLongLived(device, count * sizeof(T), what));
    return DeviceBuffer(std::move(mem), count);
  }
  T* data() const { return static_cast<T*>(mem_.data()); }
  size_t size() const { return count_; }
  Status CopyFromHost(GpuResources& res, const T* src, size_t count) {
    return mem_.CopyFromHost(res, src, count * sizeof(T));
  }
  Status CopyToHost(GpuResources& res, T* dst, size_t count) const { return mem_.CopyToHost(res, dst, count * sizeof(T)); }

 private:
  DeviceBuffer(DeviceMemory mem, size_t count) : mem_(std::move(mem)), count_(count) {}
  DeviceMemory mem_;
  size_t count_ = 0;
};

/// Page-locked host memory (fast, asynchronous copies). Not counted against
/// the device budget. Move-only.
class PinnedMemory {
 public:
  PinnedMemory() = default;
  static Result<PinnedMemory> Allocate(size_t bytes, const char* what);
  ~PinnedMemory() { Release(); }
  PinnedMemory(PinnedMemory&& o) noexcept { *this = std::move(o); }
  PinnedMemory& operator=(PinnedMemory&& o) noexcept {
    if (this != &o) {
      Release();
      data_ = std::exchange(o.data_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  PinnedMemory(const PinnedMemory&) = delete;
  PinnedMemory& operator=(const PinnedMemory&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void Release();
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace quiver::cuda
