#include "service/api.h"

#include <chrono>
#include <unordered_set>

#include "common/encoding.h"
#include "engine/validation.h"
#include "quiver/internal/v1/wal.pb.h"
#include "service/grpc_status.h"

namespace quiver::service {
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
Clock::time_point WriteDeadline(const grpc::ServerContext* ctx, const ServerConfig& cfg) {
  const auto fallback = Clock::now() + std::chrono::milliseconds(cfg.write_timeout_ms);
  const auto client = ctx->deadline();
  if (client == std::chrono::system_clock::time_point::max()) return fallback;
  const auto left = client - std::chrono::system_clock::now();
  return std::min(fallback, Clock::now() + std::chrono::duration_cast<Clock::duration>(left));
}

Result<uint64_t> ProposeCommand(const ApiContext& ctx, const grpc::ServerContext* sctx, const Command& cmd) {
  return ctx.replicator->Propose(cmd.SerializeAsString(), WriteDeadline(sctx, *ctx.config));
}

void CopyPayload(const std::string& bytes, google::protobuf::Map<std::string, quiver::v1::Value>* out) {
  if (bytes.empty()) return;
  quiver::v1::Payload payload;
  if (payload.ParseFromString(bytes)) out->swap(*payload.mutable_fields());
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
                  uint32_t k, bool with_payload, bool with_vector,
                  const std::function<quiver::v1::SearchResponse*(size_t)>& out) {
  std::vector<std::vector<engine::Hit>> hits;
  kernels::Resources res;
  res.num_threads = static_cast<int>(ctx.config->search_threads);
  QUIVER_RETURN_IF_ERROR(coll.Search(res, queries.data(), nq, k, with_payload, with_vector, &hits));
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

}  // namespace

// ---- Collections ----

grpc::Status CollectionsApi::Create(grpc::ServerContext* sctx, const quiver::v1::CreateCollectionRequest* req,
                                    quiver::v1::CreateCollectionResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kCreateCollection);
  if (!req->has_config()) return scope.Done(Status::InvalidArgument("config is not set"));
  Status st = engine::ValidateCollectionConfig(req->config());
  if (!st.ok()) return scope.Done(st);
  if (ctx_.engine->Find(req->config().name()).ok()) {
    return scope.Done(Status::AlreadyExists("collection '" + req->config().name() + "' already exists"));
  }
  Command cmd;
  *cmd.mutable_create_collection()->mutable_config() = req->config();
  auto index = ProposeCommand(ctx_, sctx, cmd);
  if (!index.ok()) return scope.Done(index.status());
  auto coll = ctx_.engine->Find(req->config().name());
  if (!coll.ok()) return scope.Done(coll.status());  // deleted right after creation
  *resp->mutable_collection() = (*coll)->Info();
  return scope.Done(Status::Ok());
}

grpc::Status CollectionsApi::Get(grpc::ServerContext*, const quiver::v1::GetCollectionRequest* req,
                                 quiver::v1::GetCollectionResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kGetCollection);
  Status st = engine::ValidateCollectionName(req->name());
  if (!st.ok()) return scope.Done(st);
  auto coll = ctx_.engine->Find(req->name());
  if (!coll.ok()) return scope.Done(coll.status());
  *resp->mutable_collection() = (*coll)->Info();
  return scope.Done(Status::Ok());
}

grpc::Status CollectionsApi::List(grpc::ServerContext*, const quiver::v1::ListCollectionsRequest*,
                                  quiver::v1::ListCollectionsResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kListCollections);
  for (const auto& c : ctx_.engine->List()) *resp->add_collections() = c->Info();
  return scope.Done(Status::Ok());
}

grpc::Status CollectionsApi::Delete(grpc::ServerContext* sctx, const quiver::v1::DeleteCollectionRequest* req,
                                    quiver::v1::DeleteCollectionResponse*) {
  RpcScope scope(ctx_.metrics, Rpc::kDeleteCollection);
  Status st = engine::ValidateCollectionName(req->name());
  if (!st.ok()) return scope.Done(st);
  if (auto c = ctx_.engine->Find(req->name()); !c.ok()) return scope.Done(c.status());
  Command cmd;
  cmd.mutable_delete_collection()->set_name(req->name());
  auto index = ProposeCommand(ctx_, sctx, cmd);
  return scope.Done(index.ok() ? Status::Ok() : index.status());
}

// ---- Points ----

