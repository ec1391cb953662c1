// One test per rule of the Raft paper (and of its pre-vote, check-quorum,
// ReadIndex, transfer and membership extensions), on a hand-driven cluster
// whose messages the test delivers, drops or edits. The seeded simulator
// (raft_sim_test.cc) then checks the same rules under random faults.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "replication/raft/raft.h"
#include "replication/raft/raft_log.h"
#include "storage/log_store.h"

namespace quiver::replication::raft {
namespace {

using storage::EntryType;
using storage::HardState;
using storage::LogEntry;

struct TestNode {
  std::unique_ptr<storage::MemoryLogStore> log = std::make_unique<storage::MemoryLogStore>();
  std::unique_ptr<Raft> raft;
  std::vector<LogEntry> applied;
  std::vector<ReadState> reads;
  ConfState conf;
  SnapshotMeta snapshot;
};

// N nodes, messages held until the test delivers them.
class Cluster {
 public:
  using Tweak = std::function<void(Config&)>;

  explicit Cluster(int n, Tweak tweak = {}, bool bootstrap = true) : tweak_(std::move(tweak)) {
    std::set<NodeId> voters;
    for (int i = 1; i <= n; ++i) voters.insert(static_cast<NodeId>(i));
    for (NodeId id : voters) {
      nodes_[id] = std::make_unique<TestNode>();
      if (bootstrap) {
        EXPECT_TRUE(Bootstrap(nodes_[id]->log.get(), voters).ok());
      }
    }
    if (bootstrap) {
      for (NodeId id : voters) Start(id);
    }
  }

  TestNode& node(NodeId id) { return *nodes_.at(id); }
  // A node with an empty disk, outside the cluster until it is added.
  void AddEmptyNode(NodeId id) {
    nodes_[id] = std::make_unique<TestNode>();
    Start(id);
  }
  Raft& raft(NodeId id) { return *nodes_.at(id)->raft; }

  // (Re)creates the core from the node's durable log, as after a crash.
  void Start(NodeId id, uint64_t applied = 0) {
    TestNode& n = node(id);
    Config c;
    c.id = id;
    c.applied = applied;
    c.conf = applied == 0 ? ConfState{} : n.conf;
    c.snapshot = n.snapshot;
    c.random_seed = id;
    if (applied == 0) n.applied.clear();
    if (tweak_) tweak_(c);
    auto r = Raft::Create(c, n.log.get());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    n.raft = std::move(r).value();
    Process(id);
  }

  void Process(NodeId id) {
    TestNode& n = node(id);
    while (n.raft->HasReady()) {
      Ready rd = n.raft->GetReady();
      if (rd.snapshot) {
        HardState hs = rd.hard_state ? *rd.hard_state : *n.log->GetHardState();
        ASSERT_TRUE(n.log->ResetToSnapshot(rd.snapshot->index, rd.snapshot->term, hs).ok());
        n.snapshot = *rd.snapshot;
        n.conf = rd.snapshot->conf;
      }
      ASSERT_TRUE(n.log->Append(rd.entries, rd.hard_state ? &*rd.hard_state : nullptr).ok());
      for (Message& m : rd.messages) outbox.push_back(std::move(m));
      for (const LogEntry& e : rd.committed_entries) {
        if (e.type == EntryType::kConfChange) n.conf = n.raft->ApplyConfChange(*DecodeConfChange(e.data));
        n.applied.push_back(e);
      }
      for (ReadState& rs : rd.read_states) n.reads.push_back(std::move(rs));
      n.raft->Advance(rd);
      ASSERT_TRUE(n.raft->fatal().ok()) << n.raft->fatal().ToString();
    }
  }

  bool Cut(const Message& m) const { return isolated.contains(m.from) || isolated.contains(m.to); }

  // Delivers messages (and the ones they cause) until none are left; messages
  // for which `drop` returns true, or to/from isolated nodes, are discarded.
  void Deliver(const std::function<bool(const Message&)>& drop = {}) {
    for (int rounds = 0; !outbox.empty() && rounds < 10000; ++rounds) {
      Message m = std::move(outbox.front());
      outbox.erase(outbox.begin());
      if (Cut(m) || (drop && drop(m)) || !nodes_.contains(m.to) || !nodes_.at(m.to)->raft) continue;
      ASSERT_TRUE(raft(m.to).Step(m).ok());
      Process(m.to);
    }
  }

  void Tick(NodeId id, int times = 1) {
    for (int i = 0; i < times; ++i) {
      raft(id).Tick();
      Process(id);
    }
  }

  void Elect(NodeId id) {
    raft(id).Campaign();
    Process(id);
    Deliver();
    ASSERT_EQ(raft(id).role(), Role::kLeader);
  }

  // Ticks `ids` in turn (each voter's leader lease runs on its own clock)
  // until one of them leads; returns it, or kNoNode.
  NodeId TickUntilLeader(const std::set<NodeId>& ids) {
    for (int round = 0; round < 200; ++round) {
      for (NodeId id : ids) {
        Tick(id);
        Deliver();
        if (raft(id).role() == Role::kLeader) return id;
      }
    }
    return kNoNode;
  }

