// The Raft simulator over many seeds (tests/raft_sim/raft_simulator.h lists
// the faults and the invariants). `quiver-raft-sim --seeds N` runs far more;
// a failing seed replays with `quiver-raft-sim --first-seed S --seeds 1 --verbose`.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "raft_sim/raft_simulator.h"

namespace quiver::raft_sim {
namespace {

// QUIVER_RAFT_SIM_SEEDS scales the run (the sanitizer builds use fewer).
uint64_t SeedCount(uint64_t fallback) {
  const char* env = std::getenv("QUIVER_RAFT_SIM_SEEDS");
  return env != nullptr ? std::strtoull(env, nullptr, 10) : fallback;
}

void RunSeeds(uint64_t first, uint64_t count, const SimOptions& options) {
  uint64_t writes = 0, crashes = 0, commits_lost = 0, snapshots = 0, changes = 0, reads = 0;
  for (uint64_t seed = first; seed < first + count; ++seed) {
    const SimResult r = RunSimulation(seed, options);
    ASSERT_TRUE(r.ok) << r.failure;
    writes += r.acknowledged_writes;
    crashes += r.crashes;
    commits_lost += r.commit_indexes_lost;
    snapshots += r.snapshots_installed;
    changes += r.membership_changes;
    reads += r.reads_served;
  }
  // The faults must actually happen, or the invariants prove nothing.
  EXPECT_GT(writes, count * 10);
  EXPECT_GT(crashes, count / 2);
  EXPECT_GT(commits_lost, count / 20) << "crashes that lose an unsynced commit index";
  EXPECT_GT(snapshots, count / 10);
  EXPECT_GT(reads, count);
  if (options.membership_rate > 0) {
    EXPECT_GT(changes, count / 4);
  }
}

TEST(RaftSimulation, ThreeVotersWithFaults) { RunSeeds(0, SeedCount(1000), SimOptions{}); }

TEST(RaftSimulation, FiveVotersWithFaults) {
  SimOptions options;
  options.voters = 5;
  options.spares = 1;
  RunSeeds(100000, SeedCount(1000) / 2, options);
}

TEST(RaftSimulation, WithoutPreVoteOrCheckQuorum) {
  SimOptions options;
  options.pre_vote = false;
  options.check_quorum = false;
  options.membership_rate = 0;  // see SimOptions::membership_rate
  RunSeeds(200000, SeedCount(1000) / 2, options);
}

// Seed 20002345 without pre-vote or check-quorum: node 3 wins term 4 and
// commits its no-op with node 1; then node 1's vote for node 2 in term 3,
// sent before node 1 moved on, arrives and node 2 leads term 3 without that
// entry. Raft allows it (an older term's leader can commit nothing once a
// majority is in term 4); the leader completeness check once flagged it.
TEST(RaftSimulation, AnOlderTermsLeaderIsNotHeldToANewerTermsCommits) {
  SimOptions options;
  options.pre_vote = false;
  options.check_quorum = false;
  options.membership_rate = 0;
  const SimResult r = RunSimulation(20002345, options);
  EXPECT_TRUE(r.ok) << r.failure;
  EXPECT_GT(r.acknowledged_writes, 0u);
}

TEST(RaftSimulation, LossyNetwork) {
  SimOptions options;
  options.drop_rate = 0.3;
  options.duplicate_rate = 0.1;
  options.max_delay = 80;
  RunSeeds(300000, SeedCount(1000) / 4, options);
}

}  // namespace
}  // namespace quiver::raft_sim
