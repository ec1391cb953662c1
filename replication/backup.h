// Backups: a node's applied state copied into a directory while it serves,
// and a new data directory started from such a copy.
//
// A backup is what a snapshot for a follower is (StateMachine::ExportSnapshot:
// the state's SST files of one instant plus the sealed segment files) and a
// MANIFEST naming every file with its size and CRC-32, written last: a
// directory without a valid MANIFEST is not a backup. Restoring makes an
// empty data directory start as a new cluster whose state is the backup's,
// at the backup's applied index.
//
// Example:
//   QUIVER_ASSIGN_OR_RETURN(BackupInfo b, CreateBackup(engine, data_dir + "/backups", "nightly", cluster_id, &stop));
//   // later, on an empty data directory, before RaftReplicator::Start:
//   QUIVER_RETURN_IF_ERROR(RestoreBackup(b.path, log, engine, {1}, NewClusterId(...), &stop));
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"
#include "replication/raft/raft.h"
#include "storage/db.h"
#include "storage/log_store.h"
#include "storage/state_machine.h"
#include "storage/state_store.h"

namespace quiver::replication {

struct BackupInfo {
  std::string name;
  std::string path;  // the backup's directory
  uint64_t applied_index = 0;
  std::string cluster_id;  // of the node that wrote it
  int64_t created_unix_ms = 0;
  uint64_t bytes = 0;
  uint32_t files = 0;
};

/// A backup name: 1 to 64 of [A-Za-z0-9._-], not starting with '.'.
Status ValidateBackupName(const std::string& name);

/// Writes a backup of `state` to `<dir>/<name>` (first as `<name>.tmp`,
/// renamed once complete and synced). ALREADY_EXISTS if that backup exists.
Result<BackupInfo> CreateBackup(storage::StateMachine* state, const std::string& dir, const std::string& name,
                                const std::string& cluster_id, const std::atomic<bool>* stop);

/// The complete backups under `dir`, by name; directories whose MANIFEST is
/// missing or damaged are left out.
Result<std::vector<BackupInfo>> ListBackups(const std::string& dir);

/// Reads `path`'s MANIFEST and checks every file it names (size and CRC-32):
/// DATA_LOSS naming the first that differs.
Result<BackupInfo> VerifyBackup(const std::string& path);

/// Starts an empty data directory (`log` and `state` hold nothing yet) from
/// the backup at `path`, after verifying it: the state imported, the log reset
/// to the backup's applied index with `voters` as the membership, and
/// `cluster_id` recorded. FAILED_PRECONDITION if the log is not empty. Not
/// atomic: if it fails or is interrupted, empty the data directory and run
/// it again.
Status RestoreBackup(const std::string& path, storage::LogStore* log, storage::StateMachine* state,
                     const std::set<raft::NodeId>& voters, const std::string& cluster_id,
                     const std::atomic<bool>* stop);

/// A backup opened for reading while the node serves (Cluster.RestoreBackup
/// copies collections out of it through ordinary replicated writes). The
/// backup is verified against its MANIFEST, then its state files are
/// imported into a scratch database of their own under `scratch_dir`, which
/// Open empties first (a crash can leave one behind) and the destructor
/// deletes: the node's own state is never touched. One reader per
/// `scratch_dir` at a time.
class BackupReader {
 public:
  static Result<std::unique_ptr<BackupReader>> Open(const std::string& path, const std::string& scratch_dir);
  ~BackupReader();
  BackupReader(const BackupReader&) = delete;
  BackupReader& operator=(const BackupReader&) = delete;

  const BackupInfo& info() const { return info_; }
  /// Each collection's stored record: id (the log index that created it) and
  /// its metadata bytes (a quiver.v1.CollectionInfo).
  Result<std::vector<storage::StateStore::StoredCollection>> Collections() const;
  /// Every point of a collection in id order, each record validated
  /// (StateStore::ForEachPoint).
  Status ForEachPoint(uint64_t collection_id, uint32_t dimension,
                      const storage::StateStore::PointVisitor& visit) const;

 private:
  BackupReader() = default;
  BackupInfo info_;
  std::string scratch_dir_;
  std::unique_ptr<storage::Db> db_;
  std::unique_ptr<storage::StateStore> store_;
};

}  // namespace quiver::replication
