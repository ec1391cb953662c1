// IVF_FLAT: recall floors on fixed seeds, exactness when every list is
// probed, deleted rows skipped inside the scan, layout invariants, bad
// parameters. Every metric.
#include <gtest/gtest.h>

#include <set>

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
