// GPU IVF_PQ search (kernels/gpu_search.h).
//
// 1. Coarse search: the nprobe nearest centroids per query, with the FLAT
//    kernels (L2 for L2, inner product for IP and cosine, as on the CPU).
// 2. List scan: one block of the select kernel per (query, probe). Before the
//    scan the block fills its lookup table in shared memory (PqListKeys::
//    Prepare): entry (m, c) = |(q - centre)_m - codeword_mc|^2 for L2, or
//    -<q_m, codeword_mc> for IP and cosine, over the zero-padded query, as
//    the CPU's CodewordTable. Thread j then scores slot j of the list: lane
//    j % 32 of its group, reading code m at group[m * 32 + lane] (8 bits) or
//    the lane's nibble of group[m * 16 + lane % 16] (4 bits), so a warp reads
//    consecutive bytes; the key adds the table entries (IP and cosine: plus
//    -<q, centre> from the coarse search, minus the slot's correction).
// 3. The nprobe x (k * refine_factor) candidates of each query are selected
//    again; their rows go back to the host, which re-scores them exactly from
//    the segment's vectors (RerankExactBatch: the CPU's own, on the host's
//    threads) and keeps k.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/rerank.h"
#include "kernels/gpu/flat_detail.cuh"
#include "kernels/gpu_search.h"

namespace quiver::kernels::gpu {
namespace {

using detail::kPaddingRow;

struct PqListKeys {
  const uint8_t* codes;
  const uint32_t* slot_rows;
  const float* corrections;
  const uint64_t* list_slots;
  const int64_t* probe_lists;   // (query, probe) -> list, -1 = none
  const float* probe_scores;    // (query, probe) -> coarse score (<q, centre> for IP and cosine)
  const float* queries;
  const float* centroids;
  const float* codebooks;
  const uint64_t* deleted;
  int nprobe;
  int dim;
  int pq_dim;
  int dsub;
  int ksub;
  bool four_bit;
  bool l2;
  const float* lut;  // shared memory, set by Prepare
  float base_key;

