// CPU GRAPH index: CAGRA-style build and a best-first beam search over 8-bit
// codes with exact re-ranking. See kernels/graph.h for the design.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "common/encoding.h"
#include "kernels/cpu/kmeans.h"
#include "kernels/cpu/rerank.h"
#include "kernels/cpu/serialize.h"
#include "kernels/cpu/topk.h"
#include "kernels/gpu_search.h"
#include "kernels/graph.h"
#include "kernels/simd.h"

namespace quiver::kernels {
namespace {

// ---- distance from a prepared query to one 8-bit code ----
// The code of dimension j stands for offset[j] + scale[j] * c[j]. A query is
// prepared once (CodeKeys::Prepare) so that the key, smaller is better, is
//   L2:    sum_j (a[j] - s[j] * c[j])^2    with a = q - offset, s = scale
//   IP:   -sum_j a[j] * c[j]               with a = q * scale
// For IP this drops the query's constant sum_j q[j] * offset[j]: ranks only.
// IP rounds a to 16-bit integers and sums a[j] * c[j] in int32, two
// dimensions per multiply-add (vpmaddwd) instead of converting every code
// to float: 1.10-1.14x QPS on 300k x 384 at unchanged recall. The rounding
// (half of max|a| / kMaxQueryInt) is far below the codes' own (half a step).

float CodeL2Scalar(const float* a, const float* s, const uint8_t* c, size_t dim) {
  float acc = 0;
  for (size_t j = 0; j < dim; ++j) {
    const float t = a[j] - s[j] * float(c[j]);
    acc += t * t;
  }
  return acc;
}

__attribute__((target("avx2,fma"))) float CodeL2Avx2(const float* a, const float* s, const uint8_t* c, size_t dim) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t j = 0;
  for (; j + 16 <= dim; j += 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j));
    const __m256 c0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
    const __m256 c1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8)));
    const __m256 t0 = _mm256_fnmadd_ps(_mm256_loadu_ps(s + j), c0, _mm256_loadu_ps(a + j));
    const __m256 t1 = _mm256_fnmadd_ps(_mm256_loadu_ps(s + j + 8), c1, _mm256_loadu_ps(a + j + 8));
    acc0 = _mm256_fmadd_ps(t0, t0, acc0);
    acc1 = _mm256_fmadd_ps(t1, t1, acc1);
  }
  for (; j + 8 <= dim; j += 8) {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + j));
    const __m256 t0 = _mm256_fnmadd_ps(_mm256_loadu_ps(s + j), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes)),
                                       _mm256_loadu_ps(a + j));
    acc0 = _mm256_fmadd_ps(t0, t0, acc0);
  }
  const __m256 acc = _mm256_add_ps(acc0, acc1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_movehdup_ps(h));
  float sum = _mm_cvtss_f32(h);
  for (; j < dim; ++j) {
    const float t = a[j] - s[j] * float(c[j]);
    sum += t * t;
  }
  return sum;
}

// The same sum, 16 dimensions per step: half the instructions of the AVX2
// kernel per code. Once the index sat on huge pages (fewer TLB stalls) this
// showed: 1.01-1.07x QPS on 1M x 128 at every itopk (two interleaved A/B
// rounds of 7).
__attribute__((target("avx512f"))) float CodeL2Avx512(const float* a, const float* s, const uint8_t* c,
                                                       size_t dim) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  size_t j = 0;
  for (; j + 32 <= dim; j += 32) {
    const __m512 c0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j))));
    const __m512 c1 =
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j + 16))));
    const __m512 t0 = _mm512_fnmadd_ps(_mm512_loadu_ps(s + j), c0, _mm512_loadu_ps(a + j));
    const __m512 t1 = _mm512_fnmadd_ps(_mm512_loadu_ps(s + j + 16), c1, _mm512_loadu_ps(a + j + 16));
    acc0 = _mm512_fmadd_ps(t0, t0, acc0);
    acc1 = _mm512_fmadd_ps(t1, t1, acc1);
  }
  for (; j + 16 <= dim; j += 16) {
    const __m512 c0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j))));
    const __m512 t0 = _mm512_fnmadd_ps(_mm512_loadu_ps(s + j), c0, _mm512_loadu_ps(a + j));
    acc0 = _mm512_fmadd_ps(t0, t0, acc0);
  }
  float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; j < dim; ++j) {
    const float t = a[j] - s[j] * float(c[j]);
    sum += t * t;
  }
  return sum;
}

int32_t CodeDotScalar(const int16_t* a, const uint8_t* c, size_t dim) {
  int32_t sum = 0;
  for (size_t j = 0; j < dim; ++j) sum += int32_t{a[j]} * int32_t{c[j]};
  return sum;
}

__attribute__((target("avx2"))) int32_t CodeDotAvx2(const int16_t* a, const uint8_t* c, size_t dim) {
  __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();
  size_t j = 0;
  for (; j + 32 <= dim; j += 32) {
    const __m256i c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j)));
    const __m256i c1 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j + 16)));
    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(c0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j))));
    acc1 = _mm256_add_epi32(acc1,
                            _mm256_madd_epi16(c1, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j + 16))));
  }
  for (; j + 16 <= dim; j += 16) {
    const __m256i c0 = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + j)));
    acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(c0, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + j))));
  }
  const __m256i acc = _mm256_add_epi32(acc0, acc1);
  __m128i h = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
  h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
  int32_t sum = _mm_cvtsi128_si32(h);
  for (; j < dim; ++j) sum += int32_t{a[j]} * int32_t{c[j]};
  return sum;
}

// One query's keys against the index's codes. L2 uses the AVX-512 kernel
// where the CPU has it; the IP kernel is AVX2 everywhere (its traversal
// showed no need for more width).
class CodeKeys {
 public:
  CodeKeys(bool l2, const std::vector<float>& offset, const std::vector<float>& scale)
      : l2_(l2),
        simd_(ActiveSimdLevel() != SimdLevel::kScalar),
        avx512_(ActiveSimdLevel() == SimdLevel::kAvx512),
        dim_(offset.size()),
        offset_(offset.data()),
        scale_(scale.data()),
        a_(dim_),
        a_int_(dim_),
        // The int32 sum of dim products of at most max_int * 255 must not
        // overflow: 16384 up to 513 dimensions, less above.
        max_int_(std::min<int32_t>(kMaxQueryInt, static_cast<int32_t>(INT32_MAX / (255 * std::max<size_t>(dim_, 1))))) {}

