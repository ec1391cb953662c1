// Bounded top-k selection shared by the CPU kernels (internal header).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace quiver::kernels {

inline constexpr float kInf = std::numeric_limits<float>::infinity();

// Bounded max-heap on (key, row): the root is the worst kept candidate.
// Keys are "smaller is better"; ties go to the lower row.
class TopK {
 public:
  TopK(float* keys, int64_t* rows, size_t k) : keys_(keys), rows_(rows), k_(k) {}

  float threshold() const { return size_ < k_ ? kInf : keys_[0]; }

  void Push(float key, int64_t row) {
    if (size_ < k_) {
      size_t i = size_++;
      while (i > 0) {
        const size_t parent = (i - 1) / 2;
        if (!Worse(key, row, keys_[parent], rows_[parent])) break;
        keys_[i] = keys_[parent];
        rows_[i] = rows_[parent];
        i = parent;
      }
      keys_[i] = key;
      rows_[i] = row;
      return;
    }
    if (!Worse(keys_[0], rows_[0], key, row)) return;
    size_t i = 0;
    for (;;) {
      const size_t l = 2 * i + 1;
      if (l >= k_) break;
      size_t child = l;
      if (l + 1 < k_ && Worse(keys_[l + 1], rows_[l + 1], keys_[l], rows_[l])) child = l + 1;
      if (!Worse(keys_[child], rows_[child], key, row)) break;
      keys_[i] = keys_[child];
      rows_[i] = rows_[child];
      i = child;
    }
    keys_[i] = key;
    rows_[i] = row;
  }

  size_t size() const { return size_; }

  /// Sorts the kept entries best first and pads the rest with (inf, -1).
  void Finish() {
    std::vector<std::pair<float, int64_t>> v(size_);
    for (size_t i = 0; i < size_; ++i) v[i] = {keys_[i], rows_[i]};
    std::sort(v.begin(), v.end());
    for (size_t i = 0; i < k_; ++i) {
      keys_[i] = i < v.size() ? v[i].first : kInf;
      rows_[i] = i < v.size() ? v[i].second : -1;
    }
  }

 private:
  // (a) ranks after (b): larger key, or equal key and larger row.
  static bool Worse(float ka, int64_t ra, float kb, int64_t rb) { return ka > kb || (ka == kb && ra > rb); }

  float* keys_;
  int64_t* rows_;
  size_t k_;
  size_t size_ = 0;
};

}  // namespace quiver::kernels
