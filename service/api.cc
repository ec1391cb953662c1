#include "service/api.h"

#include <google/protobuf/arena.h>
#include <google/protobuf/io/coded_stream.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <unordered_set>

#include "common/clock.h"
#include "common/encoding.h"
#include "engine/filter.h"
#include "engine/validation.h"
#include "quiver/internal/v1/wal.pb.h"
#include "service/auth.h"
#include "replication/backup.h"
#include "service/grpc_status.h"
#include "service/peer.h"

namespace quiver::service {

std::string EncodeUpsertCommand(const quiver::internal::v1::Command& head, const quiver::v1::UpsertRequest& req,
                                uint32_t dim) {
  using google::protobuf::io::CodedOutputStream;
  // A field's tag is its number shifted left by 3 over its wire type, 2 for length-delimited.
  constexpr auto length_delimited_tag = [](int field) { return (static_cast<uint32_t>(field) << 3) | 2; };
  const uint64_t vector_bytes = uint64_t(req.points_size()) * dim * sizeof(float);
  const uint32_t points_tag = length_delimited_tag(quiver::internal::v1::Command::kUpsertPointsFieldNumber);
  const uint32_t vectors_tag = length_delimited_tag(quiver::internal::v1::UpsertPoints::kVectorsFieldNumber);
  const uint64_t points_bytes =
      CodedOutputStream::VarintSize32(vectors_tag) + CodedOutputStream::VarintSize64(vector_bytes) + vector_bytes;
  uint8_t prefix[4 * 10];  // two tags and two lengths, varints of at most 10 bytes
  uint8_t* end = CodedOutputStream::WriteVarint32ToArray(points_tag, prefix);
  end = CodedOutputStream::WriteVarint64ToArray(points_bytes, end);
  end = CodedOutputStream::WriteVarint32ToArray(vectors_tag, end);
  end = CodedOutputStream::WriteVarint64ToArray(vector_bytes, end);

  std::string out;
  out.reserve(head.ByteSizeLong() + static_cast<size_t>(end - prefix) + vector_bytes);
  head.AppendToString(&out);
  out.append(reinterpret_cast<const char*>(prefix), static_cast<size_t>(end - prefix));
  for (const auto& p : req.points()) out.append(reinterpret_cast<const char*>(p.vector().data()), dim * sizeof(float));
  return out;
}

namespace {

using quiver::internal::v1::Command;
using Clock = std::chrono::steady_clock;

// Times a handler and records its outcome.
class RpcScope {
 public:
  RpcScope(Metrics* m, Rpc rpc) : m_(m), rpc_(rpc), start_(Clock::now()) {}
  grpc::Status Done(const Status& st) {
    m_->Record(rpc_, static_cast<int>(st.code()),
               std::chrono::duration<double>(Clock::now() - start_).count());
    return ToGrpc(st);
  }

