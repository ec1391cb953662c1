#include "service/peer.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "common/encoding.h"
#include "common/thread_name.h"
#include "service/grpc_status.h"

namespace quiver::service {

using replication::raft::NodeId;
namespace pb = quiver::internal::v1;
namespace raft = replication::raft;

namespace {
// Queued messages per peer before the oldest are dropped.
constexpr size_t kMaxQueuedMessages = 4096;
// One Send RPC's deadline: bounds how long Stop() waits for a sender.
constexpr auto kSendDeadline = std::chrono::milliseconds(1000);
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);
// A snapshot stream's deadline: a large state takes minutes; a receiver that
// stops reading ends the call here (shutdown ends it sooner: CancelSnapshots).
constexpr auto kSnapshotDeadline = std::chrono::minutes(30);
// Bytes of file data per snapshot chunk (and at most half a message).
constexpr size_t kSnapshotChunkBytes = 1 << 20;
// Files one snapshot may hold: the state's SST files and one per segment.
constexpr size_t kMaxSnapshotFiles = 1'000'000;
}  // namespace

Result<std::map<NodeId, std::string>> ParsePeers(const std::string& text) {
  std::map<NodeId, std::string> peers;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(pos, end - pos);
    pos = end + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    NodeId id = 0;
    if (eq == std::string::npos || std::from_chars(item.data(), item.data() + eq, id).ptr != item.data() + eq ||
        id == 0) {
      return Status::InvalidArgument("peers: '" + item + "' is not <node id>=<host:port> with a node id above 0");
    }
    const std::string address = item.substr(eq + 1);
    if (address.find(':') == std::string::npos) {
      return Status::InvalidArgument("peers: address '" + address + "' of node " + std::to_string(id) +
                                     " is not host:port");
    }
    if (!peers.emplace(id, address).second) {
      return Status::InvalidArgument("peers: node " + std::to_string(id) + " is listed twice");
    }
  }
  return peers;
}

std::string NewClusterId(const std::map<NodeId, std::string>& peers) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a over the canonical list
  if (peers.empty()) {
    h ^= std::random_device()();
    h = (h << 32) ^ std::random_device()();
  }
  for (const auto& [id, address] : peers) {
    for (char c : std::to_string(id) + "=" + address + ",") h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return (peers.empty() ? "single-" : "peers-") + std::string(hex);
}

namespace {
// e's fields but its data.
void SetEntryWithoutData(const storage::LogEntry& e, pb::RaftEntry* out) {
  out->set_index(e.index);
  out->set_term(e.term);
  out->set_type(static_cast<uint32_t>(e.type));
}

// Every field of `m` but its entries.
void ToProtoWithoutEntries(const raft::Message& m, pb::RaftMessage* out) {
  out->set_type(static_cast<uint32_t>(m.type));
  out->set_from(m.from);
  out->set_to(m.to);
  out->set_term(m.term);
  out->set_log_term(m.log_term);
  out->set_index(m.index);
  out->set_commit(m.commit);
  out->set_reject(m.reject);
  out->set_reject_hint(m.reject_hint);
  if (m.snapshot.index != 0) {
    auto* s = out->mutable_snapshot();
    s->set_index(m.snapshot.index);
    s->set_term(m.snapshot.term);
    for (NodeId v : m.snapshot.conf.voters) s->add_voters(v);
    for (NodeId l : m.snapshot.conf.learners) s->add_learners(l);
  }
  out->set_context(m.context);
}

// The bytes of a RaftBatch as slices: small pieces copied together, large
// entry data referenced (each slice keeps its EntryData alive).
class SliceWriter {
 public:
  std::string* text() { return &text_; }
  void Share(const storage::EntryData& data) {
    Flush();
    auto* kept = new storage::EntryData(data);
    // gRPC only reads a slice it sends; the cast is for its C signature.
    slices_.emplace_back(const_cast<char*>(kept->data()), kept->size(),
                         [](void* p) { delete static_cast<storage::EntryData*>(p); }, kept);
  }
  grpc::ByteBuffer Finish() {
    Flush();
    return grpc::ByteBuffer(slices_.data(), slices_.size());
  }

