#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <random>
#include <utility>

#include "common/encoding.h"
#include "common/thread_name.h"
#include "replication/replicator.h"
#include "storage/db.h"

namespace quiver::replication {

namespace {
std::string RecoveryHint() {
  return " The data directory is inconsistent; restore it from a backup (or a replica's snapshot) — "
         "do not edit Raft state by hand. See docs/operations.md#recovery.";
}

// The peer address record (and snapshot file): "<node id> <address>" lines.
constexpr const char* kPeerAddressesFile = "raft-peer-addresses";

std::string EncodePeerAddresses(const std::map<raft::NodeId, std::string>& addresses) {
  std::string out;
  for (const auto& [node, address] : addresses) out += std::to_string(node) + " " + address + "\n";
  return out;
}

Result<std::map<raft::NodeId, std::string>> DecodePeerAddresses(std::string_view text) {
  std::map<raft::NodeId, std::string> out;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    const std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    const size_t space = line.find(' ');
    raft::NodeId node = 0;
    if (space == std::string_view::npos || space + 1 == line.size() ||
        std::from_chars(line.data(), line.data() + space, node).ptr != line.data() + space || node == raft::kNoNode) {
      return Status::Corruption("peer address record has a bad line '" + std::string(line) + "'");
    }
    out[node] = std::string(line.substr(space + 1));
  }
  return out;
}

// The install record: the snapshot's metadata and the name of its staged
// directory under snapshot_dir (a name, not a path: the data directory may move).
std::string EncodeInstallRecord(const raft::SnapshotMeta& meta, const std::string& dir_name) {
  const std::string m = raft::EncodeSnapshotMeta(meta);
  std::string out;
  PutFixed32LE(&out, static_cast<uint32_t>(m.size()));
  return out + m + dir_name;
}

Result<std::pair<raft::SnapshotMeta, std::string>> DecodeInstallRecord(std::string_view record) {
  auto bad = Status::Corruption("the snapshot install record is damaged." + RecoveryHint());
  if (record.size() < 4) return bad;
  const uint32_t n = DecodeFixed32LE(record.data());
  if (n > record.size() - 4) return bad;
  Result<raft::SnapshotMeta> meta = raft::DecodeSnapshotMeta(record.substr(4, n));
  const std::string dir(record.substr(4 + n));
  if (!meta.ok() || dir.empty() || dir.find('/') != std::string::npos || dir == "." || dir == "..") return bad;
  return std::make_pair(*meta, dir);
}
}  // namespace

RaftReplicator::RaftReplicator(storage::LogStore* log, storage::StateMachine* state, RaftTransport* transport,
                               RaftReplicatorOptions options)
    : log_(log), state_(state), transport_(transport), options_(std::move(options)) {
  if (options_.initial_voters.empty()) options_.initial_voters = {options_.node_id};
}

RaftReplicator::~RaftReplicator() { Stop(); }