 private:
  Metrics* m_;
  Rpc rpc_;
  Clock::time_point start_;
};

// The client's deadline if it set one, else the configured write timeout.
std::string BackupDir(const ServerConfig& cfg) { return cfg.data_dir + "/backups"; }

Clock::time_point WriteDeadline(const grpc::ServerContext* ctx, const ServerConfig& cfg) {
  const auto fallback = Clock::now() + std::chrono::milliseconds(cfg.write_timeout_ms);
  const auto client = ctx->deadline();
  if (client == std::chrono::system_clock::time_point::max()) return fallback;
  const auto left = client - std::chrono::system_clock::now();
  return std::min(fallback, Clock::now() + std::chrono::duration_cast<Clock::duration>(left));
}

Result<uint64_t> ProposeBytes(const ApiContext& ctx, const grpc::ServerContext* sctx, std::string command) {
  return ctx.replicator->Propose(std::move(command), WriteDeadline(sctx, *ctx.config));
}

Result<uint64_t> ProposeCommand(const ApiContext& ctx, const grpc::ServerContext* sctx, const Command& cmd) {
  return ProposeBytes(ctx, sctx, cmd.SerializeAsString());
}

// Copies a write's request id into its command (validated: both fields or neither).
Status SetRequestId(const quiver::v1::RequestId& id, Command* cmd) {
  if (id.client_id().empty() && id.sequence() == 0) return Status::Ok();
  if (id.client_id().empty()) return Status::InvalidArgument("request_id.client_id is empty but sequence is set");
  if (id.client_id().size() > 128) return Status::InvalidArgument("request_id.client_id is longer than 128 bytes");
  if (id.sequence() == 0) return Status::InvalidArgument("request_id.sequence must be above 0");
  cmd->set_client_id(id.client_id());
  cmd->set_sequence(id.sequence());
  return Status::Ok();
}

void CopyPayload(const std::string& bytes, google::protobuf::Map<std::string, quiver::v1::Value>* out) {
  if (bytes.empty()) return;
  quiver::v1::Payload payload;
  if (payload.ParseFromString(bytes)) out->swap(*payload.mutable_fields());
}

// Linearizable reads wait until this node's state is current (see
// ReadConsistency in points.proto); eventual ones read it as it is.
Status ReadBarrier(const ApiContext& ctx, const grpc::ServerContext* sctx, quiver::v1::ReadConsistency consistency) {
  if (consistency == quiver::v1::EVENTUAL) return Status::Ok();
  if (consistency != quiver::v1::LINEARIZABLE) {
    return Status::InvalidArgument("consistency: unknown value " + std::to_string(static_cast<int>(consistency)));
  }
  return ctx.replicator->ReadBarrier(WriteDeadline(sctx, *ctx.config));
}

Status ValidateK(uint32_t k, const ServerConfig& cfg) {
  if (k == 0) return Status::InvalidArgument("k must be at least 1");
  if (k > cfg.max_k) {
    return Status::InvalidArgument("k is " + std::to_string(k) + ", above the maximum of " + std::to_string(cfg.max_k));
  }
  return Status::Ok();
}

Status ValidateIds(const google::protobuf::RepeatedField<uint64_t>& ids, const ServerConfig& cfg) {
  if (ids.empty()) return Status::InvalidArgument("ids is empty");
  if (static_cast<uint32_t>(ids.size()) > cfg.max_points_per_request) {
    return Status::InvalidArgument("ids holds " + std::to_string(ids.size()) + " ids, above the maximum of " +
                                   std::to_string(cfg.max_points_per_request));
  }
  return Status::Ok();
}

Status SearchInto(const ApiContext& ctx, const engine::Collection& coll, const std::vector<float>& queries, size_t nq,
                  uint32_t k, bool with_payload, bool with_vector, const quiver::v1::SearchParams& params,
                  const quiver::v1::Filter* filter, const std::function<quiver::v1::SearchResponse*(size_t)>& out) {
  QUIVER_RETURN_IF_ERROR(engine::ValidateSearchParams(params));
  std::vector<std::vector<engine::Hit>> hits;
  // Concurrent searches share the cores instead of each starting a full
  // thread team: N calls in flight get search_threads / N threads each, so
  // the node never runs more search threads than it has, and a lone call
  // still gets them all.
  const int in_flight = ctx.metrics->BeginSearch();
  struct EndSearch {
    Metrics* m;
    ~EndSearch() { m->EndSearch(); }
  } end_search{ctx.metrics};
  const int cores = static_cast<int>(ctx.search_pool->threads());  // search_threads, or every core
  // A batch serving several calls gets every core: the calls it serves wait
  // for it, and the batcher runs one batch per collection and settings at a time.
  auto resources = [&](size_t calls) {
    kernels::Resources res;
    res.num_threads = calls > 1 ? cores : std::max(1, cores / in_flight);
    return res;
  };
  engine::SearchOptions options;
  options.nprobe = params.nprobe();
  options.itopk = params.itopk();
  options.search_width = params.search_width();
  options.refine_factor = params.refine_factor();
  options.with_payload = with_payload;
  options.with_vector = with_vector;
  options.filter = filter;
  if (filter == nullptr && !coll.GainsFromBatching()) {
    // A CPU index searches query by query: the call's queries go to the
    // node's shared search threads in chunks, so a core that one call leaves
    // idle serves another's (engine/search_pool.h).
    QUIVER_RETURN_IF_ERROR(ctx.search_pool->Search(coll, queries.data(), nq, k, options, &hits));
  } else {
    QUIVER_RETURN_IF_ERROR(ctx.batcher->Search(coll, queries.data(), nq, k, options, resources, &hits));
  }
  for (size_t q = 0; q < nq; ++q) {
    quiver::v1::SearchResponse* resp = out(q);
    resp->mutable_hits()->Reserve(static_cast<int>(hits[q].size()));
    for (auto& h : hits[q]) {
      auto* sp = resp->add_hits();
      sp->set_id(h.id);
      sp->set_score(h.score);
      if (with_payload) CopyPayload(h.payload, sp->mutable_payload());
      if (with_vector) sp->mutable_vector()->Add(h.vector.begin(), h.vector.end());
    }
  }
  return Status::Ok();
}

// Validates a request's collection name and finds the collection.
Result<std::shared_ptr<const engine::Collection>> FindCollection(const ApiContext& ctx, const std::string& name,
                                                                 const char* field = "collection") {
  QUIVER_RETURN_IF_ERROR(engine::ValidateCollectionName(name, field));
  return ctx.engine->Find(name);
}

// For a write: this node's view, unless it does not know the collection
// yet — created through another node and not applied here — in which case
// it catches up with the leader (ReadBarrier) and looks again.
Result<std::shared_ptr<const engine::Collection>> FindCollectionForWrite(const ApiContext& ctx,
                                                                         const grpc::ServerContext* sctx,
                                                                         const std::string& name) {
  auto coll = FindCollection(ctx, name);
  if (coll.ok() || coll.status().code() != StatusCode::kNotFound) return coll;
  QUIVER_RETURN_IF_ERROR(ReadBarrier(ctx, sctx, quiver::v1::LINEARIZABLE));
  return FindCollection(ctx, name);
}

// ---- handler bodies: validate everything, then act; any error changes nothing ----

Status CreateCollection(const ApiContext& ctx, const grpc::ServerContext* sctx,
                        const quiver::v1::CreateCollectionRequest& req, quiver::v1::CreateCollectionResponse* resp) {
  if (!req.has_config()) return Status::InvalidArgument("config is not set");
  QUIVER_RETURN_IF_ERROR(engine::ValidateCollectionConfig(req.config()));
  Command cmd;
  QUIVER_RETURN_IF_ERROR(SetRequestId(req.request_id(), &cmd));
  // A retry of an applied create must get the first answer, not ALREADY_EXISTS:
  // with a request id the log decides.
  if (cmd.client_id().empty() && ctx.engine->Find(req.config().name()).ok()) {
    return Status::AlreadyExists("collection '" + req.config().name() + "' already exists");
  }
  *cmd.mutable_create_collection()->mutable_config() = req.config();
  QUIVER_RETURN_IF_ERROR(ProposeCommand(ctx, sctx, cmd).status());
  QUIVER_ASSIGN_OR_RETURN(auto coll, ctx.engine->Find(req.config().name()));  // NOT_FOUND if deleted meanwhile
  *resp->mutable_collection() = coll->Info();
  return Status::Ok();
}

Status GetCollection(const ApiContext& ctx, const grpc::ServerContext* sctx, const quiver::v1::GetCollectionRequest& req,
                     quiver::v1::GetCollectionResponse* resp) {
  QUIVER_RETURN_IF_ERROR(ReadBarrier(ctx, sctx, quiver::v1::LINEARIZABLE));
  QUIVER_ASSIGN_OR_RETURN(auto coll, FindCollection(ctx, req.name(), "name"));
  *resp->mutable_collection() = coll->Info();
  return Status::Ok();
}

Status DeleteCollection(const ApiContext& ctx, const grpc::ServerContext* sctx,
                        const quiver::v1::DeleteCollectionRequest& req) {
  Command cmd;
  QUIVER_RETURN_IF_ERROR(SetRequestId(req.request_id(), &cmd));
  if (cmd.client_id().empty()) QUIVER_RETURN_IF_ERROR(FindCollection(ctx, req.name(), "name").status());
  cmd.mutable_delete_collection()->set_name(req.name());
  return ProposeCommand(ctx, sctx, cmd).status();
}

// Sorting a copy of the ids finds a repeat without a hash-set node per point
// (a thousand allocations per Upsert); only a request that has one pays for
// naming the first point that repeats an earlier id.
Status CheckIdsDistinct(const quiver::v1::UpsertRequest& req) {
  std::vector<uint64_t> ids(static_cast<size_t>(req.points_size()));
  for (int i = 0; i < req.points_size(); ++i) ids[static_cast<size_t>(i)] = req.points(i).id();
  std::sort(ids.begin(), ids.end());
  if (std::adjacent_find(ids.begin(), ids.end()) == ids.end()) return Status::Ok();
  std::unordered_set<uint64_t> seen;
  for (int i = 0;; ++i) {
    const uint64_t id = req.points(i).id();
    if (!seen.insert(id).second) {
      return Status::InvalidArgument(engine::FieldName("points", i, ".id").str() + " " + std::to_string(id) +
                                     " is repeated in the request");
    }
  }
}

Status Upsert(const ApiContext& ctx, const grpc::ServerContext* sctx, const quiver::v1::UpsertRequest& req,
              quiver::v1::UpsertResponse* resp) {
  const ServerConfig& cfg = *ctx.config;
  QUIVER_ASSIGN_OR_RETURN(auto coll, FindCollectionForWrite(ctx, sctx, req.collection()));
  const int n = req.points_size();
  if (n == 0) return Status::InvalidArgument("points is empty");
  if (static_cast<uint32_t>(n) > cfg.max_points_per_request) {
    return Status::InvalidArgument("points holds " + std::to_string(n) + " points, above the maximum of " +
                                   std::to_string(cfg.max_points_per_request));
  }
  QUIVER_RETURN_IF_ERROR(CheckIdsDistinct(req));
  const uint32_t dim = coll->dimension();
  Command cmd;
  QUIVER_RETURN_IF_ERROR(SetRequestId(req.request_id(), &cmd));
  auto* up = cmd.mutable_upsert_points();
  up->set_collection(req.collection());
  up->set_dimension(dim);
  up->set_collection_created_at(coll->id());
  std::string* ids = up->mutable_ids();
  ids->reserve(size_t(n) * 8);
  bool any_payload = false;
  for (int i = 0; i < n; ++i) {
    const auto& p = req.points(i);
    QUIVER_RETURN_IF_ERROR(engine::ValidateVector(p.vector().data(), static_cast<size_t>(p.vector_size()), dim,
                                                  engine::FieldName("points", i, ".vector")));
    QUIVER_RETURN_IF_ERROR(engine::ValidatePayload(p.payload(), engine::FieldName("points", i, ".payload")));
    any_payload = any_payload || !p.payload().empty();
    PutFixed64LE(ids, p.id());
  }
  if (any_payload) {
    for (int i = 0; i < n; ++i) {
      std::string* bytes = up->add_payloads();
      if (req.points(i).payload().empty()) continue;
      quiver::v1::Payload payload;
      *payload.mutable_fields() = req.points(i).payload();
      // Deterministic so equal payloads are equal bytes on every replica.
      google::protobuf::io::StringOutputStream sos(bytes);
      google::protobuf::io::CodedOutputStream cos(&sos);
      cos.SetSerializationDeterministic(true);
      payload.SerializeToCodedStream(&cos);
      cos.Trim();
      if (bytes->size() > cfg.max_payload_bytes) {
        return Status::InvalidArgument("points[" + std::to_string(i) + "].payload is " + std::to_string(bytes->size()) +
                                       " bytes, above the maximum of " + std::to_string(cfg.max_payload_bytes));
      }
    }
  }
  QUIVER_ASSIGN_OR_RETURN(uint64_t index, ProposeBytes(ctx, sctx, EncodeUpsertCommand(cmd, req, dim)));
  resp->set_log_index(index);
  resp->set_upserted(static_cast<uint32_t>(n));
  ctx.metrics->AddUpsertedVectors(static_cast<uint64_t>(n));
  return Status::Ok();
}

Status DeletePoints(const ApiContext& ctx, const grpc::ServerContext* sctx, const quiver::v1::DeletePointsRequest& req,
                    quiver::v1::DeletePointsResponse* resp) {
  QUIVER_ASSIGN_OR_RETURN(auto coll, FindCollectionForWrite(ctx, sctx, req.collection()));
  QUIVER_RETURN_IF_ERROR(ValidateIds(req.ids(), *ctx.config));
  Command cmd;
  QUIVER_RETURN_IF_ERROR(SetRequestId(req.request_id(), &cmd));
  auto* del = cmd.mutable_delete_points();
  del->set_collection(req.collection());
  del->set_collection_created_at(coll->id());
  for (uint64_t id : req.ids()) PutFixed64LE(del->mutable_ids(), id);
  QUIVER_ASSIGN_OR_RETURN(uint64_t index, ProposeCommand(ctx, sctx, cmd));
  resp->set_log_index(index);
  return Status::Ok();
}

Status GetPoints(const ApiContext& ctx, const grpc::ServerContext* sctx, const quiver::v1::GetPointsRequest& req,
                 quiver::v1::GetPointsResponse* resp) {
  QUIVER_RETURN_IF_ERROR(ReadBarrier(ctx, sctx, req.consistency()));
  QUIVER_ASSIGN_OR_RETURN(auto coll, FindCollection(ctx, req.collection()));
  QUIVER_RETURN_IF_ERROR(ValidateIds(req.ids(), *ctx.config));
  for (auto& p : coll->Get({req.ids().data(), static_cast<size_t>(req.ids_size())}, req.with_payload(),
                           req.with_vector())) {
    auto* out = resp->add_points();
    out->set_id(p.id);
    if (req.with_vector()) out->mutable_vector()->Add(p.vector.begin(), p.vector.end());
    if (req.with_payload()) CopyPayload(p.payload, out->mutable_payload());
  }
  return Status::Ok();
}

Status CountPoints(const ApiContext& ctx, const grpc::ServerContext* sctx, const quiver::v1::CountRequest& req,
                   quiver::v1::CountResponse* resp) {
  QUIVER_RETURN_IF_ERROR(ReadBarrier(ctx, sctx, req.consistency()));
  QUIVER_ASSIGN_OR_RETURN(auto coll, FindCollection(ctx, req.collection()));
  resp->set_count(coll->Count());
  return Status::Ok();
}

Status SearchOne(const ApiContext& ctx, const grpc::ServerContext* sctx, const quiver::v1::SearchRequest& req,
                 quiver::v1::SearchResponse* resp) {
  QUIVER_RETURN_IF_ERROR(ReadBarrier(ctx, sctx, req.consistency()));
  QUIVER_ASSIGN_OR_RETURN(auto coll, FindCollection(ctx, req.collection()));
  QUIVER_RETURN_IF_ERROR(ValidateK(req.k(), *ctx.config));
  QUIVER_RETURN_IF_ERROR(engine::ValidateVector(req.vector().data(), static_cast<size_t>(req.vector_size()),
                                                coll->dimension(), "vector"));
  if (req.has_filter()) QUIVER_RETURN_IF_ERROR(engine::ValidateFilter(req.filter()));
  std::vector<float> q(req.vector().begin(), req.vector().end());
  return SearchInto(ctx, *coll, q, 1, req.k(), req.with_payload(), req.with_vector(), req.params(),
                    req.has_filter() ? &req.filter() : nullptr, [&](size_t) { return resp; });
}

Status SearchMany(const ApiContext& ctx, const grpc::ServerContext* sctx, const quiver::v1::SearchBatchRequest& req,
                  quiver::v1::SearchBatchResponse* resp) {
  QUIVER_RETURN_IF_ERROR(ReadBarrier(ctx, sctx, req.consistency()));
  QUIVER_ASSIGN_OR_RETURN(auto coll, FindCollection(ctx, req.collection()));
  QUIVER_RETURN_IF_ERROR(ValidateK(req.k(), *ctx.config));
  const int nq = req.queries_size();
  if (nq == 0) return Status::InvalidArgument("queries is empty");
  if (static_cast<uint32_t>(nq) > ctx.config->max_batch_queries) {
    return Status::InvalidArgument("queries holds " + std::to_string(nq) + " vectors, above the maximum of " +
                                   std::to_string(ctx.config->max_batch_queries));
  }
  const uint32_t dim = coll->dimension();
  std::vector<float> queries;
  queries.reserve(size_t(nq) * dim);
  for (int i = 0; i < nq; ++i) {
    const auto& v = req.queries(i).values();
    QUIVER_RETURN_IF_ERROR(engine::ValidateVector(v.data(), static_cast<size_t>(v.size()), dim,
                                                  engine::FieldName("queries", i, ".values")));
    queries.insert(queries.end(), v.begin(), v.end());
  }
  if (req.has_filter()) QUIVER_RETURN_IF_ERROR(engine::ValidateFilter(req.filter()));
  for (int i = 0; i < nq; ++i) resp->add_results();
  return SearchInto(ctx, *coll, queries, static_cast<size_t>(nq), req.k(), req.with_payload(), req.with_vector(),
                    req.params(), req.has_filter() ? &req.filter() : nullptr,
                    [&](size_t q) { return resp->mutable_results(static_cast<int>(q)); });
}

}  // namespace

// ---- the gRPC overrides: time the call, run the body, map the status ----

grpc::Status CollectionsApi::Create(grpc::ServerContext* sctx, const quiver::v1::CreateCollectionRequest* req,
                                    quiver::v1::CreateCollectionResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kCreateCollection);
  if (Status auth = Authorize(*ctx_.config, *sctx, Access::kWrite); !auth.ok()) return scope.Done(auth);
  return scope.Done(CreateCollection(ctx_, sctx, *req, resp));
}

