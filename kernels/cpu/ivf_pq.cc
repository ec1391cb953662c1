// CPU IVF_PQ: FAISS k-means (through our FLAT kernel) for the coarse
// quantiser and the sub-space codebooks, per-query lookup tables, a
// group-of-32 gather scan, and exact re-ranking. See kernels/ivf_pq.h.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/encoding.h"
#include "kernels/cpu/kmeans.h"
#include "kernels/cpu/rerank.h"
#include "kernels/cpu/serialize.h"
#include "kernels/cpu/topk.h"
#include "kernels/gpu_search.h"
#include "kernels/ivf_pq.h"
#include "kernels/simd.h"

namespace quiver::kernels {
namespace {

constexpr size_t G = kIvfGroupSize;
constexpr char kIvfPqMagic[8] = {'Q', 'V', 'I', 'V', 'F', 'P', 'Q', '1'};
constexpr uint32_t kIvfPqFormatVersion = 1;

// ---- group scan: out[lane] = sum over m of lut[m][code(lane, m)] ----
// `lut` holds pq_dim tables of `ksub` floats; `codes` one group.

void ScanGroupScalar(const float* lut, size_t ksub, const uint8_t* codes, size_t pq_dim, bool four_bit, float* out) {
  float acc[G] = {};
  for (size_t m = 0; m < pq_dim; ++m) {
    const float* t = lut + m * ksub;
    if (four_bit) {
      const uint8_t* c = codes + m * (G / 2);
      for (size_t l = 0; l < G / 2; ++l) {
        acc[l] += t[c[l] & 0x0F];
        acc[l + G / 2] += t[c[l] >> 4];
      }
    } else {
      const uint8_t* c = codes + m * G;
      for (size_t l = 0; l < G; ++l) acc[l] += t[c[l]];
    }
  }
  std::memcpy(out, acc, sizeof acc);
}

__attribute__((target("avx2"))) void ScanGroupAvx2(const float* lut, size_t ksub, const uint8_t* codes, size_t pq_dim,
                                                   bool four_bit, float* out) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (size_t m = 0; m < pq_dim; ++m) {
    const float* t = lut + m * ksub;
    __m128i lo, hi;  // codes of lanes 0..15 and 16..31, one byte each
    if (four_bit) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + m * (G / 2)));
      const __m128i nibble = _mm_set1_epi8(0x0F);
      lo = _mm_and_si128(b, nibble);
      hi = _mm_and_si128(_mm_srli_epi16(b, 4), nibble);
    } else {
      lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + m * G));
      hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + m * G + 16));
    }
    a0 = _mm256_add_ps(a0, _mm256_i32gather_ps(t, _mm256_cvtepu8_epi32(lo), 4));
    a1 = _mm256_add_ps(a1, _mm256_i32gather_ps(t, _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)), 4));
    a2 = _mm256_add_ps(a2, _mm256_i32gather_ps(t, _mm256_cvtepu8_epi32(hi), 4));
    a3 = _mm256_add_ps(a3, _mm256_i32gather_ps(t, _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)), 4));
  }
  _mm256_storeu_ps(out, a0);
  _mm256_storeu_ps(out + 8, a1);
  _mm256_storeu_ps(out + 16, a2);
  _mm256_storeu_ps(out + 24, a3);
}

using ScanGroupFn = void (*)(const float*, size_t, const uint8_t*, size_t, bool, float*);

ScanGroupFn ActiveScanGroup() {
  return ActiveSimdLevel() != SimdLevel::kScalar ? ScanGroupAvx2 : ScanGroupScalar;
}

// Nearest codeword of every sub-vector: one FLAT search per sub-space.
Status EncodeAll(const Resources& res, const float* data, size_t n, size_t dim, size_t pq_dim, size_t dsub,
                 size_t ksub, const std::vector<float>& codebooks, std::vector<uint8_t>* codes) {
  codes->assign(n * pq_dim, 0);
  std::vector<float> sub(n * dsub), book_norms(ksub);
  std::vector<int64_t> nearest(n);
  std::vector<float> ignored(n);
  for (size_t m = 0; m < pq_dim; ++m) {
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < dsub; ++j) {
        const size_t d = m * dsub + j;
        sub[i * dsub + j] = d < dim ? data[i * dim + d] : 0.0f;
      }
    }
    const float* book = codebooks.data() + m * ksub * dsub;
    SquaredNorms(book, ksub, dsub, book_norms.data());
    QUIVER_RETURN_IF_ERROR(FlatSearch(res, {book, book_norms.data(), ksub, dsub}, sub.data(), n, {Metric::kL2, 1},
                                      nearest.data(), ignored.data()));
    for (size_t i = 0; i < n; ++i) (*codes)[i * pq_dim + m] = static_cast<uint8_t>(nearest[i]);
  }
  return Status::Ok();
}

}  // namespace

