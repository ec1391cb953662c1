#include "replication/raft/raft.h"

#include <algorithm>
#include <cstring>

#include "replication/raft/raft_log.h"

namespace quiver::replication::raft {

using storage::EntryType;
using storage::LogEntry;

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kFollower: return "follower";
    case Role::kPreCandidate: return "pre-candidate";
    case Role::kCandidate: return "candidate";
    case Role::kLeader: return "leader";
  }
  return "unknown";
}

std::string_view MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kAppend: return "Append";
    case MessageType::kAppendResponse: return "AppendResponse";
    case MessageType::kHeartbeat: return "Heartbeat";
    case MessageType::kHeartbeatResponse: return "HeartbeatResponse";
    case MessageType::kPreVote: return "PreVote";
    case MessageType::kPreVoteResponse: return "PreVoteResponse";
    case MessageType::kVote: return "Vote";
    case MessageType::kVoteResponse: return "VoteResponse";
    case MessageType::kSnapshot: return "Snapshot";
    case MessageType::kTimeoutNow: return "TimeoutNow";
    case MessageType::kReadIndex: return "ReadIndex";
    case MessageType::kReadIndexResponse: return "ReadIndexResponse";
  }
  return "unknown";
}

std::string EncodeConfChange(const ConfChange& change) {
  std::string out(9, '\0');
  out[0] = static_cast<char>(change.type);
  for (int i = 0; i < 8; ++i) out[1 + i] = static_cast<char>((change.node >> (8 * i)) & 0xff);
  return out + change.context;
}

Result<ConfChange> DecodeConfChange(std::string_view data) {
  if (data.size() < 9 || data.size() > 9 + kMaxConfChangeContextBytes) {
    return Status::Corruption("conf change entry has " + std::to_string(data.size()) + " bytes, want 9 to " +
                              std::to_string(9 + kMaxConfChangeContextBytes));
  }
  const auto type = static_cast<uint8_t>(data[0]);
  if (type > static_cast<uint8_t>(ConfChangeType::kRemoveNode)) {
    return Status::Corruption("conf change entry has unknown type " + std::to_string(type));
  }
  ConfChange change;
  change.type = static_cast<ConfChangeType>(type);
  for (int i = 0; i < 8; ++i) change.node |= static_cast<uint64_t>(static_cast<uint8_t>(data[1 + i])) << (8 * i);
  if (change.node == kNoNode) return Status::Corruption("conf change entry names node 0");
  change.context = std::string(data.substr(9));
  return change;
}

namespace {
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
bool GetU64(std::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  *v = 0;
  for (int i = 0; i < 8; ++i) *v |= static_cast<uint64_t>(static_cast<uint8_t>((*in)[i])) << (8 * i);
  in->remove_prefix(8);
  return true;
}
}  // namespace

std::string EncodeSnapshotMeta(const SnapshotMeta& meta) {
  std::string out;
  PutU64(&out, meta.index);
  PutU64(&out, meta.term);
  for (const auto* set : {&meta.conf.voters, &meta.conf.learners}) {
    PutU64(&out, set->size());
    for (NodeId node : *set) PutU64(&out, node);
  }
  return out;
}

Result<SnapshotMeta> DecodeSnapshotMeta(std::string_view data) {
  SnapshotMeta meta;
  bool ok = GetU64(&data, &meta.index) && GetU64(&data, &meta.term);
  for (auto* set : {&meta.conf.voters, &meta.conf.learners}) {
    uint64_t n = 0;
    ok = ok && GetU64(&data, &n) && n <= data.size() / 8;
    for (uint64_t i = 0; ok && i < n; ++i) {
      uint64_t node = 0;
      ok = GetU64(&data, &node) && node != kNoNode;
      set->insert(node);
    }
  }
  if (!ok || !data.empty()) return Status::Corruption("raft snapshot record is malformed");
  return meta;
}

Status Bootstrap(storage::LogStore* log, const std::set<NodeId>& voters) {
  if (voters.empty() || voters.contains(kNoNode)) return Status::InvalidArgument("raft bootstrap: bad voter set");
  QUIVER_ASSIGN_OR_RETURN(storage::HardState hs, log->GetHardState());
  if (log->LastIndex() != 0 || hs.term != 0) {
    return Status::FailedPrecondition("raft bootstrap: the log is not empty (last index " +
                                      std::to_string(log->LastIndex()) + ", term " + std::to_string(hs.term) + ")");
  }
  std::vector<LogEntry> entries;
  for (NodeId voter : voters) {
    LogEntry e;
    e.index = entries.size() + 1;
    e.term = 1;
    e.type = EntryType::kConfChange;
    e.data = EncodeConfChange({ConfChangeType::kAddVoter, voter});
    entries.push_back(std::move(e));
  }
  const storage::HardState initial{1, kNoNode, entries.size()};
  return log->Append(entries, &initial);
}