Status RaftReplicator::Start(const std::atomic<bool>* stop) {
  QUIVER_ASSIGN_OR_RETURN(storage::HardState hs, log_->GetHardState());
  // A snapshot install cut short by a crash is finished before anything
  // else: until then the state may be empty.
  QUIVER_ASSIGN_OR_RETURN(const std::string install, log_->GetInstallRecord());
  std::optional<std::pair<raft::SnapshotMeta, std::string>> pending_install;
  std::string pending_install_dir;
  if (!install.empty()) {
    QUIVER_ASSIGN_OR_RETURN(pending_install, DecodeInstallRecord(install));
    pending_install_dir = pending_install->second;
    if (options_.snapshot_dir.empty() ||
        !std::filesystem::is_directory(options_.snapshot_dir + "/" + pending_install_dir)) {
      return Status::FailedPrecondition("a snapshot install was interrupted and its files (" +
                                        options_.snapshot_dir + "/" + pending_install_dir + ") are gone." +
                                        RecoveryHint());
    }
  }
  if (!options_.snapshot_dir.empty()) {
    // What an earlier run left: snapshots half sent or half received.
    std::error_code ec;
    std::filesystem::create_directories(options_.snapshot_dir, ec);
    if (ec) return Status::IOError("cannot create " + options_.snapshot_dir + ": " + ec.message());
    for (const auto& entry : std::filesystem::directory_iterator(options_.snapshot_dir, ec)) {
      if (entry.path().filename() != pending_install_dir) std::filesystem::remove_all(entry.path(), ec);
    }
  }
  if (pending_install) {
    QUIVER_RETURN_IF_ERROR(FinishInstall(pending_install->first, pending_install->second, hs)
                               .WithContext("finishing the snapshot install a restart interrupted"));
    QUIVER_ASSIGN_OR_RETURN(hs, log_->GetHardState());
  }
  const uint64_t applied_at_start = state_->AppliedIndex();
  bool joining = false;
  if (log_->LastIndex() == 0 && hs.term == 0) {
    if (applied_at_start > 0) {
      return Status::FailedPrecondition("the state machine has applied " + std::to_string(applied_at_start) +
                                        " entries but the log is empty: the log was lost." + RecoveryHint());
    }
    QUIVER_ASSIGN_OR_RETURN(const std::string recorded, log_->GetClusterId());
    // A cluster id without a log: a node that started joining and has not
    // been replicated to yet. It keeps waiting for the leader.
    joining = options_.join || !recorded.empty();
    if (recorded.empty()) QUIVER_RETURN_IF_ERROR(log_->SetClusterId(options_.cluster_id));
    if (!joining) {
      // A new node of a new cluster: the initial membership.
      QUIVER_RETURN_IF_ERROR(raft::Bootstrap(log_, options_.initial_voters));
      QUIVER_ASSIGN_OR_RETURN(hs, log_->GetHardState());
    }
  }
  QUIVER_ASSIGN_OR_RETURN(cluster_id_, log_->GetClusterId());
  if (transport_ != nullptr) transport_->SetClusterId(cluster_id_);
  {
    QUIVER_ASSIGN_OR_RETURN(const std::string book, log_->GetPeerAddresses());
    QUIVER_ASSIGN_OR_RETURN(auto addresses, DecodePeerAddresses(book));
    QUIVER_RETURN_IF_ERROR(LearnPeerAddresses(addresses));
    QUIVER_RETURN_IF_ERROR(LearnPeerAddresses(options_.peer_addresses));
  }
  QUIVER_ASSIGN_OR_RETURN(std::string record, log_->GetSnapshotRecord());
  raft::SnapshotMeta snapshot;
  if (!record.empty()) {
    QUIVER_ASSIGN_OR_RETURN(snapshot, raft::DecodeSnapshotMeta(record));
  }

  raft::Config config;
  config.id = options_.node_id;
  // The core replays from the snapshot point, not from the state machine's
  // applied index: membership changes after the snapshot are rebuilt that
  // way, and the state machine skips what it already holds.
  config.applied = snapshot.index;
  config.conf = snapshot.conf;
  config.snapshot = snapshot;
  config.random_seed = std::random_device()();
  // Bounds one apply batch, and so how long a replay goes without checking
  // for shutdown.
  config.max_committed_bytes_per_ready = 8ull << 20;
  Result<std::unique_ptr<raft::Raft>> raft = raft::Raft::Create(config, log_);
  if (!raft.ok()) return Status(raft.status().code(), raft.status().message() + "." + RecoveryHint());
  raft_ = std::move(raft).value();
  {
    std::lock_guard lock(mu_);
    conf_history_[snapshot.index] = snapshot.conf;
  }

  // Replay the committed tail before serving.
  while (raft_->applied() < hs.commit) {
    if (stop != nullptr && stop->load()) return Status::Cancelled("shutdown requested during log replay");
    if (!raft_->HasReady()) {
      return Status::Internal("log replay stalled at index " + std::to_string(raft_->applied()) + " of " +
                              std::to_string(hs.commit));
    }
    QUIVER_RETURN_IF_ERROR(HandleOneReady().WithContext("replaying log"));
  }
  replayed_ = state_->AppliedIndex() - applied_at_start;
  const raft::ConfState& conf = raft_->conf();
  if (joining && conf.voters.empty()) {
    // Nothing to check yet: the leader's first message brings the membership.
  } else if (conf.voters.empty()) {
    return Status::FailedPrecondition("the log holds no cluster membership (written by an older quiverd?)." +
                                      RecoveryHint());
  }
  if (!conf.voters.contains(options_.node_id) && !conf.learners.contains(options_.node_id) && !joining &&
      !options_.join) {
    // (A joining node may hold a snapshot from before the change that adds it.)
    return Status::FailedPrecondition("this node's id " + std::to_string(options_.node_id) +
                                      " is not a member of the cluster recorded in its data directory; start it "
                                      "with the node id it was created with, or with an empty data directory");
  }
  if (conf.voters.size() == 1 && conf.voters.contains(options_.node_id)) {
    raft_->Campaign();  // a majority of one: lead at once
    QUIVER_RETURN_IF_ERROR(HandleReady());
  }
  PublishStatus();
  std::lock_guard lock(mu_);
  started_ = true;
  driver_ = std::thread([this] {
    NameThisThread("raft-driver");
    DriverLoop();
  });
  checkpointer_ = std::thread([this] {
    NameThisThread("raft-checkpoint");
    CheckpointLoop();
  });
  if (transport_ != nullptr) {
    snapshot_sender_ = std::thread([this] {
      NameThisThread("raft-snapshot");
      SnapshotLoop();
    });
  }
  return Status::Ok();
}

Result<uint64_t> RaftReplicator::Propose(std::string command, Clock::time_point deadline) {
  raft::NodeId leader = raft::kNoNode;
  {
    std::lock_guard lock(mu_);
    if (started_ && status_.role != raft::Role::kLeader) leader = status_.leader;
  }
  if (forwarder_ != nullptr && leader != raft::kNoNode && leader != options_.node_id) {
    Result<uint64_t> index = forwarder_->Forward(leader, std::move(command), deadline);
    if (!index.ok()) return index;
    // Read-your-writes on the node the client talks to: answer once applied
    // here too (the write is durable either way; at the deadline we answer).
    std::unique_lock lock(mu_);
    applied_cv_.wait_until(lock, deadline, [&] { return stopping_ || cancelled_ || status_.applied >= *index; });
    return index;
  }
  return ProposeLocal(std::move(command), deadline);
}

Result<uint64_t> RaftReplicator::ProposeLocal(std::string command, Clock::time_point deadline) {
  auto p = std::make_shared<Proposal>();
  p->data = std::move(command);
  auto future = p->done.get_future();
  {
    std::lock_guard lock(mu_);
    if (!fatal_.ok()) return Status::Unavailable("node is stopping after a storage failure: " + fatal_.message());
    if (stopping_ || cancelled_ || !started_) {
      return Status::Unavailable("node is not accepting writes (shutting down or starting)");
    }
    queue_.push_back(p);
  }
  cv_.notify_one();
  // Stop() answers every proposal, so this wait also ends at shutdown.
  if (future.wait_until(deadline) != std::future_status::ready) {
    return Status::DeadlineExceeded("write not acknowledged before the deadline; it may still be applied");
  }
  return future.get();
}

