// The replicated log: entries with (index, term) plus the hard state.
//
// This is the storage contract the Raft replicator drives (the shape of
// etcd-io/raft's Storage). Today the single-node replicator uses it with a
// constant term; the same records are what Raft will replicate.
//
// Contract (checked by tests/unit/log_store_conformance_test.cc, which every
// implementation passes):
//  * Indexes are contiguous. FirstIndex() is one past the compacted prefix,
//    LastIndex() the newest entry (FirstIndex()-1 when empty).
//  * Append(entries, hs) is atomic and durable when it returns OK: either all
//    of the entries and the hard state are stored, or none. An append whose
//    first index is <= LastIndex() replaces the conflicting suffix. The one
//    exception to "durable" is a change of the commit index alone
//    (AppendMustSync): a crash may lose it, never anything written before it.
//  * Term(FirstIndex()-1) is known (the compaction point; 0 for a new log).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace quiver::storage {

enum class EntryType : uint8_t {
  kNoop = 0,        // leader's no-op on election; carries no data
  kCommand = 1,     // a quiver.internal.v1.Command
  kConfChange = 2,  // membership change (Raft)
};

/// An entry's bytes, immutable and shared rather than copied: the same entry
/// sits in the Raft log, a Ready, the messages to each follower and the
/// batch applied, and a batch of 1,000 x 128-d vectors is ~0.5 MB.
class EntryData {
 public:
  EntryData() = default;
  EntryData(std::string bytes)  // NOLINT: implicit, an entry is built from its bytes
      : bytes_(bytes.empty() ? nullptr : std::make_shared<std::string>(std::move(bytes))) {}
  EntryData(const char* bytes) : EntryData(std::string(bytes)) {}  // NOLINT: as above
  EntryData(std::string_view bytes) : EntryData(std::string(bytes)) {}  // NOLINT: as above

  std::string_view view() const { return bytes_ ? std::string_view(*bytes_) : std::string_view(""); }
  operator std::string_view() const { return view(); }  // NOLINT: reads like the string it was
  const char* data() const { return view().data(); }
  size_t size() const { return bytes_ ? bytes_->size() : 0; }
  bool empty() const { return size() == 0; }

  bool operator==(const EntryData& o) const { return view() == o.view(); }
  bool operator==(std::string_view o) const { return view() == o; }
  bool operator==(const std::string& o) const { return view() == o; }
  bool operator==(const char* o) const { return view() == o; }

 private:
  std::shared_ptr<const std::string> bytes_;  // null when empty
};

struct LogEntry {
  uint64_t index = 0;
  uint64_t term = 0;
  EntryType type = EntryType::kCommand;
  EntryData data;

  bool operator==(const LogEntry&) const = default;
};

/// Raft's persistent per-node state. A single node keeps term constant and
/// commit equal to its last appended index.
struct HardState {
  uint64_t term = 0;
  uint64_t vote = 0;
  uint64_t commit = 0;

  bool operator==(const HardState&) const = default;
};

class LogStore {
 public:
  virtual ~LogStore() = default;

  /// Appends `entries` (contiguous indexes) and, if `hard_state` is non-null,
  /// replaces the hard state, in one durable write. entries[0].index must be in
  /// [FirstIndex(), LastIndex()+1]; entries from there on are replaced.
  virtual Status Append(std::span<const LogEntry> entries, const HardState* hard_state) = 0;

  virtual Result<HardState> GetHardState() const = 0;

  virtual uint64_t FirstIndex() const = 0;
  virtual uint64_t LastIndex() const = 0;

  /// Term of entry `index`. OUT_OF_RANGE if it was compacted away (below
  /// FirstIndex()-1) or is beyond LastIndex().
  virtual Result<uint64_t> Term(uint64_t index) const = 0;

