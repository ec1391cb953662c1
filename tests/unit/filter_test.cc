// Payload filters: semantics, validation, and filtered search against a
// brute-force filtered reference, for filters that keep 0, 1, 0.1% and 50%
// of the points, on IVF_FLAT and IVF_PQ segments probed sparsely and on
// GRAPH segments searched with a narrow beam.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "common/encoding.h"
#include "engine/engine.h"
#include "engine/filter.h"
#include "engine/payload_index.h"
#include "quiver/internal/v1/wal.pb.h"
#include "test_util.h"

namespace quiver::engine {
namespace {

using quiver::v1::Filter;
using quiver::v1::Payload;

Payload MakePayload(int64_t i) {
  Payload p;
  (*p.mutable_fields())["i"].set_int_value(i);
  (*p.mutable_fields())["x"].set_double_value(double(i) / 4.0);
  (*p.mutable_fields())["even"].set_bool_value(i % 2 == 0);
  (*p.mutable_fields())["tag"].set_string_value("t" + std::to_string(i % 10));
  auto* list = (*p.mutable_fields())["tags"].mutable_list_value();
  list->add_values()->set_string_value("a" + std::to_string(i % 3));
  list->add_values()->set_string_value("b" + std::to_string(i % 5));
  return p;
}

Filter Match(const std::string& key, const std::string& s) {
  Filter f;
  f.mutable_match()->set_key(key);
  f.mutable_match()->mutable_value()->set_string_value(s);
  return f;
}
Filter MatchInt(const std::string& key, int64_t v) {
  Filter f;
  f.mutable_match()->set_key(key);
  f.mutable_match()->mutable_value()->set_int_value(v);
  return f;
}
Filter MatchBool(const std::string& key, bool v) {
  Filter f;
  f.mutable_match()->set_key(key);
  f.mutable_match()->mutable_value()->set_bool_value(v);
  return f;
}
Filter Range(const std::string& key, double gte, double lt) {
  Filter f;
  f.mutable_range()->set_key(key);
  f.mutable_range()->set_gte(gte);
  f.mutable_range()->set_lt(lt);
  return f;
}

TEST(FilterMatches, EveryCondition) {
  const Payload p = MakePayload(7);  // i=7, x=1.75, even=false, tag=t7, tags=[a1, b2]
  EXPECT_TRUE(FilterMatches(MatchInt("i", 7), p));
  EXPECT_FALSE(FilterMatches(MatchInt("i", 8), p));
  EXPECT_TRUE(FilterMatches(Match("tag", "t7"), p));
  EXPECT_TRUE(FilterMatches(MatchBool("even", false), p));
  EXPECT_TRUE(FilterMatches(Match("tags", "b2"), p)) << "a list matches through any element";
  EXPECT_FALSE(FilterMatches(Match("tags", "a2"), p));
  EXPECT_FALSE(FilterMatches(Match("i", "7"), p)) << "no coercion between kinds";
  EXPECT_FALSE(FilterMatches(Match("missing", "x"), p));
  EXPECT_TRUE(FilterMatches(Range("x", 1.75, 2.0), p));
  EXPECT_FALSE(FilterMatches(Range("x", 1.0, 1.75), p)) << "lt is exclusive";
  EXPECT_TRUE(FilterMatches(Range("i", 7, 8), p)) << "ints compare as numbers";
  EXPECT_FALSE(FilterMatches(Range("tag", 0, 100), p));
  Filter in;
  in.mutable_in()->set_key("tag");
  in.mutable_in()->add_values()->set_string_value("t1");
  in.mutable_in()->add_values()->set_string_value("t7");
  EXPECT_TRUE(FilterMatches(in, p));
  Filter both;
  *both.mutable_and_()->add_filters() = MatchInt("i", 7);
  *both.mutable_and_()->add_filters() = MatchBool("even", true);
  EXPECT_FALSE(FilterMatches(both, p));
  Filter either;
  *either.mutable_or_()->add_filters() = MatchInt("i", 9);
  *either.mutable_or_()->add_filters() = Match("tag", "t7");
  EXPECT_TRUE(FilterMatches(either, p));
  Filter neg;
  *neg.mutable_not_() = Match("missing", "x");
  EXPECT_TRUE(FilterMatches(neg, p)) << "NOT of a condition on an absent field matches";
  Filter empty_and, empty_or;
  empty_and.mutable_and_();
  empty_or.mutable_or_();
  EXPECT_TRUE(FilterMatches(empty_and, p));
  EXPECT_FALSE(FilterMatches(empty_or, p));
}

TEST(ValidateFilter, NamesTheField) {
  Filter f;
  EXPECT_NE(ValidateFilter(f).message().find("filter has no condition"), std::string::npos);
  *f.mutable_and_()->add_filters() = MatchInt("i", 1);
  Filter bad_range;
  bad_range.mutable_range()->set_key("x");
  *f.mutable_and_()->add_filters() = bad_range;
  Status st = ValidateFilter(f);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("filter.and.filters[1].range has no bound"), std::string::npos) << st.message();
  Filter dbl;
  dbl.mutable_match()->set_key("x");
  dbl.mutable_match()->mutable_value()->set_double_value(1.0);
  EXPECT_NE(ValidateFilter(dbl).message().find("match.value"), std::string::npos);
  Filter deep = MatchInt("i", 1);
  for (int i = 0; i < 40; ++i) {
    Filter wrap;
    *wrap.mutable_not_() = deep;
    deep = wrap;
  }
  EXPECT_NE(ValidateFilter(deep).message().find("deeper"), std::string::npos);
  EXPECT_TRUE(ValidateFilter(MatchInt("i", 1)).ok());
}

// Parameter: the index type, and the payload fields the collection indexes
// (none, some, all), so every filter runs through the parse path, the index,
// and a mix of both.
struct FilterCase {
  quiver::v1::IndexType type;
  std::vector<std::string> fields;
};

void PrintTo(const FilterCase& c, std::ostream* os) {
  *os << quiver::v1::IndexType_Name(c.type) << " with " << c.fields.size() << " indexed fields";
}

class FilteredSearchTest : public ::testing::TestWithParam<FilterCase> {
 protected:
  static constexpr uint32_t kDim = 8;
  static constexpr size_t kN = 4000;