Status RaftReplicator::ReadBarrier(Clock::time_point deadline) {
  auto read = std::make_shared<Read>();
  read->deadline = deadline;
  auto future = read->done.get_future();
  {
    std::lock_guard lock(mu_);
    if (!fatal_.ok()) return Status::Unavailable("node is stopping after a storage failure: " + fatal_.message());
    if (stopping_ || cancelled_ || !started_) return Status::Unavailable("node is not serving (shutting down or starting)");
    // A one-voter group's leader cannot be deposed, and it acknowledges a
    // write only once applied: its local state is always current.
    if (status_.role == raft::Role::kLeader && status_.conf.voters.size() == 1) return Status::Ok();
    read_queue_.push_back(read);
  }
  cv_.notify_one();
  if (future.wait_until(deadline) != std::future_status::ready) {
    return Status::DeadlineExceeded("the read could not be confirmed with the leader before the deadline");
  }
  return future.get();
}

void RaftReplicator::Receive(raft::Message message) {
  // Without its files the core would install an empty state.
  if (message.type == raft::MessageType::kSnapshot) return;
  {
    std::lock_guard lock(mu_);
    if (stopping_ || !started_) return;
    inbox_.push_back(std::move(message));
  }
  cv_.notify_one();
}

Result<std::string> RaftReplicator::NewIncomingSnapshotDir(raft::NodeId from, uint64_t index) {
  if (options_.snapshot_dir.empty()) return Status::FailedPrecondition("this node has no snapshot directory");
  static std::atomic<uint64_t> serial{0};
  const std::string dir = options_.snapshot_dir + "/incoming-" + std::to_string(from) + "-" + std::to_string(index) +
                          "-" + std::to_string(++serial);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (!std::filesystem::create_directories(dir, ec)) {
    return Status::IOError("cannot create " + dir + (ec ? ": " + ec.message() : ""));
  }
  return dir;
}

void RaftReplicator::ReceiveSnapshot(raft::Message message, std::string dir) {
  {
    std::lock_guard lock(mu_);
    if (!stopping_ && started_ && message.type == raft::MessageType::kSnapshot) {
      snapshot_inbox_.emplace_back(std::move(message), std::move(dir));
      dir.clear();
    }
  }
  cv_.notify_one();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::remove_all(dir, ec);  // not taken
}

Status RaftReplicator::NotLeaderHere() const {
  if (raft_->role() == raft::Role::kLeader) return Status::Ok();
  return Status::FailedPrecondition(raft_->leader() == raft::kNoNode
                                        ? "no leader is known"
                                        : "not the leader; send it to node " + std::to_string(raft_->leader()));
}

Result<uint64_t> RaftReplicator::ChangeMembership(raft::ConfChange change, Clock::time_point deadline) {
  auto p = std::make_shared<Proposal>();
  auto future = p->done.get_future();
  {
    std::lock_guard lock(mu_);
    if (stopping_ || cancelled_ || !started_) return Status::Unavailable("node is not serving");
    driver_ops_.push_back([this, change, p] {
      if (Status st = NotLeaderHere(); !st.ok()) {
        p->done.set_value(std::move(st));
        return;
      }
      // The core would demote a voter to learner; no caller wants that (a
      // retried AddMember may ask again for a node promoted meanwhile).
      if (change.type == raft::ConfChangeType::kAddLearner && raft_->conf().voters.contains(change.node)) {
        p->done.set_value(Status::AlreadyExists("node " + std::to_string(change.node) + " is already a voter"));
        return;
      }
      Result<uint64_t> index = raft_->ProposeConfChange(change);
      if (!index.ok()) {
        p->done.set_value(index.status());
        return;
      }
      pending_[*index] = Pending{raft_->term(), p};
    });
  }
  cv_.notify_one();
  if (future.wait_until(deadline) != std::future_status::ready) {
    return Status::DeadlineExceeded("membership change not applied before the deadline; it may still be");
  }
  try {
    return future.get();
  } catch (const std::future_error&) {  // the driver stopped before running it
    return Status::Unavailable("node is shutting down");
  }
}

Status RaftReplicator::LearnPeerAddresses(const std::map<raft::NodeId, std::string>& learned) {
  std::string record;
  std::vector<std::pair<raft::NodeId, std::string>> changed;
  {
    std::lock_guard lock(mu_);
    for (const auto& [node, address] : learned) {
      auto [it, fresh] = peer_addresses_.try_emplace(node, address);
      if (!fresh && it->second == address) continue;
      it->second = address;
      changed.emplace_back(node, address);
    }
    if (changed.empty()) return Status::Ok();
    record = EncodePeerAddresses(peer_addresses_);
  }
  QUIVER_RETURN_IF_ERROR(log_->SetPeerAddresses(record));
  for (const auto& [node, address] : changed) {
    if (transport_ != nullptr && node != options_.node_id) transport_->SetPeerAddress(node, address);
  }
  return Status::Ok();
}

std::map<raft::NodeId, std::string> RaftReplicator::PeerAddresses() const {
  std::lock_guard lock(mu_);
  return peer_addresses_;
}

