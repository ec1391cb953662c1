// IVF_PQ: recall floors with re-ranking for every metric, 4- and 8-bit codes,
// codes equal to the nearest codeword, exact scores, tombstones, memory per
// vector against IVF_FLAT, serialisation round trips and corrupt bytes, bad
// parameters.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>

#include "common/encoding.h"
#include "kernels/ivf_pq.h"
#include "test_util.h"

namespace quiver::kernels {
namespace {

const char* Name(Metric m) { return m == Metric::kL2 ? "L2" : m == Metric::kInnerProduct ? "IP" : "Cos"; }

using Data = quiver::testing::IndexedData;
using quiver::testing::MakeIndexedData;
using quiver::testing::RecallAgainstFlat;

class IvfPqTest : public ::testing::TestWithParam<Metric> {};

TEST_P(IvfPqTest, RecallFloorWithReranking) {
  const Metric m = GetParam();
  const size_t n = 20000, dim = 32, nq = 200, k = 10;
  auto all = quiver::testing::ClusteredVectors(n + nq, dim, 40, 7, m != Metric::kL2);
  std::vector<float> queries(all.begin() + long(n * dim), all.end());
  const Data d = MakeIndexedData(std::move(all), n, dim);
  auto index = IvfPqIndex::Build({}, m, d.base.data(), n, dim, {.nlist = 64, .pq_dim = 8});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  ASSERT_TRUE(
      (*index)->Search({}, d.view(), queries.data(), nq, k, {.nprobe = 16, .refine_factor = 8}, rows.data(), scores.data()).ok());
  const double recall = RecallAgainstFlat(m, d, queries, nq, k, rows);
  std::printf("%s: IVF_PQ 8x8 bits, nprobe 16 of 64, refine 8: recall@10 = %.4f\n", Name(m), recall);
  EXPECT_GE(recall, 0.9);
  // Without re-ranking beyond k the codes alone decide: lower recall.
  std::vector<int64_t> rows1(nq * k);
  ASSERT_TRUE(
      (*index)->Search({}, d.view(), queries.data(), nq, k, {.nprobe = 16, .refine_factor = 1}, rows1.data(), scores.data()).ok());
  const double recall1 = RecallAgainstFlat(m, d, queries, nq, k, rows1);
  std::printf("%s: refine 1: recall@10 = %.4f\n", Name(m), recall1);
  EXPECT_LT(recall1, recall);
}

TEST_P(IvfPqTest, ScoresAreExactAndDeletedRowsNeverReturned) {
  const Metric m = GetParam();
  const size_t n = 4000, dim = 12, nq = 20, k = 10;
  const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 8), n, dim);
  auto index = IvfPqIndex::Build({}, m, d.base.data(), n, dim, {.nlist = 8, .pq_dim = 4, .pq_bits = 4});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  std::vector<uint64_t> deleted((n + 63) / 64, 0);
  for (size_t r = 0; r < n; r += 2) deleted[r / 64] |= 1ull << (r % 64);
  std::vector<float> queries(d.base.begin(), d.base.begin() + long(nq * dim));
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  ASSERT_TRUE((*index)
                  ->Search({}, d.view(deleted.data()), queries.data(), nq, k, {.nprobe = 8, .refine_factor = 4},
                           rows.data(), scores.data())
                  .ok());
  for (size_t i = 0; i < nq; ++i) {
    for (size_t j = 0; j < k; ++j) {
      const int64_t row = rows[i * k + j];
      ASSERT_GE(row, 0) << "k results must still come back";
      EXPECT_EQ(row % 2, 1) << "deleted row " << row << " returned";
      const double ref = quiver::testing::ReferenceScore(m, &queries[i * dim], &d.base[size_t(row) * dim], dim);
      EXPECT_NEAR(scores[i * k + j], ref, quiver::testing::ScoreTolerance(ref, 2.0 * dim));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Metrics, IvfPqTest, ::testing::Values(Metric::kL2, Metric::kInnerProduct, Metric::kCosine),
                         [](const auto& info) { return std::string(Name(info.param)); });

// Every stored code is the nearest codeword of its sub-vector of the
// residual to the list centre, with dims
// that do not divide evenly (the last sub-vector is zero-padded), for 4 and
// 8 bits; every row sits in exactly one list.
TEST(IvfPq, CodesAreNearestCodewordsAndRowsAppearOnce) {
  const size_t n = 1500, dim = 10;
  const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 9), n, dim);
  for (uint32_t bits : {4u, 8u}) {
    auto index = IvfPqIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.nlist = 6, .pq_dim = 3, .pq_bits = bits});
    ASSERT_TRUE(index.ok()) << index.status().ToString();
    const auto& pq = **index;
    // Centres and codebooks are private; recover them from the serialised
    // bytes (header 48 bytes, then centroids, then codebooks).
    const std::string bytes = pq.Serialize();
    const size_t dsub = 4, ksub = size_t{1} << bits;
    std::vector<float> centres(pq.nlist() * dim), books(3 * ksub * dsub);
    std::memcpy(centres.data(), bytes.data() + 48, centres.size() * 4);
    std::memcpy(books.data(), bytes.data() + 48 + centres.size() * 4, books.size() * 4);
    std::vector<int> seen(n, 0);
    for (size_t l = 0; l < pq.nlist(); ++l) {
      for (size_t s = 0; s < pq.list(l).size; ++s) {
        const int64_t row = pq.list(l).rows[s];
        ++seen[size_t(row)];
        for (size_t m = 0; m < 3; ++m) {
          float sub[4] = {};
          for (size_t j = 0; j < dsub && m * dsub + j < dim; ++j) {
            sub[j] = d.base[size_t(row) * dim + m * dsub + j] - centres[l * dim + m * dsub + j];
          }
          size_t best = 0;
          double best_d = 1e300;
          for (size_t c = 0; c < ksub; ++c) {
            double dist = 0;
            for (size_t j = 0; j < dsub; ++j) {
              const double t = double(sub[j]) - books[(m * ksub + c) * dsub + j];
              dist += t * t;
            }
            if (dist < best_d - 1e-9) best_d = dist, best = c;
          }
          const uint32_t code = pq.Code(l, s, m);
          double code_d = 0;
          for (size_t j = 0; j < dsub; ++j) {
            const double t = double(sub[j]) - books[(m * ksub + code) * dsub + j];
            code_d += t * t;
          }
          EXPECT_NEAR(code_d, best_d, 1e-4) << bits << " bits, row " << row << " sub " << m << " code " << code
                                            << " nearest " << best;
        }
      }
    }
    for (size_t r = 0; r < n; ++r) ASSERT_EQ(seen[r], 1) << "row " << r;
  }
}

