// One collection's points in memory, searched exactly (FLAT).
//
// Vectors are stored row-major with their squared norms, so a search is one
// kernels::FlatSearch call. Deletes swap the last row into the hole, so rows
// stay dense and no tombstones are needed for FLAT (segments with tombstone
// bitsets arrive with the approximate indexes).
//
// Thread safety: any number of concurrent readers; writes (from Apply) take an
// exclusive lock for the duration of one mutation, ahead of newly arriving
// readers (engine/rw_lock.h), so searches cannot starve writes.
#pragma once

#include <cstdint>
#include <shared_mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/status.h"
#include "engine/rw_lock.h"
#include "kernels/flat_search.h"
#include "quiver/v1/collections.pb.h"

namespace quiver::engine {

struct Hit {
  uint64_t id = 0;
  float score = 0;
  std::string payload;        // serialized quiver.v1.Payload; empty if none or not asked
  std::vector<float> vector;  // empty unless asked
};

struct StoredPoint {
  uint64_t id = 0;
  std::string payload;
  std::vector<float> vector;
};

class Collection {
 public:
  /// `info.created_at_index` is the collection's unique id.
  explicit Collection(quiver::v1::CollectionInfo info);

  const quiver::v1::CollectionConfig& config() const { return info_.config(); }
  uint64_t id() const { return info_.created_at_index(); }
  uint32_t dimension() const { return info_.config().dimension(); }
  kernels::Metric metric() const { return metric_; }
  /// The collection's description with the current point count.
  quiver::v1::CollectionInfo Info() const;
  size_t Count() const;

  /// Inserts or overwrites one point. `vector` has dimension() floats.
  void Upsert(uint64_t id, const float* vector, std::string payload);
  /// Returns false if the id was absent.
  bool Remove(uint64_t id);
  void Reserve(size_t extra_points);

  /// `queries` holds nq * dimension() floats. out->size() becomes nq; each list
  /// holds min(k, Count()) hits, best first.
  Status Search(const kernels::Resources& res, const float* queries, size_t nq, size_t k, bool with_payload,
                bool with_vector, std::vector<std::vector<Hit>>* out) const;

  /// Points for `ids` in order; absent ids are skipped.
  std::vector<StoredPoint> Get(std::span<const uint64_t> ids, bool with_payload, bool with_vector) const;

 private:
  quiver::v1::CollectionInfo info_;
  kernels::Metric metric_;
  size_t dim_;

  mutable WriterPreferringRwLock mu_;
  std::vector<float> vectors_;   // rows x dim
  std::vector<float> sq_norms_;  // per row
  std::vector<uint64_t> ids_;    // per row
  std::vector<std::string> payloads_;
  std::unordered_map<uint64_t, uint32_t> row_of_;
};

/// kernels::Metric for a (validated) proto metric.
kernels::Metric ToKernelMetric(quiver::v1::Metric metric);

}  // namespace quiver::engine
