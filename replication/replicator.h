// The write path's entry point: a mutation is proposed, made durable in the
// log (on a majority), applied by the state machine, and only then
// acknowledged.
//
// RaftReplicator is the host side of the Raft core (replication/raft): one
// driver thread owns the core and follows the etcd-raft order — a leader's
// appends and heartbeats go out, entries and hard state are persisted in one
// synced write, then the other messages (votes, acknowledgements) are sent,
// then committed entries applied and their clients answered. A single node
// is a one-voter group on the same code path.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <set>
#include <thread>
#include <vector>

#include "common/status.h"
#include "replication/raft/raft.h"
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

  /// Returns once this node's state reflects every write acknowledged (by
  /// any node) before the call: a linearizable read may then run locally.
  /// UNAVAILABLE if no leader confirms in time, DEADLINE_EXCEEDED at the deadline.
  virtual Status ReadBarrier(Clock::time_point deadline) = 0;
};

/// How Raft messages leave this node. Send must not block the driver: queue
/// and return. Undeliverable messages are dropped; Raft retries.
class RaftTransport {
 public:
  virtual ~RaftTransport() = default;
  virtual void Send(std::vector<raft::Message> messages) = 0;
  /// The cluster id to stamp on what it sends; set by Start before any Send.
  virtual void SetClusterId(std::string cluster_id) {}
  /// Streams the files in `dir` (a snapshot the state machine exported) and
  /// then `message` (kSnapshot, naming the receiver) to the receiver, which
  /// stages them and hands both to its RaftReplicator::ReceiveSnapshot.
  /// Blocks until the receiver has accepted them (OK) or failed; called from
  /// the replicator's snapshot thread, one snapshot at a time.
  virtual Status SendSnapshot(const raft::Message& message, const std::string& dir) = 0;
  /// Ends a SendSnapshot in progress (CANCELLED) and refuses new ones: shutdown.
  virtual void CancelSnapshots() = 0;
  /// Where `node`'s peer port is, learned from a membership change: messages
  /// to it go there from now on. Called from the driver thread.
  virtual void SetPeerAddress(raft::NodeId node, const std::string& address) = 0;
};

/// Hands a write that reached a follower to the leader (service/ implements
/// it over the peer port). The leader answers once it applied the write.
class ProposalForwarder {
 public:
  virtual ~ProposalForwarder() = default;
  virtual Result<uint64_t> Forward(raft::NodeId leader, std::string command, Clock::time_point deadline) = 0;
};

struct RaftReplicatorOptions {
  /// This node's id in the group (never 0). Default: 1.
  raft::NodeId node_id = 1;
  /// The voters written to the log when a new cluster starts (an empty log).
  /// Empty means {node_id}: a single-node cluster.
  std::set<raft::NodeId> initial_voters;
  /// The cluster id written with them (every initial node must use the same).
  /// Peers refuse messages from another cluster's nodes. Default: "".
  std::string cluster_id;
  /// Length of one Raft tick. Elections start after 10-19 ticks without a
  /// leader; leaders heartbeat every tick. Default: 100 ms.
  std::chrono::milliseconds tick_interval{100};
  /// Most proposals turned into entries per durable append (group commit). Default: 1024.
  size_t max_batch_entries = 1024;
  /// Most bytes of proposals per durable append. Default: 64 MiB.
  size_t max_batch_bytes = 64ull << 20;
  /// Entries kept in the log below the last checkpoint, for followers that
  /// lag a little (further behind, they need a snapshot): the newest ones,
  /// at most this many and at most log_retention_bytes of them. Default: 64.
  uint64_t log_retention_entries = 64;
  /// Kept entries are flushed to files at every checkpoint, so the bound is
  /// also in bytes: 64 batches of 1,000 x 128-d vectors are 32 MiB, half of
  /// all a checkpoint covers. Default: 4 MiB.
  uint64_t log_retention_bytes = 4ull << 20;
  /// Bytes of applied entries after which the applied state is flushed
  /// (StateMachine::Checkpoint) and the log compacted up to it. Bounds both
  /// the log's size and the replay after a crash. Default: 64 MiB.
  uint64_t checkpoint_every_bytes = 64ull << 20;
  /// A leader compacts no further than its slowest member holds, as long as
  /// that costs at most this many extra entries; beyond, the member will need
  /// a snapshot. Default: 1,000,000.
  uint64_t max_log_hold_entries = 1'000'000;
  /// Where snapshots are staged, sent and received (created at Start; what
  /// is left there from an earlier run is removed). Empty: a follower that
  /// needs a snapshot stops with an error. Default: "".
  std::string snapshot_dir;
  /// Join an existing cluster (cluster_id: its id) instead of bootstrapping
  /// a new one: an empty log stays empty until the leader adds this node as a
  /// learner and replicates to it (AddMember, called on the leader), and a
  /// log whose membership does not name this node yet is accepted. A data
  /// directory with a cluster id but no log is joining too. Default: false.
  bool join = false;
  /// Peer addresses from configuration (`peers`, or the members a joining
  /// node was told about); they override recorded ones. Default: none.
  std::map<raft::NodeId, std::string> peer_addresses;
};

