// FLAT kernels against the float64 reference, over metrics, sizes that do not
// fit the tiles, k above n, dimensions 1 and 4096, and many equal distances.
// The same fixtures run the CPU path and the GPU path (Gpu/ cases skip where
// no device can be opened), plus the GPU select-k on its own.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <tuple>

#include "cuda/gpu_runtime.h"
#include "gpu_test_util.h"
#include "kernels/flat_search.h"
#include "kernels/gpu_search.h"
#include "kernels/graph.h"
#include "kernels/ivf_flat.h"
#include "kernels/ivf_pq.h"
#include "kernels/simd.h"
#include "test_util.h"

namespace quiver::kernels {
namespace {

using quiver::testing::Backend;
using quiver::testing::BackendName;
using quiver::testing::RandomVectors;
using quiver::testing::ReferenceSearch;
using quiver::testing::ResourcesFor;

constexpr float kInf = std::numeric_limits<float>::infinity();

const char* MetricTag(Metric m) {
  return m == Metric::kL2 ? "L2" : m == Metric::kInnerProduct ? "IP" : "Cos";
}

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
  Backend backend = Backend::kCpu;
};

void PrintTo(const FlatCase& c, std::ostream* os) {
  *os << BackendName(c.backend) << " metric=" << int(c.metric) << " n=" << c.n << " nq=" << c.nq << " dim=" << c.dim
      << " k=" << c.k;
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
  const Status st = FlatSearch(ResourcesFor(c.backend), view, queries.data(), c.nq, {c.metric, c.k}, rows.data(),
                               scores.data());
  ASSERT_TRUE(st.ok()) << st.ToString();
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
  QUIVER_SKIP_UNLESS_BACKEND_AVAILABLE(c.backend);
  auto base = RandomVectors(c.n, c.dim, 42 + c.n);
  auto queries = RandomVectors(c.nq, c.dim, 7 + c.nq);
  CheckAgainstReference(c, base, queries);
}

TEST_P(FlatSearchTest, ManyEqualDistances) {
  // Values from a tiny set: many rows are exact duplicates, so many ties.
  FlatCase c = GetParam();
  QUIVER_SKIP_UNLESS_BACKEND_AVAILABLE(c.backend);
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

// The GPU runs every CPU case (its tests use 1,000-row base tiles, so most of
// them cross tiles) plus the largest k it accepts.
std::vector<FlatCase> GpuCases() {
  std::vector<FlatCase> out = Cases();
  for (Metric m : {Metric::kL2, Metric::kInnerProduct, Metric::kCosine}) {
    out.push_back({m, 3001, 9, 24, 1024});  // k = kMaxK over several tiles
    out.push_back({m, 700, 4, 8, 1000});    // k above n, one tile
    out.push_back({m, 2000, 33, 1, 129});   // the larger select configuration, dimension 1
  }
  for (auto& c : out) c.backend = Backend::kGpu;
  return out;
}

// The same cases with FLAT's GEMM on the tensor cores (FlatGemm::kTf32x3):
// held to the float64 reference exactly as the FP32 GEMM is.
std::vector<FlatCase> GpuTf32x3Cases() {
  std::vector<FlatCase> out = GpuCases();
  for (auto& c : out) c.backend = Backend::kGpuTf32x3;
  return out;
}

INSTANTIATE_TEST_SUITE_P(Cpu, FlatSearchTest, ::testing::ValuesIn(Cases()), CaseName);
INSTANTIATE_TEST_SUITE_P(Gpu, FlatSearchTest, ::testing::ValuesIn(GpuCases()), CaseName);
INSTANTIATE_TEST_SUITE_P(GpuTf32x3, FlatSearchTest, ::testing::ValuesIn(GpuTf32x3Cases()), CaseName);

// ---- behaviour on every backend ----

class FlatBackendTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override { QUIVER_SKIP_UNLESS_BACKEND_AVAILABLE(GetParam()); }
  Resources res() const { return ResourcesFor(GetParam()); }
};

TEST_P(FlatBackendTest, DeletedRowsAreSkippedInsideTheScan) {
  const size_t n = 3000, dim = 16, k = 10;
  auto base = RandomVectors(n, dim, 31);
  std::vector<float> norms(n);
  SquaredNorms(base.data(), n, dim, norms.data());
  std::vector<uint64_t> deleted((n + 63) / 64, 0);
  for (size_t r = 0; r < n; r += 3) deleted[r / 64] |= 1ull << (r % 64);
  for (size_t nq : {1, 40}) {  // CPU: scan path and GEMM path
    std::vector<float> queries(base.begin(), base.begin() + long(nq * dim));  // exact matches, some deleted
    for (Metric m : {Metric::kL2, Metric::kInnerProduct, Metric::kCosine}) {
      std::vector<int64_t> rows(nq * k);
      std::vector<float> scores(nq * k);
      BaseView view{base.data(), norms.data(), n, dim, deleted.data()};
      ASSERT_TRUE(FlatSearch(res(), view, queries.data(), nq, {m, k}, rows.data(), scores.data()).ok());
      for (size_t i = 0; i < nq * k; ++i) {
        ASSERT_GE(rows[i], 0);
        EXPECT_NE(rows[i] % 3, 0) << "deleted row " << rows[i] << " returned (nq " << nq << ")";
      }
    }
  }
}

TEST_P(FlatBackendTest, EmptyBaseGivesPaddedResults) {
  std::vector<float> q(4, 1.0f);
  std::vector<int64_t> rows(3, 123);
  std::vector<float> scores(3);
  ASSERT_TRUE(FlatSearch(res(), {nullptr, nullptr, 0, 4}, q.data(), 1, {Metric::kInnerProduct, 3}, rows.data(),
                         scores.data()).ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(rows[i], -1);
}

TEST_P(FlatBackendTest, RejectsBadArguments) {
  std::vector<float> v(4, 1.0f), norms(1, 4.0f);
  std::vector<int64_t> rows(1);
  std::vector<float> scores(1);
  EXPECT_EQ(FlatSearch(res(), {v.data(), norms.data(), 1, 4}, v.data(), 1, {Metric::kL2, 0}, rows.data(),
                       scores.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(FlatSearch(res(), {v.data(), nullptr, 1, 4}, v.data(), 1, {Metric::kL2, 1}, rows.data(), scores.data())
                .code(),
            StatusCode::kInvalidArgument);
}

TEST_P(FlatBackendTest, ZeroVectorsUnderCosineScoreZero) {
  std::vector<float> base = {0, 0, 1, 0};  // row 0 is the zero vector
  std::vector<float> norms(2);
  SquaredNorms(base.data(), 2, 2, norms.data());
  std::vector<float> q = {1, 0};
  std::vector<int64_t> rows(2);
  std::vector<float> scores(2);
  ASSERT_TRUE(FlatSearch(res(), {base.data(), norms.data(), 2, 2}, q.data(), 1, {Metric::kCosine, 2}, rows.data(),
                         scores.data()).ok());
  EXPECT_EQ(rows[0], 1);
  EXPECT_FLOAT_EQ(scores[0], 1.0f);
  EXPECT_EQ(rows[1], 0);
  EXPECT_FLOAT_EQ(scores[1], 0.0f);
}

INSTANTIATE_TEST_SUITE_P(Backends, FlatBackendTest, ::testing::Values(Backend::kCpu, Backend::kGpu),
                         [](const ::testing::TestParamInfo<Backend>& info) { return BackendName(info.param); });

// ---- the GPU alone ----

TEST(GpuRuntime, OpensExactlyWhenDiscoveryFindsADevice) {
  const cuda::GpuDiscovery found = cuda::DiscoverGpus();
  auto device = cuda::GpuDevice::Open({});
  if (found.devices.empty()) {
    ASSERT_FALSE(device.ok());
    EXPECT_EQ(device.status().code(), StatusCode::kUnavailable) << device.status().ToString();
    EXPECT_FALSE(device.status().message().empty());
    return;
  }
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  EXPECT_GT((*device)->budget_bytes(), 0u);
  EXPECT_EQ((*device)->bytes_in_use(), 0u);
}

// cuBLAS is opened with dlopen once a device answers (cuda/cuda_check.cuh);
// wherever the toolkit the binary was built against is installed, every entry
// point must resolve, GPU or not.
TEST(GpuRuntime, CublasLoadsWithEveryEntryPoint) {
  if (!cuda::BuiltWithCuda()) GTEST_SKIP() << "built without CUDA";
  const Status loaded = cuda::LoadCublas();
  EXPECT_TRUE(loaded.ok()) << loaded.ToString();
}

TEST(GpuRuntime, AllocationsBeyondTheBudgetAreResourceExhausted) {
  QUIVER_SKIP_WITHOUT_GPU();
  cuda::GpuOptions options;
  options.memory_budget_bytes = 1 << 20;
  auto device = cuda::GpuDevice::Open(options);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  auto res = (*device)->NewResources();
  ASSERT_TRUE(res.ok()) << res.status().ToString();
  {
    auto half = cuda::DeviceBuffer<float>::Allocate(**res, (512 << 10) / sizeof(float), "half");
    ASSERT_TRUE(half.ok()) << half.status().ToString();
    EXPECT_EQ((*device)->bytes_in_use(), size_t{512} << 10);
    auto too_much = cuda::DeviceBuffer<float>::Allocate(**res, (768 << 10) / sizeof(float), "too much");
    ASSERT_FALSE(too_much.ok());
    EXPECT_EQ(too_much.status().code(), StatusCode::kResourceExhausted);
    EXPECT_NE(too_much.status().message().find("too much"), std::string::npos) << too_much.status().ToString();
    EXPECT_EQ((*device)->bytes_in_use(), size_t{512} << 10) << "a refused allocation counts nothing";
    // A round trip through the buffer.
    std::vector<float> in(1000), out(1000);
    for (size_t i = 0; i < in.size(); ++i) in[i] = float(i) * 0.5f;
    ASSERT_TRUE(half->CopyFromHost(**res, in.data(), in.size()).ok());
    ASSERT_TRUE(half->CopyToHost(**res, out.data(), out.size()).ok());
    ASSERT_TRUE((*res)->Synchronize().ok());
    EXPECT_EQ(in, out);
  }
  EXPECT_EQ((*device)->bytes_in_use(), 0u) << "released buffers give their bytes back";
  EXPECT_EQ((*device)->peak_bytes(), size_t{512} << 10);
  // A search that needs more than the budget fails cleanly (the caller falls back).
  kernels::Resources kres;
  kres.gpu = res->get();
  auto base = RandomVectors(4096, 128, 3);  // 2 MiB of vectors
  std::vector<float> norms(4096);
  SquaredNorms(base.data(), 4096, 128, norms.data());
  std::vector<int64_t> rows(10);
  std::vector<float> scores(10);
  const Status st = FlatSearch(kres, {base.data(), norms.data(), 4096, 128}, base.data(), 1, {Metric::kL2, 10},
                               rows.data(), scores.data());
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_EQ((*device)->bytes_in_use(), 0u);
}

TEST(GpuFlatSearch, KAboveTheGpuLimitIsInvalidArgument) {
  QUIVER_SKIP_WITHOUT_GPU();
  auto base = RandomVectors(2000, 4, 1);
  std::vector<float> norms(2000);
  SquaredNorms(base.data(), 2000, 4, norms.data());
  std::vector<int64_t> rows(gpu::kMaxK + 1);
  std::vector<float> scores(gpu::kMaxK + 1);
  const Status st = FlatSearch(ResourcesFor(Backend::kGpu), {base.data(), norms.data(), 2000, 4}, base.data(), 1,
                               {Metric::kL2, gpu::kMaxK + 1}, rows.data(), scores.data());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
}

TEST(GpuFlatSearch, ResidentBaseMatchesTheCpuWithPerCallTombstones) {
  QUIVER_SKIP_WITHOUT_GPU();
  auto& gpu = *quiver::testing::SharedTestGpu().resources;
  const size_t n = 5000, dim = 40, nq = 25, k = 16;
  auto base = RandomVectors(n, dim, 77);
  auto queries = RandomVectors(nq, dim, 78);
  std::vector<float> norms(n);
  SquaredNorms(base.data(), n, dim, norms.data());
  auto resident = gpu::DeviceFlatBase::Upload(gpu, {base.data(), norms.data(), n, dim}, /*long_lived=*/true);
  ASSERT_TRUE(resident.ok()) << resident.status().ToString();
  EXPECT_EQ(resident->bytes(), (n * dim + n) * sizeof(float));
  std::vector<uint64_t> deleted((n + 63) / 64, 0);
  for (size_t r = 0; r < n; r += 2) deleted[r / 64] |= 1ull << (r % 64);
  for (const uint64_t* tombstones : {static_cast<const uint64_t*>(nullptr), static_cast<const uint64_t*>(deleted.data())}) {
    for (Metric m : {Metric::kL2, Metric::kInnerProduct, Metric::kCosine}) {
      std::vector<int64_t> g_rows(nq * k), c_rows(nq * k);
      std::vector<float> g_scores(nq * k), c_scores(nq * k);
      const Status st = gpu::FlatSearch(gpu, *resident, tombstones, queries.data(), nq, {m, k}, g_rows.data(),
                                        g_scores.data());
      ASSERT_TRUE(st.ok()) << st.ToString();
      BaseView view{base.data(), norms.data(), n, dim, tombstones};
      ASSERT_TRUE(FlatSearch({}, view, queries.data(), nq, {m, k}, c_rows.data(), c_scores.data()).ok());
      for (size_t i = 0; i < nq * k; ++i) {
        EXPECT_NEAR(g_scores[i], c_scores[i], 1e-4 * std::max(1.0f, std::abs(c_scores[i]))) << "slot " << i;
        if (tombstones != nullptr) {
          EXPECT_EQ(g_rows[i] % 2, 1) << "deleted row returned";
        }
      }
    }
  }
}

// IVF_FLAT on the GPU against the CPU index it was copied from: the same
// lists probed, so the same rows and scores (ties and rounding aside), with
// tombstones, for every metric, k above a list's size and nprobe above nlist.
class GpuIvfFlatTest : public ::testing::TestWithParam<Metric> {};

TEST_P(GpuIvfFlatTest, MatchesTheCpuIndex) {
  QUIVER_SKIP_WITHOUT_GPU();
  const Metric metric = GetParam();
  const size_t n = 6000, dim = 24, nq = 37;
  auto base = quiver::testing::ClusteredVectors(n, dim, 40, 3, metric != Metric::kL2);
  auto queries = quiver::testing::ClusteredVectors(nq, dim, 40, 4, metric != Metric::kL2);
  IvfFlatBuildParams params;
  params.nlist = 50;
  auto index = IvfFlatIndex::Build({}, metric, base.data(), n, dim, params);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  std::vector<uint64_t> deleted((n + 63) / 64, 0);
  for (size_t r = 0; r < n; r += 5) deleted[r / 64] |= 1ull << (r % 64);
  auto& gpu = *quiver::testing::SharedTestGpu().resources;
  auto resident = gpu::DeviceIvfFlat::Upload(gpu, **index, /*long_lived=*/true);
  ASSERT_TRUE(resident.ok()) << resident.status().ToString();
  EXPECT_EQ(resident->size(), n);
  for (const uint64_t* tombstones : {static_cast<const uint64_t*>(nullptr), static_cast<const uint64_t*>(deleted.data())}) {
    for (auto [k, nprobe] : {std::pair<size_t, uint32_t>{10, 1}, {10, 8}, {300, 4}, {50, 80}}) {
      std::vector<int64_t> c_rows(nq * k), g_rows(nq * k), h_rows(nq * k);
      std::vector<float> c_scores(nq * k), g_scores(nq * k), h_scores(nq * k);
      ASSERT_TRUE((*index)->Search({}, queries.data(), nq, k, nprobe, tombstones, c_rows.data(), c_scores.data()).ok());
      Status st = gpu::IvfFlatSearch(gpu, *resident, tombstones, queries.data(), nq, k, nprobe, g_rows.data(),
                                     g_scores.data());
      ASSERT_TRUE(st.ok()) << st.ToString();
      // Through the index's own Search with GPU resources (copied per call).
      st = (*index)->Search(ResourcesFor(Backend::kGpu), queries.data(), nq, k, nprobe, tombstones, h_rows.data(),
                            h_scores.data());
      ASSERT_TRUE(st.ok()) << st.ToString();
      size_t same = 0;
      for (size_t i = 0; i < nq * k; ++i) {
        EXPECT_EQ(g_rows[i] < 0, c_rows[i] < 0) << "slot " << i << " k " << k << " nprobe " << nprobe;
        same += g_rows[i] == c_rows[i];  // -1 where the probed lists hold fewer than k live rows
        if (c_rows[i] < 0) continue;
        EXPECT_NEAR(g_scores[i], c_scores[i], 1e-4 * std::max(1.0f, std::abs(c_scores[i]))) << "slot " << i;
        EXPECT_EQ(h_rows[i], g_rows[i]);
        if (tombstones != nullptr) {
          EXPECT_NE(g_rows[i] % 5, 0) << "deleted row returned";
        }
      }
      EXPECT_GE(same, nq * k * 99 / 100 - 1) << "ids may differ only on ties, k " << k << " nprobe " << nprobe;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Metrics, GpuIvfFlatTest,
                         ::testing::Values(Metric::kL2, Metric::kInnerProduct, Metric::kCosine),
                         [](const ::testing::TestParamInfo<Metric>& info) { return std::string(MetricTag(info.param)); });

// IVF_PQ on the GPU against the CPU index it was copied from: the same lists
// probed and the same tables, summed in another order, then the same exact
// re-rank; so the same rows (a candidate at the cut aside) and exact scores,
// for every metric, 8 and 4 bits, with tombstones.
class GpuIvfPqTest : public ::testing::TestWithParam<std::tuple<Metric, uint32_t>> {};

TEST_P(GpuIvfPqTest, MatchesTheCpuIndex) {
  QUIVER_SKIP_WITHOUT_GPU();
  const auto [metric, bits] = GetParam();
  const size_t n = 6000, dim = 24, nq = 37;
  auto all = quiver::testing::ClusteredVectors(n + nq, dim, 40, 3, metric != Metric::kL2);
  std::vector<float> queries(all.begin() + long(n * dim), all.end());
  const auto d = quiver::testing::MakeIndexedData(std::move(all), n, dim);
  auto index = IvfPqIndex::Build({}, metric, d.base.data(), n, dim, {.nlist = 50, .pq_dim = 12, .pq_bits = bits});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  std::vector<uint64_t> deleted((n + 63) / 64, 0);
  for (size_t r = 0; r < n; r += 5) deleted[r / 64] |= 1ull << (r % 64);
  auto& gpu = *quiver::testing::SharedTestGpu().resources;
  auto resident = gpu::DeviceIvfPq::Upload(gpu, **index, /*long_lived=*/true);
  ASSERT_TRUE(resident.ok()) << resident.status().ToString();
  EXPECT_EQ(resident->size(), n);
  for (const uint64_t* tombstones : {static_cast<const uint64_t*>(nullptr), static_cast<const uint64_t*>(deleted.data())}) {
    for (auto [k, nprobe, refine] : {std::tuple<size_t, uint32_t, uint32_t>{10, 1, 8}, {10, 8, 4}, {100, 4, 2}, {20, 80, 1}}) {
      std::vector<int64_t> c_rows(nq * k), g_rows(nq * k), h_rows(nq * k);
      std::vector<float> c_scores(nq * k), g_scores(nq * k), h_scores(nq * k);
      const IndexSearchParams params{.nprobe = nprobe, .refine_factor = refine};
      ASSERT_TRUE((*index)->Search({}, d.view(tombstones), queries.data(), nq, k, params, c_rows.data(), c_scores.data()).ok());
      Status st = gpu::IvfPqSearch(gpu, *resident, d.view(tombstones), queries.data(), nq, k, nprobe, refine,
                                   g_rows.data(), g_scores.data());
      ASSERT_TRUE(st.ok()) << st.ToString();
      // Through the index's own Search with GPU resources (copied per call).
      st = (*index)->Search(ResourcesFor(Backend::kGpu), d.view(tombstones), queries.data(), nq, k, params,
                            h_rows.data(), h_scores.data());
      ASSERT_TRUE(st.ok()) << st.ToString();
      EXPECT_EQ(h_rows, g_rows);
      size_t same = 0;
      for (size_t i = 0; i < nq * k; ++i) {
        EXPECT_EQ(g_rows[i] < 0, c_rows[i] < 0) << "slot " << i << " k " << k << " nprobe " << nprobe;
        same += g_rows[i] == c_rows[i];
        if (g_rows[i] < 0) continue;
        const size_t q = i / k;
        const double ref = quiver::testing::ReferenceScore(metric, queries.data() + q * dim,
                                                           d.base.data() + size_t(g_rows[i]) * dim, dim);
        EXPECT_NEAR(g_scores[i], ref, quiver::testing::ScoreTolerance(ref, 1.0)) << "slot " << i;
        if (tombstones != nullptr) {
          EXPECT_NE(g_rows[i] % 5, 0) << "deleted row returned";
        }
      }
      EXPECT_GE(same, nq * k * 97 / 100) << "k " << k << " nprobe " << nprobe << " refine " << refine;
    }
  }
  std::vector<int64_t> rows(10);
  std::vector<float> scores(10);
  EXPECT_EQ(gpu::IvfPqSearch(gpu, *resident, d.view(), queries.data(), 1, 10, 4, gpu::kMaxK / 10 + 1, rows.data(),
                             scores.data())
                .code(),
            StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Metrics, GpuIvfPqTest,
                         ::testing::Combine(::testing::Values(Metric::kL2, Metric::kInnerProduct, Metric::kCosine),
                                            ::testing::Values(8u, 4u)),
                         [](const ::testing::TestParamInfo<std::tuple<Metric, uint32_t>>& info) {
                           return std::string(MetricTag(std::get<0>(info.param))) + "_" +
                                  std::to_string(std::get<1>(info.param)) + "bit";
                         });

// GRAPH on the GPU traverses with exact fp32 distances (the CPU with 8-bit
// codes), so the two agree up to recall, not id for id. Checked per query:
// recall against exact FLAT, no row twice, no tombstoned row, every score the
// float64 score of its row, best first, -1 only when fewer rows are live; for
// the resident copy and the per-call copy (GraphIndex::Search with GPU
// resources) alike. Dimensions 24 (float4 reads) and 13 (scalar reads).
class GpuGraphTest : public ::testing::TestWithParam<std::tuple<Metric, size_t>> {};

TEST_P(GpuGraphTest, RecallExactScoresAndTombstones) {
  QUIVER_SKIP_WITHOUT_GPU();
  const auto [metric, dim] = GetParam();
  const size_t n = 6000, nq = 40;
  auto all = quiver::testing::ClusteredVectors(n + nq, dim, 30, 5, metric != Metric::kL2);
  std::vector<float> queries(all.begin() + long(n * dim), all.end());
  const auto d = quiver::testing::MakeIndexedData(std::move(all), n, dim);
  auto index = GraphIndex::Build({}, metric, d.base.data(), n, dim, {.degree = 32});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  auto& gpu = *quiver::testing::SharedTestGpu().resources;
  auto resident = gpu::DeviceGraph::Upload(gpu, **index, d.view(), /*long_lived=*/true);
  ASSERT_TRUE(resident.ok()) << resident.status().ToString();
  EXPECT_EQ(resident->size(), n);
  EXPECT_EQ(resident->degree(), 32u);

  std::vector<uint64_t> deleted((n + 63) / 64, 0);
  for (size_t r = 0; r < n; r += 3) deleted[r / 64] |= 1ull << (r % 64);
  const bool larger_is_better = metric != Metric::kL2;
  for (const uint64_t* tombstones : {static_cast<const uint64_t*>(nullptr), static_cast<const uint64_t*>(deleted.data())}) {
    for (auto [k, asked_itopk] : {std::pair<size_t, uint32_t>{10, 64}, {10, 10}, {100, 128}, {300, 16}}) {
      // With a third of the rows deleted, a beam of k nodes can end with
      // fewer than k live ones scored: widen it by 1/(live share), as the
      // engine does (Collection::SearchSegmentLocked).
      const uint32_t itopk =
          tombstones != nullptr ? static_cast<uint32_t>(std::max<size_t>(asked_itopk, k) * 3 / 2) : asked_itopk;
      std::vector<int64_t> g_rows(nq * k), h_rows(nq * k), truth(nq * k);
      std::vector<float> g_scores(nq * k), h_scores(nq * k), t_scores(nq * k);
      Status st = gpu::GraphSearch(gpu, *resident, tombstones, queries.data(), nq, k, itopk, 1, g_rows.data(),
                                   g_scores.data());
      ASSERT_TRUE(st.ok()) << st.ToString();
      st = (*index)->Search(ResourcesFor(Backend::kGpu), d.view(tombstones), queries.data(), nq, k,
                            {.itopk = itopk, .search_width = 1}, h_rows.data(), h_scores.data());
      ASSERT_TRUE(st.ok()) << st.ToString();
      ASSERT_TRUE(FlatSearch({}, d.view(tombstones), queries.data(), nq, {metric, k}, truth.data(), t_scores.data()).ok());
      // Both copies are checked alike, not against each other: with several
      // blocks per query (40 queries: 3 each) the blocks share their visited
      // nodes, and which block claims a node first varies from call to call.
      for (const auto& [rows, scores, copy] : {std::tuple{&g_rows, &g_scores, "resident"},
                                               std::tuple{&h_rows, &h_scores, "per-call copy"}}) {
        size_t hits = 0;
        for (size_t q = 0; q < nq; ++q) {
          std::set<int64_t> seen, exact(truth.begin() + long(q * k), truth.begin() + long((q + 1) * k));
          for (size_t j = 0; j < k; ++j) {
            const int64_t row = (*rows)[q * k + j];
            if (row < 0) continue;
            ASSERT_LT(row, int64_t(n));
            EXPECT_TRUE(seen.insert(row).second) << copy << ": row " << row << " twice, query " << q;
            if (tombstones != nullptr) {
              EXPECT_NE(row % 3, 0) << copy << ": deleted row returned";
            }
            const double ref = quiver::testing::ReferenceScore(metric, queries.data() + q * dim,
                                                               d.base.data() + size_t(row) * dim, dim);
            EXPECT_NEAR((*scores)[q * k + j], ref, quiver::testing::ScoreTolerance(ref, 1.0)) << copy << ": row " << row;
            if (j > 0 && (*rows)[q * k + j - 1] >= 0) {
              const float prev = (*scores)[q * k + j - 1], cur = (*scores)[q * k + j];
              EXPECT_TRUE(larger_is_better ? prev >= cur : prev <= cur) << copy << ": not best first, query " << q;
            }
            hits += exact.count(row);
          }
          // 4,000 or 6,000 live rows: a search scores far more than k of them.
          EXPECT_EQ(seen.size(), k) << copy << ": query " << q << " k " << k << " itopk " << itopk;
        }
        const double recall = double(hits) / double(nq * k);
        std::printf("GPU GRAPH %s dim %zu k %zu itopk %u%s, %s: recall %.4f\n", MetricTag(metric), dim, k, itopk,
                    tombstones != nullptr ? " (1/3 deleted)" : "", copy, recall);
        if (itopk >= 64) {
          EXPECT_GE(recall, 0.95) << copy << ": k " << k << " itopk " << itopk;
        }
      }
    }
  }
}

// The GPU's rank-based pruning against the definition, written out plainly
// (linear searches, a stable sort): lists of random nearby nodes, so that
// they overlap and detours are common; some lists short (padded), one
// empty; degrees below, at and above the list length.
TEST(GpuGraph, PruneByDetoursMatchesItsDefinition) {
  QUIVER_SKIP_WITHOUT_GPU();
  const size_t n = 3000, knn = 48;
  std::mt19937 rng(5);
  std::vector<uint32_t> knn_graph(n * knn, kNoEdge);
  for (size_t a = 0; a < n; ++a) {
    const size_t len = a == 7 ? 0 : a % 5 == 0 ? 1 + rng() % knn : knn;
    std::set<uint32_t> used{static_cast<uint32_t>(a)};
    for (size_t j = 0; j < len; ++j) {
      uint32_t b;
      do {
        b = static_cast<uint32_t>((a + n - 60 + rng() % 121) % n);
      } while (!used.insert(b).second);
      knn_graph[a * knn + j] = b;
    }
  }
  auto& gpu = *quiver::testing::SharedTestGpu().resources;
  for (size_t degree : {size_t{16}, size_t{48}, size_t{64}}) {
    std::vector<uint32_t> pruned(n * degree);
    ASSERT_TRUE(gpu::PruneByDetours(gpu, knn_graph.data(), n, knn, degree, pruned.data()).ok());
    size_t with_detours = 0;
    for (size_t a = 0; a < n; ++a) {
      const uint32_t* list = knn_graph.data() + a * knn;
      size_t len = 0;
      while (len < knn && list[len] != kNoEdge) ++len;
      std::vector<size_t> detours(len, 0);
      for (size_t j = 0; j < len; ++j) {
        for (size_t i = 0; i < j; ++i) {
          const uint32_t* b_list = knn_graph.data() + size_t{list[i]} * knn;
          for (size_t r = 0; r < j && r + 1 < len; ++r) {
            if (b_list[r] == list[j]) ++detours[j];
          }
        }
      }
      std::vector<size_t> order(len);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return detours[x] < detours[y]; });
      for (size_t p = 0; p < degree; ++p) {
        const uint32_t want = p < len ? list[order[p]] : kNoEdge;
        ASSERT_EQ(pruned[a * degree + p], want) << "node " << a << " place " << p << " degree " << degree;
      }
      with_detours += std::any_of(detours.begin(), detours.end(), [](size_t d) { return d > 0; });
    }
    EXPECT_GT(with_detours, n / 2) << "the lists must overlap for the test to mean anything";
  }
  std::vector<uint32_t> out(10);
  EXPECT_EQ(gpu::PruneByDetours(gpu, knn_graph.data(), n, gpu::kMaxK + 1, 10, out.data()).code(),
            StatusCode::kInvalidArgument);
}

// A beam of 1,024 on 20,000 nodes visits far more nodes than half the
// visited hash (at most 2^14 slots): the hash is refilled with the beam's
// and kept list's nodes several times per search. A node scored again must
// never come back twice, nor a tombstoned one; recall stays at least the
// CPU's (which never forgets a visit). 20 queries: several blocks each.
TEST(GpuGraph, LongSearchesRefillTheVisitedHash) {
  QUIVER_SKIP_WITHOUT_GPU();
  const size_t n = 20000, dim = 16, nq = 20, k = 100;
  const uint32_t itopk = static_cast<uint32_t>(gpu::kMaxGraphItopk);
  auto all = quiver::testing::ClusteredVectors(n + nq, dim, 50, 17);
  std::vector<float> queries(all.begin() + long(n * dim), all.end());
  const auto d = quiver::testing::MakeIndexedData(std::move(all), n, dim);
  auto index = GraphIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.degree = 32});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  auto& gpu = *quiver::testing::SharedTestGpu().resources;
  auto resident = gpu::DeviceGraph::Upload(gpu, **index, d.view(), /*long_lived=*/true);
  ASSERT_TRUE(resident.ok()) << resident.status().ToString();
  std::vector<uint64_t> deleted((n + 63) / 64, 0);
  for (size_t r = 0; r < n; r += 4) deleted[r / 64] |= 1ull << (r % 64);
  for (const uint64_t* tombstones : {static_cast<const uint64_t*>(nullptr), static_cast<const uint64_t*>(deleted.data())}) {
    std::vector<int64_t> g_rows(nq * k), c_rows(nq * k), truth(nq * k);
    std::vector<float> g_scores(nq * k), c_scores(nq * k), t_scores(nq * k);
    ASSERT_TRUE(gpu::GraphSearch(gpu, *resident, tombstones, queries.data(), nq, k, itopk, 1, g_rows.data(),
                                 g_scores.data())
                    .ok());
    ASSERT_TRUE((*index)->Search({}, d.view(tombstones), queries.data(), nq, k, {.itopk = itopk}, c_rows.data(),
                                 c_scores.data())
                    .ok());
    ASSERT_TRUE(FlatSearch({}, d.view(tombstones), queries.data(), nq, {Metric::kL2, k}, truth.data(), t_scores.data())
                    .ok());
    for (size_t q = 0; q < nq; ++q) {
      std::set<int64_t> seen;
      for (size_t j = 0; j < k; ++j) {
        const int64_t row = g_rows[q * k + j];
        ASSERT_GE(row, 0) << "query " << q << ": fewer than k rows";
        EXPECT_TRUE(seen.insert(row).second) << "row " << row << " twice, query " << q;
        if (tombstones != nullptr) {
          EXPECT_NE(row % 4, 0) << "deleted row returned";
        }
        const double ref = quiver::testing::ReferenceScore(Metric::kL2, queries.data() + q * dim,
                                                           d.base.data() + size_t(row) * dim, dim);
        EXPECT_NEAR(g_scores[q * k + j], ref, quiver::testing::ScoreTolerance(ref, 1.0)) << "row " << row;
      }
    }
    auto recall_of = [&](const std::vector<int64_t>& rows) {
      size_t hits = 0;
      for (size_t q = 0; q < nq; ++q) {
        const std::set<int64_t> exact(truth.begin() + long(q * k), truth.begin() + long((q + 1) * k));
        for (size_t j = 0; j < k; ++j) hits += exact.count(rows[q * k + j]);
      }
      return double(hits) / double(nq * k);
    };
    const double gpu_recall = recall_of(g_rows), cpu_recall = recall_of(c_rows);
    std::printf("GPU GRAPH 20k, itopk %u%s: recall GPU %.4f, CPU %.4f\n", itopk,
                tombstones != nullptr ? " (1/4 deleted)" : "", gpu_recall, cpu_recall);
    EXPECT_GE(gpu_recall, cpu_recall - 0.01);
  }
}

// Every row of a graph smaller than k comes back once, then -1; a beam or an
// expansion beyond the shared-memory limits is INVALID_ARGUMENT (served on the
// CPU by the engine).
TEST(GpuGraph, SmallGraphsAndLimits) {
  QUIVER_SKIP_WITHOUT_GPU();
  const size_t n = 50, dim = 8, k = 64;
  const auto d = quiver::testing::MakeIndexedData(RandomVectors(n, dim, 9), n, dim);
  auto index = GraphIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.degree = 16});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  auto& gpu = *quiver::testing::SharedTestGpu().resources;
  std::vector<int64_t> rows(k);
  std::vector<float> scores(k);
  ASSERT_TRUE(gpu::GraphSearch(gpu, **index, d.view(), d.base.data(), 1, k, 16, 1, rows.data(), scores.data()).ok());
  std::set<int64_t> seen(rows.begin(), rows.begin() + long(n));
  EXPECT_EQ(seen.size(), n);
  EXPECT_EQ(rows[0], 0) << "the query is row 0 itself";
  for (size_t j = n; j < k; ++j) EXPECT_EQ(rows[j], -1);
  EXPECT_EQ(gpu::GraphSearch(gpu, **index, d.view(), d.base.data(), 1, 10, gpu::kMaxGraphItopk + 1, 1, rows.data(),
                             scores.data())
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(gpu::GraphSearch(gpu, **index, d.view(), d.base.data(), 1, 10, 16, gpu::kMaxGraphExpansion, rows.data(),
                             scores.data())
                .code(),
            StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Metrics, GpuGraphTest,
                         ::testing::Combine(::testing::Values(Metric::kL2, Metric::kInnerProduct, Metric::kCosine),
                                            ::testing::Values(size_t{24}, size_t{13})),
                         [](const ::testing::TestParamInfo<std::tuple<Metric, size_t>>& info) {
                           return std::string(MetricTag(std::get<0>(info.param))) + "_dim" +
                                  std::to_string(std::get<1>(info.param));
                         });

// The k best of each row by std::stable_sort (ties by lower column).
void ReferenceSelect(const std::vector<float>& v, size_t rows, size_t len, size_t k, bool select_max,
                     std::vector<int64_t>* cols, std::vector<float>* vals) {
  cols->assign(rows * k, -1);
  vals->assign(rows * k, select_max ? -kInf : kInf);
  for (size_t r = 0; r < rows; ++r) {
    std::vector<int64_t> idx;
    for (size_t j = 0; j < len; ++j) {
      if (!std::isnan(v[r * len + j])) idx.push_back(int64_t(j));
    }
    std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
      const float x = v[r * len + size_t(a)], y = v[r * len + size_t(b)];
      return select_max ? x > y : x < y;
    });
    for (size_t i = 0; i < std::min(k, idx.size()); ++i) {
      (*cols)[r * k + i] = idx[i];
      (*vals)[r * k + i] = v[r * len + size_t(idx[i])];
    }
  }
}

struct SelectCase {
  const char* name;
  size_t rows, len, k;
  bool select_max;
  int pattern;  // 0 random, 1 few distinct values, 2 descending, 3 all equal, 4 some NaN
};

class GpuSelectKTest : public ::testing::TestWithParam<SelectCase> {};

TEST_P(GpuSelectKTest, MatchesStableSort) {
  QUIVER_SKIP_WITHOUT_GPU();
  const SelectCase& c = GetParam();
  std::vector<float> v = RandomVectors(c.rows, c.len, 17 + c.len);
  for (size_t i = 0; i < v.size(); ++i) {
    const size_t j = i % c.len;
    if (c.pattern == 1) v[i] = std::round(v[i] * 3);
    if (c.pattern == 2) v[i] = -float(j);  // each new value beats all before it (select_max: worst case for min)
    if (c.pattern == 3) v[i] = 0.25f;
    if (c.pattern == 4 && j % 7 == 3) v[i] = std::nanf("");
  }
  std::vector<int64_t> cols(c.rows * c.k), want_cols;
  std::vector<float> vals(c.rows * c.k), want_vals;
  const Status st = gpu::SelectK(*quiver::testing::SharedTestGpu().resources, v.data(), c.rows, c.len, c.k,
                                 c.select_max, cols.data(), vals.data());
  ASSERT_TRUE(st.ok()) << st.ToString();
  ReferenceSelect(v, c.rows, c.len, c.k, c.select_max, &want_cols, &want_vals);
  EXPECT_EQ(cols, want_cols);
  EXPECT_EQ(vals, want_vals);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GpuSelectKTest,
    ::testing::Values(SelectCase{"random_k10", 64, 10000, 10, false, 0}, SelectCase{"random_max_k10", 64, 10000, 10, true, 0},
                      SelectCase{"k1", 8, 5000, 1, false, 0}, SelectCase{"k128", 16, 70001, 128, false, 0},
                      SelectCase{"k129", 16, 7001, 129, true, 0}, SelectCase{"k1024", 8, 50000, 1024, false, 0},
                      SelectCase{"k_above_len", 5, 300, 1000, false, 0}, SelectCase{"len1", 3, 1, 4, true, 0},
                      SelectCase{"ties", 32, 4000, 100, false, 1}, SelectCase{"all_equal", 4, 3000, 1024, true, 3},
                      SelectCase{"descending", 4, 20000, 64, false, 2}, SelectCase{"descending_k1024", 2, 20000, 1024, false, 2},
                      SelectCase{"nan", 8, 1000, 50, false, 4}),
    [](const ::testing::TestParamInfo<SelectCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace quiver::kernels
