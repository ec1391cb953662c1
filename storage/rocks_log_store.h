// LogStore on the node's RocksDB (log and meta column families).
#pragma once

#include <deque>
#include <mutex>

#include <rocksdb/write_batch.h>

#include "storage/db.h"
#include "storage/log_store.h"

namespace quiver::storage {

class RocksLogStore final : public LogStore {
 public:
  /// Reads and validates the log bounds and hard state. A corrupt record is an
  /// error naming its key.
  static Result<std::unique_ptr<RocksLogStore>> Open(Db* db);

  Status Append(std::span<const LogEntry> entries, const HardState* hard_state) override;
  Result<HardState> GetHardState() const override;
  uint64_t FirstIndex() const override;
  uint64_t LastIndex() const override;
  Result<uint64_t> Term(uint64_t index) const override;
  Result<std::vector<LogEntry>> Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) const override;
  Status CompactTo(uint64_t index) override;
  Status StageCompaction(uint64_t index, std::string_view snapshot_record) override;
  Status ResetToSnapshot(uint64_t index, uint64_t term, const HardState& hard_state) override;
  Status SetSnapshotRecord(std::string_view record) override;
  Result<std::string> GetSnapshotRecord() const override;
  Status SetInstallRecord(std::string_view record) override;
  Result<std::string> GetInstallRecord() const override;
  Status SetPeerAddresses(std::string_view record) override;
  Result<std::string> GetPeerAddresses() const override;
  Status SetClusterId(std::string_view id) override;
  Result<std::string> GetClusterId() const override;

 private:
  explicit RocksLogStore(Db* db) : db_(db) {}
  Result<LogEntry> ReadEntry(uint64_t index) const;
  // The term of an entry inside the log's bounds: from terms_ when it is
  // there, else read from disk. Under mu_.
  Result<uint64_t> TermLocked(uint64_t index) const;
  // CompactTo, with the snapshot record too and without the WAL when
  // `staged_record` is given (StageCompaction).
  Status Compact(uint64_t index, const std::string_view* staged_record);
  // A checksummed record in the meta column family, written synced; empty if absent.
  Status PutMetaBlob(std::string_view key, std::string_view bytes, const char* what);
  Result<std::string> GetMetaBlob(std::string_view key, const char* what) const;

  Db* db_;
  // Guards the cached bounds; appends are serialised by it too, so the bounds
  // never disagree with what is on disk.
  mutable std::mutex mu_;
  HardState hard_state_;
  uint64_t compacted_index_ = 0;
  uint64_t compacted_term_ = 0;
  uint64_t last_index_ = 0;
  // The terms of entries [terms_first_, last_index_], all appended by this
  // process: Raft asks for terms at every append it sends or receives, and
  // reading one back from RocksDB copies and checksums the whole entry (a
  // batch of vectors, ~0.5 MB for 1,000 x 128-d). Entries from before a
  // restart are read from disk.
  std::deque<uint64_t> terms_;
  uint64_t terms_first_ = 1;
  // Append's batch, kept between appends (under mu_) with its buffer
  // (ClearForReuse, storage/db.h).
  rocksdb::WriteBatch append_batch_;
};

}  // namespace quiver::storage
