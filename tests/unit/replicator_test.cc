// The replicator as a single-node group: group commit, ordering, replay at
// start, refusal of inconsistent state, log compaction with its snapshot
// record, and a clean stop. (The Raft core itself: raft_test.cc.)
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "common/encoding.h"
#include "replication/backup.h"
#include "replication/replicator.h"
#include "storage/log_store.h"

namespace quiver::replication {
namespace {

// Counts appends and makes each take a while, so proposals pile up.
class SlowLogStore final : public storage::LogStore {
 public:
  Status Append(std::span<const storage::LogEntry> e, const storage::HardState* hs) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ++appends;
    return inner.Append(e, hs);
  }
  Result<storage::HardState> GetHardState() const override { return inner.GetHardState(); }
  uint64_t FirstIndex() const override { return inner.FirstIndex(); }
  uint64_t LastIndex() const override { return inner.LastIndex(); }
  Result<uint64_t> Term(uint64_t i) const override { return inner.Term(i); }
  Result<std::vector<storage::LogEntry>> Entries(uint64_t lo, uint64_t hi, uint64_t mb) const override {
    return inner.Entries(lo, hi, mb);
  }
  Status CompactTo(uint64_t i) override { return inner.CompactTo(i); }
  Status StageCompaction(uint64_t i, std::string_view r) override { return inner.StageCompaction(i, r); }
  Status ResetToSnapshot(uint64_t i, uint64_t t, const storage::HardState& hs) override {
    return inner.ResetToSnapshot(i, t, hs);
  }
  Status SetSnapshotRecord(std::string_view r) override { return inner.SetSnapshotRecord(r); }
  Result<std::string> GetSnapshotRecord() const override { return inner.GetSnapshotRecord(); }
  Status SetClusterId(std::string_view id) override { return inner.SetClusterId(id); }
  Result<std::string> GetClusterId() const override { return inner.GetClusterId(); }
  Status SetInstallRecord(std::string_view r) override { return inner.SetInstallRecord(r); }
  Result<std::string> GetInstallRecord() const override { return inner.GetInstallRecord(); }
  Status SetPeerAddresses(std::string_view r) override { return inner.SetPeerAddresses(r); }
  Result<std::string> GetPeerAddresses() const override { return inner.GetPeerAddresses(); }
  storage::MemoryLogStore inner;
  std::atomic<int> appends{0};
};

// Records applied data; answers "bad" commands with INVALID_ARGUMENT. Its
// snapshot is one file: the applied index, then one line per datum.
class RecordingStateMachine final : public storage::StateMachine {
 public:
  Status Apply(std::span<const storage::LogEntry> entries, std::vector<Status>* outcomes) override {
    outcomes->clear();
    std::lock_guard lock(mu);
    for (const auto& e : entries) {
      if (e.index <= applied) {
        outcomes->push_back(Status::Ok());
        continue;
      }
      EXPECT_EQ(e.index, applied + 1);
      applied = e.index;
      if (e.type == storage::EntryType::kCommand) data.emplace_back(e.data);
      outcomes->push_back(e.data == "bad" ? Status::InvalidArgument("bad command") : Status::Ok());
    }
    return Status::Ok();
  }
  uint64_t AppliedIndex() const override { return applied.load(); }
  Result<uint64_t> Checkpoint() override {
    ++checkpoints;
    return applied.load();
  }
  Result<uint64_t> ExportSnapshot(const std::string& dir, const std::atomic<bool>*) override {
    std::lock_guard lock(mu);
    std::ofstream out(dir + "/state");
    out << applied.load() << "\n";
    for (const auto& d : data) out << d << "\n";
    ++exports;
    return applied.load();
  }
  Result<uint64_t> InstallSnapshot(const std::string& dir, const std::atomic<bool>*) override {
    std::ifstream in(dir + "/state");
    uint64_t index = 0;
    if (!(in >> index)) return Status::Corruption("no snapshot state in " + dir);
    std::vector<std::string> lines;
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) lines.push_back(line);
    std::lock_guard lock(mu);
    data = std::move(lines);
    applied = index;
    ++installs;
    return index;
  }
  std::vector<std::string> Data() {
    std::lock_guard lock(mu);
    return data;
  }
  std::mutex mu;  // data: the driver applies while the snapshot thread exports
  std::vector<std::string> data;
  std::atomic<int> checkpoints{0};
  std::atomic<int> exports{0};
  std::atomic<int> installs{0};
  // Read by the checkpoint thread while the driver applies (the contract).
  std::atomic<uint64_t> applied{0};
};

