// One collection's points in memory, in segments.
//
// New points go to the growing segment, searched exactly. When it holds
// segment_max_points it is sealed: its rows never move again, deletes and
// overwrites become tombstones (a bitset applied inside the scan, so k live
// results still come back), and for an IVF_FLAT, IVF_PQ or GRAPH collection a background job
// (Engine's index builder) builds the segment's index from its immutable
// vectors and installs it. Until then the sealed segment is searched exactly,
// so results are never worse while a build runs. A search asks every segment
// for its best k and merges them. Compaction rewrites a sealed segment whose
// tombstones pass a threshold, in place in the segment list.
//
// Persistence: an indexed sealed segment is written to a segment file
// (storage/segment_store.h) by the background thread. At restart the engine
// adopts each file with all rows tombstoned, then streams the stored points:
// a point whose vector equals its adopted row revives that row; any other
// point goes to the growing segment. So the files are only a cache of the
// index — RocksDB's points stay the truth, and a stale or corrupt file costs a
// rebuild, never a wrong answer. FLAT collections write no files: their
// sealed segments have nothing to rebuild.
//
// Thread safety: any number of concurrent readers; writes (from Apply) and
// index installs take an exclusive lock for one short mutation, ahead of newly
// arriving readers (engine/rw_lock.h), so searches cannot starve writes.
// Index builds run outside the lock.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/remap_vector.h"
#include "common/status.h"
#include "engine/gpu_executor.h"
#include "engine/payload_index.h"
#include "engine/rw_lock.h"
#include "kernels/flat_search.h"
#include "kernels/vector_index.h"
#include "quiver/v1/collections.pb.h"
#include "quiver/v1/points.pb.h"
#include "storage/segment_store.h"

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

struct SearchOptions {
  /// IVF_FLAT / IVF_PQ lists probed per sealed segment; 0 = the collection's default.
  uint32_t nprobe = 0;
  /// GRAPH search beam; 0 = the collection's default.
  uint32_t itopk = 0;
  /// GRAPH nodes expanded per step; 0 = 1.
  uint32_t search_width = 0;
  /// IVF_PQ: k * refine_factor candidates re-scored exactly; 0 = the
  /// collection's default.
  uint32_t refine_factor = 0;
  bool with_payload = false;
  bool with_vector = false;
  /// Only points whose payload matches are returned; null = all. Must be
  /// valid (engine/filter.h) and outlive the call.
  const quiver::v1::Filter* filter = nullptr;
};

/// A sealed segment whose rows pass a filter at most this fraction is searched
/// exactly rather than through its index: an index probe over few matching
/// rows would return fewer than k of them.
inline constexpr double kExactFilterFraction = 0.2;

class Collection {
 public:
  /// `info.created_at_index` is the collection's unique id. `gpu`, when not
  /// null, serves sealed segments of every index type (CPU on any GPU error).
  explicit Collection(quiver::v1::CollectionInfo info, std::shared_ptr<GpuExecutor> gpu = nullptr);
  /// Drops the GPU copies of its segments.
  ~Collection();
  Collection(const Collection&) = delete;
  Collection& operator=(const Collection&) = delete;

  const quiver::v1::CollectionConfig& config() const { return info_.config(); }
  uint64_t id() const { return info_.created_at_index(); }
  uint32_t dimension() const { return info_.config().dimension(); }
  kernels::Metric metric() const { return metric_; }
  /// Whether one search of many queries costs less than as many searches of
  /// one: exact (FLAT) collections, whose batch is one sgemm pass over the
  /// base, and any collection served by a GPU (one launch sequence instead
  /// of one per call). A CPU index (IVF_FLAT, IVF_PQ, GRAPH) searches each
  /// query on its own: batching only adds the wait and a barrier per segment
  /// (0.48x the QPS for GRAPH on 16 cores, 0.73-0.88x on 2).
  bool GainsFromBatching() const { return gpu_ != nullptr || !wants_index_; }
  /// The collection's description with current counts.
  quiver::v1::CollectionInfo Info() const;
  size_t Count() const;

  /// What a write did that may give the background thread work.
  struct WriteEffect {
    bool found = false;       // the id existed before
    bool sealed = false;      // the growing segment was sealed (an index build is due)
    bool tombstoned = false;  // a sealed row was tombstoned (compaction may be due)
    bool needs_background() const { return sealed || tombstoned; }
  };

  /// Inserts or overwrites one point. `vector` has dimension() floats.
  WriteEffect Upsert(uint64_t id, const float* vector, std::string payload);
  /// Deletes one point; `found` is false if the id was absent.
  WriteEffect Remove(uint64_t id);
  void Reserve(size_t extra_points);

  /// `queries` holds nq * dimension() floats. out->size() becomes nq; each list
  /// holds up to k hits (fewer only if fewer live points), best first.
  Status Search(const kernels::Resources& res, const float* queries, size_t nq, size_t k,
                const SearchOptions& options, std::vector<std::vector<Hit>>* out) const;

  /// Points for `ids` in order; absent ids are skipped.
  std::vector<StoredPoint> Get(std::span<const uint64_t> ids, bool with_payload, bool with_vector) const;