  __device__ void Prepare(int row, float* scratch) {
    lut = scratch;
    base_key = 0.0f;
    const int64_t list = probe_lists[row];
    if (list < 0) return;
    if (!l2) base_key = -probe_scores[row];
    const float* q = queries + static_cast<size_t>(row / nprobe) * dim;
    const float* c = centroids + static_cast<size_t>(list) * dim;
    for (int e = threadIdx.x; e < pq_dim * ksub; e += blockDim.x) {
      const int m = e / ksub;
      const float* word = codebooks + static_cast<size_t>(e) * dsub;
      float acc = 0.0f;
      for (int j = 0; j < dsub; ++j) {
        const int d = m * dsub + j;
        if (l2) {
          const float diff = (d < dim ? q[d] - c[d] : 0.0f) - word[j];
          acc += diff * diff;
        } else if (d < dim) {
          acc -= q[d] * word[j];
        }
      }
      scratch[e] = acc;
    }
  }
  __device__ int Length(int row, int) const {
    const int64_t list = probe_lists[row];
    return list < 0 ? 0 : static_cast<int>(list_slots[list + 1] - list_slots[list]);
  }
  __device__ uint64_t operator()(int row, int j) const {
    // Lists are whole groups of 32, so a slot's group is slot / 32 globally.
    const uint64_t slot = list_slots[probe_lists[row]] + static_cast<uint64_t>(j);
    const uint32_t r = slot_rows[slot];
    if (r == kPaddingRow) return kEmptyKey;
    if (deleted != nullptr && ((deleted[r >> 6] >> (r & 63u)) & 1ull)) return kEmptyKey;
    const int lane = static_cast<int>(slot & 31u);
    const int group_stride = four_bit ? 16 : 32;
    const uint8_t* group = codes + (slot >> 5) * static_cast<uint64_t>(pq_dim) * group_stride;
    float acc = 0.0f;
    if (four_bit) {
      const int shift = lane < 16 ? 0 : 4;
      for (int m = 0; m < pq_dim; ++m) acc += lut[m * ksub + ((group[m * 16 + (lane & 15)] >> shift) & 15)];
    } else {
      for (int m = 0; m < pq_dim; ++m) acc += lut[m * ksub + group[m * 32 + lane]];
    }
    const float key = l2 ? acc : base_key + acc - corrections[slot];
    return MakeKey(key, r);
  }
};

Status CheckPqArguments(size_t k, uint32_t nprobe, uint32_t refine_factor) {
  QUIVER_RETURN_IF_ERROR(detail::CheckK(k));
  if (nprobe == 0) return Status::InvalidArgument("nprobe must be at least 1");
  if (refine_factor == 0) return Status::InvalidArgument("refine_factor must be at least 1");
  if (k * refine_factor > kMaxK) {
    return Status::InvalidArgument("the GPU selects at most " + std::to_string(kMaxK) + " IVF_PQ candidates, asked for " +
                                   std::to_string(k) + " x refine_factor " + std::to_string(refine_factor));
  }
  return Status::Ok();
}

}  // namespace

Result<DeviceIvfPq> DeviceIvfPq::Upload(cuda::GpuResources& res, const IvfPqIndex& index, bool long_lived) {
  if (index.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("the GPU path addresses at most 2^31 - 1 rows per index");
  }
  QUIVER_CUDA_TRY(cudaSetDevice(res.device().impl().ordinal));
  const size_t dim = index.dim(), nlist = index.nlist();
  const bool l2 = index.metric() == Metric::kL2;
  std::vector<uint64_t> list_slots(nlist + 1, 0);
  for (size_t l = 0; l < nlist; ++l) list_slots[l + 1] = list_slots[l] + index.list(l).rows.size();
  const size_t slots = list_slots[nlist];
  std::vector<uint8_t> codes;
  std::vector<uint32_t> slot_rows;
  std::vector<float> corrections;
  slot_rows.reserve(slots);
  for (size_t l = 0; l < nlist; ++l) {
    const auto& list = index.list(l);
    if (list.rows.size() % kIvfGroupSize != 0) return Status::Internal("IVF_PQ list is not whole groups of 32");
    codes.insert(codes.end(), list.codes.begin(), list.codes.end());
    for (int64_t r : list.rows) slot_rows.push_back(r < 0 ? kPaddingRow : static_cast<uint32_t>(r));
    if (!l2) corrections.insert(corrections.end(), list.corrections.begin(), list.corrections.end());
  }
  if (!l2 && corrections.size() != slots) return Status::Internal("IVF_PQ corrections do not cover every slot");
  std::vector<float> norms(nlist);
  SquaredNorms(index.centroids().data(), nlist, dim, norms.data());

  DeviceIvfPq out;
  out.metric_ = index.metric();
  out.dim_ = dim;
  out.nlist_ = nlist;
  out.n_ = index.size();
  out.pq_dim_ = index.pq_dim();
  out.pq_bits_ = index.pq_bits();
  out.dsub_ = index.dsub();
  using detail::Upload;
  QUIVER_RETURN_IF_ERROR(Upload(res, index.centroids(), long_lived, "IVF_PQ centroids", &out.centroids_));
  QUIVER_RETURN_IF_ERROR(Upload(res, norms, long_lived, "IVF_PQ centroid norms", &out.centroid_norms_));
  QUIVER_RETURN_IF_ERROR(Upload(res, index.codebooks(), long_lived, "IVF_PQ codebooks", &out.codebooks_));
  QUIVER_RETURN_IF_ERROR(Upload(res, codes, long_lived, "IVF_PQ codes", &out.codes_));
  QUIVER_RETURN_IF_ERROR(Upload(res, slot_rows, long_lived, "IVF_PQ row ids", &out.slot_rows_));
  QUIVER_RETURN_IF_ERROR(Upload(res, list_slots, long_lived, "IVF_PQ list offsets", &out.list_slots_));
  if (!l2) QUIVER_RETURN_IF_ERROR(Upload(res, corrections, long_lived, "IVF_PQ corrections", &out.corrections_));
  // The host vectors above go away; other streams may read a long-lived copy.
  QUIVER_RETURN_IF_ERROR(res.Synchronize());
  return std::move(out);
}

Status IvfPqSearch(cuda::GpuResources& res, const DeviceIvfPq& index, const BaseView& base, const float* queries,
                   size_t nq, size_t k, uint32_t nprobe, uint32_t refine_factor, int64_t* rows, float* scores) {
  QUIVER_RETURN_IF_ERROR(CheckPqArguments(k, nprobe, refine_factor));
  if (base.rows != index.size() || base.dim != index.dim() || base.vectors == nullptr ||
      (index.metric() != Metric::kInnerProduct && base.sq_norms == nullptr)) {
    return Status::InvalidArgument("IVF_PQ search needs the index's own vectors (and norms for L2 and cosine)");
  }
  if (nq == 0) return Status::Ok();
  const bool l2 = index.metric() == Metric::kL2;
  if (index.nlist() == 0 || index.size() == 0) {
    detail::FillEmpty(index.metric(), nq * k, rows, scores);
    return Status::Ok();
  }
  const size_t probes = std::min<size_t>({nprobe, index.nlist(), kMaxK});
  const size_t dim = index.dim();
  const size_t candidates = std::min(index.size(), k * refine_factor);
  const size_t ksub = size_t{1} << index.pq_bits();
  const size_t table_bytes = index.pq_dim() * ksub * sizeof(float);
  const int ordinal = res.device().impl().ordinal;
  QUIVER_CUDA_TRY(cudaSetDevice(ordinal));
  int shared_limit = 0;
  QUIVER_CUDA_TRY(cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, ordinal));
  const size_t select_bytes =
      static_cast<size_t>(candidates <= 128 ? SelectBufferLength(static_cast<int>(candidates), 128, 4)
                                            : SelectBufferLength(static_cast<int>(candidates), 256, 2)) *
          sizeof(uint64_t) +
      sizeof(int) + sizeof(uint64_t);
  if (table_bytes + select_bytes > static_cast<size_t>(shared_limit)) {
    return Status::InvalidArgument("the IVF_PQ lookup table (pq_dim " + std::to_string(index.pq_dim()) + ", " +
                                   std::to_string(index.pq_bits()) + " bits: " + std::to_string(table_bytes) +
                                   " bytes) does not fit the device's shared memory (" + std::to_string(shared_limit) +
                                   " bytes per block)");
  }

