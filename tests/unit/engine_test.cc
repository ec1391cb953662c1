// The engine as a state machine: apply, outcomes, idempotent replay, recovery
// from storage, and searches running while writes apply.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <thread>

#include "common/encoding.h"
#include "engine/engine.h"
#include "engine/search_batcher.h"
#include "engine/search_pool.h"
#include "engine/validation.h"
#include "quiver/internal/v1/wal.pb.h"
#include "test_util.h"

namespace quiver::engine {
namespace {

using quiver::internal::v1::Command;

storage::LogEntry Entry(uint64_t index, const Command& cmd) {
  return {index, 1, storage::EntryType::kCommand, cmd.SerializeAsString()};
}

Command Create(const std::string& name, uint32_t dim, quiver::v1::Metric metric = quiver::v1::L2) {
  Command c;
  auto* cfg = c.mutable_create_collection()->mutable_config();
  cfg->set_name(name);
  cfg->set_dimension(dim);
  cfg->set_metric(metric);
  return c;
}

Command Upsert(const std::string& name, uint32_t dim, const std::vector<uint64_t>& ids, float base_value,
               const std::string& payload = "") {
  Command c;
  auto* up = c.mutable_upsert_points();
  up->set_collection(name);
  up->set_dimension(dim);
  for (uint64_t id : ids) {
    PutFixed64LE(up->mutable_ids(), id);
    for (uint32_t j = 0; j < dim; ++j) {
      float v = base_value + static_cast<float>(id) + static_cast<float>(j) * 0.01f;
      up->mutable_vectors()->append(reinterpret_cast<const char*>(&v), 4);
    }
    if (!payload.empty()) up->add_payloads(payload);
  }
  return c;
}

Command DeletePoints(const std::string& name, const std::vector<uint64_t>& ids) {
  Command c;
  c.mutable_delete_points()->set_collection(name);
  for (uint64_t id : ids) PutFixed64LE(c.mutable_delete_points()->mutable_ids(), id);
  return c;
}

Command Drop(const std::string& name) {
  Command c;
  c.mutable_delete_collection()->set_name(name);
  return c;
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    engine_.reset();
    db_.reset();
    db_ = std::move(storage::Db::Open(dir_.path())).value();
    auto e = Engine::Open(db_.get(), options_, nullptr);
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    engine_ = std::move(e).value();
  }
  std::vector<Status> Apply(std::vector<storage::LogEntry> entries) {
    std::vector<Status> outcomes;
    Status st = engine_->Apply(entries, &outcomes);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return outcomes;
  }
  quiver::testing::TempDir dir_;
  EngineOptions options_;
  std::unique_ptr<storage::Db> db_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(EngineTest, ApplyOutcomesAreTheClientsAnswers) {
  auto out = Apply({Entry(1, Create("a", 2)), Entry(2, Create("a", 2)), Entry(3, Upsert("missing", 2, {1}, 0)),
                    Entry(4, Upsert("a", 3, {1}, 0)), Entry(5, Upsert("a", 2, {1, 2}, 0))});
  ASSERT_EQ(out.size(), 5u);
  EXPECT_TRUE(out[0].ok());
  EXPECT_EQ(out[1].code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(out[2].code(), StatusCode::kNotFound);
  EXPECT_EQ(out[3].code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(out[4].ok());
  EXPECT_EQ(engine_->AppliedIndex(), 5u);
  EXPECT_EQ((*engine_->Find("a"))->Count(), 2u);
}

// A retried write (same client id and sequence) applies at most once and
// gets the first attempt's answer, also after a restart.
TEST_F(EngineTest, RequestIdsMakeRetriesApplyAtMostOnce) {
  auto with_id = [](Command cmd, const std::string& client, uint64_t seq) {
    cmd.set_client_id(client);
    cmd.set_sequence(seq);
    return cmd;
  };
  auto out = Apply({Entry(1, with_id(Create("a", 2), "c1", 1)), Entry(2, with_id(Upsert("a", 2, {1}, 0), "c1", 2)),
                    Entry(3, DeletePoints("a", {1})),
                    // The retry of sequence 2 arrives after the delete: it must not resurrect point 1.
                    Entry(4, with_id(Upsert("a", 2, {1}, 0), "c1", 2)),
                    // A retried create answers OK (its first outcome), not ALREADY_EXISTS.
                    Entry(5, with_id(Create("a", 2), "c1", 1)), Entry(6, with_id(Upsert("missing", 2, {5}, 0), "c2", 7)),
                    Entry(7, with_id(Upsert("missing", 2, {5}, 0), "c2", 7))});
  ASSERT_EQ(out.size(), 7u);
  EXPECT_TRUE(out[3].ok());
  EXPECT_EQ(out[4].code(), StatusCode::kFailedPrecondition);  // older than the last applied (2)
  EXPECT_EQ(out[5].code(), StatusCode::kNotFound);
  EXPECT_EQ(out[6].code(), StatusCode::kNotFound);  // the same answer again
  EXPECT_EQ((*engine_->Find("a"))->Count(), 0u);
  Reopen();
  out = Apply({Entry(8, with_id(Upsert("a", 2, {1}, 0), "c1", 2)), Entry(9, with_id(Upsert("a", 2, {2}, 0), "c1", 3)),
               Entry(10, with_id(Upsert("missing", 2, {5}, 0), "c2", 7))});
  EXPECT_TRUE(out[0].ok());
  EXPECT_TRUE(out[1].ok());
  EXPECT_EQ(out[2].code(), StatusCode::kNotFound);
  EXPECT_EQ((*engine_->Find("a"))->Count(), 1u);  // only point 2: the retry of 2 stayed a no-op
}

TEST_F(EngineTest, StateSurvivesReopenExactly) {
  Apply({Entry(1, Create("a", 3)), Entry(2, Upsert("a", 3, {1, 2, 3}, 0.5f, "pp")),
         Entry(3, Upsert("a", 3, {2}, 10.0f)), Entry(4, DeletePoints("a", {3, 99}))});
  Reopen();
  EXPECT_EQ(engine_->AppliedIndex(), 4u);
  auto c = *engine_->Find("a");
  EXPECT_EQ(c->Count(), 2u);
  std::vector<uint64_t> ids = {1, 2, 3};
  auto pts = c->Get(ids, true, true);
  ASSERT_EQ(pts.size(), 2u);
  EXPECT_EQ(pts[0].id, 1u);
  EXPECT_EQ(pts[0].payload, "pp");
  EXPECT_FLOAT_EQ(pts[0].vector[0], 1.5f);
  EXPECT_EQ(pts[1].id, 2u);
  EXPECT_EQ(pts[1].payload, "");  // overwritten without payload
  EXPECT_FLOAT_EQ(pts[1].vector[0], 12.0f);
}

// A new point without a payload writes no payload tombstone: what the engine
// does not hold has nothing stored. That includes a deleted point upserted
// again, and a point of a dropped collection upserted into its successor.
TEST_F(EngineTest, PointsUpsertedAgainAfterTheirDeleteHaveNoOldPayload) {
  Apply({Entry(1, Create("a", 2)), Entry(2, Upsert("a", 2, {1, 2}, 0, "old")), Entry(3, DeletePoints("a", {1})),
         Entry(4, Upsert("a", 2, {1}, 5)), Entry(5, Create("b", 2)), Entry(6, Upsert("b", 2, {7}, 0, "dropped")),
         Entry(7, Drop("b")), Entry(8, Create("b", 2)), Entry(9, Upsert("b", 2, {7}, 1))});
  Reopen();
  std::vector<uint64_t> ids = {1, 2};
  auto a = (*engine_->Find("a"))->Get(ids, true, false);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].payload, "");
  EXPECT_EQ(a[1].payload, "old");
  std::vector<uint64_t> seven = {7};
  auto b = (*engine_->Find("b"))->Get(seven, true, false);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].payload, "");
}

