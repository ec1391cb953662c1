// Three quiverd processes in one Raft group on localhost: writes through any
// node, linearizable reads on every node, failover after kill -9 of the
// leader, a restarted node catching up, and leadership handed over on SIGTERM.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "process_fixture.h"
#include "quiver/v1/cluster.grpc.pb.h"
#include "raw_call.h"
#include "test_util.h"
#include "tls_files.h"

namespace quiver::testing {
namespace {

using quiver::v1::CountRequest;
using quiver::v1::CountResponse;
using quiver::v1::CreateCollectionRequest;
using quiver::v1::CreateCollectionResponse;
using quiver::v1::UpsertRequest;
using quiver::v1::UpsertResponse;

// A port the kernel just handed out (and took back): free for the moment.
int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class Cluster {
 public:
  // `extra`: flags for every node; `per_node`: more flags for some; `start`:
  // start them all (and wait until each serves).
  explicit Cluster(int n, std::vector<std::string> extra = {},
                   std::map<int, std::vector<std::string>> per_node = {}, bool start = true) {
    std::string peers;
    std::vector<int> ports;
    for (int i = 1; i <= n; ++i) {
      ports.push_back(FreePort());
      peers += (peers.empty() ? "" : ",") + std::to_string(i) + "=127.0.0.1:" + std::to_string(ports.back());
    }
    for (int i = 1; i <= n; ++i) {
      // Each node its own work directory: ready files and logs are named per start.
      const std::string work = dir_.path() + "/node" + std::to_string(i);
      std::filesystem::create_directories(work);
      std::vector<std::string> flags{"--node-id", std::to_string(i), "--peers", peers, "--peer-listen",
                                     "127.0.0.1:" + std::to_string(ports[static_cast<size_t>(i - 1)]),
                                     "--raft-tick-ms", "50"};
      flags.insert(flags.end(), extra.begin(), extra.end());
      flags.insert(flags.end(), per_node[i].begin(), per_node[i].end());
      nodes_[i] = std::make_unique<QuiverdProcess>(work + "/data", work, flags);
    }
    peers_ = peers;
    ports_ = ports;
    if (!start) return;
    for (auto& [id, node] : nodes_) node->Start(/*wait_ready=*/false);
    for (auto& [id, node] : nodes_) node->WaitReady();
  }

  const std::string& peers() const { return peers_; }
  const std::string& dir() const { return dir_.path(); }

  QuiverdProcess& node(int id) { return *nodes_.at(id); }

  // The leader every running node in `among` agrees on, once they do (0 on timeout).
  int WaitForLeader(const std::vector<int>& among, std::chrono::seconds limit = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      std::set<uint64_t> leaders;
      for (int id : among) leaders.insert(Gauge(id, "quiver_raft_leader_id"));
      if (leaders.size() == 1 && *leaders.begin() != 0) {
        const int leader = static_cast<int>(*leaders.begin());
        if (std::find(among.begin(), among.end(), leader) != among.end() && Gauge(leader, "quiver_raft_is_leader") == 1) {
          return leader;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return 0;
  }

  uint64_t Gauge(int id, const std::string& name) { return GaugeOf(node(id), name); }

  // A metric of any quiverd (0 if it does not answer).
  static uint64_t GaugeOf(QuiverdProcess& process, const std::string& name) {
    httplib::Client admin("127.0.0.1", process.admin_port());
    admin.set_connection_timeout(1);
    auto res = admin.Get("/metrics");
    if (!res || res->status != 200) return 0;
    const std::string key = "\n" + name + " ";
    const auto pos = res->body.find(key);
    if (pos == std::string::npos) return 0;
    return std::stoull(res->body.substr(pos + key.size()));
  }

  int peer_port(int id) const { return ports_.at(static_cast<size_t>(id - 1)); }

 private:
  TempDir dir_;
  std::map<int, std::unique_ptr<QuiverdProcess>> nodes_;
  std::string peers_;
  std::vector<int> ports_;
};

// Retries UNAVAILABLE (no leader yet, or a leader change) like a client library.
template <typename Call>
grpc::Status Retry(Call call, std::chrono::seconds limit = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    grpc::Status st = call();
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE || std::chrono::steady_clock::now() > deadline) return st;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// Creates the 8-d L2 collection "c" through `node`, retrying UNAVAILABLE.
grpc::Status CreateCollection(QuiverdProcess& node) {
  CreateCollectionRequest create;
  create.mutable_config()->set_name("c");
  create.mutable_config()->set_dimension(8);
  create.mutable_config()->set_metric(quiver::v1::L2);
  return Retry([&] {
    CreateCollectionResponse resp;
    grpc::ClientContext ctx;
    return node.collections->Create(&ctx, create, &resp);
  });
}

grpc::Status Upsert(QuiverdProcess& node, uint64_t first_id, int n) {
  UpsertRequest req;
  req.set_collection("c");
  auto v = RandomVectors(static_cast<size_t>(n), 8, first_id);
  for (int i = 0; i < n; ++i) {
    auto* p = req.add_points();
    p->set_id(first_id + static_cast<uint64_t>(i));
    p->mutable_vector()->Add(v.begin() + i * 8, v.begin() + (i + 1) * 8);
  }
  return Retry([&] {
    UpsertResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return node.points->Upsert(&ctx, req, &resp);
  });
}

// One point (id, every coordinate `value`) in one call, without retries.
grpc::Status UpsertOnce(QuiverdProcess& node, uint64_t id, float value, std::chrono::seconds deadline) {
  UpsertRequest req;
  req.set_collection("c");
  auto* p = req.add_points();
  p->set_id(id);
  for (int j = 0; j < 8; ++j) p->add_vector(value);
  UpsertResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  return node.points->Upsert(&ctx, req, &resp);
}

grpc::Status TryCount(QuiverdProcess& node, quiver::v1::ReadConsistency consistency, uint64_t* count) {
  CountRequest req;
  req.set_collection("c");
  req.set_consistency(consistency);
  CountResponse resp;
  grpc::Status st = Retry([&] {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    return node.points->Count(&ctx, req, &resp);
  });
  *count = resp.count();
  return st;
}

uint64_t Count(QuiverdProcess& node, quiver::v1::ReadConsistency consistency = quiver::v1::LINEARIZABLE) {
  uint64_t count = 0;
  grpc::Status st = TryCount(node, consistency, &count);
  EXPECT_TRUE(st.ok()) << st.error_message();
  return count;
}

TEST(Cluster, ThreeNodesReplicateFailOverAndCatchUp) {
  Cluster c(3);
  const int first = c.WaitForLeader({1, 2, 3});
  ASSERT_NE(first, 0) << c.node(1).Log();
  EXPECT_EQ(c.Gauge(1, "quiver_raft_voters"), 3u);

  // Writes through any node (followers forward to the leader).
  const int follower = first % 3 + 1;
  grpc::Status st = CreateCollection(c.node(follower));
  ASSERT_TRUE(st.ok()) << st.error_message();
  for (int id = 1; id <= 3; ++id) ASSERT_TRUE(Upsert(c.node(id), 1000 * static_cast<uint64_t>(id), 50).ok());
  // Linearizable reads see all 150 on every node, followers included.
  for (int id = 1; id <= 3; ++id) EXPECT_EQ(Count(c.node(id)), 150u) << "node " << id;

  // kill -9 the leader: the other two elect a new one and keep writing.
  c.node(first).Kill(SIGKILL);
  std::vector<int> rest;
  for (int id = 1; id <= 3; ++id) {
    if (id != first) rest.push_back(id);
  }
  const int second = c.WaitForLeader(rest);
  ASSERT_NE(second, 0);
  ASSERT_NE(second, first);
  for (int id : rest) ASSERT_TRUE(Upsert(c.node(id), 10000 + 1000 * static_cast<uint64_t>(id), 50).ok());
  for (int id : rest) EXPECT_EQ(Count(c.node(id)), 250u) << "node " << id;

  // The killed node restarts from its disk and catches up.
  c.node(first).Start();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (Count(c.node(first), quiver::v1::EVENTUAL) != 250u && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(Count(c.node(first), quiver::v1::EVENTUAL), 250u) << c.node(first).Log();
  EXPECT_EQ(Count(c.node(first)), 250u);

  // SIGTERM on the leader hands leadership over before it exits.
  const int leader = c.WaitForLeader({1, 2, 3});
  ASSERT_NE(leader, 0);
  c.node(leader).Kill(SIGTERM);
  auto code = c.node(leader).WaitExit(std::chrono::seconds(10));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_NE(c.node(leader).Log().find("leadership handed over"), std::string::npos) << c.node(leader).Log();
  std::vector<int> others;
  for (int id = 1; id <= 3; ++id) {
    if (id != leader) others.push_back(id);
  }
  EXPECT_NE(c.WaitForLeader(others, std::chrono::seconds(5)), 0);
  ASSERT_TRUE(Upsert(c.node(others[0]), 50000, 10).ok());
  for (int id : others) EXPECT_EQ(Count(c.node(id)), 260u) << "node " << id;
}

// The peer port with mutual TLS: a cluster whose nodes share the CA works; a
// node with a certificate from another CA is never accepted as a peer.
std::unique_ptr<quiver::v1::Cluster::Stub> ClusterStub(QuiverdProcess& node) {
  return quiver::v1::Cluster::NewStub(
      grpc::CreateChannel("127.0.0.1:" + std::to_string(node.grpc_port()), grpc::InsecureChannelCredentials()));
}

// Waits until a metric of `node` reaches at least `value`.
bool WaitForGauge(QuiverdProcess& node, const std::string& name, uint64_t value,
                  std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (Cluster::GaugeOf(node, name) < value) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

// Waits until `node` holds `n` points (eventual reads: a node that catches up).
bool WaitForCount(QuiverdProcess& node, uint64_t n, std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    uint64_t count = 0;  // (NOT_FOUND until the collection reaches this node)
    if (TryCount(node, quiver::v1::EVENTUAL, &count).ok() && count == n) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// Cluster.RestoreBackup on a follower: the backup it took is written back
// through the leader's log, and every node ends up with the collection.
TEST(Cluster, ABackupRestoredOnAFollowerReachesEveryNode) {
  Cluster c(3);
  const int leader = c.WaitForLeader({1, 2, 3});
  ASSERT_NE(leader, 0);
  const int follower = leader % 3 + 1;
  ASSERT_TRUE(CreateCollection(c.node(leader)).ok());
  ASSERT_TRUE(Upsert(c.node(leader), 0, 200).ok());
  ASSERT_EQ(Count(c.node(follower)), 200u);  // the follower has applied them
  {
    quiver::v1::CreateBackupRequest req;
    req.set_name("b");
    quiver::v1::CreateBackupResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = ClusterStub(c.node(follower))->CreateBackup(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  {
    quiver::v1::DeleteCollectionRequest req;
    req.set_name("c");
    quiver::v1::DeleteCollectionResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(c.node(leader).collections->Delete(&ctx, req, &resp).ok());
  }
  quiver::v1::RestoreBackupRequest req;
  req.set_name("b");
  quiver::v1::RestoreBackupResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  grpc::Status st = ClusterStub(c.node(follower))->RestoreBackup(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << c.node(follower).Log();
  ASSERT_EQ(resp.collections_size(), 1);
  EXPECT_EQ(resp.collections(0).points(), 200u);
  for (int id = 1; id <= 3; ++id) EXPECT_EQ(Count(c.node(id)), 200u) << "node " << id;
}

// A follower that was down while the leader compacted past it gets the state
// as a snapshot over the peer port.
TEST(Cluster, NodesBehindTheCompactedLogCatchUpBySnapshot) {
  Cluster c(3, {"--log-compact-bytes", "4096", "--log-hold-entries", "0"});
  const int leader = c.WaitForLeader({1, 2, 3});
  ASSERT_NE(leader, 0);
  ASSERT_TRUE(CreateCollection(c.node(leader)).ok());
  const int down = leader % 3 + 1;
  c.node(down).Kill(SIGTERM);
  ASSERT_TRUE(c.node(down).WaitExit(std::chrono::seconds(10)).has_value());
  // 150 writes: far more than the 64 entries a leader keeps after compacting.
  for (uint64_t i = 0; i < 150; ++i) ASSERT_TRUE(Upsert(c.node(leader), 100 * i, 10).ok());
  c.node(down).Start();
  EXPECT_TRUE(WaitForCount(c.node(down), 1500)) << c.node(down).Log();
  EXPECT_TRUE(WaitForGauge(c.node(down), "quiver_raft_snapshots_installed_total", 1)) << c.node(down).Log();
  EXPECT_TRUE(WaitForGauge(c.node(leader), "quiver_raft_snapshots_sent_total", 1));
  // Replication goes on from the snapshot's point.
  ASSERT_TRUE(Upsert(c.node(down), 100000, 10).ok());
  for (int id = 1; id <= 3; ++id) EXPECT_EQ(Count(c.node(id)), 1510u) << "node " << id;
}

// A fourth node joins a running cluster through a follower (`--join`). A node
// whose data directory was lost is refused with the recovery steps; after
// `cluster remove` it rejoins with an empty directory and `--join`.
TEST(Cluster, ANodeJoinsAndALostNodeRejoinsAfterRemoval) {
  const std::vector<std::string> compact = {"--log-compact-bytes", "4096", "--log-hold-entries", "0"};
  Cluster c(3, compact);
  const int leader = c.WaitForLeader({1, 2, 3});
  ASSERT_NE(leader, 0);
  ASSERT_TRUE(CreateCollection(c.node(leader)).ok());
  for (uint64_t i = 0; i < 100; ++i) ASSERT_TRUE(Upsert(c.node(leader), 100 * i, 10).ok());

  const int follower = leader % 3 + 1;
  auto joiner_flags = [&](int id, int peer_port, int through) {
    std::vector<std::string> flags = {"--node-id", std::to_string(id), "--join",
                                      "127.0.0.1:" + std::to_string(c.node(through).grpc_port()), "--peer-listen",
                                      "127.0.0.1:" + std::to_string(peer_port), "--raft-tick-ms", "50"};
    flags.insert(flags.end(), compact.begin(), compact.end());
    return flags;
  };
  std::filesystem::create_directories(c.dir() + "/node4");
  QuiverdProcess fourth(c.dir() + "/node4/data", c.dir() + "/node4", joiner_flags(4, FreePort(), follower));
  fourth.Start();
  EXPECT_TRUE(WaitForGauge(fourth, "quiver_raft_voters", 4)) << fourth.Log();
  EXPECT_TRUE(WaitForCount(fourth, 1000)) << fourth.Log();
  EXPECT_TRUE(WaitForGauge(fourth, "quiver_raft_snapshots_installed_total", 1));
  ASSERT_TRUE(Upsert(fourth, 500000, 10).ok());
  for (int id = 1; id <= 3; ++id) EXPECT_EQ(Count(c.node(id)), 1010u) << "node " << id;
  EXPECT_EQ(Count(fourth), 1010u);

  // A node comes back with an empty data directory under its old id.
  const int lost = c.WaitForLeader({1, 2, 3}) % 3 + 1;
  c.node(lost).Kill(SIGKILL);
  std::filesystem::remove_all(c.node(lost).data_dir());
  c.node(lost).Start(/*wait_ready=*/false);
  auto code = c.node(lost).WaitExit(std::chrono::seconds(20));
  ASSERT_TRUE(code.has_value()) << c.node(lost).Log();
  EXPECT_NE(*code, 0);
  EXPECT_NE(c.node(lost).Log().find("quiverctl cluster remove " + std::to_string(lost)), std::string::npos)
      << c.node(lost).Log();

  // The documented recovery: remove it, empty its directory, join again.
  {
    // Whichever member leads (a follower refuses, naming it).
    std::vector<QuiverdProcess*> members = {&fourth};
    for (int id = 1; id <= 3; ++id) {
      if (id != lost) members.push_back(&c.node(id));
    }
    quiver::v1::RemoveNodeRequest req;
    req.set_node_id(static_cast<uint64_t>(lost));
    grpc::Status st;
    for (int attempt = 0; attempt < 100; ++attempt) {
      QuiverdProcess* member = members[static_cast<size_t>(attempt) % members.size()];
      quiver::v1::RemoveNodeResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      st = ClusterStub(*member)->RemoveNode(&ctx, req, &resp);
      if (st.ok()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  std::filesystem::remove_all(c.node(lost).data_dir());
  const std::string work = c.dir() + "/rejoin";
  std::filesystem::create_directories(work);
  QuiverdProcess rejoined(c.node(lost).data_dir(), work, joiner_flags(lost, c.peer_port(lost), follower == lost ? leader : follower));
  rejoined.Start();
  EXPECT_TRUE(WaitForGauge(rejoined, "quiver_raft_voters", 4)) << rejoined.Log();
  EXPECT_TRUE(WaitForCount(rejoined, 1010)) << rejoined.Log();
  ASSERT_TRUE(Upsert(rejoined, 600000, 10).ok());
  EXPECT_EQ(Count(rejoined), 1020u);
  EXPECT_EQ(Count(fourth), 1020u);
}

// Peers start in any order and none waits for one that is not running: in
// each of the six orders of three nodes, the first serves alone, the first
// two elect a leader and take writes, and the third catches up when it comes.
TEST(Cluster, StartsInEveryOrder) {
  std::vector<int> order = {1, 2, 3};
  do {
    Cluster c(3, {}, {}, /*start=*/false);
    c.node(order[0]).Start();  // serves (reads, health) without its peers
    c.node(order[1]).Start();
    const int leader = c.WaitForLeader({order[0], order[1]});
    ASSERT_NE(leader, 0) << "order " << order[0] << order[1] << order[2];
    ASSERT_TRUE(CreateCollection(c.node(order[0])).ok());
    ASSERT_TRUE(Upsert(c.node(order[1]), 1, 10).ok());
    c.node(order[2]).Start();
    EXPECT_TRUE(WaitForCount(c.node(order[2]), 10)) << "order " << order[0] << order[1] << order[2];
    EXPECT_EQ(Count(c.node(order[2])), 10u);
  } while (std::next_permutation(order.begin(), order.end()));
}

// Every point of `ids` as `node` holds it, by id (eventual reads: compares replicas).
std::map<uint64_t, std::vector<float>> PointsOn(QuiverdProcess& node, const std::set<uint64_t>& ids) {
  quiver::v1::GetPointsRequest req;
  req.set_collection("c");
  req.set_with_vector(true);
  req.set_consistency(quiver::v1::EVENTUAL);
  for (uint64_t id : ids) req.add_ids(id);
  quiver::v1::GetPointsResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  EXPECT_TRUE(node.points->Get(&ctx, req, &resp).ok());
  std::map<uint64_t, std::vector<float>> out;
  for (const auto& p : resp.points()) out[p.id()].assign(p.vector().begin(), p.vector().end());
  return out;
}

// A client writing through the cluster's nodes in turn until stopped: batches
// of 10 new points, each retried (same ids) until acknowledged, and every
// fourth batch deleting an acknowledged batch. It records what was
// acknowledged: those points must be on every node afterwards, the deleted
// ones on none.
class WriteLoad {
 public:
  explicit WriteLoad(Cluster& c) : c_(c) {
    thread_ = std::thread([this] { Run(); });
  }
  ~WriteLoad() { Stop(); }
  // Writes avoid this node (being restarted); 0: none.
  void Avoid(int node) { avoid_ = node; }
  // Returns once `batches` more upserts have been acknowledged (fails the
  // test if that takes 30 s): the cluster makes progress at this point.
  void WaitForBatches(uint64_t batches) {
    const uint64_t target = acknowledged_batches_.load() + batches;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (acknowledged_batches_.load() < target) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no write was acknowledged for 30 s";
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  // Every node holds the acknowledged points, identically, and none of the deleted.
  void Verify() {
    ASSERT_GT(live_.size(), 50u) << "the writer made no progress";
    std::set<uint64_t> all = live_;
    all.insert(deleted_.begin(), deleted_.end());
    // A linearizable read waits until its node has applied every write
    // committed before it: only then do the node's eventual reads below see
    // all that was acknowledged (a node restarted late may still be catching
    // up when the writer stops).
    for (int id = 1; id <= 3; ++id) EXPECT_GE(Count(c_.node(id)), live_.size()) << "node " << id;
    const auto reference = PointsOn(c_.node(1), all);
    for (uint64_t id : live_) EXPECT_TRUE(reference.contains(id)) << "acknowledged point " << id << " is missing";
    for (uint64_t id : deleted_) EXPECT_FALSE(reference.contains(id)) << "deleted point " << id << " is back";
    for (int id = 2; id <= 3; ++id) {
      EXPECT_TRUE(PointsOn(c_.node(id), all) == reference) << "node " << id << " differs";
    }
  }

 private:
  template <typename Call>
  bool UntilAcknowledged(uint64_t salt, Call call) {
    for (uint64_t attempt = 0; !stop_.load(); ++attempt) {
      int target = static_cast<int>((salt + attempt) % 3) + 1;
      if (target == avoid_.load()) target = target % 3 + 1;
      if (call(c_.node(target))) return true;
    }
    return false;
  }
  void Run() {
    for (uint64_t batch = 0; !stop_.load(); ++batch) {
      if (!UntilAcknowledged(batch, [&](QuiverdProcess& n) { return Upsert(n, 10 * batch, 10).ok(); })) return;
      for (uint64_t id = 10 * batch; id < 10 * batch + 10; ++id) live_.insert(id);
      ++acknowledged_batches_;
      if (batch % 4 != 3) continue;
      const uint64_t victim = batch - 2;
      quiver::v1::DeletePointsRequest req;
      req.set_collection("c");
      for (uint64_t id = 10 * victim; id < 10 * victim + 10; ++id) req.add_ids(id);
      const bool deleted = UntilAcknowledged(batch, [&](QuiverdProcess& n) {
        quiver::v1::DeletePointsResponse resp;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        return n.points->Delete(&ctx, req, &resp).ok();
      });
      if (!deleted) return;
      for (uint64_t id = 10 * victim; id < 10 * victim + 10; ++id) {
        live_.erase(id);
        deleted_.insert(id);
      }
    }
  }

  Cluster& c_;
  std::atomic<bool> stop_{false};
  std::atomic<int> avoid_{0};
  std::atomic<uint64_t> acknowledged_batches_{0};
  std::set<uint64_t> live_, deleted_;  // the writer's until Stop
  std::thread thread_;
};

// An upgrade: every node in turn gets SIGTERM (exit 0 within 10 s) and
// restarts while the client keeps writing and deleting.
TEST(Cluster, RollingRestartUnderLoadLosesNothingAcknowledged) {
  Cluster c(3);
  ASSERT_NE(c.WaitForLeader({1, 2, 3}), 0);
  ASSERT_TRUE(CreateCollection(c.node(1)).ok());
  WriteLoad load(c);
  for (int id = 1; id <= 3; ++id) {
    ASSERT_NO_FATAL_FAILURE(load.WaitForBatches(10));
    load.Avoid(id);
    c.node(id).Kill(SIGTERM);
    auto code = c.node(id).WaitExit(std::chrono::seconds(10));
    ASSERT_TRUE(code.has_value()) << "node " << id << " did not stop within 10 s";
    EXPECT_EQ(*code, 0) << c.node(id).Log();
    c.node(id).Start();
    ASSERT_NE(c.WaitForLeader({1, 2, 3}), 0);
    load.Avoid(0);
  }
  ASSERT_NO_FATAL_FAILURE(load.WaitForBatches(10));
  load.Stop();
  load.Verify();
}

// kill -9 of the leader, twice, under the same load.
TEST(Cluster, LeaderKillNineUnderLoadLosesNothingAcknowledged) {
  Cluster c(3);
  ASSERT_NE(c.WaitForLeader({1, 2, 3}), 0);
  ASSERT_TRUE(CreateCollection(c.node(1)).ok());
  WriteLoad load(c);
  for (int round = 0; round < 2; ++round) {
    ASSERT_NO_FATAL_FAILURE(load.WaitForBatches(10));
    const int leader = c.WaitForLeader({1, 2, 3});
    ASSERT_NE(leader, 0);
    load.Avoid(leader);
    c.node(leader).Kill(SIGKILL);
    std::vector<int> rest;
    for (int id = 1; id <= 3; ++id) {
      if (id != leader) rest.push_back(id);
    }
    ASSERT_NE(c.WaitForLeader(rest), 0);
    ASSERT_NO_FATAL_FAILURE(load.WaitForBatches(10));  // writes go on without it
    c.node(leader).Start();
    load.Avoid(0);
  }
  ASSERT_NO_FATAL_FAILURE(load.WaitForBatches(10));
  load.Stop();
  load.Verify();
}

// Fault injection (tests only): `node` drops all peer traffic to and from `peers`.
void Partition(QuiverdProcess& node, const std::string& peers) {
  httplib::Client admin("127.0.0.1", node.admin_port());
  auto res = admin.Post("/debug/partition?peers=" + peers, "", "text/plain");
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
}

// Fault injection (tests only): what `node` sends its peers is lost and delayed.
void Lossy(QuiverdProcess& node, const std::string& query) {
  httplib::Client admin("127.0.0.1", node.admin_port());
  auto res = admin.Post("/debug/lossy?" + query, "", "text/plain");
  ASSERT_TRUE(res && res->status == 200) << (res ? res->body : "no answer");
}

// Every node's links lose a fifth of the Raft messages and lag 20 ms: writes
// through any node still commit (Raft resends what is lost), and once the
// links heal the replicas hold the same points.
TEST(Cluster, LossySlowLinksStillReplicateAndConverge) {
  Cluster c(3, {"--fault-injection", "true"});
  ASSERT_NE(c.WaitForLeader({1, 2, 3}), 0);
  ASSERT_TRUE(CreateCollection(c.node(1)).ok());
  for (int id = 1; id <= 3; ++id) ASSERT_NO_FATAL_FAILURE(Lossy(c.node(id), "drop=0.2&delay_ms=20"));
  std::set<uint64_t> ids;
  for (uint64_t b = 0; b < 30; ++b) {
    ASSERT_TRUE(Upsert(c.node(static_cast<int>(b % 3) + 1), 10 * b, 10).ok()) << "batch " << b;
    for (uint64_t id = 10 * b; id < 10 * b + 10; ++id) ids.insert(id);
  }
  for (int id = 1; id <= 3; ++id) EXPECT_TRUE(WaitForCount(c.node(id), 300)) << "node " << id;
  for (int id = 1; id <= 3; ++id) ASSERT_NO_FATAL_FAILURE(Lossy(c.node(id), "drop=0&delay_ms=0"));
  const auto reference = PointsOn(c.node(1), ids);
  EXPECT_EQ(reference.size(), 300u);
  for (int id = 1; id <= 3; ++id) {
    EXPECT_EQ(Count(c.node(id)), 300u) << "node " << id;
    EXPECT_TRUE(PointsOn(c.node(id), ids) == reference) << "node " << id << " differs";
  }
}

// The leader is cut off from both followers: a write to it is never
// acknowledged, the majority elects a new leader and keeps writing, and once
// the partition heals the old leader follows and holds exactly what the
// others hold — its unacknowledged write included nowhere.
TEST(Cluster, APartitionedLeaderLosesItsQuorumAndTheMajorityGoesOn) {
  Cluster c(3, {"--fault-injection", "true"});
  const int old = c.WaitForLeader({1, 2, 3});
  ASSERT_NE(old, 0);
  ASSERT_TRUE(CreateCollection(c.node(old)).ok());
  ASSERT_TRUE(Upsert(c.node(old), 1, 10).ok());
  std::vector<int> majority;
  for (int id = 1; id <= 3; ++id) {
    if (id != old) majority.push_back(id);
  }
  Partition(c.node(old), std::to_string(majority[0]) + "," + std::to_string(majority[1]));
  EXPECT_FALSE(UpsertOnce(c.node(old), 1000, 1.0f, std::chrono::seconds(3)).ok())
      << "a leader without its quorum acknowledged";
  const int next = c.WaitForLeader(majority);
  ASSERT_NE(next, 0);
  ASSERT_TRUE(Upsert(c.node(next), 2000, 10).ok());
  EXPECT_EQ(Count(c.node(next)), 20u);

  Partition(c.node(old), "");  // heal
  EXPECT_TRUE(WaitForCount(c.node(old), 20)) << c.node(old).Log();
  EXPECT_EQ(c.WaitForLeader({1, 2, 3}), next) << "the old leader must follow, not disrupt";
  std::set<uint64_t> ids = {1000};
  for (uint64_t id = 1; id <= 10; ++id) ids.insert(id);
  for (uint64_t id = 2000; id < 2010; ++id) ids.insert(id);
  const auto reference = PointsOn(c.node(next), ids);
  EXPECT_EQ(reference.size(), 20u);
  EXPECT_FALSE(reference.contains(1000));
  for (int id = 1; id <= 3; ++id) {
    EXPECT_EQ(Count(c.node(id)), 20u) << "node " << id;
    EXPECT_TRUE(PointsOn(c.node(id), ids) == reference) << "node " << id << " differs";
  }
}

TEST(Cluster, PeerPortWithMutualTls) {
  if (!HaveOpensslTool()) GTEST_SKIP() << "no openssl tool";
  TlsFiles tls;
  // The public port stays plaintext here (--tls-* also enable TLS on it; the
  // client side of that is tested in the service tests): the peer port uses
  // the node certificate through --peer-tls-ca-file.
  Cluster c(3, {"--tls-cert-file", tls.Path("server.pem"), "--tls-key-file", tls.Path("server.key"),
                "--peer-tls-ca-file", tls.Path("ca.pem")});
  const int leader = c.WaitForLeader({1, 2, 3});
  ASSERT_NE(leader, 0) << c.node(1).Log();
  EXPECT_EQ(c.Gauge(leader, "quiver_raft_voters"), 3u);
  // A quorum formed over TLS: every node follows the same leader.
  for (int id = 1; id <= 3; ++id) EXPECT_EQ(c.Gauge(id, "quiver_raft_leader_id"), static_cast<uint64_t>(leader));
}

TEST(Cluster, APeerFromAnotherCaIsNeverAccepted) {
  if (!HaveOpensslTool()) GTEST_SKIP() << "no openssl tool";
  TlsFiles tls;
  const std::vector<std::string> cert = {"--tls-cert-file", tls.Path("server.pem"), "--tls-key-file",
                                         tls.Path("server.key")};
  // Node 3 trusts another CA: it can neither verify its peers nor be verified.
  Cluster c(3, cert,
            {{1, {"--peer-tls-ca-file", tls.Path("ca.pem")}},
             {2, {"--peer-tls-ca-file", tls.Path("ca.pem")}},
             {3, {"--peer-tls-ca-file", tls.Path("other.pem")}}});
  const int leader = c.WaitForLeader({1, 2});
  ASSERT_NE(leader, 0);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(c.Gauge(3, "quiver_raft_leader_id"), 0u) << "node 3 joined without a trusted certificate";
}

// A node bootstrapped with another peers list belongs to another cluster:
// the cluster refuses its messages and it says why.
TEST(Cluster, ANodeOfAnotherClusterIsRefused) {
  Cluster c(2);
  ASSERT_NE(c.WaitForLeader({1, 2}), 0);
  const int port = FreePort();
  const std::string other_peers = c.peers() + ",3=127.0.0.1:" + std::to_string(port);
  std::filesystem::create_directories(c.dir() + "/rogue");
  QuiverdProcess rogue(c.dir() + "/rogue/data", c.dir() + "/rogue",
                       {"--node-id", "3", "--peers", other_peers, "--peer-listen", "127.0.0.1:" + std::to_string(port),
                        "--raft-tick-ms", "50"});
  rogue.Start();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (rogue.Log().find("refuses this node's messages") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(rogue.Log().find("reached a node of cluster"), std::string::npos) << rogue.Log();
  {  // Without a leader it is not ready; the cluster's nodes are.
    httplib::Client admin("127.0.0.1", rogue.admin_port());
    auto res = admin.Get("/readyz");
    ASSERT_TRUE(res);
    EXPECT_EQ(res->status, 503);
    EXPECT_NE(res->body.find("no leader known"), std::string::npos) << res->body;
    httplib::Client member("127.0.0.1", c.node(2).admin_port());
    auto ok = member.Get("/readyz");
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200) << ok->body;
  }
  {  // Bytes that are not a RaftBatch or a ForwardRequest: refused by name, and nothing else happens.
    const grpc::Status st = quiver::testing::CallWithRawBytes(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(c.peer_port(1)), grpc::InsecureChannelCredentials()),
        "/quiver.internal.v1.Peer/Send", std::string("\x0a\x7f\x01", 3));  // messages: 127 bytes declared, 1 sent
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find("RaftBatch"), std::string::npos) << st.error_message();
    const grpc::Status forward = quiver::testing::CallWithRawBytes(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(c.peer_port(1)), grpc::InsecureChannelCredentials()),
        "/quiver.internal.v1.Peer/Forward", std::string("\x0a\x7f\x01", 3));  // 127 bytes declared, 1 sent
    EXPECT_EQ(forward.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << forward.error_message();
    EXPECT_NE(forward.error_message().find("ForwardRequest"), std::string::npos) << forward.error_message();
  }
  EXPECT_NE(c.WaitForLeader({1, 2}), 0);
  EXPECT_EQ(c.Gauge(1, "quiver_raft_voters"), 2u);
}

TEST(Cluster, OperatorsSeeStatusTransferLeadershipAndRemoveNodes) {
  Cluster c(3);
  const int leader = c.WaitForLeader({1, 2, 3});
  ASSERT_NE(leader, 0);
  const int next = leader % 3 + 1;
  const int other = next % 3 + 1;
  {
    quiver::v1::ClusterStatusResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(ClusterStub(c.node(leader))->Status(&ctx, {}, &resp).ok());
    EXPECT_EQ(resp.role(), "leader");
    ASSERT_EQ(resp.members_size(), 3);
    for (const auto& m : resp.members()) EXPECT_TRUE(m.voter());
  }
  {  // A follower refuses and names the leader.
    quiver::v1::TransferLeaderRequest req;
    req.set_node_id(next);
    quiver::v1::TransferLeaderResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = ClusterStub(c.node(next))->TransferLeader(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_NE(st.error_message().find("node " + std::to_string(leader)), std::string::npos) << st.error_message();
  }
  {
    quiver::v1::TransferLeaderRequest req;
    req.set_node_id(next);
    quiver::v1::TransferLeaderResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status st = ClusterStub(c.node(leader))->TransferLeader(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_EQ(c.WaitForLeader({1, 2, 3}), next);
  {
    quiver::v1::RemoveNodeRequest req;
    req.set_node_id(other);
    quiver::v1::RemoveNodeResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Status st = ClusterStub(c.node(next))->RemoveNode(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  EXPECT_EQ(c.Gauge(next, "quiver_raft_voters"), 2u);
  // Two voters left: both are needed, and writes still commit.
  ASSERT_TRUE(CreateCollection(c.node(leader)).ok());
  ASSERT_TRUE(Upsert(c.node(leader), 1, 20).ok());
  EXPECT_EQ(Count(c.node(next)), 20u);
}

// Reads and writes that wait on a leader that is gone must not hold up
// shutdown past its bound.
TEST(Cluster, ANodeWithoutAMajorityStillStopsWithinItsBound) {
  Cluster c(3);
  const int leader = c.WaitForLeader({1, 2, 3});
  ASSERT_NE(leader, 0);
  ASSERT_TRUE(CreateCollection(c.node(leader)).ok());
  const int survivor = leader % 3 + 1;
  for (int id = 1; id <= 3; ++id) {
    if (id != survivor) c.node(id).Kill(SIGKILL);
  }
  grpc::Status read_status, write_status;
  std::thread reader([&] {
    CountRequest req;
    req.set_collection("c");
    CountResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    read_status = c.node(survivor).points->Count(&ctx, req, &resp);
  });
  std::thread writer([&] { write_status = UpsertOnce(c.node(survivor), 1, 0.5f, std::chrono::seconds(60)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = std::chrono::steady_clock::now();
  c.node(survivor).Kill(SIGTERM);
  auto code = c.node(survivor).WaitExit(std::chrono::seconds(10));
  reader.join();
  writer.join();
  ASSERT_TRUE(code.has_value()) << "no exit within 10 s of SIGTERM; log:\n" << c.node(survivor).Log();
  EXPECT_EQ(*code, 0) << c.node(survivor).Log();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(8));
  // Without a majority nothing was confirmed or acknowledged.
  EXPECT_FALSE(read_status.ok());
  EXPECT_FALSE(write_status.ok());
}

}  // namespace
}  // namespace quiver::testing