  void SetUp() override {
    db_ = std::move(storage::Db::Open(dir_.path())).value();
    engine_ = std::move(Engine::Open(db_.get(), {}, nullptr)).value();
    quiver::internal::v1::Command create;
    auto* cfg = create.mutable_create_collection()->mutable_config();
    cfg->set_name("f");
    cfg->set_dimension(kDim);
    cfg->set_metric(quiver::v1::L2);
    cfg->set_segment_max_points(1000);
    cfg->mutable_index()->set_type(GetParam().type);
    cfg->mutable_index()->mutable_ivf_flat()->set_nlist(16);
    cfg->mutable_index()->mutable_ivf_flat()->set_nprobe(2);  // sparse probing: filters must not rely on it
    cfg->mutable_index()->mutable_ivf_pq()->set_nlist(16);
    cfg->mutable_index()->mutable_ivf_pq()->set_nprobe(2);
    cfg->mutable_index()->mutable_ivf_pq()->set_pq_dim(4);
    cfg->mutable_index()->mutable_graph()->set_degree(16);
    cfg->mutable_index()->mutable_graph()->set_itopk(16);  // a narrow beam, likewise
    for (const auto& field : GetParam().fields) cfg->add_indexed_payload_fields(field);
    base_ = quiver::testing::ClusteredVectors(kN, kDim, 10, 17);
    quiver::internal::v1::Command up;
    auto* u = up.mutable_upsert_points();
    u->set_collection("f");
    u->set_dimension(kDim);
    for (uint64_t i = 0; i < kN; ++i) {
      PutFixed64LE(u->mutable_ids(), i);
      u->add_payloads(MakePayload(int64_t(i)).SerializeAsString());
    }
    u->set_vectors(std::string(reinterpret_cast<const char*>(base_.data()), base_.size() * sizeof(float)));
    std::vector<storage::LogEntry> entries = {{1, 1, storage::EntryType::kCommand, create.SerializeAsString()},
                                              {2, 1, storage::EntryType::kCommand, up.SerializeAsString()}};
    std::vector<Status> outcomes;
    ASSERT_TRUE(engine_->Apply(entries, &outcomes).ok());
    ASSERT_TRUE(outcomes[1].ok()) << outcomes[1].ToString();
    ASSERT_TRUE(engine_->WaitForBackgroundWork(std::chrono::seconds(60)));
    ASSERT_EQ((*engine_->Find("f"))->Info().indexed_segments(), 4u);
  }