Status Config::Validate() const {
  if (id == kNoNode) return Status::InvalidArgument("raft: node id must not be 0");
  if (heartbeat_ticks <= 0) return Status::InvalidArgument("raft: heartbeat_ticks must be positive");
  if (election_ticks <= heartbeat_ticks) {
    return Status::InvalidArgument("raft: election_ticks must be greater than heartbeat_ticks");
  }
  if (max_inflight_messages == 0) return Status::InvalidArgument("raft: max_inflight_messages must be positive");
  if (max_bytes_per_message == 0) return Status::InvalidArgument("raft: max_bytes_per_message must be positive");
  if (max_committed_bytes_per_ready == 0) {
    return Status::InvalidArgument("raft: max_committed_bytes_per_ready must be positive");
  }
  return Status::Ok();
}

// A leader's record of one member's replication (etcd's tracker.Progress).
struct Raft::Peer {
  enum class State { kProbe, kReplicate, kSnapshot };

  uint64_t match = 0;
  uint64_t next = 1;
  State state = State::kProbe;
  // Probe: one kAppend at a time, until it is answered (or a heartbeat is).
  bool probe_sent = false;
  uint64_t pending_snapshot = 0;
  bool recent_active = false;
  bool learner = false;
  // Replicate: the last index of each kAppend not yet acknowledged.
  std::deque<uint64_t> inflight;
  size_t max_inflight = 1;

  bool Paused() const {
    switch (state) {
      case State::kProbe: return probe_sent;
      case State::kReplicate: return inflight.size() >= max_inflight;
      case State::kSnapshot: return true;
    }
    return true;
  }
  void BecomeProbe() {
    next = state == State::kSnapshot ? std::max(match + 1, pending_snapshot + 1) : match + 1;
    state = State::kProbe;
    pending_snapshot = 0;
    probe_sent = false;
    inflight.clear();
  }
  void BecomeReplicate() {
    next = match + 1;
    state = State::kReplicate;
    probe_sent = false;
    inflight.clear();
  }
  void BecomeSnapshot(uint64_t index) {
    state = State::kSnapshot;
    pending_snapshot = index;
    probe_sent = false;
    inflight.clear();
  }
  bool MaybeUpdate(uint64_t index) {
    bool updated = false;
    if (match < index) {
      match = index;
      probe_sent = false;
      updated = true;
    }
    next = std::max(next, index + 1);
    return updated;
  }
  // A rejection of the kAppend after `rejected`; false if it is stale.
  bool MaybeDecrTo(uint64_t rejected, uint64_t hint) {
    if (state == State::kReplicate) {
      if (rejected <= match) return false;
      next = match + 1;
      return true;
    }
    if (next == 0 || next - 1 != rejected) return false;
    next = std::max(std::min(rejected, hint + 1), match + 1);
    probe_sent = false;
    return true;
  }
};

Raft::Raft(Config config, const storage::LogStore* log)
    : config_(std::move(config)), rng_(config_.random_seed * 0x9E3779B97F4A7C15ull + config_.id) {}

Raft::~Raft() = default;

Result<std::unique_ptr<Raft>> Raft::Create(Config config, const storage::LogStore* log) {
  QUIVER_RETURN_IF_ERROR(config.Validate());
  if (log == nullptr) return Status::InvalidArgument("raft: no log store");
  QUIVER_ASSIGN_OR_RETURN(storage::HardState hs, log->GetHardState());
  const uint64_t first = log->FirstIndex();
  const uint64_t last = log->LastIndex();
  auto inconsistent = [&](const std::string& what) {
    return Status::FailedPrecondition("raft state of node " + std::to_string(config.id) + " is inconsistent: " + what +
                                      " (first log index " + std::to_string(first) + ", last " + std::to_string(last) +
                                      ", hard state term " + std::to_string(hs.term) + " commit " +
                                      std::to_string(hs.commit) + ", applied " + std::to_string(config.applied) + ")");
  };
  if (hs.commit > last) return inconsistent("the hard state's commit index is ahead of the log");
  if (last >= first && hs.term == 0) return inconsistent("the log has entries but no hard state");
  if (last >= first) {
    QUIVER_ASSIGN_OR_RETURN(uint64_t last_term, log->Term(last));
    if (last_term > hs.term) return inconsistent("the last log entry's term is ahead of the hard state's term");
  }
  if (config.applied > hs.commit) return inconsistent("the state machine applied entries that were never committed");
  if (config.applied + 1 < first) return inconsistent("entries between the applied index and the log are gone");
  if (config.snapshot.index > config.applied) return inconsistent("the snapshot is ahead of the applied index");
  if (first > 1 && config.snapshot.index + 1 < first) {
    return inconsistent("the log was compacted past the newest snapshot");
  }
  std::unique_ptr<Raft> raft(new Raft(std::move(config), log));
  raft->log_ = std::make_unique<RaftLog>(log, hs.commit, raft->config_.applied);
  raft->term_ = hs.term;
  raft->vote_ = hs.vote;
  raft->conf_ = raft->config_.conf;
  raft->snapshot_ = raft->config_.snapshot;
  raft->prev_hard_state_ = hs;
  raft->BecomeFollower(hs.term, kNoNode);
  raft->prev_leader_ = kNoNode;
  raft->prev_role_ = Role::kFollower;
  return raft;
}

uint64_t Raft::commit() const { return log_->committed(); }
uint64_t Raft::applied() const { return log_->applied(); }
uint64_t Raft::last_index() const { return log_->LastIndex(); }

