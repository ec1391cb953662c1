#include "service/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <httplib.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <thread>

#include "engine/engine.h"
#include "kernels/blas.h"
#include "kernels/simd.h"
#include "replication/backup.h"
#include "replication/replicator.h"
#include "service/api.h"
#include "service/metrics.h"
#include "service/peer.h"
#include "storage/db.h"
#include "storage/rocks_log_store.h"

namespace quiver::service {

struct Server::State {
  Metrics metrics;
  std::unique_ptr<storage::Db> db;
  std::unique_ptr<storage::RocksLogStore> log;
  std::unique_ptr<engine::Engine> engine;
  std::shared_ptr<engine::GpuExecutor> gpu;  // null: CPU only
  std::unique_ptr<engine::SearchBatcher> batcher;
  std::unique_ptr<engine::SearchPool> search_pool;
  PeerFaults peer_faults;  // fault_injection only
  std::unique_ptr<PeerClient> peer_client;
  std::unique_ptr<replication::RaftReplicator> replicator;
  std::unique_ptr<PeerService> peer_service;
  std::unique_ptr<grpc::Server> peer_server;
  int peer_port = 0;
  std::unique_ptr<CollectionsApi> collections_api;
  std::unique_ptr<PointsApi> points_api;
  std::unique_ptr<ClusterApi> cluster_api;
  std::unique_ptr<grpc::Server> grpc_server;
  int grpc_port = 0;

  httplib::Server admin;
  std::thread admin_thread;
  int admin_port = 0;