Clock::time_point Soon() { return Clock::now() + std::chrono::seconds(10); }

TEST(RaftReplicator, ConcurrentProposalsShareFsyncs) {
  SlowLogStore log;
  RecordingStateMachine sm;
  RaftReplicator r(&log, &sm, nullptr);
  ASSERT_TRUE(r.Start(nullptr).ok());
  constexpr int kThreads = 8, kPerThread = 25;
  std::vector<std::thread> threads;
  std::mutex mu;
  std::set<uint64_t> indexes;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto idx = r.Propose("t" + std::to_string(t) + "-" + std::to_string(i), Soon());
        ASSERT_TRUE(idx.ok()) << idx.status().ToString();
        std::lock_guard lock(mu);
        EXPECT_TRUE(indexes.insert(*idx).second);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(indexes.size(), size_t{kThreads * kPerThread});
  EXPECT_EQ(sm.data.size(), size_t{kThreads * kPerThread});
  EXPECT_LT(log.appends.load(), kThreads * kPerThread) << "no group commit happened";
  EXPECT_EQ(log.GetHardState()->commit, log.LastIndex());
  r.Stop();
}

TEST(RaftReplicator, ApplyOutcomeIsReturned) {
  storage::MemoryLogStore log;
  RecordingStateMachine sm;
  RaftReplicator r(&log, &sm, nullptr);
  ASSERT_TRUE(r.Start(nullptr).ok());
  // Index 1 holds the bootstrap membership, 2 the leader's no-op.
  EXPECT_EQ(r.Propose("bad", Soon()).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*r.Propose("good", Soon()), 4u);
}

TEST(RaftReplicator, ReplaysCommittedTailAtStart) {
  storage::MemoryLogStore log;
  ASSERT_TRUE(raft::Bootstrap(&log, {1}).ok());
  std::vector<storage::LogEntry> entries;
  for (uint64_t i = 2; i <= 6; ++i) entries.push_back({i, 1, storage::EntryType::kCommand, "e" + std::to_string(i)});
  storage::HardState hs{1, 0, 6};
  ASSERT_TRUE(log.Append(entries, &hs).ok());
  RecordingStateMachine sm;
  sm.applied = 3;  // entries 1-3 were persisted before the crash
  RaftReplicator r(&log, &sm, nullptr);
  ASSERT_TRUE(r.Start(nullptr).ok());
  EXPECT_EQ(r.replayed_entries(), 3u);  // e4..e6
  EXPECT_EQ(sm.data, (std::vector<std::string>{"e4", "e5", "e6"}));
  EXPECT_EQ(*r.Propose("next", Soon()), 8u);
  EXPECT_EQ(r.GetGroupStatus().role, raft::Role::kLeader);
  EXPECT_EQ(r.GetGroupStatus().term, 2u);
}

TEST(RaftReplicator, RefusesInconsistentStateWithRecoverySteps) {
  {
    storage::MemoryLogStore log;
    storage::HardState hs{1, 0, 9};  // commit beyond the (empty) log
    ASSERT_TRUE(log.Append({}, &hs).ok());
    RecordingStateMachine sm;
    RaftReplicator r(&log, &sm, nullptr);
    Status st = r.Start(nullptr);
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(st.message().find("restore"), std::string::npos) << st.message();
  }
  {
    storage::MemoryLogStore log;  // log lost, state has applied entries
    RecordingStateMachine sm;
    sm.applied = 7;
    RaftReplicator r(&log, &sm, nullptr);
    EXPECT_EQ(r.Start(nullptr).code(), StatusCode::kFailedPrecondition);
  }
  {
    storage::MemoryLogStore log;  // entries but no membership
    std::vector<storage::LogEntry> entries = {{1, 1, storage::EntryType::kCommand, "x"}};
    storage::HardState hs{1, 0, 1};
    ASSERT_TRUE(log.Append(entries, &hs).ok());
    RecordingStateMachine sm;
    RaftReplicator r(&log, &sm, nullptr);
    Status st = r.Start(nullptr);
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(st.message().find("no cluster membership"), std::string::npos) << st.message();
  }
  {
    storage::MemoryLogStore log;  // started before as node 1, now as node 2
    ASSERT_TRUE(raft::Bootstrap(&log, {1}).ok());
    RecordingStateMachine sm;
    RaftReplicatorOptions options;
    options.node_id = 2;
    RaftReplicator r(&log, &sm, nullptr, options);
    Status st = r.Start(nullptr);
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(st.message().find("not a member"), std::string::npos) << st.message();
  }
}