uint64_t Raft::TermAt(uint64_t index) const {
  Result<uint64_t> t = log_->Term(index);
  if (t.ok()) return *t;
  if (t.status().code() != StatusCode::kOutOfRange) const_cast<Raft*>(this)->Fail(t.status());
  return 0;
}

void Raft::Fail(Status status) {
  if (fatal_.ok()) fatal_ = std::move(status).WithContext("raft node " + std::to_string(config_.id));
}

bool Raft::Promotable() const { return conf_.voters.contains(config_.id); }
size_t Raft::Quorum() const { return conf_.voters.size() / 2 + 1; }

// ---------------------------------------------------------------- roles

void Raft::Reset(uint64_t term) {
  if (term != term_) {
    term_ = term;
    vote_ = kNoNode;
  }
  lead_ = kNoNode;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  randomized_election_timeout_ =
      config_.election_ticks + static_cast<int>(rng_() % static_cast<uint64_t>(config_.election_ticks));
  lead_transferee_ = kNoNode;
  votes_.clear();
  peers_.clear();
  pending_reads_.clear();
  reads_before_commit_.clear();
}

void Raft::BecomeFollower(uint64_t term, NodeId leader) {
  Reset(term);
  lead_ = leader;
  role_ = Role::kFollower;
}

void Raft::BecomePreCandidate() {
  // Pre-vote changes neither the term nor the vote: a node that cannot win
  // leaves no trace.
  votes_.clear();
  peers_.clear();
  lead_ = kNoNode;
  role_ = Role::kPreCandidate;
}

void Raft::BecomeCandidate() {
  Reset(term_ + 1);
  vote_ = config_.id;
  role_ = Role::kCandidate;
}

void Raft::BecomeLeader() {
  Reset(term_);
  lead_ = config_.id;
  role_ = Role::kLeader;
  const uint64_t last = log_->LastIndex();
  auto add = [&](NodeId node, bool learner) {
    auto peer = std::make_unique<Peer>();
    peer->next = last + 1;
    peer->learner = learner;
    peer->max_inflight = config_.max_inflight_messages;
    peer->recent_active = true;
    if (node == config_.id) {
      peer->match = last;
      peer->state = Peer::State::kReplicate;
    }
    peers_[node] = std::move(peer);
  };
  for (NodeId v : conf_.voters) add(v, false);
  for (NodeId l : conf_.learners) add(l, true);
  // No membership change until everything before this term is applied (the
  // no-op included): a change proposed earlier may still be uncommitted.
  pending_conf_index_ = last;
  LogEntry noop;
  noop.type = EntryType::kNoop;
  AppendEntry(std::move(noop));
}

void Raft::Campaign() {
  if (!fatal_.ok() || !Promotable() || role_ == Role::kLeader) return;
  StartElection(config_.pre_vote, false);
}

void Raft::StartElection(bool pre_vote, bool transfer) {
  MessageType type;
  uint64_t vote_term;
  if (pre_vote) {
    BecomePreCandidate();
    type = MessageType::kPreVote;
    vote_term = term_ + 1;
  } else {
    BecomeCandidate();
    type = MessageType::kVote;
    vote_term = term_;
  }
  election_elapsed_ = 0;
  const int won = Poll(config_.id, true);
  if (won == 1) {
    if (pre_vote) {
      StartElection(false, transfer);
    } else {
      BecomeLeader();
    }
    return;
  }
  const uint64_t last = log_->LastIndex();
  const uint64_t last_term = TermAt(last);
  for (NodeId voter : conf_.voters) {
    if (voter == config_.id) continue;
    Message m;
    m.type = type;
    m.to = voter;
    m.term = vote_term;
    m.index = last;
    m.log_term = last_term;
    if (transfer) m.context = std::string(kCampaignTransfer);
    Send(std::move(m));
  }
}

int Raft::Poll(NodeId from, bool granted) {
  votes_.emplace(from, granted);
  size_t yes = 0, no = 0;
  for (NodeId voter : conf_.voters) {
    auto it = votes_.find(voter);
    if (it == votes_.end()) continue;
    (it->second ? yes : no)++;
  }
  if (yes >= Quorum()) return 1;
  if (no > conf_.voters.size() - Quorum()) return -1;
  return 0;
}

// ---------------------------------------------------------------- clock

void Raft::Tick() {
  if (!fatal_.ok()) return;
  if (role_ != Role::kLeader) {
    ++election_elapsed_;
    if (Promotable() && election_elapsed_ >= randomized_election_timeout_) {
      election_elapsed_ = 0;
      StartElection(config_.pre_vote, false);
    }
    return;
  }
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (election_elapsed_ >= config_.election_ticks) {
    election_elapsed_ = 0;
    if (config_.check_quorum) {
      size_t active = 0;
      for (NodeId voter : conf_.voters) {
        auto it = peers_.find(voter);
        if (voter == config_.id || (it != peers_.end() && it->second->recent_active)) ++active;
      }
      for (auto& [node, peer] : peers_) peer->recent_active = node == config_.id;
      if (active < Quorum()) {
        // Cut off from a majority: a newer leader may exist. Stop serving.
        BecomeFollower(term_, kNoNode);
        return;
      }
    }
    if (lead_transferee_ != kNoNode) AbortTransfer();  // it took too long
  }
  if (heartbeat_elapsed_ >= config_.heartbeat_ticks) {
    heartbeat_elapsed_ = 0;
    BroadcastHeartbeat("");
  }
}

