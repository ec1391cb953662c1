// GPU kernels behind CUDA-free declarations (implemented in kernels/gpu/*.cu;
// in a build without CUDA they return UNAVAILABLE). Every call takes the
// calling thread's cuda::GpuResources first, runs on its stream and returns
// when the results are in host memory. A failed call (out of the memory
// budget, a CUDA error) returns its Status and leaves the outputs unspecified:
// the caller serves the request on the CPU.
//
// kernels::FlatSearch with Resources::gpu set calls gpu::FlatSearch, so most
// code never includes this header.
//
// Example:
//   QUIVER_ASSIGN_OR_RETURN(auto device, cuda::GpuDevice::Open({}));
//   QUIVER_ASSIGN_OR_RETURN(auto gpu, device->NewResources());
//   kernels::Resources res;
//   res.gpu = gpu.get();
//   Status st = kernels::FlatSearch(res, view, queries, nq, {Metric::kL2, 10}, rows, scores);
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/status.h"
#include "cuda/gpu_resources.h"
#include "kernels/flat_search.h"
#include "kernels/graph.h"
#include "kernels/ivf_flat.h"
#include "kernels/ivf_pq.h"

namespace quiver::kernels::gpu {

/// Largest k the GPU select handles (its shared-memory buffer is sized for
/// it); a larger k is INVALID_ARGUMENT here and served on the CPU.
constexpr size_t kMaxK = 1024;

/// A FLAT base (vectors and squared norms) copied to the device. Tombstones
/// are not part of it: they change after the upload and come with each search.
/// Move-only.
class DeviceFlatBase {
 public:
  DeviceFlatBase() = default;
  /// Copies `base` (host memory; base.deleted is ignored) to the device and
  /// waits for the copy. long_lived = false: stream-ordered on `res`, for use
  /// within the calling thread before `res` goes away; true: allocated through
  /// the device, usable from any thread's resources (a resident segment).
  static Result<DeviceFlatBase> Upload(cuda::GpuResources& res, const BaseView& base, bool long_lived);

  size_t rows() const { return rows_; }
  size_t dim() const { return dim_; }
  bool has_norms() const { return norms_.size() > 0; }
  /// Device memory held.
  size_t bytes() const { return (vectors_.size() + norms_.size()) * sizeof(float); }
  const float* vectors() const { return vectors_.data(); }
  const float* sq_norms() const { return norms_.data(); }

 private:
  cuda::DeviceBuffer<float> vectors_;
  cuda::DeviceBuffer<float> norms_;
  size_t rows_ = 0;
  size_t dim_ = 0;
};

/// FlatSearch (kernels/flat_search.h, same contract and tie order) over a
/// device-resident base; `deleted` is the host tombstone bitset (may be null)
/// and is copied with the queries.
Status FlatSearch(cuda::GpuResources& res, const DeviceFlatBase& base, const uint64_t* deleted, const float* queries,
                  size_t nq, const FlatSearchParams& params, int64_t* rows, float* scores);

/// FlatSearch (kernels/flat_search.h, same contract and tie order) on the GPU:
/// the base (host memory) is copied to the device for this call. Batches are
/// cut into query tiles x base tiles; each tile is one cuBLAS SGEMM (FP32)
/// whose output is folded into k candidates per query by the select kernel
/// (norms and tombstones applied there), so the full distance matrix is never
/// in memory. The winners' scores are recomputed exactly and re-sorted.
Status FlatSearch(cuda::GpuResources& res, const BaseView& base, const float* queries, size_t nq,
                  const FlatSearchParams& params, int64_t* rows, float* scores);

/// An IVF_FLAT index copied to the device unchanged: centroids, the lists'
/// interleaved groups of 32 (kernels/ivf_flat.h) one after another, a row id
/// per slot. Move-only.
class DeviceIvfFlat {
 public:
  DeviceIvfFlat() = default;
  /// Copies `index` to the device and waits for the copy; long_lived as in
  /// DeviceFlatBase::Upload.
  static Result<DeviceIvfFlat> Upload(cuda::GpuResources& res, const IvfFlatIndex& index, bool long_lived);

