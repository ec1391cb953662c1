// FLAT kernels against the float64 reference, over metrics, sizes that do not
// fit the tiles, k above n, dimensions 1 and 4096, and many equal distances.
// The same fixture will run the GPU path once kernels/gpu exists.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "kernels/flat_search.h"
#include "kernels/simd.h"
#include "test_util.h"

namespace quiver::kernels {
namespace {

using quiver::testing::RandomVectors;
using quiver::testing::ReferenceSearch;

// ---- distance primitives, every level this CPU has ----

TEST(SimdDistance, EveryLevelMatchesFloat64) {
  for (SimdLevel level : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (level > DetectSimdLevel()) {
      std::printf("skipping %s: not supported by this CPU\n", SimdLevelName(level));
      continue;
    }
    const DistanceFns& fns = DistanceFnsFor(level);
    for (size_t n : {1, 3, 7, 8, 15, 16, 17, 31, 32, 33, 100, 128, 1000, 4096}) {
      auto a = RandomVectors(1, n, 1 + n);
      auto b = RandomVectors(1, n, 1000 + n);
      double dot = 0, l2 = 0;
      for (size_t i = 0; i < n; ++i) {
        dot += double(a[i]) * b[i];
        l2 += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
      }
      EXPECT_NEAR(fns.dot(a.data(), b.data(), n), dot, 1e-5 * n) << SimdLevelName(level) << " n=" << n;
      EXPECT_NEAR(fns.l2_sq(a.data(), b.data(), n), l2, 1e-5 * n) << SimdLevelName(level) << " n=" << n;
    }
  }
}

TEST(SimdDistance, ActiveLevelIsSupported) { EXPECT_LE(ActiveSimdLevel(), DetectSimdLevel()); }

// ---- FlatSearch ----

struct FlatCase {
  Metric metric;
  size_t n;
  size_t nq;
  size_t dim;
  size_t k;
};

void PrintTo(const FlatCase& c, std::ostream* os) {
  *os << "metric=" << int(c.metric) << " n=" << c.n << " nq=" << c.nq << " dim=" << c.dim << " k=" << c.k;
}

std::string CaseName(const ::testing::TestParamInfo<FlatCase>& info) {
  const FlatCase& c = info.param;
  const char* m = c.metric == Metric::kL2 ? "L2" : c.metric == Metric::kInnerProduct ? "IP" : "Cos";
  return std::string(m) + "_n" + std::to_string(c.n) + "_q" + std::to_string(c.nq) + "_d" + std::to_string(c.dim) +
         "_k" + std::to_string(c.k);
}

class FlatSearchTest : public ::testing::TestWithParam<FlatCase> {};

void CheckAgainstReference(const FlatCase& c, const std::vector<float>& base, const std::vector<float>& queries) {
  std::vector<float> norms(c.n);
  SquaredNorms(base.data(), c.n, c.dim, norms.data());
  std::vector<int64_t> rows(c.nq * c.k);
  std::vector<float> scores(c.nq * c.k);
  BaseView view{base.data(), norms.data(), c.n, c.dim};
  ASSERT_TRUE(FlatSearch(Resources{}, view, queries.data(), c.nq, {c.metric, c.k}, rows.data(), scores.data()).ok());
  auto ref = ReferenceSearch(c.metric, base.data(), c.n, queries.data(), c.nq, c.dim);
  // Scale of the quantities whose difference forms a score: |q|^2 + |x|^2.
  const double scale = c.metric == Metric::kCosine ? 1.0 : 2.0 * c.dim;
  for (size_t q = 0; q < c.nq; ++q) {
    std::vector<double> true_score(c.n);
    for (const auto& h : ref[q]) true_score[static_cast<size_t>(h.row)] = h.score;
    for (size_t i = 0; i < c.k; ++i) {
      const int64_t row = rows[q * c.k + i];
      const float score = scores[q * c.k + i];
      if (i >= c.n) {
        EXPECT_EQ(row, -1) << "slot " << i << " past n";
        EXPECT_TRUE(std::isinf(score));
        continue;
      }
      ASSERT_GE(row, 0) << "query " << q << " slot " << i;
      ASSERT_LT(static_cast<size_t>(row), c.n);
      // The score at each rank matches the reference's score at that rank...
      EXPECT_NEAR(score, ref[q][i].score, quiver::testing::ScoreTolerance(ref[q][i].score, scale))
          << "query " << q << " rank " << i;
      // ...and is the true score of the row returned (so ties may swap ids only).
      EXPECT_NEAR(score, true_score[static_cast<size_t>(row)],
                  quiver::testing::ScoreTolerance(true_score[static_cast<size_t>(row)], scale))
          << "query " << q << " rank " << i << " row " << row;
    }
    // No row twice.
    std::vector<int64_t> got(rows.begin() + static_cast<long>(q * c.k),
                             rows.begin() + static_cast<long>(q * c.k + std::min(c.k, c.n)));
    std::sort(got.begin(), got.end());
    EXPECT_EQ(std::adjacent_find(got.begin(), got.end()), got.end()) << "duplicate row in query " << q;
  }
}

TEST_P(FlatSearchTest, MatchesFloat64Reference) {
  const FlatCase& c = GetParam();
  auto base = RandomVectors(c.n, c.dim, 42 + c.n);
  auto queries = RandomVectors(c.nq, c.dim, 7 + c.nq);
  CheckAgainstReference(c, base, queries);
}

TEST_P(FlatSearchTest, ManyEqualDistances) {
  // Values from a tiny set: many rows are exact duplicates, so many ties.
  FlatCase c = GetParam();
  auto base = RandomVectors(c.n, c.dim, 5);
  for (auto& x : base) x = std::round(x);
  auto queries = RandomVectors(c.nq, c.dim, 6);
  for (auto& x : queries) x = std::round(x);
  CheckAgainstReference(c, base, queries);
}

std::vector<FlatCase> Cases() {
  std::vector<FlatCase> out;
  for (Metric m : {Metric::kL2, Metric::kInnerProduct, Metric::kCosine}) {
    out.push_back({m, 1, 1, 1, 1});
    out.push_back({m, 7, 3, 1, 10});        // k > n, dimension 1
    out.push_back({m, 1000, 1, 16, 10});    // single query: SIMD scan
    out.push_back({m, 5003, 5, 33, 7});     // odd sizes, scan
    out.push_back({m, 5003, 40, 33, 10});   // GEMM path, n not a multiple of the tile
    out.push_back({m, 9000, 300, 128, 100});  // several query blocks and base tiles
    out.push_back({m, 300, 20, 4096, 5});   // dimension 4096
    out.push_back({m, 50, 17, 8, 64});      // GEMM path with k > n
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cpu, FlatSearchTest, ::testing::ValuesIn(Cases()), CaseName);

TEST(FlatSearch, DeletedRowsAreSkippedInsideBothPaths) {
  const size_t n = 3000, dim = 16, k = 10;
  auto base = RandomVectors(n, dim, 31);
  std::vector<float> norms(n);
  SquaredNorms(base.data(), n, dim, norms.data());
  std::vector<uint64_t> deleted((n + 63) / 64, 0);
  for (size_t r = 0; r < n; r += 3) deleted[r / 64] |= 1ull << (r % 64);
  for (size_t nq : {1, 40}) {  // scan path and GEMM path
    std::vector<float> queries(base.begin(), base.begin() + long(nq * dim));  // exact matches, some deleted
    for (Metric m : {Metric::kL2, Metric::kInnerProduct, Metric::kCosine}) {
      std::vector<int64_t> rows(nq * k);
      std::vector<float> scores(nq * k);
      BaseView view{base.data(), norms.data(), n, dim, deleted.data()};
      ASSERT_TRUE(FlatSearch({}, view, queries.data(), nq, {m, k}, rows.data(), scores.data()).ok());
      for (size_t i = 0; i < nq * k; ++i) {
        ASSERT_GE(rows[i], 0);
        EXPECT_NE(rows[i] % 3, 0) << "deleted row " << rows[i] << " returned (nq " << nq << ")";
      }
    }
  }
}

TEST(FlatSearch, EmptyBaseGivesPaddedResults) {
  std::vector<float> q(4, 1.0f);
  std::vector<int64_t> rows(3, 123);
  std::vector<float> scores(3);
  ASSERT_TRUE(FlatSearch({}, {nullptr, nullptr, 0, 4}, q.data(), 1, {Metric::kInnerProduct, 3}, rows.data(),
                         scores.data()).ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(rows[i], -1);
}

TEST(FlatSearch, RejectsBadArguments) {
  std::vector<float> v(4, 1.0f), norms(1, 4.0f);
  std::vector<int64_t> rows(1);
  std::vector<float> scores(1);
  EXPECT_EQ(FlatSearch({}, {v.data(), norms.data(), 1, 4}, v.data(), 1, {Metric::kL2, 0}, rows.data(), scores.data())
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(FlatSearch({}, {v.data(), nullptr, 1, 4}, v.data(), 1, {Metric::kL2, 1}, rows.data(), scores.data()).code(),
            StatusCode::kInvalidArgument);
}

TEST(FlatSearch, ZeroVectorsUnderCosineScoreZero) {
  std::vector<float> base = {0, 0, 1, 0};  // row 0 is the zero vector
  std::vector<float> norms(2);
  SquaredNorms(base.data(), 2, 2, norms.data());
  std::vector<float> q = {1, 0};
  std::vector<int64_t> rows(2);
  std::vector<float> scores(2);
  ASSERT_TRUE(FlatSearch({}, {base.data(), norms.data(), 2, 2}, q.data(), 1, {Metric::kCosine, 2}, rows.data(),
                         scores.data()).ok());
  EXPECT_EQ(rows[0], 1);
  EXPECT_FLOAT_EQ(scores[0], 1.0f);
  EXPECT_EQ(rows[1], 0);
  EXPECT_FLOAT_EQ(scores[1], 0.0f);
}

}  // namespace
}  // namespace quiver::kernels