 private:
  void Flush() {
    if (text_.empty()) return;
    slices_.emplace_back(text_.data(), text_.size());  // copies
    text_.clear();
  }
  std::string text_;
  std::vector<grpc::Slice> slices_;
};

// A length-delimited field's tag and length; its bytes follow.
void PutFieldHeader(std::string* out, int field, uint64_t length) {
  using google::protobuf::internal::WireFormatLite;
  using google::protobuf::io::CodedOutputStream;
  uint8_t buf[2 * 10];
  uint8_t* end = CodedOutputStream::WriteVarint32ToArray(
      WireFormatLite::MakeTag(field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED), buf);
  end = CodedOutputStream::WriteVarint64ToArray(length, end);
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(end - buf));
}
}  // namespace

void ToProto(const raft::Message& m, pb::RaftMessage* out) {
  ToProtoWithoutEntries(m, out);
  for (const auto& e : m.entries) {
    pb::RaftEntry* pe = out->add_entries();
    SetEntryWithoutData(e, pe);
    pe->set_data(e.data.data(), e.data.size());
  }
}

// The wire format lets a message's fields come in any order and repeated
// fields in pieces, so each RaftMessage is written as its other fields, then
// one entries field per entry: the entry's other fields, then its data.
// Protobuf parses that as ToProto's message (the round-trip test checks it).
grpc::ByteBuffer EncodeRaftBatch(const std::vector<raft::Message>& messages, const std::string& cluster_id) {
  SliceWriter out;
  for (const raft::Message& m : messages) {
    pb::RaftMessage head;
    ToProtoWithoutEntries(m, &head);
    const std::string head_bytes = head.SerializeAsString();
    std::vector<std::string> entry_heads;  // each entry's bytes before its data
    entry_heads.reserve(m.entries.size());
    size_t message_bytes = head_bytes.size();
    for (const storage::LogEntry& e : m.entries) {
      pb::RaftEntry entry;
      SetEntryWithoutData(e, &entry);
      std::string fields = entry.SerializeAsString();
      if (!e.data.empty()) PutFieldHeader(&fields, pb::RaftEntry::kDataFieldNumber, e.data.size());
      std::string entry_head;
      PutFieldHeader(&entry_head, pb::RaftMessage::kEntriesFieldNumber, fields.size() + e.data.size());
      entry_head += fields;
      message_bytes += entry_head.size() + e.data.size();
      entry_heads.push_back(std::move(entry_head));
    }
    PutFieldHeader(out.text(), pb::RaftBatch::kMessagesFieldNumber, message_bytes);
    *out.text() += head_bytes;
    for (size_t i = 0; i < m.entries.size(); ++i) {
      *out.text() += entry_heads[i];
      const storage::EntryData& data = m.entries[i].data;
      if (data.size() >= kSharedEntryBytes) {
        out.Share(data);
      } else {
        out.text()->append(data.data(), data.size());
      }
    }
  }
  pb::RaftBatch tail;
  tail.set_cluster_id(cluster_id);
  *out.text() += tail.SerializeAsString();
  return out.Finish();
}

