// How quiver-bench reads a method's QPS at a recall level off its sweep.
#include <gtest/gtest.h>

#include <cmath>

#include "bench/bench_util.h"

namespace quiver::bench {
namespace {

std::vector<SweepPoint> Points(const std::string& method, const std::vector<std::pair<double, double>>& recall_qps) {
  std::vector<SweepPoint> points;
  for (const auto& [recall, qps] : recall_qps) points.push_back({method, "", recall, qps});
  return points;
}

TEST(QpsAtRecall, InterpolatesLogQpsBetweenTheNeighbouringPoints) {
  const auto points = Points("a", {{0.90, 40000}, {0.94, 20000}, {0.98, 5000}});
  // Halfway in recall between 20,000 and 5,000 QPS: their geometric mean.
  EXPECT_NEAR(QpsAtRecall(points, "a", 0.96), 10000, 1e-6);
  EXPECT_NEAR(QpsAtRecall(points, "a", 0.91), 40000 * std::pow(0.5, 0.25), 1e-6);
  EXPECT_DOUBLE_EQ(QpsAtRecall(points, "a", 0.94), 20000);
}

TEST(QpsAtRecall, OnlyThatMethodsFrontierCounts) {
  // (0.95, 1,000) is beaten on both axes by (0.97, 8,000); the other
  // method's points do not take part.
  auto points = Points("a", {{0.93, 16000}, {0.95, 1000}, {0.97, 8000}});
  const auto other = Points("b", {{0.94, 1e9}, {0.96, 1}});
  points.insert(points.end(), other.begin(), other.end());
  EXPECT_NEAR(QpsAtRecall(points, "a", 0.95), std::sqrt(16000.0 * 8000.0), 1e-6);
}

TEST(QpsAtRecall, BeyondThePointsItIsTheFirstPointAboveOrNothing) {
  const auto points = Points("a", {{0.96, 30000}, {0.99, 9000}});
  EXPECT_DOUBLE_EQ(QpsAtRecall(points, "a", 0.90), 30000);  // not extrapolated upwards
  EXPECT_EQ(QpsAtRecall(points, "a", 0.995), 0);
  EXPECT_EQ(QpsAtRecall(points, "missing", 0.5), 0);
}

}  // namespace
}  // namespace quiver::bench
