// GPU execution for the engine (gpu_executor.h).
#include "engine/gpu_executor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

namespace quiver::engine {

uint64_t NextSegmentUid() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

namespace {
std::atomic<uint64_t> next_instance{1};
}  // namespace

GpuExecutor::GpuExecutor(std::shared_ptr<cuda::GpuDevice> device, size_t resident_capacity)
    : instance_(next_instance.fetch_add(1)), device_(std::move(device)), resident_capacity_(resident_capacity) {}

GpuExecutor::~GpuExecutor() = default;

std::shared_ptr<GpuExecutor> GpuExecutor::Open(const GpuExecutorOptions& options, std::string* why_not) {
  if (options.device < 0) {
    *why_not = "GPU disabled (config gpu: off)";
    return nullptr;
  }
  cuda::GpuOptions gpu_options;
  gpu_options.device = options.device;
  gpu_options.memory_budget_bytes = options.memory_budget_bytes;
  gpu_options.flat_gemm = options.flat_gemm;
  auto device = cuda::GpuDevice::Open(gpu_options);
  if (!device.ok()) {
    *why_not = device.status().message();
    return nullptr;
  }
  // A device that opens but cannot create a stream or a cuBLAS handle is
  // broken: find out now rather than at the first search.
  if (auto probe = (*device)->NewResources(); !probe.ok()) {
    *why_not = probe.status().message();
    return nullptr;
  }
  const double fraction = std::clamp(options.resident_fraction, 0.0, 1.0);
  const auto capacity = static_cast<size_t>(double((*device)->budget_bytes()) * fraction);
  return std::shared_ptr<GpuExecutor>(new GpuExecutor(std::move(device).value(), capacity));
}

Result<cuda::GpuResources*> GpuExecutor::ThreadResources() {
  // One stream and cuBLAS handle per thread and executor, never shared; they
  // live as long as the thread (gRPC's request threads are long-lived).
  thread_local std::unordered_map<uint64_t, std::unique_ptr<cuda::GpuResources>> per_thread;
  std::unique_ptr<cuda::GpuResources>& slot = per_thread[instance_];
  if (slot == nullptr) {
    auto created = device_->NewResources();
    if (!created.ok()) return created.status();
    slot = std::move(created).value();
  }
  return slot.get();
}

template <class T, class Upload>
Result<std::shared_ptr<const T>> GpuExecutor::Resident(uint64_t key, size_t bytes, const Upload& upload) {
  {
    std::lock_guard lock(mu_);
    auto it = resident_.find(key);
    if (it != resident_.end()) {
      it->second.last_use = ++use_clock_;
      return std::static_pointer_cast<const T>(it->second.copy);
    }
  }
  if (bytes > resident_capacity_) {
    return Status::ResourceExhausted("segment of " + std::to_string(bytes) + " bytes exceeds the GPU's resident share (" +
                                     std::to_string(resident_capacity_) + " bytes)");
  }
  {
    // Least recently used copies make room; searches still holding one keep
    // it alive until they finish.
    std::lock_guard lock(mu_);
    while (resident_bytes_ + bytes > resident_capacity_ && !resident_.empty()) {
      auto lru = resident_.begin();
      for (auto it = resident_.begin(); it != resident_.end(); ++it) {
        if (it->second.last_use < lru->second.last_use) lru = it;
      }
      resident_bytes_ -= lru->second.bytes;
      resident_.erase(lru);
    }
  }
  // Uploaded without the lock: a concurrent search of the same segment may
  // upload it too, and the first copy in is kept.
  Result<T> uploaded = upload();
  if (!uploaded.ok()) return uploaded.status();
  auto copy = std::make_shared<const T>(std::move(uploaded).value());
  std::lock_guard lock(mu_);
  auto [it, inserted] = resident_.try_emplace(key, Entry{copy, copy->bytes(), ++use_clock_});
  if (inserted) resident_bytes_ += copy->bytes();
  return std::static_pointer_cast<const T>(it->second.copy);
}

template <class T, class Upload, class Search>
Status GpuExecutor::SearchResident(uint64_t key, size_t bytes, const Upload& upload, const Search& search) {
  QUIVER_ASSIGN_OR_RETURN(cuda::GpuResources * res, ThreadResources());
  QUIVER_ASSIGN_OR_RETURN(auto resident, Resident<T>(key, bytes, [&] { return upload(*res); }));
  QUIVER_RETURN_IF_ERROR(search(*res, *resident));
  searches_.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok();
}

Status GpuExecutor::SearchSealed(uint64_t segment_uid, const kernels::BaseView& base, const float* queries, size_t nq,
                                 const kernels::FlatSearchParams& params, int64_t* rows, float* scores) {
  const size_t bytes = (base.rows * base.dim + (base.sq_norms != nullptr ? base.rows : 0)) * sizeof(float);
  return SearchResident<kernels::gpu::DeviceFlatBase>(
      FlatKey(segment_uid), bytes,
      [&](cuda::GpuResources& res) {
        kernels::BaseView vectors = base;
        vectors.deleted = nullptr;
        return kernels::gpu::DeviceFlatBase::Upload(res, vectors, /*long_lived=*/true);
      },
      [&](cuda::GpuResources& res, const kernels::gpu::DeviceFlatBase& copy) {
        return kernels::gpu::FlatSearch(res, copy, base.deleted, queries, nq, params, rows, scores);
      });
}

Status GpuExecutor::SearchIvfFlat(uint64_t segment_uid, const kernels::IvfFlatIndex& index, const uint64_t* deleted,
                                  const float* queries, size_t nq, size_t k, uint32_t nprobe, int64_t* rows,
                                  float* scores) {
  return SearchResident<kernels::gpu::DeviceIvfFlat>(
      IndexKey(segment_uid), index.MemoryBytes(),
      [&](cuda::GpuResources& res) { return kernels::gpu::DeviceIvfFlat::Upload(res, index, /*long_lived=*/true); },
      [&](cuda::GpuResources& res, const kernels::gpu::DeviceIvfFlat& copy) {
        return kernels::gpu::IvfFlatSearch(res, copy, deleted, queries, nq, k, nprobe, rows, scores);
      });
}

Status GpuExecutor::SearchIvfPq(uint64_t segment_uid, const kernels::IvfPqIndex& index, const kernels::BaseView& base,
                                const float* queries, size_t nq, size_t k, uint32_t nprobe, uint32_t refine_factor,
                                int64_t* rows, float* scores) {
  return SearchResident<kernels::gpu::DeviceIvfPq>(
      IndexKey(segment_uid), index.MemoryBytes(),
      [&](cuda::GpuResources& res) { return kernels::gpu::DeviceIvfPq::Upload(res, index, /*long_lived=*/true); },
      [&](cuda::GpuResources& res, const kernels::gpu::DeviceIvfPq& copy) {
        return kernels::gpu::IvfPqSearch(res, copy, base, queries, nq, k, nprobe, refine_factor, rows, scores);
      });
}

Status GpuExecutor::SearchGraph(uint64_t segment_uid, const kernels::GraphIndex& index, const kernels::BaseView& base,
                                const float* queries, size_t nq, size_t k, uint32_t itopk, uint32_t search_width,
                                int64_t* rows, float* scores) {
  const size_t bytes = (base.rows * base.dim + index.size() * index.degree()) * sizeof(float);
  return SearchResident<kernels::gpu::DeviceGraph>(
      IndexKey(segment_uid), bytes,
      [&](cuda::GpuResources& res) { return kernels::gpu::DeviceGraph::Upload(res, index, base, /*long_lived=*/true); },
      [&](cuda::GpuResources& res, const kernels::gpu::DeviceGraph& copy) {
        return kernels::gpu::GraphSearch(res, copy, base.deleted, queries, nq, k, itopk, search_width, rows, scores);
      });
}

void GpuExecutor::Forget(uint64_t segment_uid) {
  std::lock_guard lock(mu_);
  for (uint64_t key : {FlatKey(segment_uid), IndexKey(segment_uid)}) {
    auto it = resident_.find(key);
    if (it == resident_.end()) continue;
    resident_bytes_ -= it->second.bytes;
    resident_.erase(it);
  }
}

Result<std::unique_ptr<kernels::GraphIndex>> GpuExecutor::BuildGraph(int threads, kernels::Metric metric,
                                                                      const float* vectors, size_t n, size_t dim,
                                                                      const kernels::GraphBuildParams& params) {
  auto res = ThreadResources();
  Status why = res.status();
  if (res.ok()) {
    const kernels::Resources with_gpu{.num_threads = threads, .gpu = *res};
    auto built = kernels::GraphIndex::Build(with_gpu, metric, vectors, n, dim, params);
    if (built.ok()) {
      graph_builds_.fetch_add(1, std::memory_order_relaxed);
      return built;
    }
    why = built.status();
  }
  if (FirstOfItsKind(&logged_build_codes_, why)) {
    spdlog::warn("GPU graph build failed, built on the CPU (logged once per kind of error): {}", why.ToString());
  }
  return kernels::GraphIndex::Build({.num_threads = threads}, metric, vectors, n, dim, params);
}

bool GpuExecutor::FirstOfItsKind(uint32_t* logged, const Status& why) {
  const uint32_t bit = 1u << (static_cast<uint32_t>(why.code()) & 31u);
  std::lock_guard lock(mu_);
  const bool first = (*logged & bit) == 0;
  *logged |= bit;
  return first;
}

void GpuExecutor::NoteFallback(const Status& why) {
  fallbacks_.fetch_add(1, std::memory_order_relaxed);
  if (!FirstOfItsKind(&logged_codes_, why)) return;
  spdlog::warn("GPU search failed, served on the CPU (logged once per kind of error; quiver_gpu_fallbacks_total "
               "counts them all): {}",
               why.ToString());
}

GpuExecutor::Stats GpuExecutor::stats() const {
  Stats s;
  s.device_name = device_->name();
  s.searches = searches_.load(std::memory_order_relaxed);
  s.fallbacks = fallbacks_.load(std::memory_order_relaxed);
  s.graph_builds = graph_builds_.load(std::memory_order_relaxed);
  s.bytes_in_use = device_->bytes_in_use();
  s.budget_bytes = device_->budget_bytes();
  std::lock_guard lock(mu_);
  s.resident_segments = resident_.size();
  s.resident_bytes = resident_bytes_;
  return s;
}

}  // namespace quiver::engine
