// Exact re-ranking of approximate candidates (internal header), scoring
// exactly as FlatSearch does, so results of every index merge with FLAT's.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/cpu/topk.h"
#include "kernels/flat_search.h"
#include "kernels/simd.h"

namespace quiver::kernels {

/// Prefetches every cache line of [p, p + bytes) for reading, into all cache
/// levels: a vector or code at a random row spans several lines, and a
/// scattered row is a cache miss each time (bytes > 0).
inline void PrefetchBytes(const void* p, size_t bytes) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(p) & ~uintptr_t{63};
  const uintptr_t last = reinterpret_cast<uintptr_t>(p) + bytes - 1;
  for (uintptr_t line = first; line <= last; line += 64) __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 3);
}

/// While scoring the i-th candidate, RerankExact fetches the vector of the
/// (i + kRerankPrefetchAhead)-th: the candidates are scattered rows, each a
/// cache miss (1.00-1.04x GRAPH QPS on 1M x 128 L2, interleaved A/B).
inline constexpr size_t kRerankPrefetchAhead = 2;

/// 1/|q| for cosine (0 for a zero query); 1 otherwise.
inline float CosineInvNorm(Metric metric, const float* q, size_t dim) {
  if (metric != Metric::kCosine) return 1.0f;
  const float norm = std::sqrt(ActiveDistanceFns().dot(q, q, dim));
  return norm > 0 ? 1.0f / norm : 0.0f;
}

/// Scores `count` candidate rows of `base` (row -1 ends the list) against the
/// raw query and writes the best k, best first, to rows/scores (row -1 and
/// -/+inf past the candidates). Ties go to the lower row.
inline void RerankExact(Metric metric, const BaseView& base, const float* query, float inv_norm, const int64_t* cand,
                        size_t count, size_t k, int64_t* rows, float* scores,
                        std::vector<std::pair<float, int64_t>>* scratch) {
  const DistanceFns& fns = ActiveDistanceFns();
  scratch->clear();
  size_t n = 0;
  while (n < count && cand[n] >= 0) ++n;
  auto prefetch = [&](size_t i) {
    PrefetchBytes(base.vectors + static_cast<size_t>(cand[i]) * base.dim, base.dim * sizeof(float));
  };
  for (size_t i = 0; i < std::min(n, kRerankPrefetchAhead); ++i) prefetch(i);
  for (size_t i = 0; i < n; ++i) {
    if (i + kRerankPrefetchAhead < n) prefetch(i + kRerankPrefetchAhead);
    const float* x = base.vectors + static_cast<size_t>(cand[i]) * base.dim;
    float key = kInf;
    switch (metric) {
      case Metric::kL2: key = fns.l2_sq(query, x, base.dim); break;
      case Metric::kInnerProduct: key = -fns.dot(query, x, base.dim); break;
      case Metric::kCosine: {
        const float nx = base.sq_norms[cand[i]];
        key = nx > 0 ? -fns.dot(query, x, base.dim) * inv_norm / std::sqrt(nx) : -0.0f;
        break;
      }
    }
    scratch->emplace_back(key, cand[i]);
  }
  std::sort(scratch->begin(), scratch->end());
  const bool l2 = metric == Metric::kL2;
  for (size_t j = 0; j < k; ++j) {
    const bool have = j < scratch->size();
    rows[j] = have ? (*scratch)[j].second : -1;
    scores[j] = have ? (l2 ? (*scratch)[j].first : -(*scratch)[j].first) : (l2 ? kInf : -kInf);
  }
}

/// RerankExact for `nq` queries whose candidates lie row-major, `count` per
/// query, in `cand`; on at most `threads` host threads (0: all the host
/// has, and never more). For the GPU
/// paths, whose candidates come back to the host in one batch
/// (cpu/ivf_pq.cc, compiled with OpenMP).
void RerankExactBatch(Metric metric, const BaseView& base, const float* queries, size_t nq, const int64_t* cand,
                      size_t count, size_t k, int threads, int64_t* rows, float* scores);

}  // namespace quiver::kernels