// ---------------------------------------------------------------- messages

Status Raft::Step(const Message& m) {
  if (!fatal_.ok()) return fatal_;
  if (m.to != config_.id) {
    return Status::InvalidArgument("raft: message for node " + std::to_string(m.to) + " stepped into node " +
                                   std::to_string(config_.id));
  }
  if (m.from == kNoNode || m.from == config_.id) {
    return Status::InvalidArgument("raft: message from node " + std::to_string(m.from));
  }
  const bool vote_request = m.type == MessageType::kVote || m.type == MessageType::kPreVote;
  if (m.term > term_) {
    if (vote_request) {
      const bool transfer = m.context == kCampaignTransfer;
      const bool in_lease = config_.check_quorum && lead_ != kNoNode && election_elapsed_ < config_.election_ticks;
      // The leader lease: we heard from a live leader within an election
      // timeout, so this candidate is disruptive (or partitioned); ignore it.
      if (!transfer && in_lease) return Status::Ok();
    }
    if (m.type == MessageType::kPreVote) {
      // A pre-vote never moves our term.
    } else if (m.type == MessageType::kPreVoteResponse && !m.reject) {
      // Granted pre-votes carry the term we would campaign in.
    } else if (m.type == MessageType::kAppend || m.type == MessageType::kHeartbeat ||
               m.type == MessageType::kSnapshot) {
      BecomeFollower(m.term, m.from);
    } else {
      BecomeFollower(m.term, kNoNode);
    }
  } else if (m.term < term_) {
    if ((config_.check_quorum || config_.pre_vote) &&
        (m.type == MessageType::kHeartbeat || m.type == MessageType::kAppend)) {
      // A leader of an older term: maybe its messages were delayed, maybe it
      // was partitioned. With pre-vote and check-quorum our term would not
      // reach it through votes, so tell it directly.
      Message resp;
      resp.type = MessageType::kAppendResponse;
      resp.to = m.from;
      Send(std::move(resp));
    } else if (m.type == MessageType::kPreVote) {
      Message resp;
      resp.type = MessageType::kPreVoteResponse;
      resp.to = m.from;
      resp.reject = true;
      Send(std::move(resp));
    }
    return Status::Ok();
  }

  if (vote_request) {
    HandleVoteRequest(m);
  } else {
    switch (role_) {
      case Role::kLeader: StepLeader(m); break;
      case Role::kPreCandidate:
      case Role::kCandidate: StepCandidate(m); break;
      case Role::kFollower: StepFollower(m); break;
    }
  }
  return fatal_;
}

void Raft::HandleVoteRequest(const Message& m) {
  const bool can_vote = vote_ == m.from || (vote_ == kNoNode && lead_ == kNoNode) ||
                        (m.type == MessageType::kPreVote && m.term > term_);
  Message resp;
  resp.type = m.type == MessageType::kVote ? MessageType::kVoteResponse : MessageType::kPreVoteResponse;
  resp.to = m.from;
  if (can_vote && log_->IsUpToDate(m.index, m.log_term)) {
    // A granted pre-vote answers in the candidate's future term, so the
    // candidate counts it; a rejection carries ours.
    resp.term = m.term;
    if (m.type == MessageType::kVote) {
      election_elapsed_ = 0;
      vote_ = m.from;
    }
  } else {
    resp.reject = true;
  }
  Send(std::move(resp));
}

void Raft::StepLeader(const Message& m) {
  switch (m.type) {
    case MessageType::kAppendResponse: HandleAppendResponse(m); break;
    case MessageType::kHeartbeatResponse: HandleHeartbeatResponse(m); break;
    case MessageType::kReadIndex: HandleReadIndexRequest(m.from, m.context); break;
    default: break;  // stale votes, or messages no leader of this term can get
  }
}

void Raft::StepCandidate(const Message& m) {
  const MessageType my_response =
      role_ == Role::kPreCandidate ? MessageType::kPreVoteResponse : MessageType::kVoteResponse;
  switch (m.type) {
    case MessageType::kAppend:
      BecomeFollower(m.term, m.from);
      HandleAppend(m);
      return;
    case MessageType::kHeartbeat:
      BecomeFollower(m.term, m.from);
      HandleHeartbeat(m);
      return;
    case MessageType::kSnapshot:
      BecomeFollower(m.term, m.from);
      HandleSnapshot(m);
      return;
    default: break;
  }
  if (m.type != my_response) return;
  const int outcome = Poll(m.from, !m.reject);
  if (outcome == 1) {
    if (role_ == Role::kPreCandidate) {
      StartElection(false, false);
    } else {
      BecomeLeader();
      BroadcastAppend();
    }
  } else if (outcome == -1) {
    BecomeFollower(term_, kNoNode);
  }
}

