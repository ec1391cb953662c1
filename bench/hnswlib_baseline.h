// hnswlib (Debian's libhnswlib-dev headers) as a benchmark baseline, compiled
// with -march=native in its own translation unit so it runs its AVX kernels:
// Debian's python3-hnswlib is an SSE-only build and would understate it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace quiver::bench {

class Hnswlib {
 public:
  /// Builds an HNSW graph (M, ef_construction) over `n` rows, inserting on
  /// `threads` threads: L2, or inner product if `inner_product`.
  Hnswlib(const float* data, size_t n, size_t dim, size_t m, size_t ef_construction, int threads,
          bool inner_product = false);
  ~Hnswlib();
  /// k nearest rows per query (best first), searching with `ef` on `threads` threads.
  void Search(const float* queries, size_t nq, size_t k, size_t ef, int threads, int64_t* rows) const;
  /// Which SIMD kernel the headers compiled to ("AVX512", "AVX", "SSE", "scalar").
  static const char* SimdName();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace quiver::bench