Result<uint64_t> RaftReplicator::AddMember(raft::NodeId node, const std::string& address, Clock::time_point deadline) {
  if (node == raft::kNoNode) return Status::InvalidArgument("node id must be above 0");
  if (address.empty() || address.size() > raft::kMaxConfChangeContextBytes || address.find(':') == std::string::npos ||
      address.find_first_of(" \n") != std::string::npos) {
    return Status::InvalidArgument("peer address '" + address + "' is not host:port");
  }
  GroupStatus group = GetGroupStatus();
  if (group.role != raft::Role::kLeader) {
    return Status::FailedPrecondition(group.leader == raft::kNoNode
                                          ? "no leader is known"
                                          : "not the leader; send it to node " + std::to_string(group.leader));
  }
  const std::map<raft::NodeId, std::string> known = PeerAddresses();
  const auto at = known.find(node);
  if ((group.conf.voters.contains(node) || group.conf.learners.contains(node)) && at != known.end() &&
      at->second != address) {
    return Status::FailedPrecondition("node " + std::to_string(node) + " is already a member at " + at->second +
                                      "; remove it first to add it at another address");
  }
  if (group.conf.voters.contains(node)) return group.applied;
  if (!group.conf.learners.contains(node)) {
    // (The status read above may predate a change a retried call made:
    // "already a learner / voter" means that change is done.)
    Status added = ChangeMembership({raft::ConfChangeType::kAddLearner, node, address}, deadline).status();
    if (!added.ok() && added.code() != StatusCode::kAlreadyExists) return added;
  }
  // A learner first: it votes only once it holds what was committed when it
  // was added, so a slow catch-up never costs the cluster its quorum.
  const uint64_t target = GetGroupStatus().commit;
  {
    std::unique_lock lock(mu_);
    for (;;) {
      if (stopping_ || cancelled_) return Status::Unavailable("node is shutting down");
      if (status_.role != raft::Role::kLeader) {
        return Status::Unavailable("leadership changed while node " + std::to_string(node) +
                                   " was catching up; retry (it continues from where it is)");
      }
      const auto it = status_.progress.find(node);
      if (it != status_.progress.end() && it->second.match >= target) break;
      if (Clock::now() >= deadline) {
        return Status::DeadlineExceeded("node " + std::to_string(node) + " is still catching up (a learner); retry "
                                        "to promote it once it has");
      }
      applied_cv_.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(100)));
    }
  }
  Result<uint64_t> promoted = ChangeMembership({raft::ConfChangeType::kAddVoter, node, address}, deadline);
  if (promoted.status().code() == StatusCode::kAlreadyExists) return GetGroupStatus().applied;
  return promoted;
}

Status RaftReplicator::TransferLeadership(raft::NodeId target, Clock::time_point deadline) {
  auto started = std::make_shared<std::promise<Status>>();
  auto future = started->get_future();
  {
    std::lock_guard lock(mu_);
    if (stopping_ || cancelled_ || !started_) return Status::Unavailable("node is not serving");
    driver_ops_.push_back([this, target, started] {
      if (Status st = NotLeaderHere(); !st.ok()) {
        started->set_value(std::move(st));
        return;
      }
      started->set_value(raft_->TransferLeadership(target));
    });
  }
  cv_.notify_one();
  if (future.wait_until(deadline) != std::future_status::ready) return Status::DeadlineExceeded("no answer in time");
  try {
    QUIVER_RETURN_IF_ERROR(future.get());
  } catch (const std::future_error&) {  // the driver stopped before running it
    return Status::Unavailable("node is shutting down");
  }
  std::unique_lock lock(mu_);
  if (!applied_cv_.wait_until(lock, deadline, [&] { return stopping_ || cancelled_ || status_.leader == target; })) {
    return Status::DeadlineExceeded("node " + std::to_string(target) + " did not take over before the deadline");
  }
  if (status_.leader != target) return Status::Unavailable("node is shutting down");
  return Status::Ok();
}

bool RaftReplicator::HandOverLeadership(std::chrono::milliseconds limit) {
  std::unique_lock lock(mu_);
  if (!started_ || stopping_ || status_.role != raft::Role::kLeader || status_.conf.voters.size() < 2) {
    return false;
  }
  handover_requested_ = true;
  cv_.notify_one();
  applied_cv_.wait_for(lock, limit, [&] { return stopping_ || status_.role != raft::Role::kLeader; });
  return status_.role != raft::Role::kLeader;
}

void RaftReplicator::CancelWaits() {
  {
    std::lock_guard lock(mu_);
    cancelled_ = true;
  }
  cv_.notify_all();
  applied_cv_.notify_all();
}

void RaftReplicator::Stop() {
  stop_requested_.store(true);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  checkpoint_cv_.notify_all();
  snapshot_cv_.notify_all();
  if (transport_ != nullptr) transport_->CancelSnapshots();
  if (driver_.joinable()) driver_.join();
  if (checkpointer_.joinable()) checkpointer_.join();
  if (snapshot_sender_.joinable()) snapshot_sender_.join();
  std::error_code ec;
  if (staged_snapshot_) std::filesystem::remove_all(staged_snapshot_->second, ec);
  staged_snapshot_.reset();
  std::lock_guard lock(mu_);
  for (const auto& [m, dir] : snapshot_inbox_) std::filesystem::remove_all(dir, ec);
  snapshot_inbox_.clear();
}

Status RaftReplicator::Health() const {
  std::lock_guard lock(mu_);
  return fatal_;
}

RaftReplicator::LogSyncHistogram RaftReplicator::GetLogSyncHistogram() const {
  LogSyncHistogram h;
  for (size_t i = 0; i < h.counts.size(); ++i) h.counts[i] = log_sync_counts_[i].load(std::memory_order_relaxed);
  h.sum_seconds = static_cast<double>(log_sync_micros_.load(std::memory_order_relaxed)) / 1e6;
  return h;
}

RaftReplicator::GroupStatus RaftReplicator::GetGroupStatus() const {
  std::lock_guard lock(mu_);
  return status_;
}

