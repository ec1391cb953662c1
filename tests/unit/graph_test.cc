// GRAPH: recall floors on fixed seeds for every metric, graph invariants
// (degree, no self loops or repeated edges, every node reachable), exact
// scores after re-ranking, tombstones, tiny segments, serialisation round
// trips and corrupt bytes, bad parameters.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <set>

#include "common/encoding.h"
#include "gpu_test_util.h"
#include "kernels/graph.h"
#include "test_util.h"

namespace quiver::kernels {
namespace {

const char* Name(Metric m) { return m == Metric::kL2 ? "L2" : m == Metric::kInnerProduct ? "IP" : "Cos"; }

using Data = quiver::testing::IndexedData;
using quiver::testing::MakeIndexedData;
using quiver::testing::RecallAgainstFlat;

// Every layer: edges in range, no self loops, no repeats, padding only at
// the end, and every node reachable from the nodes the layer above hands
// down (plus its extra seeds); the top layer's nodes are the entry points.
void ExpectGraphInvariants(const GraphIndex& g) {
  const auto& layers = g.layers();
  ASSERT_FALSE(layers.empty());
  const size_t d = g.degree();
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto& layer = layers[l];
    const size_t size = layer.size(g.size());
    ASSERT_EQ(layer.graph.size(), size * d) << "layer " << l;
    std::vector<uint32_t> seeds;
    if (l + 1 < layers.size()) {
      seeds = layers[l + 1].down;
    } else {
      for (uint32_t i = 0; i < size; ++i) seeds.push_back(i);
      ASSERT_EQ(g.entry_points().size(), size);
    }
    seeds.insert(seeds.end(), layer.extra_seeds.begin(), layer.extra_seeds.end());
    size_t edges = 0;
    for (size_t a = 0; a < size; ++a) {
      const uint32_t* list = layer.graph.data() + a * d;
      std::set<uint32_t> seen;
      bool padding = false;
      for (size_t i = 0; i < d; ++i) {
        if (list[i] == kNoEdge) {
          padding = true;
          continue;
        }
        ASSERT_FALSE(padding) << "layer " << l << " node " << a << ": edge after padding";
        ASSERT_LT(list[i], size);
        ASSERT_NE(list[i], a) << "self loop";
        ASSERT_TRUE(seen.insert(list[i]).second) << "layer " << l << " node " << a << " repeats " << list[i];
        ++edges;
      }
      // Layer 0 keeps at least half its degree when it has enough nodes.
      if (l == 0 && size > 2 * d) {
        EXPECT_GE(seen.size(), d / 2) << "node " << a;
      }
    }
    std::vector<uint8_t> reached(size, 0);
    std::vector<uint32_t> queue;
    for (uint32_t s : seeds) {
      ASSERT_LT(s, size);
      if (!reached[s]) reached[s] = 1, queue.push_back(s);
    }
    for (size_t h = 0; h < queue.size(); ++h) {
      const uint32_t* list = layer.graph.data() + size_t{queue[h]} * d;
      for (size_t i = 0; i < d && list[i] != kNoEdge; ++i) {
        if (!reached[list[i]]) reached[list[i]] = 1, queue.push_back(list[i]);
      }
    }
    EXPECT_EQ(queue.size(), size) << "layer " << l << ": nodes unreachable from the layer above";
    if (l > 0) {
      const auto& lower = layers[l - 1];
      for (size_t i = 0; i < size; ++i) {
        ASSERT_EQ(layer.rows[i], lower.rows.empty() ? layer.down[i] : lower.rows[layer.down[i]]);
      }
    }
  }
}

class GraphTest : public ::testing::TestWithParam<Metric> {};

TEST_P(GraphTest, RecallFloorOnClusteredData) {
  const Metric m = GetParam();
  const size_t n = 20000, dim = 32, nq = 200, k = 10;
  auto all = quiver::testing::ClusteredVectors(n + nq, dim, 50, 3, m != Metric::kL2);
  std::vector<float> queries(all.begin() + long(n * dim), all.end());
  const Data d = MakeIndexedData(std::move(all), n, dim);
  auto index = GraphIndex::Build({}, m, d.base.data(), n, dim, {.degree = 24});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  ExpectGraphInvariants(**index);
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  ASSERT_TRUE((*index)->Search({}, d.view(), queries.data(), nq, k, {.itopk = 64}, rows.data(), scores.data()).ok());
  const double recall = RecallAgainstFlat(m, d, queries, nq, k, rows);
  std::printf("%s: recall@10 at itopk 64 = %.4f\n", Name(m), recall);
  EXPECT_GE(recall, 0.95);
  // A wider beam finds at least as much; a beam of k finds less.
  std::vector<int64_t> rows_small(nq * k);
  ASSERT_TRUE((*index)->Search({}, d.view(), queries.data(), nq, k, {.itopk = 10}, rows_small.data(), scores.data()).ok());
  std::vector<int64_t> rows_wide(nq * k);
  ASSERT_TRUE(
      (*index)->Search({}, d.view(), queries.data(), nq, k, {.itopk = 64, .search_width = 4}, rows_wide.data(), scores.data()).ok());
  EXPECT_LE(RecallAgainstFlat(m, d, queries, nq, k, rows_small), recall);
  EXPECT_GE(RecallAgainstFlat(m, d, queries, nq, k, rows_wide), 0.95);
}

// With GPU resources the build's kNN graphs come from the GPU (exact, every
// node against every other); pruning and the rest stay on the host. The
// graph keeps every invariant, and its recall is at least the CPU-built
// graph's (whose kNN lists are approximate), less noise.
TEST_P(GraphTest, GpuBuildKeepsTheInvariantsAndTheRecall) {
  QUIVER_SKIP_WITHOUT_GPU();
  const Metric m = GetParam();
  const size_t n = 20000, dim = 32, nq = 200, k = 10;
  auto all = quiver::testing::ClusteredVectors(n + nq, dim, 50, 3, m != Metric::kL2);
  std::vector<float> queries(all.begin() + long(n * dim), all.end());
  const Data d = MakeIndexedData(std::move(all), n, dim);
  auto on_gpu = GraphIndex::Build(quiver::testing::ResourcesFor(quiver::testing::Backend::kGpu), m, d.base.data(), n,
                                  dim, {.degree = 24});
  ASSERT_TRUE(on_gpu.ok()) << on_gpu.status().ToString();
  ExpectGraphInvariants(**on_gpu);
  EXPECT_EQ((*on_gpu)->layers().size(), 3u) << "the same layers as a CPU build";
  auto on_cpu = GraphIndex::Build({}, m, d.base.data(), n, dim, {.degree = 24});
  ASSERT_TRUE(on_cpu.ok()) << on_cpu.status().ToString();
  std::vector<int64_t> gpu_rows(nq * k), cpu_rows(nq * k);
  std::vector<float> scores(nq * k);
  for (const uint32_t itopk : {16u, 64u}) {
    ASSERT_TRUE((*on_gpu)->Search({}, d.view(), queries.data(), nq, k, {.itopk = itopk}, gpu_rows.data(), scores.data()).ok());
    ASSERT_TRUE((*on_cpu)->Search({}, d.view(), queries.data(), nq, k, {.itopk = itopk}, cpu_rows.data(), scores.data()).ok());
    const double gpu_recall = RecallAgainstFlat(m, d, queries, nq, k, gpu_rows);
    const double cpu_recall = RecallAgainstFlat(m, d, queries, nq, k, cpu_rows);
    std::printf("%s itopk %u: recall@10 GPU-built %.4f, CPU-built %.4f\n", Name(m), itopk, gpu_recall, cpu_recall);
    EXPECT_GE(gpu_recall, cpu_recall - 0.01) << "itopk " << itopk;
    if (itopk == 64) {
      EXPECT_GE(gpu_recall, 0.95);
    }
  }
}

// Scores come from exact re-ranking: the same numbers FLAT gives those rows,
// best first.
TEST_P(GraphTest, ScoresAreExactAndSorted) {
  const Metric m = GetParam();
  const size_t n = 3000, dim = 20, nq = 30, k = 8;
  const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 5), n, dim);
  auto queries = quiver::testing::RandomVectors(nq, dim, 6);
  auto index = GraphIndex::Build({}, m, d.base.data(), n, dim, {.degree = 16});
  ASSERT_TRUE(index.ok());
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  ASSERT_TRUE((*index)->Search({}, d.view(), queries.data(), nq, k, {.itopk = 32}, rows.data(), scores.data()).ok());
  for (size_t i = 0; i < nq; ++i) {
    const float* q = queries.data() + i * dim;
    for (size_t j = 0; j < k; ++j) {
      ASSERT_GE(rows[i * k + j], 0);
      const double ref = quiver::testing::ReferenceScore(m, q, d.base.data() + size_t(rows[i * k + j]) * dim, dim);
      EXPECT_NEAR(scores[i * k + j], ref, quiver::testing::ScoreTolerance(ref, 2.0 * dim)) << Name(m);
      if (j > 0) {
        if (m == Metric::kL2) {
          EXPECT_LE(scores[i * k + j - 1], scores[i * k + j]);
        } else {
          EXPECT_GE(scores[i * k + j - 1], scores[i * k + j]);
        }
      }
    }
  }
}