grpc::Status CollectionsApi::Get(grpc::ServerContext* sctx, const quiver::v1::GetCollectionRequest* req,
                                 quiver::v1::GetCollectionResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kGetCollection);
  if (Status auth = Authorize(*ctx_.config, *sctx, Access::kRead); !auth.ok()) return scope.Done(auth);
  return scope.Done(GetCollection(ctx_, sctx, *req, resp));
}

grpc::Status CollectionsApi::List(grpc::ServerContext* sctx, const quiver::v1::ListCollectionsRequest*,
                                  quiver::v1::ListCollectionsResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kListCollections);
  if (Status auth = Authorize(*ctx_.config, *sctx, Access::kRead); !auth.ok()) return scope.Done(auth);
  // Collection metadata is always read linearizably (it is cheap and rare).
  if (Status st = ReadBarrier(ctx_, sctx, quiver::v1::LINEARIZABLE); !st.ok()) return scope.Done(st);
  for (const auto& c : ctx_.engine->List()) *resp->add_collections() = c->Info();
  return scope.Done(Status::Ok());
}

grpc::Status CollectionsApi::Delete(grpc::ServerContext* sctx, const quiver::v1::DeleteCollectionRequest* req,
                                    quiver::v1::DeleteCollectionResponse*) {
  RpcScope scope(ctx_.metrics, Rpc::kDeleteCollection);
  if (Status auth = Authorize(*ctx_.config, *sctx, Access::kWrite); !auth.ok()) return scope.Done(auth);
  return scope.Done(DeleteCollection(ctx_, sctx, *req));
}

