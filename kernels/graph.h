// GRAPH: a proximity graph with a fixed out-degree, built as in CAGRA
// (Ootomo et al., ICDE 2024) and searched best-first.
//
// Build:
//   1. kNN graph of `intermediate_degree` neighbours per node: k-means cuts
//      the vectors into clusters of about 1,000; each cluster's members are
//      matched exactly (sgemm) against the members of its `knn_probes`
//      nearest clusters. With GPU resources (layers of up to 4M nodes) the
//      GPU matches every node against every other instead: an exact kNN
//      graph (gpu::KnnGraph).
//   2. Rank-based pruning: an edge A->C is "detourable" through B when A->B
//      and B->C both rank before A->C; each node keeps the `degree` edges
//      with the fewest detours (ties by rank). On the GPU with GPU
//      resources (gpu::PruneByDetours, the same result).
//   3. Reverse edges: the first degree/2 pruned edges are kept, the rest of
//      the list is filled with reverse edges (rank order), then with the
//      remaining pruned edges.
//   4. Upper layers (as in HNSW): 1 in 16 of the layer below, with its own
//      graph built the same way, until a layer has at most 256 nodes. The
//      sample is spread, one node per neighbourhood first, so every region
//      of the data has nodes above. A search scores all of the top layer's
//      nodes, descends the layers with a beam of a quarter of itopk (4 to
//      32; 8 on the GPU), and starts layer 0 near the query. Every node is
//      made reachable from the nodes of the layer above.
//
// Storage (shared with the CUDA search kernel, which reads it unchanged):
// neighbours as a row-major n x degree uint32 matrix, a list ending early is
// padded with kNoEdge; plus an 8-bit copy of the vectors (per-dimension
// offset and scale) that the traversal reads: a quarter of the bytes of fp32,
// so four times as many nodes fit in cache. The final candidates are
// re-ranked exactly against the segment's fp32 vectors.
//
// Search: best-first beam search from the entry points with a beam of
// `itopk` candidates and a visited set; tombstoned / filtered rows are
// traversed (they still connect the graph) but never returned.
//
// Metrics: kL2 on squared distances; kInnerProduct on dot products;
// kCosine on unit vectors (the index normalises; base vectors need not be).
//
// Example:
//   auto index = GraphIndex::Build(res, Metric::kL2, data, n, dim, {.degree = 32});
//   BaseView base{data, sq_norms, n, dim, /*deleted=*/nullptr};
//   (*index)->Search(res, base, queries, nq, /*k=*/10, {.itopk = 64}, rows, scores);
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/huge_pages.h"
#include "common/status.h"
#include "kernels/flat_search.h"
#include "kernels/vector_index.h"

namespace quiver::kernels {

/// Padding after the last edge of a list shorter than the degree.
inline constexpr uint32_t kNoEdge = 0xFFFFFFFFu;

struct GraphBuildParams {
  /// Out-degree of every node (fewer only when the segment has fewer other
  /// points), 4..256. Default: 32.
  uint32_t degree = 32;
  /// Neighbours per node in the kNN graph that pruning starts from;
  /// 0 = 2 * degree. At least degree, at most 512. Default: 0.
  uint32_t intermediate_degree = 0;
  /// kNN build: clusters whose members each cluster is matched against
  /// (itself included), >= 1. More is slower and closer to the exact kNN
  /// graph: on 1M clustered 128-d vectors, 4 instead of 8 built in 0.55x the
  /// time but recall stopped at 0.983 instead of 0.993 (measured before
  /// the kNN build searched all probed clusters at once). Default: 8.
  uint32_t knn_probes = 8;
  /// Seed of the k-means sample and initialisation. Default: 1234.
  uint64_t seed = 1234;

  Status Validate() const;
};

class GraphIndex final : public VectorIndex {
 public:
  /// Builds the graph on res.num_threads cores (0 = all), with the kNN
  /// graphs and layer 0's pruning on the GPU when res.gpu is set (steps 1
  /// and 2 above).
  static Result<std::unique_ptr<GraphIndex>> Build(const Resources& res, Metric metric, const float* vectors, size_t n,
                                                   size_t dim, const GraphBuildParams& params);

  /// VectorIndex::Search: base.vectors must be the build vectors (with
  /// squared norms for kL2 and kCosine). Reads params.itopk and
  /// params.search_width.
  Status Search(const Resources& res, const BaseView& base, const float* queries, size_t nq, size_t k,
                const IndexSearchParams& params, int64_t* rows, float* scores) const override;

  /// Magic "QVGRAPH1", format version, metric, sizes, entry points, the
  /// 8-bit quantiser, the neighbour matrix, the codes, CRC-32. Layout in
  /// docs/storage.md.
  std::string Serialize() const override;

  /// Validates before trusting: magic, version, metric, sizes against the
  /// byte count (before allocating), every edge and entry point in range, no
  /// self loops, padding only at the end of a list, checksum. DATA_LOSS
  /// naming `what` on any mismatch.
  static Result<std::unique_ptr<GraphIndex>> Deserialize(std::string_view bytes, const std::string& what);

  const char* kind() const override { return "GRAPH"; }
  Metric metric() const override { return metric_; }
  size_t dim() const override { return dim_; }
  size_t size() const override { return n_; }
  size_t MemoryBytes() const override;

  uint32_t degree() const { return degree_; }
  /// The `degree` neighbours of `node` in layer 0, kNoEdge-padded.
  const uint32_t* neighbors(size_t node) const { return layers_[0].graph.data() + node * degree_; }
  /// The nodes every search starts from: all of the top layer.
  const std::vector<uint32_t>& entry_points() const { return entries_; }

  /// Layer 0 holds every row; each layer above holds a spread sample of the
  /// one below (1 in 16) with its own graph, down to at most 256 nodes.
  struct Layer {
    std::vector<uint32_t> rows;   // row of each node; empty in layer 0 (node = row)
    std::vector<uint32_t> down;   // each node's index in the layer below; empty in layer 0
    HugePageVector<uint32_t> graph;  // size x degree, indices within this layer, kNoEdge-padded
    /// Nodes no path from the layer above reaches (normally none): searches
    /// of this layer start from them too.
    std::vector<uint32_t> extra_seeds;
    size_t size(size_t n) const { return rows.empty() ? n : rows.size(); }
  };
  const std::vector<Layer>& layers() const { return layers_; }

 private:
  GraphIndex() = default;
  // Fills codes_, offset_, scale_ from (normalised, for cosine) vectors.
  void Quantize(const float* data);
  // Copies the entry points' codes next to each other for the search start.
  void GatherEntryCodes();

  Metric metric_ = Metric::kL2;
  size_t dim_ = 0;
  size_t n_ = 0;
  uint32_t degree_ = 0;
  std::vector<Layer> layers_;      // layers_[0]: n x degree, the matrix the GPU kernel reads
  std::vector<uint32_t> entries_;  // rows of the top layer's nodes
  std::vector<float> offset_;      // per dimension: value of code 0
  std::vector<float> scale_;       // per dimension: value step per code, > 0
  HugePageVector<uint8_t> codes_;  // n x dim
  std::vector<uint8_t> entry_codes_;  // entries x dim, copied from codes_
};

}  // namespace quiver::kernels