class RaftReplicator final : public Replicator {
 public:
  /// `transport` may be null for a single-node group.
  RaftReplicator(storage::LogStore* log, storage::StateMachine* state, RaftTransport* transport,
                 RaftReplicatorOptions options = {});
  ~RaftReplicator() override;

  /// Writes the initial membership into an empty log, checks the durable
  /// state (inconsistency is FAILED_PRECONDITION with the recovery steps),
  /// replays the committed tail into the state machine, then starts the driver
  /// and, in a one-voter group, becomes leader at once. CANCELLED if `stop`
  /// turns true during the replay.
  Status Start(const std::atomic<bool>* stop);

  /// On a follower, forwards to the leader (when a forwarder is set);
  /// UNAVAILABLE while no leader is known.
  Result<uint64_t> Propose(std::string command, Clock::time_point deadline) override;
  /// Proposes here, never forwarding (for writes forwarded to this node):
  /// UNAVAILABLE naming the leader if this node does not lead.
  Result<uint64_t> ProposeLocal(std::string command, Clock::time_point deadline);
  /// Set before Start; null: followers answer UNAVAILABLE.
  void set_forwarder(ProposalForwarder* forwarder) { forwarder_ = forwarder; }

  /// ReadIndex through the core (one heartbeat round on a cluster; free for
  /// a one-voter group's leader), then waits until applied.
  Status ReadBarrier(Clock::time_point deadline) override;

  /// A message from a peer, for the driver thread. Snapshot messages come
  /// only through ReceiveSnapshot (they need their files).
  void Receive(raft::Message message);

  /// A new, empty directory under snapshot_dir for the files of a snapshot
  /// that `from` is streaming to this node (the transport writes them).
  Result<std::string> NewIncomingSnapshotDir(raft::NodeId from, uint64_t index);
  /// The staged files of a snapshot (in `dir`, from NewIncomingSnapshotDir)
  /// and its kSnapshot message, for the driver thread, which installs them
  /// if the core still needs them; the directory is the replicator's now.
  void ReceiveSnapshot(raft::Message message, std::string dir);

  /// If this node leads a group of several voters, hands leadership to the
  /// most up-to-date voter and waits (at most `limit`) until it has; called
  /// at shutdown so writes stall for a heartbeat round, not an election.
  /// True if it led and handed over within the limit.
  bool HandOverLeadership(std::chrono::milliseconds limit);

  /// Proposes a membership change (leader only); answers once it is
  /// applied here. FAILED_PRECONDITION naming the leader on a follower, or
  /// while another change is in flight.
  Result<uint64_t> ChangeMembership(raft::ConfChange change, Clock::time_point deadline);

  /// Adds `node`, whose peer port is at `address`, as a learner (every member
  /// learns the address when it applies the change), waits until it holds
  /// everything committed when it was added, then makes it a voter; returns
  /// the index of that last change (leader only: FAILED_PRECONDITION naming
  /// the leader elsewhere). Safe to retry: a learner continues from its
  /// catch-up, a voter at the same address is OK at once.
  Result<uint64_t> AddMember(raft::NodeId node, const std::string& address, Clock::time_point deadline);

