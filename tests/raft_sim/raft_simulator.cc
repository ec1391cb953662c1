#include "raft_sim/raft_simulator.h"

#include <algorithm>
#include <deque>
#include <iostream>
#include <map>
#include <memory>
#include <queue>
#include <random>
#include <set>
#include <sstream>
#include <vector>

#include "replication/raft/raft.h"
#include "storage/log_store.h"

namespace quiver::raft_sim {
namespace {

using replication::raft::ConfChange;
using replication::raft::ConfChangeType;
using replication::raft::ConfState;
using replication::raft::Message;
using replication::raft::MessageType;
using replication::raft::MessageTypeName;
using replication::raft::NodeId;
using replication::raft::Raft;
using replication::raft::ReadState;
using replication::raft::Ready;
using replication::raft::Role;
using replication::raft::SnapshotMeta;
using storage::EntryType;
using storage::LogEntry;

constexpr uint64_t kTick = 10;           // time units per tick
constexpr uint64_t kQuietDuration = 3000;  // healed phase at the end
constexpr uint64_t kLogRetention = 5;      // entries kept below a snapshot
constexpr uint64_t kSettleTime = 500;      // last units of the quiet phase without clients

// A snapshot's data: the write ids applied up to meta.index, in order.
struct SnapshotData {
  SnapshotMeta meta;
  std::vector<uint64_t> values;
};

struct Envelope {
  uint64_t deliver_at = 0;
  uint64_t seq = 0;
  Message msg;
  std::shared_ptr<const SnapshotData> snapshot;
  bool operator>(const Envelope& o) const {
    return deliver_at != o.deliver_at ? deliver_at > o.deliver_at : seq > o.seq;
  }
};

struct Node {
  NodeId id = 0;
  bool up = false;
  uint64_t tick_phase = 0;
  uint64_t restart_at = 0;
  uint64_t incarnation = 0;
  // Durable: survives crashes, except a commit index written without a sync
  // (storage::AppendMustSync) that no synced write or snapshot has followed.
  storage::MemoryLogStore log;
  storage::HardState synced_hard_state;
  SnapshotData snapshot;
  // Volatile.
  std::unique_ptr<Raft> raft;
  std::vector<uint64_t> values;
  uint64_t applied = 0;
  ConfState conf;
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> proposals;  // index -> (write id, term)
  std::map<std::string, uint64_t> reads;                          // context -> index it must reach
  std::vector<ReadState> ready_reads;
  std::map<uint64_t, std::shared_ptr<const SnapshotData>> received;
  // Snapshot sends finished (peer, failed), reported to the core after Advance.
  std::vector<std::pair<NodeId, bool>> snapshot_reports;
};

std::string EntryKey(const LogEntry& e) { return std::to_string(static_cast<int>(e.type)) + ":" + std::string(e.data); }

class Simulation {
 public:
  Simulation(uint64_t seed, const SimOptions& options) : seed_(seed), options_(options), rng_(seed) {}

  SimResult Run();

 private:
  bool Chance(double p) { return std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < p; }
  uint64_t Uniform(uint64_t lo, uint64_t hi) { return std::uniform_int_distribution<uint64_t>(lo, hi)(rng_); }
  Node& node(NodeId id) { return *nodes_[id - 1]; }
  bool faulty() const { return now_ < options_.duration; }

  void Trace(const std::string& event);
  void Fail(const std::string& why);

  void Start(Node& n);
  void Crash(Node& n);
  void Process(Node& n);
  void Persist(Node& n, const Ready& rd);
  void CheckLogMatching(Node& n, const std::vector<LogEntry>& entries);
  void CheckLeaderCompleteness(Node& n);
  void Apply(Node& n, const LogEntry& e);
  void ServeReads(Node& n);
  void MaybeSnapshot(Node& n);
  void Send(Node& from, Message m);
  void Deliver(Envelope env);

  Node* RandomUpNode();
  Node* RandomLeader();
  void ProposeWrite();
  void IssueRead();
  void TransferLeadership();
  void ChangeMembership();
  void Repartition();
  void FinalChecks();