  Metric metric() const { return metric_; }
  size_t dim() const { return dim_; }
  size_t nlist() const { return nlist_; }
  size_t size() const { return n_; }
  /// Device memory held.
  size_t bytes() const {
    return (centroids_.size() + centroid_norms_.size() + data_.size()) * sizeof(float) +
           slot_rows_.size() * sizeof(uint32_t) + list_slots_.size() * sizeof(uint64_t);
  }

  // ---- for kernels/gpu ----
  const float* centroids() const { return centroids_.data(); }
  const float* centroid_norms() const { return centroid_norms_.data(); }
  const float* data() const { return data_.data(); }
  const uint32_t* slot_rows() const { return slot_rows_.data(); }  // 0xffffffff: padding
  const uint64_t* list_slots() const { return list_slots_.data(); }  // nlist + 1 slot offsets

 private:
  cuda::DeviceBuffer<float> centroids_;       // nlist x dim
  cuda::DeviceBuffer<float> centroid_norms_;  // nlist
  cuda::DeviceBuffer<float> data_;            // slots x dim, interleaved per group of 32
  cuda::DeviceBuffer<uint32_t> slot_rows_;
  cuda::DeviceBuffer<uint64_t> list_slots_;
  Metric metric_ = Metric::kL2;
  size_t dim_ = 0;
  size_t nlist_ = 0;
  size_t n_ = 0;
};

/// IvfFlatIndex::Search (same contract: nprobe nearest lists, exact scores,
/// tombstones skipped inside the scan, ties to the lower row) on the GPU:
/// coarse search with the FLAT kernels, then one thread block per (query,
/// probe) scans its list's interleaved groups (a thread per vector, coalesced)
/// into k candidates, merged per query. `deleted` is host memory.
Status IvfFlatSearch(cuda::GpuResources& res, const DeviceIvfFlat& index, const uint64_t* deleted,
                     const float* queries, size_t nq, size_t k, uint32_t nprobe, int64_t* rows, float* scores);

/// The same with the index copied to the device for this call.
Status IvfFlatSearch(cuda::GpuResources& res, const IvfFlatIndex& index, const uint64_t* deleted,
                     const float* queries, size_t nq, size_t k, uint32_t nprobe, int64_t* rows, float* scores);

/// An IVF_PQ index copied to the device unchanged: centroids, codebooks,
/// the lists' interleaved code groups (kernels/ivf_pq.h) one after another, a
/// row id per slot and, for IP and cosine, each slot's correction. Move-only.
class DeviceIvfPq {
 public:
  DeviceIvfPq() = default;
  /// Copies `index` to the device and waits; long_lived as in
  /// DeviceFlatBase::Upload.
  static Result<DeviceIvfPq> Upload(cuda::GpuResources& res, const IvfPqIndex& index, bool long_lived);

  Metric metric() const { return metric_; }
  size_t dim() const { return dim_; }
  size_t nlist() const { return nlist_; }
  size_t size() const { return n_; }
  uint32_t pq_dim() const { return pq_dim_; }
  uint32_t pq_bits() const { return pq_bits_; }
  size_t dsub() const { return dsub_; }
  /// Device memory held.
  size_t bytes() const {
    return (centroids_.size() + centroid_norms_.size() + codebooks_.size() + corrections_.size()) * sizeof(float) +
           codes_.size() + slot_rows_.size() * sizeof(uint32_t) + list_slots_.size() * sizeof(uint64_t);
  }

  // ---- for kernels/gpu ----
  const float* centroids() const { return centroids_.data(); }
  const float* centroid_norms() const { return centroid_norms_.data(); }
  const float* codebooks() const { return codebooks_.data(); }
  const uint8_t* codes() const { return codes_.data(); }
  const float* corrections() const { return corrections_.data(); }  // null for L2
  const uint32_t* slot_rows() const { return slot_rows_.data(); }    // 0xffffffff: padding
  const uint64_t* list_slots() const { return list_slots_.data(); }  // nlist + 1 slot offsets

