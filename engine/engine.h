// The engine: every collection of the node, and the state machine that applies
// committed log entries to them.
//
// Reads (Find, List) return shared pointers, so a search keeps working on a
// collection that is deleted meanwhile. Writes arrive only through Apply, in
// log order, from the replicator's single apply thread.
//
// Example:
//   QUIVER_ASSIGN_OR_RETURN(auto engine, Engine::Open(db, {}, &stop));
//   replicator.Start(engine.get());          // applies the log tail, then new writes
//   auto coll = engine->Find("docs");        // NOT_FOUND if absent
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "engine/collection.h"
#include "engine/gpu_executor.h"
#include "storage/db.h"
#include "storage/state_machine.h"
#include "storage/state_store.h"

namespace quiver::internal::v1 {
class Command;
}

namespace quiver::engine {

struct EngineOptions {
  /// CPU threads an index build may use; 0 = all cores. Default: 0.
  int build_threads = 0;
  /// A sealed segment is compacted once this fraction of its rows are
  /// tombstones. Default: 0.3.
  double compact_deleted_fraction = 0.3;
  /// Serves sealed segments (FLAT, IVF_FLAT, IVF_PQ, GRAPH) on a GPU (engine/gpu_executor.h);
  /// null = CPU only. Default: null.
  std::shared_ptr<GpuExecutor> gpu;
};

class Engine final : public storage::StateMachine {
 public:
  /// Loads every collection and its points from `db`, validating each record.
  /// Returns CANCELLED if `stop` becomes true while loading (shutdown at start).
  static Result<std::unique_ptr<Engine>> Open(storage::Db* db, const EngineOptions& options,
                                              const std::atomic<bool>* stop);
  ~Engine() override;

  /// Stops the background thread (index builds and compaction; waits for the
  /// one in progress). Idempotent; searches keep working.
  void StopBackgroundWork();

  /// Waits until no index build or compaction is due, at most `timeout`.
  /// True if that state was reached.
  bool WaitForBackgroundWork(std::chrono::milliseconds timeout);

  /// Index builds, compactions or segment file writes that failed (their
  /// segments stay searched exactly, or are rebuilt after a restart).
  uint64_t failed_index_builds() const { return failed_builds_.load(); }
  /// Sealed segments whose files were loaded at Open, and files found unusable
  /// there (missing, corrupt, stale), whose points were re-indexed instead.
  uint64_t segments_loaded() const { return segments_loaded_.load(); }
  uint64_t segment_files_discarded() const { return segment_files_discarded_.load(); }

  Status Apply(std::span<const storage::LogEntry> entries, std::vector<Status>* outcomes) override;
  uint64_t AppliedIndex() const override { return applied_index_.load(std::memory_order_acquire); }
  Result<uint64_t> Checkpoint() override;
  /// Hard links of the sealed segment files, then the state's SST files.
  Result<uint64_t> ExportSnapshot(const std::string& dir, const std::atomic<bool>* stop) override;
  /// Pauses background work, imports the state and the segment files, then
  /// reloads every collection as Open does and swaps them in: searches run on
  /// the old collections until the swap (memory holds both meanwhile).
  Result<uint64_t> InstallSnapshot(const std::string& dir, const std::atomic<bool>* stop) override;

  /// NOT_FOUND naming the collection if it does not exist.
  Result<std::shared_ptr<const Collection>> Find(const std::string& name) const;
  /// Sorted by name.
  std::vector<std::shared_ptr<const Collection>> List() const;

  uint64_t TotalPoints() const;

 private:
  // Defined in engine.cc, where Command is a complete type.
  explicit Engine(storage::Db* db, const EngineOptions& options);
  // Reads the applied index, request records, collections, segment files and
  // points from the database and replaces the in-memory state with them.
  // Apply thread (or Open) only.
  Status LoadState(const std::atomic<bool>* stop);
  // Starts the background thread unless StopBackgroundWork ran. Requires builder_thread_mu_.
  void StartBackgroundWorkLocked();  // Adopts the listed segment files of `coll` (Open only); unusable ones are
  // logged, unlisted and deleted, and their points re-indexed.
  Status LoadSegmentFiles(Collection* coll, const std::vector<storage::SegmentRef>& refs, const std::atomic<bool>* stop);
  // Unlists and deletes the segment files of dropped collections.
  void RemoveDroppedSegmentFiles();
  void BackgroundLoop();
  void RequestBackgroundWork();
  // Applies one command to memory and `batch`; the returned status is the
  // client's answer. Deterministic.
  Status ApplyCommand(uint64_t index, const quiver::internal::v1::Command& cmd, storage::StateStore::Batch* batch);
  // ApplyCommand behind the request-id check: a command whose (client id,
  // sequence) was applied before gets the recorded outcome instead.
  Status ApplyOnce(uint64_t index, const quiver::internal::v1::Command& cmd, storage::StateStore::Batch* batch);
  std::shared_ptr<Collection> FindMutable(const std::string& name) const;
  std::vector<std::shared_ptr<Collection>> ListMutable() const;

  EngineOptions options_;
  storage::StateStore store_;
  storage::SegmentStore segments_;
  std::atomic<uint64_t> segments_loaded_{0};
  std::atomic<uint64_t> segment_files_discarded_{0};
  std::atomic<uint64_t> applied_index_{0};
  mutable std::shared_mutex mu_;  // guards collections_ (the map, not the collections)
  std::map<std::string, std::shared_ptr<Collection>> collections_;
  // Per client id: the last applied sequence and its outcome. Only the apply
  // thread touches it; persisted with the applied index in each batch.
  struct AppliedRequest {
    uint64_t sequence = 0;
    Status outcome;
  };
  std::map<std::string, AppliedRequest, std::less<>> applied_requests_;
  // Apply's batch and parsed command, reused (apply thread only): each holds
  // a copy of a batch of vectors, ~0.5 MB for 1,000 x 128-d, and fresh
  // buffers every time were fresh pages for the kernel to zero.
  std::unique_ptr<storage::StateStore::Batch> apply_batch_;
  std::unique_ptr<quiver::internal::v1::Command> apply_command_;

  // Background thread (index builds, compaction): woken when a segment is
  // sealed or a sealed row is tombstoned.
  std::mutex build_mu_;
  std::condition_variable build_cv_;
  bool build_requested_ = false;
  bool builder_idle_ = true;
  bool stop_builder_ = false;
  std::vector<uint64_t> dropped_collections_;  // ids whose segment files are still to be removed
  std::atomic<uint64_t> failed_builds_{0};
  // Guards starting and joining builder_ (a snapshot install restarts it).
  std::mutex builder_thread_mu_;
  bool shut_down_ = false;  // StopBackgroundWork ran: never start it again
  std::thread builder_;
};

}  // namespace quiver::engine
