// FAISS k-means with our FLAT kernel for the assignment step.
#include "kernels/cpu/kmeans.h"

#include <faiss/Clustering.h>
#include <faiss/Index.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>

#include "kernels/simd.h"

namespace quiver::kernels {
namespace {

// FAISS k-means does the centroid updates; the nearest-centroid assignment,
// which is nearly all of its work, runs on our FLAT kernel through this
// adapter.
class FlatKernelIndex final : public faiss::Index {
 public:
  FlatKernelIndex(size_t dim, Metric metric, const Resources& res)
      : faiss::Index(static_cast<idx_t>(dim),
                     metric == Metric::kL2 ? faiss::METRIC_L2 : faiss::METRIC_INNER_PRODUCT),
        metric_(metric == Metric::kL2 ? Metric::kL2 : Metric::kInnerProduct),
        res_(res) {}

  void add(idx_t n, const float* x) override {
    vectors_.insert(vectors_.end(), x, x + n * d);
    norms_.resize(vectors_.size() / size_t(d));
    SquaredNorms(vectors_.data(), norms_.size(), size_t(d), norms_.data());
    ntotal = static_cast<idx_t>(norms_.size());
  }
  void reset() override {
    vectors_.clear();
    norms_.clear();
    ntotal = 0;
  }
  void search(idx_t n, const float* x, idx_t k, float* distances, idx_t* labels,
              const faiss::SearchParameters* /*params*/ = nullptr) const override {
    std::vector<int64_t> rows(size_t(n) * size_t(k));
    Status st = FlatSearch(res_, {vectors_.data(), norms_.data(), norms_.size(), size_t(d)}, x, size_t(n),
                           {metric_, size_t(k)}, rows.data(), distances);
    if (!st.ok()) throw std::runtime_error(st.ToString());  // caught in TrainKMeans
    for (size_t i = 0; i < rows.size(); ++i) labels[i] = rows[i];
  }

 private:
  Metric metric_;
  Resources res_;
  std::vector<float> vectors_;
  std::vector<float> norms_;
};

}  // namespace

std::vector<float> Normalized(const float* v, size_t n, size_t dim) {
  std::vector<float> out(v, v + n * dim);
  const DistanceFns& fns = ActiveDistanceFns();
  for (size_t r = 0; r < n; ++r) {
    float* x = out.data() + r * dim;
    const float norm = std::sqrt(fns.dot(x, x, dim));
    if (norm > 0) {
      for (size_t j = 0; j < dim; ++j) x[j] /= norm;
    }
  }
  return out;
}

Result<std::vector<float>> TrainKMeans(const Resources& res, Metric metric, const float* data, size_t n, size_t dim,
                                       const KMeansParams& params) {
  const size_t clusters = std::min(std::max<size_t>(params.clusters, 1), n);
  // Training sample: a seeded random subset.
  const size_t sample = std::min<size_t>(n, clusters * size_t{params.points_per_cluster});
  std::vector<float> train;
  const float* train_data = data;
  if (sample < n) {
    std::vector<size_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    std::mt19937_64 rng(params.seed);
    for (size_t i = 0; i < sample; ++i) std::swap(perm[i], perm[i + rng() % (n - i)]);
    train.resize(sample * dim);
    for (size_t i = 0; i < sample; ++i) std::memcpy(&train[i * dim], data + perm[i] * dim, dim * sizeof(float));
    train_data = train.data();
  }
  faiss::ClusteringParameters cp;
  cp.niter = static_cast<int>(params.iterations);
  cp.seed = static_cast<int>(params.seed & 0x7fffffff);
  cp.spherical = params.spherical;
  cp.max_points_per_centroid = static_cast<int>(params.points_per_cluster);
  cp.min_points_per_centroid = 1;  // small segments are fine: no warning spam
  cp.verbose = false;
  faiss::Clustering clustering(static_cast<int>(dim), static_cast<int>(clusters), cp);
  FlatKernelIndex assign(dim, metric, res);
  try {
    clustering.train(static_cast<faiss::Index::idx_t>(sample), train_data, assign);
  } catch (const std::exception& e) {
    return Status::Internal(std::string("k-means training failed: ") + e.what());
  }
  return std::move(clustering.centroids);
}

}  // namespace quiver::kernels