 private:
  cuda::DeviceBuffer<float> centroids_;       // nlist x dim
  cuda::DeviceBuffer<float> centroid_norms_;  // nlist
  cuda::DeviceBuffer<float> codebooks_;       // pq_dim x 2^bits x dsub
  cuda::DeviceBuffer<uint8_t> codes_;         // per group of 32 slots: pq_dim x (32 or 16) bytes
  cuda::DeviceBuffer<float> corrections_;     // per slot (IP, cosine)
  cuda::DeviceBuffer<uint32_t> slot_rows_;
  cuda::DeviceBuffer<uint64_t> list_slots_;
  Metric metric_ = Metric::kL2;
  size_t dim_ = 0;
  size_t nlist_ = 0;
  size_t n_ = 0;
  uint32_t pq_dim_ = 0;
  uint32_t pq_bits_ = 8;
  size_t dsub_ = 0;
};

/// IvfPqIndex::Search on the GPU (same contract): coarse search with the FLAT
/// kernels; one block per (query, probe) builds that pair's lookup table in
/// shared memory (pq_dim x 2^bits floats: 64 KiB at pq_dim 64, 8 bits) and
/// scans its list's codes (a thread per slot, coalesced byte reads) into the
/// k * refine_factor best candidates, merged per query; the candidates are
/// re-scored exactly on the host from `base` (the segment's vectors, host
/// memory; base.deleted = this call's excluded rows). Code scores are summed
/// in another order than the CPU's, so a candidate at the cut may differ;
/// after the exact re-rank results agree up to that. k * refine_factor above
/// kMaxK, or a table beyond the device's shared memory, is INVALID_ARGUMENT.
Status IvfPqSearch(cuda::GpuResources& res, const DeviceIvfPq& index, const BaseView& base, const float* queries,
                   size_t nq, size_t k, uint32_t nprobe, uint32_t refine_factor, int64_t* rows, float* scores);

/// The same with the index copied to the device for this call.
Status IvfPqSearch(cuda::GpuResources& res, const IvfPqIndex& index, const BaseView& base, const float* queries,
                   size_t nq, size_t k, uint32_t nprobe, uint32_t refine_factor, int64_t* rows, float* scores);

/// Largest beam (itopk) and expansion (search_width x degree) the GPU GRAPH
/// search holds in shared memory; larger requests are INVALID_ARGUMENT here
/// and served on the CPU.
constexpr size_t kMaxGraphItopk = 1024;
constexpr size_t kMaxGraphExpansion = 1024;

/// Where one upper layer of a GRAPH index lies in DeviceGraph's upper
/// buffer (offsets in uint32 elements): its nodes' rows, their indices in
/// the layer below, its extra seeds and its size x degree neighbour matrix.
struct GraphUpperLayer {
  uint32_t size = 0;
  uint32_t extra_count = 0;
  uint64_t rows = 0, down = 0, extra = 0, graph = 0;
};

/// Upper layers the GPU descends at most (a layer holds 1/16 of the one
/// below; 8 cover 2^31 rows); a deeper index is INVALID_ARGUMENT at upload.
constexpr size_t kMaxGraphUpperLayers = 8;

/// A GRAPH index as the GPU search reads it: layer 0's neighbour matrix
/// unchanged (n x degree, kNoEdge-padded), the fp32 vectors it links (unit
/// vectors for cosine), the upper layers (as the CPU's: a search scores the
/// top layer's nodes, descends with a beam of 8 and enters layer 0 where that
/// ends) and layer 0's seeds (its extra seeds; where there is no upper layer,
/// every node of the top layer too). The GPU traverses with exact fp32
/// distances, so it needs no 8-bit codes. Move-only.
class DeviceGraph {
 public:
  DeviceGraph() = default;
  /// Copies `index` and its build vectors `base` (host memory; base.deleted
  /// is ignored) to the device and waits; long_lived as in
  /// DeviceFlatBase::Upload.
  static Result<DeviceGraph> Upload(cuda::GpuResources& res, const GraphIndex& index, const BaseView& base,
                                    bool long_lived);

  Metric metric() const { return metric_; }
  size_t dim() const { return dim_; }
  size_t size() const { return n_; }
  uint32_t degree() const { return degree_; }
  size_t num_seeds() const { return seeds_.size(); }
  /// Device memory held.
  size_t bytes() const {
    return vectors_.size() * sizeof(float) + (graph_.size() + seeds_.size() + upper_.size()) * sizeof(uint32_t);
  }

  // ---- for kernels/gpu ----
  const float* vectors() const { return vectors_.data(); }
  const uint32_t* graph() const { return graph_.data(); }
  const uint32_t* seeds() const { return seeds_.data(); }
  const uint32_t* upper() const { return upper_.data(); }
  /// Layers 1.. (the top last).
  const std::vector<GraphUpperLayer>& upper_layers() const { return upper_layers_; }

