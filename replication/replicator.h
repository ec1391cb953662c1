// The write path's entry point: a mutation is proposed, made durable in the
// log, applied by the state machine, and only then acknowledged.
//
// LocalReplicator is a one-voter group: it is the Raft host-side loop with the
// consensus step reduced to "a majority of one". It follows the etcd-raft
// order strictly — persist entries and hard state in one synced write, then
// apply, then answer — so the Raft core can replace the middle without the
// callers noticing.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "storage/log_store.h"
#include "storage/state_machine.h"

namespace quiver::replication {

using Clock = std::chrono::steady_clock;

class Replicator {
 public:
  virtual ~Replicator() = default;
  /// Proposes a serialized quiver.internal.v1.Command. Returns the log index
  /// once the entry is durable and applied, or the apply outcome's error
  /// (e.g. NOT_FOUND). DEADLINE_EXCEEDED or CANCELLED mean the outcome is
  /// unknown: the entry may still be applied.
  virtual Result<uint64_t> Propose(std::string command, Clock::time_point deadline) = 0;
};

struct LocalReplicatorOptions {
  /// Most entries made durable by one fsync (group commit). Default: 1024.
  size_t max_batch_entries = 1024;
  /// Most bytes of entry data per fsync. Default: 64 MiB.
  size_t max_batch_bytes = 64ull << 20;
  /// Entries kept in the log below the last checkpoint (for followers that
  /// will read them once Raft is on). Default: 64.
  uint64_t log_retention_entries = 64;
  /// Bytes of applied entries after which the applied state is flushed
  /// (StateMachine::Checkpoint) and the log compacted up to it. Bounds both
  /// the log's size and the replay after a crash. Default: 64 MiB.
  uint64_t checkpoint_every_bytes = 64ull << 20;
};

class LocalReplicator final : public Replicator {
 public:
  LocalReplicator(storage::LogStore* log, storage::StateMachine* state, LocalReplicatorOptions options = {});
  ~LocalReplicator() override;

  /// Checks the log against the applied state, replays the committed tail into
  /// the state machine, then starts the driver thread. Inconsistent state is
  /// FAILED_PRECONDITION with the recovery steps; CANCELLED if `stop` turns
  /// true during the replay.
  Status Start(const std::atomic<bool>* stop);

  Result<uint64_t> Propose(std::string command, Clock::time_point deadline) override;

  /// Refuses new proposals (UNAVAILABLE), finishes those already queued, and
  /// joins the driver. Idempotent.
  void Stop();

  /// Non-ok once a log or apply write has failed; the node must then stop.
  Status Health() const;

  /// Entries replayed by Start (for logs and tests).
  uint64_t replayed_entries() const { return replayed_; }

 private:
  struct Proposal {
    std::string data;
    std::promise<Result<uint64_t>> done;
  };

  void DriverLoop();
  // Flushes applied state and compacts the log, off the write path.
  void CheckpointLoop();
  void FailAll(std::deque<std::shared_ptr<Proposal>>& batch, const Status& st);

  storage::LogStore* log_;
  storage::StateMachine* state_;
  LocalReplicatorOptions options_;
  storage::HardState hard_state_;
  uint64_t replayed_ = 0;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Proposal>> queue_;
  bool stopping_ = false;
  bool started_ = false;
  bool checkpoint_requested_ = false;
  std::condition_variable checkpoint_cv_;
  Status fatal_;
  std::thread driver_;
  std::thread checkpointer_;
};

}  // namespace quiver::replication