  // `q`: the query (unit length for cosine).
  void Prepare(const float* q) {
    if (l2_) {
      for (size_t j = 0; j < dim_; ++j) a_[j] = q[j] - offset_[j];
      return;
    }
    float amax = 0;
    for (size_t j = 0; j < dim_; ++j) {
      a_[j] = q[j] * scale_[j];
      amax = std::max(amax, std::fabs(a_[j]));
    }
    const float to_int = amax > 0 ? float(max_int_) / amax : 0.0f;
    for (size_t j = 0; j < dim_; ++j) a_int_[j] = static_cast<int16_t>(std::lrint(a_[j] * to_int));
    neg_from_int_ = to_int > 0 ? -1.0f / to_int : 0.0f;
  }

  float operator()(const uint8_t* code) const {
    if (l2_) {
      if (avx512_) return CodeL2Avx512(a_.data(), scale_, code, dim_);
      return simd_ ? CodeL2Avx2(a_.data(), scale_, code, dim_) : CodeL2Scalar(a_.data(), scale_, code, dim_);
    }
    return float(simd_ ? CodeDotAvx2(a_int_.data(), code, dim_) : CodeDotScalar(a_int_.data(), code, dim_)) *
           neg_from_int_;
  }

 private:
  static constexpr int32_t kMaxQueryInt = 16384;
  bool l2_, simd_, avx512_;
  size_t dim_;
  const float *offset_, *scale_;
  std::vector<float> a_;
  std::vector<int16_t> a_int_;
  int32_t max_int_;
  float neg_from_int_ = 0;
};

inline void Prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }

// While scoring the i-th new neighbour of a step, the code of the
// (i + kPrefetchAhead)-th is fetched. Fetching all of a step's codes at once
// (up to 32 x 6 lines) stalled on the core's outstanding-miss limit: 1.05-1.10x
// QPS on 300k x 384 from the pipelining (2 and 8 ahead were no better).
constexpr size_t kPrefetchAhead = 4;

// Visited marks, a bit per node, one array per thread, reused across queries
// and indexes; a query clears only the words it set. 37 KB of bits for
// 300,000 nodes stay in the core's cache where 16-bit epoch marks (600 KB)
// did not: 1.07-1.17x QPS on 300k x 384.
struct VisitedSet {
  std::vector<uint64_t> words;
  std::vector<uint32_t> touched;  // words set since Start, with repeats

  void Start(size_t n) {
    for (uint32_t w : touched) words[w] = 0;
    touched.clear();
    if (words.size() < (n + 63) / 64) words.resize((n + 63) / 64, 0);
  }
  // True the first time `node` is seen in this query.
  bool Visit(uint32_t node) {
    uint64_t& word = words[node >> 6];
    const uint64_t bit = uint64_t{1} << (node & 63);
    if (word & bit) return false;
    word |= bit;
    touched.push_back(node >> 6);
    return true;
  }
};

// The beam: the best `capacity` candidates seen so far, sorted by key, each
// flagged once expanded.
class Beam {
 public:
  explicit Beam(size_t capacity) : capacity_(capacity), keys_(capacity), nodes_(capacity), expanded_(capacity) {}