 private:
  cuda::DeviceBuffer<float> vectors_;   // n x dim
  cuda::DeviceBuffer<uint32_t> graph_;  // n x degree
  cuda::DeviceBuffer<uint32_t> seeds_;
  cuda::DeviceBuffer<uint32_t> upper_;  // every upper layer's arrays, as upper_layers_ says
  std::vector<GraphUpperLayer> upper_layers_;
  Metric metric_ = Metric::kL2;
  size_t dim_ = 0;
  size_t n_ = 0;
  uint32_t degree_ = 0;
};

/// GraphIndex::Search on the GPU (same contract: k best of the nodes the
/// search scores, tombstoned rows traversed but never returned, ties to the
/// lower row; scores exact fp32). A thread block keeps a beam of max(itopk, k)
/// nodes, a visited hash and the best returnable rows in shared memory; it
/// descends the upper layers like the CPU, then each step expands the
/// search_width best unexpanded nodes, scores their neighbours (a team of
/// threads per node, all at once), and merges. One block per query for large
/// batches; with fewer queries than SMs, up to 8 per query
/// (GpuOptions::graph_blocks_per_query), each entering layer 0 from its share
/// of the descent's nodes and seeds, sharing a visited bit per node so they
/// explore apart, merged at the end; which block reaches a node first varies,
/// so such small batches may differ slightly from call to call. The beam may
/// differ from the CPU's, which traverses 8-bit codes: results agree up to
/// recall, not id for id. `deleted` is host memory.
Status GraphSearch(cuda::GpuResources& res, const DeviceGraph& graph, const uint64_t* deleted, const float* queries,
                   size_t nq, size_t k, uint32_t itopk, uint32_t search_width, int64_t* rows, float* scores);

/// The same with the graph and vectors copied to the device for this call.
Status GraphSearch(cuda::GpuResources& res, const GraphIndex& index, const BaseView& base, const float* queries,
                   size_t nq, size_t k, uint32_t itopk, uint32_t search_width, int64_t* rows, float* scores);

/// The most rows KnnGraph takes: it compares every row with every other
/// (n^2 dim multiply-adds: ~6 s for a million 128-d rows on an H100), so
/// larger layers build their kNN graph on the CPU, cluster by cluster.
constexpr size_t kMaxGpuKnnGraphRows = size_t{4} << 20;

/// The kNN-graph stage of GraphIndex::Build on the GPU: for each of the n
/// rows of `data` (host memory, row-major, n x dim) its `knn` nearest other
/// rows by `metric` (L2 or inner product), best first, ties to the lower
/// row, into graph[row * knn, (row + 1) * knn), kNoEdge-padded when n <= knn.
/// Exact: the FLAT search of every row against all of them (the CPU stage
/// searches each row's neighbouring clusters only). knn + 1 <= kMaxK,
/// n <= kMaxGpuKnnGraphRows.
Status KnnGraph(cuda::GpuResources& res, Metric metric, const float* data, size_t n, size_t dim, size_t knn,
                uint32_t* graph);

/// The rank-based pruning stage of GraphIndex::Build on the GPU (CAGRA's;
/// the same result as the CPU's): from each node's kNN list (n x knn, host
/// memory, best first, kNoEdge-padded at the end, no node twice), the
/// `degree` edges with the fewest detours, ties by rank, into pruned (n x
/// degree, host, kNoEdge-padded). An edge a->c at rank j has a detour
/// through the node b at rank i < j when c is in b's own list at a rank
/// below j. knn <= kMaxK.
Status PruneByDetours(cuda::GpuResources& res, const uint32_t* knn_graph, size_t n, size_t knn, size_t degree,
                      uint32_t* pruned);

/// For each of `rows` rows of `len` floats (row-major, host memory), the k
/// smallest (or largest with select_max) values and their column numbers,
/// best first, exact ties by lower column; slots past len hold column -1 and
/// +inf (-inf with select_max). NaN values are never selected. 1 <= k <= kMaxK.
Status SelectK(cuda::GpuResources& res, const float* values, size_t rows, size_t len, size_t k, bool select_max,
               int64_t* out_columns, float* out_values);

}  // namespace quiver::kernels::gpu