  // Recall@k of the filtered search against the exact filtered answer;
  // also checks every hit matches and the hit count is min(k, matches).
  double FilteredRecall(const Filter& filter, size_t* matches_out) {
    std::vector<float> base;
    std::vector<uint64_t> ids;
    for (uint64_t i = 0; i < kN; ++i) {
      if (FilterMatches(filter, MakePayload(int64_t(i)))) {
        ids.push_back(i);
        base.insert(base.end(), base_.begin() + long(i * kDim), base_.begin() + long((i + 1) * kDim));
      }
    }
    *matches_out = ids.size();
    const size_t nq = 20, k = 10;
    auto queries = quiver::testing::ClusteredVectors(nq, kDim, 10, 18);
    std::vector<std::vector<Hit>> hits;
    auto c = *engine_->Find("f");
    EXPECT_TRUE(c->Search({}, queries.data(), nq, k, {.with_payload = true, .filter = &filter}, &hits).ok());
    auto ref = quiver::testing::ReferenceSearch(kernels::Metric::kL2, base.data(), ids.size(), queries.data(), nq, kDim);
    size_t found = 0, want = 0;
    for (size_t q = 0; q < nq; ++q) {
      EXPECT_EQ(hits[q].size(), std::min(k, ids.size())) << "query " << q;
      std::set<uint64_t> truth;
      for (size_t r = 0; r < std::min(k, ids.size()); ++r) truth.insert(ids[size_t(ref[q][r].row)]);
      want += truth.size();
      for (const auto& h : hits[q]) {
        Payload p;
        EXPECT_TRUE(p.ParseFromString(h.payload));
        EXPECT_TRUE(FilterMatches(filter, p)) << "hit " << h.id << " does not match the filter";
        found += truth.count(h.id);
      }
    }
    return want == 0 ? 1.0 : double(found) / double(want);
  }

