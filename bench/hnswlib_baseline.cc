#include "bench/hnswlib_baseline.h"

#include <hnswlib/hnswlib.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace quiver::bench {
namespace {

template <typename F>
void ParallelFor(size_t n, int threads, F f) {
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  auto work = [&] {
    for (size_t i = next++; i < n; i = next++) f(i);
  };
  for (int t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
}

}  // namespace

struct Hnswlib::Impl {
  Impl(size_t dim, bool inner_product) : dim(dim) {
    if (inner_product) {
      space = std::make_unique<hnswlib::InnerProductSpace>(dim);
    } else {
      space = std::make_unique<hnswlib::L2Space>(dim);
    }
  }
  size_t dim;
  std::unique_ptr<hnswlib::SpaceInterface<float>> space;
  std::unique_ptr<hnswlib::HierarchicalNSW<float>> index;
};

Hnswlib::Hnswlib(const float* data, size_t n, size_t dim, size_t m, size_t ef_construction, int threads,
                 bool inner_product)
    : impl_(std::make_unique<Impl>(dim, inner_product)) {
  impl_->index = std::make_unique<hnswlib::HierarchicalNSW<float>>(impl_->space.get(), n, m, ef_construction, 100);
  impl_->index->addPoint(data, 0);  // the entry point first, as hnswlib's own parallel add does
  ParallelFor(n - 1, std::max(threads, 1), [&](size_t i) { impl_->index->addPoint(data + (i + 1) * dim, i + 1); });
}

Hnswlib::~Hnswlib() = default;

void Hnswlib::Search(const float* queries, size_t nq, size_t k, size_t ef, int threads, int64_t* rows) const {
  impl_->index->setEf(std::max(ef, k));
  const size_t dim = impl_->dim;
  ParallelFor(nq, std::max(threads, 1), [&](size_t q) {
    auto top = impl_->index->searchKnn(queries + q * dim, k);
    std::fill(rows + q * k, rows + (q + 1) * k, -1);
    for (size_t i = top.size(); i-- > 0;) {  // the queue pops the farthest first
      rows[q * k + i] = static_cast<int64_t>(top.top().second);
      top.pop();
    }
  });
}

const char* Hnswlib::SimdName() {
#if defined(USE_AVX512)
  return "AVX512";
#elif defined(USE_AVX)
  return "AVX";
#elif defined(USE_SSE)
  return "SSE";
#else
  return "scalar";
#endif
}

}  // namespace quiver::bench
