// GPU IVF_FLAT search (kernels/gpu_search.h).
//
// 1. Coarse search: the nprobe nearest centroids per query, with the FLAT
//    kernels (L2 for L2, inner product for IP and cosine, as on the CPU).
// 2. List scan: one block of the select kernel per (query, probe). Thread j
//    of the block scores slot j of the list: lane j % 32 of its group of 32,
//    reading dimension d at group[d * 32 + lane], so a warp reads 32
//    consecutive floats per dimension (the interleaved layout exists for
//    this). Scores are exact (L2 as a sum of squared differences), keys carry
//    the row, tombstoned and padding slots never enter.
// 3. The nprobe x k candidates of each query are selected again, and decoded.
// Queries are processed in tiles so the candidates stay under 256 MiB.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/gpu/flat_detail.cuh"
#include "kernels/gpu_search.h"

namespace quiver::kernels::gpu {
namespace {

using detail::kPaddingRow;

struct IvfListKeys {
  const float* data;
  const uint32_t* slot_rows;
  const uint64_t* list_slots;
  const int64_t* probe_lists;  // (query, probe) -> list, -1 = none
  const float* queries;
  const uint64_t* deleted;
  int nprobe;
  int dim;
  bool l2;

  __device__ void Prepare(int, float*) {}
  __device__ int Length(int row, int) const {
    const int64_t list = probe_lists[row];
    return list < 0 ? 0 : static_cast<int>(list_slots[list + 1] - list_slots[list]);
  }
  __device__ uint64_t operator()(int row, int j) const {
    const uint64_t first = list_slots[probe_lists[row]];
    const uint32_t r = slot_rows[first + j];
    if (r == kPaddingRow) return kEmptyKey;
    if (deleted != nullptr && ((deleted[r >> 6] >> (r & 63u)) & 1ull)) return kEmptyKey;
    const float* q = queries + static_cast<size_t>(row / nprobe) * dim;
    const float* group = data + (first + (static_cast<uint64_t>(j) & ~uint64_t{31})) * dim;
    const int lane = j & 31;
    float acc = 0.0f;
    if (l2) {
      for (int d = 0; d < dim; ++d) {
        const float diff = q[d] - group[d * 32 + lane];
        acc += diff * diff;
      }
      return MakeKey(acc, r);
    }
    for (int d = 0; d < dim; ++d) acc += q[d] * group[d * 32 + lane];
    return MakeKey(-acc, r);
  }
};

}  // namespace

Result<DeviceIvfFlat> DeviceIvfFlat::Upload(cuda::GpuResources& res, const IvfFlatIndex& index, bool long_lived) {
  if (index.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("the GPU path addresses at most 2^31 - 1 rows per index");
  }
  QUIVER_CUDA_TRY(cudaSetDevice(res.device().impl().ordinal));
  const size_t dim = index.dim(), nlist = index.nlist();
  std::vector<uint64_t> list_slots(nlist + 1, 0);
  for (size_t l = 0; l < nlist; ++l) list_slots[l + 1] = list_slots[l] + index.list(l).rows.size();
  const size_t slots = list_slots[nlist];
  std::vector<float> data;
  data.reserve(slots * dim);
  std::vector<uint32_t> slot_rows;
  slot_rows.reserve(slots);
  for (size_t l = 0; l < nlist; ++l) {
    const auto& list = index.list(l);
    data.insert(data.end(), list.interleaved.begin(), list.interleaved.end());
    for (int64_t r : list.rows) slot_rows.push_back(r < 0 ? kPaddingRow : static_cast<uint32_t>(r));
  }
  std::vector<float> norms(nlist);
  SquaredNorms(index.centroids().data(), nlist, dim, norms.data());

  DeviceIvfFlat out;
  out.metric_ = index.metric();
  out.dim_ = dim;
  out.nlist_ = nlist;
  out.n_ = index.size();
  using detail::Upload;
  QUIVER_RETURN_IF_ERROR(Upload(res, index.centroids(), long_lived, "IVF centroids", &out.centroids_));
  QUIVER_RETURN_IF_ERROR(Upload(res, norms, long_lived, "IVF centroid norms", &out.centroid_norms_));
  QUIVER_RETURN_IF_ERROR(Upload(res, data, long_lived, "IVF lists", &out.data_));
  QUIVER_RETURN_IF_ERROR(Upload(res, slot_rows, long_lived, "IVF row ids", &out.slot_rows_));
  QUIVER_RETURN_IF_ERROR(Upload(res, list_slots, long_lived, "IVF list offsets", &out.list_slots_));
  // The host vectors above go away; other streams may read a long-lived copy.
  QUIVER_RETURN_IF_ERROR(res.Synchronize());
  return std::move(out);
}

Status IvfFlatSearch(cuda::GpuResources& res, const DeviceIvfFlat& index, const uint64_t* deleted,
                     const float* queries, size_t nq, size_t k, uint32_t nprobe, int64_t* rows, float* scores) {
  QUIVER_RETURN_IF_ERROR(detail::CheckK(k));
  if (nprobe == 0) return Status::InvalidArgument("nprobe must be at least 1");
  if (nq == 0) return Status::Ok();
  const bool l2 = index.metric() == Metric::kL2;
  if (index.nlist() == 0 || index.size() == 0) {
    detail::FillEmpty(index.metric(), nq * k, rows, scores);
    return Status::Ok();
  }
  const size_t probes = std::min<size_t>({nprobe, index.nlist(), kMaxK});
  const size_t dim = index.dim();
  QUIVER_CUDA_TRY(cudaSetDevice(res.device().impl().ordinal));

  // Cosine lists hold unit vectors: queries are normalised as on the CPU.
  detail::DeviceSearchInputs in;
  QUIVER_RETURN_IF_ERROR(
      detail::UploadSearchInputs(res, index.metric(), queries, nq, dim, deleted, index.size(), &in));
  cuda::DeviceBuffer<int64_t> probe_lists;
  cuda::DeviceBuffer<float> probe_scores;
  QUIVER_RETURN_IF_ERROR(detail::CoarseSearch(res, index.centroids(), index.centroid_norms(), index.nlist(), dim,
                                              index.metric(), in.queries.data(), nq, probes, &probe_lists,
                                              &probe_scores));

  QUIVER_ASSIGN_OR_RETURN(auto winners, cuda::DeviceBuffer<uint64_t>::Allocate(res, nq * k, "winners"));
  auto list_keys = [&](size_t q0) {
    return IvfListKeys{index.data(),
                       index.slot_rows(),
                       index.list_slots(),
                       probe_lists.data() + q0 * probes,
                       in.queries.data() + q0 * dim,
                       in.deleted.data(),
                       static_cast<int>(probes),
                       static_cast<int>(dim),
                       l2};
  };
  QUIVER_RETURN_IF_ERROR(detail::SelectPerProbeThenMerge(res, nq, probes, k, list_keys, 0, winners.data()));
  return detail::DownloadKeys(res, winners.data(), nq * k, !l2, rows, scores);
}

Status IvfFlatSearch(cuda::GpuResources& res, const IvfFlatIndex& index, const uint64_t* deleted,
                     const float* queries, size_t nq, size_t k, uint32_t nprobe, int64_t* rows, float* scores) {
  QUIVER_RETURN_IF_ERROR(detail::CheckK(k));
  if (nq == 0) return Status::Ok();
  QUIVER_ASSIGN_OR_RETURN(DeviceIvfFlat device_index, DeviceIvfFlat::Upload(res, index, /*long_lived=*/false));
  return IvfFlatSearch(res, device_index, deleted, queries, nq, k, nprobe, rows, scores);
}

}  // namespace quiver::kernels::gpu
