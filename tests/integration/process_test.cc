// quiverd as a real process: bulk upsert + exact search + restart, kill -9 at
// random moments under concurrent writes, and the shutdown deadline.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <httplib.h>

#include "common/encoding.h"
#include "process_fixture.h"
#include "quiver/internal/v1/wal.pb.h"
#include "replication/raft/raft.h"
#include "storage/db.h"
#include "storage/rocks_log_store.h"

namespace quiver::testing {
namespace {

using namespace quiver::v1;  // NOLINT

void CreateCollection(QuiverdProcess& q, const std::string& name, uint32_t dim, Metric metric) {
  CreateCollectionRequest req;
  req.mutable_config()->set_name(name);
  req.mutable_config()->set_dimension(dim);
  req.mutable_config()->set_metric(metric);
  CreateCollectionResponse resp;
  grpc::ClientContext ctx;
  auto st = q.collections->Create(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
}

// Checks SearchBatch against the float64 brute-force reference.
void CheckSearch(QuiverdProcess& q, const std::vector<float>& base, size_t n, size_t dim, size_t k) {
  const size_t nq = 50;
  auto queries = RandomVectors(nq, dim, 99);
  SearchBatchRequest req;
  req.set_collection("bulk");
  req.set_k(static_cast<uint32_t>(k));
  for (size_t i = 0; i < nq; ++i) {
    req.add_queries()->mutable_values()->Add(queries.begin() + long(i * dim), queries.begin() + long((i + 1) * dim));
  }
  SearchBatchResponse resp;
  grpc::ClientContext ctx;
  auto st = q.points->SearchBatch(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  auto ref = ReferenceSearch(kernels::Metric::kL2, base.data(), n, queries.data(), nq, dim);
  ASSERT_EQ(resp.results_size(), int(nq));
  for (size_t i = 0; i < nq; ++i) {
    ASSERT_EQ(resp.results(int(i)).hits_size(), int(k));
    for (size_t r = 0; r < k; ++r) {
      const auto& hit = resp.results(int(i)).hits(int(r));
      EXPECT_NEAR(hit.score(), ref[i][r].score, ScoreTolerance(ref[i][r].score, 2.0 * dim)) << "q" << i << " r" << r;
      if (hit.id() != uint64_t(ref[i][r].row)) {
        // Only an exact tie may reorder ids.
        EXPECT_NEAR(ref[i][r].score, ref[i][r + (r + 1 < n ? 1 : 0)].score, 1e-3) << "q" << i << " r" << r;
      }
    }
  }
}

TEST(Process, BulkUpsertSearchRestartSearch) {
  TempDir dir;
  QuiverdProcess q(dir.path() + "/data", dir.path());
  q.Start();
  constexpr size_t kN = 20000, kDim = 32, kBatch = 1000;
  CreateCollection(q, "bulk", kDim, L2);
  auto base = RandomVectors(kN, kDim, 2024);
  for (size_t lo = 0; lo < kN; lo += kBatch) {
    UpsertRequest req;
    req.set_collection("bulk");
    for (size_t i = lo; i < lo + kBatch; ++i) {
      auto* p = req.add_points();
      p->set_id(i);
      p->mutable_vector()->Add(base.begin() + long(i * kDim), base.begin() + long((i + 1) * kDim));
    }
    UpsertResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(q.points->Upsert(&ctx, req, &resp).ok());
  }
  CheckSearch(q, base, kN, kDim, 10);
  q.Kill(SIGTERM);
  ASSERT_EQ(q.WaitExit(std::chrono::seconds(10)), std::optional<int>(0)) << q.Log();
  q.Start();
  CountRequest c;
  c.set_collection("bulk");
  CountResponse cr;
  grpc::ClientContext ctx;
  ASSERT_TRUE(q.points->Count(&ctx, c, &cr).ok());
  EXPECT_EQ(cr.count(), kN);
  CheckSearch(q, base, kN, kDim, 10);
}

// An IVF_FLAT collection with several sealed segments: after a restart the
// indexes come from their files (counted on /metrics), and approximate
// searches return exactly what they returned before.
TEST(Process, RestartLoadsSealedSegmentsAndAnswersTheSame) {
  TempDir dir;
  QuiverdProcess q(dir.path() + "/data", dir.path());
  q.Start();
  constexpr size_t kN = 5000, kDim = 16, kSeg = 1000, kQueries = 20;
  CreateCollectionRequest create;
  create.mutable_config()->set_name("ivf");
  create.mutable_config()->set_dimension(kDim);
  create.mutable_config()->set_metric(L2);
  create.mutable_config()->set_segment_max_points(kSeg);
  create.mutable_config()->mutable_index()->set_type(IVF_FLAT);
  create.mutable_config()->mutable_index()->mutable_ivf_flat()->set_nlist(16);
  {
    CreateCollectionResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(q.collections->Create(&ctx, create, &resp).ok());
  }
  auto base = RandomVectors(kN, kDim, 77);
  UpsertRequest up;
  up.set_collection("ivf");
  for (size_t i = 0; i < kN; ++i) {
    auto* p = up.add_points();
    p->set_id(i);
    p->mutable_vector()->Add(base.begin() + long(i * kDim), base.begin() + long((i + 1) * kDim));
  }
  {
    UpsertResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(q.points->Upsert(&ctx, up, &resp).ok());
  }
  DeletePointsRequest del;
  del.set_collection("ivf");
  for (uint64_t id = 0; id < kN; id += 97) del.add_ids(id);
  {
    DeletePointsResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(q.points->Delete(&ctx, del, &resp).ok());
  }
  auto describe = [&] {
    GetCollectionRequest g;
    g.set_name("ivf");
    GetCollectionResponse gr;
    grpc::ClientContext ctx;
    EXPECT_TRUE(q.collections->Get(&ctx, g, &gr).ok());
    return gr.collection();
  };
  for (int i = 0; i < 600 && describe().indexed_segments() < kN / kSeg; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(describe().indexed_segments(), kN / kSeg);
  auto queries = RandomVectors(kQueries, kDim, 78);
  SearchBatchRequest search;
  search.set_collection("ivf");
  search.set_k(10);
  search.mutable_params()->set_nprobe(2);
  for (size_t i = 0; i < kQueries; ++i) {
    search.add_queries()->mutable_values()->Add(queries.begin() + long(i * kDim), queries.begin() + long((i + 1) * kDim));
  }
  auto run = [&] {
    SearchBatchResponse resp;
    grpc::ClientContext ctx;
    EXPECT_TRUE(q.points->SearchBatch(&ctx, search, &resp).ok());
    std::vector<uint64_t> ids;
    for (const auto& r : resp.results()) {
      for (const auto& h : r.hits()) ids.push_back(h.id());
    }
    return ids;
  };
  const auto before = run();
  ASSERT_EQ(before.size(), kQueries * 10);

  q.Kill(SIGTERM);
  ASSERT_EQ(q.WaitExit(std::chrono::seconds(10)), std::optional<int>(0)) << q.Log();
  q.Start();
  const auto info = describe();
  EXPECT_EQ(info.indexed_segments(), kN / kSeg) << "indexes loaded, not rebuilt";
  EXPECT_EQ(info.points_count(), kN - (kN + 96) / 97);
  EXPECT_EQ(run(), before);
  httplib::Client admin("127.0.0.1", q.admin_port());
  auto metrics = admin.Get("/metrics");
  ASSERT_TRUE(metrics) << "no /metrics";
  EXPECT_NE(metrics->body.find("quiver_segment_files_loaded_total 5\n"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("quiver_segment_files_discarded_total 0\n"), std::string::npos);
  EXPECT_NE(q.Log().find("5 segment file(s)"), std::string::npos) << q.Log();
}

// ---- crash test ----

struct Batch {
  uint64_t first_id;
  uint32_t size;
  uint64_t seed;
};

std::vector<float> BatchVector(uint64_t seed, uint64_t id, size_t dim) {
  return RandomVectors(1, dim, seed * 1000003 + id);
}

// Cycles of 4 clients upserting batches (with payloads) while quiverd is
// killed with SIGKILL at a random moment; after each restart every
// acknowledged batch is there whole, every other batch whole or absent.
// `expect_compaction`: the log must have been compacted by the end.
void KillNineDuringConcurrentUpserts(const std::vector<std::string>& flags, int cycles, bool expect_compaction) {
  TempDir dir;
  QuiverdProcess q(dir.path() + "/data", dir.path(), flags);
  constexpr size_t kDim = 16;
  constexpr int kClients = 4;
  std::mt19937_64 rng(7);
  std::vector<Batch> acked, in_flight_or_lost;
  uint64_t next_id = 0, next_seed = 1;
  std::mutex mu;

  q.Start();
  CreateCollection(q, "crash", kDim, IP);
  for (int cycle = 0; cycle < cycles; ++cycle) {
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&] {
        while (!stop.load()) {
          Batch b;
          {
            std::lock_guard lock(mu);
            b = {next_id, 1 + uint32_t(rng() % 200), next_seed++};
            next_id += b.size;
          }
          UpsertRequest req;
          req.set_collection("crash");
          for (uint32_t i = 0; i < b.size; ++i) {
            auto* p = req.add_points();
            p->set_id(b.first_id + i);
            auto v = BatchVector(b.seed, b.first_id + i, kDim);
            p->mutable_vector()->Add(v.begin(), v.end());
            (*p->mutable_payload())["batch"].set_int_value(int64_t(b.seed));
            (*p->mutable_payload())["name"].set_string_value("p" + std::to_string(b.first_id + i));
          }
          UpsertResponse resp;
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
          const bool ok = q.points->Upsert(&ctx, req, &resp).ok();
          std::lock_guard lock(mu);
          (ok ? acked : in_flight_or_lost).push_back(b);
          if (!ok) return;  // the server is gone
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + rng() % 400));
    q.Kill(SIGKILL);
    stop = true;
    for (auto& t : clients) t.join();

    q.Start();
    // Verify everything known so far.
    auto check = [&](const Batch& b, bool must_exist) {
      GetPointsRequest g;
      g.set_collection("crash");
      for (uint32_t i = 0; i < b.size; ++i) g.add_ids(b.first_id + i);
      g.set_with_payload(true);
      g.set_with_vector(true);
      GetPointsResponse gr;
      grpc::ClientContext ctx;
      ASSERT_TRUE(q.points->Get(&ctx, g, &gr).ok());
      if (must_exist) {
        ASSERT_EQ(gr.points_size(), int(b.size)) << "acknowledged batch " << b.seed << " lost points, cycle " << cycle;
      } else {
        ASSERT_TRUE(gr.points_size() == 0 || gr.points_size() == int(b.size))
            << "unacknowledged batch " << b.seed << " is half-applied: " << gr.points_size() << "/" << b.size;
      }
      for (const auto& p : gr.points()) {
        auto v = BatchVector(b.seed, p.id(), kDim);
        ASSERT_EQ(std::vector<float>(p.vector().begin(), p.vector().end()), v) << "point " << p.id();
        ASSERT_EQ(p.payload().at("batch").int_value(), int64_t(b.seed));
        ASSERT_EQ(p.payload().at("name").string_value(), "p" + std::to_string(p.id()));
      }
    };
    for (const auto& b : acked) check(b, true);
    for (const auto& b : in_flight_or_lost) check(b, false);
    // Nothing beyond what was ever sent.
    GetPointsRequest g;
    g.set_collection("crash");
    for (uint64_t id = next_id; id < next_id + 100; ++id) g.add_ids(id);
    GetPointsResponse gr;
    grpc::ClientContext ctx;
    ASSERT_TRUE(q.points->Get(&ctx, g, &gr).ok());
    ASSERT_EQ(gr.points_size(), 0);
  }
  EXPECT_GT(acked.size(), size_t(cycles)) << "the test hardly wrote anything";
  if (expect_compaction) {
    q.Kill(SIGKILL);
    auto db = std::move(storage::Db::Open(dir.path() + "/data")).value();
    auto log = std::move(storage::RocksLogStore::Open(db.get())).value();
    EXPECT_GT(log->FirstIndex(), 1u) << "no checkpoint compacted the log: the test missed what it is for";
  }
}

TEST(Process, KillNineDuringConcurrentUpsertsLosesNothingAcknowledged) {
  KillNineDuringConcurrentUpserts({}, 20, /*expect_compaction=*/false);
}

// The same with a checkpoint every few kilobytes of writes, so kills land
// between a staged log compaction and the flush that makes it durable
// (LogStore::StageCompaction), and restarts replay from compacted logs.
TEST(Process, KillNineWhileCheckpointingEveryFewKilobytesLosesNothingAcknowledged) {
  KillNineDuringConcurrentUpserts({"--log-compact-bytes", "4096"}, 10, /*expect_compaction=*/true);
}

// ---- shutdown ----

TEST(Process, SigtermUnderWriteLoadExitsZeroWithinTenSeconds) {
  TempDir dir;
  QuiverdProcess q(dir.path() + "/data", dir.path());
  q.Start();
  CreateCollection(q, "load", 64, L2);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> next{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&] {
      auto v = RandomVectors(500, 64, 3);
      while (!stop.load()) {
        UpsertRequest req;
        req.set_collection("load");
        for (int i = 0; i < 500; ++i) {
          auto* p = req.add_points();
          p->set_id(next++);
          p->mutable_vector()->Add(v.begin() + i * 64, v.begin() + (i + 1) * 64);
        }
        UpsertResponse resp;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        if (!q.points->Upsert(&ctx, req, &resp).ok()) return;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  const auto t0 = std::chrono::steady_clock::now();
  q.Kill(SIGTERM);
  auto code = q.WaitExit(std::chrono::seconds(10));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  for (auto& t : writers) t.join();
  ASSERT_TRUE(code.has_value()) << "quiverd did not exit within 10 s of SIGTERM; log:\n" << q.Log();
  EXPECT_EQ(*code, 0) << q.Log();
  std::printf("exited %.2f s after SIGTERM under write load\n", secs);
}

// Fills a data directory with a long committed-but-unapplied log tail, as a
// crash between the log append and the apply would leave it.
void WriteUnappliedLog(const std::string& data_dir, int entries, int points_per_entry, uint32_t dim) {
  auto db = std::move(storage::Db::Open(data_dir)).value();
  auto log = std::move(storage::RocksLogStore::Open(db.get())).value();
  ASSERT_TRUE(replication::raft::Bootstrap(log.get(), {1}).ok());  // entry 1: a single-node cluster
  std::vector<storage::LogEntry> batch;
  quiver::internal::v1::Command create;
  auto* cfg = create.mutable_create_collection()->mutable_config();
  cfg->set_name("replay");
  cfg->set_dimension(dim);
  cfg->set_metric(L2);
  batch.push_back({2, 1, storage::EntryType::kCommand, create.SerializeAsString()});
  auto v = RandomVectors(size_t(points_per_entry), dim, 5);
  uint64_t id = 0;
  for (int e = 0; e < entries; ++e) {
    quiver::internal::v1::Command up;
    auto* u = up.mutable_upsert_points();
    u->set_collection("replay");
    u->set_dimension(dim);
    for (int i = 0; i < points_per_entry; ++i) PutFixed64LE(u->mutable_ids(), id++);
    u->set_vectors(std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4));
    batch.push_back({uint64_t(e + 3), 1, storage::EntryType::kCommand, up.SerializeAsString()});
  }
  storage::HardState hs{1, 0, uint64_t(entries + 2)};
  ASSERT_TRUE(log->Append(batch, &hs).ok());
}

TEST(Process, SigtermDuringLogReplayExitsZeroQuickly) {
  TempDir dir;
  const std::string data = dir.path() + "/data";
  WriteUnappliedLog(data, 150, 2000, 32);  // 300k vectors to replay
  QuiverdProcess q(data, dir.path());
  q.Start(/*wait_ready=*/false);
  // SIGTERM once the replay has begun (the node says so), not after a guess.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (q.Log().find("replaying log entries") == std::string::npos) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "replay never started; log:\n" << q.Log();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  q.Kill(SIGTERM);
  auto code = q.WaitExit(std::chrono::seconds(10));
  ASSERT_TRUE(code.has_value()) << "quiverd did not exit within 10 s of SIGTERM during replay; log:\n" << q.Log();
  EXPECT_EQ(*code, 0) << q.Log();
  EXPECT_NE(q.Log().find("stopped during start-up: shutdown requested during log replay"), std::string::npos)
      << "SIGTERM did not land during recovery; log:\n" << q.Log();
  // The next start finishes the replay and serves every point.
  q.Start();
  CountRequest c;
  c.set_collection("replay");
  CountResponse cr;
  grpc::ClientContext ctx;
  ASSERT_TRUE(q.points->Count(&ctx, c, &cr).ok());
  EXPECT_EQ(cr.count(), 300000u);
}

// OpenBLAS starts a worker per core but the first when it loads, and each
// spins for ~0.1 s of CPU before it sleeps; quiverd's threads call BLAS
// themselves, so it re-executes itself with OPENBLAS_NUM_THREADS=1.
TEST(Process, StartsOpenBlasWithoutWorkerThreads) {
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr) GTEST_SKIP() << "OPENBLAS_NUM_THREADS is set: quiverd keeps it";
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "on one core OpenBLAS starts no workers";
  TempDir dir;
  QuiverdProcess q(dir.path() + "/data", dir.path());
  q.Start();
  std::ifstream in("/proc/" + std::to_string(q.pid()) + "/environ", std::ios::binary);
  std::string environ((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> vars;
  for (size_t at = 0, end; at < environ.size(); at = end + 1) {
    end = environ.find('\0', at);
    if (end == std::string::npos) end = environ.size();
    vars.push_back(environ.substr(at, end - at));
  }
  EXPECT_NE(std::find(vars.begin(), vars.end(), "OPENBLAS_NUM_THREADS=1"), vars.end()) << environ;
  // The re-executed process keeps its name, or pgrep and pkill miss it.
  std::ifstream comm_file("/proc/" + std::to_string(q.pid()) + "/comm");
  std::string comm;
  std::getline(comm_file, comm);
  EXPECT_EQ(comm, "quiverd");
  q.Kill(SIGTERM);
  EXPECT_EQ(q.WaitExit(std::chrono::seconds(10)), std::optional<int>(0)) << q.Log();
}

TEST(Process, SecondNodeOnSameDataDirFailsClearly) {
  TempDir dir;
  QuiverdProcess a(dir.path() + "/data", dir.path());
  a.Start();
  QuiverdProcess b(dir.path() + "/data", dir.path() + "/b");
  std::filesystem::create_directories(dir.path() + "/b");
  b.Start(/*wait_ready=*/false);
  auto code = b.WaitExit(std::chrono::seconds(10));
  ASSERT_TRUE(code.has_value()) << "second quiverd still running; log:\n" << b.Log();
  EXPECT_EQ(*code, 1);
  EXPECT_NE(b.Log().find("lock"), std::string::npos) << b.Log();
}

}  // namespace
}  // namespace quiver::testing