namespace {
// FromProto; moves the entries' data out of `owned` when it is given (`m`
// is then *owned).
Result<raft::Message> FromProto(const pb::RaftMessage& m, pb::RaftMessage* owned) {
  if (m.type() > static_cast<uint32_t>(raft::MessageType::kReadIndexResponse)) {
    return Status::InvalidArgument("raft message has unknown type " + std::to_string(m.type()));
  }
  if (m.from() == raft::kNoNode || m.to() == raft::kNoNode) {
    return Status::InvalidArgument("raft message without sender or receiver");
  }
  raft::Message out;
  out.type = static_cast<raft::MessageType>(m.type());
  out.from = m.from();
  out.to = m.to();
  out.term = m.term();
  out.log_term = m.log_term();
  out.index = m.index();
  out.entries.reserve(static_cast<size_t>(m.entries_size()));
  uint64_t expect = m.index() + 1;
  for (int i = 0; i < m.entries_size(); ++i) {
    const pb::RaftEntry& e = m.entries(i);
    if (e.type() > static_cast<uint32_t>(storage::EntryType::kConfChange)) {
      return Status::InvalidArgument("raft entry has unknown type " + std::to_string(e.type()));
    }
    // Entries follow the index they are appended after, without gaps.
    if (e.index() != expect++ || e.term() == 0) {
      return Status::InvalidArgument("raft entries are not contiguous after index " + std::to_string(m.index()));
    }
    storage::EntryData data =
        owned != nullptr ? storage::EntryData(std::move(*owned->mutable_entries(i)->mutable_data())) : e.data();
    out.entries.push_back({e.index(), e.term(), static_cast<storage::EntryType>(e.type()), std::move(data)});
  }
  out.commit = m.commit();
  out.reject = m.reject();
  out.reject_hint = m.reject_hint();
  if (m.has_snapshot()) {
    out.snapshot.index = m.snapshot().index();
    out.snapshot.term = m.snapshot().term();
    for (uint64_t v : m.snapshot().voters()) out.snapshot.conf.voters.insert(v);
    for (uint64_t l : m.snapshot().learners()) out.snapshot.conf.learners.insert(l);
    if (out.snapshot.conf.voters.contains(raft::kNoNode) || out.snapshot.conf.learners.contains(raft::kNoNode)) {
      return Status::InvalidArgument("raft snapshot names node 0");
    }
  }
  out.context = m.context();
  return out;
}
}  // namespace

Result<raft::Message> FromProto(const pb::RaftMessage& m) { return FromProto(m, nullptr); }

Result<raft::Message> FromProto(pb::RaftMessage&& m) { return FromProto(m, &m); }

PeerClient::PeerClient(NodeId self, const std::map<NodeId, std::string>& peers, uint64_t max_message_bytes,
                       std::shared_ptr<grpc::ChannelCredentials> credentials)
    : self_(self), max_message_bytes_(max_message_bytes), credentials_(std::move(credentials)) {
  channel_args_.SetMaxReceiveMessageSize(static_cast<int>(max_message_bytes));
  channel_args_.SetMaxSendMessageSize(static_cast<int>(max_message_bytes));
  // Reconnect quickly after a peer restarts (the default backoff reaches minutes).
  channel_args_.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  std::unique_lock lock(peers_mu_);
  for (const auto& [id, address] : peers) {
    if (id != self) AddPeerLocked(id, address);
  }
}

void PeerClient::ConnectLocked(Peer* peer, const std::string& address) const {
  grpc::ChannelArguments args = channel_args_;
  peer->address = address;
  peer->channel = grpc::CreateCustomChannel(address, credentials_, args);
  peer->stub = pb::Peer::NewStub(peer->channel);
}

void PeerClient::AddPeerLocked(NodeId node, const std::string& address) {
  auto peer = std::make_unique<Peer>();
  ConnectLocked(peer.get(), address);
  Peer* raw = peer.get();
  peers_[node] = std::move(peer);
  raw->sender = std::thread([this, raw] {
    NameThisThread("peer-send");
    SenderLoop(raw);
  });
}

PeerClient::Peer* PeerClient::FindPeer(NodeId node) const {
  std::shared_lock lock(peers_mu_);
  auto it = peers_.find(node);
  return it == peers_.end() ? nullptr : it->second.get();
}

std::shared_ptr<pb::Peer::Stub> PeerClient::StubOf(Peer* peer) {
  std::lock_guard lock(peer->mu);
  return peer->stub;
}

