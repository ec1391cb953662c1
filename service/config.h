// quiverd's configuration: compiled defaults, then a YAML file, then QUIVER_*
// environment variables, then command-line flags; validated once at start.
// docs/config.yaml lists every key with its default.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace quiver::service {

struct ServerConfig {
  /// gRPC address for the public API. Port 0 picks a free port (see ready_file).
  /// Default: 127.0.0.1:7700. Env: QUIVER_LISTEN. Flag: --listen.
  std::string listen = "127.0.0.1:7700";
  /// HTTP address for /healthz, /readyz and /metrics.
  /// Default: 127.0.0.1:7702. Env: QUIVER_ADMIN_LISTEN. Flag: --admin-listen.
  std::string admin_listen = "127.0.0.1:7702";
  /// This node's id in its cluster (above 0; never reused for another data
  /// directory). Default: 1. Env: QUIVER_NODE_ID. Flag: --node-id.
  uint64_t node_id = 1;
  /// The cluster's voters as "1=host:7701,2=host:7701,3=host:7701" (this node
  /// included); written to a new data directory's log on first start. Empty:
  /// a single-node cluster with no peer port. Default: "". Env: QUIVER_PEERS.
  std::string peers;
  /// gRPC address of the internal peer port (Raft traffic, forwarded writes);
  /// only opened when `peers` is set. Bind it to a private network.
  /// Default: 127.0.0.1:7701. Env: QUIVER_PEER_LISTEN.
  std::string peer_listen = "127.0.0.1:7701";
  /// PEM CA of the cluster's node certificates: when set, the peer port
  /// speaks mutual TLS — each node presents tls_cert_file / tls_key_file and
  /// accepts only peers whose certificate this CA signed (peer addresses must
  /// match their certificates). Empty: the peer port is plaintext.
  /// Env: QUIVER_PEER_TLS_CA_FILE.
  std::string peer_tls_ca_file;
  /// One Raft tick, in ms: leaders heartbeat every tick, followers campaign
  /// after 10-19 ticks without one. Default: 100. Env: QUIVER_RAFT_TICK_MS.
  uint32_t raft_tick_ms = 100;
  /// Tests only: enables POST /debug/partition?peers=2,3 on the admin port,
  /// which drops all peer traffic to and from those nodes (empty: heal), and
  /// POST /debug/lossy?drop=0.2&delay_ms=20 (what this node sends is lost
  /// and delayed). Never set it in production. Default: false.
  /// Env: QUIVER_FAULT_INJECTION.
  bool fault_injection = false;
  /// Public API address (host:port) of any member of an existing cluster:
  /// a node with an empty data directory joins it (asks to be added, then
  /// catches up as a learner and becomes a voter) instead of starting a new
  /// cluster. Ignored once the data directory holds a cluster. Excludes
  /// `peers`. Default: "". Env: QUIVER_JOIN. Flag: --join.
  std::string join;
  /// A backup directory (Cluster.CreateBackup, `quiverctl snapshot create`)
  /// to start an empty data directory from: a new cluster (this node, or
  /// `peers`) whose state is the backup's. Ignored once the data directory
  /// holds data. Excludes `join`. Default: "". Env: QUIVER_RESTORE_FROM.
  std::string restore_from;
  /// The address other members reach this node's peer port at (host:port),
  /// sent when joining. Default: "" (peer_listen). Env: QUIVER_PEER_ADVERTISE.
  std::string peer_advertise;
  /// Bytes of applied writes after which the applied state is flushed and
  /// the log compacted: bounds the log's size and the replay after a crash.
  /// RocksDB memtables are sized at twice this (at least 64 MiB), so that
  /// this flush, not a full memtable, empties them.
  /// Default: 67108864 (64 MiB). Env: QUIVER_LOG_COMPACT_BYTES.
  uint64_t log_compact_bytes = 64ull << 20;
  /// A leader keeps up to this many entries beyond the compaction point for
  /// a member that lags (down for a while): it then catches up from the log.
  /// Further behind, it gets a snapshot. Default: 1000000.
  /// Env: QUIVER_LOG_HOLD_ENTRIES.
  uint64_t log_hold_entries = 1'000'000;
  /// Where RocksDB keeps the node's data (and backups/, snapshots/).
  /// Default: ./data. Env: QUIVER_DATA_DIR.
  std::string data_dir = "./data";
  /// Largest k a search may ask for. Default: 10000. Env: QUIVER_MAX_K.
  uint32_t max_k = 10000;
  /// Largest gRPC message accepted, in bytes. Default: 67108864 (64 MiB).
  /// Env: QUIVER_MAX_MESSAGE_BYTES.
  uint64_t max_message_bytes = 64ull << 20;
  /// Most points in one Upsert, Get or Delete. Default: 100000.
  /// Env: QUIVER_MAX_POINTS_PER_REQUEST.
  uint32_t max_points_per_request = 100000;
  /// Most queries in one SearchBatch. Default: 10000. Env: QUIVER_MAX_BATCH_QUERIES.
  uint32_t max_batch_queries = 10000;
  /// Largest serialized payload of one point, in bytes. Default: 65536.
  /// Env: QUIVER_MAX_PAYLOAD_BYTES.
  uint32_t max_payload_bytes = 64u << 10;
  /// Deadline for a write whose client set none, in ms. Default: 30000.
  /// Env: QUIVER_WRITE_TIMEOUT_MS.
  uint32_t write_timeout_ms = 30000;
  /// On SIGTERM/SIGINT, how long in-flight requests may finish before they are
  /// cancelled, in ms; the process exits within this plus the final flush.
  /// Default: 5000. Env: QUIVER_SHUTDOWN_DRAIN_MS.
  uint32_t shutdown_drain_ms = 5000;
  /// Most threads the gRPC server may run for requests, so load cannot grow
  /// threads and memory without bound; a call arriving when all are busy is
  /// refused with RESOURCE_EXHAUSTED ("Server Threadpool Exhausted"), which
  /// clients retry. Well above the concurrent clients expected: searches
  /// waiting in a batch hold their thread. Default: 256.
  /// Env: QUIVER_GRPC_MAX_THREADS.
  uint32_t grpc_max_threads = 256;
  /// CPU threads for searches: a lone call uses them all, N concurrent calls
  /// get 1/N each (at least 1); unfiltered searches of an IVF_FLAT, IVF_PQ or
  /// GRAPH collection served by the CPU instead share one pool of this many
  /// threads (engine/search_pool.h); 0 = all cores. Default: 0.
  /// Env: QUIVER_SEARCH_THREADS.
  uint32_t search_threads = 0;
  /// Most queries one batched search holds: concurrent unfiltered searches of
  /// a collection with the same k and settings run as one (engine/search_batcher.h).
  /// Default: 64. Env: QUIVER_SEARCH_BATCH_MAX_QUERIES.
  uint32_t search_batch_max_queries = 64;
  /// How long the first search of a batch waits for others, in microseconds,
  /// when other searches are running; 0 = no batching. Default: 200.
  /// Env: QUIVER_SEARCH_BATCH_MAX_WAIT_US.
  uint32_t search_batch_max_wait_us = 200;
  /// Which GPU serves searches: "auto" (device 0 when one is found), "off",
  /// or a device number. A GPU that cannot be opened means CPU serving, with
  /// the reason in the log. Default: auto. Env: QUIVER_GPU.
  std::string gpu = "auto";
  /// GPU memory Quiver may hold (resident segments and search workspace), in
  /// MiB; 0 = 90% of the memory free at start. Default: 0.
  /// Env: QUIVER_GPU_MEMORY_BUDGET_MB.
  uint64_t gpu_memory_budget_mb = 0;
  /// How exact (FLAT) search forms its dot products on the GPU: "auto"
  /// (3xtf32 where the GPU has TF32 tensor cores, else fp32), "fp32" (cuBLAS
  /// SGEMM) or "3xtf32" (fp32 accuracy from the tensor cores: values split
  /// into TF32 part and remainder). Default: auto. Env: QUIVER_GPU_FLAT_GEMM.
  std::string gpu_flat_gemm = "auto";
  /// trace, debug, info, warn, error. Default: info. Env: QUIVER_LOG_LEVEL.
  std::string log_level = "info";
  /// text or json. Default: text. Env: QUIVER_LOG_FORMAT.
  std::string log_format = "text";
  /// If set, a JSON file {"grpc_port":..,"admin_port":..,"pid":..} written once
  /// the node serves (used by tests and scripts). Default: "". Env: QUIVER_READY_FILE.
  std::string ready_file;
  /// Read-write API key required on every public RPC; empty = no
  /// authentication. Prefer the environment to a flag (flags show in `ps`).
  /// Env: QUIVER_API_KEY.
  std::string api_key;
  /// Key that allows reads only; needs api_key. Env: QUIVER_READ_ONLY_API_KEY.
  std::string read_only_api_key;
  /// PEM server certificate (chain) and private key for TLS on the public
  /// gRPC port; both or neither (plaintext). Env: QUIVER_TLS_CERT_FILE,
  /// QUIVER_TLS_KEY_FILE.
  std::string tls_cert_file;
  std::string tls_key_file;
  /// PEM CA bundle: when set, clients must present a certificate it signed
  /// (mutual TLS). Needs tls_cert_file. Env: QUIVER_TLS_CLIENT_CA_FILE.
  std::string tls_client_ca_file;

  /// Checks ranges and formats; INVALID_ARGUMENT naming the key.
  Status Validate() const;
};

enum class ParseOutcome { kRun, kExit };

/// Parses argv into `config`. kExit with OK after --help or --version (text is
/// printed); an error for a bad flag, file or value.
Result<ParseOutcome> LoadConfig(int argc, char** argv, ServerConfig* config);

}  // namespace quiver::service