// gRPC's unary handlers parse a request onto the heap: for an Upsert of a
// thousand points, two thousand objects (each Point and its float array) to
// allocate and then free, on threads that share the cores with the Raft
// driver. Parsed into an arena they take a few large blocks, freed at once.
// Unauthorized requests are not parsed at all.
grpc::Status PointsApi::StreamedUpsert(
    grpc::ServerContext* sctx, grpc::ServerUnaryStreamer<quiver::v1::UpsertRequest, quiver::v1::UpsertResponse>* call) {
  RpcScope scope(ctx_.metrics, Rpc::kUpsert);
  if (Status auth = Authorize(*ctx_.config, *sctx, Access::kWrite); !auth.ok()) return scope.Done(auth);
  google::protobuf::ArenaOptions arena_options;
  arena_options.start_block_size = 64 << 10;
  arena_options.max_block_size = 1 << 20;  // a 1,000 x 128-d request fits in a handful
  google::protobuf::Arena arena(arena_options);
  auto* req = google::protobuf::Arena::CreateMessage<quiver::v1::UpsertRequest>(&arena);
  if (Status read = ReadUnaryRequest(call, req); !read.ok()) return scope.Done(read);
  auto* resp = google::protobuf::Arena::CreateMessage<quiver::v1::UpsertResponse>(&arena);
  const Status st = service::Upsert(ctx_, sctx, *req, resp);
  // A failed write means the client is gone; the write itself stands.
  if (st.ok()) (void)call->Write(*resp);
  return scope.Done(st);
}