void PeerClient::SetPeerAddress(NodeId node, const std::string& address) {
  if (node == self_) return;
  std::unique_lock lock(peers_mu_);
  if (stopping_) return;
  auto it = peers_.find(node);
  if (it == peers_.end()) {
    AddPeerLocked(node, address);
    spdlog::info("peer {} is at {}", node, address);
    return;
  }
  Peer& peer = *it->second;
  std::lock_guard peer_lock(peer.mu);
  if (peer.address == address) return;
  ConnectLocked(&peer, address);
  spdlog::info("peer {} moved to {}", node, address);
}

PeerClient::~PeerClient() { Stop(); }

void PeerClient::Stop() {
  std::unique_lock peers_lock(peers_mu_);
  stopping_ = true;
  for (auto& [id, peer] : peers_) {
    {
      std::lock_guard lock(peer->mu);
      peer->queue.clear();
    }
    peer->cv.notify_all();
  }
  for (auto& [id, peer] : peers_) {
    if (peer->sender.joinable()) peer->sender.join();
  }
}

void PeerClient::CancelForwards() {
  std::lock_guard lock(forwards_mu_);
  forwards_cancelled_ = true;
  for (grpc::ClientContext* ctx : forwards_) ctx->TryCancel();
}

void PeerClient::SetClusterId(std::string cluster_id) {
  std::lock_guard lock(cluster_id_mu_);
  cluster_id_ = std::move(cluster_id);
}

Status PeerClient::CheckNotCut(NodeId node) const {
  if (faults_ != nullptr && faults_->IsCut(node)) {
    return Status::Unavailable("node " + std::to_string(node) + " is cut off (fault injection)");
  }
  return Status::Ok();
}

void PeerClient::Send(std::vector<raft::Message> messages) {
  for (raft::Message& m : messages) {
    if (!CheckNotCut(m.to).ok() || (faults_ != nullptr && faults_->DropNow())) continue;
    Peer* found = FindPeer(m.to);
    if (found == nullptr) continue;  // a member without an address (not configured here)
    Peer& peer = *found;
    {
      std::lock_guard lock(peer.mu);
      if (peer.queue.size() >= kMaxQueuedMessages) peer.queue.pop_front();  // the newest state matters most
      peer.queue.push_back(std::move(m));
    }
    peer.cv.notify_one();
  }
}

void PeerClient::SenderLoop(Peer* peer) {
  std::chrono::milliseconds backoff{0};
  while (!stopping_) {
    std::vector<raft::Message> batch;
    std::shared_ptr<grpc::Channel> channel;
    std::string address;
    {
      std::unique_lock lock(peer->mu);
      peer->cv.wait(lock, [&] { return stopping_.load() || !peer->queue.empty(); });
      if (stopping_) return;
      uint64_t bytes = 0;
      while (!peer->queue.empty() && (batch.empty() || bytes < max_message_bytes_ / 2)) {
        for (const auto& e : peer->queue.front().entries) bytes += e.data.size() + 32;
        batch.push_back(std::move(peer->queue.front()));
        peer->queue.pop_front();
      }
      channel = peer->channel;
      address = peer->address;
    }
    if (faults_ != nullptr && faults_->delay().count() > 0) {  // a slow link (fault injection)
      std::unique_lock lock(peer->mu);
      peer->cv.wait_for(lock, faults_->delay(), [&] { return stopping_.load(); });
    }
    std::string cluster_id;
    {
      std::lock_guard lock(cluster_id_mu_);
      cluster_id = cluster_id_;
    }
    // Large entry data goes out without a copy per follower: the request's
    // slices share it with the Raft log.
    grpc::Status st = SendBatch(channel, EncodeRaftBatch(batch, cluster_id));
    if (st.ok()) {
      backoff = std::chrono::milliseconds(0);
      continue;
    }
    // The peer is down or refusing: wait a little (watching shutdown) so a
    // dead peer does not spin this thread; Raft resends what was lost.
    backoff = std::min(kMaxBackoff, std::max(std::chrono::milliseconds(50), backoff * 2));
    if (st.error_code() == grpc::StatusCode::FAILED_PRECONDITION || st.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
      // A configuration error, not a network one: say it (once per change).
      if (st.error_message() != peer->last_refusal) {
        spdlog::warn("peer {} refuses this node's messages: {}", address, st.error_message());
        peer->last_refusal = st.error_message();
      }
    } else {
      spdlog::debug("peer {}: {} (retrying in {} ms)", address, st.error_message(), backoff.count());
    }
    std::unique_lock lock(peer->mu);
    peer->cv.wait_for(lock, backoff, [&] { return stopping_.load(); });
  }
}

