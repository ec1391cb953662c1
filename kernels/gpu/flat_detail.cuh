// Internals shared by the GPU kernels' translation units (kernels/gpu/*.cu):
// launching the select kernel, checking k, and the FLAT search over
// device-resident data that IVF's coarse search reuses.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "cuda/cuda_check.cuh"
#include "kernels/gpu/select_k.cuh"
#include "kernels/gpu_search.h"

namespace quiver::kernels::gpu::detail {

/// Row id of an IVF padding slot in the device copies (the CPU lists hold -1).
constexpr uint32_t kPaddingRow = 0xffffffffu;

/// Launches SelectKKernel<kBlock, kItems> with `scratch_bytes` of shared
/// memory for the key function after the buffer (opting in above 48 KiB).
template <int kBlock, int kItems, class KeyFn>
Status LaunchSelectWith(cudaStream_t stream, const KeyFn& keys, int rows, int len, int k, uint64_t* out,
                        size_t out_ld, size_t scratch_bytes) {
  const int cap = SelectBufferLength(k, kBlock, kItems);
  const size_t shared = cap * sizeof(uint64_t) + scratch_bytes;
  if (shared > 48 * 1024) {
    QUIVER_CUDA_TRY(cudaFuncSetAttribute(SelectKKernel<kBlock, kItems, KeyFn>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)));
  }
  SelectKKernel<kBlock, kItems, KeyFn><<<rows, kBlock, shared, stream>>>(keys, len, k, cap, out, out_ld);
  return cuda::CheckLaunch("SelectKKernel");
}

/// Launches the select kernel with the configuration for k: 128 threads x 4
/// items up to k = 128 (8 KiB of shared memory), 256 x 2 above (16 KiB at
/// k = 1,024); scratch_bytes more for the key function (KeyFn::Prepare).
template <class KeyFn>
Status LaunchSelect(cudaStream_t stream, const KeyFn& keys, int rows, int len, int k, uint64_t* out, size_t out_ld,
                    size_t scratch_bytes = 0) {
  if (rows == 0) return Status::Ok();
  if (k <= 128) return LaunchSelectWith<128, 4>(stream, keys, rows, len, k, out, out_ld, scratch_bytes);
  return LaunchSelectWith<256, 2>(stream, keys, rows, len, k, out, out_ld, scratch_bytes);
}

inline Status CheckK(size_t k) {
  if (k == 0) return Status::InvalidArgument("k must be at least 1");
  if (k > kMaxK) {
    return Status::InvalidArgument("the GPU selects at most " + std::to_string(kMaxK) + " results, asked for " +
                                   std::to_string(k));
  }
  return Status::Ok();
}

/// A FLAT base in device memory (deleted: device tombstone bitset or null).
struct DeviceBase {
  const float* vectors;
  const float* sq_norms;
  const uint64_t* deleted;
  size_t rows;
  size_t dim;
};

/// Turns selected keys into rows (-1 for empty slots) and values; with
/// larger_is_better the key held the negated value (IP, cosine, max-select).
/// Queued on `stream`.
Status DecodeKeys(cudaStream_t stream, const uint64_t* keys, size_t count, bool larger_is_better, int64_t* rows,
                  float* values);

/// Copies `count` selected keys (device) to res's page-locked staging, waits
/// for res's stream, and decodes them on the host as DecodeKeys does: one
/// small copy and no kernel, for searches whose results are few. `values`
/// may be null (rows only).
Status DownloadKeys(cuda::GpuResources& res, const uint64_t* keys, size_t count, bool larger_is_better,
                    int64_t* rows, float* values);

/// Host results for an empty base: row -1, the metric's worst score.
void FillEmpty(Metric metric, size_t count, int64_t* rows, float* scores);

/// A search's inputs on the device: the queries (unit vectors for cosine, as
/// the CPU normalises them) and the tombstone bitset (empty without one).
struct DeviceSearchInputs {
  cuda::DeviceBuffer<float> queries;
  cuda::DeviceBuffer<uint64_t> deleted;
};