grpc::Status PointsApi::Delete(grpc::ServerContext* sctx, const quiver::v1::DeletePointsRequest* req,
                               quiver::v1::DeletePointsResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kDeletePoints);
  if (Status auth = Authorize(*ctx_.config, *sctx, Access::kWrite); !auth.ok()) return scope.Done(auth);
  return scope.Done(DeletePoints(ctx_, sctx, *req, resp));
}

grpc::Status PointsApi::Get(grpc::ServerContext* sctx, const quiver::v1::GetPointsRequest* req,
                            quiver::v1::GetPointsResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kGetPoints);
  if (Status auth = Authorize(*ctx_.config, *sctx, Access::kRead); !auth.ok()) return scope.Done(auth);
  return scope.Done(GetPoints(ctx_, sctx, *req, resp));
}

grpc::Status PointsApi::Count(grpc::ServerContext* sctx, const quiver::v1::CountRequest* req,
                              quiver::v1::CountResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kCount);
  if (Status auth = Authorize(*ctx_.config, *sctx, Access::kRead); !auth.ok()) return scope.Done(auth);
  return scope.Done(CountPoints(ctx_, sctx, *req, resp));
}

grpc::Status PointsApi::Search(grpc::ServerContext* sctx, const quiver::v1::SearchRequest* req,
                               quiver::v1::SearchResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kSearch);
  if (Status auth = Authorize(*ctx_.config, *sctx, Access::kRead); !auth.ok()) return scope.Done(auth);
  return scope.Done(SearchOne(ctx_, sctx, *req, resp));
}