  uint64_t Propose(NodeId leader, const std::string& data) {
    auto index = raft(leader).Propose(data);
    EXPECT_TRUE(index.ok()) << index.status().ToString();
    Process(leader);
    return index.ok() ? *index : 0;
  }

  std::vector<Message> outbox;
  std::set<NodeId> isolated;

 private:
  Tweak tweak_;
  std::map<NodeId, std::unique_ptr<TestNode>> nodes_;
};

std::vector<std::string> AppliedCommands(const TestNode& n) {
  std::vector<std::string> out;
  for (const auto& e : n.applied) {
    if (e.type == EntryType::kCommand) out.emplace_back(e.data);
  }
  return out;
}

// ------------------------------------------------------------- elections

TEST(Raft, BootstrapAppliesTheInitialMembershipEverywhere) {
  Cluster c(3);
  for (NodeId id : {1, 2, 3}) {
    EXPECT_EQ(c.raft(id).conf().voters, (std::set<NodeId>{1, 2, 3}));
    EXPECT_EQ(c.raft(id).role(), Role::kFollower);
    EXPECT_EQ(c.raft(id).term(), 1u);
  }
  storage::MemoryLogStore used;
  ASSERT_TRUE(Bootstrap(&used, {1}).ok());
  EXPECT_EQ(Bootstrap(&used, {1}).code(), StatusCode::kFailedPrecondition);
}

TEST(Raft, ElectsALeaderThatAppendsANoopAndCommitsIt) {
  Cluster c(3);
  c.Elect(1);
  EXPECT_EQ(c.raft(1).term(), 2u);
  const uint64_t noop = c.raft(1).last_index();
  EXPECT_EQ(c.raft(1).commit(), noop);
  for (NodeId id : {2, 3}) {
    EXPECT_EQ(c.raft(id).leader(), 1u);
    c.Tick(1);  // a heartbeat carries the commit index
    c.Deliver();
    EXPECT_EQ(c.raft(id).commit(), noop);
    EXPECT_EQ(c.node(id).applied.back().type, EntryType::kNoop);
  }
}

TEST(Raft, FollowerCampaignsAfterItsElectionTimeout) {
  Cluster c(3);
  c.Tick(2, 19);  // below the largest randomized timeout (2 * election_ticks - 1) ...
  c.Tick(2, 1);   // ... and at it: it must have campaigned by now
  c.Deliver();
  EXPECT_EQ(c.raft(2).role(), Role::kLeader);
}

TEST(Raft, VotesOncePerTerm) {
  Cluster c(3, [](Config& cfg) { cfg.pre_vote = false; });
  c.raft(1).Campaign();
  c.Process(1);
  c.raft(2).Campaign();
  c.Process(2);
  // Both ask node 3 for term 2; it grants only the first.
  std::vector<Message> to3, rest;
  for (auto& m : c.outbox) (m.to == 3 ? to3 : rest).push_back(m);
  ASSERT_EQ(to3.size(), 2u);
  c.outbox.clear();
  for (const Message& m : to3) ASSERT_TRUE(c.raft(3).Step(m).ok());
  c.Process(3);
  int granted = 0;
  for (const Message& m : c.outbox) granted += m.type == MessageType::kVoteResponse && !m.reject;
  EXPECT_EQ(granted, 1);
}

TEST(Raft, RejectsAVoteForACandidateWithAnOlderLog) {
  Cluster c(3, [](Config& cfg) { cfg.pre_vote = false; });
  c.Elect(1);
  c.isolated = {3};
  c.Propose(1, "x");
  c.Deliver();
  c.isolated.clear();
  // Node 3 missed "x": node 2 must refuse it (§5.4.1), so it cannot win.
  Message vote;
  vote.type = MessageType::kVote;
  vote.from = 3;
  vote.to = 2;
  vote.term = c.raft(2).term() + 1;
  vote.index = c.raft(3).last_index();
  vote.log_term = c.raft(3).TermAt(vote.index);
  // Outside the leader lease (as if node 2 had not heard from 1 for a while).
  c.Tick(2, 10);
  c.outbox.clear();
  ASSERT_TRUE(c.raft(2).Step(vote).ok());
  c.Process(2);
  ASSERT_FALSE(c.outbox.empty());
  EXPECT_EQ(c.outbox.back().type, MessageType::kVoteResponse);
  EXPECT_TRUE(c.outbox.back().reject);
}

TEST(Raft, PreVoteKeepsARejoiningNodeFromRaisingTerms) {
  for (const bool pre_vote : {true, false}) {
    SCOPED_TRACE(pre_vote ? "pre-vote" : "no pre-vote");
    Cluster c(3, [&](Config& cfg) {
      cfg.pre_vote = pre_vote;
      cfg.check_quorum = false;
    });
    c.Elect(1);
    const uint64_t term = c.raft(1).term();
    c.isolated = {3};
    c.Tick(3, 100);  // campaigns in vain, many times
    c.Deliver();
    if (pre_vote) {
      EXPECT_EQ(c.raft(3).term(), term);  // pre-votes leave no trace
    } else {
      EXPECT_GT(c.raft(3).term(), term + 3);
    }
    c.isolated.clear();
    c.Tick(3, 30);
    c.Tick(1, 1);
    c.Deliver();
    if (pre_vote) {
      EXPECT_EQ(c.raft(1).role(), Role::kLeader);  // the healthy leader stays
      EXPECT_EQ(c.raft(1).term(), term);
    } else {
      EXPECT_GT(c.raft(1).term(), term);  // deposed by the rejoining node's term
    }
  }
}

TEST(Raft, CheckQuorumMakesAnIsolatedLeaderStepDown) {
  Cluster c(3);
  c.Elect(1);
  c.isolated = {1};
  c.Tick(1, 9);
  c.Deliver();
  EXPECT_EQ(c.raft(1).role(), Role::kLeader);
  // The first check still counts the answers from its election; the second,
  // one election timeout later, finds no majority.
  c.Tick(1, 12);
  EXPECT_EQ(c.raft(1).role(), Role::kFollower);
  EXPECT_EQ(c.raft(1).leader(), kNoNode);
}

TEST(Raft, FollowersInTheLeaderLeaseIgnoreVoteRequests) {
  Cluster c(3);
  c.Elect(1);
  const uint64_t term = c.raft(2).term();
  Message vote;
  vote.type = MessageType::kVote;
  vote.from = 3;
  vote.to = 2;
  vote.term = term + 5;
  vote.index = c.raft(3).last_index();
  vote.log_term = c.raft(3).TermAt(vote.index);
  c.outbox.clear();
  ASSERT_TRUE(c.raft(2).Step(vote).ok());
  c.Process(2);
  EXPECT_EQ(c.raft(2).term(), term);
  EXPECT_TRUE(c.outbox.empty());
  // A leadership transfer's vote is honoured inside the lease.
  vote.context = std::string(kCampaignTransfer);
  ASSERT_TRUE(c.raft(2).Step(vote).ok());
  c.Process(2);
  EXPECT_EQ(c.raft(2).term(), term + 5);
}

TEST(Raft, AStaleLeaderLearnsTheNewTermFromItsFollowers) {
  Cluster c(3);
  c.Elect(1);
  c.isolated = {1};
  const NodeId next = c.TickUntilLeader({2, 3});
  ASSERT_NE(next, kNoNode);
  c.isolated.clear();
  // Node 1 has not ticked: it still thinks it leads.
  ASSERT_EQ(c.raft(1).role(), Role::kLeader);
  c.Tick(1, 1);  // its heartbeat, answered in the newer term
  c.Deliver();
  EXPECT_EQ(c.raft(1).role(), Role::kFollower);
  EXPECT_EQ(c.raft(1).term(), c.raft(next).term());
}

// ------------------------------------------------------------- replication

TEST(Raft, ReplicatesAndAppliesInOrderEverywhere) {
  Cluster c(3);
  c.Elect(1);
  for (int i = 0; i < 20; ++i) c.Propose(1, "w" + std::to_string(i));
  c.Deliver();
  c.Tick(1, 1);
  c.Deliver();
  for (NodeId id : {1, 2, 3}) {
    ASSERT_EQ(AppliedCommands(c.node(id)).size(), 20u);
    EXPECT_EQ(AppliedCommands(c.node(id)).back(), "w19");
    EXPECT_EQ(c.raft(id).commit(), c.raft(1).last_index());
  }
}

TEST(Raft, ProposalsOnAFollowerNameTheLeader) {
  Cluster c(3);
  c.Elect(1);
  auto r = c.raft(2).Propose("x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("node 1"), std::string::npos);
}

TEST(Raft, LeaderOverwritesAFollowersUncommittedConflictingEntries) {
  Cluster c(3);
  c.Elect(1);
  c.isolated = {2, 3};
  c.Propose(1, "lost-1");
  c.Propose(1, "lost-2");
  c.Deliver();
  EXPECT_EQ(AppliedCommands(c.node(1)).size(), 0u);  // never committed
  // Node 2 or 3 leads a new term; node 1 returns.
  c.isolated = {1};
  const NodeId next = c.TickUntilLeader({2, 3});
  ASSERT_NE(next, kNoNode);
  c.Propose(next, "kept");
  c.Deliver();
  c.isolated.clear();
  c.Tick(next, 1);
  c.Deliver();
  c.Tick(next, 1);
  c.Deliver();
  EXPECT_EQ(AppliedCommands(c.node(1)), std::vector<std::string>{"kept"});
  EXPECT_EQ(c.raft(1).last_index(), c.raft(next).last_index());
  EXPECT_EQ(c.raft(1).TermAt(c.raft(1).last_index()), c.raft(next).term());
}

TEST(Raft, FlowControlBoundsAppendsInFlight) {
  Cluster c(3, [](Config& cfg) {
    cfg.max_inflight_messages = 2;
    cfg.max_bytes_per_message = 1;  // one entry per message
  });
  c.Elect(1);
  c.Tick(1, 1);
  c.Deliver();
  c.outbox.clear();
  for (int i = 0; i < 10; ++i) c.Propose(1, "w" + std::to_string(i));
  int to2 = 0;
  for (const auto& m : c.outbox) to2 += m.type == MessageType::kAppend && m.to == 2;
  EXPECT_EQ(to2, 2);
  // Acknowledgements open the window again, and everything arrives.
  c.Deliver();
  c.Tick(1, 1);
  c.Deliver();
  EXPECT_EQ(AppliedCommands(c.node(2)).size(), 10u);
}

TEST(Raft, LostAppendsAreRepairedByProbing) {
  Cluster c(3);
  c.Elect(1);
  for (int i = 0; i < 5; ++i) c.Propose(1, "w" + std::to_string(i));
  c.Deliver([](const Message& m) { return m.type == MessageType::kAppend && m.to == 3; });
  EXPECT_EQ(AppliedCommands(c.node(3)).size(), 0u);
  for (int i = 0; i < 3; ++i) {
    c.Tick(1, 1);
    c.Deliver();
  }
  EXPECT_EQ(AppliedCommands(c.node(3)).size(), 5u);
}

// Raft §5.4.2, Figure 8: an entry from an earlier term replicated on a
// majority is not committed by counting replicas; a later leader may
// overwrite it, and no node may have applied it.
TEST(Raft, Figure8_OldTermEntriesAreNotCommittedByCountingReplicas) {
  // The paper's setting: no pre-vote, no leader lease.
  Cluster c(
      5,
      [](Config& cfg) {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
      },
      /*bootstrap=*/false);
  // Logs after the bootstrap entries 1..5 (term 1):
  //   S1: 6@2    S2: 6@2    S3: -    S4: -    S5: 6@3
  // (S1 led term 2 and reached S2; S5 led term 3 and reached nobody.)
  std::vector<LogEntry> boot;
  {
    storage::MemoryLogStore tmp;
    ASSERT_TRUE(Bootstrap(&tmp, {1, 2, 3, 4, 5}).ok());
    boot = *tmp.Entries(1, 6, UINT64_MAX);
  }
  auto build = [&](NodeId id, uint64_t term, std::vector<LogEntry> extra) {
    std::vector<LogEntry> entries = boot;
    entries.insert(entries.end(), extra.begin(), extra.end());
    HardState hs{term, kNoNode, 5};
    ASSERT_TRUE(c.node(id).log->Append(entries, &hs).ok());
  };
  build(1, 3, {{6, 2, EntryType::kCommand, "from-term-2"}});
  build(2, 3, {{6, 2, EntryType::kCommand, "from-term-2"}});
  build(3, 3, {});
  build(4, 3, {});
  build(5, 4, {{6, 3, EntryType::kCommand, "from-term-3"}});  // saw term 4 start
  for (NodeId id : {1, 2, 3, 4, 5}) c.Start(id);

  // S1 wins term 4 with S2, S3, S4 (S5 is cut off). Its appends reach S2
  // and S3 only up to entry 6 (term 2) — never its own no-op at 7 — so S1
  // learns that entry 6 is on S1, S2 and S3: a majority.
  c.raft(1).Campaign();
  c.Process(1);
  for (int round = 0; round < 20 && !c.outbox.empty(); ++round) {
    std::vector<Message> batch = std::move(c.outbox);
    c.outbox.clear();
    for (Message m : batch) {
      if (m.to == 5 || m.from == 5) continue;
      if (m.type == MessageType::kAppend) {
        if (m.to == 4) continue;
        std::erase_if(m.entries, [](const LogEntry& e) { return e.index > 6; });
      }
      ASSERT_TRUE(c.raft(m.to).Step(m).ok());
      c.Process(m.to);
    }
  }
  ASSERT_EQ(c.raft(1).role(), Role::kLeader);
  ASSERT_EQ(c.raft(1).term(), 4u);
  ASSERT_EQ(c.raft(3).TermAt(6), 2u);
  EXPECT_LT(c.raft(1).commit(), 6u) << "an entry of term 2 was committed by counting replicas in term 4";
  for (const auto& e : c.node(1).applied) EXPECT_NE(e.data, "from-term-2");

  // S1 crashes; S5 (last entry 6@3) wins term 5 with S2, S3, S4 and
  // overwrites entry 6 everywhere — legal, because it was never committed.
  c.isolated = {1};
  c.outbox.clear();
  c.raft(5).Campaign();
  c.Process(5);
  c.Deliver();
  ASSERT_EQ(c.raft(5).role(), Role::kLeader);
  EXPECT_EQ(c.raft(5).term(), 5u);
  c.Tick(5, 1);
  c.Deliver();
  for (NodeId id : {2, 3, 4, 5}) {
    EXPECT_EQ(c.raft(id).TermAt(6), 3u) << "node " << id;
    for (const auto& e : c.node(id).applied) EXPECT_NE(e.data, "from-term-2");
  }
}

TEST(Raft, ALeaderCommitsEarlierTermEntriesThroughItsOwnEntry) {
  Cluster c(3, [](Config& cfg) { cfg.check_quorum = false; });  // no lease: node 2 votes at once
  c.Elect(1);
  c.isolated = {2, 3};
  c.Propose(1, "old");  // reaches nobody in term 2
  c.Deliver();
  c.isolated = {3};
  // Node 1 restarts, wins term 3 with node 2 and replicates "old" along
  // with its no-op: both commit together.
  c.Start(1, 0);
  c.Elect(1);
  c.Tick(1, 1);
  c.Deliver();
  EXPECT_EQ(AppliedCommands(c.node(2)), std::vector<std::string>{"old"});
  EXPECT_EQ(c.raft(1).TermAt(c.raft(1).commit()), c.raft(1).term());
}

// ------------------------------------------------------------- restarts and snapshots

TEST(Raft, RestartKeepsTermVoteAndLog) {
  Cluster c(3);
  c.Elect(1);
  c.Propose(1, "a");
  c.Deliver();
  const uint64_t term = c.raft(2).term();
  const uint64_t last = c.raft(2).last_index();
  c.Start(2);  // volatile state gone; the durable log replays
  EXPECT_EQ(c.raft(2).term(), term);
  EXPECT_EQ(c.raft(2).last_index(), last);
  EXPECT_EQ(AppliedCommands(c.node(2)), std::vector<std::string>{"a"});
}

TEST(Raft, InconsistentDurableStateStopsTheNodeWithAClearError) {
  auto start = [](storage::MemoryLogStore* log, uint64_t applied) {
    Config cfg;
    cfg.id = 1;
    cfg.applied = applied;
    return Raft::Create(cfg, log).status();
  };
  {  // hard state ahead of the log
    storage::MemoryLogStore log;
    HardState hs{2, 0, 7};
    ASSERT_TRUE(log.Append({}, &hs).ok());
    Status st = start(&log, 0);
    EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(st.message().find("commit index is ahead of the log"), std::string::npos) << st.ToString();
  }
  {  // a log without its hard state
    storage::MemoryLogStore log;
    std::vector<LogEntry> e{{1, 1, EntryType::kNoop, ""}};
    ASSERT_TRUE(log.Append(e, nullptr).ok());
    EXPECT_NE(start(&log, 0).message().find("no hard state"), std::string::npos);
  }
  {  // applied beyond commit
    storage::MemoryLogStore log;
    ASSERT_TRUE(Bootstrap(&log, {1}).ok());
    EXPECT_NE(start(&log, 9).message().find("never committed"), std::string::npos);
  }
  {  // entries between the applied index and the log are gone
    storage::MemoryLogStore log;
    ASSERT_TRUE(Bootstrap(&log, {1, 2, 3}).ok());
    ASSERT_TRUE(log.CompactTo(2).ok());
    EXPECT_NE(start(&log, 0).message().find("are gone"), std::string::npos);
  }
  Config bad;
  EXPECT_EQ(Raft::Create(bad, nullptr).status().code(), StatusCode::kInvalidArgument);
}

TEST(Raft, ALaggingFollowerCatchesUpFromASnapshot) {
  Cluster c(3);
  c.Elect(1);
  c.isolated = {3};
  for (int i = 0; i < 10; ++i) c.Propose(1, "w" + std::to_string(i));
  c.Deliver();
  // The leader snapshots at its applied index and compacts its log.
  TestNode& leader = c.node(1);
  SnapshotMeta meta{c.raft(1).applied(), c.raft(1).TermAt(c.raft(1).applied()), leader.conf};
  leader.snapshot = meta;
  c.raft(1).SnapshotCreated(meta);
  ASSERT_TRUE(leader.log->CompactTo(meta.index).ok());
  c.isolated.clear();
  for (int i = 0; i < 4; ++i) {
    c.Tick(1, 1);
    c.Deliver();
  }
  EXPECT_EQ(c.node(3).snapshot, meta);  // installed from the leader's snapshot
  EXPECT_EQ(c.node(3).log->FirstIndex(), meta.index + 1);
  EXPECT_EQ(c.raft(3).commit(), c.raft(1).commit());
  // Entries after the snapshot flow by appends again.
  c.Propose(1, "after");
  c.Deliver();
  c.Tick(1, 1);
  c.Deliver();
  EXPECT_EQ(AppliedCommands(c.node(3)).back(), "after");
}

// ------------------------------------------------------------- reads, transfer, membership

TEST(Raft, ReadIndexNeedsAHeartbeatQuorum) {
  Cluster c(3);
  c.Elect(1);
  c.Tick(1, 1);
  c.Deliver();
  const uint64_t commit = c.raft(1).commit();
  ASSERT_TRUE(c.raft(1).ReadIndex("r1").ok());
  c.Process(1);
  EXPECT_TRUE(c.node(1).reads.empty());  // not before a majority confirms
  c.Deliver([](const Message& m) { return m.from == 3 || m.to == 3; });
  ASSERT_EQ(c.node(1).reads.size(), 1u);
  EXPECT_EQ(c.node(1).reads[0].index, commit);
  EXPECT_EQ(c.node(1).reads[0].context, "r1");
  // An isolated leader never answers.
  c.isolated = {1};
  ASSERT_TRUE(c.raft(1).ReadIndex("r2").ok());
  c.Process(1);
  c.Deliver();
  EXPECT_EQ(c.node(1).reads.size(), 1u);
}

TEST(Raft, ReadIndexFromAFollowerGoesThroughTheLeader) {
  Cluster c(3);
  c.Elect(1);
  c.Propose(1, "x");
  c.Deliver();
  ASSERT_TRUE(c.raft(2).ReadIndex("f1").ok());
  c.Process(2);
  c.Deliver();
  ASSERT_EQ(c.node(2).reads.size(), 1u);
  EXPECT_EQ(c.node(2).reads[0].index, c.raft(1).commit());
  EXPECT_EQ(c.raft(3).ReadIndex("none").code(), StatusCode::kOk);
  Cluster lonely(3);
  EXPECT_EQ(lonely.raft(2).ReadIndex("r").code(), StatusCode::kUnavailable);
}

TEST(Raft, ReadIndexWaitsForTheNewLeadersFirstCommit) {
  Cluster c(3);
  c.raft(1).Campaign();
  c.Process(1);
  // Elected, but its no-op has not reached anyone yet.
  c.Deliver([](const Message& m) { return m.type == MessageType::kAppend; });
  ASSERT_EQ(c.raft(1).role(), Role::kLeader);
  ASSERT_TRUE(c.raft(1).ReadIndex("early").ok());
  c.Process(1);
  c.Deliver([](const Message& m) { return m.type == MessageType::kAppend; });
  EXPECT_TRUE(c.node(1).reads.empty());
  c.Tick(1, 1);
  c.Deliver();
  ASSERT_EQ(c.node(1).reads.size(), 1u);
  EXPECT_EQ(c.node(1).reads[0].index, c.raft(1).commit());
}

TEST(Raft, LeadershipTransferHandsOverAndBlocksProposalsMeanwhile) {
  Cluster c(3);
  c.Elect(1);
  c.isolated = {2};
  c.Propose(1, "x");
  c.Deliver();
  c.isolated.clear();
  ASSERT_TRUE(c.raft(1).TransferLeadership(2).ok());
  c.Process(1);
  EXPECT_EQ(c.raft(1).Propose("blocked").status().code(), StatusCode::kUnavailable);
  c.Deliver();  // node 2 catches up, gets TimeoutNow, wins
  EXPECT_EQ(c.raft(2).role(), Role::kLeader);
  EXPECT_EQ(c.raft(1).role(), Role::kFollower);
  EXPECT_EQ(c.raft(1).leader(), 2u);
  EXPECT_EQ(c.raft(1).TransferLeadership(3).code(), StatusCode::kFailedPrecondition);
}

TEST(Raft, LeadershipTransferToAnUnreachableNodeIsAbandoned) {
  Cluster c(3);
  c.Elect(1);
  c.isolated = {3};
  ASSERT_TRUE(c.raft(1).TransferLeadership(3).ok());
  c.Process(1);
  c.Tick(1, 10);
  c.Deliver();
  EXPECT_EQ(c.raft(1).role(), Role::kLeader);
  EXPECT_TRUE(c.raft(1).Propose("again").ok());
}

TEST(Raft, MembershipChangesOneAtATimeWithLearnersFirst) {
  Cluster c(3);
  c.Elect(1);
  c.Tick(1, 1);
  c.Deliver();
  c.AddEmptyNode(4);
  ASSERT_TRUE(c.raft(1).ProposeConfChange({ConfChangeType::kAddLearner, 4}).ok());
  c.Process(1);
  // A second change waits until the first is applied.
  EXPECT_EQ(c.raft(1).ProposeConfChange({ConfChangeType::kAddLearner, 5}).status().code(),
            StatusCode::kFailedPrecondition);
  for (int i = 0; i < 3; ++i) {
    c.Deliver();
    c.Tick(1, 1);
  }
  c.Deliver();
  // The learner replayed the whole history (the bootstrap membership too).
  EXPECT_EQ(c.raft(4).conf().voters, (std::set<NodeId>{1, 2, 3}));
  EXPECT_EQ(c.raft(4).conf().learners, (std::set<NodeId>{4}));
  EXPECT_EQ(c.raft(4).last_index(), c.raft(1).last_index());
  EXPECT_TRUE(c.raft(1).Progress().at(4).learner);
  c.Tick(4, 50);  // a learner never campaigns
  c.Deliver();
  EXPECT_EQ(c.raft(4).role(), Role::kFollower);
  EXPECT_EQ(c.raft(1).role(), Role::kLeader);
  // A learner is not part of the quorum.
  c.isolated = {2, 3};
  const uint64_t before = c.raft(1).commit();
  c.Propose(1, "needs-a-voter");
  c.Deliver();
  EXPECT_EQ(c.raft(1).commit(), before);
  c.isolated.clear();
  c.Tick(1, 1);
  c.Deliver();
  EXPECT_GT(c.raft(1).commit(), before);
  // Promotion, then removal.
  ASSERT_TRUE(c.raft(1).ProposeConfChange({ConfChangeType::kAddVoter, 4}).ok());
  c.Process(1);
  c.Deliver();
  c.Tick(1, 1);
  c.Deliver();
  EXPECT_EQ(c.raft(1).conf().voters, (std::set<NodeId>{1, 2, 3, 4}));
  EXPECT_EQ(c.raft(4).conf().voters, (std::set<NodeId>{1, 2, 3, 4}));
  EXPECT_EQ(c.raft(1).ProposeConfChange({ConfChangeType::kAddVoter, 4}).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(c.raft(1).ProposeConfChange({ConfChangeType::kRemoveNode, 9}).status().code(), StatusCode::kNotFound);
  ASSERT_TRUE(c.raft(1).ProposeConfChange({ConfChangeType::kRemoveNode, 3}).ok());
  c.Process(1);
  c.Deliver();
  c.Tick(1, 1);
  c.Deliver();
  EXPECT_EQ(c.raft(2).conf().voters, (std::set<NodeId>{1, 2, 4}));
  EXPECT_FALSE(c.raft(1).Progress().contains(3));
}

TEST(Raft, ARemovedLeaderStepsDownAndTheRestElectANewOne) {
  Cluster c(3);
  c.Elect(1);
  c.Tick(1, 1);
  c.Deliver();
  ASSERT_TRUE(c.raft(1).ProposeConfChange({ConfChangeType::kRemoveNode, 1}).ok());
  c.Process(1);
  c.Deliver();
  EXPECT_EQ(c.raft(1).role(), Role::kFollower);
  c.Tick(1, 50);  // no longer a voter: never campaigns
  EXPECT_EQ(c.raft(1).role(), Role::kFollower);
  c.outbox.clear();
  const NodeId next = c.TickUntilLeader({2, 3});
  ASSERT_NE(next, kNoNode);
  EXPECT_EQ(c.raft(next).conf().voters, (std::set<NodeId>{2, 3}));
}

TEST(Raft, ASingleVoterCommitsAtOnceAndCannotRemoveItself) {
  Cluster c(1);
  c.Elect(1);
  const uint64_t index = c.Propose(1, "solo");
  EXPECT_EQ(c.raft(1).commit(), index);
  EXPECT_EQ(AppliedCommands(c.node(1)), std::vector<std::string>{"solo"});
  EXPECT_EQ(c.raft(1).ProposeConfChange({ConfChangeType::kRemoveNode, 1}).status().code(),
            StatusCode::kFailedPrecondition);
  ASSERT_TRUE(c.raft(1).ReadIndex("solo-read").ok());
  c.Process(1);
  ASSERT_EQ(c.node(1).reads.size(), 1u);
  EXPECT_EQ(c.node(1).reads[0].index, index);
}

TEST(Raft, StepRejectsMisroutedMessages) {
  Cluster c(3);
  Message m;
  m.type = MessageType::kHeartbeat;
  m.from = 2;
  m.to = 3;
  EXPECT_EQ(c.raft(1).Step(m).code(), StatusCode::kInvalidArgument);
  m.to = 1;
  m.from = 1;
  EXPECT_EQ(c.raft(1).Step(m).code(), StatusCode::kInvalidArgument);
}

// A node whose disk was wiped comes back under its old id: the leader still
// records it as holding what it acknowledged. It stops with the recovery steps
// instead of voting or acknowledging as if it had never promised anything.
TEST(Raft, ANodeThatLostAcknowledgedEntriesStopsWithTheRecoverySteps) {
  Cluster c(3);
  c.Elect(1);
  for (int i = 0; i < 5; ++i) c.Propose(1, "w" + std::to_string(i));
  c.Deliver();
  const uint64_t acknowledged = c.raft(3).last_index();
  c.node(3).log = std::make_unique<storage::MemoryLogStore>();
  ASSERT_TRUE(Bootstrap(c.node(3).log.get(), {1, 2, 3}).ok());
  c.Start(3);
  ASSERT_LT(c.raft(3).last_index(), acknowledged);
  c.Tick(1);  // a heartbeat round
  bool delivered = false;
  for (const Message& m : c.outbox) {
    if (m.to != 3 || m.type != MessageType::kHeartbeat) continue;
    (void)c.raft(3).Step(m);
    delivered = true;
    break;
  }
  ASSERT_TRUE(delivered);
  const Status& st = c.raft(3).fatal();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.message().find("quiverctl cluster remove 3"), std::string::npos) << st.message();
  EXPECT_FALSE(c.raft(3).HasReady()) << "a failed node must not act";
}

TEST(Raft, SnapshotMetaEncodingRoundTripsAndRejectsGarbage) {
  const SnapshotMeta meta{42, 7, ConfState{{1, 2, 3}, {9}}};
  const std::string bytes = EncodeSnapshotMeta(meta);
  EXPECT_EQ(*DecodeSnapshotMeta(bytes), meta);
  EXPECT_FALSE(DecodeSnapshotMeta(bytes.substr(0, bytes.size() - 1)).ok());
  EXPECT_FALSE(DecodeSnapshotMeta(bytes + "x").ok());
  std::string huge = bytes;
  huge[16] = '\x7f';  // a voter count far beyond the bytes left
  EXPECT_FALSE(DecodeSnapshotMeta(huge).ok());
}

TEST(Raft, ConfChangeEncodingRoundTripsAndRejectsGarbage) {
  const ConfChange change{ConfChangeType::kAddLearner, 0x0102030405060708ull};
  EXPECT_EQ(*DecodeConfChange(EncodeConfChange(change)), change);
  const ConfChange with_address{ConfChangeType::kAddVoter, 4, "10.0.0.4:7701"};
  EXPECT_EQ(*DecodeConfChange(EncodeConfChange(with_address)), with_address);
  EXPECT_FALSE(DecodeConfChange(EncodeConfChange({ConfChangeType::kAddVoter, 4, std::string(2000, 'x')})).ok());
  EXPECT_FALSE(DecodeConfChange("short").ok());
  std::string bad = EncodeConfChange(change);
  bad[0] = 9;
  EXPECT_FALSE(DecodeConfChange(bad).ok());
  EXPECT_FALSE(DecodeConfChange(EncodeConfChange({ConfChangeType::kAddVoter, 0})).ok());
}

// The log keeps its durable, unapplied entries in memory (raft_log.h): what
// it answers must stay what is durable, through replacements and trims.
std::vector<LogEntry> Batch(uint64_t lo, uint64_t hi, uint64_t term, const std::string& tag) {
  std::vector<LogEntry> v;
  for (uint64_t i = lo; i <= hi; ++i) v.push_back({i, term, EntryType::kCommand, tag + std::to_string(i)});
  return v;
}

// The host's side of a Ready: persist, then report it.
void Persist(storage::MemoryLogStore* store, RaftLog* log) {
  const std::vector<LogEntry> entries = log->unstable_entries();
  ASSERT_TRUE(store->Append(entries, nullptr).ok());
  log->StableTo(entries.back().index, entries.back().term);
}

TEST(RaftLogTest, DurableEntriesReadTheSameFromMemoryAndAfterReplacement) {
  storage::MemoryLogStore store;
  RaftLog log(&store, 0, 0);
  log.TruncateAndAppend(Batch(1, 6, 1, "a"));
  Persist(&store, &log);
  EXPECT_EQ(*log.Entries(1, 7, UINT64_MAX), Batch(1, 6, 1, "a"));
  // A new leader's entries replace durable ones from 4 on, before and after
  // the host persists them.
  log.TruncateAndAppend(Batch(4, 5, 2, "b"));
  std::vector<LogEntry> want = Batch(1, 3, 1, "a");
  for (auto& e : Batch(4, 5, 2, "b")) want.push_back(e);
  EXPECT_EQ(*log.Entries(1, 6, UINT64_MAX), want);
  EXPECT_EQ(log.LastIndex(), 5u);
  Persist(&store, &log);
  EXPECT_EQ(*log.Entries(1, 6, UINT64_MAX), want);
  EXPECT_EQ(*store.Entries(1, 6, UINT64_MAX), want);
  // Applied entries leave memory but are still read, from the store.
  ASSERT_TRUE(log.CommitTo(5).ok());
  EXPECT_EQ(*log.NextCommitted(UINT64_MAX), want);
  log.AppliedTo(3);
  EXPECT_EQ(*log.Entries(1, 6, UINT64_MAX), want);
  EXPECT_EQ(*log.NextCommitted(UINT64_MAX), std::vector<LogEntry>(want.begin() + 3, want.end()));
  // The byte budget counts across the store, memory and unstable entries.
  log.TruncateAndAppend(Batch(6, 6, 2, "c"));
  auto some = log.Entries(2, 7, 3 * want[0].data.size());
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(some->size(), 3u);
  EXPECT_EQ(some->back().index, 4u);
}

TEST(RaftLogTest, EntriesShareTheirDataInsteadOfCopyingIt) {
  storage::MemoryLogStore store;
  RaftLog log(&store, 0, 0);
  log.TruncateAndAppend({{1, 1, EntryType::kCommand, std::string(4096, 'x')}});
  const char* bytes = log.unstable_entries()[0].data.data();
  EXPECT_EQ((*log.Entries(1, 2, UINT64_MAX))[0].data.data(), bytes);
  Persist(&store, &log);
  ASSERT_TRUE(log.CommitTo(1).ok());
  EXPECT_EQ((*log.NextCommitted(UINT64_MAX))[0].data.data(), bytes);  // from memory, not the store
}

}  // namespace
}  // namespace quiver::replication::raft