void Raft::StepFollower(const Message& m) {
  switch (m.type) {
    case MessageType::kAppend:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleAppend(m);
      break;
    case MessageType::kHeartbeat:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleHeartbeat(m);
      break;
    case MessageType::kSnapshot:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleSnapshot(m);
      break;
    case MessageType::kTimeoutNow:
      // The leader hands over: campaign at once, skipping pre-vote (the
      // voters' lease would refuse it) and marking the votes as a transfer.
      if (Promotable()) StartElection(false, true);
      break;
    case MessageType::kReadIndexResponse: read_states_.push_back({m.index, m.context}); break;
    default: break;
  }
}

void Raft::HandleAppend(const Message& m) {
  Message resp;
  resp.type = MessageType::kAppendResponse;
  resp.to = m.from;
  if (m.index < log_->committed()) {
    resp.index = log_->committed();
    Send(std::move(resp));
    return;
  }
  Result<std::optional<uint64_t>> last_new = log_->MaybeAppend(m.index, m.log_term, m.commit, m.entries);
  if (!last_new.ok()) {
    Fail(last_new.status());
    return;
  }
  if (last_new->has_value()) {
    resp.index = **last_new;
  } else {
    resp.reject = true;
    resp.index = m.index;
    resp.reject_hint = std::min(m.index, log_->LastIndex());
  }
  Send(std::move(resp));
}

void Raft::HandleHeartbeat(const Message& m) {
  // The leader sends min(our match, its commit): never beyond what we hold,
  // unless we lost entries we had acknowledged.
  if (m.commit > log_->LastIndex()) {
    Fail(Status::FailedPrecondition(
        "node " + std::to_string(m.from) + " (the leader) recorded this node as holding log entries up to " +
        std::to_string(m.commit) + ", but its log ends at " + std::to_string(log_->LastIndex()) +
        ": this node's data directory was lost, replaced or restored from an older copy. It must not rejoin "
        "under this id as it is: remove it from the cluster (quiverctl cluster remove " + std::to_string(config_.id) +
        "), empty its data directory and add it back (quiverctl cluster add; docs/operations.md#recovery)"));
    return;
  }
  if (Status st = log_->CommitTo(m.commit); !st.ok()) {
    Fail(st);
    return;
  }
  Message resp;
  resp.type = MessageType::kHeartbeatResponse;
  resp.to = m.from;
  resp.context = m.context;
  Send(std::move(resp));
}

void Raft::HandleSnapshot(const Message& m) {
  const SnapshotMeta& meta = m.snapshot;
  Message resp;
  resp.type = MessageType::kAppendResponse;
  resp.to = m.from;
  if (meta.index <= log_->committed()) {
    resp.index = log_->committed();
  } else if (TermAt(meta.index) == meta.term && meta.term != 0) {
    // We already hold the entry it ends with: just move the commit index.
    if (Status st = log_->CommitTo(meta.index); !st.ok()) return Fail(st);
    resp.index = log_->committed();
  } else {
    log_->Restore(meta);
    conf_ = meta.conf;
    resp.index = log_->LastIndex();
  }
  Send(std::move(resp));
}

void Raft::HandleAppendResponse(const Message& m) {
  auto it = peers_.find(m.from);
  if (it == peers_.end()) return;
  Peer& pr = *it->second;
  pr.recent_active = true;
  if (m.reject) {
    if (pr.MaybeDecrTo(m.index, m.reject_hint)) {
      if (pr.state == Peer::State::kReplicate) pr.BecomeProbe();
      SendAppend(m.from, true);
    }
    return;
  }
  const bool was_paused = pr.Paused();
  if (!pr.MaybeUpdate(m.index)) return;
  switch (pr.state) {
    case Peer::State::kProbe: pr.BecomeReplicate(); break;
    case Peer::State::kSnapshot:
      if (pr.match >= pr.pending_snapshot || pr.match + 1 >= log_->FirstIndex()) {
        pr.BecomeProbe();
        pr.BecomeReplicate();
      }
      break;
    case Peer::State::kReplicate:
      while (!pr.inflight.empty() && pr.inflight.front() <= m.index) pr.inflight.pop_front();
      break;
  }
  if (MaybeCommit()) {
    BroadcastAppend();
  } else if (was_paused) {
    SendAppend(m.from, true);
  }
  while (peers_.contains(m.from) && SendAppend(m.from, false)) {
  }
  if (m.from == lead_transferee_ && peers_.contains(m.from) && peers_[m.from]->match == log_->LastIndex()) {
    SendTimeoutNow(m.from);
  }
}

