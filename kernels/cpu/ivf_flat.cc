// CPU IVF_FLAT: FAISS k-means for training, our FLAT kernel for the coarse
// search and list assignment, and a group-of-32 SIMD scan for the lists.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <omp.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>

#include "common/encoding.h"
#include "kernels/cpu/kmeans.h"
#include "kernels/cpu/serialize.h"
#include "kernels/cpu/topk.h"
#include "kernels/gpu_search.h"
#include "kernels/ivf_flat.h"
#include "kernels/simd.h"

namespace quiver::kernels {
namespace {

constexpr size_t G = kIvfGroupSize;

// ---- group scan: 32 vectors (interleaved) against one query ----
// out[lane] = squared L2 distance (kL2) or dot product (otherwise).

template <bool kL2>
void ScanGroupScalar(const float* q, const float* group, size_t dim, float* out) {
  float acc[G] = {};
  for (size_t j = 0; j < dim; ++j) {
    const float qj = q[j];
    const float* x = group + j * G;
    for (size_t l = 0; l < G; ++l) {
      if constexpr (kL2) {
        const float d = qj - x[l];
        acc[l] += d * d;
      } else {
        acc[l] += qj * x[l];
      }
    }
  }
  std::memcpy(out, acc, sizeof acc);
}

template <bool kL2>
__attribute__((target("avx2,fma"))) void ScanGroupAvx2(const float* q, const float* group, size_t dim, float* out) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (size_t j = 0; j < dim; ++j) {
    const __m256 qj = _mm256_set1_ps(q[j]);
    const float* x = group + j * G;
    if constexpr (kL2) {
      const __m256 d0 = _mm256_sub_ps(qj, _mm256_loadu_ps(x));
      const __m256 d1 = _mm256_sub_ps(qj, _mm256_loadu_ps(x + 8));
      const __m256 d2 = _mm256_sub_ps(qj, _mm256_loadu_ps(x + 16));
      const __m256 d3 = _mm256_sub_ps(qj, _mm256_loadu_ps(x + 24));
      a0 = _mm256_fmadd_ps(d0, d0, a0);
      a1 = _mm256_fmadd_ps(d1, d1, a1);
      a2 = _mm256_fmadd_ps(d2, d2, a2);
      a3 = _mm256_fmadd_ps(d3, d3, a3);
    } else {
      a0 = _mm256_fmadd_ps(qj, _mm256_loadu_ps(x), a0);
      a1 = _mm256_fmadd_ps(qj, _mm256_loadu_ps(x + 8), a1);
      a2 = _mm256_fmadd_ps(qj, _mm256_loadu_ps(x + 16), a2);
      a3 = _mm256_fmadd_ps(qj, _mm256_loadu_ps(x + 24), a3);
    }
  }
  _mm256_storeu_ps(out, a0);
  _mm256_storeu_ps(out + 8, a1);
  _mm256_storeu_ps(out + 16, a2);
  _mm256_storeu_ps(out + 24, a3);
}

template <bool kL2>
__attribute__((target("avx512f"))) void ScanGroupAvx512(const float* q, const float* group, size_t dim, float* out) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  for (size_t j = 0; j < dim; ++j) {
    const __m512 qj = _mm512_set1_ps(q[j]);
    const float* x = group + j * G;
    if constexpr (kL2) {
      const __m512 d0 = _mm512_sub_ps(qj, _mm512_loadu_ps(x));
      const __m512 d1 = _mm512_sub_ps(qj, _mm512_loadu_ps(x + 16));
      a0 = _mm512_fmadd_ps(d0, d0, a0);
      a1 = _mm512_fmadd_ps(d1, d1, a1);
    } else {
      a0 = _mm512_fmadd_ps(qj, _mm512_loadu_ps(x), a0);
      a1 = _mm512_fmadd_ps(qj, _mm512_loadu_ps(x + 16), a1);
    }
  }
  _mm512_storeu_ps(out, a0);
  _mm512_storeu_ps(out + 16, a1);
}