grpc::Status PeerClient::SendBatch(const std::shared_ptr<grpc::Channel>& channel, const grpc::ByteBuffer& request) const {
  static const std::string kMethod = "/" + std::string(pb::Peer::service_full_name()) + "/Send";
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kSendDeadline);
  grpc::ByteBuffer response;  // an empty RaftBatchAck
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  grpc::Status status;
  stub.UnaryCall(&ctx, kMethod, grpc::StubOptions(), &request, &response, [&](grpc::Status st) {
    std::lock_guard lock(mu);
    status = std::move(st);
    done = true;
    cv.notify_one();
  });
  // gRPC completes every call by its deadline (kSendDeadline); Stop() need
  // not wait that long: the call is cancelled, and completes, once it stops.
  std::unique_lock lock(mu);
  while (!cv.wait_for(lock, std::chrono::milliseconds(20), [&] { return done; })) {
    if (stopping_) ctx.TryCancel();
  }
  return status;
}

template <typename Call>
grpc::Status PeerClient::ForwardCall(replication::Clock::time_point deadline, Call call) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                                          deadline - replication::Clock::now()));
  {
    std::lock_guard lock(forwards_mu_);
    if (forwards_cancelled_) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "node is shutting down");
    forwards_.insert(&ctx);
  }
  grpc::Status st = call(&ctx);
  std::lock_guard lock(forwards_mu_);
  forwards_.erase(&ctx);
  return st;
}

template <typename Request, typename Response, typename Rpc>
Status PeerClient::CallLeader(NodeId leader, Request* req, Response* resp, replication::Clock::time_point deadline,
                              Rpc rpc) {
  QUIVER_RETURN_IF_ERROR(CheckNotCut(leader));
  Peer* peer = FindPeer(leader);
  if (peer == nullptr) {
    return Status::Unavailable("the leader is node " + std::to_string(leader) + ", whose address is not known here");
  }
  req->set_from(self_);
  {
    std::lock_guard lock(cluster_id_mu_);
    req->set_cluster_id(cluster_id_);
  }
  auto stub = StubOf(peer);
  grpc::Status st = ForwardCall(deadline, [&](grpc::ClientContext* ctx) { return rpc(*stub, ctx, *req, resp); });
  if (!st.ok()) {
    Status s = FromGrpc(st);
    return Status(s.code(), "forwarded to the leader (node " + std::to_string(leader) + "): " + s.message());
  }
  return Status::Ok();
}

Result<uint64_t> PeerClient::Forward(NodeId leader, std::string command, replication::Clock::time_point deadline) {
  pb::ForwardRequest req;
  req.set_command(std::move(command));
  pb::ForwardResponse resp;
  QUIVER_RETURN_IF_ERROR(CallLeader(leader, &req, &resp, deadline, [](auto& stub, auto* ctx, const auto& r, auto* out) {
    return stub.Forward(ctx, r, out);
  }));
  return resp.index();
}

Result<uint64_t> PeerClient::ForwardAddMember(NodeId leader, NodeId node, const std::string& address,
                                              replication::Clock::time_point deadline) {
  pb::AddMemberRequest req;
  req.set_node_id(node);
  req.set_peer_address(address);
  pb::AddMemberResponse resp;
  QUIVER_RETURN_IF_ERROR(CallLeader(leader, &req, &resp, deadline, [](auto& stub, auto* ctx, const auto& r, auto* out) {
    return stub.AddMember(ctx, r, out);
  }));
  return resp.log_index();
}