Status IvfPqBuildParams::Validate(size_t dim) const {
  if (nlist == 0) return Status::InvalidArgument("nlist must be at least 1");
  if (pq_dim > dim) return Status::InvalidArgument("pq_dim must be at most the dimension");
  if (pq_bits != 4 && pq_bits != 8) return Status::InvalidArgument("pq_bits must be 4 or 8");
  if (kmeans_iterations == 0) return Status::InvalidArgument("kmeans_iterations must be at least 1");
  if (train_points_per_list == 0) return Status::InvalidArgument("train_points_per_list must be at least 1");
  return Status::Ok();
}

uint32_t IvfPqIndex::Code(size_t l, size_t slot, size_t m) const {
  const size_t g = slot / G, lane = slot % G;
  const uint8_t* group = lists_[l].codes.data() + g * pq_dim_ * codes_per_group_byte();
  if (pq_bits_ == 8) return group[m * G + lane];
  const uint8_t byte = group[m * (G / 2) + lane % (G / 2)];
  return lane < G / 2 ? (byte & 0x0F) : (byte >> 4);
}

Result<std::unique_ptr<IvfPqIndex>> IvfPqIndex::Build(const Resources& res, Metric metric, const float* vectors,
                                                     size_t n, size_t dim, const IvfPqBuildParams& params) {
  if (dim == 0) return Status::InvalidArgument("dimension must be at least 1");
  QUIVER_RETURN_IF_ERROR(params.Validate(dim));
  if (n == 0) return Status::InvalidArgument("cannot build an IVF_PQ index over no vectors");
  if (res.gpu != nullptr) return Status::Unimplemented("GPU IVF_PQ build is not built yet");
  std::unique_ptr<IvfPqIndex> index(new IvfPqIndex());
  index->metric_ = metric;
  index->dim_ = dim;
  index->n_ = n;
  index->pq_dim_ = params.pq_dim != 0 ? params.pq_dim : static_cast<uint32_t>((dim + 1) / 2);
  index->pq_bits_ = params.pq_bits;
  const size_t pq_dim = index->pq_dim_, dsub = index->dsub(), ksub = size_t{1} << params.pq_bits;

  std::vector<float> unit;
  const float* data = vectors;
  if (metric == Metric::kCosine) {
    unit = Normalized(vectors, n, dim);
    data = unit.data();
  }
  // Coarse quantiser and list assignment, as IVF_FLAT.
  const Metric coarse = metric == Metric::kL2 ? Metric::kL2 : Metric::kInnerProduct;
  const size_t nlist = std::min<size_t>(params.nlist, n);
  KMeansParams km{.clusters = nlist,
                  .iterations = params.kmeans_iterations,
                  .points_per_cluster = params.train_points_per_list,
                  .seed = params.seed,
                  .spherical = metric == Metric::kCosine};
  QUIVER_ASSIGN_OR_RETURN(index->centroids_, TrainKMeans(res, coarse, data, n, dim, km));
  index->centroid_norms_.resize(nlist);
  SquaredNorms(index->centroids_.data(), nlist, dim, index->centroid_norms_.data());
  std::vector<int64_t> list_of(n);
  std::vector<float> ignored(n);
  QUIVER_RETURN_IF_ERROR(FlatSearch(res, {index->centroids_.data(), index->centroid_norms_.data(), nlist, dim}, data,
                                    n, {coarse, 1}, list_of.data(), ignored.data()));

  const float* data_unit_or_raw = data;
  // Residuals to the list centres: the codes describe where a vector sits
  // within its list, which is what separates neighbours (the centre alone
  // already separates the lists).
  std::vector<float> residual(n * dim);
  for (size_t r = 0; r < n; ++r) {
    const float* c = index->centroids_.data() + static_cast<size_t>(list_of[r]) * dim;
    for (size_t j = 0; j < dim; ++j) residual[r * dim + j] = data[r * dim + j] - c[j];
  }
  data = residual.data();
  // Codebooks: k-means (L2) in each sub-space, over a sample.
  const size_t sample = std::min(n, ksub * size_t{params.train_points_per_list});
  std::vector<float> sub(sample * dsub);
  index->codebooks_.assign(pq_dim * ksub * dsub, 0.0f);
  for (size_t m = 0; m < pq_dim; ++m) {
    for (size_t i = 0; i < sample; ++i) {
      // A strided sample: every (n / sample)-th vector, spread over the segment.
      const size_t r = i * n / sample;
      for (size_t j = 0; j < dsub; ++j) {
        const size_t d = m * dsub + j;
        sub[i * dsub + j] = d < dim ? data[r * dim + d] : 0.0f;
      }
    }
    KMeansParams pq_km{.clusters = ksub,
                       .iterations = params.kmeans_iterations,
                       .points_per_cluster = params.train_points_per_list,
                       .seed = params.seed + m};
    QUIVER_ASSIGN_OR_RETURN(std::vector<float> book, TrainKMeans(res, Metric::kL2, sub.data(), sample, dsub, pq_km));
    // Fewer points than codewords: the spare codewords repeat the first ones
    // (no vector is nearer to a copy, so they are never used).
    float* dst = index->codebooks_.data() + m * ksub * dsub;
    const size_t got = book.size() / dsub;
    for (size_t c = 0; c < ksub; ++c) std::memcpy(dst + c * dsub, book.data() + (c % got) * dsub, dsub * sizeof(float));
  }
  std::vector<uint8_t> codes;
  QUIVER_RETURN_IF_ERROR(EncodeAll(res, data, n, dim, pq_dim, dsub, ksub, index->codebooks_, &codes));
  index->TransposeCodebooks();
  // IP and cosine: the code's error against the vector itself, <x, r - r^>,
  // stands in for <q, r - r^> (q is near x for the neighbours that matter),
  // which leaves only <q - x, r - r^> as error.
  std::vector<float> correction;
  if (metric != Metric::kL2) {
    correction.resize(n);
    for (size_t r = 0; r < n; ++r) {
      const float* x = data_unit_or_raw + r * dim;
      double acc = 0;
      for (size_t j = 0; j < dim; ++j) {
        const size_t m = j / dsub;
        const float decoded = index->codebooks_[(m * ksub + codes[r * pq_dim + m]) * dsub + j % dsub];
        acc += double(x[j]) * (double(data[r * dim + j]) - decoded);
      }
      correction[r] = static_cast<float>(acc);
    }
  }

  // Lists, interleaved in groups of 32.
  std::vector<size_t> counts(nlist, 0);
  for (int64_t l : list_of) ++counts[static_cast<size_t>(l)];
  const size_t group_bytes = pq_dim * index->codes_per_group_byte();
  index->lists_.resize(nlist);
  for (size_t l = 0; l < nlist; ++l) {
    const size_t groups = (counts[l] + G - 1) / G;
    index->lists_[l].codes.assign(groups * group_bytes, 0);
    index->lists_[l].rows.assign(groups * G, -1);
    if (metric != Metric::kL2) index->lists_[l].corrections.assign(groups * G, 0.0f);
  }
  for (size_t r = 0; r < n; ++r) {
    List& list = index->lists_[static_cast<size_t>(list_of[r])];
    const size_t slot = list.size++;
    const size_t g = slot / G, lane = slot % G;
    uint8_t* group = list.codes.data() + g * group_bytes;
    for (size_t m = 0; m < pq_dim; ++m) {
      const uint8_t c = codes[r * pq_dim + m];
      if (params.pq_bits == 8) {
        group[m * G + lane] = c;
      } else {
        uint8_t& byte = group[m * (G / 2) + lane % (G / 2)];
        byte = lane < G / 2 ? static_cast<uint8_t>((byte & 0xF0) | c) : static_cast<uint8_t>((byte & 0x0F) | (c << 4));
      }
    }
    list.rows[slot] = static_cast<int64_t>(r);
    if (!correction.empty()) list.corrections[slot] = correction[r];
  }
  return index;
}