using ScanGroupFn = void (*)(const float*, const float*, size_t, float*);

ScanGroupFn ActiveScanGroup(bool l2) {
  switch (ActiveSimdLevel()) {
    case SimdLevel::kAvx512: return l2 ? ScanGroupAvx512<true> : ScanGroupAvx512<false>;
    case SimdLevel::kAvx2: return l2 ? ScanGroupAvx2<true> : ScanGroupAvx2<false>;
    case SimdLevel::kScalar: break;
  }
  return l2 ? ScanGroupScalar<true> : ScanGroupScalar<false>;
}

}  // namespace

Status IvfFlatBuildParams::Validate() const {
  if (nlist == 0) return Status::InvalidArgument("nlist must be at least 1");
  if (kmeans_iterations == 0) return Status::InvalidArgument("kmeans_iterations must be at least 1");
  if (train_points_per_list == 0) return Status::InvalidArgument("train_points_per_list must be at least 1");
  return Status::Ok();
}

Result<std::unique_ptr<IvfFlatIndex>> IvfFlatIndex::Build(const Resources& res, Metric metric, const float* vectors,
                                                         size_t n, size_t dim, const IvfFlatBuildParams& params) {
  QUIVER_RETURN_IF_ERROR(params.Validate());
  if (n == 0) return Status::InvalidArgument("cannot build an IVF_FLAT index over no vectors");
  if (dim == 0) return Status::InvalidArgument("dimension must be at least 1");
  std::unique_ptr<IvfFlatIndex> index(new IvfFlatIndex());
  index->metric_ = metric;
  index->dim_ = dim;
  index->n_ = n;

  std::vector<float> unit;
  const float* data = vectors;
  if (metric == Metric::kCosine) {
    unit = Normalized(vectors, n, dim);
    data = unit.data();
  }

  const size_t nlist = std::min<size_t>(params.nlist, n);
  KMeansParams km{.clusters = nlist,
                  .iterations = params.kmeans_iterations,
                  .points_per_cluster = params.train_points_per_list,
                  .seed = params.seed,
                  .spherical = metric == Metric::kCosine};
  QUIVER_ASSIGN_OR_RETURN(index->centroids_,
                          TrainKMeans(res, metric == Metric::kL2 ? Metric::kL2 : Metric::kInnerProduct, data, n, dim, km));
  index->centroid_norms_.resize(nlist);
  SquaredNorms(index->centroids_.data(), nlist, dim, index->centroid_norms_.data());

  // Assign every vector to its nearest list with the FLAT kernel.
  const Metric coarse = metric == Metric::kL2 ? Metric::kL2 : Metric::kInnerProduct;
  std::vector<int64_t> list_of(n);
  std::vector<float> ignored(n);
  QUIVER_RETURN_IF_ERROR(FlatSearch(res, {index->centroids_.data(), index->centroid_norms_.data(), nlist, dim}, data,
                                    n, {coarse, 1}, list_of.data(), ignored.data()));
  std::vector<size_t> counts(nlist, 0);
  for (int64_t l : list_of) ++counts[static_cast<size_t>(l)];
  index->lists_.resize(nlist);
  for (size_t l = 0; l < nlist; ++l) {
    const size_t groups = (counts[l] + G - 1) / G;
    index->lists_[l].interleaved.assign(groups * G * dim, 0.0f);
    index->lists_[l].rows.assign(groups * G, -1);
  }
  for (size_t r = 0; r < n; ++r) {
    List& list = index->lists_[static_cast<size_t>(list_of[r])];
    const size_t slot = list.size++;
    const size_t g = slot / G, lane = slot % G;
    float* group = list.interleaved.data() + g * G * dim;
    const float* x = data + r * dim;
    for (size_t j = 0; j < dim; ++j) group[j * G + lane] = x[j];
    list.rows[slot] = static_cast<int64_t>(r);
  }
  return index;
}