  quiver::testing::TempDir dir_;
  std::unique_ptr<storage::Db> db_;
  std::unique_ptr<Engine> engine_;
  std::vector<float> base_;
};

TEST_P(FilteredSearchTest, KeepsNone) {
  size_t m = 0;
  EXPECT_EQ(FilteredRecall(Match("tag", "nope"), &m), 1.0);
  EXPECT_EQ(m, 0u);
}

TEST_P(FilteredSearchTest, KeepsOne) {
  size_t m = 0;
  EXPECT_EQ(FilteredRecall(MatchInt("i", 1234), &m), 1.0);
  EXPECT_EQ(m, 1u);
}

TEST_P(FilteredSearchTest, KeepsATenthOfAPercent) {
  size_t m = 0;
  const Filter f = Range("i", 100, 104);  // 4 of 4,000 points
  EXPECT_EQ(FilteredRecall(f, &m), 1.0) << "selective filters are searched exactly";
  EXPECT_EQ(m, 4u);
}

TEST_P(FilteredSearchTest, KeepsHalf) {
  size_t m = 0;
  const double recall = FilteredRecall(MatchBool("even", true), &m);
  EXPECT_EQ(m, kN / 2);
  std::printf("filter keeping 50%%, nprobe 2 of 16 / itopk 16: recall@10 = %.3f\n", recall);
  EXPECT_GE(recall, 0.9);
}

TEST_P(FilteredSearchTest, CompositeFilterAcrossListsAndNegation) {
  size_t m = 0;
  Filter f;
  *f.mutable_and_()->add_filters() = Match("tags", "a1");
  Filter neg;
  *neg.mutable_not_() = Match("tag", "t4");
  *f.mutable_and_()->add_filters() = neg;
  const double recall = FilteredRecall(f, &m);
  EXPECT_GT(m, 1000u);
  EXPECT_GE(recall, 0.9);
}

TEST_P(FilteredSearchTest, OrOfRangeAndMembership) {
  size_t m = 0;
  Filter f;
  *f.mutable_or_()->add_filters() = Range("x", 10.0, 10.5);  // i in 40..41
  Filter in;
  in.mutable_in()->set_key("tags");
  in.mutable_in()->add_values()->set_string_value("b4");
  in.mutable_in()->add_values()->set_int_value(4);  // no coercion: matches nothing
  Filter both;
  *both.mutable_and_()->add_filters() = in;
  *both.mutable_and_()->add_filters() = MatchInt("i", 3999);
  *f.mutable_or_()->add_filters() = both;
  EXPECT_EQ(FilteredRecall(f, &m), 1.0);
  EXPECT_EQ(m, 3u);
}

const std::vector<std::string> kSomeFields = {"i", "tags"};
const std::vector<std::string> kAllFields = {"i", "x", "even", "tag", "tags"};
INSTANTIATE_TEST_SUITE_P(IndexedFields, FilteredSearchTest,
                         ::testing::Values(FilterCase{quiver::v1::IVF_FLAT, {}}, FilterCase{quiver::v1::IVF_FLAT, kSomeFields},
                                           FilterCase{quiver::v1::IVF_FLAT, kAllFields},
                                           FilterCase{quiver::v1::IVF_PQ, kAllFields},
                                           FilterCase{quiver::v1::GRAPH, {}}, FilterCase{quiver::v1::GRAPH, kAllFields}),
                         [](const auto& info) {
                           const auto& f = info.param.fields;
                           return quiver::v1::IndexType_Name(info.param.type) + "_" +
                                  (f.empty() ? std::string("none") : f.size() == 2 ? std::string("some") : std::string("all"));
                         });

// ---- payload index against FilterMatches on random data ----

quiver::v1::Value RandomScalar(std::mt19937_64& rng) {
  quiver::v1::Value v;
  switch (rng() % 4) {
    case 0: v.set_string_value("s" + std::to_string(rng() % 6)); break;
    case 1: v.set_int_value(int64_t(rng() % 7) - 3); break;
    case 2: v.set_double_value(double(int64_t(rng() % 13) - 6) / 2.0); break;  // hits int values too
    default: v.set_bool_value(rng() % 2 == 0); break;
  }
  return v;
}

quiver::v1::Value RandomMatchable(std::mt19937_64& rng) {
  for (;;) {
    auto v = RandomScalar(rng);
    if (v.kind_case() != quiver::v1::Value::kDoubleValue) return v;
  }
}

Filter RandomFilter(std::mt19937_64& rng, int depth) {
  const std::string key = "k" + std::to_string(rng() % 4);
  Filter f;
  switch (depth > 3 ? rng() % 3 : rng() % 6) {
    case 0:
      f.mutable_match()->set_key(key);
      *f.mutable_match()->mutable_value() = RandomMatchable(rng);
      break;
    case 1: {
      auto* r = f.mutable_range();
      r->set_key(key);
      const double a = double(int64_t(rng() % 9) - 4) / 2.0;
      if (rng() % 2) r->set_gte(a); else r->set_gt(a);
      if (rng() % 2) r->set_lte(a + double(rng() % 4)); else r->set_lt(a + double(rng() % 4));
      break;
    }
    case 2:
      f.mutable_in()->set_key(key);
      for (int i = 0, n = int(rng() % 4); i < n; ++i) *f.mutable_in()->add_values() = RandomMatchable(rng);
      break;
    case 3:
    case 4: {
      auto* list = rng() % 2 ? f.mutable_and_() : f.mutable_or_();
      for (int i = 0, n = int(rng() % 4); i < n; ++i) *list->add_filters() = RandomFilter(rng, depth + 1);
      break;
    }
    default: *f.mutable_not_() = RandomFilter(rng, depth + 1); break;
  }
  return f;
}

TEST(PayloadIndex, AgreesWithFilterMatchesOnRandomPayloadsAndFilters) {
  std::mt19937_64 rng(2024);
  const size_t rows = 300;
  std::vector<std::string> payloads(rows);
  std::vector<Payload> parsed(rows);
  for (size_t r = 0; r < rows; ++r) {
    if (r % 17 == 0) continue;  // no payload at all
    for (int k = 0; k < 4; ++k) {
      if (rng() % 3 == 0) continue;  // field absent
      auto& v = (*parsed[r].mutable_fields())["k" + std::to_string(k)];
      if (rng() % 4 == 0) {
        for (int i = 0, n = int(rng() % 4); i < n; ++i) *v.mutable_list_value()->add_values() = RandomScalar(rng);
      } else {
        v = RandomScalar(rng);
      }
    }
    payloads[r] = parsed[r].SerializeAsString();
  }
  // k3 stays unindexed: mixed trees take both paths.
  const PayloadIndex index = PayloadIndex::Build(payloads, {"k0", "k1", "k2"});
  std::vector<uint64_t> all((rows + 63) / 64, ~uint64_t{0});
  all.back() = (uint64_t{1} << (rows % 64)) - 1;
  for (int trial = 0; trial < 2000; ++trial) {
    const Filter f = RandomFilter(rng, 0);
    ASSERT_TRUE(ValidateFilter(f).ok()) << f.DebugString();
    std::vector<uint64_t> cand = all;
    for (size_t r = 0; r < rows; r += 5) cand[r / 64] &= ~(uint64_t{1} << (r % 64));  // some rows not candidates
    const auto got = EvaluateFilter(f, &index, payloads, cand);
    for (size_t r = 0; r < rows; ++r) {
      const bool want = ((cand[r / 64] >> (r % 64)) & 1u) && FilterMatches(f, parsed[r]);
      ASSERT_EQ(bool((got[r / 64] >> (r % 64)) & 1u), want) << "row " << r << " filter " << f.ShortDebugString();
    }
  }
}

}  // namespace
}  // namespace quiver::engine
