// Request counters and latency histograms, rendered in the Prometheus text
// format on the admin port's /metrics. Lock-free on the request path.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace quiver::service {

enum class Rpc : int {
  kCreateCollection, kGetCollection, kListCollections, kDeleteCollection,
  kUpsert, kDeletePoints, kGetPoints, kCount, kSearch, kSearchBatch,
  kClusterStatus, kTransferLeader, kRemoveNode, kAddNode, kCreateBackup, kListBackups, kRestoreBackup,
  kNumRpcs
};

/// Node state sampled at scrape time (zero until the node is ready).
struct NodeGauges {
  bool ready = false;
  uint64_t vectors_stored = 0;
  uint64_t collections = 0;
  uint64_t applied_index = 0;
  uint64_t sealed_segments = 0;
  uint64_t indexed_segments = 0;
  uint64_t tombstones = 0;
  uint64_t segment_files_loaded = 0;     // at start
  uint64_t segment_files_discarded = 0;  // at start: damaged or stale, rebuilt
  uint64_t background_failures = 0;      // index builds, compactions, segment file writes
  // Raft, as this node sees it.
  uint64_t raft_term = 0;
  uint64_t raft_commit_index = 0;
  uint64_t raft_leader_id = 0;  // 0: none known
  bool raft_is_leader = false;
  uint64_t raft_voters = 0;
  uint64_t raft_snapshots_sent = 0;
  uint64_t raft_snapshots_failed = 0;
  uint64_t raft_snapshots_installed = 0;
  uint64_t writes_queued = 0;
  uint64_t writes_in_flight = 0;
  // Durable log appends (fsync): upper bounds, per-bucket counts (+Inf last), sum.
  std::vector<double> log_sync_bounds;
  std::vector<uint64_t> log_sync_counts;
  double log_sync_sum_seconds = 0;
  // The GPU (engine/gpu_executor.h); all zero on a CPU-only node.
  bool gpu_present = false;
  uint64_t gpu_searches = 0;
  uint64_t gpu_fallbacks = 0;
  uint64_t gpu_resident_segments = 0;
  uint64_t gpu_resident_bytes = 0;
  uint64_t gpu_memory_in_use_bytes = 0;
  uint64_t gpu_memory_budget_bytes = 0;
  // Dynamic batching (engine/search_batcher.h).
  uint64_t search_batches = 0;
  uint64_t search_batched_calls = 0;
};

class Metrics {
 public:
  static constexpr std::array<double, 12> kBucketsSeconds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                             0.05,   0.1,   0.25,   0.5,   1.0,  5.0};

  void Record(Rpc rpc, int grpc_code, double seconds);
  void AddUpsertedVectors(uint64_t n) { upserted_vectors_.fetch_add(n, std::memory_order_relaxed); }
  /// Searches running now, this one included (BeginSearch) / after it (EndSearch).
  int BeginSearch() { return searches_in_flight_.fetch_add(1, std::memory_order_relaxed) + 1; }
  void EndSearch() { searches_in_flight_.fetch_sub(1, std::memory_order_relaxed); }

  std::string Render(const NodeGauges& node) const;

 private:
  static constexpr int kRpcs = static_cast<int>(Rpc::kNumRpcs);
  static constexpr int kCodes = 17;
  std::array<std::array<std::atomic<uint64_t>, kCodes>, kRpcs> counts_{};
  std::array<std::array<std::atomic<uint64_t>, kBucketsSeconds.size() + 1>, kRpcs> buckets_{};
  std::array<std::atomic<uint64_t>, kRpcs> sum_micros_{};
  std::atomic<uint64_t> upserted_vectors_{0};
  std::atomic<int> searches_in_flight_{0};
};

}  // namespace quiver::service