void Raft::HandleHeartbeatResponse(const Message& m) {
  auto it = peers_.find(m.from);
  if (it == peers_.end()) return;
  Peer& pr = *it->second;
  pr.recent_active = true;
  pr.probe_sent = false;
  // A full window whose acknowledgements were lost would stall forever: a
  // heartbeat answer proves the peer is alive, so free one slot.
  if (pr.state == Peer::State::kReplicate && pr.inflight.size() >= pr.max_inflight) pr.inflight.pop_front();
  if (pr.match < log_->LastIndex()) SendAppend(m.from, true);

  if (m.context.empty() || pending_reads_.empty()) return;
  auto read = std::find_if(pending_reads_.begin(), pending_reads_.end(),
                           [&](const PendingRead& r) { return r.context == m.context; });
  if (read == pending_reads_.end()) return;
  if (conf_.voters.contains(m.from)) read->acks.insert(m.from);
  if (read->acks.size() < Quorum()) return;
  // A quorum confirmed our leadership after every read up to this one arrived.
  const auto done = static_cast<size_t>(read - pending_reads_.begin()) + 1;
  for (size_t i = 0; i < done; ++i) {
    PendingRead r = std::move(pending_reads_.front());
    pending_reads_.pop_front();
    if (r.from == config_.id) {
      read_states_.push_back({r.index, std::move(r.context)});
    } else {
      Message resp;
      resp.type = MessageType::kReadIndexResponse;
      resp.to = r.from;
      resp.index = r.index;
      resp.context = std::move(r.context);
      Send(std::move(resp));
    }
  }
}

void Raft::HandleReadIndexRequest(NodeId from, std::string context) {
  if (!CommittedInCurrentTerm()) {
    // Our commit index may lag what an earlier leader committed until our
    // no-op commits; answer after that.
    reads_before_commit_.emplace_back(from, std::move(context));
    return;
  }
  const uint64_t index = log_->committed();
  if (Quorum() == 1 && conf_.voters.contains(config_.id)) {
    if (from == config_.id) {
      read_states_.push_back({index, std::move(context)});
    } else {
      Message resp;
      resp.type = MessageType::kReadIndexResponse;
      resp.to = from;
      resp.index = index;
      resp.context = std::move(context);
      Send(std::move(resp));
    }
    return;
  }
  PendingRead read;
  read.index = index;
  read.from = from;
  read.context = context;
  read.acks.insert(config_.id);
  pending_reads_.push_back(std::move(read));
  BroadcastHeartbeat(context);
}

bool Raft::CommittedInCurrentTerm() const { return TermAt(log_->committed()) == term_; }

void Raft::ReleasePendingReads() {
  if (reads_before_commit_.empty() || !CommittedInCurrentTerm()) return;
  auto waiting = std::move(reads_before_commit_);
  reads_before_commit_.clear();
  for (auto& [from, context] : waiting) HandleReadIndexRequest(from, std::move(context));
}

// ---------------------------------------------------------------- replication

void Raft::AppendEntry(LogEntry entry) {
  entry.index = log_->LastIndex() + 1;
  entry.term = term_;
  std::vector<LogEntry> entries;
  entries.push_back(std::move(entry));
  log_->TruncateAndAppend(std::move(entries));
  if (auto self = peers_.find(config_.id); self != peers_.end()) self->second->MaybeUpdate(log_->LastIndex());
  MaybeCommit();
}

bool Raft::MaybeCommit() {
  std::vector<uint64_t> matches;
  matches.reserve(conf_.voters.size());
  for (NodeId voter : conf_.voters) {
    auto it = peers_.find(voter);
    matches.push_back(it == peers_.end() ? 0 : it->second->match);
  }
  if (matches.empty()) return false;
  std::sort(matches.begin(), matches.end(), std::greater<>());
  const uint64_t quorum_index = matches[Quorum() - 1];
  // Only an entry of our own term is committed by counting replicas; earlier
  // entries commit with it (Raft §5.4.2, Figure 8).
  if (quorum_index <= log_->committed() || TermAt(quorum_index) != term_) return false;
  if (Status st = log_->CommitTo(quorum_index); !st.ok()) {
    Fail(st);
    return false;
  }
  ReleasePendingReads();
  return true;
}

bool Raft::SendAppend(NodeId to, bool send_if_empty) {
  auto it = peers_.find(to);
  if (it == peers_.end() || to == config_.id) return false;
  Peer& pr = *it->second;
  if (pr.Paused()) return false;
  const uint64_t last = log_->LastIndex();
  if (pr.next > last + 1) pr.next = last + 1;  // our log was replaced since
  Result<uint64_t> prev_term = log_->Term(pr.next - 1);
  Result<std::vector<LogEntry>> entries = std::vector<LogEntry>();
  if (pr.next <= last) entries = log_->Entries(pr.next, last + 1, config_.max_bytes_per_message);
  if (!prev_term.ok() || !entries.ok()) {
    const Status& st = !prev_term.ok() ? prev_term.status() : entries.status();
    if (st.code() != StatusCode::kOutOfRange) {
      Fail(st);
      return false;
    }
    SendSnapshot(to);  // what it needs was compacted away
    return false;
  }
  if (entries->empty() && !send_if_empty) return false;
  Message m;
  m.type = MessageType::kAppend;
  m.to = to;
  m.index = pr.next - 1;
  m.log_term = *prev_term;
  m.commit = log_->committed();
  if (!entries->empty()) {
    const uint64_t sent_last = entries->back().index;
    if (pr.state == Peer::State::kReplicate) {
      pr.next = sent_last + 1;
      pr.inflight.push_back(sent_last);
    } else {
      pr.probe_sent = true;
    }
  } else if (pr.state == Peer::State::kProbe) {
    pr.probe_sent = true;
  }
  m.entries = std::move(*entries);
  Send(std::move(m));
  return true;
}