/// Copies nq x dim queries (host) and the `deleted` bitset of `rows` rows
/// (host, may be null) to the device on res's stream. The queries go through
/// res's upload staging: the caller synchronises before it returns.
Status UploadSearchInputs(cuda::GpuResources& res, Metric metric, const float* queries, size_t nq, size_t dim,
                          const uint64_t* deleted, size_t rows, DeviceSearchInputs* out);

/// IVF coarse search: the `probes` best lists per device query (L2 for L2,
/// inner product for IP and cosine, as on the CPU), left in *lists and
/// *scores (nq x probes, device), queued on res's stream.
Status CoarseSearch(cuda::GpuResources& res, const float* centroids, const float* centroid_norms, size_t nlist,
                    size_t dim, Metric metric, const float* device_queries, size_t nq, size_t probes,
                    cuda::DeviceBuffer<int64_t>* lists, cuda::DeviceBuffer<float>* scores);

/// The IVF list scans' shape: for each query, the k best keys of every probed
/// list (one select block per (query, probe), keys from `list_keys(q0)`, a
/// key function for the tile of queries starting at q0 with
/// `scratch_bytes` of shared memory), then the k best of those, into
/// winners[query * k + i] (device, nq x k). Queries go in tiles whose
/// per-probe candidates fit in 256 MiB. Queued on res's stream.
template <class ListKeysFor>
Status SelectPerProbeThenMerge(cuda::GpuResources& res, size_t nq, size_t probes, size_t k,
                               const ListKeysFor& list_keys, size_t scratch_bytes, uint64_t* winners) {
  const size_t per_query = probes * k * sizeof(uint64_t);
  const size_t qt = std::clamp<size_t>((size_t{256} << 20) / per_query, 1, nq);
  if (qt * probes > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return Status::InvalidArgument("too many (query, probe) pairs in one tile");
  }
  QUIVER_ASSIGN_OR_RETURN(auto candidates, cuda::DeviceBuffer<uint64_t>::Allocate(res, qt * probes * k, "candidates"));
  cudaStream_t stream = res.impl().stream;
  const int ik = static_cast<int>(k);
  for (size_t q0 = 0; q0 < nq; q0 += qt) {
    const size_t qn = std::min(qt, nq - q0);
    // len is per list (the key function's Length); the argument is unused.
    QUIVER_RETURN_IF_ERROR(LaunchSelect(stream, list_keys(q0), static_cast<int>(qn * probes), 0, ik,
                                        candidates.data(), k, scratch_bytes));
    const StoredKeys merged{candidates.data(), probes * k};
    QUIVER_RETURN_IF_ERROR(
        LaunchSelect(stream, merged, static_cast<int>(qn), static_cast<int>(probes * k), ik, winners + q0 * k, k));
  }
  return Status::Ok();
}

/// Allocates `*buffer` for `host` and queues the copy: long_lived = false on
/// res's stream (for this thread's call), true through the device (a resident
/// copy any thread may read once the caller has synchronised).
template <class T>
Status Upload(cuda::GpuResources& res, const std::vector<T>& host, bool long_lived, const char* what,
              cuda::DeviceBuffer<T>* buffer) {
  auto allocated = long_lived ? cuda::DeviceBuffer<T>::AllocateLongLived(res.device(), host.size(), what)
                              : cuda::DeviceBuffer<T>::Allocate(res, host.size(), what);
  if (!allocated.ok()) return allocated.status();
  *buffer = std::move(allocated).value();
  return buffer->CopyFromHost(res, host.data(), host.size());
}

/// FLAT search with everything in device memory (queries, results too),
/// queued on res's stream; the caller synchronises. 1 <= k <= kMaxK,
/// base.rows >= 1.
Status SearchDevice(cuda::GpuResources& res, const DeviceBase& base, const float* queries, size_t nq,
                    const FlatSearchParams& params, int64_t* out_rows, float* out_scores);

}  // namespace quiver::kernels::gpu::detail
