#include "service/metrics.h"

#include <sstream>

#include "common/status.h"

namespace quiver::service {
namespace {
const char* kRpcNames[] = {"Collections/Create", "Collections/Get", "Collections/List", "Collections/Delete",
                           "Points/Upsert",      "Points/Delete",   "Points/Get",       "Points/Count",
                           "Points/Search",      "Points/SearchBatch"};
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
  out << "# HELP quiver_upserted_vectors_total Vectors acknowledged by Upsert.\n"
         "# TYPE quiver_upserted_vectors_total counter\n"
      << "quiver_upserted_vectors_total " << upserted_vectors_.load() << "\n"
      << "# HELP quiver_vectors_stored Live points over all collections.\n# TYPE quiver_vectors_stored gauge\n"
      << "quiver_vectors_stored " << node.vectors_stored << "\n"
      << "# HELP quiver_collections Collections on this node.\n# TYPE quiver_collections gauge\n"
      << "quiver_collections " << node.collections << "\n"
      << "# HELP quiver_applied_index Last log index applied.\n# TYPE quiver_applied_index gauge\n"
      << "quiver_applied_index " << node.applied_index << "\n"
      << "# HELP quiver_sealed_segments Sealed segments over all collections.\n# TYPE quiver_sealed_segments gauge\n"
      << "quiver_sealed_segments " << node.sealed_segments << "\n"
      << "# HELP quiver_indexed_segments Sealed segments whose index is built.\n"
         "# TYPE quiver_indexed_segments gauge\n"
      << "quiver_indexed_segments " << node.indexed_segments << "\n"
      << "# HELP quiver_tombstones Deleted or overwritten rows still held in sealed segments.\n"
         "# TYPE quiver_tombstones gauge\n"
      << "quiver_tombstones " << node.tombstones << "\n"
      << "# HELP quiver_segment_files_loaded_total Segment files adopted at start instead of rebuilt.\n"
         "# TYPE quiver_segment_files_loaded_total counter\n"
      << "quiver_segment_files_loaded_total " << node.segment_files_loaded << "\n"
      << "# HELP quiver_segment_files_discarded_total Segment files found damaged or stale at start (rebuilt).\n"
         "# TYPE quiver_segment_files_discarded_total counter\n"
      << "quiver_segment_files_discarded_total " << node.segment_files_discarded << "\n"
      << "# HELP quiver_background_failures_total Failed index builds, compactions and segment file writes.\n"
         "# TYPE quiver_background_failures_total counter\n"
      << "quiver_background_failures_total " << node.background_failures << "\n"
      << "# HELP quiver_searches_in_flight Search and SearchBatch calls running now.\n"
         "# TYPE quiver_searches_in_flight gauge\n"
      << "quiver_searches_in_flight " << searches_in_flight_.load(std::memory_order_relaxed) << "\n"
      << "# HELP quiver_ready 1 when the node serves requests.\n# TYPE quiver_ready gauge\n"
      << "quiver_ready " << (node.ready ? 1 : 0) << "\n";
  return out.str();
}

}  // namespace quiver::service