grpc::Status PointsApi::SearchBatch(grpc::ServerContext* sctx, const quiver::v1::SearchBatchRequest* req,
                                    quiver::v1::SearchBatchResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kSearchBatch);
  if (Status auth = Authorize(*ctx_.config, *sctx, Access::kRead); !auth.ok()) return scope.Done(auth);
  return scope.Done(SearchMany(ctx_, sctx, *req, resp));
}

grpc::Status ClusterApi::Status(grpc::ServerContext* sctx, const quiver::v1::ClusterStatusRequest*,
                                quiver::v1::ClusterStatusResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kClusterStatus);
  if (quiver::Status auth = Authorize(*ctx_.config, *sctx, Access::kRead); !auth.ok()) return scope.Done(auth);
  const auto group = raft_->GetGroupStatus();
  resp->set_node_id(group.id);
  resp->set_role(std::string(replication::raft::RoleName(group.role)));
  resp->set_leader_id(group.leader);
  resp->set_term(group.term);
  resp->set_commit_index(group.commit);
  resp->set_applied_index(group.applied);
  resp->set_cluster_id(raft_->cluster_id());
  const auto addresses = raft_->PeerAddresses();
  std::set<replication::raft::NodeId> ids(group.conf.voters.begin(), group.conf.voters.end());
  ids.insert(group.conf.learners.begin(), group.conf.learners.end());
  for (auto id : ids) {
    auto* m = resp->add_members();
    m->set_node_id(id);
    if (auto it = addresses.find(id); it != addresses.end()) m->set_peer_address(it->second);
    m->set_voter(group.conf.voters.contains(id));
    if (auto it = group.progress.find(id); it != group.progress.end()) {
      m->set_match_index(it->second.match);
      m->set_recently_active(it->second.recent_active || id == group.id);
    }
  }
  return scope.Done(quiver::Status::Ok());
}

grpc::Status ClusterApi::TransferLeader(grpc::ServerContext* sctx, const quiver::v1::TransferLeaderRequest* req,
                                        quiver::v1::TransferLeaderResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kTransferLeader);
  if (quiver::Status auth = Authorize(*ctx_.config, *sctx, Access::kWrite); !auth.ok()) return scope.Done(auth);
  if (req->node_id() == 0) return scope.Done(quiver::Status::InvalidArgument("node_id must be above 0"));
  quiver::Status st = raft_->TransferLeadership(req->node_id(), WriteDeadline(sctx, *ctx_.config));
  if (st.ok()) resp->set_leader_id(req->node_id());
  return scope.Done(st);
}

