// quiverctl: a small command-line client for quiverd.
//
//   quiverctl collections create docs --dim 384 --metric cosine
//   quiverctl collections list
//   quiverctl upsert docs embeddings.npy --start-id 0 --batch 1000
//   quiverctl search docs query.fvecs --k 5 --with-payload
//
// Every command has --help. --json prints machine-readable output.
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "common/vector_file.h"
#include "quiver/v1/cluster.grpc.pb.h"
#include "quiver/v1/collections.grpc.pb.h"
#include "quiver/v1/points.grpc.pb.h"

namespace {

using quiver::v1::Collections;
using quiver::v1::Points;

struct Options {
  std::string addr = "127.0.0.1:7700";
  std::string api_key;
  std::string tls_ca, tls_cert, tls_key;  // TLS when tls_ca is set; cert+key for mutual TLS
  bool json = false;
  double timeout_s = 60;
};

std::string MetricName(quiver::v1::Metric m) { return quiver::v1::Metric_Name(m); }

// Every call: the deadline, and the API key when one is given.
void SetDeadline(grpc::ClientContext* ctx, const Options& o) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(o.timeout_s * 1000)));
  if (!o.api_key.empty()) ctx->AddMetadata("authorization", "Bearer " + o.api_key);
}

int Fail(const grpc::Status& st) {
  std::fprintf(stderr, "quiverctl: error (gRPC status %d): %s\n", static_cast<int>(st.error_code()),
               st.error_message().c_str());
  return 1;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

void PrintInfo(const quiver::v1::CollectionInfo& c, bool json) {
  if (json) {
    std::cout << "{\"name\":\"" << JsonEscape(c.config().name()) << "\",\"dimension\":" << c.config().dimension()
              << ",\"metric\":\"" << MetricName(c.config().metric()) << "\",\"index\":\""
              << quiver::v1::IndexType_Name(c.config().index().type()) << "\",\"points\":" << c.points_count()
              << ",\"sealed_segments\":" << c.sealed_segments() << ",\"indexed_segments\":" << c.indexed_segments()
              << ",\"tombstones\":" << c.tombstones() << ",\"index_bytes\":" << c.index_bytes()
              << ",\"index_bytes_per_vector\":" << c.index_bytes_per_vector() << ",\"indexed_payload_fields\":[";
    for (int i = 0; i < c.config().indexed_payload_fields_size(); ++i) {
      std::cout << (i ? "," : "") << "\"" << JsonEscape(c.config().indexed_payload_fields(i)) << "\"";
    }
    std::cout << "]}";
  } else {
    std::cout << c.config().name() << "\tdim=" << c.config().dimension() << "\tmetric=" << MetricName(c.config().metric())
              << "\tindex=" << quiver::v1::IndexType_Name(c.config().index().type()) << "\tpoints=" << c.points_count()
              << "\tsegments=" << c.sealed_segments() << "+1 (indexed " << c.indexed_segments() << ")"
              << "\tindex_bytes_per_vector=" << c.index_bytes_per_vector();
    for (int i = 0; i < c.config().indexed_payload_fields_size(); ++i) {
      std::cout << (i ? "," : "\tindexed_fields=") << c.config().indexed_payload_fields(i);
    }
  }
}

std::string ValueToString(const quiver::v1::Value& v) {
  switch (v.kind_case()) {
    case quiver::v1::Value::kStringValue: return "\"" + JsonEscape(v.string_value()) + "\"";
    case quiver::v1::Value::kIntValue: return std::to_string(v.int_value());
    case quiver::v1::Value::kDoubleValue: {
      std::ostringstream o;
      o << v.double_value();
      return o.str();
    }
    case quiver::v1::Value::kBoolValue: return v.bool_value() ? "true" : "false";
    case quiver::v1::Value::kListValue: {
      std::string s = "[";
      for (int i = 0; i < v.list_value().values_size(); ++i) {
        if (i) s += ",";
        s += ValueToString(v.list_value().values(i));
      }
      return s + "]";
    }
    default: return "null";
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  CLI::App app{"quiverctl: command-line client for a Quiver node", "quiverctl"};
  app.require_subcommand(1);
  app.add_option("--addr", opt.addr, "quiverd gRPC address")->envname("QUIVER_ADDR")->capture_default_str();
  app.add_flag("--json", opt.json, "print JSON");
  app.add_option("--api-key", opt.api_key, "API key, if the node requires one (prefer the environment)")
      ->envname("QUIVER_API_KEY");
  app.add_option("--tls-ca", opt.tls_ca, "PEM CA to verify quiverd's certificate with (enables TLS)")
      ->envname("QUIVER_TLS_CA")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-cert", opt.tls_cert, "PEM client certificate, for mutual TLS")
      ->envname("QUIVER_TLS_CERT")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", opt.tls_key, "PEM key of the client certificate")
      ->envname("QUIVER_TLS_KEY")
      ->check(CLI::ExistingFile);
  app.add_option("--timeout", opt.timeout_s, "per-call deadline in seconds")->capture_default_str();

  auto* colls = app.add_subcommand("collections", "create, list, describe or delete collections");
  colls->require_subcommand(1);
  std::string name;
  uint32_t dim = 0;
  std::string metric = "l2", index = "flat";
  auto* create = colls->add_subcommand("create", "create a collection");
  create->add_option("name", name, "collection name")->required();
  create->add_option("--dim", dim, "vector dimension (1..4096)")->required();
  create->add_option("--metric", metric, "l2, ip or cosine")->capture_default_str();
  create->add_option("--index", index, "flat, ivf_flat, ivf_pq or graph")->capture_default_str();
  uint32_t nlist = 0, default_nprobe = 0, segment_points = 0, degree = 0, default_itopk = 0, pq_dim = 0, pq_bits = 0,
           default_refine = 0;
  create->add_option("--nlist", nlist, "ivf_flat, ivf_pq: lists per sealed segment (0 = 4*sqrt(segment points))");
  create->add_option("--nprobe", default_nprobe, "ivf_flat, ivf_pq: default lists probed per search (0 = 32)");
  create->add_option("--pq-dim", pq_dim, "ivf_pq: sub-quantisers (0 = dimension / 2)");
  create->add_option("--pq-bits", pq_bits, "ivf_pq: bits per code, 4 or 8 (0 = 8)");
  create->add_option("--refine-factor", default_refine, "ivf_pq: default k * this re-scored exactly (0 = 8)");
  create->add_option("--degree", degree, "graph: out-degree per node (0 = 32)");
  create->add_option("--itopk", default_itopk, "graph: default search beam (0 = 64)");
  create->add_option("--segment-points", segment_points, "points per segment before sealing (0 = 100000)");
  std::vector<std::string> index_fields;
  create->add_option("--index-field", index_fields, "payload field to index for filters (repeatable)");
  auto* list = colls->add_subcommand("list", "list collections");
  auto* describe = colls->add_subcommand("describe", "show one collection");
  describe->add_option("name", name, "collection name")->required();
  auto* drop = colls->add_subcommand("delete", "delete a collection and all its points");
  drop->add_option("name", name, "collection name")->required();

  std::string file;
  uint64_t start_id = 0;
  size_t batch = 1000, k = 10, row = 0;
  bool with_payload = false, with_vector = false, all_rows = false;
  auto* upsert = app.add_subcommand("upsert", "upsert vectors from an .fvecs, .bvecs or .npy file; ids are start-id + row");
  upsert->add_option("collection", name, "collection name")->required();
  upsert->add_option("file", file, "vector file")->required()->check(CLI::ExistingFile);
  upsert->add_option("--start-id", start_id, "id of the first row")->capture_default_str();
  upsert->add_option("--batch", batch, "points per Upsert call")->capture_default_str();

  auto* search = app.add_subcommand("search", "search with vectors read from a file");
  search->add_option("collection", name, "collection name")->required();
  search->add_option("file", file, "vector file (.fvecs, .bvecs, .npy)")->required()->check(CLI::ExistingFile);
  search->add_option("-k,--k", k, "results per query")->capture_default_str();
  search->add_option("--row", row, "row of the file to use as the query")->capture_default_str();
  search->add_flag("--all", all_rows, "search every row of the file (SearchBatch)");
  search->add_flag("--with-payload", with_payload, "return payloads");
  search->add_flag("--with-vector", with_vector, "return vectors");
  uint32_t nprobe = 0, itopk = 0, search_width = 0, refine_factor = 0;
  search->add_option("--nprobe", nprobe, "ivf_flat, ivf_pq: lists probed per sealed segment (0 = collection default)");
  search->add_option("--refine-factor", refine_factor, "ivf_pq: k * this re-scored exactly (0 = collection default)");
  search->add_option("--itopk", itopk, "graph: search beam (0 = collection default)");
  search->add_option("--search-width", search_width, "graph: nodes expanded per step (0 = 1)");

  auto* snapshot = app.add_subcommand("snapshot", "backups of a node's state: create, list, restore");
  snapshot->require_subcommand(1);
  std::string backup_name;
  auto* snapshot_create = snapshot->add_subcommand(
      "create", "copy the node's state into <data_dir>/backups/NAME while it serves");
  snapshot_create->add_option("name", backup_name, "backup name (default: backup-<unix ms>)");
  auto* snapshot_list = snapshot->add_subcommand("list", "the node's complete backups");
  std::vector<std::string> restore_collections;
  std::string restore_suffix;
  auto* snapshot_restore = snapshot->add_subcommand(
      "restore",
      "recreate collections from a backup on this node while the cluster serves (written through the log to every "
      "replica); a whole new data directory starts from one with quiverd --restore-from");
  snapshot_restore->add_option("name", backup_name, "backup name (snapshot list)")->required();
  snapshot_restore->add_option("--collection", restore_collections,
                               "a collection to restore (repeatable; default: every one in the backup)");
  snapshot_restore->add_option("--suffix", restore_suffix,
                               "appended to each restored collection's name (the target must not exist)");
  auto* count = app.add_subcommand("count", "count the points of a collection");
  count->add_option("collection", name, "collection name")->required();

  auto* cluster = app.add_subcommand("cluster", "the node's Raft group: status, add, remove, transfer-leader");
  cluster->require_subcommand(1);
  uint64_t node_id = 0;
  auto* cluster_status = cluster->add_subcommand("status", "role, term, leader and members as this node sees them");
  auto* transfer = cluster->add_subcommand("transfer-leader", "make another voter the leader (send to the leader)");
  transfer->add_option("node", node_id, "node id of the next leader")->required();
  auto* remove = cluster->add_subcommand("remove", "remove a voter or learner (send to the leader)");
  remove->add_option("node", node_id, "node id to remove")->required();
  std::string peer_address;
  auto* add = cluster->add_subcommand(
      "add", "add a node: a learner until it has caught up, then a voter (start it with --join; send to any member)");
  add->add_option("node", node_id, "node id to add")->required();
  add->add_option("peer_address", peer_address, "host:port where the members reach its peer port")->required();

  CLI11_PARSE(app, argc, argv);

  auto channel_args = grpc::ChannelArguments();
  channel_args.SetMaxReceiveMessageSize(256 << 20);
  channel_args.SetMaxSendMessageSize(256 << 20);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!opt.tls_ca.empty()) {
    auto slurp = [](const std::string& path) {
      std::ifstream f(path, std::ios::binary);
      return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    };
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = slurp(opt.tls_ca);
    if (!opt.tls_cert.empty()) tls.pem_cert_chain = slurp(opt.tls_cert);
    if (!opt.tls_key.empty()) tls.pem_private_key = slurp(opt.tls_key);
    credentials = grpc::SslCredentials(tls);
  }
  auto channel = grpc::CreateCustomChannel(opt.addr, credentials, channel_args);
  auto coll_stub = Collections::NewStub(channel);
  auto points_stub = Points::NewStub(channel);
  auto cluster_stub = quiver::v1::Cluster::NewStub(channel);

  if (create->parsed()) {
    quiver::v1::CreateCollectionRequest req;
    req.mutable_config()->set_name(name);
    req.mutable_config()->set_dimension(dim);
    quiver::v1::Metric m;
    std::string upper = metric;
    for (auto& c : upper) c = static_cast<char>(std::toupper(c));
    if (!quiver::v1::Metric_Parse(upper, &m) || m == quiver::v1::METRIC_UNSPECIFIED) {
      std::fprintf(stderr, "quiverctl: --metric must be l2, ip or cosine\n");
      return 2;
    }
    req.mutable_config()->set_metric(m);
    quiver::v1::IndexType t;
    std::string upper_index = index;
    for (auto& c : upper_index) c = static_cast<char>(std::toupper(c));
    if (!quiver::v1::IndexType_Parse(upper_index, &t)) {
      std::fprintf(stderr, "quiverctl: --index must be flat, ivf_flat, ivf_pq or graph\n");
      return 2;
    }
    req.mutable_config()->mutable_index()->set_type(t);
    req.mutable_config()->mutable_index()->mutable_ivf_flat()->set_nlist(nlist);
    req.mutable_config()->mutable_index()->mutable_ivf_flat()->set_nprobe(default_nprobe);
    auto* pq = req.mutable_config()->mutable_index()->mutable_ivf_pq();
    pq->set_nlist(nlist);
    pq->set_nprobe(default_nprobe);
    pq->set_pq_dim(pq_dim);
    pq->set_pq_bits(pq_bits);
    pq->set_refine_factor(default_refine);
    req.mutable_config()->mutable_index()->mutable_graph()->set_degree(degree);
    req.mutable_config()->mutable_index()->mutable_graph()->set_itopk(default_itopk);
    req.mutable_config()->set_segment_max_points(segment_points);
    for (const auto& f : index_fields) req.mutable_config()->add_indexed_payload_fields(f);
    quiver::v1::CreateCollectionResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    auto st = coll_stub->Create(&ctx, req, &resp);
    if (!st.ok()) return Fail(st);
    PrintInfo(resp.collection(), opt.json);
    std::cout << "\n";
  } else if (list->parsed()) {
    quiver::v1::ListCollectionsResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    auto st = coll_stub->List(&ctx, {}, &resp);
    if (!st.ok()) return Fail(st);
    if (opt.json) std::cout << "[";
    for (int i = 0; i < resp.collections_size(); ++i) {
      if (opt.json && i) std::cout << ",";
      PrintInfo(resp.collections(i), opt.json);
      if (!opt.json) std::cout << "\n";
    }
    if (opt.json) std::cout << "]\n";
  } else if (describe->parsed()) {
    quiver::v1::GetCollectionRequest req;
    req.set_name(name);
    quiver::v1::GetCollectionResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    auto st = coll_stub->Get(&ctx, req, &resp);
    if (!st.ok()) return Fail(st);
    PrintInfo(resp.collection(), opt.json);
    std::cout << "\n";
  } else if (drop->parsed()) {
    quiver::v1::DeleteCollectionRequest req;
    req.set_name(name);
    quiver::v1::DeleteCollectionResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    auto st = coll_stub->Delete(&ctx, req, &resp);
    if (!st.ok()) return Fail(st);
    if (!opt.json) std::cout << "deleted " << name << "\n";
  } else if (upsert->parsed()) {
    auto m = quiver::ReadVectorFile(file);
    if (!m.ok()) {
      std::fprintf(stderr, "quiverctl: %s\n", m.status().message().c_str());
      return 2;
    }
    if (batch == 0) batch = 1;
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t lo = 0; lo < m->rows; lo += batch) {
      quiver::v1::UpsertRequest req;
      req.set_collection(name);
      for (size_t r = lo; r < std::min(m->rows, lo + batch); ++r) {
        auto* p = req.add_points();
        p->set_id(start_id + r);
        p->mutable_vector()->Add(m->row(r), m->row(r) + m->cols);
      }
      quiver::v1::UpsertResponse resp;
      grpc::ClientContext ctx;
      SetDeadline(&ctx, opt);
      auto st = points_stub->Upsert(&ctx, req, &resp);
      if (!st.ok()) {
        std::fprintf(stderr, "quiverctl: rows %zu.. not upserted (rows before are)\n", lo);
        return Fail(st);
      }
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (opt.json) {
      std::cout << "{\"upserted\":" << m->rows << ",\"seconds\":" << s << "}\n";
    } else {
      std::cout << "upserted " << m->rows << " points in " << s << " s\n";
    }
  } else if (search->parsed()) {
    auto m = quiver::ReadVectorFile(file);
    if (!m.ok()) {
      std::fprintf(stderr, "quiverctl: %s\n", m.status().message().c_str());
      return 2;
    }
    if (!all_rows && row >= m->rows) {
      std::fprintf(stderr, "quiverctl: --row %zu but the file has %zu rows\n", row, m->rows);
      return 2;
    }
    quiver::v1::SearchBatchRequest req;
    req.set_collection(name);
    req.set_k(static_cast<uint32_t>(k));
    req.set_with_payload(with_payload);
    req.set_with_vector(with_vector);
    req.mutable_params()->set_nprobe(nprobe);
    req.mutable_params()->set_itopk(itopk);
    req.mutable_params()->set_search_width(search_width);
    req.mutable_params()->set_refine_factor(refine_factor);
    for (size_t r = all_rows ? 0 : row; r < (all_rows ? m->rows : row + 1); ++r) {
      req.add_queries()->mutable_values()->Add(m->row(r), m->row(r) + m->cols);
    }
    quiver::v1::SearchBatchResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    auto st = points_stub->SearchBatch(&ctx, req, &resp);
    if (!st.ok()) return Fail(st);
    if (opt.json) std::cout << "[";
    for (int q = 0; q < resp.results_size(); ++q) {
      if (opt.json) {
        std::cout << (q ? "," : "") << "[";
      } else if (resp.results_size() > 1) {
        std::cout << "# query " << q << "\n";
      }
      const auto& hits = resp.results(q).hits();
      for (int i = 0; i < hits.size(); ++i) {
        std::string payload;
        for (const auto& [key, v] : hits[i].payload()) {
          payload += (payload.empty() ? "" : ",") + ("\"" + JsonEscape(key) + "\":" + ValueToString(v));
        }
        if (opt.json) {
          std::cout << (i ? "," : "") << "{\"id\":" << hits[i].id() << ",\"score\":" << hits[i].score();
          if (with_payload) std::cout << ",\"payload\":{" << payload << "}";
          std::cout << "}";
        } else {
          std::cout << hits[i].id() << "\t" << hits[i].score();
          if (with_payload) std::cout << "\t{" << payload << "}";
          std::cout << "\n";
        }
      }
      if (opt.json) std::cout << "]";
    }
    if (opt.json) std::cout << "]\n";
  } else if (cluster_status->parsed()) {
    quiver::v1::ClusterStatusResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    auto st = cluster_stub->Status(&ctx, {}, &resp);
    if (!st.ok()) return Fail(st);
    if (opt.json) {
      std::cout << "{\"node_id\":" << resp.node_id() << ",\"role\":\"" << resp.role() << "\",\"leader_id\":"
                << resp.leader_id() << ",\"term\":" << resp.term() << ",\"commit_index\":" << resp.commit_index()
                << ",\"applied_index\":" << resp.applied_index() << ",\"members\":[";
      for (int i = 0; i < resp.members_size(); ++i) {
        const auto& m = resp.members(i);
        std::cout << (i ? "," : "") << "{\"node_id\":" << m.node_id() << ",\"voter\":" << (m.voter() ? "true" : "false")
                  << ",\"match_index\":" << m.match_index()
                  << ",\"recently_active\":" << (m.recently_active() ? "true" : "false") << ",\"peer_address\":\""
                << m.peer_address() << "\"}";
      }
      std::cout << "]}\n";
    } else {
      std::cout << "node " << resp.node_id() << ": " << resp.role() << ", term " << resp.term() << ", leader "
                << (resp.leader_id() ? std::to_string(resp.leader_id()) : "unknown") << ", commit "
                << resp.commit_index() << ", applied " << resp.applied_index() << "\n";
      for (const auto& m : resp.members()) {
        std::cout << "  node " << m.node_id() << "\t" << (m.voter() ? "voter" : "learner");
        if (!m.peer_address().empty()) std::cout << "\t" << m.peer_address();
        if (resp.role() == "leader") {
          std::cout << "\tmatch " << m.match_index() << (m.recently_active() ? "\tactive" : "\tinactive");
        }
        std::cout << "\n";
      }
    }
  } else if (transfer->parsed()) {
    quiver::v1::TransferLeaderRequest req;
    req.set_node_id(node_id);
    quiver::v1::TransferLeaderResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    auto st = cluster_stub->TransferLeader(&ctx, req, &resp);
    if (!st.ok()) return Fail(st);
    std::cout << (opt.json ? "{\"leader_id\":" + std::to_string(resp.leader_id()) + "}"
                           : "node " + std::to_string(resp.leader_id()) + " leads")
              << "\n";
  } else if (add->parsed()) {
    quiver::v1::AddNodeRequest req;
    req.set_node_id(node_id);
    req.set_peer_address(peer_address);
    quiver::v1::AddNodeResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    auto st = cluster_stub->AddNode(&ctx, req, &resp);
    if (!st.ok()) return Fail(st);
    std::cout << (opt.json ? "{\"log_index\":" + std::to_string(resp.log_index()) + "}"
                           : "node " + std::to_string(node_id) + " is a voter since log index " +
                                 std::to_string(resp.log_index()))
              << "\n";
  } else if (remove->parsed()) {
    quiver::v1::RemoveNodeRequest req;
    req.set_node_id(node_id);
    quiver::v1::RemoveNodeResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    auto st = cluster_stub->RemoveNode(&ctx, req, &resp);
    if (!st.ok()) return Fail(st);
    std::cout << (opt.json ? "{\"log_index\":" + std::to_string(resp.log_index()) + "}"
                           : "node " + std::to_string(node_id) + " removed at log index " +
                                 std::to_string(resp.log_index()))
              << "\n";
  } else if (snapshot_restore->parsed()) {
    quiver::v1::RestoreBackupRequest req;
    req.set_name(backup_name);
    for (const auto& c : restore_collections) req.add_collections(c);
    req.set_rename_suffix(restore_suffix);
    quiver::v1::RestoreBackupResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    auto st = cluster_stub->RestoreBackup(&ctx, req, &resp);
    if (!st.ok()) return Fail(st);
    if (opt.json) std::cout << "{\"applied_index\":" << resp.applied_index() << ",\"collections\":[";
    for (int i = 0; i < resp.collections_size(); ++i) {
      const auto& c = resp.collections(i);
      if (opt.json) {
        std::cout << (i ? "," : "") << "{\"source\":\"" << c.source() << "\",\"target\":\"" << c.target()
                  << "\",\"points\":" << c.points() << "}";
      } else {
        std::cout << "restored " << c.source() << " as " << c.target() << ": " << c.points() << " points\n";
      }
    }
    if (opt.json) std::cout << "]}\n";
  } else if (snapshot_create->parsed() || snapshot_list->parsed()) {
    std::vector<quiver::v1::BackupInfo> backups;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    if (snapshot_create->parsed()) {
      quiver::v1::CreateBackupRequest req;
      req.set_name(backup_name);
      quiver::v1::CreateBackupResponse resp;
      auto st = cluster_stub->CreateBackup(&ctx, req, &resp);
      if (!st.ok()) return Fail(st);
      backups.push_back(resp.backup());
    } else {
      quiver::v1::ListBackupsResponse resp;
      auto st = cluster_stub->ListBackups(&ctx, {}, &resp);
      if (!st.ok()) return Fail(st);
      backups.assign(resp.backups().begin(), resp.backups().end());
    }
    if (opt.json) std::cout << "[";
    for (size_t i = 0; i < backups.size(); ++i) {
      const auto& b = backups[i];
      if (opt.json) {
        std::cout << (i ? "," : "") << "{\"name\":\"" << b.name() << "\",\"applied_index\":" << b.applied_index()
                  << ",\"bytes\":" << b.bytes() << ",\"files\":" << b.files()
                  << ",\"created_unix_ms\":" << b.created_unix_ms() << ",\"path\":\"" << b.path() << "\"}";
      } else {
        std::cout << b.name() << "\tindex " << b.applied_index() << "\t" << b.bytes() << " bytes in " << b.files()
                  << " files\t" << b.path() << "\n";
      }
    }
    if (opt.json) std::cout << "]\n";
  } else if (count->parsed()) {
    quiver::v1::CountRequest req;
    req.set_collection(name);
    quiver::v1::CountResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, opt);
    auto st = points_stub->Count(&ctx, req, &resp);
    if (!st.ok()) return Fail(st);
    std::cout << (opt.json ? "{\"count\":" + std::to_string(resp.count()) + "}" : std::to_string(resp.count())) << "\n";
  }
  return 0;
}