void IvfPqIndex::TransposeCodebooks() {
  const size_t ksub = size_t{1} << pq_bits_, ds = dsub();
  codebooks_t_.resize(codebooks_.size());
  for (size_t m = 0; m < pq_dim_; ++m) {
    for (size_t c = 0; c < ksub; ++c) {
      for (size_t j = 0; j < ds; ++j) codebooks_t_[(m * ds + j) * ksub + c] = codebooks_[(m * ksub + c) * ds + j];
    }
  }
}

void IvfPqIndex::CodewordTable(const float* padded, bool l2, float* table) const {
  const size_t ksub = size_t{1} << pq_bits_, ds = dsub();
  // Over codewords innermost, against the transposed codebooks: the loop
  // vectorises.
  for (size_t m = 0; m < pq_dim_; ++m) {
    float* t = table + m * ksub;
    std::fill(t, t + ksub, 0.0f);
    for (size_t j = 0; j < ds; ++j) {
      const float qj = padded[m * ds + j];
      const float* book = codebooks_t_.data() + (m * ds + j) * ksub;
      if (l2) {
        for (size_t c = 0; c < ksub; ++c) {
          const float d = qj - book[c];
          t[c] += d * d;
        }
      } else {
        for (size_t c = 0; c < ksub; ++c) t[c] -= qj * book[c];
      }
    }
  }
}