TEST_F(EngineTest, ReplayingAppliedEntriesChangesNothing) {
  std::vector<storage::LogEntry> entries = {Entry(1, Create("a", 2)), Entry(2, Upsert("a", 2, {1, 2}, 0)),
                                            Entry(3, DeletePoints("a", {1}))};
  Apply(entries);
  Apply(entries);  // replay after a crash
  EXPECT_EQ((*engine_->Find("a"))->Count(), 1u);
  EXPECT_EQ(engine_->AppliedIndex(), 3u);
  std::vector<Status> outcomes;
  std::vector<storage::LogEntry> gap = {Entry(5, Upsert("a", 2, {7}, 0))};
  EXPECT_FALSE(engine_->Apply(gap, &outcomes).ok()) << "a gap in applied indexes is refused";
}

TEST_F(EngineTest, RecreatedCollectionDoesNotReceiveOldWrites) {
  Apply({Entry(1, Create("a", 2))});
  Command up = Upsert("a", 2, {1}, 0);
  up.mutable_upsert_points()->set_collection_created_at(1);
  Command drop;
  drop.mutable_delete_collection()->set_name("a");
  auto out = Apply({Entry(2, drop), Entry(3, Create("a", 2)), Entry(4, up)});
  EXPECT_EQ(out[2].code(), StatusCode::kNotFound);
  EXPECT_EQ((*engine_->Find("a"))->Count(), 0u);
  Reopen();
  EXPECT_EQ((*engine_->Find("a"))->Count(), 0u);
}

TEST_F(EngineTest, SearchFindsExactNeighbours) {
  Apply({Entry(1, Create("a", 2)), Entry(2, Upsert("a", 2, {10, 20, 30}, 0))});
  auto c = *engine_->Find("a");
  std::vector<float> q = {20.0f, 20.01f};
  std::vector<std::vector<Hit>> hits;
  ASSERT_TRUE(c->Search({}, q.data(), 1, 5, {.with_payload = true, .with_vector = true}, &hits).ok());
  ASSERT_EQ(hits[0].size(), 3u);
  EXPECT_EQ(hits[0][0].id, 20u);
  EXPECT_NEAR(hits[0][0].score, 0.0f, 1e-6);
  EXPECT_EQ(hits[0][1].id, 10u);  // tie with 30 broken by row order
  EXPECT_EQ(hits[0][0].vector.size(), 2u);
}

TEST_F(EngineTest, ConcurrentSearchesWhileWritesApply) {
  Apply({Entry(1, Create("a", 8))});
  std::atomic<bool> done{false};
  std::atomic<size_t> searches{0};
  std::thread reader([&] {
    std::vector<float> q(8, 1.0f);
    std::vector<std::vector<Hit>> hits;
    kernels::Resources res;
    res.num_threads = 1;
    while (!done.load()) {
      auto c = engine_->Find("a");
      ASSERT_TRUE(c.ok());
      ASSERT_TRUE((*c)->Search(res, q.data(), 1, 5, {.with_payload = true}, &hits).ok());
      for (const auto& h : hits[0]) ASSERT_LT(h.id, 1000u);
      ++searches;
    }
  });
  // Writes start only once the reader runs, so they really overlap.
  while (searches.load() == 0) std::this_thread::yield();
  uint64_t index = 2;
  for (uint64_t i = 0; i < 200; ++i) {
    Apply({Entry(index++, Upsert("a", 8, {i % 50, (i * 7) % 50}, 0, "p"))});
    if (i % 3 == 0) Apply({Entry(index++, DeletePoints("a", {(i * 3) % 50}))});
  }
  done = true;
  reader.join();
  EXPECT_GT(searches.load(), 0u);
}

TEST_F(EngineTest, OpenStopsWhenAskedDuringLoad) {
  Apply({Entry(1, Create("a", 4))});
  std::vector<uint64_t> ids(10000);
  for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = i;
  Apply({Entry(2, Upsert("a", 4, ids, 0))});
  engine_.reset();
  std::atomic<bool> stop{true};
  auto e = Engine::Open(db_.get(), {}, &stop);
  EXPECT_EQ(e.status().code(), StatusCode::kCancelled);
}

// ---- segments ----

Command CreateSegmented(const std::string& name, uint32_t dim, quiver::v1::Metric metric, quiver::v1::IndexType type,
                        uint32_t segment_points, uint32_t nlist) {
  Command c = Create(name, dim, metric);
  auto* cfg = c.mutable_create_collection()->mutable_config();
  cfg->set_segment_max_points(segment_points);
  cfg->mutable_index()->set_type(type);
  cfg->mutable_index()->mutable_ivf_flat()->set_nlist(nlist);
  cfg->mutable_index()->mutable_ivf_pq()->set_nlist(nlist);
  return c;
}

Command UpsertVectors(const std::string& name, uint32_t dim, const std::vector<uint64_t>& ids,
                      const std::vector<float>& vectors) {
  Command c;
  auto* up = c.mutable_upsert_points();
  up->set_collection(name);
  up->set_dimension(dim);
  for (uint64_t id : ids) PutFixed64LE(up->mutable_ids(), id);
  up->set_vectors(std::string(reinterpret_cast<const char*>(vectors.data()), vectors.size() * sizeof(float)));
  return c;
}

// Checks a collection's search against the float64 reference over `live`
// (id -> vector): every hit's score equals its true score, and the scores per
// rank equal the reference's (so ids can differ only on exact ties).
void ExpectMatchesReference(const Collection& c, kernels::Metric metric, const std::map<uint64_t, std::vector<float>>& live,
                            const std::vector<float>& queries, size_t nq, size_t dim, size_t k, uint32_t nprobe,
                            uint32_t itopk = kMaxItopk) {
  std::vector<float> base;
  std::vector<uint64_t> ids;
  for (const auto& [id, v] : live) {
    ids.push_back(id);
    base.insert(base.end(), v.begin(), v.end());
  }
  auto ref = quiver::testing::ReferenceSearch(metric, base.data(), ids.size(), queries.data(), nq, dim);
  std::vector<std::vector<Hit>> hits;
  // A GRAPH beam as wide as the segments visits every node, and IVF_PQ
  // re-scoring k * 64 candidates covers them: exact too.
  ASSERT_TRUE(
      c.Search({}, queries.data(), nq, k, {.nprobe = nprobe, .itopk = itopk, .refine_factor = kMaxRefineFactor}, &hits)
          .ok());
  for (size_t q = 0; q < nq; ++q) {
    ASSERT_EQ(hits[q].size(), std::min(k, ids.size())) << "query " << q;
    std::map<uint64_t, double> truth;
    for (const auto& h : ref[q]) truth[ids[size_t(h.row)]] = h.score;
    for (size_t r = 0; r < hits[q].size(); ++r) {
      ASSERT_TRUE(truth.count(hits[q][r].id)) << "deleted or unknown id " << hits[q][r].id;
      EXPECT_NEAR(hits[q][r].score, truth[hits[q][r].id], quiver::testing::ScoreTolerance(truth[hits[q][r].id], 2.0 * dim));
      EXPECT_NEAR(hits[q][r].score, ref[q][r].score, quiver::testing::ScoreTolerance(ref[q][r].score, 2.0 * dim))
          << "query " << q << " rank " << r;
    }
  }
}

class SegmentTest : public EngineTest, public ::testing::WithParamInterface<quiver::v1::IndexType> {};

