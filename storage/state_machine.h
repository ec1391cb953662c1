// The interface through which the replicator applies committed log entries.
//
// The engine implements it; the single-node replicator (and later Raft) drives
// it. Apply must be deterministic: every replica that applies the same entries
// reaches the same state and the same per-entry outcomes.
//
// Threads: Apply and InstallSnapshot are called from one thread at a time;
// AppliedIndex, Checkpoint and ExportSnapshot may be called from other
// threads meanwhile.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "storage/log_store.h"

namespace quiver::storage {

class StateMachine {
 public:
  virtual ~StateMachine() = default;

  /// Applies `entries` (contiguous, ascending) and persists their effects with
  /// the new applied index in one atomic write. Entries at or below
  /// AppliedIndex() are skipped, so replaying a log tail twice is harmless.
  /// `outcomes` receives one Status per entry: the answer for the client that
  /// proposed it (for example NOT_FOUND for a collection deleted meanwhile).
  /// A non-ok return means the state could not be persisted: the node must stop.
  virtual Status Apply(std::span<const LogEntry> entries, std::vector<Status>* outcomes) = 0;

  /// Highest index whose effects are applied. They are in the database but
  /// may not yet survive a crash: see Checkpoint.
  virtual uint64_t AppliedIndex() const = 0;

  /// Makes everything applied so far survive a crash and returns the index
  /// that covers. Log entries up to that index may then be compacted away;
  /// entries above it must stay, because a crash loses their effects and the
  /// restart replays them.
  virtual Result<uint64_t> Checkpoint() = 0;

  /// Writes a point-in-time copy of the applied state into `dir` (an
  /// existing, empty directory) as files a follower installs with
  /// InstallSnapshot. Returns the applied index the copy covers.
  /// CANCELLED if `stop` turns true.
  virtual Result<uint64_t> ExportSnapshot(const std::string& dir, const std::atomic<bool>* stop) = 0;

  /// Replaces the whole state with a copy ExportSnapshot wrote (on another
  /// node) and returns its applied index. Files are validated before anything
  /// changes (DATA_LOSS naming a bad one). Not atomic: after a failure or a
  /// crash the state may be empty, and the caller must redo the install from
  /// the same files before applying anything else.
  virtual Result<uint64_t> InstallSnapshot(const std::string& dir, const std::atomic<bool>* stop) = 0;
};

}  // namespace quiver::storage