Status IvfFlatIndex::Search(const Resources& res, const float* queries, size_t nq, size_t k, uint32_t nprobe,
                            const uint64_t* deleted, int64_t* rows, float* scores) const {
  if (k == 0) return Status::InvalidArgument("k must be at least 1");
  if (nprobe == 0) return Status::InvalidArgument("nprobe must be at least 1");
  if (nq == 0) return Status::Ok();
  if (res.gpu != nullptr) {
    return gpu::IvfFlatSearch(*static_cast<cuda::GpuResources*>(res.gpu), *this, deleted, queries, nq, k, nprobe, rows,
                              scores);
  }
  const size_t probes = std::min<size_t>(nprobe, lists_.size());

  std::vector<float> unit;
  const float* q = queries;
  if (metric_ == Metric::kCosine) {
    unit = Normalized(queries, nq, dim_);
    q = unit.data();
  }
  // Coarse search: the nprobe nearest centroids per query.
  const Metric coarse = metric_ == Metric::kL2 ? Metric::kL2 : Metric::kInnerProduct;
  std::vector<int64_t> probe_lists(nq * probes);
  std::vector<float> probe_scores(nq * probes);
  QUIVER_RETURN_IF_ERROR(FlatSearch(res, {centroids_.data(), centroid_norms_.data(), lists_.size(), dim_}, q, nq,
                                    {coarse, probes}, probe_lists.data(), probe_scores.data()));

  const bool l2 = metric_ == Metric::kL2;
  const ScanGroupFn scan = ActiveScanGroup(l2);
  const int threads = res.num_threads > 0 ? res.num_threads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (size_t i = 0; i < nq; ++i) {
    alignas(64) float dist[G];
    const float* qi = q + i * dim_;
    TopK heap(scores + i * k, rows + i * k, k);
    float thr = heap.threshold();
    for (size_t p = 0; p < probes; ++p) {
      const int64_t l = probe_lists[i * probes + p];
      if (l < 0) continue;
      const List& list = lists_[static_cast<size_t>(l)];
      const size_t groups = list.rows.size() / G;
      for (size_t g = 0; g < groups; ++g) {
        scan(qi, list.interleaved.data() + g * G * dim_, dim_, dist);
        const int64_t* grows = list.rows.data() + g * G;
        for (size_t lane = 0; lane < G; ++lane) {
          const int64_t row = grows[lane];
          if (row < 0) break;  // padding ends the list
          const float key = l2 ? dist[lane] : -dist[lane];
          if (key <= thr && !IsDeleted(deleted, row)) {
            heap.Push(key, row);
            thr = heap.threshold();
          }
        }
      }
    }
    heap.Finish();
    if (!l2) {
      for (size_t j = 0; j < k; ++j) scores[i * k + j] = rows[i * k + j] >= 0 ? -scores[i * k + j] : -kInf;
    }
  }
  return Status::Ok();
}

namespace {

constexpr char kIvfMagic[8] = {'Q', 'V', 'I', 'V', 'F', 'F', 'L', '1'};
constexpr uint32_t kIvfFormatVersion = 1;
constexpr size_t kIvfHeaderBytes = 8 + 4 + 4 + 8 * 3;  // magic, version, metric, dim, n, nlist

}  // namespace

std::string IvfFlatIndex::Serialize() const {
  std::string out(kIvfMagic, sizeof kIvfMagic);
  Put(&out, kIvfFormatVersion);
  Put(&out, static_cast<uint32_t>(metric_));
  Put(&out, static_cast<uint64_t>(dim_));
  Put(&out, static_cast<uint64_t>(n_));
  Put(&out, static_cast<uint64_t>(lists_.size()));
  PutArray(&out, centroids_);
  for (const List& l : lists_) {
    Put(&out, static_cast<uint64_t>(l.size));
    Put(&out, static_cast<uint64_t>(l.rows.size() / G));
    PutArray(&out, l.rows);
    PutArray(&out, l.interleaved);
  }
  Put(&out, Checksum(out));
  return out;
}

