// Seeded synthetic vectors for tests and benchmarks.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace quiver {

/// Gaussian mixture with anisotropic clusters: each cluster has a random
/// centre and its own per-dimension spread, so clusters are elongated, as real
/// embeddings are. `unit` normalises every vector (for IP and cosine).
/// Same (n, dim, clusters, seed) gives the same vectors on every machine.
inline std::vector<float> GaussianMixture(size_t n, size_t dim, size_t clusters, uint64_t seed, bool unit = false) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> spread(0.05f, 0.6f);
  std::vector<float> centres(clusters * dim), scales(clusters * dim);
  for (auto& c : centres) c = normal(rng) * 2.0f;
  for (auto& s : scales) s = spread(rng);
  std::vector<float> v(n * dim);
  for (size_t i = 0; i < n; ++i) {
    const size_t c = rng() % clusters;
    float norm = 0;
    for (size_t j = 0; j < dim; ++j) {
      v[i * dim + j] = centres[c * dim + j] + scales[c * dim + j] * normal(rng);
      norm += v[i * dim + j] * v[i * dim + j];
    }
    if (unit && norm > 0) {
      const float inv = 1.0f / std::sqrt(norm);
      for (size_t j = 0; j < dim; ++j) v[i * dim + j] *= inv;
    }
  }
  return v;
}

}  // namespace quiver
