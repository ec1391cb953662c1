// Device-side select-k: one thread block per row picks the k smallest 64-bit
// keys of that row. Every score is first turned into a key
//
//   key = OrderedBits(score_where_smaller_is_better) << 32 | row
//
// so one unsigned comparison orders by score and breaks exact ties by the
// lower row, the same order the CPU path and the float64 reference use, and
// the k winners carry their rows with them.
//
// The block scans its row once. Each thread tests its element against the
// current k-th best key (a shared threshold) and appends the few that beat it
// to a shared buffer; when the buffer could overflow, the block sorts it
// (bitonic, in shared memory), keeps the best k and tightens the threshold. On
// typical data almost every element fails the test after the first few
// chunks, so the scan runs at memory bandwidth; on adversarial data
// (descending input) it degrades to a sort per chunk but stays exact. The
// buffer holds k + kBlock * kItems keys rounded up to a power of two: 16 KiB
// for k = 1,024, so one algorithm covers every k the service accepts and there
// is no separate radix path.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace quiver::kernels::gpu {

/// The key of an empty slot (no row); sorts after every real key.
constexpr uint64_t kEmptyKey = ~0ull;

/// Order-preserving map of a float to uint32 (NaN is mapped past +inf by the
/// caller, never passed here).
__device__ __forceinline__ uint32_t OrderedBits(float f) {
  if (f == 0.0f) f = 0.0f;  // -0.0 and +0.0 compare equal
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__host__ __device__ __forceinline__ float FromOrderedBits(uint32_t u) {
  const uint32_t bits = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
#ifdef __CUDA_ARCH__
  return __uint_as_float(bits);
#else
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

/// Key of `score` (smaller is better) at `row`; NaN scores are never selected.
__device__ __forceinline__ uint64_t MakeKey(float score, uint32_t row) {
  if (isnan(score)) return kEmptyKey;
  return (static_cast<uint64_t>(OrderedBits(score)) << 32) | row;
}

__host__ __device__ __forceinline__ uint32_t KeyRow(uint64_t key) { return static_cast<uint32_t>(key & 0xffffffffu); }
__host__ __device__ __forceinline__ float KeyScore(uint64_t key) {
  return FromOrderedBits(static_cast<uint32_t>(key >> 32));
}

/// A selected key as a result: its row (-1 for kEmptyKey) and its value
/// (the metric's worst, +inf or -inf, for kEmptyKey); with larger_is_better
/// the key held the negated value (IP, cosine, max-select).
__host__ __device__ __forceinline__ void DecodeKey(uint64_t key, bool larger_is_better, int64_t* row, float* value) {
  if (key == kEmptyKey) {
    *row = -1;
    *value = larger_is_better ? -INFINITY : INFINITY;
  } else {
    *row = KeyRow(key);
    *value = larger_is_better ? -KeyScore(key) : KeyScore(key);
  }
}

/// Sorts buf[0, n) ascending; n is a power of two. Called by every thread of
/// the block; ends with a barrier.
template <int kBlock>
__device__ void BlockBitonicSort(uint64_t* buf, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < n / 2; t += kBlock) {
        const int lo = 2 * t - (t & (stride - 1));
        const int hi = lo + stride;
        const bool ascending = (lo & size) == 0;
        const uint64_t a = buf[lo];
        const uint64_t b = buf[hi];
        if ((a > b) == ascending) {
          buf[lo] = b;
          buf[hi] = a;
        }
      }
      __syncthreads();
    }
  }
}

/// Smallest power of two >= n (n >= 1).
__host__ __device__ constexpr int NextPow2(int n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

/// Shared buffer length for k winners with kBlock threads of kItems each.
__host__ __device__ constexpr int SelectBufferLength(int k, int block, int items) { return NextPow2(k + block * items); }

/// For row blockIdx.x: out[row * out_ld + i], i < k, = the k smallest of
/// keys(row, j), j < keys.Length(row, len), ascending; kEmptyKey pads rows
/// with fewer than k keys below kEmptyKey. Dynamic shared memory:
/// SelectBufferLength(k, kBlock, kItems) * 8 bytes, passed as `cap`, then
/// the scratch the key function asked for: before the scan every thread calls
/// keys.Prepare(row, scratch) on its copy of the key function (a lookup
/// table fills the scratch together, a no-op for most), then the block syncs.
template <int kBlock, int kItems, class KeyFn>
__global__ void __launch_bounds__(kBlock)
    SelectKKernel(KeyFn row_keys, int len, int k, int cap, uint64_t* out, size_t out_ld) {
  extern __shared__ uint64_t buf[];
  __shared__ int count;
  __shared__ uint64_t threshold;
  const int row = blockIdx.x;
  KeyFn keys = row_keys;
  keys.Prepare(row, reinterpret_cast<float*>(buf + cap));
  len = keys.Length(row, len);  // rows of different lengths (IVF lists)
  for (int i = threadIdx.x; i < cap; i += kBlock) buf[i] = kEmptyKey;
  if (threadIdx.x == 0) {
    count = 0;
    threshold = kEmptyKey;
  }
  __syncthreads();
  constexpr int kChunk = kBlock * kItems;
  for (int start = 0; start < len; start += kChunk) {
    const uint64_t thr = threshold;
#pragma unroll
    for (int it = 0; it < kItems; ++it) {
      const int j = start + it * kBlock + threadIdx.x;  // coalesced across the block
      if (j < len) {
        const uint64_t key = keys(row, j);
        if (key < thr) buf[atomicAdd(&count, 1)] = key;
      }
    }
    __syncthreads();
    // Everyone reads count before anyone appends again, so the branch below is
    // taken by the whole block or by none of it.
    const int filled = count;
    __syncthreads();
    if (filled > cap - kChunk) {
      BlockBitonicSort<kBlock>(buf, cap);
      if (threadIdx.x == 0) {
        count = k;  // filled > cap - kChunk >= k
        threshold = buf[k - 1];
      }
      for (int i = k + threadIdx.x; i < cap; i += kBlock) buf[i] = kEmptyKey;
      __syncthreads();
    }
  }
  BlockBitonicSort<kBlock>(buf, cap);
  for (int i = threadIdx.x; i < k; i += kBlock) out[static_cast<size_t>(row) * out_ld + i] = buf[i];
}

/// Keys already made (candidates of earlier passes), row-major with `ld`
/// keys per row.
struct StoredKeys {
  const uint64_t* keys;
  size_t ld;
  __device__ void Prepare(int, float*) {}
  __device__ int Length(int, int len) const { return len; }
  __device__ uint64_t operator()(int row, int j) const { return keys[static_cast<size_t>(row) * ld + j]; }
};

}  // namespace quiver::kernels::gpu
