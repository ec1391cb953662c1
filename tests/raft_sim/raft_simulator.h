// A deterministic simulator for the Raft core: N nodes in one process, a
// seeded scheduler, and an adversarial network. Every run is a function of
// (seed, options), so a failing seed replays exactly.
//
// Faults: messages dropped, duplicated, delayed and reordered; the network
// partitioned and healed; nodes crashed (losing everything not yet persisted:
// the core's memory, the state machine, queued proposals and reads) and
// restarted from their durable log and snapshot; snapshots with log
// compaction; leadership transfers; membership changes (learners added,
// promoted, voters removed).
//
// Invariants, checked after every step:
//   * election safety: at most one leader per term;
//   * log matching: two logs holding an entry with the same index and term
//     hold the same entry there and the same term before it;
//   * leader completeness: a new leader holds every entry applied anywhere
//     that was committed in an earlier term than its own (a leader of an
//     older term, elected late by delayed votes, is not held to a newer
//     term's commits);
//   * state machine safety: no two nodes apply different entries at an index,
//     and each node applies indexes in order without gaps;
//   * no acknowledged write lost: at the end, with the network healed and all
//     nodes up, every node applies every acknowledged write, and a new write
//     still commits (liveness);
//   * linearizable reads: a ReadIndex read reflects every write acknowledged
//     before it was issued.
#pragma once

#include <cstdint>
#include <string>

namespace quiver::raft_sim {

struct SimOptions {
  int voters = 3;
  /// Extra nodes that start outside the cluster, for membership changes.
  int spares = 2;
  /// Simulated time units of the faulty phase; a tick is 10 units.
  uint64_t duration = 4000;
  double drop_rate = 0.05;
  double duplicate_rate = 0.03;
  uint64_t max_delay = 30;
  /// Per-unit probability of a crash / a partition change.
  double crash_rate = 0.0015;
  /// Probability that a leader crashes after sending a Ready's appends and
  /// before its own write of them is durable (the host overlaps the two).
  double crash_before_persist_rate = 0.02;
  double partition_rate = 0.001;
  double propose_rate = 0.08;
  double read_rate = 0.02;
  double transfer_rate = 0.0005;
  /// Without pre-vote and check-quorum a removed node that missed its
  /// removal disrupts the cluster forever (Raft's known gap, which the lease
  /// closes), so runs with both off keep this at 0.
  double membership_rate = 0.001;
  /// Entries applied between snapshots (each followed by log compaction).
  uint64_t snapshot_every = 25;
  bool pre_vote = true;
  bool check_quorum = true;
  /// Print every event (for replaying a failing seed).
  bool verbose = false;
};

struct SimResult {
  bool ok = true;
  std::string failure;  // the broken invariant, with the last events
  uint64_t acknowledged_writes = 0;
  uint64_t applied_entries = 0;
  uint64_t leader_terms = 0;
  uint64_t crashes = 0;
  /// Crashes that lost a commit index written without a sync.
  uint64_t commit_indexes_lost = 0;
  uint64_t snapshots_installed = 0;
  uint64_t membership_changes = 0;
  uint64_t reads_served = 0;
};

SimResult RunSimulation(uint64_t seed, const SimOptions& options);

}  // namespace quiver::raft_sim
