// quiver-raft-sim: runs the Raft simulator over many seeds (the long-running
// counterpart of the seeds in `make test`), or replays one seed verbosely.
//
//   quiver-raft-sim --seeds 100000            seeds 0..99999
//   quiver-raft-sim --first-seed 4242 --seeds 1 --verbose
#include <CLI/CLI.hpp>

#include <chrono>
#include <iostream>

#include "raft_sim/raft_simulator.h"

int main(int argc, char** argv) {
  CLI::App app{"Runs the deterministic Raft simulator over many seeds; a failing seed replays exactly."};
  uint64_t first_seed = 0;
  uint64_t seeds = 1000;
  quiver::raft_sim::SimOptions options;
  app.add_option("--first-seed", first_seed, "first seed")->capture_default_str();
  app.add_option("--seeds", seeds, "number of seeds")->capture_default_str();
  app.add_option("--voters", options.voters, "initial voters")->capture_default_str();
  app.add_option("--spares", options.spares, "nodes outside the cluster at start")->capture_default_str();
  app.add_option("--duration", options.duration, "time units of the faulty phase (a tick is 10)")
      ->capture_default_str();
  app.add_option("--drop-rate", options.drop_rate, "probability a message is dropped")->capture_default_str();
  app.add_option("--crash-rate", options.crash_rate, "per-unit probability of a crash")->capture_default_str();
  app.add_option("--partition-rate", options.partition_rate, "per-unit probability of a partition change")
      ->capture_default_str();
  app.add_option("--read-rate", options.read_rate, "per-unit probability of a read")->capture_default_str();
  app.add_option("--max-delay", options.max_delay, "longest message delay in time units")->capture_default_str();
  app.add_flag("--no-pre-vote{false}", options.pre_vote, "disable pre-vote");
  app.add_flag("--no-check-quorum{false}", options.check_quorum, "disable check-quorum");
  app.add_flag("--verbose", options.verbose, "print every event (use with one seed)");
  CLI11_PARSE(app, argc, argv);
  if (!options.pre_vote && !options.check_quorum) options.membership_rate = 0;  // see SimOptions

  const auto start = std::chrono::steady_clock::now();
  uint64_t failures = 0, writes = 0, crashes = 0, commits_lost = 0, snapshots = 0, changes = 0, reads = 0, terms = 0;
  for (uint64_t seed = first_seed; seed < first_seed + seeds; ++seed) {
    const quiver::raft_sim::SimResult r = quiver::raft_sim::RunSimulation(seed, options);
    writes += r.acknowledged_writes;
    crashes += r.crashes;
    commits_lost += r.commit_indexes_lost;
    snapshots += r.snapshots_installed;
    changes += r.membership_changes;
    reads += r.reads_served;
    terms += r.leader_terms;
    if (!r.ok) {
      ++failures;
      std::cout << "FAIL " << r.failure << "\n";
      if (failures >= 10) break;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << seeds << " seeds from " << first_seed << " in " << secs << " s: " << failures << " failed; "
            << writes << " acknowledged writes, " << reads << " linearizable reads, " << terms << " leader terms, "
            << crashes << " crashes (" << commits_lost << " losing an unsynced commit index), " << snapshots
            << " snapshots installed, " << changes << " membership changes\n";
  return failures == 0 ? 0 : 1;
}