Status IvfPqIndex::Search(const Resources& res, const BaseView& base, const float* queries, size_t nq, size_t k,
                          const IndexSearchParams& params, int64_t* rows, float* scores) const {
  if (k == 0) return Status::InvalidArgument("k must be at least 1");
  if (params.nprobe == 0) return Status::InvalidArgument("nprobe must be at least 1");
  if (params.refine_factor == 0) return Status::InvalidArgument("refine_factor must be at least 1");
  if (base.rows != n_ || base.dim != dim_ || base.vectors == nullptr ||
      (metric_ != Metric::kInnerProduct && base.sq_norms == nullptr)) {
    return Status::InvalidArgument("IVF_PQ search needs the index's own vectors (and norms for L2 and cosine)");
  }
  if (nq == 0) return Status::Ok();
  if (res.gpu != nullptr) {
    return gpu::IvfPqSearch(*static_cast<cuda::GpuResources*>(res.gpu), *this, base, queries, nq, k, params.nprobe,
                            params.refine_factor, rows, scores);
  }
  const size_t probes = std::min<size_t>(params.nprobe, lists_.size());
  std::vector<float> unit;
  const float* q = queries;
  if (metric_ == Metric::kCosine) {
    unit = Normalized(queries, nq, dim_);
    q = unit.data();
  }
  const Metric coarse = metric_ == Metric::kL2 ? Metric::kL2 : Metric::kInnerProduct;
  std::vector<int64_t> probe_lists(nq * probes);
  std::vector<float> probe_scores(nq * probes);
  QUIVER_RETURN_IF_ERROR(FlatSearch(res, {centroids_.data(), centroid_norms_.data(), lists_.size(), dim_}, q, nq,
                                    {coarse, probes}, probe_lists.data(), probe_scores.data()));

  const size_t pq_dim = pq_dim_, ksub = size_t{1} << pq_bits_;
  const size_t group_bytes = pq_dim * codes_per_group_byte();
  const size_t candidates = std::min(n_, k * size_t{params.refine_factor});
  const bool l2 = metric_ == Metric::kL2;
  const ScanGroupFn scan = ActiveScanGroup();
  const int threads = res.num_threads > 0 ? res.num_threads : omp_get_max_threads();
#pragma omp parallel num_threads(static_cast<int>(std::min<size_t>(threads, nq)))
  {
    std::vector<float> lut(pq_dim * ksub), dots(pq_dim * ksub), padded(pq_dim * dsub(), 0.0f);
    std::vector<float> keys(candidates);
    std::vector<int64_t> kept(candidates);
    std::vector<std::pair<float, int64_t>> scratch;
    alignas(64) float dist[G];
#pragma omp for schedule(dynamic, 1)
    for (size_t i = 0; i < nq; ++i) {
      const float* qi = q + i * dim_;
      // IP and cosine: <q, centre + r> = <q, centre> + sum over m of
      // <q_m, codeword>, so one table serves every list.
      if (!l2) {
        std::copy(qi, qi + dim_, padded.begin());
        CodewordTable(padded.data(), /*l2=*/false, dots.data());
      }
      TopK heap(keys.data(), kept.data(), candidates);
      float thr = heap.threshold();
      for (size_t p = 0; p < probes; ++p) {
        const int64_t l = probe_lists[i * probes + p];
        if (l < 0) continue;
        const List& list = lists_[static_cast<size_t>(l)];
        const size_t groups = list.rows.size() / G;
        if (groups == 0) continue;
        // L2: |q - centre - r|^2 = sum over m of |(q - centre)_m - codeword|^2,
        // a table per probed list.
        float base_key = 0;  // IP and cosine: -<q, centre>
        const float* table = dots.data();
        if (l2) {
          const float* c = centroids_.data() + static_cast<size_t>(l) * dim_;
          for (size_t j = 0; j < dim_; ++j) padded[j] = qi[j] - c[j];
          CodewordTable(padded.data(), /*l2=*/true, lut.data());
          table = lut.data();
        } else {
          base_key = -probe_scores[i * probes + p];  // the coarse search scored <q, centre>
        }
        for (size_t g = 0; g < groups; ++g) {
          scan(table, ksub, list.codes.data() + g * group_bytes, pq_dim, pq_bits_ == 4, dist);
          const int64_t* grows = list.rows.data() + g * G;
          for (size_t lane = 0; lane < G; ++lane) {
            const int64_t row = grows[lane];
            if (row < 0) break;  // padding ends the list
            const float key = l2 ? dist[lane] : base_key + dist[lane] - list.corrections[g * G + lane];
            if (key <= thr && !IsDeleted(base.deleted, row)) {
              heap.Push(key, row);
              thr = heap.threshold();
            }
          }
        }
      }
      heap.Finish();
      const float* raw = queries + i * dim_;
      RerankExact(metric_, base, raw, CosineInvNorm(metric_, raw, dim_), kept.data(), candidates, k, rows + i * k,
                  scores + i * k, &scratch);
    }
  }
  return Status::Ok();
}

