// The Raft consensus core: the algorithm only, with no I/O, no threads and no
// clock inside (the shape of etcd-io/raft's RawNode).
//
// The host drives it from one thread:
//   * Tick() at a fixed interval (the election and heartbeat timeouts are
//     counted in ticks), Step(m) for every message from a peer, and the local
//     operations Propose / ProposeConfChange / ReadIndex / TransferLeadership;
//   * while HasReady(): rd = GetReady(), then strictly in this order
//       1. install rd.snapshot (if any), then append rd.entries and
//          rd.hard_state to the durable log in ONE synced write;
//       2. send rd.messages;
//       3. apply rd.committed_entries (calling ApplyConfChange for
//          membership entries) and serve rd.read_states once applied;
//       4. Advance(rd).
//     No other call may come between GetReady and Advance.
//
// The core reads the durable log through storage::LogStore (so a restart never
// loads the whole log into memory); it never writes to it. Entries proposed or
// received but not yet handed out in a Ready live in memory ("unstable") and are
// lost by a crash, exactly like anything the host has not yet persisted.
//
// Safety rules this core keeps (each has a test in tests/unit/raft_test.cc):
//   * a leader commits only through an entry of its own term, and appends a
//     no-op on election so that happens promptly (the Figure 8 case);
//   * pre-vote: a node that cannot win does not raise its term, so a rejoining
//     node never deposes a healthy leader;
//   * check-quorum: a leader that has not heard from a majority within an
//     election timeout steps down, and a follower that has heard from a leader
//     within one ignores vote requests (the leader lease);
//   * one membership change at a time, only after the leader's no-op is
//     applied (the single-server change bug found after the Raft paper).
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "storage/log_store.h"

namespace quiver::replication::raft {

using NodeId = uint64_t;
inline constexpr NodeId kNoNode = 0;

enum class Role : uint8_t { kFollower, kPreCandidate, kCandidate, kLeader };
std::string_view RoleName(Role role);

/// Membership: voters decide elections and commits; learners only receive the log.
struct ConfState {
  std::set<NodeId> voters;
  std::set<NodeId> learners;
  bool operator==(const ConfState&) const = default;
};

enum class ConfChangeType : uint8_t { kAddVoter = 0, kAddLearner = 1, kRemoveNode = 2 };

/// A single-server membership change, carried by a kConfChange log entry.
struct ConfChange {
  ConfChangeType type = ConfChangeType::kAddVoter;
  NodeId node = kNoNode;
  /// Opaque to the core; the host puts the added node's peer address here,
  /// so every member learns it when it applies the change. At most 1 KiB.
  std::string context{};
  bool operator==(const ConfChange&) const = default;
};
inline constexpr size_t kMaxConfChangeContextBytes = 1024;
std::string EncodeConfChange(const ConfChange& change);
Result<ConfChange> DecodeConfChange(std::string_view data);

/// What identifies a snapshot: the last entry it covers and the membership at
/// that entry. The data (a checkpoint) travels beside it, outside the core.
struct SnapshotMeta {
  uint64_t index = 0;
  uint64_t term = 0;
  ConfState conf;
  bool operator==(const SnapshotMeta&) const = default;
};

/// Binary form of SnapshotMeta for the host's durable snapshot record.
std::string EncodeSnapshotMeta(const SnapshotMeta& meta);
Result<SnapshotMeta> DecodeSnapshotMeta(std::string_view data);

enum class MessageType : uint8_t {
  kAppend,             // entries after (index, log_term), plus the leader's commit
  kAppendResponse,     // index = last matching index, or reject with a hint
  kHeartbeat,          // commit, and context for a ReadIndex round
  kHeartbeatResponse,  // context echoed
  kPreVote,            // term = candidate's term + 1, not yet taken
  kPreVoteResponse,
  kVote,
  kVoteResponse,
  kSnapshot,           // snapshot metadata; the host streams the data
  kTimeoutNow,         // leadership transfer: campaign now
  kReadIndex,          // a follower asks the leader for a read index
  kReadIndexResponse,  // index = read index, context echoed
};
std::string_view MessageTypeName(MessageType type);

struct Message {
  MessageType type = MessageType::kAppend;
  NodeId from = kNoNode;
  NodeId to = kNoNode;
  uint64_t term = 0;
  /// kAppend: the entry preceding `entries`; votes: the candidate's last entry.
  uint64_t log_term = 0;
  uint64_t index = 0;
  std::vector<storage::LogEntry> entries;
  uint64_t commit = 0;
  bool reject = false;
  /// kAppendResponse with reject: the follower's last index (where to probe).
  uint64_t reject_hint = 0;
  SnapshotMeta snapshot;
  /// kReadIndex*/kHeartbeat*: the read request; kVote: kCampaignTransfer.
  std::string context;
};

/// A linearizable read may be served once the state machine has applied `index`.
struct ReadState {
  uint64_t index = 0;
  std::string context;
};

struct Ready {
  /// Who leads and what this node is (informational; not persisted).
  NodeId leader = kNoNode;
  Role role = Role::kFollower;
  /// Set when the hard state changed: persist it with `entries`.
  std::optional<storage::HardState> hard_state;
  /// A snapshot received from the leader: install its data and reset the log
  /// to start after snapshot->index before appending `entries`.
  std::optional<SnapshotMeta> snapshot;
  std::vector<storage::LogEntry> entries;
  std::vector<storage::LogEntry> committed_entries;
  std::vector<Message> messages;
  std::vector<ReadState> read_states;
};

struct Config {
  NodeId id = kNoNode;
  /// Ticks without a leader's message before a follower campaigns; the actual
  /// timeout is drawn from [election_ticks, 2 * election_ticks). Default: 10.
  int election_ticks = 10;
  /// Ticks between a leader's heartbeats. Must be below election_ticks. Default: 1.
  int heartbeat_ticks = 1;
  /// Default: true (see the header comment).
  bool pre_vote = true;
  /// Default: true.
  bool check_quorum = true;
  /// Most entry bytes in one kAppend (at least one entry is always sent). Default: 1 MiB.
  uint64_t max_bytes_per_message = 1ull << 20;
  /// Most kAppend messages in flight to one follower (flow control). Default: 256.
  size_t max_inflight_messages = 256;
  /// Most entry bytes in one Ready's committed_entries. Default: 64 MiB.
  uint64_t max_committed_bytes_per_ready = 64ull << 20;
  /// Index the state machine has applied (read from it at start).
  uint64_t applied = 0;
  /// Membership as of `applied` (from the newest snapshot plus the conf
  /// changes applied since; for a new cluster, its initial voters).
  ConfState conf;
  /// The newest snapshot this node holds (index 0: none).
  SnapshotMeta snapshot;
  /// Seeds the election timeout jitter, so simulations replay exactly.
  uint64_t random_seed = 0;