  // Inserts unless the beam is full of better candidates; returns the slot
  // or capacity() if refused.
  size_t Insert(float key, uint32_t node) {
    if (size_ == capacity_ && key >= keys_[size_ - 1]) return capacity_;
    size_t pos = static_cast<size_t>(std::upper_bound(keys_.begin(), keys_.begin() + size_, key) - keys_.begin());
    const size_t moved = (size_ == capacity_ ? size_ - 1 : size_) - pos;
    std::memmove(&keys_[pos + 1], &keys_[pos], moved * sizeof(float));
    std::memmove(&nodes_[pos + 1], &nodes_[pos], moved * sizeof(uint32_t));
    std::memmove(&expanded_[pos + 1], &expanded_[pos], moved);
    keys_[pos] = key;
    nodes_[pos] = node;
    expanded_[pos] = 0;
    size_ = std::min(size_ + 1, capacity_);
    return pos;
  }
  // Empties the beam and sets its capacity (keeping the allocation).
  void Reset(size_t capacity) {
    capacity_ = capacity;
    size_ = 0;
    if (keys_.size() < capacity) {
      keys_.resize(capacity);
      nodes_.resize(capacity);
      expanded_.resize(capacity);
    }
  }
  float worst() const { return size_ == capacity_ ? keys_[size_ - 1] : kInf; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  bool expanded(size_t i) const { return expanded_[i] != 0; }
  float key(size_t i) const { return keys_[i]; }
  uint32_t node(size_t i) const { return nodes_[i]; }
  uint32_t Expand(size_t i) {
    expanded_[i] = 1;
    return nodes_[i];
  }

 private:
  size_t capacity_;
  size_t size_ = 0;
  std::vector<float> keys_;
  std::vector<uint32_t> nodes_;
  std::vector<uint8_t> expanded_;
};

constexpr char kGraphMagic[8] = {'Q', 'V', 'G', 'R', 'A', 'P', 'H', '1'};
constexpr uint32_t kGraphFormatVersion = 1;
// Upper layers sample 1 in kLayerRatio nodes of the layer below, until a
// layer has at most kMaxEntryPoints nodes: every search starts by scoring
// all of those.
constexpr size_t kMaxEntryPoints = 256;
constexpr size_t kLayerRatio = 16;
// Beam width while descending the upper layers: a quarter of the layer-0
// beam, from 4 to 8, and up to 32 from a layer-0 beam of 96. With a small
// layer-0 beam the descent was most of a query's work; a beam of 4 there
// raised QPS 1.14-1.18x at itopk 16 on both benchmark sets for 0.1-0.5% of
// recall. At the top, a descent capped at 8 missed the region of one or two
// queries in 1,000 at any layer-0 beam, so recall stopped at 0.998-0.999;
// a quarter of itopk up to 32 reaches 0.9995-0.9999 from itopk 96 (for
// 0.75-0.83x QPS there). Below 96 the wide descent bought at most 0.001 of
// recall for 0.89-0.99x QPS (at itopk 48 and 64, where the recall-0.99
// points lie), so there the cap stays 8.
constexpr size_t kMinUpperBeam = 4, kNarrowUpperBeam = 8, kMaxUpperBeam = 32;
constexpr size_t kWideDescentFromBeam = 96;
constexpr size_t kKnnClusterSize = 1024;  // target points per k-means cluster in the kNN build

int ThreadsFor(const Resources& res) { return res.num_threads > 0 ? res.num_threads : omp_get_max_threads(); }

// ---- build steps ----

// The kNN graph: for each node its `knn` nearest other nodes, best first
// (kNoEdge-padded), found cluster against neighbouring clusters with the
// FLAT kernel.
Status BuildKnnGraph(const Resources& res, Metric metric, const float* data, size_t n, size_t dim, size_t knn,
                     const GraphBuildParams& params, std::vector<uint32_t>* graph) {
  if (res.gpu != nullptr && n <= gpu::kMaxGpuKnnGraphRows && knn < gpu::kMaxK) {
    // Exact, all rows against all: on the GPU that is cheaper than the
    // cluster bookkeeping below is on the CPU (kernels/gpu_search.h).
    graph->assign(n * knn, kNoEdge);
    return gpu::KnnGraph(*static_cast<cuda::GpuResources*>(res.gpu), metric, data, n, dim, knn, graph->data());
  }
  // The clusters only bucket the work, so they are formed by L2 whatever the
  // metric: inner-product k-means would pile most points into the few
  // centres of largest norm.
  const size_t clusters = std::max<size_t>(1, (n + kKnnClusterSize / 2) / kKnnClusterSize);
  const Resources cpu{.num_threads = res.num_threads, .gpu = nullptr};
  KMeansParams km{.clusters = clusters, .iterations = 10, .points_per_cluster = 64, .seed = params.seed};
  QUIVER_ASSIGN_OR_RETURN(std::vector<float> centroids, TrainKMeans(cpu, Metric::kL2, data, n, dim, km));
  const size_t nc = centroids.size() / dim;
  std::vector<float> centroid_norms(nc);
  SquaredNorms(centroids.data(), nc, dim, centroid_norms.data());
  std::vector<float> norms(n);
  SquaredNorms(data, n, dim, norms.data());

  // Each node's cluster, and each cluster's nearest clusters (itself first).
  std::vector<int64_t> cluster_of(n);
  std::vector<float> cluster_score(n);
  QUIVER_RETURN_IF_ERROR(FlatSearch(cpu, {centroids.data(), centroid_norms.data(), nc, dim}, data, n, {Metric::kL2, 1},
                                    cluster_of.data(), cluster_score.data()));
  const size_t probes = std::min<size_t>(params.knn_probes, nc);
  std::vector<int64_t> near(nc * probes);
  std::vector<float> near_scores(nc * probes);
  QUIVER_RETURN_IF_ERROR(FlatSearch(cpu, {centroids.data(), centroid_norms.data(), nc, dim}, centroids.data(), nc,
                                    {Metric::kL2, probes}, near.data(), near_scores.data()));

  // Members of each cluster, contiguous in a permuted copy of the data.
  std::vector<size_t> start(nc + 1, 0);
  for (int64_t c : cluster_of) ++start[static_cast<size_t>(c) + 1];
  std::partial_sum(start.begin(), start.end(), start.begin());
  std::vector<uint32_t> order(n);
  {
    std::vector<size_t> fill(start.begin(), start.end() - 1);
    for (size_t i = 0; i < n; ++i) order[fill[static_cast<size_t>(cluster_of[i])]++] = static_cast<uint32_t>(i);
  }
  std::vector<float> permuted(n * dim);
  std::vector<float> permuted_norms(n);
  for (size_t p = 0; p < n; ++p) {
    std::memcpy(&permuted[p * dim], data + size_t{order[p]} * dim, dim * sizeof(float));
    permuted_norms[p] = norms[order[p]];
  }

  graph->assign(n * knn, kNoEdge);
  Status failure;
  const int threads = ThreadsFor(res);
  const Resources one_thread{.num_threads = 1, .gpu = nullptr};
#pragma omp parallel num_threads(threads)
  {
    // The probed clusters' members gathered into one base, so one FLAT
    // search per cluster selects over all of them: its heaps fill once, not
    // once per probed cluster (which had the selection take 39% of a build).
    std::vector<float> gathered, gathered_norms, found_scores;
    std::vector<size_t> gathered_at;  // position in `permuted` of each gathered row
    std::vector<int64_t> found_rows;
#pragma omp for schedule(dynamic, 1)
    for (size_t c = 0; c < nc; ++c) {
      const size_t m = start[c + 1] - start[c];
      if (m == 0) continue;
      gathered.clear();
      gathered_norms.clear();
      gathered_at.clear();
      for (size_t p = 0; p < probes; ++p) {  // nearest cluster first: the threshold tightens early
        const int64_t c2 = near[c * probes + p];
        if (c2 < 0) continue;
        const size_t b0 = start[static_cast<size_t>(c2)], b1 = start[static_cast<size_t>(c2) + 1];
        gathered.insert(gathered.end(), permuted.begin() + static_cast<ptrdiff_t>(b0 * dim),
                        permuted.begin() + static_cast<ptrdiff_t>(b1 * dim));
        gathered_norms.insert(gathered_norms.end(), permuted_norms.begin() + static_cast<ptrdiff_t>(b0),
                              permuted_norms.begin() + static_cast<ptrdiff_t>(b1));
        for (size_t b = b0; b < b1; ++b) gathered_at.push_back(b);
      }
      const size_t total = gathered_at.size();
      const size_t kk = std::min(knn + 1, total);  // +1: a node finds itself in its own cluster
      found_rows.resize(m * kk);
      found_scores.resize(m * kk);
      Status st = FlatSearch(one_thread, {gathered.data(), gathered_norms.data(), total, dim},
                             permuted.data() + start[c] * dim, m, {metric, kk}, found_rows.data(), found_scores.data());
      if (!st.ok()) {
#pragma omp critical
        failure = st;
        continue;
      }
      for (size_t i = 0; i < m; ++i) {
        const size_t self = start[c] + i;
        uint32_t* out = graph->data() + size_t{order[self]} * knn;
        size_t len = 0;
        for (size_t j = 0; j < kk && len < knn; ++j) {
          const int64_t r = found_rows[i * kk + j];
          if (r < 0 || gathered_at[static_cast<size_t>(r)] == self) continue;
          out[len++] = order[gathered_at[static_cast<size_t>(r)]];
        }
      }
    }
  }
  return failure;
}

// CAGRA's rank-based pruning: keeps per node the `degree` kNN edges with the
// fewest detours, ordered by (detours, rank).
std::vector<uint32_t> PruneByDetours(const Resources& res, const std::vector<uint32_t>& knn_graph, size_t n,
                                     size_t knn, size_t degree) {
  std::vector<uint32_t> pruned(n * degree, kNoEdge);
  size_t table_size = 1;
  while (table_size < 4 * knn) table_size <<= 1;
  const int threads = ThreadsFor(res);
#pragma omp parallel num_threads(threads)
  {
    // Open-addressing table: node id -> its rank in the current list.
    std::vector<uint32_t> table_keys(table_size);
    std::vector<uint16_t> table_ranks(table_size);
    std::vector<uint32_t> detours(knn);
    std::vector<uint32_t> by_detours(knn);
    const uint32_t mask = static_cast<uint32_t>(table_size - 1);
    auto slot_of = [&](uint32_t id) { return (id * 2654435761u) & mask; };
#pragma omp for schedule(dynamic, 256)
    for (size_t a = 0; a < n; ++a) {
      const uint32_t* list = knn_graph.data() + a * knn;
      size_t len = 0;
      while (len < knn && list[len] != kNoEdge) ++len;
      std::fill(table_keys.begin(), table_keys.end(), kNoEdge);
      for (size_t j = 0; j < len; ++j) {
        uint32_t s = slot_of(list[j]);
        while (table_keys[s] != kNoEdge) s = (s + 1) & mask;
        table_keys[s] = list[j];
        table_ranks[s] = static_cast<uint16_t>(j);
      }
      std::fill(detours.begin(), detours.begin() + static_cast<ptrdiff_t>(len), 0);
      // A->C (rank j) has a detour through B = list[i] if i < j and C is in
      // B's list at a rank r < j.
      for (size_t i = 0; i + 1 < len; ++i) {
        const uint32_t* b_list = knn_graph.data() + size_t{list[i]} * knn;
        for (size_t r = 0; r + 1 < len; ++r) {
          const uint32_t c = b_list[r];
          if (c == kNoEdge) break;
          uint32_t s = slot_of(c);
          while (table_keys[s] != kNoEdge && table_keys[s] != c) s = (s + 1) & mask;
          if (table_keys[s] != c) continue;
          const size_t j = table_ranks[s];
          if (j > i && j > r) ++detours[j];
        }
      }
      std::iota(by_detours.begin(), by_detours.begin() + static_cast<ptrdiff_t>(len), 0);
      std::stable_sort(by_detours.begin(), by_detours.begin() + static_cast<ptrdiff_t>(len),
                       [&](uint32_t x, uint32_t y) { return detours[x] < detours[y]; });
      const size_t keep = std::min(len, degree);
      for (size_t j = 0; j < keep; ++j) pruned[a * degree + j] = list[by_detours[j]];
    }
  }
  return pruned;
}

// Final lists: the first degree/2 pruned edges, then reverse edges (in the
// order of the rank they have in the pruned lists), then the remaining pruned
// edges, without repeats.
HugePageVector<uint32_t> MergeReverseEdges(const Resources& res, const std::vector<uint32_t>& pruned, size_t n,
                                           size_t degree) {
  std::vector<uint32_t> reverse(n * degree, kNoEdge);
  std::vector<uint32_t> reverse_count(n, 0);
  for (size_t rank = 0; rank < degree; ++rank) {  // sequential: deterministic
    for (size_t a = 0; a < n; ++a) {
      const uint32_t b = pruned[a * degree + rank];
      if (b != kNoEdge && reverse_count[b] < degree) reverse[size_t{b} * degree + reverse_count[b]++] = static_cast<uint32_t>(a);
    }
  }
  HugePageVector<uint32_t> out(n * degree, kNoEdge);
  const size_t protect = degree / 2;
  const int threads = ThreadsFor(res);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (size_t a = 0; a < n; ++a) {
    uint32_t* dst = out.data() + a * degree;
    const uint32_t* fwd = pruned.data() + a * degree;
    const uint32_t* rev = reverse.data() + a * degree;
    size_t len = 0;
    auto add = [&](uint32_t v) {
      if (v == kNoEdge || len == degree) return;
      for (size_t i = 0; i < len; ++i) {
        if (dst[i] == v) return;
      }
      dst[len++] = v;
    };
    for (size_t i = 0; i < protect; ++i) add(fwd[i]);
    for (size_t i = 0; i < reverse_count[a]; ++i) add(rev[i]);
    for (size_t i = protect; i < degree; ++i) add(fwd[i]);
  }
  return out;
}

// Marks every node reachable from `from` (breadth first).
void MarkReachable(const HugePageVector<uint32_t>& graph, size_t degree, const std::vector<uint32_t>& from,
                   std::vector<uint8_t>* reached) {
  std::vector<uint32_t> queue;
  for (uint32_t e : from) {
    if (!(*reached)[e]) {
      (*reached)[e] = 1;
      queue.push_back(e);
    }
  }
  for (size_t head = 0; head < queue.size(); ++head) {
    const uint32_t* list = graph.data() + size_t{queue[head]} * degree;
    for (size_t i = 0; i < degree && list[i] != kNoEdge; ++i) {
      if (!(*reached)[list[i]]) {
        (*reached)[list[i]] = 1;
        queue.push_back(list[i]);
      }
    }
  }
}

// Makes every node reachable from `entries`: an unreached node gets an
// in-edge from the nearest reached node of its kNN list, replacing an edge
// whose target has other in-edges. Replacing can cut another path, so this
// re-checks; whatever is still unreached after a few rounds goes to
// `extra_seeds`, which the search starts from as well (normally none).
void ConnectUnreachable(HugePageVector<uint32_t>* graph, size_t n, size_t degree, const std::vector<uint32_t>& knn_graph,
                        size_t knn, const std::vector<uint32_t>& entries, std::vector<uint32_t>* extra_seeds) {
  for (int round = 0; round < 4; ++round) {
    std::vector<uint8_t> reached(n, 0);
    MarkReachable(*graph, degree, entries, &reached);
    if (std::find(reached.begin(), reached.end(), 0) == reached.end()) return;
    std::vector<uint32_t> in_degree(n, 0);
    for (uint32_t v : *graph) {
      if (v != kNoEdge) ++in_degree[v];
    }
    for (size_t u = 0; u < n; ++u) {
      if (reached[u]) continue;
      uint32_t from = entries[0];
      for (size_t i = 0; i < knn; ++i) {
        const uint32_t v = knn_graph[u * knn + i];
        if (v == kNoEdge) break;
        if (reached[v]) {
          from = v;
          break;
        }
      }
      uint32_t* list = graph->data() + size_t{from} * degree;
      size_t slot = degree - 1;
      for (size_t i = degree; i-- > 0;) {
        if (list[i] == kNoEdge || in_degree[list[i]] >= 2) {
          slot = i;
          break;
        }
      }
      if (slot > 0 && list[slot] == kNoEdge) {  // keep the list's edges contiguous
        while (slot > 0 && list[slot - 1] == kNoEdge) --slot;
      }
      if (list[slot] != kNoEdge) --in_degree[list[slot]];
      list[slot] = static_cast<uint32_t>(u);
      ++in_degree[u];
      MarkReachable(*graph, degree, {static_cast<uint32_t>(u)}, &reached);
    }
  }
  std::vector<uint8_t> reached(n, 0);
  MarkReachable(*graph, degree, entries, &reached);
  for (size_t u = 0; u < n; ++u) {
    if (!reached[u]) {
      extra_seeds->push_back(static_cast<uint32_t>(u));
      MarkReachable(*graph, degree, {static_cast<uint32_t>(u)}, &reached);
    }
  }
}

// Relative-neighbourhood pruning (HNSW's heuristic): walking a node's kNN
// list nearest first, keeps C unless a kept B is closer to C than the node
// is. Edges then point in many directions, into as many other clusters as
// the list reaches. Used for the upper layers, whose job is to reach the
// query's region from anywhere; layer 0 keeps CAGRA's rank-based pruning.
std::vector<uint32_t> PruneByDiversity(const Resources& res, const std::vector<uint32_t>& knn_graph, const float* data,
                                       size_t n, size_t dim, size_t knn, size_t degree) {
  std::vector<uint32_t> pruned(n * degree, kNoEdge);
  const DistanceFns& fns = ActiveDistanceFns();
  const int threads = ThreadsFor(res);
#pragma omp parallel for schedule(dynamic, 64) num_threads(threads)
  for (size_t a = 0; a < n; ++a) {
    const uint32_t* list = knn_graph.data() + a * knn;
    uint32_t* out = pruned.data() + a * degree;
    size_t kept = 0;
    for (size_t j = 0; j < knn && list[j] != kNoEdge && kept < degree; ++j) {
      const float* c = data + size_t{list[j]} * dim;
      const float to_c = fns.l2_sq(data + a * dim, c, dim);
      bool diverse = true;
      for (size_t i = 0; i < kept && diverse; ++i) diverse = fns.l2_sq(data + size_t{out[i]} * dim, c, dim) >= to_c;
      if (diverse) out[kept++] = list[j];
    }
  }
  return pruned;
}

// The nodes of the next layer up: `m` of the `size` nodes of this one,
// spread so that (nearly) every node has one among its first kLayerRatio
// kNN neighbours. A uniform sample leaves whole regions without a node
// above (with 1,000 clusters of 300 points, a 1-in-256 sample misses 31% of
// them), and a search whose target region has no node in the layers above
// must find it by luck. Visiting nodes in random order, a node is taken
// unless it or one of its first kLayerRatio neighbours was taken already;
// the rest of `m` is filled at random.
std::vector<uint32_t> SpreadSample(const std::vector<uint32_t>& knn_graph, size_t knn, size_t size, size_t m,
                                   std::mt19937_64& rng) {
  std::vector<uint32_t> order(size);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<uint8_t> covered(size, 0), taken(size, 0);
  std::vector<uint32_t> pick;
  pick.reserve(m);
  const size_t reach = std::min(knn, kLayerRatio);
  for (uint32_t u : order) {
    if (pick.size() == m) break;
    if (covered[u]) continue;
    pick.push_back(u);
    taken[u] = covered[u] = 1;
    const uint32_t* list = knn_graph.data() + size_t{u} * knn;
    for (size_t i = 0; i < reach && list[i] != kNoEdge; ++i) covered[list[i]] = 1;
  }
  for (uint32_t u : order) {
    if (pick.size() == m) break;
    if (!taken[u]) {
      taken[u] = 1;
      pick.push_back(u);
    }
  }
  std::sort(pick.begin(), pick.end());
  return pick;
}

// One layer's graph over `data` (m rows): kNN graph, pruning (rank-based for
// layer 0, by diversity above), reverse edges.
Status BuildLayerGraph(const Resources& res, Metric metric, const float* data, size_t m, size_t dim,
                       const GraphBuildParams& params, bool upper, HugePageVector<uint32_t>* graph,
                       std::vector<uint32_t>* knn_graph, size_t* knn) {
  const size_t degree = params.degree;
  *knn = std::max<size_t>(degree, params.intermediate_degree != 0 ? params.intermediate_degree : 2 * degree);
  // Upper layers are small: a longer list lets diversity pruning reach
  // more clusters.
  if (upper) *knn = 8 * degree;
  QUIVER_RETURN_IF_ERROR(BuildKnnGraph(res, metric, data, m, dim, *knn, params, knn_graph));
  const Resources cpu{.num_threads = res.num_threads, .gpu = nullptr};  // what follows runs on the host
  std::vector<uint32_t> pruned;
  if (upper) {
    pruned = PruneByDiversity(cpu, *knn_graph, data, m, dim, *knn, degree);
  } else if (res.gpu != nullptr && *knn <= gpu::kMaxK) {
    pruned.resize(m * degree);
    QUIVER_RETURN_IF_ERROR(gpu::PruneByDetours(*static_cast<cuda::GpuResources*>(res.gpu), knn_graph->data(), m, *knn,
                                               degree, pruned.data()));
  } else {
    pruned = PruneByDetours(cpu, *knn_graph, m, *knn, degree);
  }
  *graph = MergeReverseEdges(cpu, pruned, m, degree);
  return Status::Ok();
}

}  // namespace