TEST_P(GraphTest, DeletedRowsAreNeverReturnedAndKStillComeBack) {
  const Metric m = GetParam();
  const size_t n = 5000, dim = 16, nq = 30, k = 10;
  const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 8), n, dim);
  auto index = GraphIndex::Build({}, m, d.base.data(), n, dim, {.degree = 16});
  ASSERT_TRUE(index.ok());
  std::vector<uint64_t> deleted((n + 63) / 64, 0);
  for (size_t r = 0; r < n; r += 2) deleted[r / 64] |= 1ull << (r % 64);  // every even row
  std::vector<float> queries(d.base.begin(), d.base.begin() + long(nq * dim));
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  ASSERT_TRUE(
      (*index)->Search({}, d.view(deleted.data()), queries.data(), nq, k, {.itopk = 32}, rows.data(), scores.data()).ok());
  for (size_t i = 0; i < nq * k; ++i) {
    ASSERT_GE(rows[i], 0) << "k results must still come back";
    EXPECT_EQ(rows[i] % 2, 1) << "deleted row " << rows[i] << " returned";
  }
}

INSTANTIATE_TEST_SUITE_P(Metrics, GraphTest, ::testing::Values(Metric::kL2, Metric::kInnerProduct, Metric::kCosine),
                         [](const auto& info) { return std::string(Name(info.param)); });

