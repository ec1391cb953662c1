// IVF_PQ: k-means inverted lists holding product-quantised codes instead of
// vectors, scanned through per-query lookup tables, with optional exact
// re-ranking of the best candidates from the segment's own vectors.
//
// Product quantiser: the (zero-padded) vector is cut into pq_dim sub-vectors
// of dsub = ceil(dim / pq_dim) floats; each is replaced by the index of the
// nearest of 2^pq_bits centroids of its own codebook (k-means per
// sub-space). What is encoded is the residual to the list centre. For IP and
// cosine one table per query serves every probed list (the centre adds
// <q, centre>, known from the coarse search); for L2 each probed list gets
// its own table, built from q - centre.
//
// Layout (shared with the CUDA list-scan kernel): each list holds its codes
// interleaved in groups of kIvfGroupSize = 32 vectors: for group g and
// sub-quantiser m, the 32 codes are contiguous. 8-bit codes take 32 bytes
// (lane l at byte l); 4-bit codes take 16 bytes (lane l in the low nibble of
// byte l for l < 16, in the high nibble of byte l - 16 otherwise). Padding
// lanes hold code 0 and row -1.
//
// Memory per vector: pq_dim * pq_bits / 8 bytes of code plus an 8-byte row
// id, and for IP and cosine a 4-byte correction (128-d with the default
// pq_dim 64 and 8 bits: about 74 bytes, against 529 for IVF_FLAT).
//
// Example:
//   auto index = IvfPqIndex::Build(res, Metric::kL2, data, n, dim, {.nlist = 1024, .pq_dim = 64});
//   (*index)->Search(res, base, queries, nq, k, {.nprobe = 32, .refine_factor = 8}, rows, scores);
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kernels/flat_search.h"
#include "kernels/ivf_flat.h"
#include "kernels/vector_index.h"

namespace quiver::kernels {

struct IvfPqBuildParams {
  /// Inverted lists, clamped to the number of vectors. Default: 1024.
  uint32_t nlist = 1024;
  /// Sub-quantisers; 0 = ceil(dim / 2) (2 dimensions per code: on 1M
  /// clustered 128-d vectors, 4 per code stopped at recall 0.89 even
  /// re-ranking 16k candidates). At most dim. Default: 0.
  uint32_t pq_dim = 0;
  /// Bits per code: 4 or 8. Default: 8.
  uint32_t pq_bits = 8;
  /// k-means iterations (coarse and per sub-space). Default: 20.
  uint32_t kmeans_iterations = 20;
  /// k-means trains on a sample of (clusters * this) vectors. Default: 64.
  uint32_t train_points_per_list = 64;
  /// Seed of the samples and initialisations. Default: 1234.
  uint64_t seed = 1234;

  Status Validate(size_t dim) const;
};

class IvfPqIndex final : public VectorIndex {
 public:
  struct List {
    /// groups * pq_dim * (32 or 16) bytes, interleaved as described above.
    std::vector<uint8_t> codes;
    /// Row number per slot; -1 for padding.
    std::vector<int64_t> rows;
    /// IP and cosine only, per slot: <x, r - decoded r>, the code's error
    /// seen from the vector itself, subtracted from every key (empty for L2).
    std::vector<float> corrections;
    size_t size = 0;
  };

  static Result<std::unique_ptr<IvfPqIndex>> Build(const Resources& res, Metric metric, const float* vectors, size_t n,
                                                   size_t dim, const IvfPqBuildParams& params);

  /// VectorIndex::Search: reads params.nprobe and params.refine_factor (the
  /// k * refine_factor best candidates by code are re-scored exactly from
  /// base.vectors, so scores are exact; 1 = only the k returned).
  Status Search(const Resources& res, const BaseView& base, const float* queries, size_t nq, size_t k,
                const IndexSearchParams& params, int64_t* rows, float* scores) const override;

  /// Magic "QVIVFPQ1", version, metric, sizes, centroids, codebooks, lists,
  /// CRC-32. Layout in docs/storage.md.
  std::string Serialize() const override;
  /// Validates everything before trusting it; DATA_LOSS naming `what`.
  static Result<std::unique_ptr<IvfPqIndex>> Deserialize(std::string_view bytes, const std::string& what);

  const char* kind() const override { return "IVF_PQ"; }
  Metric metric() const override { return metric_; }
  size_t dim() const override { return dim_; }
  size_t size() const override { return n_; }
  size_t MemoryBytes() const override;

  size_t nlist() const { return lists_.size(); }
  uint32_t pq_dim() const { return pq_dim_; }
  uint32_t pq_bits() const { return pq_bits_; }
  const List& list(size_t i) const { return lists_[i]; }
  /// Code of sub-quantiser m for the vector in `slot` of list `l`.
  uint32_t Code(size_t l, size_t slot, size_t m) const;
  /// Dimensions per sub-quantiser (the vector is zero-padded to pq_dim * dsub).
  size_t dsub() const { return (dim_ + pq_dim_ - 1) / pq_dim_; }
  /// nlist x dim list centres.
  const std::vector<float>& centroids() const { return centroids_; }
  /// pq_dim x 2^pq_bits x dsub codewords.
  const std::vector<float>& codebooks() const { return codebooks_; }

 private:
  IvfPqIndex() = default;
  size_t codes_per_group_byte() const { return pq_bits_ == 8 ? kIvfGroupSize : kIvfGroupSize / 2; }
  // Derives codebooks_t_ from codebooks_.
  void TransposeCodebooks();
  // table[m][c] = |x_m - codeword|^2 (l2) or -<x_m, codeword>, for a
  // zero-padded vector x.
  void CodewordTable(const float* padded, bool l2, float* table) const;

  Metric metric_ = Metric::kL2;
  size_t dim_ = 0;
  size_t n_ = 0;
  uint32_t pq_dim_ = 0;
  uint32_t pq_bits_ = 8;
  std::vector<float> centroids_;       // nlist x dim
  std::vector<float> centroid_norms_;  // for the coarse search
  std::vector<float> codebooks_;       // pq_dim x 2^bits x dsub
  std::vector<float> codebooks_t_;     // the same, pq_dim x dsub x 2^bits (not stored)
  std::vector<List> lists_;
};

}  // namespace quiver::kernels