TEST_P(SegmentTest, SealsIndexesAndStaysExactAcrossOverwritesDeletesAndRestart) {
  const uint32_t dim = 8, nlist = 8;
  const size_t k = 10, nq = 20;
  Apply({Entry(1, CreateSegmented("s", dim, quiver::v1::L2, GetParam(), 256, nlist))});
  std::map<uint64_t, std::vector<float>> live;
  uint64_t index = 2;
  auto put = [&](std::vector<uint64_t> ids, uint64_t seed) {
    auto v = quiver::testing::RandomVectors(ids.size(), dim, seed);
    for (size_t i = 0; i < ids.size(); ++i) live[ids[i]].assign(v.begin() + long(i * dim), v.begin() + long((i + 1) * dim));
    auto out = Apply({Entry(index++, UpsertVectors("s", dim, ids, v))});
    ASSERT_TRUE(out[0].ok()) << out[0].ToString();
  };
  for (uint64_t b = 0; b < 10; ++b) {  // 1,000 points: three sealed segments and a growing one
    std::vector<uint64_t> ids(100);
    for (uint64_t i = 0; i < 100; ++i) ids[i] = b * 100 + i;
    put(ids, 100 + b);
  }
  // Overwrite points that now live in sealed segments, and delete others.
  put({3, 150, 400, 999}, 7);
  std::vector<uint64_t> gone = {5, 6, 260, 600, 998};
  Apply({Entry(index++, DeletePoints("s", gone))});
  for (uint64_t id : gone) live.erase(id);

  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  auto c = *engine_->Find("s");
  auto info = c->Info();
  EXPECT_EQ(info.points_count(), live.size());
  EXPECT_EQ(info.sealed_segments(), 3u);
  const bool indexed = GetParam() != quiver::v1::FLAT;
  EXPECT_EQ(info.indexed_segments(), indexed ? 3u : 0u);
  auto queries = quiver::testing::RandomVectors(nq, dim, 55);
  // nprobe = nlist makes IVF exact (and a wide beam GRAPH), so every index
  // type must match the reference.
  ExpectMatchesReference(*c, kernels::Metric::kL2, live, queries, nq, dim, k, nlist);
  // Querying with stored vectors: the point itself comes first, deleted ones never.
  for (uint64_t id : {3, 150, 400, 7, 700}) {
    std::vector<std::vector<Hit>> hits;
    ASSERT_TRUE(c->Search({}, live[id].data(), 1, 3, {.nprobe = 2}, &hits).ok());
    EXPECT_EQ(hits[0][0].id, id);
  }

  std::vector<std::vector<Hit>> before;
  ASSERT_TRUE(c->Search({}, queries.data(), nq, k, {.nprobe = 2}, &before).ok());

  Reopen();
  // Indexed segments come back from their files, not from a rebuild.
  EXPECT_EQ(engine_->segments_loaded(), indexed ? 3u : 0u);
  EXPECT_EQ(engine_->segment_files_discarded(), 0u);
  auto reopened = *engine_->Find("s");
  EXPECT_EQ(reopened->Info().indexed_segments(), indexed ? 3u : 0u) << "before any background work";
  EXPECT_EQ(reopened->Count(), live.size());
  // The same approximate answers as before the restart, id for id.
  std::vector<std::vector<Hit>> after;
  ASSERT_TRUE(reopened->Search({}, queries.data(), nq, k, {.nprobe = 2}, &after).ok());
  for (size_t q = 0; q < nq; ++q) {
    ASSERT_EQ(after[q].size(), before[q].size());
    for (size_t r = 0; r < after[q].size(); ++r) {
      EXPECT_EQ(after[q][r].id, before[q][r].id) << "query " << q << " rank " << r;
      EXPECT_EQ(after[q][r].score, before[q][r].score);
    }
  }
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  ExpectMatchesReference(*reopened, kernels::Metric::kL2, live, queries, nq, dim, k, nlist);
  // Overwrites and deletes after the restart still tombstone adopted rows.
  put({151, 152}, 8);
  Apply({Entry(index++, DeletePoints("s", {153, 154}))});
  live.erase(153);
  live.erase(154);
  ExpectMatchesReference(*reopened, kernels::Metric::kL2, live, queries, nq, dim, k, nlist);
  EXPECT_EQ(reopened->Count(), live.size());
}

INSTANTIATE_TEST_SUITE_P(IndexTypes, SegmentTest,
                         ::testing::Values(quiver::v1::FLAT, quiver::v1::IVF_FLAT, quiver::v1::IVF_PQ, quiver::v1::GRAPH),
                         [](const auto& info) { return quiver::v1::IndexType_Name(info.param); });

TEST_F(EngineTest, IvfFlatRecallAcrossSegmentsAtDefaultNprobe) {
  const uint32_t dim = 16;
  const size_t n = 4000, nq = 50, k = 10;
  Apply({Entry(1, CreateSegmented("ivf", dim, quiver::v1::COSINE, quiver::v1::IVF_FLAT, 1000, 32))});
  auto base = quiver::testing::ClusteredVectors(n + nq, dim, 8, 3, /*unit=*/true);
  std::vector<uint64_t> ids(n);
  for (uint64_t i = 0; i < n; ++i) ids[i] = i;
  Apply({Entry(2, UpsertVectors("ivf", dim, ids, std::vector<float>(base.begin(), base.begin() + long(n * dim))))});
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  std::vector<float> queries(base.begin() + long(n * dim), base.end());
  auto c = *engine_->Find("ivf");
  EXPECT_EQ(c->Info().indexed_segments(), 4u);
  std::vector<float> norms(n);
  kernels::SquaredNorms(base.data(), n, dim, norms.data());
  std::vector<int64_t> truth(nq * k);
  std::vector<float> ts(nq * k);
  ASSERT_TRUE(kernels::FlatSearch({}, {base.data(), norms.data(), n, dim}, queries.data(), nq,
                                  {kernels::Metric::kCosine, k}, truth.data(), ts.data()).ok());
  std::vector<std::vector<Hit>> hits;
  ASSERT_TRUE(c->Search({}, queries.data(), nq, k, {.nprobe = 8}, &hits).ok());
  size_t found = 0;
  for (size_t q = 0; q < nq; ++q) {
    for (const auto& h : hits[q]) {
      for (size_t j = 0; j < k; ++j) found += truth[q * k + j] == int64_t(h.id);
    }
  }
  const double recall = double(found) / double(nq * k);
  std::printf("IVF_FLAT over 4 segments, nprobe 8 of 32: recall@10 = %.3f\n", recall);
  EXPECT_GE(recall, 0.9);
}

TEST_F(EngineTest, CompactionDropsTombstonesAndKeepsResultsExact) {
  const uint32_t dim = 6, nlist = 4;
  Apply({Entry(1, CreateSegmented("c", dim, quiver::v1::L2, quiver::v1::IVF_FLAT, 128, nlist))});
  std::map<uint64_t, std::vector<float>> live;
  std::vector<uint64_t> ids(600);
  for (uint64_t i = 0; i < 600; ++i) ids[i] = i;
  auto v = quiver::testing::RandomVectors(600, dim, 4);
  for (uint64_t i = 0; i < 600; ++i) live[i].assign(v.begin() + long(i * dim), v.begin() + long((i + 1) * dim));
  Apply({Entry(2, UpsertVectors("c", dim, ids, v))});
  std::vector<uint64_t> gone;
  for (uint64_t i = 0; i < 512; i += 2) gone.push_back(i);  // half of every sealed segment
  Apply({Entry(3, DeletePoints("c", gone))});
  for (uint64_t id : gone) live.erase(id);
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  auto c = *engine_->Find("c");
  auto info = c->Info();
  EXPECT_EQ(info.tombstones(), 0u) << "every sealed segment was past the 30% threshold";
  EXPECT_EQ(info.sealed_segments(), 4u);
  EXPECT_EQ(info.indexed_segments(), 4u) << "compacted segments carry a rebuilt index";
  EXPECT_EQ(info.points_count(), live.size());
  auto queries = quiver::testing::RandomVectors(15, dim, 9);
  ExpectMatchesReference(*c, kernels::Metric::kL2, live, queries, 15, dim, 10, nlist);
  // Points moved rows: Get and overwrite must still find them.
  std::vector<uint64_t> probe = {1, 3, 511};
  auto pts = c->Get(probe, false, true);
  ASSERT_EQ(pts.size(), 3u);
  EXPECT_EQ(pts[2].vector, live[511]);
  Apply({Entry(4, UpsertVectors("c", dim, {3}, std::vector<float>(dim, 0.5f)))});
  live[3].assign(dim, 0.5f);
  ExpectMatchesReference(*c, kernels::Metric::kL2, live, queries, 15, dim, 10, nlist);
  EXPECT_EQ(c->Count(), live.size());
}

