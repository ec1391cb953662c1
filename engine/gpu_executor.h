// Runs the engine's searches on a GPU: holds the device, keeps sealed
// segments resident within the memory budget (least recently used evicted),
// gives each search thread its own stream and cuBLAS handle, and counts what
// fell back to the CPU. The engine asks it first and serves on the CPU when it
// says no: a node with a broken or absent GPU serves everything on the CPU.
//
// The GPU serves sealed segments searched exactly (FLAT) or through their
// IVF_FLAT, IVF_PQ or GRAPH index, and builds GRAPH indexes' kNN graphs. The
// growing segment (it changes with every write) and selective filters (few
// rows gathered, searched exactly) stay on the CPU.
//
// Example:
//   std::string why_not;
//   std::shared_ptr<GpuExecutor> gpu = GpuExecutor::Open({}, &why_not);
//   if (gpu == nullptr) spdlog::info("serving on the CPU: {}", why_not);
//   EngineOptions options;
//   options.gpu = gpu;  // null: CPU only
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/status.h"
#include "cuda/gpu_resources.h"
#include "kernels/flat_search.h"
#include "kernels/gpu_search.h"

namespace quiver::engine {

struct GpuExecutorOptions {
  /// CUDA device ordinal; -1 = never use a GPU. Default: 0.
  int device = 0;
  /// GPU memory Quiver may hold, resident segments and per-search workspace
  /// together; 0 = 90% of the memory free at start. Default: 0.
  size_t memory_budget_bytes = 0;
  /// Share of the budget resident segments may hold; the rest is left to the
  /// searches' workspace (distance tiles, queries, results). Default: 0.7.
  double resident_fraction = 0.7;
  /// Exact search's GEMM (cuda::FlatGemm). Default: kAuto.
  cuda::FlatGemm flat_gemm = cuda::FlatGemm::kAuto;
};

class GpuExecutor {
 public:
  /// Opens the GPU; null with `why_not` set where there is none, it is
  /// disabled (device -1), or it cannot be used. Never throws or aborts.
  static std::shared_ptr<GpuExecutor> Open(const GpuExecutorOptions& options, std::string* why_not);
  ~GpuExecutor();
  GpuExecutor(const GpuExecutor&) = delete;
  GpuExecutor& operator=(const GpuExecutor&) = delete;

  /// Exact search of an immutable sealed segment, `segment_uid` naming it
  /// (process-unique), `base` its vectors in host memory with base.deleted
  /// this call's excluded rows (tombstones, filtered out). The device copy is
  /// made on first use and kept while the resident share allows. Same
  /// contract as kernels::FlatSearch. Any error (budget, CUDA, k above the
  /// GPU's limit): the Status, and the caller serves on the CPU and calls
  /// NoteFallback.
  Status SearchSealed(uint64_t segment_uid, const kernels::BaseView& base, const float* queries, size_t nq,
                      const kernels::FlatSearchParams& params, int64_t* rows, float* scores);

  /// IVF_FLAT search of a sealed segment's index (IvfFlatIndex::Search's
  /// contract); the index is copied on first use like SearchSealed's vectors.
  /// `deleted`: this call's excluded rows (host), may be null.
  Status SearchIvfFlat(uint64_t segment_uid, const kernels::IvfFlatIndex& index, const uint64_t* deleted,
                       const float* queries, size_t nq, size_t k, uint32_t nprobe, int64_t* rows, float* scores);

  /// IVF_PQ search of a sealed segment's index (IvfPqIndex::Search's
  /// contract); `base` holds the segment's vectors (host: the exact re-rank
  /// runs there), with base.deleted this call's excluded rows. The index
  /// (codes, not vectors) is copied on first use.
  Status SearchIvfPq(uint64_t segment_uid, const kernels::IvfPqIndex& index, const kernels::BaseView& base,
                     const float* queries, size_t nq, size_t k, uint32_t nprobe, uint32_t refine_factor,
                     int64_t* rows, float* scores);

