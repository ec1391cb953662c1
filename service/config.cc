#include "service/config.h"

#include "service/peer.h"

#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <optional>

namespace quiver::service {
namespace {

// One table of keys drives YAML, environment and flags alike, so the three
// can never disagree about names.
struct Key {
  const char* yaml;  // key in the YAML file
  const char* env;   // QUIVER_* variable
  const char* flag;  // --flag
  const char* help;
  std::function<Status(const std::string&)> set;
};

template <typename T>
Status ParseUnsigned(const std::string& text, const char* name, T* out) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v > std::numeric_limits<T>::max()) {
    return Status::InvalidArgument(std::string(name) + ": '" + text + "' is not a valid number");
  }
  *out = static_cast<T>(v);
  return Status::Ok();
}

Status ParseBool(const std::string& text, const char* name, bool* out) {
  if (text == "true" || text == "1") {
    *out = true;
  } else if (text == "false" || text == "0") {
    *out = false;
  } else {
    return Status::InvalidArgument(std::string(name) + ": '" + text + "' is not true or false");
  }
  return Status::Ok();
}

std::vector<Key> Keys(ServerConfig* c) {
  auto str = [](std::string* field) { return [field](const std::string& v) { *field = v; return Status::Ok(); }; };
  auto u32 = [](const char* name, uint32_t* field) {
    return [name, field](const std::string& v) { return ParseUnsigned(v, name, field); };
  };
  auto u64 = [](const char* name, uint64_t* field) {
    return [name, field](const std::string& v) { return ParseUnsigned(v, name, field); };
  };
  return {
      {"listen", "QUIVER_LISTEN", "--listen", "gRPC address of the public API", str(&c->listen)},
      {"admin_listen", "QUIVER_ADMIN_LISTEN", "--admin-listen", "HTTP address of /healthz, /readyz, /metrics",
       str(&c->admin_listen)},
      {"data_dir", "QUIVER_DATA_DIR", "--data-dir", "data directory", str(&c->data_dir)},
      {"node_id", "QUIVER_NODE_ID", "--node-id", "this node's id in its cluster (above 0)",
       u64("node_id", &c->node_id)},
      {"peers", "QUIVER_PEERS", "--peers", "cluster voters as 1=host:port,2=host:port,... (empty: single node)",
       str(&c->peers)},
      {"peer_listen", "QUIVER_PEER_LISTEN", "--peer-listen", "gRPC address of the internal peer port",
       str(&c->peer_listen)},
      {"peer_tls_ca_file", "QUIVER_PEER_TLS_CA_FILE", "--peer-tls-ca-file",
       "PEM CA of the node certificates: mutual TLS on the peer port", str(&c->peer_tls_ca_file)},
      {"raft_tick_ms", "QUIVER_RAFT_TICK_MS", "--raft-tick-ms", "one Raft tick in ms (elections after 10-19)",
       u32("raft_tick_ms", &c->raft_tick_ms)},
      {"fault_injection", "QUIVER_FAULT_INJECTION", "--fault-injection",
       "tests only: POST /debug/partition?peers=... on the admin port cuts this node off from them",
       [c](const std::string& v) { return ParseBool(v, "fault_injection", &c->fault_injection); }},
      {"join", "QUIVER_JOIN", "--join", "public address of a member of the cluster to join (empty data directory)",
       str(&c->join)},
      {"restore_from", "QUIVER_RESTORE_FROM", "--restore-from",
       "backup directory to start an empty data directory from", str(&c->restore_from)},
      {"peer_advertise", "QUIVER_PEER_ADVERTISE", "--peer-advertise",
       "address the members reach this node's peer port at (default: peer_listen)", str(&c->peer_advertise)},
      {"log_compact_bytes", "QUIVER_LOG_COMPACT_BYTES", "--log-compact-bytes",
       "bytes of writes between log compactions", u64("log_compact_bytes", &c->log_compact_bytes)},
      {"log_hold_entries", "QUIVER_LOG_HOLD_ENTRIES", "--log-hold-entries",
       "entries a leader keeps for a lagging member before it needs a snapshot",
       u64("log_hold_entries", &c->log_hold_entries)},
      {"max_k", "QUIVER_MAX_K", "--max-k", "largest k a search may ask for", u32("max_k", &c->max_k)},
      {"max_message_bytes", "QUIVER_MAX_MESSAGE_BYTES", "--max-message-bytes", "largest gRPC message accepted",
       u64("max_message_bytes", &c->max_message_bytes)},
      {"max_points_per_request", "QUIVER_MAX_POINTS_PER_REQUEST", "--max-points-per-request",
       "most points in one Upsert, Get or Delete", u32("max_points_per_request", &c->max_points_per_request)},
      {"max_batch_queries", "QUIVER_MAX_BATCH_QUERIES", "--max-batch-queries", "most queries in one SearchBatch",
       u32("max_batch_queries", &c->max_batch_queries)},
      {"max_payload_bytes", "QUIVER_MAX_PAYLOAD_BYTES", "--max-payload-bytes", "largest payload of one point",
       u32("max_payload_bytes", &c->max_payload_bytes)},
      {"write_timeout_ms", "QUIVER_WRITE_TIMEOUT_MS", "--write-timeout-ms", "deadline of writes that set none",
       u32("write_timeout_ms", &c->write_timeout_ms)},
      {"shutdown_drain_ms", "QUIVER_SHUTDOWN_DRAIN_MS", "--shutdown-drain-ms",
       "how long in-flight requests may finish at shutdown", u32("shutdown_drain_ms", &c->shutdown_drain_ms)},
      {"grpc_max_threads", "QUIVER_GRPC_MAX_THREADS", "--grpc-max-threads",
       "most gRPC request threads (calls beyond are refused: RESOURCE_EXHAUSTED)", u32("grpc_max_threads", &c->grpc_max_threads)},
      {"search_threads", "QUIVER_SEARCH_THREADS", "--search-threads",
       "CPU threads for searches, shared by concurrent calls (0 = all cores)", u32("search_threads", &c->search_threads)},
      {"search_batch_max_queries", "QUIVER_SEARCH_BATCH_MAX_QUERIES", "--search-batch-max-queries",
       "most queries one batched search holds", u32("search_batch_max_queries", &c->search_batch_max_queries)},
      {"search_batch_max_wait_us", "QUIVER_SEARCH_BATCH_MAX_WAIT_US", "--search-batch-max-wait-us",
       "how long a search waits for others to batch with, us (0 = off)",
       u32("search_batch_max_wait_us", &c->search_batch_max_wait_us)},
      {"gpu", "QUIVER_GPU", "--gpu", "GPU for searches: auto | off | a device number",
       [c](const std::string& v) {
         uint32_t device = 0;
         if (v != "auto" && v != "off" && (!ParseUnsigned(v, "gpu", &device).ok() || device > 1023)) {
           return Status::InvalidArgument("gpu: '" + v + "' is not auto, off or a device number");
         }
         c->gpu = v;
         return Status::Ok();
       }},
      {"gpu_memory_budget_mb", "QUIVER_GPU_MEMORY_BUDGET_MB", "--gpu-memory-budget-mb",
       "GPU memory Quiver may hold, MiB (0 = 90% of free)", u64("gpu_memory_budget_mb", &c->gpu_memory_budget_mb)},
      {"gpu_flat_gemm", "QUIVER_GPU_FLAT_GEMM", "--gpu-flat-gemm",
       "exact search's GEMM on the GPU: auto | fp32 | 3xtf32 (fp32 accuracy on tensor cores)",
       [c](const std::string& v) {
         if (v != "auto" && v != "fp32" && v != "3xtf32") {
           return Status::InvalidArgument("gpu_flat_gemm: '" + v + "' is not auto, fp32 or 3xtf32");
         }
         c->gpu_flat_gemm = v;
         return Status::Ok();
       }},
      {"log_level", "QUIVER_LOG_LEVEL", "--log-level", "trace|debug|info|warn|error", str(&c->log_level)},
      {"log_format", "QUIVER_LOG_FORMAT", "--log-format", "text|json", str(&c->log_format)},
      {"ready_file", "QUIVER_READY_FILE", "--ready-file", "JSON file with the bound ports, written once serving",
       str(&c->ready_file)},
      {"api_key", "QUIVER_API_KEY", "--api-key", "read-write API key required on every public RPC (empty: none)",
       str(&c->api_key)},
      {"read_only_api_key", "QUIVER_READ_ONLY_API_KEY", "--read-only-api-key", "API key allowing reads only",
       str(&c->read_only_api_key)},
      {"tls_cert_file", "QUIVER_TLS_CERT_FILE", "--tls-cert-file", "PEM server certificate chain (enables TLS)",
       str(&c->tls_cert_file)},
      {"tls_key_file", "QUIVER_TLS_KEY_FILE", "--tls-key-file", "PEM private key of the server certificate",
       str(&c->tls_key_file)},
      {"tls_client_ca_file", "QUIVER_TLS_CLIENT_CA_FILE", "--tls-client-ca-file",
       "PEM CA that client certificates must chain to (mutual TLS)", str(&c->tls_client_ca_file)},
  };
}

