// The internal peer port (default 7701): Raft messages between nodes and
// writes forwarded from followers to the leader. Separate from the public API
// (its own gRPC server, no API keys; bind it to a private network).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>

#include "quiver/internal/v1/raft.grpc.pb.h"
#include "replication/replicator.h"

namespace quiver::service {

/// Parses "1=host:7701,2=host:7701,…" (ids > 0, unique). Empty text: no peers.
Result<std::map<replication::raft::NodeId, std::string>> ParsePeers(const std::string& text);

/// The id a new cluster records: the same on every initial node, derived from
/// its peers list ("peers-" + a hash); a single node gets a random one.
std::string NewClusterId(const std::map<replication::raft::NodeId, std::string>& peers);

void ToProto(const replication::raft::Message& m, quiver::internal::v1::RaftMessage* out);
/// `messages` and `cluster_id` as the bytes of a RaftBatch (what Peer.Send
/// receives). Entry data of kSharedEntryBytes or more is not copied: slices of
/// the buffer hold it, shared with the Raft log, until gRPC has sent it.
grpc::ByteBuffer EncodeRaftBatch(const std::vector<replication::raft::Message>& messages,
                                 const std::string& cluster_id);
inline constexpr size_t kSharedEntryBytes = 16 * 1024;
/// Validates every field that could crash or mislead the core.
Result<replication::raft::Message> FromProto(const quiver::internal::v1::RaftMessage& m);
/// The same, moving the entries' data out of `m`.
Result<replication::raft::Message> FromProto(quiver::internal::v1::RaftMessage&& m);

/// Test-only network faults (config fault_injection): the peers cut off
/// from this node, whose traffic is dropped both ways; and a lossy, slow
/// link for what this node sends (each Raft message dropped with some
/// probability, each batch delayed).
class PeerFaults {
 public:
  void Cut(std::set<replication::raft::NodeId> peers) {
    std::lock_guard lock(mu_);
    cut_ = std::move(peers);
  }
  bool IsCut(replication::raft::NodeId peer) const {
    std::lock_guard lock(mu_);
    return cut_.contains(peer);
  }
  void SetLossy(double drop_rate, std::chrono::milliseconds delay) {
    std::lock_guard lock(mu_);
    drop_rate_ = drop_rate;
    delay_ = delay;
  }
  /// True for the share of outgoing messages a lossy link loses.
  bool DropNow() {
    std::lock_guard lock(mu_);
    return drop_rate_ > 0 && std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < drop_rate_;
  }
  std::chrono::milliseconds delay() const {
    std::lock_guard lock(mu_);
    return delay_;
  }

 private:
  mutable std::mutex mu_;
  std::set<replication::raft::NodeId> cut_;
  double drop_rate_ = 0;
  std::chrono::milliseconds delay_{0};
  std::mt19937_64 rng_{std::random_device()()};
};

/// Sends Raft messages and forwards writes to the other nodes: one channel
/// and one sender thread per peer, each with a bounded queue (a peer that is
/// down costs memory up to that bound, then its messages are dropped — Raft
/// resends what matters).
class PeerClient final : public replication::RaftTransport, public replication::ProposalForwarder {
 public:
  PeerClient(replication::raft::NodeId self, const std::map<replication::raft::NodeId, std::string>& peers,
             uint64_t max_message_bytes, std::shared_ptr<grpc::ChannelCredentials> credentials);
  ~PeerClient() override;

  void Send(std::vector<replication::raft::Message> messages) override;
  void SetClusterId(std::string cluster_id) override;
  Result<uint64_t> Forward(replication::raft::NodeId leader, std::string command,
                           replication::Clock::time_point deadline) override;
  Status SendSnapshot(const replication::raft::Message& message, const std::string& dir) override;
  void CancelSnapshots() override;
  /// A member added at run time (or moved): starts its channel and sender.
  void SetPeerAddress(replication::raft::NodeId node, const std::string& address) override;
  /// Asks the leader to add a node (Cluster.AddNode sent to a follower).
  Result<uint64_t> ForwardAddMember(replication::raft::NodeId leader, replication::raft::NodeId node,
                                    const std::string& address, replication::Clock::time_point deadline);
  /// Cancels forwarded writes in flight and refuses new ones (shutdown).
  void CancelForwards();
  /// Tests: drop (or delay) what `faults` says. Set before Start.
  void set_faults(PeerFaults* faults) { faults_ = faults; }
  /// Stops the sender threads (queued messages are dropped). Idempotent.
  void Stop();

