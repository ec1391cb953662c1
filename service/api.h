// The public gRPC services. Each handler validates the whole request first
// (a bad request gets a precise status naming the field and changes nothing),
// then proposes writes through the replicator or reads from the engine.
#pragma once

#include <mutex>

#include "engine/engine.h"
#include "engine/search_batcher.h"
#include "engine/search_pool.h"
#include "quiver/internal/v1/wal.pb.h"
#include "quiver/v1/cluster.grpc.pb.h"
#include "quiver/v1/collections.grpc.pb.h"
#include "quiver/v1/points.grpc.pb.h"
#include "replication/replicator.h"
#include "service/config.h"
#include "service/metrics.h"

namespace quiver::service {

/// The serialized quiver.internal.v1.Command of a validated Upsert: `head`,
/// the command with every field but upsert_points.vectors, then a second
/// upsert_points field that holds only the request's vectors (`dim` floats
/// of each point, in order), which a parser merges into the first (protobuf's
/// rule for a message field that occurs twice). The vectors are copied once,
/// from the parsed request into the command's bytes; building
/// UpsertPoints.vectors and serializing the whole command would copy them
/// twice and zero-fill the buffer in between.
std::string EncodeUpsertCommand(const quiver::internal::v1::Command& head, const quiver::v1::UpsertRequest& req,
                                uint32_t dim);

struct ApiContext {
  const ServerConfig* config;
  engine::Engine* engine;
  replication::Replicator* replicator;
  Metrics* metrics;
  engine::SearchBatcher* batcher;  // groups concurrent compatible searches
  engine::SearchPool* search_pool;  // runs unbatched unfiltered CPU searches; its size is the search threads
};

class CollectionsApi final : public quiver::v1::Collections::Service {
 public:
  explicit CollectionsApi(ApiContext ctx) : ctx_(ctx) {}
  grpc::Status Create(grpc::ServerContext*, const quiver::v1::CreateCollectionRequest*,
                      quiver::v1::CreateCollectionResponse*) override;
  grpc::Status Get(grpc::ServerContext*, const quiver::v1::GetCollectionRequest*,
                   quiver::v1::GetCollectionResponse*) override;
  grpc::Status List(grpc::ServerContext*, const quiver::v1::ListCollectionsRequest*,
                    quiver::v1::ListCollectionsResponse*) override;
  grpc::Status Delete(grpc::ServerContext*, const quiver::v1::DeleteCollectionRequest*,
                      quiver::v1::DeleteCollectionResponse*) override;

 private:
  ApiContext ctx_;
};

/// Upsert reads its own request (the "streamed unary" form of the method,
/// the same call on the wire) so that it can parse it into an arena: see
/// StreamedUpsert in api.cc.
class PointsApi final : public quiver::v1::Points::WithStreamedUnaryMethod_Upsert<quiver::v1::Points::Service> {
 public:
  explicit PointsApi(ApiContext ctx) : ctx_(ctx) {}
  grpc::Status StreamedUpsert(grpc::ServerContext*,
                              grpc::ServerUnaryStreamer<quiver::v1::UpsertRequest, quiver::v1::UpsertResponse>*) override;
  grpc::Status Delete(grpc::ServerContext*, const quiver::v1::DeletePointsRequest*,
                      quiver::v1::DeletePointsResponse*) override;
  grpc::Status Get(grpc::ServerContext*, const quiver::v1::GetPointsRequest*, quiver::v1::GetPointsResponse*) override;
  grpc::Status Count(grpc::ServerContext*, const quiver::v1::CountRequest*, quiver::v1::CountResponse*) override;
  grpc::Status Search(grpc::ServerContext*, const quiver::v1::SearchRequest*, quiver::v1::SearchResponse*) override;
  grpc::Status SearchBatch(grpc::ServerContext*, const quiver::v1::SearchBatchRequest*,
                           quiver::v1::SearchBatchResponse*) override;

 private:
  ApiContext ctx_;
};

class PeerClient;

/// The node's Raft group, for operators.
class ClusterApi final : public quiver::v1::Cluster::Service {
 public:
  /// `peers` (null on a single node) forwards AddNode from a follower.
  ClusterApi(ApiContext ctx, replication::RaftReplicator* raft, PeerClient* peers)
      : ctx_(ctx), raft_(raft), peers_(peers) {}
  grpc::Status Status(grpc::ServerContext*, const quiver::v1::ClusterStatusRequest*,
                      quiver::v1::ClusterStatusResponse*) override;
  grpc::Status TransferLeader(grpc::ServerContext*, const quiver::v1::TransferLeaderRequest*,
                              quiver::v1::TransferLeaderResponse*) override;
  grpc::Status RemoveNode(grpc::ServerContext*, const quiver::v1::RemoveNodeRequest*,
                          quiver::v1::RemoveNodeResponse*) override;
  grpc::Status AddNode(grpc::ServerContext*, const quiver::v1::AddNodeRequest*, quiver::v1::AddNodeResponse*) override;
  grpc::Status CreateBackup(grpc::ServerContext*, const quiver::v1::CreateBackupRequest*,
                            quiver::v1::CreateBackupResponse*) override;
  grpc::Status ListBackups(grpc::ServerContext*, const quiver::v1::ListBackupsRequest*,
                           quiver::v1::ListBackupsResponse*) override;
  grpc::Status RestoreBackup(grpc::ServerContext*, const quiver::v1::RestoreBackupRequest*,
                             quiver::v1::RestoreBackupResponse*) override;

 private:
  ApiContext ctx_;
  replication::RaftReplicator* raft_;
  PeerClient* peers_;
  std::mutex restore_mu_;  // one RestoreBackup at a time: they share the scratch directory
};

}  // namespace quiver::service