grpc::Status ClusterApi::RemoveNode(grpc::ServerContext* sctx, const quiver::v1::RemoveNodeRequest* req,
                                    quiver::v1::RemoveNodeResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kRemoveNode);
  if (quiver::Status auth = Authorize(*ctx_.config, *sctx, Access::kWrite); !auth.ok()) return scope.Done(auth);
  if (req->node_id() == 0) return scope.Done(quiver::Status::InvalidArgument("node_id must be above 0"));
  Result<uint64_t> index = raft_->ChangeMembership({replication::raft::ConfChangeType::kRemoveNode, req->node_id()},
                                                    WriteDeadline(sctx, *ctx_.config));
  if (index.ok()) resp->set_log_index(*index);
  return scope.Done(index.status());
}

namespace {
void ToProto(const replication::BackupInfo& b, quiver::v1::BackupInfo* out) {
  out->set_name(b.name);
  out->set_applied_index(b.applied_index);
  out->set_cluster_id(b.cluster_id);
  out->set_created_unix_ms(b.created_unix_ms);
  out->set_bytes(b.bytes);
  out->set_files(b.files);
  out->set_path(b.path);
}

// Cluster.RestoreBackup (see cluster.proto): checks everything, then writes
// each collection through the log as CreateCollection and Upsert commands
// under one request id per restore, so a proposal retried across a leader
// change applies once.
Status RestoreCollections(const ApiContext& ctx, const grpc::ServerContext* sctx,
                          const quiver::v1::RestoreBackupRequest& req, quiver::v1::RestoreBackupResponse* resp) {
  const ServerConfig& cfg = *ctx.config;
  QUIVER_RETURN_IF_ERROR(replication::ValidateBackupName(req.name()));
  QUIVER_ASSIGN_OR_RETURN(auto reader, replication::BackupReader::Open(BackupDir(cfg) + "/" + req.name(),
                                                                       cfg.data_dir + "/restore-scratch"));
  QUIVER_ASSIGN_OR_RETURN(const auto stored, reader->Collections());
  std::map<std::string, std::pair<uint64_t, quiver::v1::CollectionConfig>> in_backup;  // name -> (id, config)
  for (const auto& sc : stored) {
    quiver::v1::CollectionInfo info;
    if (!info.ParseFromString(sc.meta) || info.created_at_index() != sc.id ||
        !engine::ValidateCollectionConfig(info.config()).ok()) {
      return Status::Corruption("backup '" + req.name() + "': collection record " + std::to_string(sc.id) +
                                " does not parse or is invalid");
    }
    in_backup[info.config().name()] = {sc.id, info.config()};
  }
  std::vector<std::string> chosen(req.collections().begin(), req.collections().end());
  if (chosen.empty()) {
    for (const auto& [name, _] : in_backup) chosen.push_back(name);
  }
  std::sort(chosen.begin(), chosen.end());
  if (std::adjacent_find(chosen.begin(), chosen.end()) != chosen.end()) {
    return Status::InvalidArgument("collections names a collection twice");
  }
  // This node's view must be current before "does the target exist" means anything.
  QUIVER_RETURN_IF_ERROR(ReadBarrier(ctx, sctx, quiver::v1::LINEARIZABLE));
  for (const std::string& name : chosen) {
    if (in_backup.count(name) == 0) {
      return Status::NotFound("backup '" + req.name() + "' holds no collection '" + name + "'");
    }
    const std::string target = name + req.rename_suffix();
    QUIVER_RETURN_IF_ERROR(engine::ValidateCollectionName(target, "rename_suffix (the restored name)"));
    if (ctx.engine->Find(target).ok()) {
      return Status::AlreadyExists("collection '" + target + "' exists: delete it, or restore under a rename_suffix");
    }
  }

  const std::string client_id = "restore/" + req.name() + "/" + std::to_string(UnixMillisNow());
  uint64_t sequence = 0;
  auto propose = [&](Command& cmd) -> Status {
    if (sctx->IsCancelled()) return Status::Cancelled("the client cancelled the restore");
    cmd.set_client_id(client_id);
    cmd.set_sequence(++sequence);
    return ProposeCommand(ctx, sctx, cmd).status();
  };
  resp->set_applied_index(reader->info().applied_index);
  for (const std::string& name : chosen) {
    const auto& [source_id, source_config] = in_backup[name];
    quiver::v1::CollectionConfig config = source_config;
    config.set_name(name + req.rename_suffix());
    Command create;
    *create.mutable_create_collection()->mutable_config() = config;
    QUIVER_RETURN_IF_ERROR(propose(create));
    QUIVER_ASSIGN_OR_RETURN(auto coll, ctx.engine->Find(config.name()));  // NOT_FOUND if deleted meanwhile
    const uint32_t dim = config.dimension();
    // Batches as a client's Upserts would be: at most max_points_per_request
    // points and a few MiB per log entry.
    constexpr size_t kBatchBytes = 4 << 20;
    Command batch;
    size_t batch_bytes = 0;
    std::vector<std::string> payloads;  // one per point of the batch
    uint64_t restored = 0;
    auto flush = [&]() -> Status {
      if (payloads.empty()) return Status::Ok();
      auto* up = batch.mutable_upsert_points();
      up->set_collection(config.name());
      up->set_dimension(dim);
      up->set_collection_created_at(coll->id());
      // No payloads field at all when no point carries one (wal.proto).
      if (std::any_of(payloads.begin(), payloads.end(), [](const std::string& p) { return !p.empty(); })) {
        for (std::string& p : payloads) up->add_payloads(std::move(p));
      }
      QUIVER_RETURN_IF_ERROR(propose(batch));
      restored += payloads.size();
      batch.Clear();
      payloads.clear();
      batch_bytes = 0;
      return Status::Ok();
    };
    QUIVER_RETURN_IF_ERROR(reader->ForEachPoint(
        source_id, dim, [&](uint64_t id, const float* vector, std::string_view payload) -> Status {
          auto* up = batch.mutable_upsert_points();
          PutFixed64LE(up->mutable_ids(), id);
          up->mutable_vectors()->append(reinterpret_cast<const char*>(vector), dim * sizeof(float));
          payloads.emplace_back(payload);
          batch_bytes += 8 + dim * sizeof(float) + payload.size();
          if (payloads.size() >= cfg.max_points_per_request || batch_bytes >= kBatchBytes) return flush();
          return Status::Ok();
        }));
    QUIVER_RETURN_IF_ERROR(flush());
    auto* out = resp->add_collections();
    out->set_source(name);
    out->set_target(config.name());
    out->set_points(restored);
    spdlog::info("restored collection '{}' from backup '{}' as '{}': {} points", name, req.name(), config.name(),
                 restored);
  }
  return Status::Ok();
}

}  // namespace

