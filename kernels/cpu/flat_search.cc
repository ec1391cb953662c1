// CPU FLAT search.
//
// Internally every metric is turned into a key where smaller is better
// (L2: distance; IP and cosine: the negated score), selected with a bounded
// max-heap per query, and turned back into the metric's score at the end.
//
// Batches: query blocks are spread over threads; each thread multiplies its
// block against cache-sized base tiles with single-threaded sgemm (BLAS stays
// single-threaded, see kernels/blas.h) and folds the tile into its heaps,
// touching the heap only for values that beat the current k-th best.
// L2 scores of the winners are recomputed directly at the end, so the result
// does not carry the cancellation error of |x|^2 - 2q.x + |q|^2.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/topk.h"
#include "kernels/flat_search.h"
#include "kernels/gpu_search.h"
#include "kernels/simd.h"

namespace quiver::kernels {
namespace {

struct QueryInfo {
  float inv_norm = 1.0f;  // cosine: 1/|q| (0 for a zero query)
};

// Key of one base row for one query from a dot product.
inline float KeyFromDot(Metric metric, float dot, float sq_norm_x, float inv_norm_q) {
  switch (metric) {
    case Metric::kL2: return sq_norm_x - 2.0f * dot;  // + |q|^2, constant per query
    case Metric::kInnerProduct: return -dot;
    case Metric::kCosine: return sq_norm_x > 0.0f ? -dot * inv_norm_q / std::sqrt(sq_norm_x) : -0.0f;
  }
  return kInf;
}

// Folds one tile of dot products (bq x bb, row stride ld) into the heaps.
// Instantiated per ISA below and picked at run time with the SIMD level (not
// with GCC's target_clones: its ifunc resolver runs before sanitizers start).
__attribute__((always_inline)) inline void SelectTileImpl(Metric metric, const float* dots, size_t ld, size_t bq,
                                                           size_t bb, const float* sq_norms, const float* inv_norms,
                                                           const QueryInfo* qinfo, int64_t row0, TopK* heaps,
                                                           float* scratch, const uint64_t* deleted) {
  for (size_t q = 0; q < bq; ++q) {
    const float* d = dots + q * ld;
    // Vectorisable transform into keys, then a scalar pass that branches only
    // for the few values below the threshold.
    switch (metric) {
      case Metric::kL2:
        for (size_t j = 0; j < bb; ++j) scratch[j] = sq_norms[j] - 2.0f * d[j];
        break;
      case Metric::kInnerProduct:
        for (size_t j = 0; j < bb; ++j) scratch[j] = -d[j];
        break;
      case Metric::kCosine: {
        const float iq = qinfo[q].inv_norm;
        for (size_t j = 0; j < bb; ++j) scratch[j] = -d[j] * inv_norms[j] * iq;
        break;
      }
    }
    TopK& h = heaps[q];
    float thr = h.threshold();
    for (size_t j = 0; j < bb; ++j) {
      if (scratch[j] <= thr && !IsDeleted(deleted, row0 + static_cast<int64_t>(j))) {
        h.Push(scratch[j], row0 + static_cast<int64_t>(j));
        thr = h.threshold();
      }
    }
  }
}

#define QUIVER_SELECT_TILE_ARGS                                                                                  \
  Metric metric, const float *dots, size_t ld, size_t bq, size_t bb, const float *sq_norms, const float *inv_norms, \
      const QueryInfo *qinfo, int64_t row0, TopK *heaps, float *scratch, const uint64_t *deleted
#define QUIVER_SELECT_TILE_CALL metric, dots, ld, bq, bb, sq_norms, inv_norms, qinfo, row0, heaps, scratch, deleted
__attribute__((target("avx512f"))) void SelectTileAvx512(QUIVER_SELECT_TILE_ARGS) {
  SelectTileImpl(QUIVER_SELECT_TILE_CALL);
}
__attribute__((target("avx2,fma"))) void SelectTileAvx2(QUIVER_SELECT_TILE_ARGS) {
  SelectTileImpl(QUIVER_SELECT_TILE_CALL);
}
void SelectTileScalar(QUIVER_SELECT_TILE_ARGS) { SelectTileImpl(QUIVER_SELECT_TILE_CALL); }
#undef QUIVER_SELECT_TILE_ARGS
#undef QUIVER_SELECT_TILE_CALL

using SelectTileFn = void (*)(Metric, const float*, size_t, size_t, size_t, const float*, const float*,
                              const QueryInfo*, int64_t, TopK*, float*, const uint64_t*);

SelectTileFn ActiveSelectTile() {
  switch (ActiveSimdLevel()) {
    case SimdLevel::kAvx512: return SelectTileAvx512;
    case SimdLevel::kAvx2: return SelectTileAvx2;
    case SimdLevel::kScalar: break;
  }
  return SelectTileScalar;
}

int ThreadsFor(const Resources& res) { return res.num_threads > 0 ? res.num_threads : omp_get_max_threads(); }

// Converts heap keys of one query to the metric's scores, recomputing L2
// distances exactly for the winners and re-sorting.
void FinishQuery(Metric metric, const BaseView& base, const float* q, float* keys, int64_t* rows, size_t k,
                 bool keys_are_exact) {
  const DistanceFns& fns = ActiveDistanceFns();
  if (metric == Metric::kL2) {
    if (!keys_are_exact) {
      std::vector<std::pair<float, int64_t>> v;
      for (size_t i = 0; i < k && rows[i] >= 0; ++i) {
        v.emplace_back(fns.l2_sq(q, base.vectors + static_cast<size_t>(rows[i]) * base.dim, base.dim), rows[i]);
      }
      std::sort(v.begin(), v.end());
      for (size_t i = 0; i < v.size(); ++i) {
        keys[i] = v[i].first;
        rows[i] = v[i].second;
      }
    }
    for (size_t i = 0; i < k; ++i) {
      if (rows[i] < 0) keys[i] = kInf;
    }
    return;
  }
  for (size_t i = 0; i < k; ++i) keys[i] = rows[i] >= 0 ? -keys[i] : -kInf;
}

// Merges per-thread heaps (thread t's heap for query q holds sizes[t * nq + q]
// entries at (t * nq + q) * k of keys/ids) into each query's k best, ties to
// the lower row, and finishes them into scores.
void MergeThreadHeaps(Metric metric, const BaseView& base, const float* queries, size_t nq, size_t k, int threads,
                      const std::vector<float>& keys, const std::vector<int64_t>& ids,
                      const std::vector<size_t>& sizes, bool keys_are_exact, int64_t* rows, float* scores) {
  for (size_t q = 0; q < nq; ++q) {
    TopK merged(scores + q * k, rows + q * k, k);
    for (size_t t = 0; t < static_cast<size_t>(threads); ++t) {
      const size_t off = (t * nq + q) * k;
      for (size_t i = 0; i < sizes[t * nq + q]; ++i) merged.Push(keys[off + i], ids[off + i]);
    }
    merged.Finish();
    FinishQuery(metric, base, queries + q * base.dim, scores + q * k, rows + q * k, k, keys_are_exact);
  }
}

Status SearchScan(const Resources& res, const BaseView& base, const float* queries, size_t nq,
                  const FlatSearchParams& p, const std::vector<QueryInfo>& qinfo, int64_t* rows, float* scores) {
  const DistanceFns& fns = ActiveDistanceFns();
  const size_t k = p.k;
  const int threads = static_cast<int>(std::min<size_t>(ThreadsFor(res), std::max<size_t>(1, base.rows / 4096)));
  // Per thread, per query heap storage; merged after the parallel scan.
  std::vector<float> keys(static_cast<size_t>(threads) * nq * k);
  std::vector<int64_t> ids(keys.size());
  std::vector<size_t> sizes(static_cast<size_t>(threads) * nq);
#pragma omp parallel num_threads(threads)
  {
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    const size_t nt = static_cast<size_t>(omp_get_num_threads());
    const size_t lo = base.rows * t / nt, hi = base.rows * (t + 1) / nt;
    std::vector<TopK> heaps;
    heaps.reserve(nq);
    for (size_t q = 0; q < nq; ++q) heaps.emplace_back(&keys[(t * nq + q) * k], &ids[(t * nq + q) * k], k);
    constexpr size_t kBlock = 256;  // rows re-used across the queries while in cache
    for (size_t b = lo; b < hi; b += kBlock) {
      const size_t e = std::min(hi, b + kBlock);
      for (size_t q = 0; q < nq; ++q) {
        const float* qv = queries + q * base.dim;
        TopK& h = heaps[q];
        float thr = h.threshold();
        for (size_t r = b; r < e; ++r) {
          const float* x = base.vectors + r * base.dim;
          float key;
          if (p.metric == Metric::kL2) {
            key = fns.l2_sq(qv, x, base.dim);
          } else {
            key = KeyFromDot(p.metric, fns.dot(qv, x, base.dim), base.sq_norms ? base.sq_norms[r] : 0.0f,
                             qinfo[q].inv_norm);
          }
          if (key <= thr && !IsDeleted(base.deleted, static_cast<int64_t>(r))) {
            h.Push(key, static_cast<int64_t>(r));
            thr = h.threshold();
          }
        }
      }
    }
    for (size_t q = 0; q < nq; ++q) sizes[t * nq + q] = heaps[q].size();
  }
  MergeThreadHeaps(p.metric, base, queries, nq, k, threads, keys, ids, sizes, /*keys_are_exact=*/true, rows, scores);
  return Status::Ok();
}

Status SearchGemm(const Resources& res, const BaseView& base, const float* queries, size_t nq,
                  const FlatSearchParams& p, const std::vector<QueryInfo>& qinfo, int64_t* rows, float* scores) {
  const size_t k = p.k;
  const size_t dim = base.dim;
  const int threads = ThreadsFor(res);
  // Query blocks: at most 256, and enough blocks to keep every thread busy.
  const size_t bq = std::clamp<size_t>((nq + threads - 1) / threads, 8, 256);
  // Base tile sized so the tile (bb x dim floats) stays in L2.
  const size_t bb = std::clamp<size_t>((256u << 10) / (dim * sizeof(float)), 256, 4096);
  const size_t nblocks = (nq + bq - 1) / bq;
  const SelectTileFn select_tile = ActiveSelectTile();

  std::vector<float> inv_norms;
  if (p.metric == Metric::kCosine) {
    inv_norms.resize(base.rows);
    for (size_t r = 0; r < base.rows; ++r) {
      inv_norms[r] = base.sq_norms[r] > 0.0f ? 1.0f / std::sqrt(base.sq_norms[r]) : 0.0f;
    }
  }
  if (threads > 1 && nq <= 256 && base.rows >= static_cast<size_t>(threads) * bb) {
    // Few queries: query blocks would leave threads idle, or make each thread
    // stream the whole base through a thin GEMM. Split the base tiles across
    // threads instead (each thread: every query, its own heaps) and merge.
    std::vector<float> keys(static_cast<size_t>(threads) * nq * k);
    std::vector<int64_t> ids(keys.size());
    std::vector<size_t> sizes(static_cast<size_t>(threads) * nq, 0);
    const size_t tiles = (base.rows + bb - 1) / bb;
#pragma omp parallel num_threads(threads)
    {
      const size_t t = static_cast<size_t>(omp_get_thread_num());
      const size_t nt = static_cast<size_t>(omp_get_num_threads());
      std::vector<float> dots(nq * bb);
      std::vector<float> scratch(bb);
      std::vector<TopK> heaps;
      for (size_t q = 0; q < nq; ++q) heaps.emplace_back(keys.data() + (t * nq + q) * k, ids.data() + (t * nq + q) * k, k);
      for (size_t tile = tiles * t / nt; tile < tiles * (t + 1) / nt; ++tile) {
        const size_t r0 = tile * bb;
        const size_t nr = std::min(bb, base.rows - r0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nq), static_cast<int>(nr),
                    static_cast<int>(dim), 1.0f, queries, static_cast<int>(dim), base.vectors + r0 * dim,
                    static_cast<int>(dim), 0.0f, dots.data(), static_cast<int>(bb));
        select_tile(p.metric, dots.data(), bb, nq, nr, base.sq_norms ? base.sq_norms + r0 : nullptr,
                    inv_norms.empty() ? nullptr : inv_norms.data() + r0, qinfo.data(), static_cast<int64_t>(r0),
                    heaps.data(), scratch.data(), base.deleted);
      }
      for (size_t q = 0; q < nq; ++q) sizes[t * nq + q] = heaps[q].size();
    }
    MergeThreadHeaps(p.metric, base, queries, nq, k, threads, keys, ids, sizes, /*keys_are_exact=*/false, rows,
                     scores);
    return Status::Ok();
  }
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> dots(bq * bb);
    std::vector<float> scratch(bb);
    std::vector<TopK> heaps;
#pragma omp for schedule(dynamic, 1)
    for (size_t blk = 0; blk < nblocks; ++blk) {
      const size_t q0 = blk * bq;
      const size_t nb_q = std::min(bq, nq - q0);
      heaps.clear();
      for (size_t q = 0; q < nb_q; ++q) heaps.emplace_back(scores + (q0 + q) * k, rows + (q0 + q) * k, k);
      for (size_t r0 = 0; r0 < base.rows; r0 += bb) {
        const size_t nr = std::min(bb, base.rows - r0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nb_q), static_cast<int>(nr),
                    static_cast<int>(dim), 1.0f, queries + q0 * dim, static_cast<int>(dim),
                    base.vectors + r0 * dim, static_cast<int>(dim), 0.0f, dots.data(), static_cast<int>(bb));
        select_tile(p.metric, dots.data(), bb, nb_q, nr, base.sq_norms ? base.sq_norms + r0 : nullptr,
                   inv_norms.empty() ? nullptr : inv_norms.data() + r0, qinfo.data() + q0,
                   static_cast<int64_t>(r0), heaps.data(), scratch.data(), base.deleted);
      }
      for (size_t q = 0; q < nb_q; ++q) {
        heaps[q].Finish();
        FinishQuery(p.metric, base, queries + (q0 + q) * dim, scores + (q0 + q) * k, rows + (q0 + q) * k, k,
                    /*keys_are_exact=*/false);
      }
    }
  }
  return Status::Ok();
}

}  // namespace

