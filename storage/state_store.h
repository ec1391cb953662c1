// Persistent state of the engine: collections, point vectors and payloads, and
// the applied index, in the node's RocksDB.
//
// Writes go through a Batch committed atomically, so the points and the
// applied index never disagree. Batches skip RocksDB's WAL: the replicated log
// already holds every change, so writing the vectors to a second log would
// only double the bytes, copies and checksums. A crash loses the applied state
// since the last flush, and the restart replays it from the log; Flush() marks
// how far the log may be compacted. The column families flush atomically
// (storage/db.cc), so the surviving state is always one consistent point.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "storage/db.h"

namespace rocksdb {
class WriteBatch;
}

namespace quiver::storage {

class StateStore {
 public:
  explicit StateStore(Db* db) : db_(db) {}

  class Batch {
   public:
    Batch();
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

    void PutCollection(uint64_t collection_id, std::string_view meta);
    /// Removes the collection's metadata and all of its points.
    void DeleteCollection(uint64_t collection_id);
    /// An empty `payload` removes any stored payload, unless `is_new` says
    /// the point was not stored before (so there is none to remove: one
    /// tombstone less per point, flushed and compacted).
    void PutPoint(uint64_t collection_id, uint64_t point_id, std::span<const float> vector, std::string_view payload,
                  bool is_new = false);
    void DeletePoint(uint64_t collection_id, uint64_t point_id);
    void SetAppliedIndex(uint64_t index);
    /// The last applied request of a client (opaque to the store).
    void PutRequestRecord(std::string_view client_id, std::string_view record);
    /// Empties the batch for reuse, keeping its buffer (ClearForReuse).
    void Clear();

   private:
    friend class StateStore;
    Db* db_ = nullptr;
    std::unique_ptr<rocksdb::WriteBatch> batch_;
  };

  std::unique_ptr<Batch> NewBatch() const;
  [[nodiscard]] Status Commit(Batch& batch);

  /// Persists every committed batch to SST files (all state column families
  /// and the log together, so a staged log compaction goes with them).
  /// Blocks until done.
  [[nodiscard]] Status Flush();

  /// 0 for a new database.
  Result<uint64_t> AppliedIndex() const;

  struct StoredCollection {
    uint64_t id = 0;
    std::string meta;
  };
  Result<std::vector<StoredCollection>> LoadCollections() const;

  /// Every client's request record, validated.
  Result<std::vector<std::pair<std::string, std::string>>> LoadRequestRecords() const;

  /// Writes the applied state — collections, points, payloads, request
  /// records and the applied index — as of one instant into SST files under
  /// `dir` (an existing, empty directory): what a follower that fell behind
  /// the log installs. Returns the applied index of that instant (never 0:
  /// an empty state is FAILED_PRECONDITION). CANCELLED if `stop` turns true.
  Result<uint64_t> ExportSnapshot(const std::string& dir, const std::atomic<bool>* stop) const;

  /// Replaces the applied state with what ExportSnapshot wrote under `dir`,
  /// after checking every file's block checksums (DATA_LOSS naming a bad
  /// one, with nothing changed). Two atomic steps — delete the old state,
  /// then ingest the files — so a crash in between leaves an empty state:
  /// the caller records its intent first and redoes the import after a
  /// restart (RaftReplicator does). Returns the imported applied index.
  Result<uint64_t> ImportSnapshot(const std::string& dir);

  /// The files ExportSnapshot may write (absent when their part is empty).
  static constexpr std::string_view kSnapshotMetaFile = "state-meta.sst";
  static constexpr std::string_view kSnapshotVectorsFile = "state-vectors.sst";
  static constexpr std::string_view kSnapshotPayloadsFile = "state-payloads.sst";

  using PointVisitor = std::function<Status(uint64_t point_id, const float* vector, std::string_view payload)>;
  /// Visits every point of a collection in id order. Every record is validated;
  /// the first bad one stops the scan with DATA_LOSS naming its key.
  Status ForEachPoint(uint64_t collection_id, uint32_t dimension, const PointVisitor& visit) const;

 private:
  Db* db_;
};

}  // namespace quiver::storage
