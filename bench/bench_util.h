// Small helpers shared by the benchmark programs (quiver-bench, quiver-gpu-bench).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/synthetic_data.h"

namespace quiver::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

/// The median of v; NaN for none (a sweep that timed nothing).
inline double Median(std::vector<double> v) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// n x dim floats uniform in [0, 1), reproducible from `seed`.
inline std::vector<float> RandomData(size_t n, size_t dim, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> v(n * dim);
  for (auto& x : v) x = u(rng);
  return v;
}

/// Base (n x dim) and queries (nq x dim) drawn from one Gaussian mixture, the
/// queries being the last nq draws: they come from the base's clusters (from
/// another seed's mixture they would sit between them, and every index's
/// recall would say little).
inline std::pair<std::vector<float>, std::vector<float>> MixtureBaseAndQueries(size_t n, size_t nq, size_t dim,
                                                                               size_t clusters, bool unit = false) {
  auto all = quiver::GaussianMixture(n + nq, dim, clusters, 42, unit);
  std::vector<float> queries(all.begin() + static_cast<long>(n * dim), all.end());
  all.resize(n * dim);
  return {std::move(all), std::move(queries)};
}

/// Recall@k of `got` against `truth` (both nq x k row ids; -1 never matches a
/// true row).
inline double RecallAtK(const std::vector<int64_t>& got, const std::vector<int64_t>& truth, size_t nq, size_t k) {
  size_t hit = 0;
  for (size_t i = 0; i < nq; ++i) {
    for (size_t a = 0; a < k; ++a) {
      for (size_t b = 0; b < k; ++b) hit += got[i * k + a] == truth[i * k + b];
    }
  }
  return double(hit) / double(nq * k);
}

/// One point of a parameter sweep: a method at one setting.
struct SweepPoint {
  std::string method, param;
  double recall = 0, qps = 0, p50_ms = 0, p95_ms = 0, p99_ms = 0;
};

/// A method's QPS at `recall`, read off its recall/QPS frontier (the points
/// no other point of the method beats on both): log QPS interpolated linearly
/// in recall between the frontier points either side of `recall`, or the
/// first point above it when none lies below; 0 if no point reaches it.
/// Taking the best point at or above `recall` instead made a ratio jump with
/// where each method's parameter grid happened to fall.
inline double QpsAtRecall(const std::vector<SweepPoint>& points, const std::string& method, double recall) {
  std::vector<std::pair<double, double>> frontier;  // (recall, qps), recall ascending, qps descending
  std::vector<std::pair<double, double>> mine;
  for (const auto& p : points) {
    if (p.method == method && p.qps > 0) mine.emplace_back(p.recall, p.qps);
  }
  std::sort(mine.begin(), mine.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second > b.second;
  });
  double best_qps = 0;  // over points of higher recall
  for (const auto& [r, q] : mine) {
    if (q > best_qps) frontier.emplace_back(r, q), best_qps = q;
  }
  std::reverse(frontier.begin(), frontier.end());
  for (size_t i = 0; i < frontier.size(); ++i) {
    const auto [r_hi, q_hi] = frontier[i];
    if (r_hi < recall) continue;
    if (i == 0 || r_hi == recall) return q_hi;
    const auto [r_lo, q_lo] = frontier[i - 1];
    const double t = (recall - r_lo) / (r_hi - r_lo);
    return std::exp(std::log(q_lo) + t * (std::log(q_hi) - std::log(q_lo)));
  }
  return 0;
}

}  // namespace quiver::bench