Status ApplyYaml(const std::string& path, std::vector<Key>& keys) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const std::exception& e) {
    return Status::InvalidArgument("config file " + path + ": " + e.what());
  }
  if (root.IsNull()) return Status::Ok();
  if (!root.IsMap()) return Status::InvalidArgument("config file " + path + ": top level must be a mapping");
  for (const auto& kv : root) {
    const std::string name = kv.first.as<std::string>();
    auto it = std::find_if(keys.begin(), keys.end(), [&](const Key& k) { return name == k.yaml; });
    if (it == keys.end()) return Status::InvalidArgument("config file " + path + ": unknown key '" + name + "'");
    if (!kv.second.IsScalar()) return Status::InvalidArgument("config file " + path + ": '" + name + "' must be a scalar");
    QUIVER_RETURN_IF_ERROR(it->set(kv.second.as<std::string>()).WithContext("config file " + path));
  }
  return Status::Ok();
}

}  // namespace

Status ServerConfig::Validate() const {
  if (!read_only_api_key.empty() && api_key.empty()) {
    return Status::InvalidArgument("read_only_api_key is set but api_key is not: writes would be impossible");
  }
  if (!api_key.empty() && api_key == read_only_api_key) {
    return Status::InvalidArgument("api_key and read_only_api_key must differ");
  }
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return Status::InvalidArgument("tls_cert_file and tls_key_file must be set together");
  }
  if (!tls_client_ca_file.empty() && tls_cert_file.empty()) {
    return Status::InvalidArgument("tls_client_ca_file needs tls_cert_file and tls_key_file (mutual TLS is TLS)");
  }
  if (listen.empty() || listen.find(':') == std::string::npos) {
    return Status::InvalidArgument("listen: '" + listen + "' is not host:port");
  }
  if (admin_listen.find(':') == std::string::npos) {
    return Status::InvalidArgument("admin_listen: '" + admin_listen + "' is not host:port");
  }
  if (data_dir.empty()) return Status::InvalidArgument("data_dir is empty");
  if (node_id == 0) return Status::InvalidArgument("node_id must be above 0");
  QUIVER_ASSIGN_OR_RETURN(auto peer_map, ParsePeers(peers));
  if (!peer_map.empty() && !peer_map.contains(node_id)) {
    return Status::InvalidArgument("peers: this node's id " + std::to_string(node_id) + " is not in the list");
  }
  if (peer_listen.find(':') == std::string::npos) {
    return Status::InvalidArgument("peer_listen: '" + peer_listen + "' is not host:port");
  }
  if (!peer_tls_ca_file.empty() && tls_cert_file.empty()) {
    return Status::InvalidArgument("peer_tls_ca_file needs tls_cert_file and tls_key_file (each node's certificate)");
  }
  if (raft_tick_ms < 10 || raft_tick_ms > 10000) return Status::InvalidArgument("raft_tick_ms must be in 10..10000");
  if (log_compact_bytes < 4096) return Status::InvalidArgument("log_compact_bytes must be at least 4096");
  if (!join.empty() && !restore_from.empty()) {
    return Status::InvalidArgument("join and restore_from exclude each other: a joining node gets the cluster's state");
  }
  if (!join.empty()) {
    if (!peer_map.empty()) {
      return Status::InvalidArgument("join and peers exclude each other: a joining node learns its peers from the cluster");
    }
    if (join.find(':') == std::string::npos) return Status::InvalidArgument("join: '" + join + "' is not host:port");
    const std::string& advertised = peer_advertise.empty() ? peer_listen : peer_advertise;
    const size_t colon = advertised.rfind(':');
    if (advertised.substr(colon + 1) == "0" || advertised.starts_with("0.0.0.0:") || advertised.starts_with("[::]:")) {
      return Status::InvalidArgument("joining needs an address the members can reach: set peer_advertise (peer_listen is " +
                                     peer_listen + ")");
    }
  }
  if (max_k == 0) return Status::InvalidArgument("max_k must be at least 1");
  if (max_message_bytes < 4096 || max_message_bytes > (2ull << 30) - 1) {
    return Status::InvalidArgument("max_message_bytes must be in 4096..2147483647");
  }
  if (max_points_per_request == 0) return Status::InvalidArgument("max_points_per_request must be at least 1");
  if (max_batch_queries == 0) return Status::InvalidArgument("max_batch_queries must be at least 1");
  if (search_batch_max_queries == 0) return Status::InvalidArgument("search_batch_max_queries must be at least 1");
  if (grpc_max_threads < 4) return Status::InvalidArgument("grpc_max_threads must be at least 4");
  if (shutdown_drain_ms > 60000) return Status::InvalidArgument("shutdown_drain_ms must be at most 60000");
  static const char* levels[] = {"trace", "debug", "info", "warn", "error"};
  if (std::find(std::begin(levels), std::end(levels), log_level) == std::end(levels)) {
    return Status::InvalidArgument("log_level: '" + log_level + "' is not one of trace, debug, info, warn, error");
  }
  if (log_format != "text" && log_format != "json") {
    return Status::InvalidArgument("log_format: '" + log_format + "' is not text or json");
  }
  return Status::Ok();
}