Status GraphBuildParams::Validate() const {
  if (degree < 4 || degree > 256) return Status::InvalidArgument("graph degree must be 4..256");
  if (intermediate_degree != 0 && (intermediate_degree < degree || intermediate_degree > 512)) {
    return Status::InvalidArgument("graph intermediate_degree must be 0 or degree..512");
  }
  if (knn_probes == 0) return Status::InvalidArgument("graph knn_probes must be at least 1");
  return Status::Ok();
}

void GraphIndex::Quantize(const float* data) {
  // Per dimension, the 255 steps span the sample's range, except that a few
  // far outliers are cut off: the range reaches at most 20% of the 0.1% to
  // 99.9% quantile span beyond those quantiles (values beyond clamp to the
  // ends; re-ranking is exact). Cutting at the quantiles themselves cost a
  // lot on clustered data, where a tail is a whole cluster's values: on
  // 300k x 384 unit vectors, recall at itopk 24 was 0.929 against 0.991.
  offset_.assign(dim_, 0.0f);
  scale_.assign(dim_, 1.0f);
  const size_t sample = std::min<size_t>(n_, 65536);
  std::vector<float> column(sample);
  for (size_t j = 0; j < dim_; ++j) {
    for (size_t i = 0; i < sample; ++i) column[i] = data[(i * n_ / sample) * dim_ + j];
    const size_t lo_at = sample / 1000, hi_at = sample - 1 - sample / 1000;
    const auto [min_at, max_at] = std::minmax_element(column.begin(), column.end());
    const float min = *min_at, max = *max_at;
    std::nth_element(column.begin(), column.begin() + long(lo_at), column.end());
    const float q_lo = column[lo_at];
    std::nth_element(column.begin(), column.begin() + long(hi_at), column.end());
    const float q_hi = column[hi_at];
    const float lo = std::max(min, q_lo - 0.2f * (q_hi - q_lo));
    const float hi = std::min(max, q_hi + 0.2f * (q_hi - q_lo));
    const float range = hi - lo;
    offset_[j] = std::isfinite(lo) ? lo : 0.0f;
    scale_[j] = range > 0 && std::isfinite(range) ? range / 255.0f : 1.0f;
  }
  codes_.resize(n_ * dim_);
  for (size_t r = 0; r < n_; ++r) {
    const float* x = data + r * dim_;
    uint8_t* c = codes_.data() + r * dim_;
    for (size_t j = 0; j < dim_; ++j) {
      const float v = std::nearbyint((x[j] - offset_[j]) / scale_[j]);
      c[j] = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f));
    }
  }
}

