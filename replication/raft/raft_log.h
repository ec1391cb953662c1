// Internal: a node's log as the Raft core sees it — the durable entries in the
// host's LogStore, followed by the entries (and possibly a snapshot) received
// or proposed but not yet handed to the host in a Ready ("unstable").
//
// Invariant: the unstable entries start at `offset_`; LastIndex() is always
// offset_ + unstable_.size() - 1. Durable entries at or above offset_ are
// superseded (the host's next append replaces them).
//
// The newest durable entries not yet applied are kept in memory too
// (`recent_`, ending at offset_ - 1): the next Ready applies them and a leader
// sends them to its followers, and reading them back from the LogStore copied
// and checksummed each (~0.5 MB for a batch of 1,000 x 128-d vectors). Their
// data is shared with the Ready, not copied.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

#include "common/status.h"
#include "replication/raft/raft.h"
#include "storage/log_store.h"

namespace quiver::replication::raft {

class RaftLog {
 public:
  RaftLog(const storage::LogStore* stable, uint64_t committed, uint64_t applied);

  uint64_t FirstIndex() const;
  uint64_t LastIndex() const { return offset_ + unstable_.size() - 1; }
  /// OUT_OF_RANGE when compacted away or beyond the last entry; any other
  /// error is the durable log failing.
  Result<uint64_t> Term(uint64_t index) const;
  /// Entries in [lo, hi), at most `max_bytes` of data (at least one entry).
  /// OUT_OF_RANGE when lo is compacted away.
  Result<std::vector<storage::LogEntry>> Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) const;

  /// Appends after resolving conflicts (the follower path). Returns the index
  /// of the last new entry, or nullopt if (index, term) does not match. A
  /// conflict at or below the commit index is INTERNAL.
  Result<std::optional<uint64_t>> MaybeAppend(uint64_t index, uint64_t term, uint64_t commit,
                                              const std::vector<storage::LogEntry>& entries);
  /// Replaces everything from entries[0].index on (entries must be contiguous
  /// and start in [offset-ish, LastIndex()+1]).
  void TruncateAndAppend(std::vector<storage::LogEntry> entries);
  /// Raises the commit index; INTERNAL if beyond the last entry.
  Status CommitTo(uint64_t index);
  /// Replaces the log with a snapshot (follower receiving InstallSnapshot).
  void Restore(const SnapshotMeta& meta);

  bool IsUpToDate(uint64_t last_index, uint64_t last_term) const;

  const std::vector<storage::LogEntry>& unstable_entries() const { return unstable_; }
  const std::optional<SnapshotMeta>& unstable_snapshot() const { return snapshot_; }
  bool HasNextCommitted() const;
  Result<std::vector<storage::LogEntry>> NextCommitted(uint64_t max_bytes) const;

  /// The host made entries up to (index, term) / the snapshot at `index` durable.
  void StableTo(uint64_t index, uint64_t term);
  void StableSnapshotTo(uint64_t index);
  void AppliedTo(uint64_t index);

  uint64_t committed() const { return committed_; }
  uint64_t applied() const { return applied_; }

 private:
  const storage::LogStore* stable_;
  std::optional<SnapshotMeta> snapshot_;
  uint64_t offset_;
  std::vector<storage::LogEntry> unstable_;
  std::deque<storage::LogEntry> recent_;  // durable, unapplied: [offset_ - recent_.size(), offset_)
  uint64_t recent_bytes_ = 0;
  uint64_t committed_;
  uint64_t applied_;

  // Memory kept for recent_ at most: a follower that receives faster than it
  // applies reads the rest back from the LogStore.
  static constexpr uint64_t kMaxRecentBytes = 64ull << 20;
  uint64_t RecentFirst() const { return offset_ - recent_.size(); }
  // Drops applied entries, then the oldest beyond kMaxRecentBytes.
  void TrimRecent();
};

}  // namespace quiver::replication::raft
