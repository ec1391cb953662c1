#include "service/metrics.h"

#include <sstream>

#include "common/status.h"

namespace quiver::service {
namespace {
const char* kRpcNames[] = {"Collections/Create", "Collections/Get", "Collections/List", "Collections/Delete",
                           "Points/Upsert",      "Points/Delete",   "Points/Get",       "Points/Count",
                           "Points/Search",      "Points/SearchBatch", "Cluster/Status", "Cluster/TransferLeader",
                           "Cluster/RemoveNode", "Cluster/AddNode", "Cluster/CreateBackup", "Cluster/ListBackups",
                           "Cluster/RestoreBackup"};
}  // namespace

void Metrics::Record(Rpc rpc, int code, double seconds) {
  const int r = static_cast<int>(rpc);
  if (code < 0 || code >= kCodes) code = 2;
  counts_[r][code].fetch_add(1, std::memory_order_relaxed);
  size_t b = 0;
  while (b < kBucketsSeconds.size() && seconds > kBucketsSeconds[b]) ++b;
  buckets_[r][b].fetch_add(1, std::memory_order_relaxed);
  sum_micros_[r].fetch_add(static_cast<uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

std::string Metrics::Render(const NodeGauges& node) const {
  std::ostringstream out;
  out << "# HELP quiver_requests_total RPCs served, by method and gRPC status code.\n"
         "# TYPE quiver_requests_total counter\n";
  for (int r = 0; r < kRpcs; ++r) {
    for (int c = 0; c < kCodes; ++c) {
      const uint64_t n = counts_[r][c].load(std::memory_order_relaxed);
      if (n == 0) continue;
      out << "quiver_requests_total{method=\"" << kRpcNames[r] << "\",code=\""
          << StatusCodeName(static_cast<StatusCode>(c)) << "\"} " << n << "\n";
    }
  }
  out << "# HELP quiver_request_duration_seconds RPC latency.\n"
         "# TYPE quiver_request_duration_seconds histogram\n";
  for (int r = 0; r < kRpcs; ++r) {
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= kBucketsSeconds.size(); ++b) {
      cumulative += buckets_[r][b].load(std::memory_order_relaxed);
      out << "quiver_request_duration_seconds_bucket{method=\"" << kRpcNames[r] << "\",le=\"";
      if (b < kBucketsSeconds.size()) {
        out << kBucketsSeconds[b];
      } else {
        out << "+Inf";
      }
      out << "\"} " << cumulative << "\n";
    }
    out << "quiver_request_duration_seconds_sum{method=\"" << kRpcNames[r] << "\"} "
        << static_cast<double>(sum_micros_[r].load(std::memory_order_relaxed)) / 1e6 << "\n";
    out << "quiver_request_duration_seconds_count{method=\"" << kRpcNames[r] << "\"} " << cumulative << "\n";
  }
  // One unlabelled sample with its HELP and TYPE lines.
  auto sample = [&out](const char* name, const char* type, const char* help, auto value) {
    out << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n" << name << " " << value
        << "\n";
  };
  sample("quiver_upserted_vectors_total", "counter", "Vectors acknowledged by Upsert.", upserted_vectors_.load());
  sample("quiver_vectors_stored", "gauge", "Live points over all collections.", node.vectors_stored);
  sample("quiver_collections", "gauge", "Collections on this node.", node.collections);
  sample("quiver_applied_index", "gauge", "Last log index applied.", node.applied_index);
  sample("quiver_raft_term", "gauge", "Raft term this node is in.", node.raft_term);
  sample("quiver_raft_commit_index", "gauge", "Last log index this node knows to be committed.",
         node.raft_commit_index);
  sample("quiver_raft_apply_lag", "gauge", "Committed entries not yet applied here.",
         node.raft_commit_index > node.applied_index ? node.raft_commit_index - node.applied_index : 0);
  sample("quiver_raft_leader_id", "gauge", "Node id of the leader this node follows (0: none known).",
         node.raft_leader_id);
  sample("quiver_raft_is_leader", "gauge", "1 if this node leads its group.", node.raft_is_leader ? 1 : 0);
  sample("quiver_raft_voters", "gauge", "Voters in the group's membership.", node.raft_voters);
  sample("quiver_raft_snapshots_sent_total", "counter", "Snapshots this node streamed to followers.",
         node.raft_snapshots_sent);
  sample("quiver_raft_snapshots_failed_total", "counter", "Snapshots this node failed to export or stream.",
         node.raft_snapshots_failed);
  sample("quiver_raft_snapshots_installed_total", "counter", "Snapshots from a leader installed on this node.",
         node.raft_snapshots_installed);
  sample("quiver_write_queue_depth", "gauge", "Writes waiting for the replicator's next log append.",
         node.writes_queued);
  sample("quiver_writes_in_flight", "gauge", "Writes appended to the log and not yet applied.", node.writes_in_flight);
  out << "# HELP quiver_wal_fsync_duration_seconds Durable log appends (one synced write each).\n"
         "# TYPE quiver_wal_fsync_duration_seconds histogram\n";
  uint64_t synced = 0;
  for (size_t b = 0; b < node.log_sync_counts.size(); ++b) {
    synced += node.log_sync_counts[b];
    out << "quiver_wal_fsync_duration_seconds_bucket{le=\"";
    if (b < node.log_sync_bounds.size()) {
      out << node.log_sync_bounds[b];
    } else {
      out << "+Inf";
    }
    out << "\"} " << synced << "\n";
  }
  out << "quiver_wal_fsync_duration_seconds_sum " << node.log_sync_sum_seconds << "\n"
      << "quiver_wal_fsync_duration_seconds_count " << synced << "\n";
  sample("quiver_sealed_segments", "gauge", "Sealed segments over all collections.", node.sealed_segments);
  sample("quiver_indexed_segments", "gauge", "Sealed segments whose index is built.", node.indexed_segments);
  sample("quiver_tombstones", "gauge", "Deleted or overwritten rows still held in sealed segments.", node.tombstones);
  sample("quiver_segment_files_loaded_total", "counter", "Segment files adopted at start instead of rebuilt.",
         node.segment_files_loaded);
  sample("quiver_segment_files_discarded_total", "counter",
         "Segment files found damaged or stale at start (rebuilt).", node.segment_files_discarded);
  sample("quiver_background_failures_total", "counter",
         "Failed index builds, compactions and segment file writes.", node.background_failures);
  sample("quiver_search_batches_total", "counter",
         "Batched searches run (each serves one or more concurrent Search/SearchBatch calls).", node.search_batches);
  sample("quiver_search_batch_calls_total", "counter",
         "Calls served by batched searches (divided by quiver_search_batches_total: the mean batch size).",
         node.search_batched_calls);
  sample("quiver_gpu_present", "gauge", "1 if a GPU serves searches on this node.", node.gpu_present ? 1 : 0);
  sample("quiver_gpu_searches_total", "counter", "Segment searches served on the GPU.", node.gpu_searches);
  sample("quiver_gpu_fallbacks_total", "counter",
         "Segment searches the GPU failed (out of memory, CUDA error) and the CPU served.", node.gpu_fallbacks);
  sample("quiver_gpu_resident_segments", "gauge", "Sealed segments with a copy in GPU memory.",
         node.gpu_resident_segments);
  sample("quiver_gpu_resident_bytes", "gauge", "GPU memory held by resident segment copies.",
         node.gpu_resident_bytes);
  sample("quiver_gpu_memory_in_use_bytes", "gauge", "GPU memory Quiver holds now (segments and search workspace).",
         node.gpu_memory_in_use_bytes);
  sample("quiver_gpu_memory_budget_bytes", "gauge", "GPU memory Quiver may hold.", node.gpu_memory_budget_bytes);
  sample("quiver_searches_in_flight", "gauge", "Search and SearchBatch calls running now.",
         searches_in_flight_.load(std::memory_order_relaxed));
  sample("quiver_ready", "gauge", "1 when the node serves requests.", node.ready ? 1 : 0);
  return out.str();
}

}  // namespace quiver::service