 private:
  struct Peer {
    std::mutex mu;  // address, channel, stub and queue
    std::string address;
    std::shared_ptr<grpc::Channel> channel;  // Send calls it by name with EncodeRaftBatch's bytes
    std::shared_ptr<quiver::internal::v1::Peer::Stub> stub;
    std::condition_variable cv;
    std::deque<replication::raft::Message> queue;
    std::thread sender;
    std::string last_refusal;  // sender thread only
  };
  void SenderLoop(Peer* peer);
  // Null if `node` has no address here.
  Peer* FindPeer(replication::raft::NodeId node) const;
  static std::shared_ptr<quiver::internal::v1::Peer::Stub> StubOf(Peer* peer);
  // Points `peer` (its mutex held, or not yet shared) at `address`.
  void ConnectLocked(Peer* peer, const std::string& address) const;
  // One Send call of `request` on `channel`: until it completes, its
  // deadline passes, or Stop() cancels it.
  grpc::Status SendBatch(const std::shared_ptr<grpc::Channel>& channel, const grpc::ByteBuffer& request) const;
  // Adds a peer and starts its sender thread. Requires peers_mu_ held exclusively.
  void AddPeerLocked(replication::raft::NodeId node, const std::string& address);
  // Calls `call` with a registered context (CancelForwards cancels it).
  template <typename Call>
  grpc::Status ForwardCall(replication::Clock::time_point deadline, Call call);
  // One request to the leader: fault-injection cut, known address, this
  // node's id and cluster id stamped on `req`, the deadline, cancellation at
  // shutdown; an error names the leader. `rpc(stub, ctx, req, resp)` makes the call.
  template <typename Request, typename Response, typename Rpc>
  Status CallLeader(replication::raft::NodeId leader, Request* req, Response* resp,
                    replication::Clock::time_point deadline, Rpc rpc);

  // UNAVAILABLE if fault injection cuts `node` off.
  Status CheckNotCut(replication::raft::NodeId node) const;

  replication::raft::NodeId self_;
  uint64_t max_message_bytes_;
  PeerFaults* faults_ = nullptr;
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  grpc::ChannelArguments channel_args_;
  // Peers are added (SetPeerAddress), never removed: Peer pointers stay valid.
  mutable std::shared_mutex peers_mu_;
  std::map<replication::raft::NodeId, std::unique_ptr<Peer>> peers_;
  std::atomic<bool> stopping_{false};
  std::mutex cluster_id_mu_;
  std::string cluster_id_;
  std::mutex forwards_mu_;
  std::set<grpc::ClientContext*> forwards_;  // in flight, for CancelForwards
  bool forwards_cancelled_ = false;
  grpc::ClientContext* snapshot_call_ = nullptr;  // under forwards_mu_
  bool snapshots_cancelled_ = false;
};

/// The server side: hands Raft messages to the replicator, proposes
/// forwarded writes on this node.
/// Send and Forward read their own requests (the "streamed unary" form of
/// the methods, the same calls on the wire), so the request is the call's to
/// move entries or the command out of.
class PeerService final
    : public quiver::internal::v1::Peer::WithStreamedUnaryMethod_Forward<
          quiver::internal::v1::Peer::WithStreamedUnaryMethod_Send<quiver::internal::v1::Peer::Service>> {
 public:
  /// `faults` (tests, may be null): requests from peers it cuts off are refused.
  PeerService(replication::raft::NodeId self, replication::RaftReplicator* replicator,
              const PeerFaults* faults = nullptr)
      : self_(self), replicator_(replicator), faults_(faults) {}

  grpc::Status StreamedSend(
      grpc::ServerContext* ctx,
      grpc::ServerUnaryStreamer<quiver::internal::v1::RaftBatch, quiver::internal::v1::RaftBatchAck>* call) override;
  grpc::Status StreamedForward(
      grpc::ServerContext* ctx,
      grpc::ServerUnaryStreamer<quiver::internal::v1::ForwardRequest, quiver::internal::v1::ForwardResponse>* call)
      override;
  grpc::Status AddMember(grpc::ServerContext* ctx, const quiver::internal::v1::AddMemberRequest* req,
                         quiver::internal::v1::AddMemberResponse* resp) override;
  /// Stages the streamed files in a new directory of the replicator's,
  /// checking every name, size and checksum, then hands them over
  /// (RaftReplicator::ReceiveSnapshot). Anything wrong: the directory is
  /// removed and the stream refused (INVALID_ARGUMENT or DATA_LOSS).
  grpc::Status InstallSnapshot(grpc::ServerContext* ctx,
                               grpc::ServerReader<quiver::internal::v1::SnapshotChunk>* reader,
                               quiver::internal::v1::SnapshotAck* resp) override;

 private:
  // UNAVAILABLE if fault injection cuts this sender off.
  grpc::Status RefuseIfCut(replication::raft::NodeId from) const;

  replication::raft::NodeId self_;
  replication::RaftReplicator* replicator_;
  const PeerFaults* faults_;
};

}  // namespace quiver::service