Status PeerClient::SendSnapshot(const raft::Message& message, const std::string& dir) {
  QUIVER_RETURN_IF_ERROR(CheckNotCut(message.to));
  Peer* peer = FindPeer(message.to);
  if (peer == nullptr) return Status::Unavailable("node " + std::to_string(message.to) + " has no known address");
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.is_regular_file()) files.push_back(entry.path().filename());
  }
  if (ec) return Status::IOError("listing snapshot files in " + dir + ": " + ec.message());
  std::sort(files.begin(), files.end());

  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + kSnapshotDeadline);
  {
    std::lock_guard lock(forwards_mu_);
    if (snapshots_cancelled_) return Status::Cancelled("node is shutting down");
    snapshot_call_ = &ctx;
  }
  struct Unregister {
    PeerClient* client;
    ~Unregister() {
      std::lock_guard lock(client->forwards_mu_);
      client->snapshot_call_ = nullptr;
    }
  } unregister{this};

  pb::SnapshotAck ack;
  auto stub = StubOf(peer);
  auto writer = stub->InstallSnapshot(&ctx, &ack);
  pb::SnapshotChunk chunk;
  ToProto(message, chunk.mutable_message());
  {
    std::lock_guard lock(cluster_id_mu_);
    chunk.set_cluster_id(cluster_id_);
  }
  bool open = writer->Write(chunk);
  const size_t chunk_bytes = std::min<size_t>(kSnapshotChunkBytes, max_message_bytes_ / 2);
  std::string buffer(chunk_bytes, '\0');
  Status local;
  for (size_t f = 0; open && f < files.size(); ++f) {
    const std::string path = dir + "/" + files[f];
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      local = Status::IOError("cannot read " + path);
      break;
    }
    uint32_t crc = 0;
    uint64_t bytes = 0;
    while (open) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      const size_t n = static_cast<size_t>(in.gcount());
      if (n == 0) break;
      chunk.Clear();
      chunk.set_file(files[f]);
      chunk.set_data(buffer.data(), n);
      crc = ChecksumExtend(crc, std::string_view(buffer.data(), n));
      bytes += n;
      open = writer->Write(chunk);
    }
    if (in.bad()) local = Status::IOError("reading " + path);
    if (!local.ok()) break;
    chunk.Clear();
    chunk.set_file(files[f]);
    chunk.set_file_end(true);
    chunk.set_file_bytes(bytes);
    chunk.set_file_crc32(crc);
    if (open) open = writer->Write(chunk);
  }
  if (!local.ok()) {
    ctx.TryCancel();
    (void)writer->Finish();
    return local;
  }
  if (open) writer->WritesDone();
  grpc::Status st = writer->Finish();
  if (!st.ok()) {
    Status s = FromGrpc(st);
    return Status(s.code(), "snapshot to node " + std::to_string(message.to) + ": " + s.message());
  }
  return Status::Ok();
}

void PeerClient::CancelSnapshots() {
  std::lock_guard lock(forwards_mu_);
  snapshots_cancelled_ = true;
  if (snapshot_call_ != nullptr) snapshot_call_->TryCancel();
}

namespace {
Status CheckCluster(const std::string& theirs, const std::string& ours) {
  if (theirs == ours) return Status::Ok();
  return Status::FailedPrecondition("a node of cluster '" + theirs + "' reached a node of cluster '" + ours +
                                    "': check the peers lists and that no data directory was reused");
}
}  // namespace

grpc::Status PeerService::RefuseIfCut(NodeId from) const {
  if (faults_ != nullptr && faults_->IsCut(from)) {
    return ToGrpc(Status::Unavailable("node " + std::to_string(from) + " is cut off (fault injection)"));
  }
  return grpc::Status::OK;
}