TEST(RaftReplicator, StopDuringReplayIsCancelled) {
  storage::MemoryLogStore log;
  ASSERT_TRUE(raft::Bootstrap(&log, {1}).ok());
  RecordingStateMachine sm;
  RaftReplicator r(&log, &sm, nullptr);
  std::atomic<bool> stop{true};
  EXPECT_EQ(r.Start(&stop).code(), StatusCode::kCancelled);
}

TEST(RaftReplicator, StoppedReplicatorRefusesWrites) {
  storage::MemoryLogStore log;
  RecordingStateMachine sm;
  RaftReplicator r(&log, &sm, nullptr);
  EXPECT_EQ(r.Propose("early", Soon()).status().code(), StatusCode::kUnavailable);
  ASSERT_TRUE(r.Start(nullptr).ok());
  r.Stop();
  EXPECT_EQ(r.Propose("late", Soon()).status().code(), StatusCode::kUnavailable);
}

TEST(RaftReplicator, CompactsAppliedLogAndRestartsFromTheSnapshotRecord) {
  storage::MemoryLogStore log;
  RecordingStateMachine sm;
  RaftReplicatorOptions opts;
  opts.log_retention_entries = 4;
  opts.checkpoint_every_bytes = 10;
  {
    RaftReplicator r(&log, &sm, nullptr, opts);
    ASSERT_TRUE(r.Start(nullptr).ok());
    for (int i = 0; i < 40; ++i) ASSERT_TRUE(r.Propose("xxxxx", Soon()).ok());
    // Compaction runs on its own thread: give it a moment.
    for (int i = 0; i < 2000 && log.FirstIndex() == 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_GT(sm.checkpoints.load(), 0);
    EXPECT_GT(log.FirstIndex(), 1u);
    EXPECT_GE(log.LastIndex() - log.FirstIndex() + 1, 4u);
  }
  // The bootstrap membership entry is compacted away: the snapshot record
  // carries the membership into the restart.
  auto meta = raft::DecodeSnapshotMeta(*log.GetSnapshotRecord());
  ASSERT_TRUE(meta.ok());
  EXPECT_GE(meta->index + 1, log.FirstIndex());
  EXPECT_EQ(meta->conf.voters, std::set<raft::NodeId>{1});
  RaftReplicator again(&log, &sm, nullptr, opts);
  ASSERT_TRUE(again.Start(nullptr).ok());
  EXPECT_TRUE(again.Propose("after restart", Soon()).ok());
  EXPECT_EQ(sm.data.back(), "after restart");
}

// The retention window below a checkpoint is bounded in bytes too: of
// 1,000-byte entries, a 2,500-byte bound keeps two, not log_retention_entries.
TEST(RaftReplicator, RetentionBelowTheCheckpointStopsAtItsByteBound) {
  storage::MemoryLogStore log;
  RecordingStateMachine sm;
  RaftReplicatorOptions opts;
  opts.log_retention_entries = 64;
  opts.log_retention_bytes = 2500;
  opts.checkpoint_every_bytes = 10;  // a checkpoint after every apply
  RaftReplicator r(&log, &sm, nullptr, opts);
  ASSERT_TRUE(r.Start(nullptr).ok());
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(r.Propose(std::string(1000, 'a' + i), Soon()).ok());
  // The last checkpoint runs on its own thread after the last apply. It may
  // see the core's applied index one entry behind (published after the
  // apply), and then keeps that entry too.
  auto kept_entries = [&] { return log.LastIndex() - log.FirstIndex() + 1; };
  for (int i = 0; i < 2000 && kept_entries() > 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_GE(kept_entries(), 2u);
  EXPECT_LE(kept_entries(), 3u);
  auto kept = log.Entries(log.FirstIndex(), log.LastIndex() + 1, UINT64_MAX);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->back().data, std::string(1000, 'a' + 19));
}

// Three replicators in one process, wired by a transport that can cut a node off.
class LoopbackNetwork final {
 public:
  class Port final : public RaftTransport {
   public:
    Port(LoopbackNetwork* net, raft::NodeId id) : net_(net), id_(id) {}
    void Send(std::vector<raft::Message> messages) override {
      for (auto& m : messages) net_->Deliver(id_, std::move(m));
    }
    // Copies the files into the receiver's staging directory.
    Status SendSnapshot(const raft::Message& m, const std::string& dir) override {
      return net_->DeliverSnapshot(id_, m, dir);
    }
    void CancelSnapshots() override {}
    void SetPeerAddress(raft::NodeId node, const std::string& address) override {
      std::lock_guard lock(mu);
      addresses[node] = address;
    }
    std::map<raft::NodeId, std::string> Addresses() {
      std::lock_guard lock(mu);
      return addresses;
    }
    std::mutex mu;
    std::map<raft::NodeId, std::string> addresses;  // what the replicator told it

   private:
    LoopbackNetwork* net_;
    raft::NodeId id_;
  };
  void Attach(raft::NodeId id, RaftReplicator* r) {
    std::lock_guard lock(mu_);
    nodes_[id] = r;
  }
  void Cut(raft::NodeId id, bool cut) {
    std::lock_guard lock(mu_);
    if (cut) {
      cut_.insert(id);
    } else {
      cut_.erase(id);
    }
  }
  void Deliver(raft::NodeId from, raft::Message m) {
    RaftReplicator* to = nullptr;
    {
      std::lock_guard lock(mu_);
      if (cut_.contains(from) || cut_.contains(m.to) || !nodes_.contains(m.to)) return;
      to = nodes_[m.to];
    }
    to->Receive(std::move(m));
  }
  Status DeliverSnapshot(raft::NodeId from, raft::Message m, const std::string& dir) {
    RaftReplicator* to = nullptr;
    {
      std::lock_guard lock(mu_);
      if (cut_.contains(from) || cut_.contains(m.to) || !nodes_.contains(m.to)) {
        return Status::Unavailable("cut off");
      }
      to = nodes_[m.to];
    }
    QUIVER_ASSIGN_OR_RETURN(std::string staged, to->NewIncomingSnapshotDir(from, m.snapshot.index));
    std::filesystem::copy(dir, staged);
    ++snapshots;
    to->ReceiveSnapshot(std::move(m), staged);
    return Status::Ok();
  }
  std::atomic<int> snapshots{0};

 private:
  std::mutex mu_;
  std::map<raft::NodeId, RaftReplicator*> nodes_;
  std::set<raft::NodeId> cut_;
};

// Three replicators over a LoopbackNetwork that compact their logs often.
struct ThreeNodes {
  struct Node {
    storage::MemoryLogStore log;
    RecordingStateMachine sm;
    std::unique_ptr<LoopbackNetwork::Port> port;
    std::unique_ptr<RaftReplicator> r;
  };
  LoopbackNetwork net;
  std::map<raft::NodeId, Node> nodes;

  ThreeNodes(uint64_t max_log_hold_entries, const std::string& snapshot_root)
      : hold_(max_log_hold_entries), root_(snapshot_root) {
    for (raft::NodeId id : {1, 2, 3}) Add(id, false);
  }
  // A node of the cluster "test" (joining: it waits for the leader to add it).
  Node& Add(raft::NodeId id, bool join) {
    Node& n = nodes[id];
    n.port = std::make_unique<LoopbackNetwork::Port>(&net, id);
    RaftReplicatorOptions opts;
    opts.node_id = id;
    opts.initial_voters = {1, 2, 3};
    opts.cluster_id = "test";
    opts.join = join;
    opts.tick_interval = std::chrono::milliseconds(10);
    opts.log_retention_entries = 4;
    opts.checkpoint_every_bytes = 10;
    opts.max_log_hold_entries = hold_;
    opts.snapshot_dir = root_ + "/node" + std::to_string(id);
    n.r = std::make_unique<RaftReplicator>(&n.log, &n.sm, n.port.get(), opts);
    net.Attach(id, n.r.get());
    return n;
  }
  uint64_t hold_;
  std::string root_;
  raft::NodeId WaitForLeader() {
    for (int i = 0; i < 1000; ++i) {
      for (auto& [id, n] : nodes) {
        if (n.r->GetGroupStatus().role == raft::Role::kLeader) return id;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return raft::kNoNode;
  }
  // Starts the three, cuts a follower off and writes `writes` entries.
  void StartAndWriteWithOneCutOff(int writes, raft::NodeId* leader, raft::NodeId* cut) {
    for (raft::NodeId id : {1, 2, 3}) ASSERT_TRUE(nodes[id].r->Start(nullptr).ok());
    *leader = WaitForLeader();
    ASSERT_NE(*leader, raft::kNoNode);
    *cut = *leader % 3 + 1;
    net.Cut(*cut, true);
    for (int i = 0; i < writes; ++i) ASSERT_TRUE(nodes[*leader].r->Propose("w" + std::to_string(i), Soon()).ok());
  }
  void WaitUntilCaughtUp(raft::NodeId node, raft::NodeId leader) {
    // (applied is atomic; data is read only after Stop)
    for (int i = 0; i < 2000 && nodes[node].sm.applied.load() < nodes[leader].sm.applied.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
};

// What InstallSnapshot records before replacing the state.
std::string InstallRecord(uint64_t index, const std::string& staged_dir) {
  raft::SnapshotMeta meta;
  meta.index = index;
  meta.term = 2;
  meta.conf.voters = {1};
  const std::string m = raft::EncodeSnapshotMeta(meta);
  std::string record;
  PutFixed32LE(&record, static_cast<uint32_t>(m.size()));
  return record + m + staged_dir;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = testing::TempDir() + "/replicator_test_" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(RaftReplicator, ThreeNodesReplicateAndALaggingFollowerCatchesUpAfterCompaction) {
  ThreeNodes c(1'000'000, FreshDir("hold"));
  raft::NodeId l = raft::kNoNode, lagging = raft::kNoNode;
  ASSERT_NO_FATAL_FAILURE(c.StartAndWriteWithOneCutOff(60, &l, &lagging));
  // The leader checkpoints and compacts, but keeps what the cut-off node needs.
  for (int i = 0; i < 2000 && c.nodes[l].log.FirstIndex() == 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_LE(c.nodes[l].log.FirstIndex(), c.nodes[lagging].log.LastIndex() + 1);
  c.net.Cut(lagging, false);
  c.WaitUntilCaughtUp(lagging, l);
  for (auto& [id, n] : c.nodes) n.r->Stop();
  EXPECT_TRUE(c.nodes[lagging].r->Health().ok()) << c.nodes[lagging].r->Health().ToString();
  EXPECT_EQ(c.nodes[lagging].sm.data, c.nodes[l].sm.data);
  EXPECT_EQ(c.nodes[l].sm.data.size(), 60u);
  EXPECT_EQ(c.net.snapshots.load(), 0);
}

TEST(RaftReplicator, AFollowerBehindTheCompactedLogCatchesUpBySnapshot) {
  ThreeNodes c(0, FreshDir("snapshot"));  // the leader keeps nothing for laggards
  raft::NodeId l = raft::kNoNode, lagging = raft::kNoNode;
  ASSERT_NO_FATAL_FAILURE(c.StartAndWriteWithOneCutOff(60, &l, &lagging));
  for (int i = 0; i < 2000 && c.nodes[l].log.FirstIndex() <= c.nodes[lagging].log.LastIndex() + 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_GT(c.nodes[l].log.FirstIndex(), c.nodes[lagging].log.LastIndex() + 1) << "the leader did not compact";
  c.net.Cut(lagging, false);
  c.WaitUntilCaughtUp(lagging, l);
  // Writes after the install replicate as usual.
  ASSERT_TRUE(c.nodes[l].r->Propose("after", Soon()).ok());
  c.WaitUntilCaughtUp(lagging, l);
  const auto status = c.nodes[lagging].r->GetGroupStatus();
  for (auto& [id, n] : c.nodes) n.r->Stop();
  EXPECT_TRUE(c.nodes[lagging].r->Health().ok()) << c.nodes[lagging].r->Health().ToString();
  EXPECT_GE(c.net.snapshots.load(), 1);
  EXPECT_GE(c.nodes[lagging].sm.installs.load(), 1);
  EXPECT_GE(status.snapshots_installed, 1u);
  EXPECT_EQ(c.nodes[lagging].sm.data, c.nodes[l].sm.data);
  EXPECT_EQ(c.nodes[l].sm.data.size(), 61u);
  // The install left no staged files, and the log starts after the snapshot.
  auto meta = raft::DecodeSnapshotMeta(*c.nodes[lagging].log.GetSnapshotRecord());
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->conf.voters, (std::set<raft::NodeId>{1, 2, 3}));
  EXPECT_EQ(*c.nodes[lagging].log.GetInstallRecord(), "");
}

// A node joining a running cluster whose log was compacted: added as a
// learner, caught up by snapshot, promoted, and its address known to all.
TEST(RaftReplicator, AJoiningNodeIsAddedCaughtUpAndPromoted) {
  ThreeNodes c(0, FreshDir("join"));
  for (auto& [id, n] : c.nodes) ASSERT_TRUE(n.r->Start(nullptr).ok());
  const raft::NodeId l = c.WaitForLeader();
  ASSERT_NE(l, raft::kNoNode);
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(c.nodes[l].r->Propose("w" + std::to_string(i), Soon()).ok());
  for (int i = 0; i < 2000 && c.nodes[l].log.FirstIndex() < 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto& joiner = c.Add(4, true);
  Status started = joiner.r->Start(nullptr);
  ASSERT_TRUE(started.ok()) << started.ToString();
  EXPECT_TRUE(joiner.r->GetGroupStatus().conf.voters.empty()) << "a joining node waits to be added";
  // Only the leader adds members.
  const raft::NodeId follower = l % 3 + 1;
  EXPECT_EQ(c.nodes[follower].r->AddMember(4, "10.0.0.4:7701", Soon()).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(c.nodes[l].r->AddMember(4, "no-port", Soon()).status().code(), StatusCode::kInvalidArgument);
  auto index = c.nodes[l].r->AddMember(4, "10.0.0.4:7701", Soon());
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  // Retried (the joiner does not know the first call worked): OK at once.
  EXPECT_TRUE(c.nodes[l].r->AddMember(4, "10.0.0.4:7701", Soon()).ok());
  EXPECT_EQ(c.nodes[l].r->AddMember(4, "10.0.0.9:7701", Soon()).status().code(), StatusCode::kFailedPrecondition);
  ASSERT_TRUE(c.nodes[l].r->Propose("after", Soon()).ok());
  // Every member, not only the joiner, has applied the membership change (and
  // so learned the address) once it has applied what the leader has.
  for (raft::NodeId id : {1, 2, 3, 4}) c.WaitUntilCaughtUp(id, l);
  const auto status = joiner.r->GetGroupStatus();
  EXPECT_EQ(status.conf.voters, (std::set<raft::NodeId>{1, 2, 3, 4}));
  EXPECT_GE(status.snapshots_installed, 1u) << "the log was compacted: the joiner needed a snapshot";
  for (auto& [id, n] : c.nodes) {
    if (id != 4) {
      EXPECT_EQ(n.port->Addresses()[4], "10.0.0.4:7701") << "node " << id;
    }
    EXPECT_EQ(n.r->PeerAddresses()[4], "10.0.0.4:7701") << "node " << id;
  }
  for (auto& [id, n] : c.nodes) n.r->Stop();
  EXPECT_EQ(joiner.sm.data, c.nodes[l].sm.data);
  // The address book is durable: a restart knows it.
  RaftReplicatorOptions restart;
  restart.node_id = 4;
  RaftReplicator again(&joiner.log, &joiner.sm, nullptr, restart);
  ASSERT_TRUE(again.Start(nullptr).ok());
  EXPECT_EQ(again.PeerAddresses()[4], "10.0.0.4:7701");
  again.Stop();
}

TEST(Backup, CreateListVerifyAndRestoreIntoANewGroup) {
  const std::string dir = FreshDir("backups");
  RecordingStateMachine source;
  source.applied = 42;
  source.data = {"a", "b", "c"};
  EXPECT_EQ(CreateBackup(&source, dir, "../x", "c1", nullptr).status().code(), StatusCode::kInvalidArgument);
  auto b1 = CreateBackup(&source, dir, "b1", "c1", nullptr);
  ASSERT_TRUE(b1.ok()) << b1.status().ToString();
  EXPECT_EQ(b1->applied_index, 42u);
  EXPECT_EQ(CreateBackup(&source, dir, "b1", "c1", nullptr).status().code(), StatusCode::kAlreadyExists);
  std::filesystem::create_directories(dir + "/half-written");  // no MANIFEST: not a backup
  auto list = ListBackups(dir);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].name, "b1");
  EXPECT_EQ((*list)[0].cluster_id, "c1");
  ASSERT_TRUE(VerifyBackup(b1->path).ok());

  // A damaged backup is refused before anything changes.
  ASSERT_TRUE(CreateBackup(&source, dir, "b2", "c1", nullptr).ok());
  { std::ofstream(dir + "/b2/state", std::ios::app) << "tampered\n"; }
  EXPECT_EQ(VerifyBackup(dir + "/b2").status().code(), StatusCode::kDataLoss);
  {
    storage::MemoryLogStore log;
    RecordingStateMachine sm;
    EXPECT_EQ(RestoreBackup(dir + "/b2", &log, &sm, {1}, "new", nullptr).code(), StatusCode::kDataLoss);
    EXPECT_EQ(sm.installs.load(), 0);
  }

  storage::MemoryLogStore log;
  RecordingStateMachine sm;
  ASSERT_TRUE(RestoreBackup(b1->path, &log, &sm, {1}, "new", nullptr).ok());
  EXPECT_EQ(RestoreBackup(b1->path, &log, &sm, {1}, "new", nullptr).code(), StatusCode::kFailedPrecondition)
      << "only into an empty data directory";
  RaftReplicator r(&log, &sm, nullptr);
  ASSERT_TRUE(r.Start(nullptr).ok());
  EXPECT_EQ(r.cluster_id(), "new");
  auto index = r.Propose("d", Soon());
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_GT(*index, 42u);
  r.Stop();
  EXPECT_EQ(sm.data, (std::vector<std::string>{"a", "b", "c", "d"}));
}

TEST(RaftReplicator, AnInterruptedInstallIsFinishedAtStart) {
  const std::string root = FreshDir("redo");
  RaftReplicatorOptions opts;
  opts.snapshot_dir = root;
  // A leader's export: the state at index 7 with two writes.
  RecordingStateMachine leader_sm;
  leader_sm.applied = 7;
  leader_sm.data = {"a", "b"};
  std::filesystem::create_directories(root + "/incoming-2-7-1");
  ASSERT_TRUE(leader_sm.ExportSnapshot(root + "/incoming-2-7-1", nullptr).ok());
  // The node crashed after recording its intent, before the log was reset.
  storage::MemoryLogStore log;
  ASSERT_TRUE(raft::Bootstrap(&log, {1}).ok());
  ASSERT_TRUE(log.SetInstallRecord(InstallRecord(7, "incoming-2-7-1")).ok());
  RecordingStateMachine sm;  // the state was wiped before the crash
  RaftReplicator r(&log, &sm, nullptr, opts);
  ASSERT_TRUE(r.Start(nullptr).ok());
  EXPECT_EQ(sm.installs.load(), 1);
  EXPECT_EQ(sm.Data(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(log.FirstIndex(), 8u);
  EXPECT_EQ(*log.GetInstallRecord(), "");
  EXPECT_FALSE(std::filesystem::exists(root + "/incoming-2-7-1"));
  auto idx = r.Propose("next", Soon());
  ASSERT_TRUE(idx.ok()) << idx.status().ToString();
  EXPECT_EQ(*idx, 9u);  // after the new term's no-op
  r.Stop();
  EXPECT_EQ(sm.Data().back(), "next");
}

TEST(RaftReplicator, AnInstallWhoseFilesAreGoneStopsWithRecoverySteps) {
  RaftReplicatorOptions opts;
  opts.snapshot_dir = FreshDir("gone");
  storage::MemoryLogStore log;
  ASSERT_TRUE(raft::Bootstrap(&log, {1}).ok());
  ASSERT_TRUE(log.SetInstallRecord(InstallRecord(7, "incoming-2-7-1")).ok());
  RecordingStateMachine sm;
  RaftReplicator r(&log, &sm, nullptr, opts);
  Status st = r.Start(nullptr);
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(st.message().find("docs/operations.md#recovery"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace quiver::replication
