// Helpers shared by the test binaries: seeded data, a float64 reference
// search, temporary directories.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <set>
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

/// Base vectors with their squared norms, viewed as a kernels::BaseView.
struct IndexedData {
  size_t n, dim;
  std::vector<float> base, norms;
  kernels::BaseView view(const uint64_t* deleted = nullptr) const {
    return {base.data(), norms.data(), n, dim, deleted};
  }
};

/// The first n rows of `base` (extra rows, e.g. queries drawn with them, are
/// dropped) and their norms.
inline IndexedData MakeIndexedData(std::vector<float> base, size_t n, size_t dim) {
  IndexedData d{n, dim, std::move(base), std::vector<float>(n)};
  d.base.resize(n * dim);
  kernels::SquaredNorms(d.base.data(), n, dim, d.norms.data());
  return d;
}

/// Recall@k of `rows` (nq x k) against exact FLAT search over d; NaN if the
/// reference search fails (so any recall floor fails too).
inline double RecallAgainstFlat(kernels::Metric m, const IndexedData& d, const std::vector<float>& queries, size_t nq,
                                size_t k, const std::vector<int64_t>& rows) {
  std::vector<int64_t> truth(nq * k);
  std::vector<float> scores(nq * k);
  if (!kernels::FlatSearch({}, d.view(), queries.data(), nq, {m, k}, truth.data(), scores.data()).ok()) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  size_t hit = 0;
  for (size_t i = 0; i < nq; ++i) {
    std::set<int64_t> t(truth.begin() + long(i * k), truth.begin() + long((i + 1) * k));
    for (size_t j = 0; j < k; ++j) hit += t.count(rows[i * k + j]);
  }
  return double(hit) / double(nq * k);
}

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