grpc::Status PeerService::StreamedSend(grpc::ServerContext*,
                                       grpc::ServerUnaryStreamer<pb::RaftBatch, pb::RaftBatchAck>* call) {
  pb::RaftBatch batch;  // the entries' data is moved out of it rather than copied
  if (Status read = ReadUnaryRequest(call, &batch); !read.ok()) return ToGrpc(read);
  if (Status st = CheckCluster(batch.cluster_id(), replicator_->cluster_id()); !st.ok()) return ToGrpc(st);
  for (pb::RaftMessage& pm : *batch.mutable_messages()) {
    if (grpc::Status cut = RefuseIfCut(pm.from()); !cut.ok()) return cut;
    Result<raft::Message> m = FromProto(std::move(pm));
    if (!m.ok()) return ToGrpc(m.status());
    if (m->to != self_) {
      return ToGrpc(Status::InvalidArgument("raft message for node " + std::to_string(m->to) + " reached node " +
                                            std::to_string(self_) + ": check the peers list"));
    }
    replicator_->Receive(std::move(m).value());
  }
  (void)call->Write(pb::RaftBatchAck());  // a peer gone meanwhile resends what it still needs
  return grpc::Status::OK;
}

namespace {
// The caller's deadline (30 s if it set none) on our clock.
replication::Clock::time_point DeadlineOf(const grpc::ServerContext& ctx) {
  if (ctx.deadline() == std::chrono::system_clock::time_point::max()) {
    return replication::Clock::now() + std::chrono::seconds(30);
  }
  return replication::Clock::now() + std::chrono::duration_cast<replication::Clock::duration>(
                                         ctx.deadline() - std::chrono::system_clock::now());
}

// A staged file name must stay inside the staging directory.
bool IsPlainFileName(const std::string& name) {
  if (name.empty() || name.size() > 255 || name == "." || name == "..") return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}

// Writes the files of one snapshot stream into `dir`, checking each.
Status StageSnapshotFiles(grpc::ServerReader<pb::SnapshotChunk>* reader, const std::string& dir) {
  pb::SnapshotChunk chunk;
  std::string current;  // the file being written; empty between files
  std::ofstream out;
  uint32_t crc = 0;
  uint64_t bytes = 0;
  std::set<std::string> done;
  while (reader->Read(&chunk)) {
    if (chunk.has_message()) return Status::InvalidArgument("snapshot stream carries a second Raft message");
    if (!IsPlainFileName(chunk.file())) {
      return Status::InvalidArgument("snapshot file name '" + chunk.file() + "' is not a plain file name");
    }
    if (current.empty()) {
      if (done.contains(chunk.file())) return Status::InvalidArgument("snapshot file " + chunk.file() + " sent twice");
      if (done.size() >= kMaxSnapshotFiles) return Status::InvalidArgument("snapshot has too many files");
      current = chunk.file();
      out.open(dir + "/" + current, std::ios::binary | std::ios::trunc);
      if (!out) return Status::IOError("cannot create " + dir + "/" + current);
      crc = 0;
      bytes = 0;
    } else if (chunk.file() != current) {
      return Status::InvalidArgument("snapshot file " + current + " ends without its size and checksum");
    }
    out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    crc = ChecksumExtend(crc, chunk.data());
    bytes += chunk.data().size();
    if (!out) return Status::IOError("writing " + dir + "/" + current);
    if (chunk.file_end()) {
      out.flush();
      out.close();
      if (!out) return Status::IOError("writing " + dir + "/" + current);
      if (bytes != chunk.file_bytes() || crc != chunk.file_crc32()) {
        return Status::Corruption("snapshot file " + current + " arrived damaged: " + std::to_string(bytes) +
                                " bytes with CRC-32 " + std::to_string(crc) + ", sent " +
                                std::to_string(chunk.file_bytes()) + " bytes with " +
                                std::to_string(chunk.file_crc32()));
      }
      done.insert(current);
      current.clear();
    }
  }
  if (!current.empty()) return Status::InvalidArgument("snapshot stream ended inside file " + current);
  if (done.empty()) return Status::InvalidArgument("snapshot stream holds no files");
  return Status::Ok();
}
}  // namespace