TEST(IvfPq, UsesAFifthOfIvfFlatMemoryPerVector) {
  const size_t n = 20000, dim = 128;
  const Data d = MakeIndexedData(quiver::testing::ClusteredVectors(n, dim, 20, 4), n, dim);
  auto pq = IvfPqIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.nlist = 64, .pq_dim = 32});
  auto flat = IvfFlatIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.nlist = 64});
  ASSERT_TRUE(pq.ok() && flat.ok());
  const double pq_per = double((*pq)->MemoryBytes()) / n, flat_per = double((*flat)->MemoryBytes()) / n;
  std::printf("bytes per vector: IVF_PQ %.1f, IVF_FLAT %.1f\n", pq_per, flat_per);
  EXPECT_LE(pq_per, flat_per / 5);
}

TEST(IvfPq, SerializationRoundTripsExactly) {
  const size_t n = 3000, dim = 12, nq = 20, k = 5;
  const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 21), n, dim);
  for (Metric m : {Metric::kL2, Metric::kInnerProduct, Metric::kCosine}) {
    auto index = IvfPqIndex::Build({}, m, d.base.data(), n, dim, {.nlist = 9, .pq_dim = 6});
    ASSERT_TRUE(index.ok());
    const std::string bytes = (*index)->Serialize();
    auto back = DeserializeIndex(bytes, "test");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_STREQ((*back)->kind(), "IVF_PQ");
    EXPECT_EQ((*back)->Serialize(), bytes);
    std::vector<int64_t> r1(nq * k), r2(nq * k);
    std::vector<float> s1(nq * k), s2(nq * k);
    ASSERT_TRUE((*index)->Search({}, d.view(), d.base.data(), nq, k, {.nprobe = 3}, r1.data(), s1.data()).ok());
    ASSERT_TRUE((*back)->Search({}, d.view(), d.base.data(), nq, k, {.nprobe = 3}, r2.data(), s2.data()).ok());
    EXPECT_EQ(r1, r2);
    EXPECT_EQ(s1, s2);
  }
}

TEST(IvfPq, CorruptBytesAreDataLossNeverACrash) {
  const size_t n = 400, dim = 8;
  const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 22), n, dim);
  auto index = IvfPqIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.nlist = 5, .pq_dim = 2, .pq_bits = 4});
  ASSERT_TRUE(index.ok());
  const std::string good = (*index)->Serialize();
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    std::string bad = good;
    switch (trial % 3) {
      case 0: bad[rng() % bad.size()] ^= static_cast<char>(1 + rng() % 255); break;
      case 1: bad.resize(rng() % bad.size()); break;
      case 2: bad.insert(rng() % bad.size(), "xyz"); break;
    }
    auto r = DeserializeIndex(bad, "corrupt.pq");
    ASSERT_FALSE(r.ok()) << "trial " << trial;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(r.status().message().find("corrupt.pq"), std::string::npos) << r.status().message();
  }
  // Structure behind a valid checksum: sizes are checked before use.
  auto reseal = [](std::string b) {
    const uint32_t crc = Checksum(std::string_view(b).substr(0, b.size() - 4));
    std::memcpy(b.data() + b.size() - 4, &crc, 4);
    return b;
  };
  auto with = [&](size_t offset, auto v) {
    std::string b = good;
    std::memcpy(b.data() + offset, &v, sizeof v);
    return reseal(b);
  };
  // magic(8) version(4) metric(4) dim@16 n@24 nlist@32 pq_dim@40 pq_bits@44
  for (const std::string& bad : {with(32, uint64_t{1} << 50), with(40, uint32_t{9}), with(44, uint32_t{5}),
                                 with(16, uint64_t{0}), with(24, uint64_t{3})}) {
    auto r = IvfPqIndex::Deserialize(bad, "crafted");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  }
}

TEST(IvfPq, BadParametersAreRefused) {
  const size_t n = 300, dim = 8;
  const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 24), n, dim);
  EXPECT_FALSE(IvfPqIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.pq_bits = 5}).ok());
  EXPECT_FALSE(IvfPqIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.pq_dim = 9}).ok());
  EXPECT_FALSE(IvfPqIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.nlist = 0}).ok());
  auto index = IvfPqIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.nlist = 4});
  ASSERT_TRUE(index.ok());
  std::vector<int64_t> rows(10);
  std::vector<float> scores(10);
  EXPECT_EQ((*index)->Search({}, d.view(), d.base.data(), 1, 10, {.refine_factor = 0}, rows.data(), scores.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*index)->Search({}, d.view(), d.base.data(), 1, 10, {.nprobe = 0}, rows.data(), scores.data()).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quiver::kernels