void RerankExactBatch(Metric metric, const BaseView& base, const float* queries, size_t nq, const int64_t* cand,
                      size_t count, size_t k, int threads, int64_t* rows, float* scores) {
  const size_t dim = base.dim;
  const int most = omp_get_max_threads();
  const int team = static_cast<int>(std::min<size_t>(threads > 0 ? std::min(threads, most) : most, nq));
#pragma omp parallel num_threads(std::max(team, 1))
  {
    std::vector<std::pair<float, int64_t>> scratch;
#pragma omp for schedule(static)
    for (size_t i = 0; i < nq; ++i) {
      const float* raw = queries + i * dim;
      RerankExact(metric, base, raw, CosineInvNorm(metric, raw, dim), cand + i * count, count, k, rows + i * k,
                  scores + i * k, &scratch);
    }
  }
}

std::string IvfPqIndex::Serialize() const {
  std::string out(kIvfPqMagic, sizeof kIvfPqMagic);
  Put(&out, kIvfPqFormatVersion);
  Put(&out, static_cast<uint32_t>(metric_));
  Put(&out, static_cast<uint64_t>(dim_));
  Put(&out, static_cast<uint64_t>(n_));
  Put(&out, static_cast<uint64_t>(lists_.size()));
  Put(&out, pq_dim_);
  Put(&out, pq_bits_);
  PutArray(&out, centroids_);
  PutArray(&out, codebooks_);
  for (const List& l : lists_) {
    Put(&out, static_cast<uint64_t>(l.size));
    Put(&out, static_cast<uint64_t>(l.rows.size() / G));
    PutArray(&out, l.rows);
    PutArray(&out, l.codes);
    PutArray(&out, l.corrections);
  }
  Put(&out, Checksum(out));
  return out;
}