Result<std::unique_ptr<IvfFlatIndex>> IvfFlatIndex::Deserialize(std::string_view bytes, const std::string& what) {
  Reader r(bytes, "IVF_FLAT index", what);
  std::string_view sealed;
  QUIVER_RETURN_IF_ERROR(CheckEnvelope(bytes, kIvfMagic, kIvfHeaderBytes, r, &sealed));
  Reader body(sealed, "IVF_FLAT index", what);
  char magic[8];
  uint32_t version = 0, metric = 0;
  uint64_t dim = 0, n = 0, nlist = 0;
  for (char& c : magic) QUIVER_RETURN_IF_ERROR(body.Get(&c, "magic"));
  QUIVER_RETURN_IF_ERROR(body.Get(&version, "version"));
  if (version != kIvfFormatVersion) return body.Corrupt("unknown format version " + std::to_string(version));
  QUIVER_RETURN_IF_ERROR(body.Get(&metric, "metric"));
  if (metric > static_cast<uint32_t>(Metric::kCosine)) return body.Corrupt("unknown metric " + std::to_string(metric));
  QUIVER_RETURN_IF_ERROR(body.Get(&dim, "dim"));
  QUIVER_RETURN_IF_ERROR(body.Get(&n, "n"));
  QUIVER_RETURN_IF_ERROR(body.Get(&nlist, "nlist"));
  if (dim == 0 || dim > (1u << 16)) return body.Corrupt("dimension " + std::to_string(dim) + " out of range");
  if (nlist == 0 || nlist > n) return body.Corrupt("nlist " + std::to_string(nlist) + " does not fit n " + std::to_string(n));
  if (nlist > body.left() / (dim * sizeof(float))) return body.Corrupt("nlist larger than the file");

  std::unique_ptr<IvfFlatIndex> index(new IvfFlatIndex());
  index->metric_ = static_cast<Metric>(metric);
  index->dim_ = dim;
  index->n_ = n;
  QUIVER_RETURN_IF_ERROR(body.GetArray(&index->centroids_, nlist * dim, "centroids"));
  index->centroid_norms_.resize(nlist);
  SquaredNorms(index->centroids_.data(), nlist, dim, index->centroid_norms_.data());
  index->lists_.resize(nlist);
  std::vector<uint8_t> seen(n, 0);
  for (uint64_t l = 0; l < nlist; ++l) {
    List& list = index->lists_[l];
    uint64_t size = 0, groups = 0;
    QUIVER_RETURN_IF_ERROR(body.Get(&size, "list size"));
    QUIVER_RETURN_IF_ERROR(body.Get(&groups, "list groups"));
    if (groups != (size + G - 1) / G) return body.Corrupt("list " + std::to_string(l) + " has inconsistent sizes");
    if (groups > body.left() / (G * (sizeof(int64_t) + dim * sizeof(float)))) {
      return body.Corrupt("list " + std::to_string(l) + " larger than the file");
    }
    list.size = size;
    QUIVER_RETURN_IF_ERROR(body.GetArray(&list.rows, groups * G, "list rows"));
    QUIVER_RETURN_IF_ERROR(body.GetArray(&list.interleaved, groups * G * dim, "list vectors"));
    QUIVER_RETURN_IF_ERROR(CheckListRows(list.rows, size, n, l, &seen, body));
  }
  if (body.left() != 0) return body.Corrupt(std::to_string(body.left()) + " unexpected trailing bytes");
  QUIVER_RETURN_IF_ERROR(CheckEveryRowListed(seen, body));
  return index;
}

size_t IvfFlatIndex::MemoryBytes() const {
  size_t bytes = (centroids_.size() + centroid_norms_.size()) * sizeof(float);
  for (const List& l : lists_) bytes += l.interleaved.size() * sizeof(float) + l.rows.size() * sizeof(int64_t);
  return bytes;
}

}  // namespace quiver::kernels