void RaftReplicator::PublishStatus() {
  GroupStatus s;
  s.id = raft_->id();
  s.leader = raft_->leader();
  s.role = raft_->role();
  s.term = raft_->term();
  s.commit = raft_->commit();
  s.applied = raft_->applied();
  s.conf = raft_->conf();
  if (s.role == raft::Role::kLeader) {
    s.progress = raft_->Progress();
    for (const auto& [node, progress] : s.progress) {
      if (node != options_.node_id) s.slowest_member_match = std::min(s.slowest_member_match, progress.match);
    }
  }
  s.writes_in_flight = pending_.size();
  std::lock_guard lock(mu_);
  s.writes_queued = queue_.size();
  s.snapshots_sent = snapshots_sent_;
  s.snapshots_failed = snapshots_failed_;
  s.snapshots_installed = snapshots_installed_;
  s.last_snapshot_error = last_snapshot_error_;
  status_ = std::move(s);
  applied_cv_.notify_all();
}

void RaftReplicator::FailAllLocked(const Status& st) {
  for (auto& p : queue_) p->done.set_value(st);
  queue_.clear();
  for (auto& [index, pending] : pending_) pending.proposal->done.set_value(st);
  pending_.clear();
  for (auto& read : read_queue_) read->done.set_value(st);
  read_queue_.clear();
  for (auto& [context, read] : reads_) read->done.set_value(st);
  reads_.clear();
}

void RaftReplicator::ServeReads(std::vector<std::shared_ptr<Read>>* started) {
  if (raft_->term() != reads_term_) {
    // Rounds of an earlier term may never be answered: let the clients retry.
    for (auto& [context, read] : reads_) {
      read->done.set_value(Status::Unavailable("leadership changed during the read; retry"));
    }
    reads_.clear();
    reads_term_ = raft_->term();
  }
  for (auto& read : *started) {
    read->context = "read-" + std::to_string(options_.node_id) + "-" + std::to_string(++next_read_);
    if (Status st = raft_->ReadIndex(read->context); !st.ok()) {
      read->done.set_value(st);
      continue;
    }
    reads_[read->context] = std::move(read);
  }
  started->clear();
  const auto now = Clock::now();
  for (auto it = reads_.begin(); it != reads_.end();) {
    Read& read = *it->second;
    if (read.confirmed && read.index <= raft_->applied()) {
      read.done.set_value(Status::Ok());
    } else if (now > read.deadline) {
      // Its caller has given up (and got DEADLINE_EXCEEDED): forget it.
      read.done.set_value(Status::DeadlineExceeded("read not confirmed in time"));
    } else {
      ++it;
      continue;
    }
    it = reads_.erase(it);
  }
}