// ---- the GPU ----

// Points 0..n-1 with random vectors; every `delete_every`-th is in `gone`, and
// `live` maps the rest to their vectors (what searches must see).
struct PointSet {
  std::vector<uint64_t> ids;
  std::vector<float> vectors;
  std::vector<uint64_t> gone;
  std::map<uint64_t, std::vector<float>> live;
};

PointSet MakePointSet(size_t n, uint32_t dim, uint64_t seed, uint64_t delete_every) {
  PointSet p;
  p.vectors = quiver::testing::RandomVectors(n, dim, seed);
  for (uint64_t i = 0; i < n; ++i) {
    p.ids.push_back(i);
    if (i % delete_every == 0) {
      p.gone.push_back(i);
    } else {
      p.live[i].assign(p.vectors.begin() + long(i * dim), p.vectors.begin() + long((i + 1) * dim));
    }
  }
  return p;
}

TEST(GpuExecutor, SaysWhyItCannotServe) {
  std::string why;
  EXPECT_EQ(GpuExecutor::Open({.device = -1}, &why), nullptr);
  EXPECT_NE(why.find("disabled"), std::string::npos) << why;
  why.clear();
  auto gpu = GpuExecutor::Open({}, &why);
  if (gpu == nullptr) {
    EXPECT_FALSE(why.empty()) << "no GPU and no reason";
  } else {
    EXPECT_GT(gpu->stats().budget_bytes, 0u);
  }
}

// Sealed FLAT segments are served by the GPU, tombstones applied inside the
// kernel, with the CPU's results; a GPU that cannot hold a segment falls back
// to the CPU, counted, with the same results.
TEST_F(EngineTest, GpuServesSealedSegmentsExactlyAndFallsBackWhenItCannot) {
  std::string why;
  auto gpu = GpuExecutor::Open({}, &why);
  if (gpu == nullptr) GTEST_SKIP() << "no GPU: " << why;
  const uint32_t dim = 12;
  // Four sealed segments of 500 and a growing one; every 7th point deleted.
  const auto [ids, v, gone, live] = MakePointSet(2100, dim, 21, 7);
  auto queries = quiver::testing::RandomVectors(20, dim, 22);
  const std::vector<std::pair<quiver::v1::Metric, kernels::Metric>> metrics = {
      {quiver::v1::L2, kernels::Metric::kL2},
      {quiver::v1::IP, kernels::Metric::kInnerProduct},
      {quiver::v1::COSINE, kernels::Metric::kCosine}};
  auto load = [&] {
    uint64_t index = 1;
    for (const auto& [metric, kmetric] : metrics) {
      const std::string name = "c" + std::to_string(int(metric));
      Apply({Entry(index++, CreateSegmented(name, dim, metric, quiver::v1::FLAT, 500, 1))});
      Apply({Entry(index++, UpsertVectors(name, dim, ids, v))});
      Apply({Entry(index++, DeletePoints(name, gone))});
    }
  };

  options_.gpu = gpu;
  Reopen();
  load();
  for (const auto& [metric, kmetric] : metrics) {
    auto c = *engine_->Find("c" + std::to_string(int(metric)));
    EXPECT_EQ(c->Info().sealed_segments(), 4u);
    ExpectMatchesReference(*c, kmetric, live, queries, 20, dim, 10, 1);
  }
  auto stats = gpu->stats();
  EXPECT_EQ(stats.searches, 3u * 4u) << "every sealed segment of every collection, on the GPU";
  EXPECT_EQ(stats.fallbacks, 0u);
  EXPECT_EQ(stats.resident_segments, 3u * 4u);
  EXPECT_GT(stats.resident_bytes, 0u);

  // A budget too small for any segment: every sealed search falls back.
  auto tiny = GpuExecutor::Open({.memory_budget_bytes = 4096}, &why);
  ASSERT_NE(tiny, nullptr) << why;
  options_.gpu = tiny;
  engine_.reset();
  db_.reset();
  std::filesystem::remove_all(dir_.path());
  std::filesystem::create_directories(dir_.path());
  Reopen();
  load();
  for (const auto& [metric, kmetric] : metrics) {
    ExpectMatchesReference(**engine_->Find("c" + std::to_string(int(metric))), kmetric, live, queries, 20, dim, 10, 1);
  }
  EXPECT_EQ(tiny->stats().searches, 0u);
  EXPECT_EQ(tiny->stats().fallbacks, 3u * 4u);
  // Collections that go away release their segments. GPU copies.
  engine_.reset();
  EXPECT_EQ(gpu->stats().resident_segments, 0u) << "the first engine's collections are gone";
}

// ---- dynamic batching ----