grpc::Status PointsApi::Upsert(grpc::ServerContext* sctx, const quiver::v1::UpsertRequest* req,
                               quiver::v1::UpsertResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kUpsert);
  const ServerConfig& cfg = *ctx_.config;
  Status st = engine::ValidateCollectionName(req->collection(), "collection");
  if (!st.ok()) return scope.Done(st);
  auto found = ctx_.engine->Find(req->collection());
  if (!found.ok()) return scope.Done(found.status());
  const engine::Collection& coll = **found;
  const int n = req->points_size();
  if (n == 0) return scope.Done(Status::InvalidArgument("points is empty"));
  if (static_cast<uint32_t>(n) > cfg.max_points_per_request) {
    return scope.Done(Status::InvalidArgument("points holds " + std::to_string(n) + " points, above the maximum of " +
                                              std::to_string(cfg.max_points_per_request)));
  }
  const uint32_t dim = coll.dimension();
  Command cmd;
  auto* up = cmd.mutable_upsert_points();
  up->set_collection(req->collection());
  up->set_dimension(dim);
  up->set_collection_created_at(coll.id());
  std::string* ids = up->mutable_ids();
  std::string* vectors = up->mutable_vectors();
  ids->reserve(size_t(n) * 8);
  vectors->reserve(size_t(n) * dim * sizeof(float));
  std::unordered_set<uint64_t> seen;
  seen.reserve(static_cast<size_t>(n));
  bool any_payload = false;
  for (int i = 0; i < n; ++i) {
    const auto& p = req->points(i);
    const std::string field = "points[" + std::to_string(i) + "]";
    if (!seen.insert(p.id()).second) {
      return scope.Done(Status::InvalidArgument(field + ".id " + std::to_string(p.id()) + " is repeated in the request"));
    }
    st = engine::ValidateVector(p.vector().data(), static_cast<size_t>(p.vector_size()), dim, field + ".vector");
    if (!st.ok()) return scope.Done(st);
    st = engine::ValidatePayload(p.payload(), field + ".payload");
    if (!st.ok()) return scope.Done(st);
    any_payload = any_payload || !p.payload().empty();
    PutFixed64LE(ids, p.id());
    vectors->append(reinterpret_cast<const char*>(p.vector().data()), dim * sizeof(float));
  }
  if (any_payload) {
    for (int i = 0; i < n; ++i) {
      std::string* bytes = up->add_payloads();
      if (req->points(i).payload().empty()) continue;
      quiver::v1::Payload payload;
      *payload.mutable_fields() = req->points(i).payload();
      // Deterministic so equal payloads are equal bytes on every replica.
      google::protobuf::io::StringOutputStream sos(bytes);
      google::protobuf::io::CodedOutputStream cos(&sos);
      cos.SetSerializationDeterministic(true);
      payload.SerializeToCodedStream(&cos);
      cos.Trim();
      if (bytes->size() > cfg.max_payload_bytes) {
        return scope.Done(Status::InvalidArgument("points[" + std::to_string(i) + "].payload is " +
                                                  std::to_string(bytes->size()) + " bytes, above the maximum of " +
                                                  std::to_string(cfg.max_payload_bytes)));
      }
    }
  }
  auto index = ProposeCommand(ctx_, sctx, cmd);
  if (!index.ok()) return scope.Done(index.status());
  resp->set_log_index(*index);
  resp->set_upserted(static_cast<uint32_t>(n));
  ctx_.metrics->AddUpsertedVectors(static_cast<uint64_t>(n));
  return scope.Done(Status::Ok());
}

grpc::Status PointsApi::Delete(grpc::ServerContext* sctx, const quiver::v1::DeletePointsRequest* req,
                               quiver::v1::DeletePointsResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kDeletePoints);
  Status st = engine::ValidateCollectionName(req->collection(), "collection");
  if (!st.ok()) return scope.Done(st);
  st = ValidateIds(req->ids(), *ctx_.config);
  if (!st.ok()) return scope.Done(st);
  auto found = ctx_.engine->Find(req->collection());
  if (!found.ok()) return scope.Done(found.status());
  Command cmd;
  auto* del = cmd.mutable_delete_points();
  del->set_collection(req->collection());
  del->set_collection_created_at((*found)->id());
  for (uint64_t id : req->ids()) PutFixed64LE(del->mutable_ids(), id);
  auto index = ProposeCommand(ctx_, sctx, cmd);
  if (!index.ok()) return scope.Done(index.status());
  resp->set_log_index(*index);
  return scope.Done(Status::Ok());
}