  Status Validate() const;
};

/// A leader's view of one peer's replication, for status pages and the
/// decision to promote a learner.
struct PeerProgress {
  uint64_t match = 0;
  uint64_t next = 0;
  bool learner = false;
  bool recent_active = false;
};

/// Prefix of the kVote context that marks a leadership-transfer election:
/// voters grant it even inside the leader lease.
inline constexpr std::string_view kCampaignTransfer = "transfer";

class RaftLog;

/// Writes a new cluster's initial voters into an empty log as committed
/// membership entries 1..n of term 1 (every initial voter writes the same), so
/// a node that joins later replays the same membership history. Start the
/// core with an empty Config::conf afterwards: applying the entries sets it.
/// FAILED_PRECONDITION if the log is not empty.
Status Bootstrap(storage::LogStore* log, const std::set<NodeId>& voters);

class Raft {
 public:
  /// Checks the durable state against `config` and starts as a follower.
  /// Inconsistent state — a hard state ahead of the log, a log without its
  /// hard state, applied beyond commit, entries missing between the snapshot
  /// and the log — is FAILED_PRECONDITION naming what is wrong.
  static Result<std::unique_ptr<Raft>> Create(Config config, const storage::LogStore* log);

  Raft(const Raft&) = delete;
  Raft& operator=(const Raft&) = delete;
  ~Raft();

  /// Advances the logical clock by one tick.
  void Tick();
  /// Handles a message from a peer. Messages for another node or from
  /// an older term are dropped (OK: that is normal in an unreliable network).
  Status Step(const Message& m);

  /// Appends a command; returns its index. UNAVAILABLE (naming the leader, if
  /// known) on a non-leader or during a leadership transfer.
  Result<uint64_t> Propose(std::string data);
  /// Appends a membership change; returns its index. FAILED_PRECONDITION
  /// while another change is not yet applied or if it would leave no voter.
  Result<uint64_t> ProposeConfChange(const ConfChange& change);
  /// Starts a ReadIndex round; its ReadState (with `context`) appears in a
  /// later Ready. UNAVAILABLE if no leader is known. A round may be lost with
  /// the leader: the host retries after a timeout with a new context.
  Status ReadIndex(std::string context);
  /// Hands leadership to `target` (leader only).
  Status TransferLeadership(NodeId target);
  /// Campaigns now (tests, and a single node's fast start).
  void Campaign();

