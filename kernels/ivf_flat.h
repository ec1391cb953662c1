// IVF_FLAT: k-means inverted lists scanned exactly, the first approximate index.
//
// Layout (shared with the CUDA list-scan kernel, which reads it unchanged):
// each list holds its vectors interleaved in groups of kIvfGroupSize = 32 —
// within a group, dimension j of all 32 vectors is contiguous
// (group[j * 32 + lane]) — so one SIMD load serves 8 or 16 vectors at once
// and a GPU warp reads coalesced. The last group of a list is padded with
// zeros and row -1.
//
// Metrics: kL2 scans squared distances; kInnerProduct scans dot products
// against an inner-product quantizer; kCosine stores unit vectors, normalises
// queries, and trains spherical k-means.
//
// Example:
//   auto index = IvfFlatIndex::Build(res, Metric::kL2, data, n, dim, {.nlist = 1024});
//   (*index)->Search(res, queries, nq, /*k=*/10, /*nprobe=*/32, /*deleted=*/nullptr, rows, scores);
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kernels/flat_search.h"
#include "kernels/vector_index.h"

namespace quiver::kernels {

inline constexpr size_t kIvfGroupSize = 32;

struct IvfFlatBuildParams {
  /// Number of inverted lists (k-means centroids); clamped to the number of
  /// vectors. Default: 1024.
  uint32_t nlist = 1024;
  /// k-means iterations. Default: 20.
  uint32_t kmeans_iterations = 20;
  /// k-means trains on a sample of nlist * this many vectors (all of them if
  /// fewer). Default: 64.
  uint32_t train_points_per_list = 64;
  /// Seed of the sample and the k-means initialisation. Default: 1234.
  uint64_t seed = 1234;

  Status Validate() const;
};

class IvfFlatIndex final : public VectorIndex {
 public:
  struct List {
    /// groups * kIvfGroupSize * dim floats, interleaved as described above.
    std::vector<float> interleaved;
    /// Row number (position in the build input) per slot; -1 for padding.
    std::vector<int64_t> rows;
    size_t size = 0;  // real vectors (rows.size() rounded down past padding)
  };

  /// Trains the quantizer (FAISS k-means) and fills the lists.
  static Result<std::unique_ptr<IvfFlatIndex>> Build(const Resources& res, Metric metric, const float* vectors,
                                                     size_t n, size_t dim, const IvfFlatBuildParams& params);

  /// For each query, the k best rows among the `nprobe` nearest lists, best
  /// first, with the metric's scores (as FlatSearch). Rows whose bit is set in
  /// `deleted` (bit r of word r / 64; may be null) are skipped inside the scan,
  /// so k results still come back when enough live rows are probed. Missing
  /// slots hold row -1.
  Status Search(const Resources& res, const float* queries, size_t nq, size_t k, uint32_t nprobe,
                const uint64_t* deleted, int64_t* rows, float* scores) const;
  /// VectorIndex: the above with params.nprobe and base.deleted (the index
  /// holds its own copy of the vectors).
  Status Search(const Resources& res, const BaseView& base, const float* queries, size_t nq, size_t k,
                const IndexSearchParams& params, int64_t* rows, float* scores) const override {
    return Search(res, queries, nq, k, params.nprobe, base.deleted, rows, scores);
  }

  /// The index as bytes: magic "QVIVFFL1", format version, metric, sizes,
  /// centroids, lists, and a CRC-32 of all of it. The GPU path loads the same
  /// bytes. Layout in docs/storage.md.
  std::string Serialize() const override;

  /// Validates everything before trusting it — magic, version, metric,
  /// sizes against the byte count (before allocating), every row id in range
  /// and present exactly once, padding where padding belongs, checksum — and
  /// returns DATA_LOSS naming `what` (e.g. the file) on any mismatch.
  static Result<std::unique_ptr<IvfFlatIndex>> Deserialize(std::string_view bytes, const std::string& what);

  const char* kind() const override { return "IVF_FLAT"; }
  Metric metric() const override { return metric_; }
  size_t dim() const override { return dim_; }
  size_t size() const override { return n_; }
  size_t nlist() const { return lists_.size(); }
  const std::vector<float>& centroids() const { return centroids_; }
  const List& list(size_t i) const { return lists_[i]; }
  /// Bytes held by centroids and lists (vectors, padding, row ids).
  size_t MemoryBytes() const override;

 private:
  IvfFlatIndex() = default;
  Metric metric_ = Metric::kL2;
  size_t dim_ = 0;
  size_t n_ = 0;
  std::vector<float> centroids_;     // nlist x dim
  std::vector<float> centroid_norms_;  // squared norms, for the coarse search
  std::vector<List> lists_;
};

}  // namespace quiver::kernels