grpc::Status PointsApi::Get(grpc::ServerContext*, const quiver::v1::GetPointsRequest* req,
                            quiver::v1::GetPointsResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kGetPoints);
  Status st = engine::ValidateCollectionName(req->collection(), "collection");
  if (!st.ok()) return scope.Done(st);
  st = ValidateIds(req->ids(), *ctx_.config);
  if (!st.ok()) return scope.Done(st);
  auto found = ctx_.engine->Find(req->collection());
  if (!found.ok()) return scope.Done(found.status());
  for (auto& p : (*found)->Get({req->ids().data(), static_cast<size_t>(req->ids_size())}, req->with_payload(),
                               req->with_vector())) {
    auto* out = resp->add_points();
    out->set_id(p.id);
    if (req->with_vector()) out->mutable_vector()->Add(p.vector.begin(), p.vector.end());
    if (req->with_payload()) CopyPayload(p.payload, out->mutable_payload());
  }
  return scope.Done(Status::Ok());
}

grpc::Status PointsApi::Count(grpc::ServerContext*, const quiver::v1::CountRequest* req,
                              quiver::v1::CountResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kCount);
  Status st = engine::ValidateCollectionName(req->collection(), "collection");
  if (!st.ok()) return scope.Done(st);
  auto found = ctx_.engine->Find(req->collection());
  if (!found.ok()) return scope.Done(found.status());
  resp->set_count((*found)->Count());
  return scope.Done(Status::Ok());
}

grpc::Status PointsApi::Search(grpc::ServerContext*, const quiver::v1::SearchRequest* req,
                               quiver::v1::SearchResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kSearch);
  Status st = engine::ValidateCollectionName(req->collection(), "collection");
  if (!st.ok()) return scope.Done(st);
  st = ValidateK(req->k(), *ctx_.config);
  if (!st.ok()) return scope.Done(st);
  auto found = ctx_.engine->Find(req->collection());
  if (!found.ok()) return scope.Done(found.status());
  const engine::Collection& coll = **found;
  st = engine::ValidateVector(req->vector().data(), static_cast<size_t>(req->vector_size()), coll.dimension(), "vector");
  if (!st.ok()) return scope.Done(st);
  std::vector<float> q(req->vector().begin(), req->vector().end());
  st = SearchInto(ctx_, coll, q, 1, req->k(), req->with_payload(), req->with_vector(), [&](size_t) { return resp; });
  return scope.Done(st);
}

grpc::Status PointsApi::SearchBatch(grpc::ServerContext*, const quiver::v1::SearchBatchRequest* req,
                                    quiver::v1::SearchBatchResponse* resp) {
  RpcScope scope(ctx_.metrics, Rpc::kSearchBatch);
  Status st = engine::ValidateCollectionName(req->collection(), "collection");
  if (!st.ok()) return scope.Done(st);
  st = ValidateK(req->k(), *ctx_.config);
  if (!st.ok()) return scope.Done(st);
  const int nq = req->queries_size();
  if (nq == 0) return scope.Done(Status::InvalidArgument("queries is empty"));
  if (static_cast<uint32_t>(nq) > ctx_.config->max_batch_queries) {
    return scope.Done(Status::InvalidArgument("queries holds " + std::to_string(nq) + " vectors, above the maximum of " +
                                              std::to_string(ctx_.config->max_batch_queries)));
  }
  auto found = ctx_.engine->Find(req->collection());
  if (!found.ok()) return scope.Done(found.status());
  const engine::Collection& coll = **found;
  const uint32_t dim = coll.dimension();
  std::vector<float> queries;
  queries.reserve(size_t(nq) * dim);
  for (int i = 0; i < nq; ++i) {
    const auto& v = req->queries(i).values();
    st = engine::ValidateVector(v.data(), static_cast<size_t>(v.size()), dim,
                                "queries[" + std::to_string(i) + "].values");
    if (!st.ok()) return scope.Done(st);
    queries.insert(queries.end(), v.begin(), v.end());
  }
  for (int i = 0; i < nq; ++i) resp->add_results();
  st = SearchInto(ctx_, coll, queries, static_cast<size_t>(nq), req->k(), req->with_payload(), req->with_vector(),
                  [&](size_t q) { return resp->mutable_results(static_cast<int>(q)); });
  return scope.Done(st);
}

}  // namespace quiver::service
