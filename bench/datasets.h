// Benchmark datasets: the ann-benchmarks HDF5 format (datasets "train",
// "test", optional "neighbors", root attribute "distance"), read with every
// shape checked. Lives in bench/ so quiverd never links HDF5.
//
// Example:
//   QUIVER_ASSIGN_OR_RETURN(auto d, bench::ReadAnnBenchmarksHdf5("sift-128-euclidean.hdf5"));
//   index.Build(d.train.data.data(), d.train.rows, d.train.cols);
#pragma once

#include <string>

#include "common/status.h"
#include "common/vector_file.h"

namespace quiver::bench {

struct AnnDataset {
  FloatMatrix train;    // base vectors
  FloatMatrix test;     // queries
  IntMatrix neighbors;  // ground-truth ids per query, best first; rows == 0 if absent
  std::string distance;  // "euclidean", "angular", "dot", ... ("" if absent)
};

/// Reads an ann-benchmarks file; `max_train` > 0 keeps only the first rows of
/// train (ground truth then no longer applies and is dropped). Float64 data is
/// converted. INVALID_ARGUMENT naming the file and dataset for a missing
/// dataset, a rank other than 2, or mismatched dimensions.
Result<AnnDataset> ReadAnnBenchmarksHdf5(const std::string& path, size_t max_train = 0);

/// Writes the same layout (used by tests and to export synthetic sets).
Status WriteAnnBenchmarksHdf5(const std::string& path, const AnnDataset& dataset);

}  // namespace quiver::bench