// Many threads searching at once through the batcher: every call gets exactly
// what a direct search of its own queries returns, whatever it was batched
// with (other k, other sizes); filtered calls bypass batching.
TEST_F(EngineTest, BatchedSearchesReturnEachCallsOwnResults) {
  const uint32_t dim = 8;
  const size_t n = 1500;
  Apply({Entry(1, CreateSegmented("c", dim, quiver::v1::L2, quiver::v1::FLAT, 400, 1))});
  std::vector<uint64_t> ids(n);
  for (uint64_t i = 0; i < n; ++i) ids[i] = i;
  Apply({Entry(2, UpsertVectors("c", dim, ids, quiver::testing::RandomVectors(n, dim, 5)))});
  auto coll = *engine_->Find("c");
  // The points have no payload, so NOT(bucket == 1) keeps them all.
  quiver::v1::Filter keep_all;
  keep_all.mutable_not_()->mutable_match()->set_key("bucket");
  keep_all.mutable_not_()->mutable_match()->mutable_value()->set_int_value(1);

  SearchBatcher batcher({.max_queries = 16, .max_wait_us = 2000});
  const size_t threads = 12, calls_per_thread = 40;
  const auto queries = quiver::testing::RandomVectors(threads * calls_per_thread * 3, dim, 6);
  std::atomic<size_t> mismatches{0}, failures{0};
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (size_t i = 0; i < calls_per_thread; ++i) {
        const size_t call = t * calls_per_thread + i;
        const size_t nq = 1 + call % 3;        // 1..3 queries
        const size_t k = call % 2 ? 5 : 10;    // two keys batch apart
        SearchOptions options;
        if (call % 11 == 0) options.filter = &keep_all;
        const float* q = queries.data() + call * 3 * dim;
        std::vector<std::vector<Hit>> got, want;
        const Status st = batcher.Search(*coll, q, nq, k, options, [](size_t) { return kernels::Resources{1, nullptr}; },
                                         &got);
        if (!st.ok() || !coll->Search({1, nullptr}, q, nq, k, options, &want).ok()) {
          ++failures;
          continue;
        }
        if (got.size() != want.size()) {
          ++mismatches;
          continue;
        }
        for (size_t j = 0; j < nq; ++j) {
          if (got[j].size() != want[j].size()) {
            ++mismatches;
            continue;
          }
          for (size_t r = 0; r < got[j].size(); ++r) {
            if (got[j][r].id != want[j][r].id || got[j][r].score != want[j][r].score) ++mismatches;
          }
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(failures.load(), 0u);
  EXPECT_EQ(mismatches.load(), 0u);
  const size_t filtered = (threads * calls_per_thread + 10) / 11;
  EXPECT_EQ(batcher.stats().calls, threads * calls_per_thread - filtered) << "every unfiltered call went through a batch";
}

// The shared search threads: every task of every concurrent Run runs exactly
// once, on the pool's threads, before its Run returns.
TEST(SearchPool, RunsEveryTaskOfConcurrentCallsExactlyOnce) {
  SearchPool pool(3);
  const size_t callers = 6, runs = 50, tasks = 37;
  std::vector<std::atomic<int>> count(callers * runs * tasks);
  std::atomic<size_t> on_caller_thread{0};
  std::vector<std::thread> threads;
  for (size_t c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      for (size_t r = 0; r < runs; ++r) {
        const size_t base = (c * runs + r) * tasks;
        const auto caller = std::this_thread::get_id();
        pool.Run(tasks, [&](size_t i) {
          count[base + i]++;
          if (std::this_thread::get_id() == caller) ++on_caller_thread;
        });
        for (size_t i = 0; i < tasks; ++i) ASSERT_EQ(count[base + i].load(), 1) << "run " << r << " task " << i;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(on_caller_thread.load(), 0u);
  pool.Run(0, [](size_t) { FAIL() << "no task to run"; });
}

TEST(SearchPool, ChunksHoldSixteenQueriesWhereEveryThreadStillGetsOne) {
  SearchPool two(2);
  EXPECT_EQ(two.ChunkQueries(1), 1u);
  EXPECT_EQ(two.ChunkQueries(10), 5u);    // 16 would leave a thread idle
  EXPECT_EQ(two.ChunkQueries(100), 16u);  // 7 chunks
  EXPECT_EQ(two.ChunkQueries(1000), 125u);  // four chunks per thread
  SearchPool one(0);                        // at least one thread
  EXPECT_EQ(one.threads(), 1u);
  EXPECT_EQ(one.ChunkQueries(100), 25u);
}

// A call split into chunks gets what one search of all its queries returns,
// in order, for IVF_FLAT segments searched alongside the growing one, while
// other threads search through the same pool.
TEST_F(EngineTest, SearchPoolReturnsWhatOneSearchOfTheWholeCallReturns) {
  const uint32_t dim = 8;
  const size_t n = 3050;  // three sealed segments and 50 growing points
  Apply({Entry(1, CreateSegmented("c", dim, quiver::v1::L2, quiver::v1::IVF_FLAT, 1000, 16))});
  std::vector<uint64_t> ids(n);
  for (uint64_t i = 0; i < n; ++i) ids[i] = i;
  Apply({Entry(2, UpsertVectors("c", dim, ids, quiver::testing::RandomVectors(n, dim, 5)))});
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  auto coll = *engine_->Find("c");
  SearchPool pool(2);
  const auto queries = quiver::testing::RandomVectors(300, dim, 6);
  std::atomic<size_t> mismatches{0}, failures{0};
  std::vector<std::thread> threads;
  for (size_t t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (size_t nq : {1, 2, 15, 17, 100, 300}) {
        SearchOptions options;
        options.nprobe = static_cast<uint32_t>(1 + t);
        std::vector<std::vector<Hit>> got, want;
        if (!pool.Search(*coll, queries.data(), nq, 7, options, &got).ok() ||
            !coll->Search({1, nullptr}, queries.data(), nq, 7, options, &want).ok()) {
          ++failures;
          continue;
        }
        if (got.size() != nq || want.size() != nq) {
          ++mismatches;
          continue;
        }
        for (size_t q = 0; q < nq; ++q) {
          if (got[q].size() != want[q].size()) ++mismatches;
          for (size_t r = 0; r < std::min(got[q].size(), want[q].size()); ++r) {
            if (got[q][r].id != want[q][r].id || got[q][r].score != want[q][r].score) ++mismatches;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0u);
  EXPECT_EQ(mismatches.load(), 0u);
}

// While another search is running (a filtered call, held inside its resources
// callback), two compatible calls arrive: q1 (all ones) and q3 (all threes),
// k = 1. Returns their hits; the collection holds points 1, 2, 3 from
// Upsert(..., 0.0f), so q1's nearest is 1 and q3's is 3.
std::pair<std::vector<std::vector<Hit>>, std::vector<std::vector<Hit>>> SearchTwoWhileAnotherRuns(
    SearchBatcher& batcher, const Collection& coll, uint32_t dim) {
  quiver::v1::Filter keep_all;  // points without payload: NOT(bucket == 1) keeps them all
  keep_all.mutable_not_()->mutable_match()->set_key("bucket");
  keep_all.mutable_not_()->mutable_match()->mutable_value()->set_int_value(1);
  std::promise<void> entered, release;
  std::shared_future<void> released = release.get_future().share();
  std::thread running([&] {
    SearchOptions filtered;
    filtered.filter = &keep_all;
    std::vector<float> q(dim, 0.0f);
    std::vector<std::vector<Hit>> hits;
    EXPECT_TRUE(batcher.Search(coll, q.data(), 1, 1, filtered, [&](size_t) {
                  entered.set_value();
                  released.wait();
                  return kernels::Resources{};
                }, &hits).ok());
  });
  entered.get_future().wait();
  const std::vector<float> q1(dim, 1.0f), q3(dim, 3.0f);
  std::vector<std::vector<Hit>> a, b;
  auto cpu = [](size_t) { return kernels::Resources{}; };
  std::thread first([&] { EXPECT_TRUE(batcher.Search(coll, q1.data(), 1, 1, {}, cpu, &a).ok()); });
  std::thread second([&] { EXPECT_TRUE(batcher.Search(coll, q3.data(), 1, 1, {}, cpu, &b).ok()); });
  first.join();
  second.join();
  release.set_value();
  running.join();
  return {std::move(a), std::move(b)};
}

void ExpectNearestAreOneAndThree(const std::vector<std::vector<Hit>>& a, const std::vector<std::vector<Hit>>& b) {
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  ASSERT_EQ(a[0].size(), 1u);
  ASSERT_EQ(b[0].size(), 1u);
  EXPECT_EQ(a[0][0].id, 1u);
  EXPECT_EQ(b[0][0].id, 3u);
}

// On a FLAT collection the first waits for company, the second fills the
// batch, and one search serves both with their own results.
TEST_F(EngineTest, CallsArrivingWhileAnotherSearchRunsShareOneSearch) {
  const uint32_t dim = 4;
  Apply({Entry(1, Create("c", dim))});
  Apply({Entry(2, Upsert("c", dim, {1, 2, 3}, 0.0f))});
  auto coll = *engine_->Find("c");
  // No deadline in play: the batch closes when full (2 queries), long before.
  SearchBatcher batcher({.max_queries = 2, .max_wait_us = 600'000'000});
  const auto [a, b] = SearchTwoWhileAnotherRuns(batcher, *coll, dim);
  EXPECT_EQ(batcher.stats().searches, 1u) << "the two calls were not batched";
  EXPECT_EQ(batcher.stats().calls, 2u);
  ExpectNearestAreOneAndThree(a, b);
}

// A collection whose CPU index searches query by query is not batched: the
// same two calls each run a search of their own on a GRAPH collection.
TEST_F(EngineTest, CallsToACpuIndexAreNotBatched) {
  const uint32_t dim = 4;
  Apply({Entry(1, CreateSegmented("g", dim, quiver::v1::L2, quiver::v1::GRAPH, 1000, 4)), Entry(2, Create("f", dim))});
  Apply({Entry(3, Upsert("g", dim, {1, 2, 3}, 0.0f))});
  auto coll = *engine_->Find("g");
  EXPECT_FALSE(coll->GainsFromBatching());
  EXPECT_TRUE((*engine_->Find("f"))->GainsFromBatching()) << "a FLAT collection on the CPU batches";
  SearchBatcher batcher({.max_queries = 2, .max_wait_us = 600'000'000});
  const auto [a, b] = SearchTwoWhileAnotherRuns(batcher, *coll, dim);
  EXPECT_EQ(batcher.stats().calls, 0u) << "the calls went through the batcher";
  ExpectNearestAreOneAndThree(a, b);
}

TEST_F(EngineTest, ALoneSearchIsNotDelayedOrBatched) {
  const uint32_t dim = 4;
  Apply({Entry(1, Create("c", dim))});
  Apply({Entry(2, Upsert("c", dim, {1, 2, 3}, 0.0f))});
  auto coll = *engine_->Find("c");
  // A wait far longer than any test timeout: a lone call must not take it.
  SearchBatcher batcher({.max_queries = 64, .max_wait_us = 600'000'000});
  std::vector<float> q(dim, 2.0f);
  for (int i = 0; i < 3; ++i) {
    std::vector<std::vector<Hit>> hits;
    ASSERT_TRUE(batcher.Search(*coll, q.data(), 1, 2, {}, [](size_t) { return kernels::Resources{}; }, &hits).ok());
    ASSERT_EQ(hits.size(), 1u);
    ASSERT_EQ(hits[0].size(), 2u);
    EXPECT_EQ(hits[0][0].id, 2u);
  }
  EXPECT_EQ(batcher.stats().searches, 3u);
  EXPECT_EQ(batcher.stats().calls, 3u);
}

// IVF_FLAT segments are searched on the GPU through their index (all lists
// probed here, so the results are exact and checkable).
TEST_F(EngineTest, GpuServesIvfFlatSegmentsThroughTheirIndex) {
  std::string why;
  auto gpu = GpuExecutor::Open({}, &why);
  if (gpu == nullptr) GTEST_SKIP() << "no GPU: " << why;
  options_.gpu = gpu;
  Reopen();
  const uint32_t dim = 10, nlist = 4;
  const auto [ids, v, gone, live] = MakePointSet(2100, dim, 31, 9);
  Apply({Entry(1, CreateSegmented("c", dim, quiver::v1::L2, quiver::v1::IVF_FLAT, 500, nlist))});
  Apply({Entry(2, UpsertVectors("c", dim, ids, v))});
  Apply({Entry(3, DeletePoints("c", gone))});
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  auto c = *engine_->Find("c");
  ASSERT_EQ(c->Info().indexed_segments(), 4u);
  auto queries = quiver::testing::RandomVectors(12, dim, 32);
  ExpectMatchesReference(*c, kernels::Metric::kL2, live, queries, 12, dim, 10, nlist);
  EXPECT_EQ(gpu->stats().searches, 4u);
  EXPECT_EQ(gpu->stats().fallbacks, 0u);
  EXPECT_EQ(gpu->stats().resident_segments, 4u);
}

// GRAPH segments are built with their kNN graphs on the GPU and searched
// there through their graph; a beam wider than a segment (500 points)
// reaches all of its nodes, so the results are exact and checkable.
TEST_F(EngineTest, GpuServesGraphSegmentsThroughTheirGraph) {
  std::string why;
  auto gpu = GpuExecutor::Open({}, &why);
  if (gpu == nullptr) GTEST_SKIP() << "no GPU: " << why;
  options_.gpu = gpu;
  Reopen();
  const uint32_t dim = 10;
  const auto [ids, v, gone, live] = MakePointSet(2100, dim, 41, 9);
  Apply({Entry(1, CreateSegmented("g", dim, quiver::v1::COSINE, quiver::v1::GRAPH, 500, 4))});
  Apply({Entry(2, UpsertVectors("g", dim, ids, v))});
  Apply({Entry(3, DeletePoints("g", gone))});
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  auto c = *engine_->Find("g");
  ASSERT_EQ(c->Info().indexed_segments(), 4u);
  auto queries = quiver::testing::RandomVectors(12, dim, 42);
  ExpectMatchesReference(*c, kernels::Metric::kCosine, live, queries, 12, dim, 10, 1,
                         static_cast<uint32_t>(kernels::gpu::kMaxGraphItopk));
  EXPECT_EQ(gpu->stats().graph_builds, 4u);
  EXPECT_EQ(gpu->stats().searches, 4u);
  EXPECT_EQ(gpu->stats().fallbacks, 0u);
  EXPECT_EQ(gpu->stats().resident_segments, 4u);
}

// IVF_PQ segments too: all lists probed and k * 64 candidates re-scored,
// so the results are exact and checkable.
TEST_F(EngineTest, GpuServesIvfPqSegmentsThroughTheirIndex) {
  std::string why;
  auto gpu = GpuExecutor::Open({}, &why);
  if (gpu == nullptr) GTEST_SKIP() << "no GPU: " << why;
  options_.gpu = gpu;
  Reopen();
  const uint32_t dim = 12, nlist = 4;
  const auto [ids, v, gone, live] = MakePointSet(2100, dim, 51, 9);
  Apply({Entry(1, CreateSegmented("p", dim, quiver::v1::IP, quiver::v1::IVF_PQ, 500, nlist))});
  Apply({Entry(2, UpsertVectors("p", dim, ids, v))});
  Apply({Entry(3, DeletePoints("p", gone))});
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  auto c = *engine_->Find("p");
  ASSERT_EQ(c->Info().indexed_segments(), 4u);
  auto queries = quiver::testing::RandomVectors(12, dim, 52);
  ExpectMatchesReference(*c, kernels::Metric::kInnerProduct, live, queries, 12, dim, 10, nlist);
  EXPECT_EQ(gpu->stats().searches, 4u);
  EXPECT_EQ(gpu->stats().fallbacks, 0u);
  EXPECT_EQ(gpu->stats().resident_segments, 4u);
}

// ---- segment files ----

size_t ListedSegmentFiles(storage::Db* db) {
  storage::SegmentStore store(db);
  auto refs = store.List();
  EXPECT_TRUE(refs.ok());
  return refs.ok() ? refs->size() : 0;
}

enum class Damage { kFlipByte, kTruncate, kDelete, kSwapWithAnother };

class SegmentFileDamageTest : public EngineTest, public ::testing::WithParamInterface<Damage> {};

// A damaged segment file is found at start, named in the log, and its points
// are re-indexed from the stored vectors: the answers stay exact.
TEST_P(SegmentFileDamageTest, IsDetectedAndRebuilt) {
  const uint32_t dim = 8, nlist = 4;
  Apply({Entry(1, CreateSegmented("d", dim, quiver::v1::COSINE, quiver::v1::IVF_FLAT, 200, nlist))});
  std::map<uint64_t, std::vector<float>> live;
  std::vector<uint64_t> ids(700);
  for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = i;
  auto v = quiver::testing::RandomVectors(ids.size(), dim, 21);
  for (uint64_t i = 0; i < ids.size(); ++i) live[i].assign(v.begin() + long(i * dim), v.begin() + long((i + 1) * dim));
  Apply({Entry(2, UpsertVectors("d", dim, ids, v))});
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  ASSERT_EQ(ListedSegmentFiles(db_.get()), 3u);

  const uint64_t coll_id = (*engine_->Find("d"))->id();
  storage::SegmentStore store(db_.get());
  const std::string victim = store.PathOf(coll_id, 2);
  std::string bytes;
  {
    std::ifstream in(victim, std::ios::binary);
    ASSERT_TRUE(in.good()) << victim;
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  switch (GetParam()) {
    case Damage::kFlipByte: bytes[bytes.size() / 2] ^= 0x10; break;
    case Damage::kTruncate: bytes.resize(bytes.size() - 100); break;
    case Damage::kDelete: bytes.clear(); break;
    case Damage::kSwapWithAnother: {  // a whole, valid file, but segment 1's
      std::ifstream in(store.PathOf(coll_id, 1), std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
      break;
    }
  }
  if (GetParam() == Damage::kDelete) {
    std::filesystem::remove(victim);
  } else {
    std::ofstream(victim, std::ios::binary | std::ios::trunc) << bytes;
  }

  Reopen();
  EXPECT_EQ(engine_->segments_loaded(), 2u);
  EXPECT_EQ(engine_->segment_files_discarded(), 1u);
  auto c = *engine_->Find("d");
  EXPECT_EQ(c->Count(), live.size());
  auto queries = quiver::testing::RandomVectors(10, dim, 22);
  ExpectMatchesReference(*c, kernels::Metric::kCosine, live, queries, 10, dim, 10, nlist);
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  EXPECT_EQ(c->Info().indexed_segments(), c->Info().sealed_segments()) << "the lost index was rebuilt";
  EXPECT_EQ(ListedSegmentFiles(db_.get()), c->Info().sealed_segments()) << "and written again";
  ExpectMatchesReference(*c, kernels::Metric::kCosine, live, queries, 10, dim, 10, nlist);
  Reopen();
  EXPECT_EQ(engine_->segment_files_discarded(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Damages, SegmentFileDamageTest,
                         ::testing::Values(Damage::kFlipByte, Damage::kTruncate, Damage::kDelete, Damage::kSwapWithAnother));

TEST_F(EngineTest, SegmentFilesFollowCompactionAndCollectionDeletes) {
  const uint32_t dim = 4;
  Apply({Entry(1, CreateSegmented("f", dim, quiver::v1::L2, quiver::v1::IVF_FLAT, 100, 2))});
  std::vector<uint64_t> ids(350);
  for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = i;
  Apply({Entry(2, UpsertVectors("f", dim, ids, quiver::testing::RandomVectors(ids.size(), dim, 3)))});
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  EXPECT_EQ(ListedSegmentFiles(db_.get()), 3u);
  std::vector<uint64_t> gone;
  for (uint64_t i = 0; i < 100; i += 2) gone.push_back(i);  // half of the first segment: compacted
  Apply({Entry(3, DeletePoints("f", gone))});
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  EXPECT_EQ(ListedSegmentFiles(db_.get()), 3u) << "the compacted segment's file replaced the old one";
  Reopen();
  EXPECT_EQ(engine_->segments_loaded(), 3u);
  EXPECT_EQ((*engine_->Find("f"))->Info().tombstones(), 0u);
  EXPECT_EQ((*engine_->Find("f"))->Count(), 300u);

  Command drop;
  drop.mutable_delete_collection()->set_name("f");
  Apply({Entry(4, drop)});
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  EXPECT_EQ(ListedSegmentFiles(db_.get()), 0u);
  EXPECT_TRUE(std::filesystem::is_empty(dir_.path() + "/segments"));
}

// Searches, writes that tombstone sealed rows, and background index builds
// all at once (run under ThreadSanitizer by `make test`).
// Every approximate index type: searches run while writes seal segments,
// background builds install indexes and compaction rewrites segments (the
// TSan job runs this).
// What a follower that fell behind installs: the leader's state and segment
// files, exported at one point, replace everything the follower held.
TEST_F(EngineTest, SnapshotReplacesAnotherNodesStateExactly) {
  const uint32_t dim = 8, nlist = 8;
  Command create = CreateSegmented("s", dim, quiver::v1::L2, quiver::v1::IVF_FLAT, 256, nlist);
  create.set_client_id("c1");
  create.set_sequence(5);
  Apply({Entry(1, create), Entry(2, Create("t", 3))});
  std::map<uint64_t, std::vector<float>> live;
  uint64_t index = 3;
  for (uint64_t b = 0; b < 8; ++b) {  // 800 points: three sealed, indexed segments
    std::vector<uint64_t> ids(100);
    for (uint64_t i = 0; i < 100; ++i) ids[i] = b * 100 + i;
    auto v = quiver::testing::RandomVectors(ids.size(), dim, 300 + b);
    for (size_t i = 0; i < ids.size(); ++i) live[ids[i]].assign(v.begin() + long(i * dim), v.begin() + long((i + 1) * dim));
    ASSERT_TRUE(Apply({Entry(index++, UpsertVectors("s", dim, ids, v))})[0].ok());
  }
  Apply({Entry(index++, DeletePoints("s", {7, 450})), Entry(index++, Upsert("t", 3, {1, 2}, 0.5f, "payload"))});
  live.erase(7);
  live.erase(450);
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  const uint64_t leader_applied = engine_->AppliedIndex();

  quiver::testing::TempDir snapshot;
  auto exported = engine_->ExportSnapshot(snapshot.path(), nullptr);
  ASSERT_TRUE(exported.ok()) << exported.status().ToString();
  EXPECT_EQ(*exported, leader_applied);
  // Later writes on the leader are not in it.
  Apply({Entry(index++, Upsert("t", 3, {3}, 0.5f))});

  // The follower held something else entirely.
  quiver::testing::TempDir follower_dir;
  auto follower_db = std::move(storage::Db::Open(follower_dir.path())).value();
  auto follower = std::move(Engine::Open(follower_db.get(), {}, nullptr)).value();
  std::vector<Status> out;
  ASSERT_TRUE(follower->Apply(std::vector<storage::LogEntry>{Entry(1, Create("old", 4)), Entry(2, Upsert("old", 4, {9}, 1))},
                              &out)
                  .ok());

  // A damaged file is refused before anything changes.
  {
    quiver::testing::TempDir damaged;
    std::filesystem::copy(snapshot.path(), damaged.path());
    const std::string vectors = damaged.path() + "/" + std::string(storage::StateStore::kSnapshotVectorsFile);
    std::fstream f(vectors, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x5a');
    f.close();
    auto bad = follower->InstallSnapshot(damaged.path(), nullptr);
    EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss) << bad.status().ToString();
    EXPECT_TRUE(follower->Find("old").ok());
    EXPECT_EQ(follower->AppliedIndex(), 2u);
  }

  auto installed = follower->InstallSnapshot(snapshot.path(), nullptr);
  ASSERT_TRUE(installed.ok()) << installed.status().ToString();
  EXPECT_EQ(*installed, leader_applied);
  auto check = [&](Engine& e, uint64_t applied) {
    EXPECT_EQ(e.AppliedIndex(), applied);
    EXPECT_EQ(e.Find("old").status().code(), StatusCode::kNotFound);
    auto t = *e.Find("t");
    EXPECT_EQ(t->Count(), 2u);
    std::vector<uint64_t> ids = {1, 3};
    auto pts = t->Get(ids, true, true);
    ASSERT_EQ(pts.size(), 1u);
    EXPECT_EQ(pts[0].payload, "payload");
    auto s = *e.Find("s");
    EXPECT_EQ(s->Count(), live.size());
    auto queries = quiver::testing::RandomVectors(20, dim, 77);
    ExpectMatchesReference(*s, kernels::Metric::kL2, live, queries, 20, dim, 10, nlist);
    // The same approximate answers as the leader's, id for id.
    std::vector<std::vector<Hit>> mine, theirs;
    ASSERT_TRUE(s->Search({}, queries.data(), 20, 10, {.nprobe = 2}, &mine).ok());
    ASSERT_TRUE((*engine_->Find("s"))->Search({}, queries.data(), 20, 10, {.nprobe = 2}, &theirs).ok());
    for (size_t q = 0; q < 20; ++q) {
      ASSERT_EQ(mine[q].size(), theirs[q].size());
      for (size_t r = 0; r < mine[q].size(); ++r) EXPECT_EQ(mine[q][r].id, theirs[q][r].id);
    }
    // The request records came along: a retry of the create is answered, not re-applied.
    Command retry = CreateSegmented("s", dim, quiver::v1::L2, quiver::v1::IVF_FLAT, 256, nlist);
    retry.set_client_id("c1");
    retry.set_sequence(4);
    std::vector<Status> o;
    ASSERT_TRUE(e.Apply(std::vector<storage::LogEntry>{Entry(e.AppliedIndex() + 1, retry)}, &o).ok());
    EXPECT_EQ(o[0].code(), StatusCode::kFailedPrecondition) << o[0].ToString();
  };
  // The sealed segments came as files, not rebuilt.
  EXPECT_EQ(follower->segments_loaded(), 3u);
  EXPECT_EQ((*follower->Find("s"))->Info().indexed_segments(), 3u);
  check(*follower, leader_applied);
  // And it all survives a restart (with the retry check's entry applied).
  follower.reset();
  follower = std::move(Engine::Open(follower_db.get(), {}, nullptr)).value();
  EXPECT_EQ(follower->segment_files_discarded(), 0u);
  check(*follower, leader_applied + 1);
}

class ConcurrentIndexTest : public EngineTest, public ::testing::WithParamInterface<quiver::v1::IndexType> {};

TEST_P(ConcurrentIndexTest, SearchesDuringWritesAndIndexBuilds) {
  const uint32_t dim = 8;
  Apply({Entry(1, CreateSegmented("c", dim, quiver::v1::IP, GetParam(), 64, 4))});
  std::atomic<bool> done{false};
  std::atomic<size_t> searches{0};
  std::thread reader([&] {
    auto q = quiver::testing::RandomVectors(1, dim, 1);
    std::vector<std::vector<Hit>> hits;
    kernels::Resources res;
    res.num_threads = 1;
    while (!done.load()) {
      auto c = engine_->Find("c");
      ASSERT_TRUE(c.ok());
      ASSERT_TRUE((*c)->Search(res, q.data(), 1, 5, {.nprobe = 2, .with_payload = true}, &hits).ok());
      for (const auto& h : hits[0]) ASSERT_LT(h.id, 400u);
      (void)(*c)->Info();
      ++searches;
    }
  });
  while (searches.load() == 0) std::this_thread::yield();
  uint64_t index = 2;
  for (uint64_t i = 0; i < 40; ++i) {
    std::vector<uint64_t> ids;
    for (uint64_t j = 0; j < 20; ++j) ids.push_back((i * 20 + j) % 400);  // wraps: overwrites sealed rows
    Apply({Entry(index++, UpsertVectors("c", dim, ids, quiver::testing::RandomVectors(ids.size(), dim, i)))});
    Apply({Entry(index++, DeletePoints("c", {(i * 7) % 400}))});
  }
  ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
  done = true;
  reader.join();
  const auto info = (*engine_->Find("c"))->Info();
  EXPECT_GT(info.sealed_segments(), 3u);
  // 800 upserts over 400 ids: half were overwrites of sealed rows. Compaction
  // ran concurrently and keeps every segment under its 30% threshold.
  EXPECT_LT(info.tombstones(), 0.3 * 64 * info.sealed_segments());
  EXPECT_EQ(engine_->failed_index_builds(), 0u);
}

INSTANTIATE_TEST_SUITE_P(IndexTypes, ConcurrentIndexTest,
                         ::testing::Values(quiver::v1::IVF_FLAT, quiver::v1::IVF_PQ, quiver::v1::GRAPH),
                         [](const auto& info) { return quiver::v1::IndexType_Name(info.param); });

TEST(Validation, NamesTheField) {
  quiver::v1::CollectionConfig cfg;
  cfg.set_name("ok-name_1");
  cfg.set_dimension(4097);
  cfg.set_metric(quiver::v1::L2);
  Status st = ValidateCollectionConfig(cfg);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("config.dimension"), std::string::npos);
  cfg.set_dimension(4096);
  EXPECT_TRUE(ValidateCollectionConfig(cfg).ok());
  cfg.mutable_index()->set_type(quiver::v1::GRAPH);
  EXPECT_TRUE(ValidateCollectionConfig(cfg).ok());
  cfg.mutable_index()->mutable_graph()->set_degree(3);
  st = ValidateCollectionConfig(cfg);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("config.index.graph.degree"), std::string::npos) << st.message();
  cfg.mutable_index()->set_type(quiver::v1::IVF_PQ);
  EXPECT_TRUE(ValidateCollectionConfig(cfg).ok());
  cfg.mutable_index()->mutable_ivf_pq()->set_pq_bits(6);
  st = ValidateCollectionConfig(cfg);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("config.index.ivf_pq.pq_bits"), std::string::npos) << st.message();
  cfg.mutable_index()->mutable_ivf_pq()->set_pq_bits(4);
  cfg.mutable_index()->mutable_ivf_pq()->set_pq_dim(4097);
  EXPECT_EQ(ValidateCollectionConfig(cfg).code(), StatusCode::kInvalidArgument);
  cfg.mutable_index()->set_type(static_cast<quiver::v1::IndexType>(77));
  EXPECT_EQ(ValidateCollectionConfig(cfg).code(), StatusCode::kInvalidArgument);
  for (const char* bad : {"", "-x", "a b", "a/b", "ü"}) {
    EXPECT_EQ(ValidateCollectionName(bad).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ValidateCollectionName(std::string(65, 'a')).code(), StatusCode::kInvalidArgument);
  float v[3] = {1, std::numeric_limits<float>::quiet_NaN(), 2};
  st = ValidateVector(v, 3, 3, "points[4].vector");
  EXPECT_NE(st.message().find("points[4].vector[1]"), std::string::npos) << st.message();
  // The vectorised scan finds a bad value anywhere in a long vector, and the
  // lazily named field reads as the eager one did.
  std::vector<float> longer(1000, 0.5f);
  EXPECT_TRUE(ValidateVector(longer.data(), longer.size(), 1000, FieldName("points", 9, ".vector")).ok());
  for (size_t at : {size_t{0}, size_t{511}, size_t{999}}) {
    for (float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                      std::numeric_limits<float>::quiet_NaN()}) {
      longer[at] = bad;
      st = ValidateVector(longer.data(), longer.size(), 1000, FieldName("points", 9, ".vector"));
      EXPECT_EQ(st.message(), "points[9].vector[" + std::to_string(at) + "] is not finite") << st.message();
      longer[at] = 0.5f;
    }
  }
  longer[3] = std::numeric_limits<float>::max();  // the largest finite float is fine
  longer[4] = std::numeric_limits<float>::denorm_min();
  EXPECT_TRUE(ValidateVector(longer.data(), longer.size(), 1000, FieldName("points", 9, ".vector")).ok());
  EXPECT_EQ(ValidateVector(longer.data(), 999, 1000, FieldName("queries", 2, ".values")).message(),
            "queries[2].values has 999 floats, collection dimension is 1000");
}

}  // namespace
}  // namespace quiver::engine