// Segments smaller than the degree, and a single point: every row is found,
// exactly (the beam covers the whole graph).
TEST(Graph, TinySegmentsAreSearchedExactly) {
  for (size_t n : {1u, 2u, 7u, 33u, 300u}) {
    const size_t dim = 6, nq = 5, k = 3;
    const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 40 + n), n, dim);
    auto queries = quiver::testing::RandomVectors(nq, dim, 41);
    auto index = GraphIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.degree = 16});
    ASSERT_TRUE(index.ok()) << n << ": " << index.status().ToString();
    ExpectGraphInvariants(**index);
    std::vector<int64_t> rows(nq * k), truth(nq * k);
    std::vector<float> scores(nq * k), ts(nq * k);
    ASSERT_TRUE((*index)->Search({}, d.view(), queries.data(), nq, k, {.itopk = 512}, rows.data(), scores.data()).ok());
    ASSERT_TRUE(FlatSearch({}, d.view(), queries.data(), nq, {Metric::kL2, k}, truth.data(), ts.data()).ok());
    EXPECT_EQ(rows, truth) << "n = " << n;
  }
}

// The traversal sums inner products of 16-bit query integers and 8-bit codes
// in int32. At 4,096 dimensions of all-positive data every product is large
// and of one sign: the sum must not wrap (the query's integers shrink with
// the dimension), or the keys order nodes at random.
TEST(Graph, HighDimensionalInnerProductKeysDoNotOverflow) {
  const size_t n = 2000, dim = 4096, nq = 20, k = 10;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> all((n + nq) * dim);
  for (float& v : all) v = 1.0f + u(rng);
  std::vector<float> queries(all.begin() + long(n * dim), all.end());
  const Data d = MakeIndexedData(std::move(all), n, dim);
  auto index = GraphIndex::Build({}, Metric::kInnerProduct, d.base.data(), n, dim, {.degree = 16});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  std::vector<int64_t> rows(nq * k);
  std::vector<float> scores(nq * k);
  ASSERT_TRUE((*index)->Search({}, d.view(), queries.data(), nq, k, {.itopk = 32}, rows.data(), scores.data()).ok());
  EXPECT_GE(RecallAgainstFlat(Metric::kInnerProduct, d, queries, nq, k, rows), 0.9);
}