Result<ParseOutcome> LoadConfig(int argc, char** argv, ServerConfig* config) {
  std::vector<Key> keys = Keys(config);
  CLI::App app{"quiverd: the Quiver vector search server.\n"
               "With no options it serves one node: gRPC on 127.0.0.1:7700, admin HTTP on 127.0.0.1:7702,\n"
               "data in ./data. Settings come from defaults, then --config FILE (YAML), then QUIVER_*\n"
               "environment variables, then these flags.",
               "quiverd"};
  std::string config_file;
  app.add_option("-c,--config", config_file, "YAML config file (see docs/config.yaml)")->envname("QUIVER_CONFIG");
  app.set_version_flag("--version", "quiverd 0.1.0");
  std::map<std::string, std::string> flag_values;
  for (const Key& k : keys) {
    app.add_option(k.flag, flag_values[k.flag], std::string(k.help) + " (env " + k.env + ")");
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return ParseOutcome::kExit;
  } catch (const CLI::CallForVersion&) {
    std::cout << "quiverd 0.1.0\n";
    return ParseOutcome::kExit;
  } catch (const CLI::ParseError& e) {
    return Status::InvalidArgument(std::string("command line: ") + e.what());
  }
  if (!config_file.empty()) QUIVER_RETURN_IF_ERROR(ApplyYaml(config_file, keys));
  for (const Key& k : keys) {
    if (const char* v = std::getenv(k.env); v != nullptr) QUIVER_RETURN_IF_ERROR(k.set(v).WithContext(k.env));
  }
  for (const Key& k : keys) {
    if (app.count(k.flag) > 0) QUIVER_RETURN_IF_ERROR(k.set(flag_values[k.flag]).WithContext(k.flag));
  }
  QUIVER_RETURN_IF_ERROR(config->Validate());
  return ParseOutcome::kRun;
}

}  // namespace quiver::service