grpc::Status ClusterApi::RestoreBackup(grpc::ServerContext* sctx, const quiver::v1::RestoreBackupRequest* req,
                                       quiver::v1::RestoreBackupResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kRestoreBackup);
  if (quiver::Status auth = Authorize(*ctx_.config, *sctx, Access::kWrite); !auth.ok()) return scope.Done(auth);
  std::unique_lock<std::mutex> one_at_a_time(restore_mu_, std::try_to_lock);
  if (!one_at_a_time.owns_lock()) {
    return scope.Done(quiver::Status::FailedPrecondition("a restore is already running on this node"));
  }
  return scope.Done(RestoreCollections(ctx_, sctx, *req, resp));
}

grpc::Status ClusterApi::CreateBackup(grpc::ServerContext* sctx, const quiver::v1::CreateBackupRequest* req,
                                      quiver::v1::CreateBackupResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kCreateBackup);
  if (quiver::Status auth = Authorize(*ctx_.config, *sctx, Access::kWrite); !auth.ok()) return scope.Done(auth);
  std::string name = req->name();
  if (name.empty()) {
    name = "backup-" + std::to_string(UnixMillisNow());
  }
  Result<replication::BackupInfo> backup = replication::CreateBackup(
      ctx_.engine, BackupDir(*ctx_.config), name, raft_->cluster_id(), /*stop=*/nullptr);
  if (backup.ok()) ToProto(*backup, resp->mutable_backup());
  return scope.Done(backup.status());
}

grpc::Status ClusterApi::ListBackups(grpc::ServerContext* sctx, const quiver::v1::ListBackupsRequest*,
                                     quiver::v1::ListBackupsResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kListBackups);
  if (quiver::Status auth = Authorize(*ctx_.config, *sctx, Access::kRead); !auth.ok()) return scope.Done(auth);
  Result<std::vector<replication::BackupInfo>> backups = replication::ListBackups(BackupDir(*ctx_.config));
  if (backups.ok()) {
    for (const auto& b : *backups) ToProto(b, resp->add_backups());
  }
  return scope.Done(backups.status());
}

grpc::Status ClusterApi::AddNode(grpc::ServerContext* sctx, const quiver::v1::AddNodeRequest* req,
                                 quiver::v1::AddNodeResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kAddNode);
  if (quiver::Status auth = Authorize(*ctx_.config, *sctx, Access::kWrite); !auth.ok()) return scope.Done(auth);
  if (req->node_id() == 0) return scope.Done(quiver::Status::InvalidArgument("node_id must be above 0"));
  const auto deadline = WriteDeadline(sctx, *ctx_.config);
  const auto group = raft_->GetGroupStatus();
  Result<uint64_t> index =
      group.role != replication::raft::Role::kLeader && group.leader != replication::raft::kNoNode && peers_ != nullptr
          ? peers_->ForwardAddMember(group.leader, req->node_id(), req->peer_address(), deadline)
          : raft_->AddMember(req->node_id(), req->peer_address(), deadline);
  if (index.ok()) resp->set_log_index(*index);
  return scope.Done(index.status());
}

}  // namespace quiver::service
