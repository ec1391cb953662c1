#include <algorithm>
#include <vector>

#include "replication/replicator.h"

namespace quiver::replication {

namespace {
constexpr uint64_t kReplayChunkBytes = 32ull << 20;

std::string RecoveryHint() {
  return " The data directory is inconsistent; restore it from a backup (or a replica's snapshot) — "
         "do not edit Raft state by hand. See docs/operations.md#recovery.";
}
}  // namespace

LocalReplicator::LocalReplicator(storage::LogStore* log, storage::StateMachine* state, LocalReplicatorOptions options)
    : log_(log), state_(state), options_(options) {}

LocalReplicator::~LocalReplicator() { Stop(); }

Status LocalReplicator::Start(const std::atomic<bool>* stop) {
  QUIVER_ASSIGN_OR_RETURN(hard_state_, log_->GetHardState());
  const uint64_t first = log_->FirstIndex();
  const uint64_t last = log_->LastIndex();
  const uint64_t applied = state_->AppliedIndex();
  if (hard_state_.commit > last) {
    return Status::FailedPrecondition("hard state commit index " + std::to_string(hard_state_.commit) +
                                      " is ahead of the last log entry " + std::to_string(last) + "." +
                                      RecoveryHint());
  }
  if (applied > hard_state_.commit && applied > last) {
    return Status::FailedPrecondition("applied index " + std::to_string(applied) + " is ahead of the log (last " +
                                      std::to_string(last) + ", commit " + std::to_string(hard_state_.commit) +
                                      "): the log was lost." + RecoveryHint());
  }
  if (applied + 1 < first) {
    return Status::FailedPrecondition("log starts at " + std::to_string(first) + " but only " +
                                      std::to_string(applied) + " entries are applied: entries in between are gone." +
                                      RecoveryHint());
  }
  if (hard_state_.term == 0) hard_state_.term = 1;  // a single node's constant term

  // Replay the committed tail. A single node commits what it appends, so
  // commit == last; entries beyond commit could only come from a future Raft
  // follower and are not applied here.
  const uint64_t commit = hard_state_.commit;
  std::vector<Status> outcomes;
  for (uint64_t next = applied + 1; next <= commit;) {
    if (stop != nullptr && stop->load()) return Status::Cancelled("shutdown requested during log replay");
    QUIVER_ASSIGN_OR_RETURN(auto entries, log_->Entries(next, commit + 1, kReplayChunkBytes));
    QUIVER_RETURN_IF_ERROR(state_->Apply(entries, &outcomes).WithContext("replaying log"));
    replayed_ += entries.size();
    next = entries.back().index + 1;
  }
  std::lock_guard lock(mu_);
  started_ = true;
  driver_ = std::thread([this] { DriverLoop(); });
  checkpointer_ = std::thread([this] { CheckpointLoop(); });
  return Status::Ok();
}

Result<uint64_t> LocalReplicator::Propose(std::string command, Clock::time_point deadline) {
  auto p = std::make_shared<Proposal>();
  p->data = std::move(command);
  auto future = p->done.get_future();
  {
    std::lock_guard lock(mu_);
    if (!fatal_.ok()) return Status::Unavailable("node is stopping after a storage failure: " + fatal_.message());
    if (stopping_ || !started_) return Status::Unavailable("node is not accepting writes (shutting down or starting)");
    queue_.push_back(p);
  }
  cv_.notify_one();
  if (future.wait_until(deadline) != std::future_status::ready) {
    return Status::DeadlineExceeded("write not acknowledged before the deadline; it may still be applied");
  }
  return future.get();
}

void LocalReplicator::Stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  checkpoint_cv_.notify_all();
  if (driver_.joinable()) driver_.join();
  if (checkpointer_.joinable()) checkpointer_.join();
}

Status LocalReplicator::Health() const {
  std::lock_guard lock(mu_);
  return fatal_;
}

void LocalReplicator::FailAll(std::deque<std::shared_ptr<Proposal>>& batch, const Status& st) {
  for (auto& p : batch) p->done.set_value(st);
  batch.clear();
}

void LocalReplicator::DriverLoop() {
  std::deque<std::shared_ptr<Proposal>> batch;
  std::vector<storage::LogEntry> entries;
  std::vector<Status> outcomes;
  uint64_t bytes_since_checkpoint = 0;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      size_t bytes = 0;
      while (!queue_.empty() && batch.size() < options_.max_batch_entries &&
             (batch.empty() || bytes + queue_.front()->data.size() <= options_.max_batch_bytes)) {
        bytes += queue_.front()->data.size();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    // Group commit: every proposal that queued while the previous fsync ran
    // shares this one.
    entries.clear();
    uint64_t index = log_->LastIndex();
    for (auto& p : batch) {
      storage::LogEntry e;
      e.index = ++index;
      e.term = hard_state_.term;
      e.type = storage::EntryType::kCommand;
      e.data = std::move(p->data);
      entries.push_back(std::move(e));
    }
    storage::HardState hs = hard_state_;
    hs.commit = index;
    Status st = log_->Append(entries, &hs);
    if (st.ok()) {
      hard_state_ = hs;
      st = state_->Apply(entries, &outcomes);
    }
    if (!st.ok()) {
      // The log or the state could not be written: nothing more may be
      // acknowledged. Fail this batch and everything queued.
      std::deque<std::shared_ptr<Proposal>> rest;
      {
        std::lock_guard lock(mu_);
        fatal_ = st;
        rest.swap(queue_);
      }
      FailAll(batch, Status::Unavailable("storage failure: " + st.message()));
      FailAll(rest, Status::Unavailable("storage failure: " + st.message()));
      return;
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (outcomes[i].ok()) {
        batch[i]->done.set_value(entries[i].index);
      } else {
        batch[i]->done.set_value(outcomes[i]);
      }
    }
    batch.clear();
    for (const auto& e : entries) bytes_since_checkpoint += e.data.size();
    if (bytes_since_checkpoint >= options_.checkpoint_every_bytes) {
      bytes_since_checkpoint = 0;
      {
        std::lock_guard lock(mu_);
        checkpoint_requested_ = true;
      }
      checkpoint_cv_.notify_one();
    }
  }
}

void LocalReplicator::CheckpointLoop() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      checkpoint_cv_.wait(lock, [&] { return stopping_ || checkpoint_requested_; });
      if (stopping_) return;  // the server flushes everything at shutdown
      checkpoint_requested_ = false;
    }
    // Only entries whose effects are flushed may leave the log: a crash loses
    // the unflushed rest, and the restart replays it.
    Result<uint64_t> durable = state_->Checkpoint();
    Status st = durable.status();
    if (st.ok() && *durable > options_.log_retention_entries) {
      const uint64_t upto = *durable - options_.log_retention_entries;
      if (upto >= log_->FirstIndex()) st = log_->CompactTo(upto);
    }
    if (!st.ok()) {
      std::lock_guard lock(mu_);
      fatal_ = st;
      return;
    }
  }
}

}  // namespace quiver::replication
