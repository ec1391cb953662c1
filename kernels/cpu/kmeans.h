// k-means training shared by the CPU indexes (internal header).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/status.h"
#include "kernels/flat_search.h"

namespace quiver::kernels {

struct KMeansParams {
  size_t clusters = 1;
  uint32_t iterations = 20;
  /// Trains on a seeded sample of clusters * this many vectors.
  uint32_t points_per_cluster = 64;
  uint64_t seed = 1234;
  /// Spherical k-means (unit centroids), for cosine.
  bool spherical = false;
};

/// FAISS k-means over `data` (n x dim) with our FLAT kernel doing the
/// nearest-centroid assignment (Debian's FAISS would run it on scalar code
/// and one core). `metric` kL2 or kInnerProduct. Returns clusters x dim
/// centroids; `params.clusters` is clamped to n.
Result<std::vector<float>> TrainKMeans(const Resources& res, Metric metric, const float* data, size_t n, size_t dim,
                                       const KMeansParams& params);

/// A copy of `v` (n x dim) with every non-zero row scaled to unit length.
std::vector<float> Normalized(const float* v, size_t n, size_t dim);

}  // namespace quiver::kernels