  uint64_t seed_;
  SimOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<int> group_;
  std::priority_queue<Envelope, std::vector<Envelope>, std::greater<>> network_;
  uint64_t now_ = 0;
  uint64_t seq_ = 0;

  std::map<uint64_t, LogEntry> applied_at_;                                     // index -> entry
  // index -> the lowest term of a node when it applied the entry. A node
  // applies what a leader of its term or an earlier one committed, so this
  // is never below the term the entry was committed in.
  std::map<uint64_t, uint64_t> commit_term_bound_;
  std::map<std::pair<uint64_t, uint64_t>, std::pair<std::string, uint64_t>> seen_;  // (index, term) -> (entry, prev term)
  std::map<uint64_t, NodeId> leader_of_term_;
  std::map<uint64_t, uint64_t> write_index_;  // write id -> index it was applied at
  std::set<uint64_t> acked_;
  uint64_t max_acked_index_ = 0;
  uint64_t next_write_id_ = 1;
  uint64_t next_read_id_ = 1;
  uint64_t first_quiet_write_ = 0;
  std::deque<std::string> trace_;
  SimResult result_;
};

void Simulation::Trace(const std::string& event) {
  std::string line = "t=" + std::to_string(now_) + " " + event;
  if (options_.verbose) std::cerr << line << "\n";
  trace_.push_back(std::move(line));
  if (trace_.size() > 60) trace_.pop_front();
}

void Simulation::Fail(const std::string& why) {
  if (!result_.ok) return;
  result_.ok = false;
  std::ostringstream out;
  out << "seed " << seed_ << " at t=" << now_ << ": " << why << "\nlast events:\n";
  for (const auto& line : trace_) out << "  " << line << "\n";
  result_.failure = out.str();
}

void Simulation::Start(Node& n) {
  n.up = true;
  ++n.incarnation;
  n.values = n.snapshot.values;
  n.applied = n.snapshot.meta.index;
  n.conf = n.snapshot.meta.conf;
  replication::raft::Config config;
  config.id = n.id;
  config.election_ticks = 10;
  config.heartbeat_ticks = 1;
  config.pre_vote = options_.pre_vote;
  config.check_quorum = options_.check_quorum;
  config.max_bytes_per_message = 24;  // a few entries per message: exercises flow control
  config.max_inflight_messages = 4;
  config.max_committed_bytes_per_ready = 64;
  config.applied = n.applied;
  config.conf = n.conf;
  config.snapshot = n.snapshot.meta;
  config.random_seed = seed_ * 7919 + n.incarnation;
  auto raft = Raft::Create(config, &n.log);
  if (!raft.ok()) {
    Fail("node " + std::to_string(n.id) + " cannot restart: " + raft.status().ToString());
    n.up = false;
    return;
  }
  n.raft = std::move(raft).value();
  Trace("start node " + std::to_string(n.id) + " applied=" + std::to_string(n.applied) +
        " last=" + std::to_string(n.log.LastIndex()));
  Process(n);
}

void Simulation::Crash(Node& n) {
  Trace("crash node " + std::to_string(n.id));
  ++result_.crashes;
  // A commit index written without a sync may or may not have reached the disk.
  const storage::HardState written = *n.log.GetHardState();
  if (!(written == n.synced_hard_state) && Chance(0.5)) {
    Trace("node " + std::to_string(n.id) + " loses its unsynced commit index " + std::to_string(written.commit) +
          " (back to " + std::to_string(n.synced_hard_state.commit) + ")");
    if (Status st = n.log.Append({}, &n.synced_hard_state); !st.ok()) Fail("restore hard state: " + st.ToString());
    ++result_.commit_indexes_lost;
  }
  n.up = false;
  n.raft.reset();
  n.values.clear();
  n.applied = 0;
  n.proposals.clear();
  n.reads.clear();
  n.ready_reads.clear();
  n.received.clear();
  n.snapshot_reports.clear();
  n.restart_at = now_ + Uniform(20, 400);
}

void Simulation::Process(Node& n) {
  while (result_.ok && n.up && n.raft->HasReady()) {
    Ready rd = n.raft->GetReady();
    if (rd.role == Role::kLeader) {
      const uint64_t term = n.raft->term();
      auto [it, inserted] = leader_of_term_.emplace(term, n.id);
      if (!inserted && it->second != n.id) {
        Fail("election safety: nodes " + std::to_string(it->second) + " and " + std::to_string(n.id) +
             " both lead term " + std::to_string(term));
        return;
      }
      if (inserted) {
        ++result_.leader_terms;
        Trace("node " + std::to_string(n.id) + " leads term " + std::to_string(term));
        CheckLeaderCompleteness(n);
      }
    }
    if (rd.role == Role::kLeader) {
      // A leader's appends leave before its own write of them is durable
      // (RaftReplicator overlaps the two fsyncs); a crash may fall between.
      std::vector<Message> after_persist;
      for (Message& m : rd.messages) {
        if (m.type == MessageType::kAppend || m.type == MessageType::kHeartbeat) {
          Send(n, std::move(m));
        } else {
          after_persist.push_back(std::move(m));
        }
      }
      rd.messages = std::move(after_persist);
      if (!rd.entries.empty() && faulty() && options_.crash_rate > 0 && Chance(options_.crash_before_persist_rate)) {
        Trace("node " + std::to_string(n.id) + " crashes before its appends are durable");
        Crash(n);
        return;
      }
    }
    Persist(n, rd);
    if (!result_.ok) return;
    for (Message& m : rd.messages) Send(n, std::move(m));
    for (const LogEntry& e : rd.committed_entries) Apply(n, e);
    for (ReadState& rs : rd.read_states) n.ready_reads.push_back(std::move(rs));
    n.raft->Advance(rd);
    for (auto [peer, failed] : n.snapshot_reports) n.raft->ReportSnapshot(peer, failed);
    n.snapshot_reports.clear();
    if (!n.raft->fatal().ok()) {
      Fail("node " + std::to_string(n.id) + " stopped: " + n.raft->fatal().ToString());
      return;
    }
    ServeReads(n);
    MaybeSnapshot(n);
  }
  if (result_.ok && n.up && !n.raft->fatal().ok()) {
    Fail("node " + std::to_string(n.id) + " stopped: " + n.raft->fatal().ToString());
  }
}

void Simulation::Persist(Node& n, const Ready& rd) {
  if (rd.snapshot) {
    auto it = n.received.find(rd.snapshot->index);
    if (it == n.received.end() || !(it->second->meta == *rd.snapshot)) {
      Fail("node " + std::to_string(n.id) + " was told to install snapshot " + std::to_string(rd.snapshot->index) +
           " it never received");
      return;
    }
    const SnapshotData& data = *it->second;
    // The snapshot must hold exactly the writes applied anywhere up to its index.
    std::vector<uint64_t> expect;
    for (const auto& [index, e] : applied_at_) {
      if (index > data.meta.index) break;
      if (e.type == EntryType::kCommand) expect.push_back(std::stoull(std::string(e.data)));
    }
    if (expect != data.values) {
      Fail("snapshot " + std::to_string(data.meta.index) + " disagrees with the applied history");
      return;
    }
    storage::HardState hs = rd.hard_state ? *rd.hard_state : *n.log.GetHardState();
    if (Status st = n.log.ResetToSnapshot(data.meta.index, data.meta.term, hs); !st.ok()) {
      Fail("reset to snapshot: " + st.ToString());
      return;
    }
    n.synced_hard_state = hs;
    n.snapshot = data;
    n.values = data.values;
    n.applied = data.meta.index;
    n.conf = data.meta.conf;
    for (auto p = n.proposals.begin(); p != n.proposals.end() && p->first <= data.meta.index;) p = n.proposals.erase(p);
    ++result_.snapshots_installed;
    Trace("node " + std::to_string(n.id) + " installs snapshot " + std::to_string(data.meta.index));
  }
  if (!rd.entries.empty() || rd.hard_state) {
    const storage::HardState* hs = rd.hard_state ? &*rd.hard_state : nullptr;
    const bool synced = storage::AppendMustSync(rd.entries, hs, *n.log.GetHardState());
    if (Status st = n.log.Append(rd.entries, hs); !st.ok()) {
      Fail("node " + std::to_string(n.id) + " append: " + st.ToString());
      return;
    }
    if (synced) n.synced_hard_state = *n.log.GetHardState();
    CheckLogMatching(n, rd.entries);
  }
}

void Simulation::CheckLogMatching(Node& n, const std::vector<LogEntry>& entries) {
  for (const LogEntry& e : entries) {
    uint64_t prev = UINT64_MAX;
    if (Result<uint64_t> t = n.log.Term(e.index - 1); t.ok()) prev = *t;
    auto [it, inserted] = seen_.try_emplace({e.index, e.term}, EntryKey(e), prev);
    if (inserted) continue;
    if (it->second.first != EntryKey(e)) {
      Fail("log matching: two different entries at index " + std::to_string(e.index) + " term " +
           std::to_string(e.term) + " (node " + std::to_string(n.id) + ")");
      return;
    }
    if (prev != UINT64_MAX && it->second.second != UINT64_MAX && prev != it->second.second) {
      Fail("log matching: entry " + std::to_string(e.index) + "/" + std::to_string(e.term) +
           " follows different terms on two nodes (node " + std::to_string(n.id) + ")");
      return;
    }
  }
}

// Raft's leader completeness: an entry committed in term t is in the log of
// every leader of a term above t. A leader of an older term may still win
// its election after a newer leader committed something (its votes were
// granted before the voters moved on, and reached it late); it can commit
// nothing then, and the entry is not required of it.
void Simulation::CheckLeaderCompleteness(Node& n) {
  for (const auto& [index, e] : applied_at_) {
    if (commit_term_bound_.at(index) >= n.raft->term()) continue;
    const uint64_t term = n.raft->TermAt(index);
    if (term == e.term) continue;
    if (term == 0 && index <= n.snapshot.meta.index) continue;  // covered by its snapshot
    Fail("leader completeness: node " + std::to_string(n.id) + " leads term " + std::to_string(n.raft->term()) +
         " without committed entry " + std::to_string(index) + "/" + std::to_string(e.term) + " (has term " +
         std::to_string(term) + ")");
    return;
  }
}

void Simulation::Apply(Node& n, const LogEntry& e) {
  if (e.index != n.applied + 1) {
    Fail("node " + std::to_string(n.id) + " applies index " + std::to_string(e.index) + " after " +
         std::to_string(n.applied));
    return;
  }
  auto [it, inserted] = applied_at_.try_emplace(e.index, e);
  if (!inserted && !(it->second == e)) {
    Fail("state machine safety: node " + std::to_string(n.id) + " applies " + std::to_string(e.index) + "/" +
         std::to_string(e.term) + " where another node applied " + std::to_string(it->second.index) + "/" +
         std::to_string(it->second.term));
    return;
  }
  if (inserted) ++result_.applied_entries;
  auto [bound, first] = commit_term_bound_.try_emplace(e.index, n.raft->term());
  if (!first) bound->second = std::min(bound->second, n.raft->term());
  n.applied = e.index;
  auto proposal = n.proposals.find(e.index);
  switch (e.type) {
    case EntryType::kCommand: {
      const uint64_t id = std::stoull(std::string(e.data));
      n.values.push_back(id);
      auto [w, fresh] = write_index_.emplace(id, e.index);
      if (!fresh && w->second != e.index) {
        Fail("write " + std::to_string(id) + " applied at two indexes");
        return;
      }
      if (proposal != n.proposals.end() && proposal->second.first == id) {
        acked_.insert(id);
        max_acked_index_ = std::max(max_acked_index_, e.index);
        ++result_.acknowledged_writes;
      }
      break;
    }
    case EntryType::kConfChange: {
      auto change = replication::raft::DecodeConfChange(e.data);
      if (!change.ok()) {
        Fail("bad conf change entry: " + change.status().ToString());
        return;
      }
      n.conf = n.raft->ApplyConfChange(*change);
      Trace("node " + std::to_string(n.id) + " applies conf change " + std::to_string(static_cast<int>(change->type)) +
            " node " + std::to_string(change->node) + " at " + std::to_string(e.index));
      break;
    }
    case EntryType::kNoop: break;
  }
  if (proposal != n.proposals.end()) n.proposals.erase(proposal);
}

void Simulation::ServeReads(Node& n) {
  for (auto it = n.ready_reads.begin(); it != n.ready_reads.end();) {
    if (it->index > n.applied) {
      ++it;
      continue;
    }
    auto read = n.reads.find(it->context);
    if (read != n.reads.end()) {
      if (it->index < read->second) {
        Fail("stale read " + it->context + " on node " + std::to_string(n.id) + ": read index " +
             std::to_string(it->index) + " but a write at " + std::to_string(read->second) +
             " was acknowledged before the read began");
        return;
      }
      ++result_.reads_served;
      n.reads.erase(read);
    }
    it = n.ready_reads.erase(it);
  }
}

void Simulation::MaybeSnapshot(Node& n) {
  if (n.applied < n.snapshot.meta.index + options_.snapshot_every) return;
  SnapshotData data;
  data.meta.index = n.applied;
  data.meta.term = n.raft->TermAt(n.applied);
  data.meta.conf = n.conf;
  data.values = n.values;
  if (data.meta.term == 0) {
    Fail("node " + std::to_string(n.id) + " has no term for applied index " + std::to_string(n.applied));
    return;
  }
  n.snapshot = std::move(data);
  // The checkpoint's flush persists the hard state written before it too.
  n.synced_hard_state = *n.log.GetHardState();
  n.raft->SnapshotCreated(n.snapshot.meta);
  if (n.applied > kLogRetention) {
    const uint64_t compact_to = std::min(n.applied - kLogRetention, n.log.LastIndex());
    if (compact_to >= n.log.FirstIndex()) {
      if (Status st = n.log.CompactTo(compact_to); !st.ok()) Fail("compact: " + st.ToString());
    }
  }
}

void Simulation::Send(Node& from, Message m) {
  const bool faults = faulty();
  const bool snapshot = m.type == replication::raft::MessageType::kSnapshot;
  // The transport reports a snapshot's stream as done (or failed), as the
  // host's peer service does.
  const bool dropped = faults && Chance(options_.drop_rate);
  if (snapshot) from.snapshot_reports.emplace_back(m.to, dropped);
  if (dropped) return;
  Envelope env;
  if (snapshot) {
    if (!(from.snapshot.meta == m.snapshot)) {
      Fail("node " + std::to_string(from.id) + " sends snapshot " + std::to_string(m.snapshot.index) +
           " but holds " + std::to_string(from.snapshot.meta.index));
      return;
    }
    env.snapshot = std::make_shared<SnapshotData>(from.snapshot);
  }
  env.msg = std::move(m);
  const int copies = faults && Chance(options_.duplicate_rate) ? 2 : 1;
  for (int c = 0; c < copies; ++c) {
    env.deliver_at = now_ + Uniform(1, faults ? options_.max_delay : 3);
    env.seq = seq_++;
    network_.push(env);
  }
}

void Simulation::Deliver(Envelope env) {
  Node& to = node(env.msg.to);
  if (!to.up || group_[env.msg.from - 1] != group_[env.msg.to - 1]) return;
  if (options_.verbose) {
    Trace(std::string(MessageTypeName(env.msg.type)) + " " + std::to_string(env.msg.from) + "->" +
          std::to_string(env.msg.to) + " term " + std::to_string(env.msg.term) + " index " +
          std::to_string(env.msg.index) + " n=" + std::to_string(env.msg.entries.size()) +
          (env.msg.reject ? " reject" : ""));
  }
  if (env.snapshot) to.received[env.snapshot->meta.index] = env.snapshot;
  if (Status st = to.raft->Step(env.msg); !st.ok()) {
    Fail("node " + std::to_string(to.id) + " Step(" + std::string(MessageTypeName(env.msg.type)) +
         "): " + st.ToString());
    return;
  }
  Process(to);
}

Node* Simulation::RandomUpNode() {
  std::vector<Node*> up;
  for (auto& n : nodes_) {
    if (n->up) up.push_back(n.get());
  }
  if (up.empty()) return nullptr;
  return up[Uniform(0, up.size() - 1)];
}

Node* Simulation::RandomLeader() {
  std::vector<Node*> leaders;
  for (auto& n : nodes_) {
    if (n->up && n->raft->role() == Role::kLeader) leaders.push_back(n.get());
  }
  if (leaders.empty()) return nullptr;
  return leaders[Uniform(0, leaders.size() - 1)];
}

void Simulation::ProposeWrite() {
  Node* n = RandomLeader();
  if (n == nullptr) return;
  const uint64_t id = next_write_id_++;
  if (!faulty() && first_quiet_write_ == 0) first_quiet_write_ = id;
  Result<uint64_t> index = n->raft->Propose(std::to_string(id));
  if (!index.ok()) return;
  n->proposals[*index] = {id, n->raft->term()};
  Process(*n);
}

void Simulation::IssueRead() {
  Node* n = RandomUpNode();
  if (n == nullptr) return;
  std::string context = "read-" + std::to_string(next_read_id_++);
  if (!n->raft->ReadIndex(context).ok()) return;
  n->reads[context] = max_acked_index_;
  Process(*n);
}

void Simulation::TransferLeadership() {
  Node* n = RandomLeader();
  if (n == nullptr) return;
  std::vector<NodeId> voters(n->conf.voters.begin(), n->conf.voters.end());
  if (voters.empty()) return;
  const NodeId target = voters[Uniform(0, voters.size() - 1)];
  Trace("node " + std::to_string(n->id) + " transfers leadership to " + std::to_string(target));
  if (n->raft->TransferLeadership(target).ok()) Process(*n);
}

void Simulation::ChangeMembership() {
  Node* n = RandomLeader();
  if (n == nullptr) return;
  const ConfState& conf = n->raft->conf();
  std::vector<ConfChange> options;
  const auto progress = n->raft->Progress();
  for (const auto& other : nodes_) {
    const NodeId id = other->id;
    if (conf.voters.contains(id)) {
      if (id != n->id && conf.voters.size() > 3) options.push_back({ConfChangeType::kRemoveNode, id});
    } else if (conf.learners.contains(id)) {
      // Promote only a learner that has caught up (the host's rule too).
      auto p = progress.find(id);
      if (p != progress.end() && p->second.match >= n->raft->commit()) {
        options.push_back({ConfChangeType::kAddVoter, id});
      }
      options.push_back({ConfChangeType::kRemoveNode, id});
    } else {
      options.push_back({ConfChangeType::kAddLearner, id});
    }
  }
  if (options.empty()) return;
  const ConfChange change = options[Uniform(0, options.size() - 1)];
  if (n->raft->ProposeConfChange(change).ok()) {
    ++result_.membership_changes;
    Trace("node " + std::to_string(n->id) + " proposes conf change " + std::to_string(static_cast<int>(change.type)) +
          " node " + std::to_string(change.node));
    Process(*n);
  }
}

void Simulation::Repartition() {
  if (Chance(0.4)) {
    std::fill(group_.begin(), group_.end(), 0);
    Trace("network healed");
    return;
  }
  std::string groups;
  for (auto& g : group_) {
    g = static_cast<int>(Uniform(0, 1));
    groups += std::to_string(g);
  }
  Trace("partition " + groups);
}

void Simulation::FinalChecks() {
  Node* leader = RandomLeader();
  if (leader == nullptr) {
    Fail("liveness: no leader after the network healed and every node restarted");
    return;
  }
  bool quiet_write_acked = false;
  for (uint64_t id : acked_) quiet_write_acked |= first_quiet_write_ != 0 && id >= first_quiet_write_;
  if (!quiet_write_acked) {
    Fail("liveness: no write was acknowledged after the network healed");
    return;
  }
  const ConfState& conf = leader->raft->conf();
  for (auto& n : nodes_) {
    if (!conf.voters.contains(n->id) && !conf.learners.contains(n->id)) continue;
    if (n->applied < max_acked_index_) {
      Fail("member " + std::to_string(n->id) + " applied only " + std::to_string(n->applied) +
           " entries; acknowledged writes reach " + std::to_string(max_acked_index_));
      return;
    }
    std::set<uint64_t> have(n->values.begin(), n->values.end());
    for (uint64_t id : acked_) {
      if (!have.contains(id)) {
        Fail("acknowledged write " + std::to_string(id) + " lost on node " + std::to_string(n->id));
        return;
      }
    }
  }
}

SimResult Simulation::Run() {
  const int total = options_.voters + options_.spares;
  std::set<NodeId> voters;
  for (int i = 1; i <= options_.voters; ++i) voters.insert(static_cast<NodeId>(i));
  group_.assign(static_cast<size_t>(total), 0);
  for (int i = 1; i <= total; ++i) {
    auto n = std::make_unique<Node>();
    n->id = static_cast<NodeId>(i);
    n->tick_phase = Uniform(0, kTick - 1);
    if (voters.contains(n->id)) {
      if (Status st = replication::raft::Bootstrap(&n->log, voters); !st.ok()) {
        Fail("bootstrap: " + st.ToString());
        return result_;
      }
      n->synced_hard_state = *n->log.GetHardState();  // entries: a synced write
    }
    nodes_.push_back(std::move(n));
  }
  for (auto& n : nodes_) Start(*n);

  const uint64_t end = options_.duration + kQuietDuration;
  for (now_ = 0; now_ < end && result_.ok; ++now_) {
    if (now_ == options_.duration) {
      std::fill(group_.begin(), group_.end(), 0);
      Trace("faulty phase over: network healed, every node restarting");
      for (auto& n : nodes_) {
        if (!n->up) n->restart_at = now_;
      }
    }
    for (auto& n : nodes_) {
      if (!n->up && n->restart_at == now_) Start(*n);
    }
    for (auto& n : nodes_) {
      if (n->up && now_ % kTick == n->tick_phase) {
        n->raft->Tick();
        Process(*n);
      }
    }
    while (result_.ok && !network_.empty() && network_.top().deliver_at <= now_) {
      Envelope env = network_.top();
      network_.pop();
      Deliver(std::move(env));
    }
    // Clients stop shortly before the end, so every member can catch up.
    const bool clients = now_ + kSettleTime < end;
    if (clients && Chance(options_.propose_rate)) ProposeWrite();
    if (clients && Chance(options_.read_rate)) IssueRead();
    if (faulty()) {
      if (Chance(options_.crash_rate)) {
        // Leaders half the time: their crashes leave entries of their term
        // on some nodes only, the situation the commit rules are about.
        Node* n = Chance(0.5) ? RandomLeader() : nullptr;
        if (n == nullptr) n = RandomUpNode();
        if (n != nullptr) Crash(*n);
      }
      if (Chance(options_.partition_rate)) Repartition();
      if (Chance(options_.transfer_rate)) TransferLeadership();
      if (Chance(options_.membership_rate)) ChangeMembership();
    }
  }
  if (result_.ok) FinalChecks();
  return result_;
}

}  // namespace

SimResult RunSimulation(uint64_t seed, const SimOptions& options) {
  Simulation sim(seed, options);
  return sim.Run();
}

}  // namespace quiver::raft_sim