  /// Entries in [lo, hi), stopping once their data exceeds `max_bytes` (but
  /// always at least one when lo < hi). OUT_OF_RANGE when lo < FirstIndex() or
  /// hi > LastIndex()+1.
  virtual Result<std::vector<LogEntry>> Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) const = 0;

  /// Drops entries up to and including `index` (which must be <= LastIndex()),
  /// remembering its term. Used once the state machine has persisted them.
  virtual Status CompactTo(uint64_t index) = 0;

  /// CompactTo(index) and SetSnapshotRecord(snapshot_record) as one change
  /// that is visible at once but durable only together with the state
  /// machine's next Checkpoint, never before (nothing when `index` is
  /// already compacted). So the caller may stage entries whose effects are
  /// applied but not yet persisted, as long as that checkpoint persists them:
  /// a crash before it loses the compaction along with those effects, and
  /// the restart replays them from the log. A RocksLogStore shares the state's
  /// database and writes this without the WAL, so the state's flush persists
  /// both at one point (storage/db.cc) and drops the compacted entries from
  /// the memtable instead of writing them to files only to delete them.
  virtual Status StageCompaction(uint64_t index, std::string_view snapshot_record) = 0;

  /// Drops every entry and makes (index, term) the compaction point, so the
  /// next append starts at index + 1, and stores `hard_state` — in one durable
  /// write. Used when a follower installs a snapshot from the leader.
  virtual Status ResetToSnapshot(uint64_t index, uint64_t term, const HardState& hard_state) = 0;

  /// An opaque record the replicator keeps beside the log (Raft's newest
  /// snapshot: index, term, membership), replaced durably in one write.
  /// Empty if never set; a damaged record is DATA_LOSS.
  virtual Status SetSnapshotRecord(std::string_view record) = 0;
  virtual Result<std::string> GetSnapshotRecord() const = 0;

  /// The id of the cluster this log belongs to, written once at bootstrap
  /// (durably); empty if never set.
  virtual Status SetClusterId(std::string_view id) = 0;
  virtual Result<std::string> GetClusterId() const = 0;

  /// An opaque record of a snapshot install in progress (the replicator's
  /// intent: what to redo after a crash), replaced durably in one write;
  /// empty if none.
  virtual Status SetInstallRecord(std::string_view record) = 0;
  virtual Result<std::string> GetInstallRecord() const = 0;

  /// An opaque record of the peer addresses the replicator learned from
  /// membership changes, replaced durably in one write; empty if none.
  virtual Status SetPeerAddresses(std::string_view record) = 0;
  virtual Result<std::string> GetPeerAddresses() const = 0;
};

/// A LogStore in memory, for tests and the Raft simulator. Not durable.
class MemoryLogStore final : public LogStore {
 public:
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
  Status SetClusterId(std::string_view id) override;
  Result<std::string> GetClusterId() const override;
  Status SetInstallRecord(std::string_view record) override;
  Result<std::string> GetInstallRecord() const override;
  Status SetPeerAddresses(std::string_view record) override;
  Result<std::string> GetPeerAddresses() const override;

 private:
  std::string snapshot_record_;
  std::string install_record_;
  std::string peer_addresses_;
  std::string cluster_id_;
  mutable std::mutex mu_;
  HardState hard_state_;
  uint64_t compacted_index_ = 0;
  uint64_t compacted_term_ = 0;
  std::vector<LogEntry> entries_;  // entries_[i].index == compacted_index_ + 1 + i

  Status CompactLocked(uint64_t index);
};

/// Whether an append must be durable before it returns: when it holds entries
/// or changes the term or the vote. A change of the commit index alone need
/// not be (etcd's MustSync): a commit index is re-learned from the leader, so
/// a crash that loses it loses nothing acknowledged, and the write is ordered
/// behind every earlier one, so a crash can lose it only with what came
/// after. Followers learn most commit indexes in a message of their own; one
/// fsync each was about 5% of a node's log-writing time in quiver-bench cluster.
bool AppendMustSync(std::span<const LogEntry> entries, const HardState* next, const HardState& current);

/// Checks an append against the current bounds: shared by the implementations
/// so they reject the same inputs with the same messages.
Status ValidateAppend(std::span<const LogEntry> entries, uint64_t first_index, uint64_t last_index);

}  // namespace quiver::storage