void GraphIndex::GatherEntryCodes() {
  entry_codes_.resize(entries_.size() * dim_);
  for (size_t i = 0; i < entries_.size(); ++i) {
    std::memcpy(&entry_codes_[i * dim_], &codes_[size_t{entries_[i]} * dim_], dim_);
  }
}

Result<std::unique_ptr<GraphIndex>> GraphIndex::Build(const Resources& res, Metric metric, const float* vectors,
                                                     size_t n, size_t dim, const GraphBuildParams& params) {
  QUIVER_RETURN_IF_ERROR(params.Validate());
  if (n == 0) return Status::InvalidArgument("cannot build a GRAPH index over no vectors");
  if (dim == 0) return Status::InvalidArgument("dimension must be at least 1");
  if (n >= kNoEdge) return Status::InvalidArgument("a GRAPH index holds fewer than 2^32 - 1 vectors");
  std::unique_ptr<GraphIndex> index(new GraphIndex());
  index->metric_ = metric;
  index->dim_ = dim;
  index->n_ = n;
  index->degree_ = params.degree;

  std::vector<float> unit;
  const float* data = vectors;
  if (metric == Metric::kCosine) {
    unit = Normalized(vectors, n, dim);
    data = unit.data();
  }
  const Metric knn_metric = metric == Metric::kL2 ? Metric::kL2 : Metric::kInnerProduct;
  const size_t degree = params.degree;
  // Layer 0 over every row, then sparser layers over random samples: a
  // search descends them to start layer 0 near the query. Without them a
  // walk that starts in the wrong cluster of strongly clustered data can
  // find no edge out of it (a kNN graph links only nearby points).
  std::vector<std::vector<uint32_t>> knn_graphs(1);
  std::vector<size_t> knns(1);
  index->layers_.resize(1);
  QUIVER_RETURN_IF_ERROR(
      BuildLayerGraph(res, knn_metric, data, n, dim, params, /*upper=*/false, &index->layers_[0].graph, &knn_graphs[0], &knns[0]));
  std::mt19937_64 rng(params.seed);
  for (size_t below = n; below > kMaxEntryPoints;) {
    const size_t m = std::max<size_t>(1, below / kLayerRatio);
    const std::vector<uint32_t> pick = SpreadSample(knn_graphs.back(), knns.back(), below, m, rng);
    Layer layer;
    const Layer& lower = index->layers_.back();
    layer.down = pick;
    layer.rows.resize(m);
    for (size_t i = 0; i < m; ++i) layer.rows[i] = lower.rows.empty() ? pick[i] : lower.rows[pick[i]];
    std::vector<float> sample(m * dim);
    for (size_t i = 0; i < m; ++i) std::memcpy(&sample[i * dim], data + size_t{layer.rows[i]} * dim, dim * sizeof(float));
    knn_graphs.emplace_back();
    knns.push_back(0);
    QUIVER_RETURN_IF_ERROR(
        BuildLayerGraph(res, knn_metric, sample.data(), m, dim, params, /*upper=*/true, &layer.graph, &knn_graphs.back(), &knns.back()));
    index->layers_.push_back(std::move(layer));
    below = m;
  }
  // Long links: a node that also lives in the layer above gives its last
  // degree/4 slots to its edges there, which span more of the space. They
  // let the layer's own search leave a cluster that the descent entered by
  // mistake (a kNN graph alone has no edge out of a well-separated cluster).
  const size_t long_links = degree / 4;
  std::vector<uint32_t> merged;
  for (size_t l = 0; l + 1 < index->layers_.size(); ++l) {
    Layer& layer = index->layers_[l];
    const Layer& above = index->layers_[l + 1];
    for (size_t i = 0; i < above.down.size(); ++i) {
      uint32_t* list = layer.graph.data() + size_t{above.down[i]} * degree;
      const uint32_t* up = above.graph.data() + i * degree;
      size_t len = 0;
      while (len < degree && list[len] != kNoEdge) ++len;
      const size_t own = std::min(len, degree - long_links);
      merged.assign(list, list + own);
      auto add = [&](uint32_t v) {
        if (merged.size() < degree && std::find(merged.begin(), merged.end(), v) == merged.end()) merged.push_back(v);
      };
      for (size_t j = 0; j < degree && up[j] != kNoEdge; ++j) add(above.down[up[j]]);
      for (size_t j = own; j < len; ++j) add(list[j]);
      std::copy(merged.begin(), merged.end(), list);
      std::fill(list + merged.size(), list + degree, kNoEdge);
    }
  }
  // Each layer reachable from the nodes that the layer above hands down.
  for (size_t l = 0; l + 1 < index->layers_.size(); ++l) {
    Layer& layer = index->layers_[l];
    const size_t size = l == 0 ? n : layer.rows.size();
    ConnectUnreachable(&layer.graph, size, degree, knn_graphs[l], knns[l], index->layers_[l + 1].down,
                       &layer.extra_seeds);
  }
  const Layer& top = index->layers_.back();
  index->entries_.resize(top.rows.empty() ? n : top.rows.size());
  for (size_t i = 0; i < index->entries_.size(); ++i) {
    index->entries_[i] = top.rows.empty() ? static_cast<uint32_t>(i) : top.rows[i];
  }
  index->Quantize(data);
  index->GatherEntryCodes();
  return index;
}