void Raft::SendSnapshot(NodeId to) {
  Peer& pr = *peers_.at(to);
  if (!pr.recent_active) return;  // do not stream a checkpoint into the void
  if (snapshot_.index == 0 || snapshot_.index + 1 < log_->FirstIndex()) {
    Fail(Status::Internal("raft: node " + std::to_string(to) + " needs entries from " + std::to_string(pr.next) +
                          ", compacted away without a snapshot covering them"));
    return;
  }
  pr.BecomeSnapshot(snapshot_.index);
  Message m;
  m.type = MessageType::kSnapshot;
  m.to = to;
  m.snapshot = snapshot_;
  Send(std::move(m));
}

void Raft::BroadcastAppend() {
  std::vector<NodeId> targets;
  for (const auto& [node, peer] : peers_) targets.push_back(node);
  for (NodeId node : targets) SendAppend(node, true);
}

void Raft::BroadcastHeartbeat(const std::string& context) {
  for (const auto& [node, peer] : peers_) {
    if (node == config_.id) continue;
    Message m;
    m.type = MessageType::kHeartbeat;
    m.to = node;
    m.commit = std::min(peer->match, log_->committed());
    m.context = context;
    Send(std::move(m));
  }
}

void Raft::SendTimeoutNow(NodeId to) {
  Message m;
  m.type = MessageType::kTimeoutNow;
  m.to = to;
  Send(std::move(m));
}

void Raft::Send(Message m) {
  m.from = config_.id;
  // Responses to pre-votes carry their own term (see HandleVoteRequest), as
  // do vote requests; everything else speaks in our current term.
  if (m.term == 0) m.term = term_;
  outbox_.push_back(std::move(m));
}

void Raft::AbortTransfer() { lead_transferee_ = kNoNode; }

// ---------------------------------------------------------------- local operations

Status Raft::CheckCanPropose() const {
  if (!fatal_.ok()) return fatal_;
  if (role_ != Role::kLeader) {
    return Status::Unavailable(lead_ == kNoNode ? "no leader is known"
                                                : "not the leader; the leader is node " + std::to_string(lead_));
  }
  if (lead_transferee_ != kNoNode) {
    return Status::Unavailable("leadership is being transferred to node " + std::to_string(lead_transferee_));
  }
  return Status::Ok();
}

Result<uint64_t> Raft::Propose(std::string data) {
  QUIVER_RETURN_IF_ERROR(CheckCanPropose());
  LogEntry e;
  e.type = EntryType::kCommand;
  e.data = std::move(data);
  AppendEntry(std::move(e));
  BroadcastAppend();
  return log_->LastIndex();
}

Result<uint64_t> Raft::ProposeConfChange(const ConfChange& change) {
  QUIVER_RETURN_IF_ERROR(CheckCanPropose());
  if (change.node == kNoNode) return Status::InvalidArgument("membership change names node 0");
  if (change.context.size() > kMaxConfChangeContextBytes) {
    return Status::InvalidArgument("membership change context exceeds " + std::to_string(kMaxConfChangeContextBytes) +
                                   " bytes");
  }
  if (pending_conf_index_ > log_->applied()) {
    return Status::FailedPrecondition("a membership change (or this leader's first entry) at index " +
                                      std::to_string(pending_conf_index_) + " is not applied yet");
  }
  const bool voter = conf_.voters.contains(change.node);
  const bool learner = conf_.learners.contains(change.node);
  switch (change.type) {
    case ConfChangeType::kAddVoter:
      if (voter) return Status::AlreadyExists("node " + std::to_string(change.node) + " is already a voter");
      break;
    case ConfChangeType::kAddLearner:
      if (learner) return Status::AlreadyExists("node " + std::to_string(change.node) + " is already a learner");
      if (voter && conf_.voters.size() == 1) return Status::FailedPrecondition("cannot demote the only voter");
      break;
    case ConfChangeType::kRemoveNode:
      if (!voter && !learner) return Status::NotFound("node " + std::to_string(change.node) + " is not a member");
      if (voter && conf_.voters.size() == 1) return Status::FailedPrecondition("cannot remove the only voter");
      break;
  }
  LogEntry e;
  e.type = EntryType::kConfChange;
  e.data = EncodeConfChange(change);
  AppendEntry(std::move(e));
  pending_conf_index_ = log_->LastIndex();
  BroadcastAppend();
  return log_->LastIndex();
}

Status Raft::ReadIndex(std::string context) {
  if (!fatal_.ok()) return fatal_;
  if (role_ == Role::kLeader) {
    HandleReadIndexRequest(config_.id, std::move(context));
    return Status::Ok();
  }
  if (lead_ == kNoNode) return Status::Unavailable("no leader is known");
  Message m;
  m.type = MessageType::kReadIndex;
  m.to = lead_;
  m.context = std::move(context);
  Send(std::move(m));
  return Status::Ok();
}

