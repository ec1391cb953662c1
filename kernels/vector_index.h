// The interface every approximate index of a sealed segment implements
// (IVF_FLAT, GRAPH), so segments, persistence and search treat them alike.
//
// An index is built from a segment's immutable vectors and answers with row
// numbers of that segment. It may keep its own copy of the vectors (IVF_FLAT's
// interleaved lists) or a compressed one (GRAPH's 8-bit codes, IVF_PQ's
// product codes), re-ranking from the segment's vectors passed in at search
// time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"
#include "kernels/flat_search.h"

namespace quiver::kernels {

/// Per-request search settings; each index reads its own.
struct IndexSearchParams {
  /// IVF_FLAT, IVF_PQ: inverted lists probed, >= 1. Default: 32.
  uint32_t nprobe = 32;
  /// IVF_PQ: k * refine_factor candidates (by code) are re-scored exactly
  /// from the segment's vectors, >= 1. Default: 8.
  uint32_t refine_factor = 8;
  /// GRAPH: candidates kept during the search (the beam, "itopk" in CAGRA,
  /// "ef" in HNSW); raised to k when smaller. Larger is slower and more
  /// accurate. Default: 64.
  uint32_t itopk = 64;
  /// GRAPH: nodes expanded per step, >= 1. Default: 1.
  uint32_t search_width = 1;
};

class VectorIndex {
 public:
  virtual ~VectorIndex() = default;

  /// "IVF_FLAT", "IVF_PQ", "GRAPH": the IndexType name.
  virtual const char* kind() const = 0;
  virtual Metric metric() const = 0;
  virtual size_t dim() const = 0;
  virtual size_t size() const = 0;
  /// Bytes the index holds beyond the segment's own vectors.
  virtual size_t MemoryBytes() const = 0;

  /// For each query, the k best rows, best first, with the metric's scores
  /// (exactly as FlatSearch scores them); missing slots hold row -1. `base`
  /// holds the vectors the index was built from, with their squared norms;
  /// rows set in base.deleted (tombstones, filtered out) are never returned.
  virtual Status Search(const Resources& res, const BaseView& base, const float* queries, size_t nq, size_t k,
                        const IndexSearchParams& params, int64_t* rows, float* scores) const = 0;

  /// Self-describing bytes (magic, version, sizes, CRC-32); see docs/storage.md.
  virtual std::string Serialize() const = 0;
};

/// Decodes bytes written by any index's Serialize(), chosen by their magic;
/// DATA_LOSS naming `what` if they are not a valid index.
Result<std::unique_ptr<VectorIndex>> DeserializeIndex(std::string_view bytes, const std::string& what);

}  // namespace quiver::kernels