Status GraphIndex::Search(const Resources& res, const BaseView& base, const float* queries, size_t nq, size_t k,
                          const IndexSearchParams& params, int64_t* rows, float* scores) const {
  if (k == 0) return Status::InvalidArgument("k must be at least 1");
  if (params.itopk == 0) return Status::InvalidArgument("itopk must be at least 1");
  if (params.search_width == 0) return Status::InvalidArgument("search_width must be at least 1");
  if (base.rows != n_ || base.dim != dim_ || base.vectors == nullptr ||
      (metric_ != Metric::kInnerProduct && base.sq_norms == nullptr)) {
    return Status::InvalidArgument("GRAPH search needs the index's own vectors (and norms for L2 and cosine)");
  }
  if (nq == 0) return Status::Ok();
  if (res.gpu != nullptr) {
    return gpu::GraphSearch(*static_cast<cuda::GpuResources*>(res.gpu), *this, base, queries, nq, k, params.itopk,
                            params.search_width, rows, scores);
  }

  const bool l2 = metric_ == Metric::kL2;
  const size_t beam_size = std::max<size_t>(params.itopk, k);
  // Candidates re-ranked exactly: enough to absorb the 8-bit rounding, and
  // at least the beam, so a wider beam also corrects more of the rounding
  // (with a fixed 4k, recall on 300k x 384 unit vectors, IP, stopped at 0.90
  // whatever the beam). They come from every node scored, so there can be
  // more of them than the beam. 2k rather than 4k below the beam: the same
  // recall on 1M x 128 L2 and 1% less at itopk 16 on the IP set, for
  // 1.12-1.22x QPS at small beams (itopk 10-24), a better trade at every
  // recall measured.
  const size_t rerank = std::max(2 * k, beam_size);
  const size_t width = params.search_width;
  const size_t top = layers_.size() - 1;
  const int threads = res.num_threads > 0 ? res.num_threads : omp_get_max_threads();
#pragma omp parallel num_threads(static_cast<int>(std::min<size_t>(threads, nq)))
  {
    thread_local VisitedSet visited;
    CodeKeys code_keys(l2, offset_, scale_);
    std::vector<float> unit(dim_);
    std::vector<float> kept_keys(rerank);
    std::vector<int64_t> kept_rows(rerank);
    std::vector<uint32_t> batch(width * degree_);
    std::vector<std::pair<float, int64_t>> exact;
    const size_t upper_beam = std::clamp(beam_size / 4, kMinUpperBeam,
                                         beam_size >= kWideDescentFromBeam ? kMaxUpperBeam : kNarrowUpperBeam);
    Beam beam(beam_size), upper(upper_beam), next_upper(upper_beam);
#pragma omp for schedule(dynamic, 1)
    for (size_t qi = 0; qi < nq; ++qi) {
      const float* raw = queries + qi * dim_;
      const float* q = raw;
      const float inv_norm = CosineInvNorm(metric_, raw, dim_);
      if (metric_ == Metric::kCosine) {
        for (size_t j = 0; j < dim_; ++j) unit[j] = raw[j] * inv_norm;
        q = unit.data();
      }
      code_keys.Prepare(q);
      auto key_of_row = [&](uint32_t row) { return code_keys(codes_.data() + size_t{row} * dim_); };

      // Best-first search of one layer from the nodes in `beam`; every newly
      // scored node (layer index, row, key) goes to `scored`.
      auto search_layer = [&](const Layer& layer, Beam& beam, auto&& scored) {
        size_t cursor = 0;  // every beam slot before it is expanded
        for (;;) {
          size_t m = 0, picked = 0;
          while (cursor < beam.size() && picked < width) {
            if (!beam.expanded(cursor)) {
              const uint32_t* list = layer.graph.data() + size_t{beam.Expand(cursor)} * degree_;
              ++picked;
              for (size_t i = 0; i < degree_ && list[i] != kNoEdge; ++i) {
                const uint32_t row = layer.rows.empty() ? list[i] : layer.rows[list[i]];
                if (visited.Visit(row)) batch[m++] = list[i];
              }
            }
            ++cursor;
          }
          if (picked == 0) return;
          // The neighbour list of the next node to expand is a cache miss
          // that would stall the next step: fetch it while this step scores.
          for (size_t next = cursor; next < beam.size(); ++next) {
            if (!beam.expanded(next)) {
              const uint32_t* list = layer.graph.data() + size_t{beam.node(next)} * degree_;
              Prefetch(list);
              Prefetch(reinterpret_cast<const char*>(list) + 64);
              break;
            }
          }
          size_t first_insert = beam.capacity();
          auto row_of = [&](size_t i) { return layer.rows.empty() ? batch[i] : layer.rows[batch[i]]; };
          for (size_t i = 0; i < std::min(m, kPrefetchAhead); ++i) {
            PrefetchBytes(codes_.data() + size_t{row_of(i)} * dim_, dim_);  // a 384-d code spans six lines
          }
          for (size_t i = 0; i < m; ++i) {
            if (i + kPrefetchAhead < m) PrefetchBytes(codes_.data() + size_t{row_of(i + kPrefetchAhead)} * dim_, dim_);
            const uint32_t row = row_of(i);
            const float key = key_of_row(row);
            if (key < beam.worst()) first_insert = std::min(first_insert, beam.Insert(key, batch[i]));
            scored(row, key);
          }
          cursor = std::min(cursor, first_insert);
        }
      };
      auto seed_extra = [&](const Layer& layer, Beam& beam, auto&& scored) {
        for (uint32_t node : layer.extra_seeds) {
          const uint32_t row = layer.rows.empty() ? node : layer.rows[node];
          if (!visited.Visit(row)) continue;
          const float key = key_of_row(row);
          if (key < beam.worst()) beam.Insert(key, node);
          scored(row, key);
        }
      };

      beam.Reset(beam_size);
      TopK kept(kept_keys.data(), kept_rows.data(), rerank);  // best returnable rows seen
      auto keep = [&](uint32_t row, float key) {
        if (key <= kept.threshold() && !IsDeleted(base.deleted, row)) kept.Push(key, row);
      };
      auto ignore = [](uint32_t, float) {};
      // Score every node of the top layer, then descend.
      visited.Start(n_);
      Beam& first = top == 0 ? beam : upper;
      first.Reset(top == 0 ? beam_size : upper_beam);
      for (size_t e = 0; e < entries_.size(); ++e) {
        visited.Visit(entries_[e]);
        const float key = code_keys(entry_codes_.data() + e * dim_);
        if (key < first.worst()) first.Insert(key, static_cast<uint32_t>(e));
        if (top == 0) keep(entries_[e], key);
      }
      for (size_t l = top; l > 0; --l) {
        search_layer(layers_[l], upper, ignore);
        // Hand the beam down: the same nodes, by their index in layer l - 1.
        visited.Start(n_);
        const Layer& lower = layers_[l - 1];
        Beam& into = l == 1 ? beam : next_upper;
        into.Reset(l == 1 ? beam_size : upper_beam);
        for (size_t i = 0; i < upper.size(); ++i) {
          const uint32_t node = layers_[l].down[upper.node(i)];
          const uint32_t row = lower.rows.empty() ? node : lower.rows[node];
          visited.Visit(row);
          into.Insert(upper.key(i), node);
          if (l == 1) keep(row, upper.key(i));
        }
        if (l == 1) {
          seed_extra(lower, into, keep);
        } else {
          seed_extra(lower, into, ignore);
          std::swap(upper, next_upper);
        }
      }
      search_layer(layers_[0], beam, keep);
      kept.Finish();
      RerankExact(metric_, base, raw, inv_norm, kept_rows.data(), rerank, k, rows + qi * k, scores + qi * k, &exact);
    }
  }
  return Status::Ok();
}

