// Readers and writers for the vector files users and benchmarks hand us:
// .fvecs / .ivecs / .bvecs (the TEXMEX format: per row an int32 count, then
// the values) and NumPy .npy (float32 or int32, C order, 1-D or 2-D).
// Every size is validated; a malformed file is INVALID_ARGUMENT naming it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace quiver {

struct FloatMatrix {
  size_t rows = 0;
  size_t cols = 0;
  std::vector<float> data;  // rows x cols, row-major
  const float* row(size_t i) const { return data.data() + i * cols; }
};

struct IntMatrix {
  size_t rows = 0;
  size_t cols = 0;
  std::vector<int32_t> data;
};

/// Reads .fvecs, .bvecs (bytes widened to float) or .npy (float32), chosen by
/// extension. At most `max_rows` rows (0 = all).
Result<FloatMatrix> ReadVectorFile(const std::string& path, size_t max_rows = 0);

/// Reads .ivecs (e.g. ground-truth neighbour ids).
Result<IntMatrix> ReadIvecs(const std::string& path, size_t max_rows = 0);

Status WriteFvecs(const std::string& path, const FloatMatrix& m);
Status WriteIvecs(const std::string& path, const IntMatrix& m);
/// 2-D float32 .npy, C order.
Status WriteNpy(const std::string& path, const FloatMatrix& m);

}  // namespace quiver