void SquaredNorms(const float* vectors, size_t rows, size_t dim, float* out) {
  const DistanceFns& fns = ActiveDistanceFns();
  for (size_t r = 0; r < rows; ++r) out[r] = fns.dot(vectors + r * dim, vectors + r * dim, dim);
}

Status FlatSearch(const Resources& res, const BaseView& base, const float* queries, size_t nq,
                  const FlatSearchParams& params, int64_t* rows, float* scores) {
  if (params.k == 0) return Status::InvalidArgument("k must be at least 1");
  if (base.dim == 0) return Status::InvalidArgument("dimension must be at least 1");
  if (nq == 0) return Status::Ok();
  if (base.rows > 0 && params.metric != Metric::kInnerProduct && base.sq_norms == nullptr) {
    return Status::InvalidArgument("L2 and cosine search need the base norms");
  }
  if (res.gpu != nullptr) {
    return gpu::FlatSearch(*static_cast<cuda::GpuResources*>(res.gpu), base, queries, nq, params, rows, scores);
  }

  std::vector<QueryInfo> qinfo(nq);
  if (params.metric == Metric::kCosine) {
    const DistanceFns& fns = ActiveDistanceFns();
    for (size_t q = 0; q < nq; ++q) {
      const float n = std::sqrt(fns.dot(queries + q * base.dim, queries + q * base.dim, base.dim));
      qinfo[q].inv_norm = n > 0.0f ? 1.0f / n : 0.0f;
    }
  }
  // sgemm pays off once a base tile is re-used by enough queries.
  constexpr size_t kGemmMinQueries = 16;
  if (nq >= kGemmMinQueries && base.rows > 0) return SearchGemm(res, base, queries, nq, params, qinfo, rows, scores);
  return SearchScan(res, base, queries, nq, params, qinfo, rows, scores);
}

}  // namespace quiver::kernels
