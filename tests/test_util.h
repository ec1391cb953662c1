// Helpers shared by the test binaries: seeded data, a float64 reference
// search, temporary directories.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "common/synthetic_data.h"
#include "kernels/flat_search.h"

namespace quiver::testing {

inline std::vector<float> RandomVectors(size_t n, size_t dim, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n * dim);
  for (auto& x : v) x = dist(rng);
  return v;
}

/// See common/synthetic_data.h.
inline std::vector<float> ClusteredVectors(size_t n, size_t dim, size_t clusters, uint64_t seed, bool unit = false) {
  return GaussianMixture(n, dim, clusters, seed, unit);
}

struct RefHit {
  double score;
  int64_t row;
};

/// One row's exact score in float64.
inline double ReferenceScore(kernels::Metric metric, const float* q, const float* x, size_t dim) {
  double dot = 0, l2 = 0, qn = 0, xn = 0;
  for (size_t j = 0; j < dim; ++j) {
    dot += double(q[j]) * x[j];
    const double d = double(q[j]) - x[j];
    l2 += d * d;
    qn += double(q[j]) * q[j];
    xn += double(x[j]) * x[j];
  }
  switch (metric) {
    case kernels::Metric::kL2: return l2;
    case kernels::Metric::kInnerProduct: return dot;
    case kernels::Metric::kCosine: return (qn > 0 && xn > 0) ? dot / std::sqrt(qn * xn) : 0.0;
  }
  return 0;
}

/// Exact search in float64: every row scored, sorted best first (ties by row).
inline std::vector<std::vector<RefHit>> ReferenceSearch(kernels::Metric metric, const float* base, size_t n,
                                                        const float* queries, size_t nq, size_t dim) {
  std::vector<std::vector<RefHit>> out(nq);
  for (size_t q = 0; q < nq; ++q) {
    for (size_t r = 0; r < n; ++r) {
      out[q].push_back({ReferenceScore(metric, queries + q * dim, base + r * dim, dim), static_cast<int64_t>(r)});
    }
    const bool smaller_better = metric == kernels::Metric::kL2;
    std::sort(out[q].begin(), out[q].end(), [&](const RefHit& a, const RefHit& b) {
      if (a.score != b.score) return smaller_better ? a.score < b.score : a.score > b.score;
      return a.row < b.row;
    });
  }
  return out;
}

/// Tolerance for comparing a float32 kernel score with the float64 one:
/// relative 1e-4 of the magnitudes involved, so cancellation in |x|^2-2qx is covered.
inline double ScoreTolerance(double ref, double scale) { return 1e-4 * std::max({std::abs(ref), scale, 1e-6}); }

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "quiver-test-XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace quiver::testing