  /// Peer addresses learned from membership changes and snapshots, by node.
  std::map<raft::NodeId, std::string> PeerAddresses() const;

  /// Hands leadership to `target` (leader only); answers once this node
  /// sees `target` lead, or DEADLINE_EXCEEDED.
  Status TransferLeadership(raft::NodeId target, Clock::time_point deadline);

  /// Shutdown's drain period is over: answers every write and read still
  /// waiting (UNAVAILABLE; a write's outcome is then unknown) and refuses new
  /// ones, while the driver keeps running for the leadership hand-over.
  void CancelWaits();

  /// Refuses new proposals (UNAVAILABLE), answers those in flight (their
  /// outcome is unknown if they have not been applied), joins the driver. Idempotent.
  void Stop();

  /// Non-ok once a log or apply write has failed; the node must then stop.
  Status Health() const;

  /// Entries replayed by Start (for logs and tests).
  uint64_t replayed_entries() const { return replayed_; }

  /// The id of the cluster recorded in the data directory (valid after Start).
  const std::string& cluster_id() const { return cluster_id_; }

  struct GroupStatus {
    raft::NodeId id = raft::kNoNode;
    raft::NodeId leader = raft::kNoNode;
    raft::Role role = raft::Role::kFollower;
    uint64_t term = 0;
    uint64_t commit = 0;
    uint64_t applied = 0;
    raft::ConfState conf;
    /// Leader only: the lowest log index another member is known to hold.
    uint64_t slowest_member_match = UINT64_MAX;
    /// Leader only: every member's replication progress.
    std::map<raft::NodeId, raft::PeerProgress> progress;
    /// Writes waiting for the driver, and proposed but not yet applied.
    uint64_t writes_queued = 0;
    uint64_t writes_in_flight = 0;
    /// Snapshots streamed to followers, failed to stream, and installed here.
    uint64_t snapshots_sent = 0;
    uint64_t snapshots_failed = 0;
    uint64_t snapshots_installed = 0;
    std::string last_snapshot_error;
  };
  GroupStatus GetGroupStatus() const;