  /// Applies a committed membership change; returns the new membership.
  ConfState ApplyConfChange(const ConfChange& change);
  /// The host created a snapshot (and may then compact the log up to it).
  void SnapshotCreated(const SnapshotMeta& meta);
  /// The host failed to reach `peer` / to send it a snapshot.
  void ReportUnreachable(NodeId peer);
  void ReportSnapshot(NodeId peer, bool failed);

  bool HasReady() const;
  Ready GetReady();
  void Advance(const Ready& ready);

  /// Non-ok once reading the durable log failed: the node must stop.
  const Status& fatal() const { return fatal_; }

  NodeId id() const { return config_.id; }
  NodeId leader() const { return lead_; }
  Role role() const { return role_; }
  uint64_t term() const { return term_; }
  uint64_t commit() const;
  uint64_t applied() const;
  uint64_t last_index() const;
  /// Term of entry `index` in this node's log (durable or not); 0 if unknown.
  uint64_t TermAt(uint64_t index) const;
  const ConfState& conf() const { return conf_; }
  /// Leader only: replication progress of every member (self included).
  std::map<NodeId, PeerProgress> Progress() const;

 private:
  struct Peer;

  Raft(Config config, const storage::LogStore* log);

  void BecomeFollower(uint64_t term, NodeId leader);
  void BecomePreCandidate();
  void BecomeCandidate();
  void BecomeLeader();
  void Reset(uint64_t term);
  void StartElection(bool pre_vote, bool transfer);
  // Counts a vote; returns granted - needed majority outcome: 1 won, -1 lost, 0 pending.
  int Poll(NodeId from, bool granted);
  bool Promotable() const;
  size_t Quorum() const;

  void StepLeader(const Message& m);
  void StepCandidate(const Message& m);
  void StepFollower(const Message& m);
  void HandleVoteRequest(const Message& m);
  void HandleAppend(const Message& m);
  void HandleHeartbeat(const Message& m);
  void HandleSnapshot(const Message& m);
  void HandleAppendResponse(const Message& m);
  void HandleHeartbeatResponse(const Message& m);
  void HandleReadIndexRequest(NodeId from, std::string context);

  // Appends one entry of this term (moved: it may be a batch of vectors).
  void AppendEntry(storage::LogEntry entry);
  bool MaybeCommit();
  bool SendAppend(NodeId to, bool send_if_empty);
  void SendSnapshot(NodeId to);
  void BroadcastAppend();
  void BroadcastHeartbeat(const std::string& context);
  void SendTimeoutNow(NodeId to);
  void Send(Message m);
  void AbortTransfer();
  // UNAVAILABLE (naming the leader) unless this node leads and is not handing over.
  Status CheckCanPropose() const;
  bool CommittedInCurrentTerm() const;
  void ReleasePendingReads();
  void Fail(Status status);

  Config config_;
  std::unique_ptr<RaftLog> log_;
  std::mt19937_64 rng_;

  uint64_t term_ = 0;
  NodeId vote_ = kNoNode;
  NodeId lead_ = kNoNode;
  Role role_ = Role::kFollower;
  ConfState conf_;
  SnapshotMeta snapshot_;

  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;

  std::map<NodeId, std::unique_ptr<Peer>> peers_;  // leader only
  std::map<NodeId, bool> votes_;
  uint64_t pending_conf_index_ = 0;
  NodeId lead_transferee_ = kNoNode;

  struct PendingRead {
    uint64_t index = 0;
    NodeId from = kNoNode;
    std::string context;
    std::set<NodeId> acks;
  };
  std::deque<PendingRead> pending_reads_;           // leader: waiting for a heartbeat quorum
  std::vector<std::pair<NodeId, std::string>> reads_before_commit_;  // leader: before its no-op commits
  std::vector<ReadState> read_states_;

  std::vector<Message> outbox_;
  storage::HardState prev_hard_state_;
  NodeId prev_leader_ = kNoNode;
  Role prev_role_ = Role::kFollower;
  Status fatal_;
};

}  // namespace quiver::replication::raft
