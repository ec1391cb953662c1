// Results equal FAISS IndexFlatL2 / IndexFlatIP on the same data: same ids up
// to exact ties, scores within 1e-4 relative.
#include <faiss/IndexFlat.h>
#include <gtest/gtest.h>

#include "kernels/flat_search.h"
#include "test_util.h"

namespace quiver::kernels {
namespace {

void CompareWithFaiss(Metric metric, size_t n, size_t nq, size_t dim, size_t k) {
  auto base = quiver::testing::RandomVectors(n, dim, 11);
  auto queries = quiver::testing::RandomVectors(nq, dim, 12);
  std::unique_ptr<faiss::IndexFlat> index;
  if (metric == Metric::kL2) {
    index = std::make_unique<faiss::IndexFlatL2>(dim);
  } else {
    index = std::make_unique<faiss::IndexFlatIP>(dim);
  }
  index->add(static_cast<faiss::Index::idx_t>(n), base.data());
  std::vector<faiss::Index::idx_t> frows(nq * k);
  std::vector<float> fscores(nq * k);
  index->search(static_cast<faiss::Index::idx_t>(nq), queries.data(), static_cast<faiss::Index::idx_t>(k), fscores.data(),
                frows.data());

  std::vector<float> norms(n);
  SquaredNorms(base.data(), n, dim, norms.data());
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  ASSERT_TRUE(FlatSearch({}, {base.data(), norms.data(), n, dim}, queries.data(), nq, {metric, k}, rows.data(),
                         scores.data()).ok());
  size_t id_mismatches = 0;
  for (size_t i = 0; i < nq * k; ++i) {
    EXPECT_NEAR(scores[i], fscores[i], 1e-4 * std::max(1.0f, std::abs(fscores[i]))) << "slot " << i;
    if (rows[i] != frows[i]) {
      // Allowed only where the two scores tie within rounding.
      ++id_mismatches;
      const size_t q = i / k;
      const float* qv = queries.data() + q * dim;
      auto score_of = [&](int64_t r) {
        double s = 0;
        for (size_t j = 0; j < dim; ++j) {
          const double x = base[size_t(r) * dim + j];
          s += metric == Metric::kL2 ? (qv[j] - x) * (qv[j] - x) : qv[j] * x;
        }
        return s;
      };
      EXPECT_NEAR(score_of(rows[i]), score_of(frows[i]), 1e-4 * std::max(1.0, std::abs(score_of(frows[i]))))
          << "ids differ at slot " << i << " without a tie";
    }
  }
  EXPECT_LE(id_mismatches, nq * k / 100) << "too many tie swaps";
}

TEST(FaissParity, FlatL2Batch) { CompareWithFaiss(Metric::kL2, 20000, 200, 128, 10); }
TEST(FaissParity, FlatL2Single) { CompareWithFaiss(Metric::kL2, 20000, 3, 96, 10); }
TEST(FaissParity, FlatIPBatch) { CompareWithFaiss(Metric::kInnerProduct, 20000, 200, 64, 20); }
TEST(FaissParity, FlatIPSingle) { CompareWithFaiss(Metric::kInnerProduct, 10000, 1, 128, 5); }

}  // namespace
}  // namespace quiver::kernels