  /// Latency of the durable log appends (one fsync each), as a histogram.
  static constexpr std::array<double, 12> kLogSyncBucketsSeconds = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                                    0.01,   0.025,   0.05,   0.1,   0.25,   1.0};
  struct LogSyncHistogram {
    std::array<uint64_t, kLogSyncBucketsSeconds.size() + 1> counts{};  // per bucket, the last is +Inf
    double sum_seconds = 0;
  };
  LogSyncHistogram GetLogSyncHistogram() const;

 private:
  struct Proposal {
    std::string data;
    std::promise<Result<uint64_t>> done;
  };
  struct Pending {
    uint64_t term = 0;
    std::shared_ptr<Proposal> proposal;
  };
  struct Read {
    std::string context;
    Clock::time_point deadline;
    uint64_t index = 0;  // set once the leader confirmed it
    bool confirmed = false;
    std::promise<Status> done;
  };

  void DriverLoop();
  // Exports and streams the snapshots the core asks for, one at a time.
  void SnapshotLoop();
  // Driver thread: a follower installs the snapshot staged for `meta`.
  Status InstallSnapshot(const raft::SnapshotMeta& meta, const std::optional<storage::HardState>& hard_state);
  // Replaces the state with the files in `dir`, then resets the log to
  // `meta`, then clears the install record (Start redoes it after a crash).
  Status FinishInstall(const raft::SnapshotMeta& meta, const std::string& dir, storage::HardState hard_state);
  // Snapshot messages of a Ready go to the snapshot thread, not the transport.
  void QueueSnapshotSends(std::vector<raft::Message>* messages);
  // Driver thread (or Start): records where `node`'s peer port is, durably,
  // and tells the transport.
  Status LearnPeerAddresses(const std::map<raft::NodeId, std::string>& learned);
  // Persists, sends and applies every Ready the core has.
  // Driver thread: FAILED_PRECONDITION naming the leader unless this node leads.
  Status NotLeaderHere() const;
  Status HandleReady();
  Status HandleOneReady();
  Status ApplyCommitted(const std::vector<storage::LogEntry>& entries);
  void PublishStatus();
  // Starts queued reads in the core and answers those confirmed and applied.
  void ServeReads(std::vector<std::shared_ptr<Read>>* started);
  // Flushes applied state, records the snapshot point and compacts the log,
  // off the write path.
  void CheckpointLoop();
  raft::ConfState ConfAt(uint64_t index) const;  // requires mu_
  // How many of the newest entries at or below `covered` the checkpoint
  // keeps (log_retention_entries and log_retention_bytes). Requires mu_.
  uint64_t RetainedBelowLocked(uint64_t covered) const;
  void FailAllLocked(const Status& st);

  storage::LogStore* log_;
  storage::StateMachine* state_;
  RaftTransport* transport_;
  ProposalForwarder* forwarder_ = nullptr;
  RaftReplicatorOptions options_;
  uint64_t replayed_ = 0;
  std::string cluster_id_;

  // Owned by the driver thread (and by Start before it runs).
  std::unique_ptr<raft::Raft> raft_;
  std::map<uint64_t, Pending> pending_;  // log index -> proposal waiting for its apply
  std::map<std::string, std::shared_ptr<Read>> reads_;  // context -> read waiting for its ReadState
  uint64_t reads_term_ = 0;
  uint64_t next_read_ = 0;
  std::vector<Status> outcomes_;
  uint64_t bytes_since_checkpoint_ = 0;
  std::array<std::atomic<uint64_t>, kLogSyncBucketsSeconds.size() + 1> log_sync_counts_{};
  std::atomic<uint64_t> log_sync_micros_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Proposal>> queue_;
  std::vector<raft::Message> inbox_;
  std::vector<std::shared_ptr<Read>> read_queue_;
  // Operator actions, run on the driver thread (it owns the core).
  std::vector<std::function<void()>> driver_ops_;
  // Snapshots received and staged, for the driver; the one it stepped last.
  std::vector<std::pair<raft::Message, std::string>> snapshot_inbox_;
  std::optional<std::pair<uint64_t, std::string>> staged_snapshot_;  // driver thread: index, dir
  // Snapshots to send (kSnapshot messages), and the peers with one queued or in flight.
  std::deque<raft::Message> snapshot_sends_;
  std::set<raft::NodeId> snapshot_peers_;
  std::condition_variable snapshot_cv_;
  std::thread snapshot_sender_;
  // Serialises the checkpointer's compaction with snapshot exports and
  // installs. Lock order: compaction_mu_, then mu_.
  std::mutex compaction_mu_;
  // Stop() ran: long exports and installs give up (CANCELLED).
  std::atomic<bool> stop_requested_{false};
  std::condition_variable applied_cv_;  // status_.applied moved
  std::vector<raft::SnapshotMeta> snapshots_created_;
  // Membership as of each applied change since the last snapshot point.
  std::map<uint64_t, raft::ConfState> conf_history_;
  // (index, data bytes) of the newest applied entries, at most
  // log_retention_entries: what the checkpoint keeps below its point.
  std::deque<std::pair<uint64_t, uint64_t>> recent_applied_;
  GroupStatus status_;
  uint64_t snapshots_sent_ = 0;  // these four: under mu_
  uint64_t snapshots_failed_ = 0;
  uint64_t snapshots_installed_ = 0;
  std::string last_snapshot_error_;
  std::map<raft::NodeId, std::string> peer_addresses_;  // under mu_
  bool stopping_ = false;
  bool started_ = false;
  bool checkpoint_requested_ = false;
  bool handover_requested_ = false;
  bool cancelled_ = false;
  std::condition_variable checkpoint_cv_;
  Status fatal_;
  std::thread driver_;
  std::thread checkpointer_;
};

}  // namespace quiver::replication
