// IVF_FLAT: recall floors on fixed seeds, exactness when every list is
// probed, deleted rows skipped inside the scan, layout invariants, bad
// parameters. Every metric.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>

#include "common/encoding.h"
#include "kernels/ivf_flat.h"
#include "test_util.h"

namespace quiver::kernels {
namespace {

using quiver::testing::ClusteredVectors;

const char* Name(Metric m) { return m == Metric::kL2 ? "L2" : m == Metric::kInnerProduct ? "IP" : "Cos"; }

// Recall@k of `rows` against exact FLAT search on the same data.
double Recall(Metric m, const std::vector<float>& base, size_t n, const std::vector<float>& q, size_t nq, size_t dim,
              size_t k, const std::vector<int64_t>& rows) {
  std::vector<float> norms(n);
  SquaredNorms(base.data(), n, dim, norms.data());
  std::vector<int64_t> truth(nq * k);
  std::vector<float> ts(nq * k);
  EXPECT_TRUE(FlatSearch({}, {base.data(), norms.data(), n, dim}, q.data(), nq, {m, k}, truth.data(), ts.data()).ok());
  size_t hit = 0;
  for (size_t i = 0; i < nq; ++i) {
    std::set<int64_t> t(truth.begin() + long(i * k), truth.begin() + long((i + 1) * k));
    for (size_t j = 0; j < k; ++j) hit += t.count(rows[i * k + j]);
  }
  return double(hit) / double(nq * k);
}

class IvfFlatTest : public ::testing::TestWithParam<Metric> {};

TEST_P(IvfFlatTest, RecallFloorAtNprobe32) {
  const Metric m = GetParam();
  const size_t n = 30000, dim = 48, nq = 200, k = 10;
  const bool unit = m != Metric::kL2;
  // Fewer clusters than lists: each cluster spans several lists, so the
  // number of probes matters.
  auto base = ClusteredVectors(n, dim, 20, 1, unit);
  // Queries from the same distribution: base points plus a little noise.
  auto noise = quiver::testing::RandomVectors(nq, dim, 77, -0.05f, 0.05f);
  std::vector<float> queries(nq * dim);
  for (size_t i = 0; i < nq; ++i) {
    for (size_t j = 0; j < dim; ++j) queries[i * dim + j] = base[(i * 131) % n * dim + j] + noise[i * dim + j];
  }
  auto index = IvfFlatIndex::Build({}, m, base.data(), n, dim, {.nlist = 256});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  ASSERT_TRUE((*index)->Search({}, queries.data(), nq, k, 32, nullptr, rows.data(), scores.data()).ok());
  const double recall = Recall(m, base, n, queries, nq, dim, k, rows);
  std::printf("%s: recall@10 at nprobe 32 of 256 lists = %.4f\n", Name(m), recall);
  EXPECT_GE(recall, 0.9);
  // Fewer probes: lower but sane recall; monotone in nprobe.
  std::vector<int64_t> rows1(nq * k);
  ASSERT_TRUE((*index)->Search({}, queries.data(), nq, k, 1, nullptr, rows1.data(), scores.data()).ok());
  const double recall1 = Recall(m, base, n, queries, nq, dim, k, rows1);
  std::printf("%s: recall@10 at nprobe 1 = %.4f\n", Name(m), recall1);
  EXPECT_LT(recall1, recall) << "probing more lists must find more true neighbours";
}

TEST_P(IvfFlatTest, ProbingEveryListIsExact) {
  const Metric m = GetParam();
  const size_t n = 3001, dim = 17, nq = 40, k = 7;
  auto base = quiver::testing::RandomVectors(n, dim, 5);
  auto queries = quiver::testing::RandomVectors(nq, dim, 6);
  auto index = IvfFlatIndex::Build({}, m, base.data(), n, dim, {.nlist = 20});
  ASSERT_TRUE(index.ok());
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  ASSERT_TRUE((*index)->Search({}, queries.data(), nq, k, 20, nullptr, rows.data(), scores.data()).ok());
  auto ref = quiver::testing::ReferenceSearch(m, base.data(), n, queries.data(), nq, dim);
  for (size_t i = 0; i < nq; ++i) {
    for (size_t j = 0; j < k; ++j) {
      EXPECT_NEAR(scores[i * k + j], ref[i][j].score, quiver::testing::ScoreTolerance(ref[i][j].score, 2.0 * dim))
          << Name(m) << " q" << i << " r" << j;
    }
  }
}

TEST_P(IvfFlatTest, DeletedRowsAreSkippedInsideTheScan) {
  const Metric m = GetParam();
  const size_t n = 5000, dim = 16, nq = 30, k = 10;
  auto base = quiver::testing::RandomVectors(n, dim, 8);
  auto index = IvfFlatIndex::Build({}, m, base.data(), n, dim, {.nlist = 16});
  ASSERT_TRUE(index.ok());
  std::vector<uint64_t> deleted((n + 63) / 64, 0);
  for (size_t r = 0; r < n; r += 2) deleted[r / 64] |= 1ull << (r % 64);  // every even row
  // Query with base rows themselves: each query's exact match is deleted half the time.
  std::vector<float> queries(base.begin(), base.begin() + long(nq * dim));
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  ASSERT_TRUE((*index)->Search({}, queries.data(), nq, k, 16, deleted.data(), rows.data(), scores.data()).ok());
  for (size_t i = 0; i < nq * k; ++i) {
    ASSERT_GE(rows[i], 0) << "k results must still come back";
    EXPECT_EQ(rows[i] % 2, 1) << "deleted row " << rows[i] << " returned";
  }
}

INSTANTIATE_TEST_SUITE_P(Metrics, IvfFlatTest, ::testing::Values(Metric::kL2, Metric::kInnerProduct, Metric::kCosine),
                         [](const auto& info) { return std::string(Name(info.param)); });

TEST(IvfFlat, LayoutHoldsEveryRowOnceInGroupsOf32) {
  const size_t n = 1000, dim = 5;
  auto base = quiver::testing::RandomVectors(n, dim, 9);
  auto index = IvfFlatIndex::Build({}, Metric::kL2, base.data(), n, dim, {.nlist = 7});
  ASSERT_TRUE(index.ok());
  std::vector<int> seen(n, 0);
  for (size_t l = 0; l < (*index)->nlist(); ++l) {
    const auto& list = (*index)->list(l);
    ASSERT_EQ(list.rows.size() % kIvfGroupSize, 0u);
    ASSERT_EQ(list.interleaved.size(), list.rows.size() * dim);
    for (size_t s = 0; s < list.rows.size(); ++s) {
      const int64_t r = list.rows[s];
      if (s >= list.size) {
        EXPECT_EQ(r, -1) << "padding slot";
        continue;
      }
      ASSERT_GE(r, 0);
      ++seen[size_t(r)];
      const size_t g = s / kIvfGroupSize, lane = s % kIvfGroupSize;
      for (size_t j = 0; j < dim; ++j) {
        ASSERT_EQ(list.interleaved[g * kIvfGroupSize * dim + j * kIvfGroupSize + lane], base[size_t(r) * dim + j]);
      }
    }
  }
  for (size_t r = 0; r < n; ++r) ASSERT_EQ(seen[r], 1) << "row " << r;
  EXPECT_GT((*index)->MemoryBytes(), n * dim * sizeof(float));
}

TEST(IvfFlat, SerializationRoundTripsExactly) {
  const size_t n = 2000, dim = 12, nq = 20, k = 5;
  auto base = quiver::testing::RandomVectors(n, dim, 21);
  for (Metric m : {Metric::kL2, Metric::kInnerProduct, Metric::kCosine}) {
    auto index = IvfFlatIndex::Build({}, m, base.data(), n, dim, {.nlist = 9});
    ASSERT_TRUE(index.ok());
    const std::string bytes = (*index)->Serialize();
    auto back = IvfFlatIndex::Deserialize(bytes, "test");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ((*back)->Serialize(), bytes);
    EXPECT_EQ((*back)->metric(), m);
    std::vector<int64_t> r1(nq * k), r2(nq * k);
    std::vector<float> s1(nq * k), s2(nq * k);
    ASSERT_TRUE((*index)->Search({}, base.data(), nq, k, 3, nullptr, r1.data(), s1.data()).ok());
    ASSERT_TRUE((*back)->Search({}, base.data(), nq, k, 3, nullptr, r2.data(), s2.data()).ok());
    EXPECT_EQ(r1, r2);
    EXPECT_EQ(s1, s2);
  }
}

TEST(IvfFlat, CorruptBytesAreDataLossNeverACrash) {
  const size_t n = 300, dim = 4;
  auto base = quiver::testing::RandomVectors(n, dim, 22);
  auto index = IvfFlatIndex::Build({}, Metric::kL2, base.data(), n, dim, {.nlist = 5});
  ASSERT_TRUE(index.ok());
  const std::string good = (*index)->Serialize();
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    std::string bad = good;
    switch (trial % 3) {
      case 0: bad[rng() % bad.size()] ^= static_cast<char>(1 + rng() % 255); break;  // bit rot
      case 1: bad.resize(rng() % bad.size()); break;                                  // torn write
      case 2: bad.insert(rng() % bad.size(), "xyz"); break;                            // garbage
    }
    auto r = IvfFlatIndex::Deserialize(bad, "corrupt.ivf");
    ASSERT_FALSE(r.ok()) << "trial " << trial;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(r.status().message().find("corrupt.ivf"), std::string::npos) << r.status().message();
  }
}

// Malformed structure behind a valid checksum (a buggy writer, not bit rot):
// every size is checked before it is trusted.
TEST(IvfFlat, StructuralCorruptionWithValidChecksumIsDataLoss) {
  const size_t n = 300, dim = 4;
  auto base = quiver::testing::RandomVectors(n, dim, 23);
  auto index = IvfFlatIndex::Build({}, Metric::kL2, base.data(), n, dim, {.nlist = 5});
  ASSERT_TRUE(index.ok());
  const std::string good = (*index)->Serialize();
  auto reseal = [](std::string b) {
    const uint32_t crc = Checksum(std::string_view(b).substr(0, b.size() - 4));
    std::memcpy(b.data() + b.size() - 4, &crc, 4);
    return b;
  };
  auto with_u64 = [&](size_t offset, uint64_t v) {
    std::string b = good;
    std::memcpy(b.data() + offset, &v, 8);
    return reseal(b);
  };
  // Header: magic(8) version(4) metric(4) dim(8)@16 n(8)@24 nlist(8)@32, centroids @40.
  const size_t first_list = 40 + 5 * dim * sizeof(float);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"huge nlist", with_u64(32, uint64_t{1} << 60)},
      {"zero dim", with_u64(16, 0)},
      {"n below nlist", with_u64(24, 2)},
      {"huge list size", with_u64(first_list, uint64_t{1} << 62)},
      {"n larger than the rows", with_u64(24, n + 1)},
  };
  for (const auto& [name, bytes] : cases) {
    auto r = IvfFlatIndex::Deserialize(bytes, "x.ivf");
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << name;
  }
  // A row id repeated: copy list 0's first row id over its second.
  std::string dup = good;
  const size_t rows_at = first_list + 16;
  std::memcpy(dup.data() + rows_at + 8, dup.data() + rows_at, 8);
  auto r = IvfFlatIndex::Deserialize(reseal(dup), "x.ivf");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("repeated"), std::string::npos) << r.status().message();
}

TEST(IvfFlat, TinyInputsAndBadParameters) {
  auto base = quiver::testing::RandomVectors(3, 1, 10);  // fewer vectors than lists, dimension 1
  auto index = IvfFlatIndex::Build({}, Metric::kL2, base.data(), 3, 1, {.nlist = 8});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_EQ((*index)->nlist(), 3u);
  std::vector<int64_t> rows(5);
  std::vector<float> scores(5);
  ASSERT_TRUE((*index)->Search({}, base.data(), 1, 5, 8, nullptr, rows.data(), scores.data()).ok());
  EXPECT_EQ(rows[0], 0);
  EXPECT_EQ(rows[3], -1) << "k > n pads with -1";
  EXPECT_EQ((*index)->Search({}, base.data(), 1, 0, 1, nullptr, rows.data(), scores.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*index)->Search({}, base.data(), 1, 1, 0, nullptr, rows.data(), scores.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(IvfFlatIndex::Build({}, Metric::kL2, base.data(), 3, 1, {.nlist = 0}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(IvfFlatIndex::Build({}, Metric::kL2, base.data(), 0, 1, {}).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quiver::kernels