  /// GRAPH search of a sealed segment's index (GraphIndex::Search's contract,
  /// exact fp32 traversal on the GPU); `base` holds the build vectors, with
  /// base.deleted this call's excluded rows. The graph and vectors are copied
  /// on first use like SearchSealed's vectors.
  Status SearchGraph(uint64_t segment_uid, const kernels::GraphIndex& index, const kernels::BaseView& base,
                     const float* queries, size_t nq, size_t k, uint32_t itopk, uint32_t search_width, int64_t* rows,
                     float* scores);

  /// GraphIndex::Build with the kNN graphs on this GPU (the calling thread's
  /// stream), the rest on `threads` CPU threads (0 = all). Any GPU failure
  /// (budget, CUDA) means a CPU build instead, the first failure of each
  /// kind logged.
  Result<std::unique_ptr<kernels::GraphIndex>> BuildGraph(int threads, kernels::Metric metric, const float* vectors,
                                                          size_t n, size_t dim, const kernels::GraphBuildParams& params);

  /// Drops a segment's device copies (the segment was compacted away or its
  /// collection deleted). Searches still using it keep it until they finish.
  void Forget(uint64_t segment_uid);

  /// Counts a search served on the CPU after the GPU failed; logs the first
  /// failure of each status code once (warn), the rest only in the count.
  void NoteFallback(const Status& why);

  struct Stats {
    std::string device_name;
    uint64_t searches = 0;   // segment searches served on the GPU
    uint64_t fallbacks = 0;  // segment searches the GPU failed and the CPU served
    uint64_t graph_builds = 0;  // GRAPH indexes built with their kNN graphs on the GPU
    uint64_t resident_segments = 0;
    uint64_t resident_bytes = 0;
    uint64_t bytes_in_use = 0;  // everything held on the device now
    uint64_t budget_bytes = 0;
  };
  Stats stats() const;

 private:
  GpuExecutor(std::shared_ptr<cuda::GpuDevice> device, size_t resident_capacity);
  // The calling thread's resources for this executor, created on first use.
  Result<cuda::GpuResources*> ThreadResources();
  // The device copy under `key`, made by `upload` (about `bytes` large) when
  // missing, evicting least recently used copies to make room.
  template <class T, class Upload>
  Result<std::shared_ptr<const T>> Resident(uint64_t key, size_t bytes, const Upload& upload);
  // Every Search* method: on the calling thread's resources, the copy under
  // `key` (made by upload(res) when missing) is handed to search(res, copy),
  // and a success is counted.
  template <class T, class Upload, class Search>
  Status SearchResident(uint64_t key, size_t bytes, const Upload& upload, const Search& search);

  struct Entry {
    std::shared_ptr<const void> copy;  // a DeviceFlatBase, DeviceIvfFlat, DeviceIvfPq or DeviceGraph
    size_t bytes = 0;
    uint64_t last_use = 0;
  };
  // Keys of the resident map: a segment's vectors and its index (IVF_FLAT,
  // IVF_PQ or GRAPH; a segment has one) apart.
  static uint64_t FlatKey(uint64_t uid) { return uid << 1; }
  static uint64_t IndexKey(uint64_t uid) { return (uid << 1) | 1; }

  const uint64_t instance_;  // keys the per-thread resources
  std::shared_ptr<cuda::GpuDevice> device_;
  const size_t resident_capacity_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Entry> resident_;  // guarded by mu_
  size_t resident_bytes_ = 0;                     // guarded by mu_
  uint64_t use_clock_ = 0;                        // guarded by mu_
  // True the first time `why`'s code is marked in *logged (a member guarded
  // by mu_): failures are logged once per kind.
  bool FirstOfItsKind(uint32_t* logged, const Status& why);

  uint32_t logged_codes_ = 0;                     // guarded by mu_: bit per StatusCode logged
  uint32_t logged_build_codes_ = 0;               // guarded by mu_: the same for graph builds
  std::atomic<uint64_t> searches_{0};
  std::atomic<uint64_t> fallbacks_{0};
  std::atomic<uint64_t> graph_builds_{0};
};

/// A process-unique number for a new segment (keys its GPU copy).
uint64_t NextSegmentUid();

}  // namespace quiver::engine