  /// Builds the indexes (IVF_FLAT, IVF_PQ or GRAPH; payload) of one sealed segment that lacks
  /// them, outside the lock, and installs them. Returns false if no segment
  /// needs a build. Called by the engine's background thread only.
  Result<bool> BuildOneIndex(const kernels::Resources& res);

  /// Rewrites one sealed segment whose tombstones reach `deleted_fraction` of
  /// its rows: copies the live rows (under the lock), builds the new segment's
  /// index outside it, then swaps it in, tombstoning any row deleted or
  /// overwritten meanwhile. Returns false if no segment qualifies.
  /// Called by the engine's background thread only.
  Result<bool> CompactOne(const kernels::Resources& res, double deleted_fraction);

  /// Writes one indexed sealed segment that has no file yet to `store`, and
  /// deletes the files of segments that compaction replaced. Returns false if
  /// there was nothing to do. Called by the engine's background thread only.
  Result<bool> PersistOne(storage::SegmentStore* store);

  // ---- loading at start (before the collection is shared) ----
  /// Adopts a sealed segment from its file content with every row
  /// tombstoned; LoadPoint revives them. Thread-safe, any order (files load
  /// in parallel). DATA_LOSS naming `what` if the content does not decode or
  /// does not fit this collection (dimension, metric, sizes, index).
  Status AdoptSegment(uint64_t segment, std::string_view content, const std::string& what);
  /// Each stored point once: revives the adopted row holding exactly this
  /// vector (the newest segment's, if several), or else upserts the point.
  void LoadPoint(uint64_t id, const float* vector, std::string payload);
  /// Ends the load; unrevived adopted rows stay tombstones for compaction.
  void FinishLoad();

 private:
  struct Segment {
    RemapVector<float> vectors;  // rows x dim; grows without copying rows
    std::vector<float> sq_norms;
    std::vector<uint64_t> ids;
    std::vector<std::string> payloads;
    std::vector<uint64_t> deleted;  // sealed segments only; bit per row
    size_t live = 0;
    std::shared_ptr<const kernels::VectorIndex> index;  // IVF_FLAT, IVF_PQ or GRAPH, once built
    std::shared_ptr<const PayloadIndex> payload_index;  // declared payload fields, once built
    bool build_started = false;
    bool payload_index_started = false;
    bool compacting = false;
    uint64_t number = 0;          // sealed segments: names its file
    uint64_t uid = NextSegmentUid();  // process-unique: names its GPU copy
    bool persist_started = false;
    bool persisted = false;       // its file is written and listed
    size_t rows() const { return ids.size(); }
  };
  // Where a point lives: segment -1 is the growing one.
  struct Location {
    int32_t segment;
    uint32_t row;
  };
  static constexpr int32_t kGrowing = -1;

  Result<std::shared_ptr<const kernels::VectorIndex>> BuildIndex(const kernels::Resources& res,
                                                                   const Segment& seg) const;
  void RemoveLocked(const Location& loc);
  void SealLocked();
  // `excluded`: rows to skip (tombstones, filtered out); null = none.
  // `kept_fraction`: the share of rows neither tombstoned nor filtered out.
  Status SearchSegmentLocked(const kernels::Resources& res, const Segment& seg, const uint64_t* excluded,
                             bool use_index, double kept_fraction, const float* queries, size_t nq, size_t k,
                             const SearchOptions& options, int64_t* rows, float* scores) const;

  // A sealed segment's index search on the GPU (gpu_ set): IVF_FLAT, IVF_PQ
  // and GRAPH have kernels. Any error: the caller serves it on the CPU.
  Status SearchIndexOnGpu(const Segment& seg, const kernels::BaseView& base, const float* queries, size_t nq,
                          size_t k, const kernels::IndexSearchParams& params, int64_t* rows, float* scores) const;

  // Exact search over only the rows not `excluded` (`allowed` of them),
  // copied together first: a selective filter costs its matches, not the segment.
  Status SearchGatheredLocked(const kernels::Resources& res, const Segment& seg, const uint64_t* excluded,
                              size_t allowed, const float* queries, size_t nq, size_t k, int64_t* rows,
                              float* scores) const;

  quiver::v1::CollectionInfo info_;
  kernels::Metric metric_;
  size_t dim_;
  size_t segment_max_points_;
  quiver::v1::IndexType index_type_;  // FLAT, IVF_FLAT, IVF_PQ or GRAPH
  bool wants_index_;
  uint32_t default_nprobe_;
  uint32_t default_itopk_;
  uint32_t default_refine_factor_;
  std::vector<std::string> payload_fields_;  // indexed in sealed segments

  mutable WriterPreferringRwLock mu_;
  Segment growing_;
  std::vector<std::shared_ptr<Segment>> sealed_;
  std::shared_ptr<GpuExecutor> gpu_;  // null: CPU only
  std::unordered_map<uint64_t, Location> where_;
  uint64_t next_segment_number_ = 1;
  std::vector<uint64_t> retired_files_;  // segment numbers whose files compaction made stale
  std::unordered_map<uint64_t, Location> adopted_rows_;  // during load: id -> newest adopted row
};

/// kernels::Metric for a (validated) proto metric.
kernels::Metric ToKernelMetric(quiver::v1::Metric metric);

}  // namespace quiver::engine