std::string GraphIndex::Serialize() const {
  std::string out(kGraphMagic, sizeof kGraphMagic);
  Put(&out, kGraphFormatVersion);
  Put(&out, static_cast<uint32_t>(metric_));
  Put(&out, static_cast<uint64_t>(dim_));
  Put(&out, static_cast<uint64_t>(n_));
  Put(&out, static_cast<uint64_t>(degree_));
  Put(&out, static_cast<uint64_t>(layers_.size()));
  PutArray(&out, offset_);
  PutArray(&out, scale_);
  for (const Layer& layer : layers_) {
    Put(&out, static_cast<uint64_t>(layer.size(n_)));
    Put(&out, static_cast<uint64_t>(layer.extra_seeds.size()));
    PutArray(&out, layer.rows);
    PutArray(&out, layer.down);
    PutArray(&out, layer.graph);
    PutArray(&out, layer.extra_seeds);
  }
  PutArray(&out, codes_);
  Put(&out, Checksum(out));
  return out;
}

Result<std::unique_ptr<GraphIndex>> GraphIndex::Deserialize(std::string_view bytes, const std::string& what) {
  Reader r(bytes, "GRAPH index", what);
  constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8 * 4;
  std::string_view sealed;
  QUIVER_RETURN_IF_ERROR(CheckEnvelope(bytes, kGraphMagic, kHeaderBytes, r, &sealed));
  Reader body(sealed, "GRAPH index", what);
  char magic[8];
  uint32_t version = 0, metric = 0;
  uint64_t dim = 0, n = 0, degree = 0, layer_count = 0;
  for (char& c : magic) QUIVER_RETURN_IF_ERROR(body.Get(&c, "magic"));
  QUIVER_RETURN_IF_ERROR(body.Get(&version, "version"));
  if (version != kGraphFormatVersion) return body.Corrupt("unknown format version " + std::to_string(version));
  QUIVER_RETURN_IF_ERROR(body.Get(&metric, "metric"));
  if (metric > static_cast<uint32_t>(Metric::kCosine)) return body.Corrupt("unknown metric " + std::to_string(metric));
  QUIVER_RETURN_IF_ERROR(body.Get(&dim, "dim"));
  QUIVER_RETURN_IF_ERROR(body.Get(&n, "n"));
  QUIVER_RETURN_IF_ERROR(body.Get(&degree, "degree"));
  QUIVER_RETURN_IF_ERROR(body.Get(&layer_count, "layer count"));
  if (dim == 0 || dim > (1u << 16)) return body.Corrupt("dimension " + std::to_string(dim) + " out of range");
  if (degree < 1 || degree > 1024) return body.Corrupt("degree " + std::to_string(degree) + " out of range");
  if (n == 0 || n >= kNoEdge) return body.Corrupt("size " + std::to_string(n) + " out of range");
  if (layer_count == 0 || layer_count > 16) return body.Corrupt("layer count " + std::to_string(layer_count) + " out of range");
  std::unique_ptr<GraphIndex> index(new GraphIndex());
  index->metric_ = static_cast<Metric>(metric);
  index->dim_ = dim;
  index->n_ = n;
  index->degree_ = static_cast<uint32_t>(degree);
  QUIVER_RETURN_IF_ERROR(body.GetArray(&index->offset_, dim, "offsets"));
  QUIVER_RETURN_IF_ERROR(body.GetArray(&index->scale_, dim, "scales"));
  for (size_t j = 0; j < dim; ++j) {
    if (!std::isfinite(index->offset_[j]) || !(index->scale_[j] > 0) || !std::isfinite(index->scale_[j])) {
      return body.Corrupt("quantiser of dimension " + std::to_string(j) + " is not finite and positive");
    }
  }
  index->layers_.resize(layer_count);
  for (size_t l = 0; l < layer_count; ++l) {
    Layer& layer = index->layers_[l];
    const std::string name = "layer " + std::to_string(l);
    uint64_t size = 0, extra = 0;
    QUIVER_RETURN_IF_ERROR(body.Get(&size, "layer size"));
    QUIVER_RETURN_IF_ERROR(body.Get(&extra, "layer seed count"));
    const uint64_t below = l == 0 ? 0 : index->layers_[l - 1].size(n);
    if (l == 0 ? size != n : (size == 0 || size > below)) return body.Corrupt(name + " has size " + std::to_string(size));
    if (extra > size) return body.Corrupt(name + " has more extra seeds than nodes");
    if (l > 0) {
      QUIVER_RETURN_IF_ERROR(body.GetArray(&layer.rows, size, "layer rows"));
      QUIVER_RETURN_IF_ERROR(body.GetArray(&layer.down, size, "layer links down"));
      const Layer& lower = index->layers_[l - 1];
      for (size_t i = 0; i < size; ++i) {
        const uint32_t d = layer.down[i];
        if (d >= below || layer.rows[i] != (lower.rows.empty() ? d : lower.rows[d])) {
          return body.Corrupt(name + " node " + std::to_string(i) + " does not match the layer below");
        }
      }
    }
    if (size > body.left() / (degree * 4)) return body.Corrupt(name + " is larger than the file");
    QUIVER_RETURN_IF_ERROR(body.GetArray(&layer.graph, size * degree, "neighbours"));
    QUIVER_RETURN_IF_ERROR(body.GetArray(&layer.extra_seeds, extra, "extra seeds"));
    for (uint32_t e : layer.extra_seeds) {
      if (e >= size) return body.Corrupt(name + " has an extra seed out of range");
    }
    for (size_t a = 0; a < size; ++a) {
      const uint32_t* list = layer.graph.data() + a * degree;
      bool padding = false;
      for (size_t i = 0; i < degree; ++i) {
        if (list[i] == kNoEdge) {
          padding = true;
          continue;
        }
        if (padding || list[i] >= size || list[i] == a) {
          return body.Corrupt(name + " node " + std::to_string(a) + " has an invalid edge to " + std::to_string(list[i]));
        }
      }
    }
  }
  if (n > body.left() / dim || body.left() != n * dim) return body.Corrupt("codes disagree with the byte count");
  QUIVER_RETURN_IF_ERROR(body.GetArray(&index->codes_, n * dim, "codes"));
  const Layer& top = index->layers_.back();
  index->entries_.resize(top.size(n));
  for (size_t i = 0; i < index->entries_.size(); ++i) {
    index->entries_[i] = top.rows.empty() ? static_cast<uint32_t>(i) : top.rows[i];
  }
  index->GatherEntryCodes();
  return index;
}

size_t GraphIndex::MemoryBytes() const {
  size_t bytes = codes_.size() + entry_codes_.size() + (entries_.size() + offset_.size() + scale_.size()) * 4;
  for (const Layer& layer : layers_) {
    bytes += (layer.rows.size() + layer.down.size() + layer.graph.size() + layer.extra_seeds.size()) * 4;
  }
  return bytes;
}

}  // namespace quiver::kernels