grpc::Status PeerService::InstallSnapshot(grpc::ServerContext*, grpc::ServerReader<pb::SnapshotChunk>* reader,
                                          pb::SnapshotAck*) {
  pb::SnapshotChunk first;
  if (!reader->Read(&first)) return ToGrpc(Status::InvalidArgument("empty snapshot stream"));
  if (Status st = CheckCluster(first.cluster_id(), replicator_->cluster_id()); !st.ok()) return ToGrpc(st);
  if (!first.has_message()) return ToGrpc(Status::InvalidArgument("snapshot stream does not start with its message"));
  Result<raft::Message> m = FromProto(first.message());
  if (!m.ok()) return ToGrpc(m.status());
  if (grpc::Status cut = RefuseIfCut(m->from); !cut.ok()) return cut;
  if (m->type != raft::MessageType::kSnapshot || m->to != self_ || m->snapshot.index == 0 ||
      m->snapshot.conf.voters.empty()) {
    return ToGrpc(Status::InvalidArgument("snapshot stream for node " + std::to_string(m->to) + " reached node " +
                                          std::to_string(self_) + ", or its message is not a snapshot"));
  }
  Result<std::string> dir = replicator_->NewIncomingSnapshotDir(m->from, m->snapshot.index);
  if (!dir.ok()) return ToGrpc(dir.status());
  Status st = StageSnapshotFiles(reader, *dir);
  if (!st.ok()) {
    std::error_code ec;
    std::filesystem::remove_all(*dir, ec);
    spdlog::warn("snapshot {} from node {} refused: {}", m->snapshot.index, m->from, st.ToString());
    return ToGrpc(st);
  }
  spdlog::info("snapshot {} from node {} received", m->snapshot.index, m->from);
  replicator_->ReceiveSnapshot(std::move(m).value(), std::move(dir).value());
  return grpc::Status::OK;
}

grpc::Status PeerService::AddMember(grpc::ServerContext* ctx, const pb::AddMemberRequest* req,
                                    pb::AddMemberResponse* resp) {
  if (Status st = CheckCluster(req->cluster_id(), replicator_->cluster_id()); !st.ok()) return ToGrpc(st);
  if (grpc::Status cut = RefuseIfCut(req->from()); !cut.ok()) return cut;
  const auto deadline = DeadlineOf(*ctx);
  Result<uint64_t> index = replicator_->AddMember(req->node_id(), req->peer_address(), deadline);
  if (!index.ok()) return ToGrpc(index.status());
  resp->set_log_index(*index);
  return grpc::Status::OK;
}

grpc::Status PeerService::StreamedForward(grpc::ServerContext* ctx,
                                          grpc::ServerUnaryStreamer<pb::ForwardRequest, pb::ForwardResponse>* call) {
  pb::ForwardRequest req;  // the command is moved out of it rather than copied
  if (Status read = ReadUnaryRequest(call, &req); !read.ok()) return ToGrpc(read);
  if (Status st = CheckCluster(req.cluster_id(), replicator_->cluster_id()); !st.ok()) return ToGrpc(st);
  if (grpc::Status cut = RefuseIfCut(req.from()); !cut.ok()) return cut;
  const auto deadline = DeadlineOf(*ctx);
  Result<uint64_t> index = replicator_->ProposeLocal(std::move(*req.mutable_command()), deadline);
  if (!index.ok()) return ToGrpc(index.status());
  pb::ForwardResponse resp;
  resp.set_index(*index);
  (void)call->Write(resp);  // a forwarder gone meanwhile retries with the same request id, if it set one
  return grpc::Status::OK;
}

}  // namespace quiver::service