void RaftReplicator::DriverLoop() {
  auto next_tick = Clock::now() + options_.tick_interval;
  std::vector<std::shared_ptr<Proposal>> batch;
  std::vector<raft::Message> inbox;
  std::vector<raft::SnapshotMeta> snapshots;
  std::vector<std::shared_ptr<Read>> reads;
  std::vector<std::function<void()>> ops;
  std::vector<std::pair<raft::Message, std::string>> snapshot_inbox;
  for (;;) {
    bool stopping = false;
    bool handover = false;
    bool cancelled = false;
    {
      std::unique_lock lock(mu_);
      cv_.wait_until(lock, next_tick, [&] {
        return stopping_ || handover_requested_ || (cancelled_ && !(pending_.empty() && reads_.empty())) ||
               !queue_.empty() || !inbox_.empty() || !read_queue_.empty() || !driver_ops_.empty() ||
               !snapshot_inbox_.empty();
      });
      snapshot_inbox.swap(snapshot_inbox_);
      ops.swap(driver_ops_);
      stopping = stopping_;
      cancelled = cancelled_;
      if (cancelled) {
        FailAllLocked(Status::Unavailable("node is shutting down; the write may or may not have been applied"));
      }
      handover = std::exchange(handover_requested_, false);
      size_t bytes = 0;
      while (!queue_.empty() && batch.size() < options_.max_batch_entries &&
             (batch.empty() || bytes + queue_.front()->data.size() <= options_.max_batch_bytes)) {
        bytes += queue_.front()->data.size();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      inbox.swap(inbox_);
      snapshots.swap(snapshots_created_);
      reads.swap(read_queue_);
    }
    if (Clock::now() >= next_tick) {
      raft_->Tick();
      next_tick = std::max(next_tick + options_.tick_interval, Clock::now());
    }
    for (raft::Message& m : inbox) {
      // A misrouted message is the sender's bug; the core rejects it whole.
      (void)raft_->Step(m);
    }
    inbox.clear();
    std::error_code ec;
    for (auto& [m, dir] : snapshot_inbox) {
      // The core decides whether it still needs it; HandleReady installs it
      // from this directory if so.
      if (staged_snapshot_) std::filesystem::remove_all(staged_snapshot_->second, ec);
      staged_snapshot_.emplace(m.snapshot.index, std::move(dir));
      (void)raft_->Step(m);
    }
    snapshot_inbox.clear();
    for (const raft::SnapshotMeta& meta : snapshots) raft_->SnapshotCreated(meta);
    for (auto& op : ops) op();
    ops.clear();
    if (handover && raft_->role() == raft::Role::kLeader) {
      // The voter with the longest log needs the least to catch up.
      raft::NodeId target = raft::kNoNode;
      uint64_t best = 0;
      for (const auto& [node, progress] : raft_->Progress()) {
        if (node == options_.node_id || progress.learner || !raft_->conf().voters.contains(node)) continue;
        if (target == raft::kNoNode || progress.match > best) {
          target = node;
          best = progress.match;
        }
      }
      if (target != raft::kNoNode) (void)raft_->TransferLeadership(target);
    }
    snapshots.clear();
    // Group commit: every proposal queued while the previous fsync ran becomes
    // an entry of the same durable append.
    for (auto& p : batch) {
      Result<uint64_t> index = raft_->Propose(std::move(p->data));
      if (!index.ok()) {
        p->done.set_value(index.status());
        continue;
      }
      pending_[*index] = Pending{raft_->term(), std::move(p)};
    }
    batch.clear();
    ServeReads(&reads);  // starts the new ones (their messages go out below)
    Status st = HandleReady();
    if (staged_snapshot_) {  // not needed after all (the core had caught up meanwhile)
      std::filesystem::remove_all(staged_snapshot_->second, ec);
      staged_snapshot_.reset();
    }
    if (st.ok()) ServeReads(&reads);  // answers those confirmed and applied meanwhile
    if (st.ok() && !raft_->fatal().ok()) st = raft_->fatal();
    if (!st.ok()) {
      // The log or the state could not be written (or read): nothing more
      // may be acknowledged. Fail everything; the node must stop.
      std::lock_guard lock(mu_);
      fatal_ = st;
      FailAllLocked(Status::Unavailable("storage failure: " + st.message()));
      return;
    }
    PublishStatus();
    if (stopping) {
      std::lock_guard lock(mu_);
      FailAllLocked(Status::Unavailable("node is shutting down; the write may or may not have been applied"));
      return;
    }
  }
}

Status RaftReplicator::HandleReady() {
  while (raft_->HasReady()) QUIVER_RETURN_IF_ERROR(HandleOneReady());
  return Status::Ok();
}

Status RaftReplicator::HandleOneReady() {
  {
    raft::Ready rd = raft_->GetReady();
    // 0. A snapshot from the leader replaces the state and the log first.
    if (rd.snapshot) QUIVER_RETURN_IF_ERROR(InstallSnapshot(*rd.snapshot, rd.hard_state));
    // 1. A leader's appends and heartbeats leave first, so followers write
    // the entries while this node does (etcd's parallel append). Safe: they
    // promise nothing about this node's disk, and no acknowledgement is
    // counted before this Ready is done — this thread handles them next.
    if (rd.role == raft::Role::kLeader && transport_ != nullptr) {
      std::vector<raft::Message> early;
      std::erase_if(rd.messages, [&](raft::Message& m) {
        if (m.type != raft::MessageType::kAppend && m.type != raft::MessageType::kHeartbeat) return false;
        early.push_back(std::move(m));
        return true;
      });
      if (!early.empty()) transport_->Send(std::move(early));
    }
    // 2. Entries and hard state, durable in one synced write (a commit index
    // alone is written without the sync: storage::AppendMustSync).
    if (!rd.entries.empty() || rd.hard_state) {
      const storage::HardState* hs = rd.hard_state ? &*rd.hard_state : nullptr;
      QUIVER_ASSIGN_OR_RETURN(const storage::HardState current, log_->GetHardState());
      const bool synced = storage::AppendMustSync(rd.entries, hs, current);
      const auto t0 = Clock::now();
      QUIVER_RETURN_IF_ERROR(log_->Append(rd.entries, hs));
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      if (synced) {  // the histogram times fsyncs
        size_t bucket = 0;
        while (bucket < kLogSyncBucketsSeconds.size() && seconds > kLogSyncBucketsSeconds[bucket]) ++bucket;
        log_sync_counts_[bucket].fetch_add(1, std::memory_order_relaxed);
        log_sync_micros_.fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
      }
    }
    // 3. Only then the messages that promise them (votes, acknowledgements).
    QueueSnapshotSends(&rd.messages);
    if (!rd.messages.empty() && transport_ != nullptr) transport_->Send(std::move(rd.messages));
    // 4. Apply what is committed, and answer its proposers.
    if (!rd.committed_entries.empty()) {
      QUIVER_RETURN_IF_ERROR(state_->Apply(rd.committed_entries, &outcomes_));
      if (outcomes_.size() != rd.committed_entries.size()) {
        return Status::Internal("state machine returned " + std::to_string(outcomes_.size()) + " outcomes for " +
                                std::to_string(rd.committed_entries.size()) + " entries");
      }
      QUIVER_RETURN_IF_ERROR(ApplyCommitted(rd.committed_entries));
    }
    for (const raft::ReadState& rs : rd.read_states) {
      auto it = reads_.find(rs.context);
      if (it == reads_.end()) continue;
      it->second->index = rs.index;
      it->second->confirmed = true;
    }
    raft_->Advance(rd);
    if (!raft_->fatal().ok()) return raft_->fatal();
  }
  return Status::Ok();
}

Status RaftReplicator::ApplyCommitted(const std::vector<storage::LogEntry>& entries) {
  for (size_t i = 0; i < entries.size(); ++i) {
    const storage::LogEntry& e = entries[i];
    if (e.type == storage::EntryType::kConfChange) {
      // A committed entry that does not decode was written by a broken or
      // newer binary: refuse to guess the membership.
      Result<raft::ConfChange> change = raft::DecodeConfChange(e.data);
      if (!change.ok()) return change.status().WithContext("log entry " + std::to_string(e.index));
      raft::ConfState conf = raft_->ApplyConfChange(*change);
      {
        std::lock_guard lock(mu_);
        conf_history_[e.index] = std::move(conf);
      }
      if (!change->context.empty() && change->type != raft::ConfChangeType::kRemoveNode) {
        QUIVER_RETURN_IF_ERROR(LearnPeerAddresses({{change->node, change->context}}));
      }
    }
    bytes_since_checkpoint_ += e.data.size();
    auto it = pending_.find(e.index);
    if (it == pending_.end()) continue;
    if (it->second.term == e.term && e.type != storage::EntryType::kNoop) {
      if (outcomes_[i].ok()) {
        it->second.proposal->done.set_value(e.index);
      } else {
        it->second.proposal->done.set_value(outcomes_[i]);
      }
    } else {
      // Another leader's entry took this index: ours was never committed.
      it->second.proposal->done.set_value(
          Status::Unavailable("leadership changed before the write committed; it was not applied"));
    }
    pending_.erase(it);
  }
  {
    std::lock_guard lock(mu_);
    for (const storage::LogEntry& e : entries) {
      recent_applied_.emplace_back(e.index, e.data.size());
      if (recent_applied_.size() > options_.log_retention_entries) recent_applied_.pop_front();
    }
  }
  if (bytes_since_checkpoint_ >= options_.checkpoint_every_bytes) {
    bytes_since_checkpoint_ = 0;
    {
      std::lock_guard lock(mu_);
      checkpoint_requested_ = true;
    }
    checkpoint_cv_.notify_one();
  }
  return Status::Ok();
}

Status RaftReplicator::InstallSnapshot(const raft::SnapshotMeta& meta,
                                       const std::optional<storage::HardState>& hard_state) {
  if (!staged_snapshot_ || staged_snapshot_->first != meta.index) {
    return Status::Internal("the Raft core asked to install snapshot " + std::to_string(meta.index) +
                            ", whose files were not received");
  }
  const std::string dir = std::filesystem::path(staged_snapshot_->second).filename();
  staged_snapshot_.reset();
  // Writes proposed here as leader whose entries the snapshot now covers:
  // whether they were committed is no longer known here.
  for (auto it = pending_.begin(); it != pending_.end() && it->first <= meta.index;) {
    it->second.proposal->done.set_value(
        Status::Unavailable("leadership changed; the write may or may not have been applied"));
    it = pending_.erase(it);
  }
  storage::HardState hs;
  if (hard_state) {
    hs = *hard_state;
  } else {
    QUIVER_ASSIGN_OR_RETURN(hs, log_->GetHardState());
  }
  std::lock_guard compaction(compaction_mu_);
  // The intent first (naming files already durable): from here until the
  // log is reset a crash may leave the state half replaced, and Start must
  // finish the install.
  QUIVER_RETURN_IF_ERROR(storage::SyncDirectory(options_.snapshot_dir + "/" + dir));
  QUIVER_RETURN_IF_ERROR(log_->SetInstallRecord(EncodeInstallRecord(meta, dir)));
  return FinishInstall(meta, dir, hs);
}

Status RaftReplicator::FinishInstall(const raft::SnapshotMeta& meta, const std::string& dir_name,
                                     storage::HardState hard_state) {
  const std::string dir = options_.snapshot_dir + "/" + dir_name;
  if (std::ifstream book(dir + "/" + kPeerAddressesFile); book) {
    std::stringstream text;
    text << book.rdbuf();
    QUIVER_ASSIGN_OR_RETURN(auto addresses, DecodePeerAddresses(text.str()));
    QUIVER_RETURN_IF_ERROR(LearnPeerAddresses(addresses));
  }
  Result<uint64_t> applied = state_->InstallSnapshot(dir, &stop_requested_);
  if (!applied.ok()) return applied.status().WithContext("installing snapshot " + std::to_string(meta.index));
  if (*applied < meta.index) {
    return Status::Corruption("snapshot " + std::to_string(meta.index) + " holds state applied only up to " +
                              std::to_string(*applied));
  }
  // The state may be ahead of meta.index (the leader exported what it had
  // applied): the entries in between are replayed from the leader's log and
  // skipped by the state machine, and membership changes among them reach the core.
  hard_state.commit = std::max(hard_state.commit, meta.index);
  QUIVER_RETURN_IF_ERROR(log_->ResetToSnapshot(meta.index, meta.term, hard_state));
  QUIVER_RETURN_IF_ERROR(log_->SetSnapshotRecord(raft::EncodeSnapshotMeta(meta)));
  QUIVER_RETURN_IF_ERROR(log_->SetInstallRecord(""));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::lock_guard lock(mu_);
  conf_history_.clear();
  conf_history_[meta.index] = meta.conf;
  ++snapshots_installed_;
  return Status::Ok();
}

void RaftReplicator::QueueSnapshotSends(std::vector<raft::Message>* messages) {
  auto is_snapshot = [](const raft::Message& m) { return m.type == raft::MessageType::kSnapshot; };
  if (std::none_of(messages->begin(), messages->end(), is_snapshot)) return;
  std::vector<raft::NodeId> refused;
  {
    std::lock_guard lock(mu_);
    for (raft::Message& m : *messages) {
      if (!is_snapshot(m)) continue;
      if (transport_ == nullptr || stopping_) {
        refused.push_back(m.to);
      } else if (snapshot_peers_.insert(m.to).second) {  // one per peer at a time
        snapshot_sends_.push_back(std::move(m));
      }
    }
  }
  std::erase_if(*messages, is_snapshot);
  snapshot_cv_.notify_one();
  for (raft::NodeId peer : refused) raft_->ReportSnapshot(peer, true);
}

void RaftReplicator::SnapshotLoop() {
  for (;;) {
    raft::Message m;
    {
      std::unique_lock lock(mu_);
      snapshot_cv_.wait(lock, [&] { return stopping_ || !snapshot_sends_.empty(); });
      if (stopping_) return;
      m = std::move(snapshot_sends_.front());
      snapshot_sends_.pop_front();
    }
    const raft::NodeId peer = m.to;
    Status st;
    const std::string dir = options_.snapshot_dir + "/outgoing-" + std::to_string(peer);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
    if (options_.snapshot_dir.empty()) {
      st = Status::FailedPrecondition("no snapshot directory is configured");
    } else if (!std::filesystem::create_directories(dir, ec)) {
      st = Status::IOError("cannot create " + dir + (ec ? ": " + ec.message() : ""));
    } else {
      // No compaction while exporting: the newest snapshot record then
      // describes a point the exported state covers, and this log still
      // holds every entry after it.
      std::lock_guard compaction(compaction_mu_);
      Result<std::string> record = log_->GetSnapshotRecord();
      st = record.status();
      if (st.ok() && !record->empty()) {
        Result<raft::SnapshotMeta> newest = raft::DecodeSnapshotMeta(*record);
        st = newest.status();
        if (st.ok() && newest->index > m.snapshot.index) m.snapshot = *newest;
      }
      Result<uint64_t> applied = st.ok() ? state_->ExportSnapshot(dir, &stop_requested_) : Result<uint64_t>(st);
      st = applied.status();
      if (st.ok()) {
        // A follower that missed membership changes learns their addresses here.
        std::ofstream book(dir + "/" + kPeerAddressesFile);
        book << EncodePeerAddresses(PeerAddresses());
        book.close();
        if (!book) st = Status::IOError("writing " + dir + "/" + kPeerAddressesFile);
      }
      if (st.ok() && *applied < m.snapshot.index) {
        st = Status::Internal("exported state at " + std::to_string(*applied) + " is older than snapshot " +
                              std::to_string(m.snapshot.index));
      }
    }
    if (st.ok()) st = transport_->SendSnapshot(m, dir);
    std::filesystem::remove_all(dir, ec);
    {
      std::lock_guard lock(mu_);
      snapshot_peers_.erase(peer);
      if (st.ok()) {
        ++snapshots_sent_;
      } else {
        ++snapshots_failed_;
        last_snapshot_error_ = "to node " + std::to_string(peer) + ": " + st.ToString();
      }
      // The core waits for the outcome before it probes the peer again.
      driver_ops_.push_back([this, peer, failed = !st.ok()] { raft_->ReportSnapshot(peer, failed); });
    }
    cv_.notify_one();
  }
}

uint64_t RaftReplicator::RetainedBelowLocked(uint64_t covered) const {
  uint64_t kept = 0, bytes = 0;
  for (auto it = recent_applied_.rbegin(); it != recent_applied_.rend(); ++it) {
    const auto [index, size] = *it;
    if (index > covered) continue;
    // Sizes unknown below a gap (a snapshot install): keep no more.
    if (index != covered - kept || kept == options_.log_retention_entries ||
        bytes + size > options_.log_retention_bytes) {
      break;
    }
    bytes += size;
    ++kept;
  }
  return kept;
}

raft::ConfState RaftReplicator::ConfAt(uint64_t index) const {
  auto it = conf_history_.upper_bound(index);
  if (it == conf_history_.begin()) return {};
  return std::prev(it)->second;
}

void RaftReplicator::CheckpointLoop() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      checkpoint_cv_.wait(lock, [&] { return stopping_ || checkpoint_requested_; });
      if (stopping_) return;  // the server flushes everything at shutdown
      checkpoint_requested_ = false;
    }
    std::lock_guard compaction(compaction_mu_);
    // Only entries whose effects survive a crash may leave the log: a crash
    // loses the unflushed rest, and the restart replays it. Everything
    // applied by now is in the state's database, so the checkpoint below
    // persists it; the compaction is staged first, to become durable with
    // that same checkpoint (LogStore::StageCompaction).
    const uint64_t applied = state_->AppliedIndex();
    Status st;
    std::optional<raft::SnapshotMeta> staged;
    uint64_t lagging_match = UINT64_MAX;
    uint64_t covered = 0;
    uint64_t retained = 0;
    {
      std::lock_guard lock(mu_);
      lagging_match = status_.slowest_member_match;
      // After a snapshot install the state is ahead of the core, which still
      // replays (and skips) the entries in between: those stay.
      covered = std::min(applied, status_.applied);
      retained = RetainedBelowLocked(covered);
    }
    if (covered > retained) {
      uint64_t upto = covered - retained;
      // A leader keeps what its slowest member still needs (up to a bound):
      // a follower that was down for a while then catches up from the log
      // instead of needing a snapshot.
      if (lagging_match != UINT64_MAX && upto > lagging_match && upto - lagging_match <= options_.max_log_hold_entries) {
        upto = lagging_match;
      }
      if (upto >= log_->FirstIndex()) {
        raft::SnapshotMeta meta;
        meta.index = upto;
        Result<uint64_t> term = log_->Term(upto);
        st = term.status();
        if (st.ok()) {
          meta.term = *term;
          std::lock_guard lock(mu_);
          meta.conf = ConfAt(upto);
        }
        if (st.ok()) st = log_->StageCompaction(upto, raft::EncodeSnapshotMeta(meta));
        if (st.ok()) staged = meta;
      }
    }
    if (st.ok()) st = state_->Checkpoint().status();
    if (st.ok() && staged) {
      std::lock_guard lock(mu_);
      snapshots_created_.push_back(*staged);
      // Changes at or below the snapshot point are summarised by it.
      while (conf_history_.size() > 1 && std::next(conf_history_.begin())->first <= staged->index) {
        conf_history_.erase(conf_history_.begin());
      }
    }
    if (!st.ok()) {
      std::lock_guard lock(mu_);
      fatal_ = st;
      return;
    }
  }
}

}  // namespace quiver::replication