Status Raft::TransferLeadership(NodeId target) {
  if (!fatal_.ok()) return fatal_;
  if (role_ != Role::kLeader) return Status::FailedPrecondition("only the leader can transfer leadership");
  if (target == config_.id) return Status::Ok();
  if (!conf_.voters.contains(target)) {
    return Status::InvalidArgument("node " + std::to_string(target) + " is not a voter");
  }
  lead_transferee_ = target;
  election_elapsed_ = 0;  // the transfer must finish within an election timeout
  if (peers_.at(target)->match == log_->LastIndex()) {
    SendTimeoutNow(target);
  } else {
    SendAppend(target, true);
  }
  return Status::Ok();
}

ConfState Raft::ApplyConfChange(const ConfChange& change) {
  switch (change.type) {
    case ConfChangeType::kAddVoter:
      conf_.learners.erase(change.node);
      conf_.voters.insert(change.node);
      break;
    case ConfChangeType::kAddLearner:
      conf_.voters.erase(change.node);
      conf_.learners.insert(change.node);
      break;
    case ConfChangeType::kRemoveNode:
      conf_.voters.erase(change.node);
      conf_.learners.erase(change.node);
      break;
  }
  if (role_ != Role::kLeader) return conf_;
  if (!conf_.voters.contains(config_.id)) {
    // Removed (or demoted): stop leading; the remaining voters elect a leader.
    BecomeFollower(term_, kNoNode);
    return conf_;
  }
  for (auto it = peers_.begin(); it != peers_.end();) {
    const bool member = conf_.voters.contains(it->first) || conf_.learners.contains(it->first);
    it = member ? std::next(it) : peers_.erase(it);
  }
  const uint64_t last = log_->LastIndex();
  auto track = [&](NodeId node, bool learner) {
    auto [it, inserted] = peers_.try_emplace(node);
    if (inserted) {
      it->second = std::make_unique<Peer>();
      it->second->next = last + 1;
      it->second->max_inflight = config_.max_inflight_messages;
      it->second->recent_active = true;
    }
    it->second->learner = learner;
  };
  for (NodeId v : conf_.voters) track(v, false);
  for (NodeId l : conf_.learners) track(l, true);
  if (lead_transferee_ != kNoNode && !conf_.voters.contains(lead_transferee_)) AbortTransfer();
  // A smaller quorum may commit more now.
  if (MaybeCommit()) BroadcastAppend();
  return conf_;
}

void Raft::SnapshotCreated(const SnapshotMeta& meta) {
  if (meta.index > snapshot_.index) snapshot_ = meta;
}

void Raft::ReportUnreachable(NodeId peer) {
  if (role_ != Role::kLeader) return;
  auto it = peers_.find(peer);
  if (it != peers_.end() && it->second->state == Peer::State::kReplicate) it->second->BecomeProbe();
}

void Raft::ReportSnapshot(NodeId peer, bool failed) {
  if (role_ != Role::kLeader) return;
  auto it = peers_.find(peer);
  if (it == peers_.end() || it->second->state != Peer::State::kSnapshot) return;
  if (failed) it->second->pending_snapshot = 0;
  // Wait for the follower's answer (or a heartbeat) before probing again.
  it->second->BecomeProbe();
  it->second->probe_sent = true;
}

std::map<NodeId, PeerProgress> Raft::Progress() const {
  std::map<NodeId, PeerProgress> out;
  for (const auto& [node, peer] : peers_) {
    out[node] = PeerProgress{peer->match, peer->next, peer->learner, peer->recent_active};
  }
  return out;
}

// ---------------------------------------------------------------- Ready

bool Raft::HasReady() const {
  if (!fatal_.ok()) return false;
  const storage::HardState hs{term_, vote_, log_->committed()};
  return hs != prev_hard_state_ || !log_->unstable_entries().empty() || log_->unstable_snapshot().has_value() ||
         !outbox_.empty() || !read_states_.empty() || log_->HasNextCommitted() || lead_ != prev_leader_ ||
         role_ != prev_role_;
}

Ready Raft::GetReady() {
  Ready rd;
  rd.leader = lead_;
  rd.role = role_;
  const storage::HardState hs{term_, vote_, log_->committed()};
  if (hs != prev_hard_state_) rd.hard_state = hs;
  rd.snapshot = log_->unstable_snapshot();
  rd.entries = log_->unstable_entries();
  Result<std::vector<LogEntry>> committed = log_->NextCommitted(config_.max_committed_bytes_per_ready);
  if (committed.ok()) {
    rd.committed_entries = std::move(*committed);
  } else {
    Fail(committed.status());
  }
  rd.messages = std::move(outbox_);
  outbox_.clear();
  rd.read_states = std::move(read_states_);
  read_states_.clear();
  prev_leader_ = lead_;
  prev_role_ = role_;
  return rd;
}

void Raft::Advance(const Ready& rd) {
  if (rd.hard_state) prev_hard_state_ = *rd.hard_state;
  if (rd.snapshot) {
    log_->StableSnapshotTo(rd.snapshot->index);
    if (rd.snapshot->index > snapshot_.index) snapshot_ = *rd.snapshot;
    log_->AppliedTo(rd.snapshot->index);
  }
  if (!rd.entries.empty()) log_->StableTo(rd.entries.back().index, rd.entries.back().term);
  if (!rd.committed_entries.empty()) log_->AppliedTo(rd.committed_entries.back().index);
}

}  // namespace quiver::replication::raft
