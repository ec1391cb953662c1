// Exact (FLAT) k-nearest-neighbour search: the kernel interface shared by the
// CPU path (kernels/cpu) and, later, the CUDA path (kernels/gpu).
//
// No CUDA type appears here: GPU state travels in the opaque Resources handle,
// which the caller owns (one per thread) and never stores in an index.
//
// Example:
//   kernels::Resources res;                       // CPU, all cores
//   std::vector<float> norms(n);
//   kernels::SquaredNorms(base.data(), n, dim, norms.data());
//   kernels::BaseView view{base.data(), norms.data(), n, dim};
//   std::vector<int64_t> rows(nq * k);
//   std::vector<float> scores(nq * k);
//   Status st = kernels::FlatSearch(res, view, queries.data(), nq,
//                                   {kernels::Metric::kL2, k}, rows.data(), scores.data());
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/status.h"

namespace quiver::kernels {

enum class Metric : uint8_t {
  kL2 = 0,            // squared Euclidean distance, smaller is better
  kInnerProduct = 1,  // larger is better
  kCosine = 2,        // cosine similarity, larger is better
};

/// Execution resources, passed first to every kernel call.
struct Resources {
  /// CPU threads a call may use; 0 = every core (OpenMP's default).
  /// Default: 0.
  int num_threads = 0;
  /// The calling thread's cuda::GpuResources (cuda/gpu_resources.h: stream,
  /// cuBLAS handle, the device's memory pool), owned by the caller; nullptr =
  /// CPU. Kernels with a GPU implementation run there and return its Status
  /// (the caller falls back to the CPU on error). Default: nullptr.
  void* gpu = nullptr;
};

/// Row-major base vectors with their squared L2 norms (see SquaredNorms).
/// The norms are read for kL2 and kCosine and may be null for kInnerProduct.
struct BaseView {
  const float* vectors = nullptr;
  const float* sq_norms = nullptr;
  size_t rows = 0;
  size_t dim = 0;
  /// Optional tombstones: bit r of word r / 64 set = row r is deleted and is
  /// skipped inside the scan, so k live rows still come back. May be null.
  const uint64_t* deleted = nullptr;
};

/// True if row `row` is marked in the tombstone bitset (null = none deleted).
inline bool IsDeleted(const uint64_t* deleted, int64_t row) {
  return deleted != nullptr && ((deleted[static_cast<uint64_t>(row) >> 6] >> (static_cast<uint64_t>(row) & 63)) & 1u);
}

struct FlatSearchParams {
  Metric metric = Metric::kL2;
  /// Results per query, >= 1. Default: 10.
  size_t k = 10;
};

/// For each of the `nq` queries (row-major, dim floats each) writes k row
/// numbers of `base` into `rows` and their scores into `scores`, best first:
/// ascending squared distance for kL2, descending for kInnerProduct and
/// kCosine (cosine queries need not be normalised). Slots past base.rows hold
/// row -1 and score +inf (kL2) or -inf. Exact ties are broken by lower row.
/// Batches use BLAS sgemm over cache-sized tiles plus a threshold-filtered heap
/// select; single queries and small batches use the SIMD scan.
Status FlatSearch(const Resources& res, const BaseView& base, const float* queries, size_t nq,
                  const FlatSearchParams& params, int64_t* rows, float* scores);

/// out[i] = squared L2 norm of row i.
void SquaredNorms(const float* vectors, size_t rows, size_t dim, float* out);

}  // namespace quiver::kernels