  // A joining node asks the cluster to add it, until it has (or shutdown).
  std::thread join_thread;
  std::shared_ptr<grpc::ChannelCredentials> join_credentials;
  std::mutex join_mu;
  grpc::ClientContext* join_call = nullptr;  // under join_mu, for Shutdown
};

namespace {

Result<std::string> ReadPemFile(const std::string& path, const char* key) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::InvalidArgument(std::string(key) + ": cannot read '" + path + "'");
  std::string pem((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (pem.find("-----BEGIN ") == std::string::npos) {
    return Status::InvalidArgument(std::string(key) + ": '" + path + "' is not PEM");
  }
  return pem;
}

// Plaintext, TLS, or mutual TLS on the public port, from the config.
Result<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(const ServerConfig& config) {
  if (config.tls_cert_file.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions opts(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  QUIVER_ASSIGN_OR_RETURN(pair.cert_chain, ReadPemFile(config.tls_cert_file, "tls_cert_file"));
  QUIVER_ASSIGN_OR_RETURN(pair.private_key, ReadPemFile(config.tls_key_file, "tls_key_file"));
  opts.pem_key_cert_pairs.push_back(std::move(pair));
  if (!config.tls_client_ca_file.empty()) {
    QUIVER_ASSIGN_OR_RETURN(opts.pem_root_certs, ReadPemFile(config.tls_client_ca_file, "tls_client_ca_file"));
    opts.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(opts);
}


// The peer port: plaintext, or mutual TLS with the node's certificate and
// the cluster's CA (peer_tls_ca_file).
struct PeerCredentials {
  std::shared_ptr<grpc::ServerCredentials> server;
  std::shared_ptr<grpc::ChannelCredentials> client;
};
Result<PeerCredentials> MakePeerCredentials(const ServerConfig& config) {
  if (config.peer_tls_ca_file.empty()) {
    return PeerCredentials{grpc::InsecureServerCredentials(), grpc::InsecureChannelCredentials()};
  }
  QUIVER_ASSIGN_OR_RETURN(std::string ca, ReadPemFile(config.peer_tls_ca_file, "peer_tls_ca_file"));
  QUIVER_ASSIGN_OR_RETURN(std::string cert, ReadPemFile(config.tls_cert_file, "tls_cert_file"));
  QUIVER_ASSIGN_OR_RETURN(std::string key, ReadPemFile(config.tls_key_file, "tls_key_file"));
  grpc::SslServerCredentialsOptions server(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  server.pem_root_certs = ca;
  server.pem_key_cert_pairs.push_back({key, cert});
  grpc::SslCredentialsOptions client;
  client.pem_root_certs = ca;
  client.pem_private_key = key;
  client.pem_cert_chain = cert;
  return PeerCredentials{grpc::SslServerCredentials(server), grpc::SslCredentials(client)};
}

// What a joining node learns from the member it was pointed at.
struct JoinTarget {
  std::string cluster_id;
  std::map<replication::raft::NodeId, std::string> peer_addresses;
};

std::unique_ptr<quiver::v1::Cluster::Stub> JoinStub(const ServerConfig& config,
                                                    const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  return quiver::v1::Cluster::NewStub(grpc::CreateChannel(config.join, credentials));
}

void AddApiKey(const ServerConfig& config, grpc::ClientContext* ctx) {
  if (!config.api_key.empty()) ctx->AddMetadata("authorization", "Bearer " + config.api_key);
}

// Cluster.Status from `join`, retried (the member may still be starting)
// until it answers or shutdown.
Result<JoinTarget> FetchJoinTarget(const ServerConfig& config,
                                   const std::shared_ptr<grpc::ChannelCredentials>& credentials,
                                   const std::atomic<bool>* stop) {
  auto stub = JoinStub(config, credentials);
  std::string last_error;
  for (int attempt = 0; !stop->load(); ++attempt) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    AddApiKey(config, &ctx);
    quiver::v1::ClusterStatusRequest req;
    quiver::v1::ClusterStatusResponse resp;
    grpc::Status st = stub->Status(&ctx, req, &resp);
    if (st.ok() && !resp.cluster_id().empty()) {
      JoinTarget target;
      target.cluster_id = resp.cluster_id();
      for (const auto& m : resp.members()) {
        if (!m.peer_address().empty()) target.peer_addresses[m.node_id()] = m.peer_address();
      }
      if (target.peer_addresses.empty()) {
        return Status::FailedPrecondition("the cluster at " + config.join +
                                          " knows no peer addresses: is it a single node without peers?");
      }
      return target;
    }
    if (st.error_code() == grpc::StatusCode::UNAUTHENTICATED || st.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
      return Status::FailedPrecondition("the cluster at " + config.join + " refuses this node: " + st.error_message() +
                                        " (set api_key to its read-write key)");
    }
    if (st.error_message() != last_error) {
      spdlog::info("joining: {} does not answer yet ({}); retrying", config.join, st.error_message());
      last_error = st.error_message();
    }
    for (int i = 0; i < 10 && !stop->load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Status::Cancelled("shutdown requested while joining " + config.join);
}

Result<std::pair<std::string, int>> SplitHostPort(const std::string& addr) {
  const auto colon = addr.rfind(':');
  if (colon == std::string::npos) return Status::InvalidArgument("'" + addr + "' is not host:port");
  std::string host = addr.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  try {
    return std::pair<std::string, int>{host, std::stoi(addr.substr(colon + 1))};
  } catch (...) {
    return Status::InvalidArgument("'" + addr + "' has no valid port");
  }
}

Status WriteReadyFile(const std::string& path, int grpc_port, int admin_port, int peer_port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << "{\"grpc_port\": " << grpc_port << ", \"admin_port\": " << admin_port << ", \"peer_port\": " << peer_port
      << ", \"pid\": " << ::getpid() << "}\n";
    if (!f) return Status::IOError("cannot write ready file " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return Status::IOError("cannot rename ready file to " + path + ": " + ec.message());
  return Status::Ok();
}

// restore_from: an empty data directory starts from the backup (a new
// cluster at the backup's applied index); one holding data ignores it.
Status RestoreFromBackup(const ServerConfig& config, const storage::HardState& hard_state,
                         const replication::RaftReplicatorOptions& raft_options, storage::RocksLogStore* log,
                         engine::Engine* engine, const std::atomic<bool>* stop) {
  if (log->LastIndex() != 0 || hard_state.term != 0 || engine->AppliedIndex() != 0) {
    spdlog::warn("restore_from ignored: the data directory holds data already");
    return Status::Ok();
  }
  std::set<replication::raft::NodeId> voters = raft_options.initial_voters;
  if (voters.empty()) voters = {config.node_id};
  QUIVER_RETURN_IF_ERROR(
      replication::RestoreBackup(config.restore_from, log, engine, voters, raft_options.cluster_id, stop)
          .WithContext("restoring from " + config.restore_from));
  spdlog::info("restored the backup in {}: applied index {}, {} collection(s), {} points", config.restore_from,
               engine->AppliedIndex(), engine->List().size(), engine->TotalPoints());
  return Status::Ok();
}

// join: a node without Raft state takes the cluster id and the members'
// addresses from the member it names. --join only matters until the leader
// has replicated to this node; afterwards it is ignored.
Status ResolveJoin(const ServerConfig& config, const storage::HardState& hard_state,
                   const PeerCredentials& peer_credentials, storage::RocksLogStore* log,
                   const std::atomic<bool>* stop, replication::RaftReplicatorOptions* raft_options) {
  raft_options->join = true;
  if (log->LastIndex() != 0 || hard_state.term != 0) {
    spdlog::info("the data directory already belongs to a cluster: join ignored");
    return Status::Ok();
  }
  QUIVER_ASSIGN_OR_RETURN(JoinTarget target, FetchJoinTarget(config, peer_credentials.client, stop));
  QUIVER_ASSIGN_OR_RETURN(const std::string recorded_cluster, log->GetClusterId());
  if (!recorded_cluster.empty() && recorded_cluster != target.cluster_id) {
    return Status::FailedPrecondition("the data directory was joining cluster '" + recorded_cluster + "', but " +
                                      config.join + " belongs to cluster '" + target.cluster_id +
                                      "': empty the data directory to join another cluster");
  }
  raft_options->cluster_id = target.cluster_id;
  raft_options->peer_addresses = target.peer_addresses;
  spdlog::info("joining cluster '{}' through {} ({} members known)", target.cluster_id, config.join,
               target.peer_addresses.size());
  return Status::Ok();
}

// gRPC's synchronous server starts a thread when a call takes its last idle
// poller and ends threads beyond two idle ones (its default MAX_POLLERS). Under
// steady load from many clients it did both all the time: over a hundred
// thread starts in 400 Upserts of 16 clients, each clearing the linked
// libraries' static TLS (~180 KB then, most of it cuBLASLt's, which is now
// loaded only on GPU hosts, and OpenBLAS's) and faulting in a fresh stack. Keeping up to 32 idle threads made both a single
// node and three nodes 2-4% faster under `quiver-bench cluster` (interleaved
// runs, bench/RESULTS.md, session 18).
void KeepIdleRequestThreads(const ServerConfig& config, grpc::ServerBuilder* builder) {
  constexpr uint32_t kMaxIdleThreads = 32;
  builder->SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS,
                               static_cast<int>(std::min(kMaxIdleThreads, config.grpc_max_threads)));
}

}  // namespace

// A cluster node further behind its leader's commit index than this is not
// ready (it would answer linearizable reads only after applying them).
constexpr uint64_t kMaxReadyApplyLag = 1000;

Server::Server(ServerConfig config) : config_(std::move(config)), state_(std::make_unique<State>()) {}

Server::~Server() {
  RequestStop();
  if (state_->admin_thread.joinable()) {
    state_->admin.stop();
    state_->admin_thread.join();
  }
}

bool Server::WaitForBackgroundWork(std::chrono::milliseconds timeout) {
  if (!ready_.load()) return false;
  return state_->engine->WaitForBackgroundWork(timeout);
}

void Server::RequestStop() {
  {
    std::lock_guard lock(mu_);
    stop_.store(true);
  }
  cv_.notify_all();
}

Status Server::Start() {
  State& s = *state_;
  // Admin HTTP first: liveness answers during recovery, readiness says 503.
  QUIVER_ASSIGN_OR_RETURN(auto admin_addr, SplitHostPort(config_.admin_listen));
  s.admin.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
  s.admin.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    // Serving: the log replayed and segments loaded (ready_), and in a
    // cluster a leader known and this node caught up with its commit index.
    std::string why;
    if (!ready_.load() || stop_.load()) {
      why = "starting or stopping";
    } else if (const auto group = state_->replicator->GetGroupStatus();
               group.conf.voters.size() > 1 || !group.conf.voters.contains(config_.node_id)) {
      if (!group.conf.voters.contains(config_.node_id)) {
        why = "joining: not a voter yet";
      } else if (group.leader == replication::raft::kNoNode) {
        why = "no leader known";
      } else if (group.commit > group.applied + kMaxReadyApplyLag) {
        why = "catching up: " + std::to_string(group.commit - group.applied) + " committed entries to apply";
      }
    }
    res.status = why.empty() ? 200 : 503;
    res.set_content(why.empty() ? "ready\n" : "not ready: " + why + "\n", "text/plain");
  });
  if (config_.fault_injection) {
    spdlog::warn("fault injection is on: POST /debug/partition on the admin port cuts peers off (tests only)");
    s.admin.Post("/debug/partition", [this](const httplib::Request& req, httplib::Response& res) {
      std::set<replication::raft::NodeId> cut;
      std::string ids = req.get_param_value("peers");
      for (size_t pos = 0; pos < ids.size();) {
        size_t end = ids.find(',', pos);
        if (end == std::string::npos) end = ids.size();
        const std::string id = ids.substr(pos, end - pos);
        pos = end + 1;
        if (id.empty()) continue;
        replication::raft::NodeId node = 0;
        if (std::from_chars(id.data(), id.data() + id.size(), node).ptr != id.data() + id.size() || node == 0) {
          res.status = 400;
          res.set_content("peers: '" + id + "' is not a node id\n", "text/plain");
          return;
        }
        cut.insert(node);
      }
      spdlog::warn("fault injection: cut off from {} peer(s)", cut.size());
      state_->peer_faults.Cut(std::move(cut));
      res.set_content("ok\n", "text/plain");
    });
    // POST /debug/lossy?drop=0.2&delay_ms=20: what this node sends to its
    // peers is lost with that probability and delayed (drop=0: a good link).
    s.admin.Post("/debug/lossy", [this](const httplib::Request& req, httplib::Response& res) {
      double drop = 0;
      int delay_ms = 0;
      try {
        drop = req.has_param("drop") ? std::stod(req.get_param_value("drop")) : 0.0;
        delay_ms = req.has_param("delay_ms") ? std::stoi(req.get_param_value("delay_ms")) : 0;
      } catch (const std::exception&) {
        drop = -1;
      }
      if (drop < 0 || drop > 1 || delay_ms < 0 || delay_ms > 10000) {
        res.status = 400;
        res.set_content("drop must be in 0..1 and delay_ms in 0..10000\n", "text/plain");
        return;
      }
      spdlog::warn("fault injection: dropping {:.0f}% of peer messages, delaying batches {} ms", drop * 100, delay_ms);
      state_->peer_faults.SetLossy(drop, std::chrono::milliseconds(delay_ms));
      res.set_content("ok\n", "text/plain");
    });
  }
  s.admin.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    State& st = *state_;
    NodeGauges node;
    node.ready = ready_.load();
    if (node.ready) {
      for (const auto& c : st.engine->List()) {
        const auto info = c->Info();
        ++node.collections;
        node.vectors_stored += info.points_count();
        node.sealed_segments += info.sealed_segments();
        node.indexed_segments += info.indexed_segments();
        node.tombstones += info.tombstones();
      }
      node.applied_index = st.engine->AppliedIndex();
      const auto batching = st.batcher->stats();
      node.search_batches = batching.searches;
      node.search_batched_calls = batching.calls;
      if (st.gpu != nullptr) {
        const auto gpu = st.gpu->stats();
        node.gpu_present = true;
        node.gpu_searches = gpu.searches;
        node.gpu_fallbacks = gpu.fallbacks;
        node.gpu_resident_segments = gpu.resident_segments;
        node.gpu_resident_bytes = gpu.resident_bytes;
        node.gpu_memory_in_use_bytes = gpu.bytes_in_use;
        node.gpu_memory_budget_bytes = gpu.budget_bytes;
      }
      const auto group = st.replicator->GetGroupStatus();
      node.raft_term = group.term;
      node.raft_commit_index = group.commit;
      node.raft_leader_id = group.leader;
      node.raft_is_leader = group.role == replication::raft::Role::kLeader;
      node.raft_voters = group.conf.voters.size();
      node.raft_snapshots_sent = group.snapshots_sent;
      node.raft_snapshots_failed = group.snapshots_failed;
      node.raft_snapshots_installed = group.snapshots_installed;
      node.writes_queued = group.writes_queued;
      node.writes_in_flight = group.writes_in_flight;
      const auto sync = st.replicator->GetLogSyncHistogram();
      node.log_sync_bounds.assign(replication::RaftReplicator::kLogSyncBucketsSeconds.begin(),
                                  replication::RaftReplicator::kLogSyncBucketsSeconds.end());
      node.log_sync_counts.assign(sync.counts.begin(), sync.counts.end());
      node.log_sync_sum_seconds = sync.sum_seconds;
      node.segment_files_loaded = st.engine->segments_loaded();
      node.segment_files_discarded = st.engine->segment_files_discarded();
      node.background_failures = st.engine->failed_index_builds();
    }
    res.set_content(st.metrics.Render(node), "text/plain; version=0.0.4");
  });
  if (admin_addr.second == 0) {
    s.admin_port = s.admin.bind_to_any_port(admin_addr.first);
  } else if (s.admin.bind_to_port(admin_addr.first, admin_addr.second)) {
    s.admin_port = admin_addr.second;
  } else {
    s.admin_port = -1;
  }
  if (s.admin_port <= 0) return Status::Unavailable("cannot listen on admin address " + config_.admin_listen);
  s.admin_thread = std::thread([&s] { s.admin.listen_after_bind(); });
  // httplib's stop() is lost if it comes before the listener enters its loop,
  // and the join in Shutdown() would then hang: wait until it runs.
  for (int i = 0; i < 5000 && !s.admin.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!s.admin.is_running()) return Status::Unavailable("admin HTTP server did not start");

  engine::EngineOptions engine_options;
  {
    engine::GpuExecutorOptions gpu_options;
    gpu_options.device = config_.gpu == "off" ? -1 : config_.gpu == "auto" ? 0 : std::stoi(config_.gpu);
    gpu_options.memory_budget_bytes = config_.gpu_memory_budget_mb << 20;
    gpu_options.flat_gemm = config_.gpu_flat_gemm == "fp32"     ? cuda::FlatGemm::kFp32
                            : config_.gpu_flat_gemm == "3xtf32" ? cuda::FlatGemm::kTf32x3
                                                                : cuda::FlatGemm::kAuto;
    std::string why_not;
    engine_options.gpu = engine::GpuExecutor::Open(gpu_options, &why_not);
    s.gpu = engine_options.gpu;
    if (engine_options.gpu == nullptr) {
      spdlog::info("serving on the CPU: {}", why_not);
    } else {
      const auto gpu = engine_options.gpu->stats();
      spdlog::info("serving sealed segments (FLAT, IVF_FLAT, IVF_PQ, GRAPH) on GPU {} ({}), budget {} MiB; the rest on the CPU",
                   gpu_options.device, gpu.device_name, gpu.budget_bytes >> 20);
    }
  }
  spdlog::info("CPU kernels: SIMD {}, BLAS core {}", kernels::SimdLevelName(kernels::ActiveSimdLevel()),
               kernels::BlasCoreName());
  if (kernels::BlasOnSlowPath()) spdlog::warn("BLAS runs generic kernels on a CPU with AVX2: batched search is slow");

  // Memtables twice the checkpoint interval: the checkpoint, not a full
  // memtable, should flush them, since only it drops the log entries it
  // compacts (LogStore::StageCompaction); a memtable that fills first writes
  // every entry in it to files, to be deleted soon after.
  QUIVER_ASSIGN_OR_RETURN(
      s.db, storage::Db::Open(config_.data_dir,
                              {.write_buffer_bytes = std::max<size_t>(64ull << 20, 2 * config_.log_compact_bytes)}));
  if (!s.db->direct_flush_writes()) {
    spdlog::info("the file system of {} does not take O_DIRECT: flushes go through the page cache",
                 config_.data_dir);
  }
  QUIVER_ASSIGN_OR_RETURN(s.log, storage::RocksLogStore::Open(s.db.get()));
  const auto load_start = std::chrono::steady_clock::now();
  QUIVER_ASSIGN_OR_RETURN(s.engine, engine::Engine::Open(s.db.get(), engine_options, &stop_));
  s.batcher = std::make_unique<engine::SearchBatcher>(
      engine::SearchBatcherOptions{config_.search_batch_max_queries, config_.search_batch_max_wait_us});
  s.search_pool = std::make_unique<engine::SearchPool>(
      config_.search_threads != 0 ? config_.search_threads : std::max(1u, std::thread::hardware_concurrency()));
  replication::RaftReplicatorOptions raft_options;
  raft_options.node_id = config_.node_id;
  raft_options.tick_interval = std::chrono::milliseconds(config_.raft_tick_ms);
  raft_options.checkpoint_every_bytes = config_.log_compact_bytes;
  raft_options.max_log_hold_entries = config_.log_hold_entries;
  raft_options.snapshot_dir = config_.data_dir + "/snapshots";
  QUIVER_ASSIGN_OR_RETURN(const auto peers, ParsePeers(config_.peers));
  for (const auto& [id, address] : peers) raft_options.initial_voters.insert(id);
  raft_options.cluster_id = NewClusterId(peers);
  raft_options.peer_addresses = peers;
  QUIVER_ASSIGN_OR_RETURN(const PeerCredentials peer_credentials, MakePeerCredentials(config_));
  QUIVER_ASSIGN_OR_RETURN(const storage::HardState hard_state, s.log->GetHardState());
  QUIVER_ASSIGN_OR_RETURN(const std::string recorded_peers, s.log->GetPeerAddresses());
  if (!config_.restore_from.empty()) {
    QUIVER_RETURN_IF_ERROR(RestoreFromBackup(config_, hard_state, raft_options, s.log.get(), s.engine.get(), &stop_));
  }
  // Still joining: no Raft state yet (the leader has not replicated here).
  const bool joining = !config_.join.empty() && s.log->LastIndex() == 0 && hard_state.term == 0;
  if (!config_.join.empty()) {
    QUIVER_RETURN_IF_ERROR(ResolveJoin(config_, hard_state, peer_credentials, s.log.get(), &stop_, &raft_options));
  }
  const bool clustered = !peers.empty() || !config_.join.empty() || !recorded_peers.empty();
  if (clustered) {
    s.peer_client = std::make_unique<PeerClient>(config_.node_id, raft_options.peer_addresses,
                                                 config_.max_message_bytes, peer_credentials.client);
    if (config_.fault_injection) s.peer_client->set_faults(&s.peer_faults);
  }
  s.replicator = std::make_unique<replication::RaftReplicator>(s.log.get(), s.engine.get(), s.peer_client.get(),
                                                               raft_options);
  s.replicator->set_forwarder(s.peer_client.get());
  if (s.log->LastIndex() > s.engine->AppliedIndex()) {
    spdlog::info("replaying log entries {}..{}", s.engine->AppliedIndex() + 1, s.log->LastIndex());
  }
  QUIVER_RETURN_IF_ERROR(s.replicator->Start(&stop_));
  spdlog::info("recovered {} collection(s), {} points, applied index {} ({} log entries replayed) in {:.2f}s",
               s.engine->List().size(), s.engine->TotalPoints(), s.engine->AppliedIndex(),
               s.replicator->replayed_entries(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());

  if (clustered) {
    // The peer port: Raft messages and forwarded writes, without API keys.
    s.peer_service = std::make_unique<PeerService>(config_.node_id, s.replicator.get(),
                                                   config_.fault_injection ? &s.peer_faults : nullptr);
    grpc::ServerBuilder peer_builder;
    peer_builder.AddListeningPort(config_.peer_listen, peer_credentials.server, &s.peer_port);
    peer_builder.SetMaxReceiveMessageSize(static_cast<int>(config_.max_message_bytes));
    peer_builder.SetMaxSendMessageSize(static_cast<int>(config_.max_message_bytes));
    peer_builder.RegisterService(s.peer_service.get());
    KeepIdleRequestThreads(config_, &peer_builder);
    s.peer_server = peer_builder.BuildAndStart();
    if (s.peer_server == nullptr || s.peer_port == 0) {
      return Status::Unavailable("cannot listen on peer address " + config_.peer_listen);
    }
    spdlog::info("node {} of cluster '{}' ({} voters); peer port {}", config_.node_id, s.replicator->cluster_id(),
                 s.replicator->GetGroupStatus().conf.voters.size(), s.peer_port);
  }

  ApiContext ctx{&config_, s.engine.get(), s.replicator.get(), &s.metrics, s.batcher.get(), s.search_pool.get()};
  s.collections_api = std::make_unique<CollectionsApi>(ctx);
  s.points_api = std::make_unique<PointsApi>(ctx);
  s.cluster_api = std::make_unique<ClusterApi>(ctx, s.replicator.get(), s.peer_client.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  QUIVER_ASSIGN_OR_RETURN(auto credentials, ServerCredentials(config_));
  builder.AddListeningPort(config_.listen, credentials, &s.grpc_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(config_.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(config_.max_message_bytes));
  grpc::ResourceQuota quota("quiverd");
  quota.SetMaxThreads(static_cast<int>(config_.grpc_max_threads));
  builder.SetResourceQuota(quota);
  KeepIdleRequestThreads(config_, &builder);
  builder.RegisterService(s.collections_api.get());
  builder.RegisterService(s.points_api.get());
  builder.RegisterService(s.cluster_api.get());
  s.grpc_server = builder.BuildAndStart();
  if (s.grpc_server == nullptr || s.grpc_port == 0) {
    return Status::Unavailable("cannot listen on gRPC address " + config_.listen);
  }
  // Per-service entries too, so probes may ask for "quiver.v1.Points".
  auto* health = s.grpc_server->GetHealthCheckService();
  for (const char* name : {"quiver.v1.Collections", "quiver.v1.Points", "quiver.v1.Cluster"}) health->SetServingStatus(name, true);
  health->SetServingStatus(true);
  if (!config_.ready_file.empty()) QUIVER_RETURN_IF_ERROR(WriteReadyFile(config_.ready_file, s.grpc_port, s.admin_port, s.peer_port));
  ready_.store(true);
  spdlog::info("serving gRPC on port {}, admin HTTP on port {}, data in {}", s.grpc_port, s.admin_port,
               config_.data_dir);
  if (joining) {
    // Once this node answers on its peer port: the leader replicates to it
    // as soon as it is added.
    const std::string advertised = config_.peer_advertise.empty() ? config_.peer_listen : config_.peer_advertise;
    s.join_credentials = peer_credentials.client;
    s.join_thread = std::thread([this, advertised] { AskToJoin(advertised); });
  }
  return Status::Ok();
}

void Server::AskToJoin(const std::string& advertised_peer_address) {
  State& s = *state_;
  auto stub = JoinStub(config_, s.join_credentials);
  std::string last_error;
  while (!stop_.load()) {
    grpc::ClientContext ctx;
    // A large state takes a while to catch up; the leader answers
    // DEADLINE_EXCEEDED meanwhile and the next call continues.
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    AddApiKey(config_, &ctx);
    {
      std::lock_guard lock(s.join_mu);
      if (stop_.load()) return;
      s.join_call = &ctx;
    }
    quiver::v1::AddNodeRequest req;
    req.set_node_id(config_.node_id);
    req.set_peer_address(advertised_peer_address);
    quiver::v1::AddNodeResponse resp;
    grpc::Status st = stub->AddNode(&ctx, req, &resp);
    {
      std::lock_guard lock(s.join_mu);
      s.join_call = nullptr;
    }
    if (st.ok()) {
      spdlog::info("joined: node {} is a voter (membership change at index {})", config_.node_id, resp.log_index());
      return;
    }
    const auto code = st.error_code();
    if (code == grpc::StatusCode::INVALID_ARGUMENT || code == grpc::StatusCode::UNAUTHENTICATED ||
        code == grpc::StatusCode::PERMISSION_DENIED) {
      spdlog::error("the cluster refuses to add node {} at {}: {}", config_.node_id, advertised_peer_address,
                    st.error_message());
      return;
    }
    if (st.error_message() != last_error) {
      spdlog::info("joining: {} (retrying)", st.error_message());
      last_error = st.error_message();
    }
    for (int i = 0; i < 10 && !stop_.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void Server::Shutdown() {
  State& s = *state_;
  ready_.store(false);
  {
    std::lock_guard lock(s.join_mu);
    if (s.join_call != nullptr) s.join_call->TryCancel();
  }
  if (s.join_thread.joinable()) s.join_thread.join();
  if (s.grpc_server) {
    s.grpc_server->GetHealthCheckService()->SetServingStatus(false);
    // Stops intake now; in-flight calls get until the deadline, then are
    // cancelled. gRPC then waits for their handlers, so at the deadline we
    // also end what they wait on: replication (a leader that may be gone) and
    // writes forwarded to it.
    const auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(config_.shutdown_drain_ms);
    std::promise<void> drained;
    std::future<void> drained_future = drained.get_future();
    std::thread stopper([&] {
      s.grpc_server->Shutdown(deadline);
      drained.set_value();
    });
    if (drained_future.wait_until(deadline) != std::future_status::ready) {
      if (s.replicator) s.replicator->CancelWaits();
      if (s.peer_client) s.peer_client->CancelForwards();
    }
    stopper.join();
  }
  if (s.replicator && s.peer_client) {
    // A leader hands over first, so the cluster keeps writing without
    // waiting out an election timeout.
    const bool handed = s.replicator->HandOverLeadership(std::chrono::milliseconds(20 * config_.raft_tick_ms));
    if (handed) spdlog::info("leadership handed over");
  }
  if (s.replicator) s.replicator->Stop();  // answers writes in flight
  // After the replicator: its driver sends through the client until it stops.
  if (s.peer_server) s.peer_server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  if (s.peer_client) s.peer_client->Stop();
  if (s.engine) s.engine->StopBackgroundWork();  // waits for an index build in progress
  if (s.db) {
    Status st = s.db->Flush();
    if (!st.ok()) spdlog::warn("flush at shutdown: {}", st.ToString());
  }
  s.admin.stop();
  if (s.admin_thread.joinable()) s.admin_thread.join();
}

Status Server::Run() {
  Status st = Start();
  if (!st.ok()) {
    Shutdown();
    if (stop_.load() && st.code() == StatusCode::kCancelled) {
      spdlog::info("stopped during start-up: {}", st.message());
      return Status::Ok();
    }
    return st;
  }
  {
    std::unique_lock lock(mu_);
    // The replicator does not signal this cv on a storage failure; poll it.
    while (!stop_.load() && state_->replicator->Health().ok()) {
      cv_.wait_for(lock, std::chrono::milliseconds(200));
    }
  }
  Status health = state_->replicator->Health();
  spdlog::info("shutting down");
  Shutdown();
  spdlog::info("stopped");
  return health;
}

}  // namespace quiver::service