  detail::DeviceSearchInputs in;
  QUIVER_RETURN_IF_ERROR(
      detail::UploadSearchInputs(res, index.metric(), queries, nq, dim, base.deleted, index.size(), &in));
  cuda::DeviceBuffer<int64_t> probe_lists;
  cuda::DeviceBuffer<float> probe_scores;
  QUIVER_RETURN_IF_ERROR(detail::CoarseSearch(res, index.centroids(), index.centroid_norms(), index.nlist(), dim,
                                              index.metric(), in.queries.data(), nq, probes, &probe_lists,
                                              &probe_scores));

  QUIVER_ASSIGN_OR_RETURN(auto winners, cuda::DeviceBuffer<uint64_t>::Allocate(res, nq * candidates, "winners"));
  auto list_keys = [&](size_t q0) {
    PqListKeys keys{};
    keys.codes = index.codes();
    keys.slot_rows = index.slot_rows();
    keys.corrections = index.corrections();
    keys.list_slots = index.list_slots();
    keys.probe_lists = probe_lists.data() + q0 * probes;
    keys.probe_scores = probe_scores.data() + q0 * probes;
    keys.queries = in.queries.data() + q0 * dim;
    keys.centroids = index.centroids();
    keys.codebooks = index.codebooks();
    keys.deleted = in.deleted.data();
    keys.nprobe = static_cast<int>(probes);
    keys.dim = static_cast<int>(dim);
    keys.pq_dim = static_cast<int>(index.pq_dim());
    keys.dsub = static_cast<int>(index.dsub());
    keys.ksub = static_cast<int>(ksub);
    keys.four_bit = index.pq_bits() == 4;
    keys.l2 = l2;
    return keys;
  };
  QUIVER_RETURN_IF_ERROR(
      detail::SelectPerProbeThenMerge(res, nq, probes, candidates, list_keys, table_bytes, winners.data()));
  const size_t count = nq * candidates;
  std::vector<int64_t> cand(count);  // rows only: the re-rank replaces the PQ estimates
  QUIVER_RETURN_IF_ERROR(detail::DownloadKeys(res, winners.data(), count, false, cand.data(), nullptr));

  // Exact re-rank on the host, from the segment's own vectors; one thread
  // per 64 queries at most (a team costs more than a few queries' re-rank).
  // On one thread it held a 10,000-query call to 0.5x the CPU path's QPS at
  // nprobe 1 (H100 host, 16 cores).
  const int threads = static_cast<int>(std::max<size_t>(1, nq / 64));
  RerankExactBatch(index.metric(), base, queries, nq, cand.data(), candidates, k, threads, rows, scores);
  return Status::Ok();
}

Status IvfPqSearch(cuda::GpuResources& res, const IvfPqIndex& index, const BaseView& base, const float* queries,
                   size_t nq, size_t k, uint32_t nprobe, uint32_t refine_factor, int64_t* rows, float* scores) {
  QUIVER_RETURN_IF_ERROR(CheckPqArguments(k, nprobe, refine_factor));
  if (nq == 0) return Status::Ok();
  QUIVER_ASSIGN_OR_RETURN(DeviceIvfPq device_index, DeviceIvfPq::Upload(res, index, /*long_lived=*/false));
  return IvfPqSearch(res, device_index, base, queries, nq, k, nprobe, refine_factor, rows, scores);
}

}  // namespace quiver::kernels::gpu
