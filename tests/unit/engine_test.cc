// The engine as a state machine: apply, outcomes, idempotent replay, recovery
// from storage, and searches running while writes apply.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "common/encoding.h"
#include "engine/engine.h"
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

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }
  void Reopen() {
    engine_.reset();
    db_.reset();
    db_ = std::move(storage::Db::Open(dir_.path())).value();
    auto e = Engine::Open(db_.get(), {}, nullptr);
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
  ASSERT_TRUE(c->Search({}, q.data(), 1, 5, true, true, &hits).ok());
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
      ASSERT_TRUE((*c)->Search(res, q.data(), 1, 5, true, false, &hits).ok());
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
  EXPECT_EQ(ValidateCollectionConfig(cfg).code(), StatusCode::kUnimplemented);
  cfg.mutable_index()->set_type(static_cast<quiver::v1::IndexType>(77));
  EXPECT_EQ(ValidateCollectionConfig(cfg).code(), StatusCode::kInvalidArgument);
  for (const char* bad : {"", "-x", "a b", "a/b", "ü"}) {
    EXPECT_EQ(ValidateCollectionName(bad).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ValidateCollectionName(std::string(65, 'a')).code(), StatusCode::kInvalidArgument);
  float v[3] = {1, std::numeric_limits<float>::quiet_NaN(), 2};
  st = ValidateVector(v, 3, 3, "points[4].vector");
  EXPECT_NE(st.message().find("points[4].vector[1]"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace quiver::engine