TEST(Graph, LargeSegmentsGetUpperLayers) {
  const size_t n = 20000, dim = 8;
  const Data d = MakeIndexedData(quiver::testing::ClusteredVectors(n, dim, 30, 12), n, dim);
  auto index = GraphIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.degree = 16});
  ASSERT_TRUE(index.ok());
  // 20000 -> 1250 -> 78: three layers, the top one small.
  EXPECT_EQ((*index)->layers().size(), 3u);
  EXPECT_LE((*index)->entry_points().size(), 256u);
  ExpectGraphInvariants(**index);
  EXPECT_LT((*index)->MemoryBytes(), n * dim * sizeof(float) + n * 16 * 4 * 2) << "8-bit codes, not a float copy";
}

// The layer above is spread over the data, not a uniform sample: with 1,250
// tight clusters of 16 points, a uniform 1-in-16 sample leaves 36% of them
// without a node in layer 1 ((15/16)^16), and a search whose target cluster
// has no node above finds it only by luck. The spread sample takes one node
// per cluster.
TEST(Graph, UpperLayersCoverEveryRegion) {
  const size_t clusters = 1250, per_cluster = 16, n = clusters * per_cluster, dim = 8;
  std::mt19937_64 rng(77);
  std::uniform_real_distribution<float> where(-10.0f, 10.0f);
  std::normal_distribution<float> spread(0.0f, 0.01f);
  std::vector<float> centres(clusters * dim);
  for (float& c : centres) c = where(rng);
  std::vector<float> all(n * dim);
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < dim; ++j) all[i * dim + j] = centres[(i % clusters) * dim + j] + spread(rng);
  }
  const Data d = MakeIndexedData(std::move(all), n, dim);
  auto index = GraphIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.degree = 16});
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  const auto& layers = (*index)->layers();
  ASSERT_GE(layers.size(), 2u);
  EXPECT_EQ(layers[1].down.size(), n / 16) << "still 1 in 16";
  std::vector<uint8_t> has_node_above(clusters, 0);
  for (uint32_t node : layers[1].down) has_node_above[node % clusters] = 1;
  const size_t covered = std::count(has_node_above.begin(), has_node_above.end(), 1);
  EXPECT_GE(covered, clusters * 97 / 100) << covered << " of " << clusters << " clusters have a node in layer 1";
}