Result<std::unique_ptr<IvfPqIndex>> IvfPqIndex::Deserialize(std::string_view bytes, const std::string& what) {
  Reader r(bytes, "IVF_PQ index", what);
  constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8 * 3 + 4 + 4;
  std::string_view sealed;
  QUIVER_RETURN_IF_ERROR(CheckEnvelope(bytes, kIvfPqMagic, kHeaderBytes, r, &sealed));
  Reader body(sealed, "IVF_PQ index", what);
  char magic[8];
  uint32_t version = 0, metric = 0, pq_dim = 0, pq_bits = 0;
  uint64_t dim = 0, n = 0, nlist = 0;
  for (char& c : magic) QUIVER_RETURN_IF_ERROR(body.Get(&c, "magic"));
  QUIVER_RETURN_IF_ERROR(body.Get(&version, "version"));
  if (version != kIvfPqFormatVersion) return body.Corrupt("unknown format version " + std::to_string(version));
  QUIVER_RETURN_IF_ERROR(body.Get(&metric, "metric"));
  if (metric > static_cast<uint32_t>(Metric::kCosine)) return body.Corrupt("unknown metric " + std::to_string(metric));
  QUIVER_RETURN_IF_ERROR(body.Get(&dim, "dim"));
  QUIVER_RETURN_IF_ERROR(body.Get(&n, "n"));
  QUIVER_RETURN_IF_ERROR(body.Get(&nlist, "nlist"));
  QUIVER_RETURN_IF_ERROR(body.Get(&pq_dim, "pq_dim"));
  QUIVER_RETURN_IF_ERROR(body.Get(&pq_bits, "pq_bits"));
  if (dim == 0 || dim > (1u << 16)) return body.Corrupt("dimension " + std::to_string(dim) + " out of range");
  if (nlist == 0 || nlist > n) return body.Corrupt("nlist " + std::to_string(nlist) + " does not fit n " + std::to_string(n));
  if (pq_dim == 0 || pq_dim > dim) return body.Corrupt("pq_dim " + std::to_string(pq_dim) + " out of range");
  if (pq_bits != 4 && pq_bits != 8) return body.Corrupt("pq_bits " + std::to_string(pq_bits) + " is not 4 or 8");
  std::unique_ptr<IvfPqIndex> index(new IvfPqIndex());
  index->metric_ = static_cast<Metric>(metric);
  index->dim_ = dim;
  index->n_ = n;
  index->pq_dim_ = pq_dim;
  index->pq_bits_ = pq_bits;
  if (nlist > body.left() / (dim * sizeof(float))) return body.Corrupt("nlist larger than the file");
  QUIVER_RETURN_IF_ERROR(body.GetArray(&index->centroids_, nlist * dim, "centroids"));
  const size_t ksub = size_t{1} << pq_bits;
  QUIVER_RETURN_IF_ERROR(body.GetArray(&index->codebooks_, size_t{pq_dim} * ksub * index->dsub(), "codebooks"));
  for (float v : index->codebooks_) {
    if (!std::isfinite(v)) return body.Corrupt("codebook holds a non-finite value");
  }
  index->centroid_norms_.resize(nlist);
  SquaredNorms(index->centroids_.data(), nlist, dim, index->centroid_norms_.data());
  index->TransposeCodebooks();
  const size_t group_bytes = pq_dim * index->codes_per_group_byte();
  index->lists_.resize(nlist);
  std::vector<uint8_t> seen(n, 0);
  for (uint64_t l = 0; l < nlist; ++l) {
    List& list = index->lists_[l];
    uint64_t size = 0, groups = 0;
    QUIVER_RETURN_IF_ERROR(body.Get(&size, "list size"));
    QUIVER_RETURN_IF_ERROR(body.Get(&groups, "list groups"));
    if (groups != (size + G - 1) / G) return body.Corrupt("list " + std::to_string(l) + " has inconsistent sizes");
    const size_t correction_bytes = index->metric_ == Metric::kL2 ? 0 : G * sizeof(float);
    if (groups > body.left() / (G * sizeof(int64_t) + group_bytes + correction_bytes)) {
      return body.Corrupt("list " + std::to_string(l) + " larger than the file");
    }
    list.size = size;
    QUIVER_RETURN_IF_ERROR(body.GetArray(&list.rows, groups * G, "list rows"));
    QUIVER_RETURN_IF_ERROR(body.GetArray(&list.codes, groups * group_bytes, "list codes"));
    QUIVER_RETURN_IF_ERROR(body.GetArray(&list.corrections, correction_bytes == 0 ? 0 : groups * G, "list corrections"));
    for (float c : list.corrections) {
      if (!std::isfinite(c)) return body.Corrupt("list " + std::to_string(l) + " holds a non-finite correction");
    }
    QUIVER_RETURN_IF_ERROR(CheckListRows(list.rows, size, n, l, &seen, body));
  }
  if (body.left() != 0) return body.Corrupt(std::to_string(body.left()) + " unexpected trailing bytes");
  QUIVER_RETURN_IF_ERROR(CheckEveryRowListed(seen, body));
  return index;
}

size_t IvfPqIndex::MemoryBytes() const {
  size_t bytes = (centroids_.size() + centroid_norms_.size() + codebooks_.size()) * sizeof(float);
  for (const List& l : lists_) {
    bytes += l.codes.size() + l.rows.size() * sizeof(int64_t) + l.corrections.size() * sizeof(float);
  }
  return bytes;
}

}  // namespace quiver::kernels