TEST(Graph, SerializationRoundTripsExactly) {
  const size_t n = 5000, dim = 12, nq = 20, k = 5;
  const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 21), n, dim);
  for (Metric m : {Metric::kL2, Metric::kInnerProduct, Metric::kCosine}) {
    auto index = GraphIndex::Build({}, m, d.base.data(), n, dim, {.degree = 12});
    ASSERT_TRUE(index.ok());
    const std::string bytes = (*index)->Serialize();
    auto back = DeserializeIndex(bytes, "test");
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_STREQ((*back)->kind(), "GRAPH");
    EXPECT_EQ((*back)->Serialize(), bytes);
    EXPECT_EQ((*back)->metric(), m);
    std::vector<int64_t> r1(nq * k), r2(nq * k);
    std::vector<float> s1(nq * k), s2(nq * k);
    ASSERT_TRUE((*index)->Search({}, d.view(), d.base.data(), nq, k, {}, r1.data(), s1.data()).ok());
    ASSERT_TRUE((*back)->Search({}, d.view(), d.base.data(), nq, k, {}, r2.data(), s2.data()).ok());
    EXPECT_EQ(r1, r2);
    EXPECT_EQ(s1, s2);
  }
}

TEST(Graph, CorruptBytesAreDataLossNeverACrash) {
  const size_t n = 600, dim = 4;
  const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 22), n, dim);
  auto index = GraphIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.degree = 8});
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
    auto r = DeserializeIndex(bad, "corrupt.graph");
    ASSERT_FALSE(r.ok()) << "trial " << trial;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(r.status().message().find("corrupt.graph"), std::string::npos) << r.status().message();
  }
}

// A buggy writer, not bit rot: structure checked behind a valid checksum.
TEST(Graph, StructuralCorruptionWithValidChecksumIsDataLoss) {
  const size_t n = 600, dim = 4, degree = 8;
  const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 23), n, dim);
  auto index = GraphIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.degree = degree});
  ASSERT_TRUE(index.ok());
  const std::string good = (*index)->Serialize();
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
  // Header: magic(8) version(4) metric(4) dim@16 n@24 degree@32 layers@40,
  // offsets and scales @48, layer 0: size, seed count, then its graph.
  const size_t layer0_graph = 48 + 2 * dim * 4 + 16;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"huge n", with(24, uint64_t{1} << 40)},
      {"zero dim", with(16, uint64_t{0})},
      {"no layers", with(40, uint64_t{0})},
      {"edge out of range", with(layer0_graph, uint32_t(n + 5))},
      {"self loop", with(layer0_graph, uint32_t{0})},
      {"negative scale", with(48 + dim * 4, -1.0f)},
      {"unknown metric", with(12, uint32_t{9})},
  };
  for (const auto& [what, bytes] : cases) {
    auto r = GraphIndex::Deserialize(bytes, "crafted");
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << what;
  }
}

TEST(Graph, BadParametersAreRefused) {
  const size_t n = 100, dim = 4;
  const Data d = MakeIndexedData(quiver::testing::RandomVectors(n, dim, 24), n, dim);
  EXPECT_FALSE(GraphIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.degree = 2}).ok());
  EXPECT_FALSE(GraphIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.degree = 16, .intermediate_degree = 8}).ok());
  EXPECT_FALSE(GraphIndex::Build({}, Metric::kL2, d.base.data(), 0, dim, {}).ok());
  auto index = GraphIndex::Build({}, Metric::kL2, d.base.data(), n, dim, {.degree = 8});
  ASSERT_TRUE(index.ok());
  std::vector<int64_t> rows(10);
  std::vector<float> scores(10);
  EXPECT_EQ((*index)->Search({}, d.view(), d.base.data(), 1, 10, {.itopk = 0}, rows.data(), scores.data()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*index)->Search({}, d.view(), d.base.data(), 1, 10, {.search_width = 0}, rows.data(), scores.data()).code(),
            StatusCode::kInvalidArgument);
  BaseView wrong = d.view();
  wrong.rows = n - 1;
  EXPECT_EQ((*index)->Search({}, wrong, d.base.data(), 1, 10, {}, rows.data(), scores.data()).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace quiver::kernels
