// RemapVector: contents kept through growth on the heap, across into a
// mapping and by mremap within it; the rows of a large array are not copied.
#include "common/remap_vector.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <cstdint>
#include <algorithm>
#include <numeric>
#include <vector>

namespace quiver {
namespace {

constexpr size_t kMapFloats = RemapVector<float>::kMapBytes / sizeof(float);

TEST(RemapVector, AppendsKeepEveryValueThroughEveryKindOfGrowth) {
  RemapVector<uint32_t> v;
  std::vector<uint32_t> want;
  uint32_t next = 0;
  // Batches of odd sizes, from a few values on the heap to 16 MiB mapped.
  for (size_t batch = 7; want.size() < 4 * kMapFloats; batch = batch * 3 / 2 + 1) {
    std::vector<uint32_t> b(batch);
    std::iota(b.begin(), b.end(), next);
    next += static_cast<uint32_t>(batch);
    v.append(b.data(), b.data() + b.size());
    want.insert(want.end(), b.begin(), b.end());
    ASSERT_EQ(v.size(), want.size());
    ASSERT_GE(v.capacity(), v.size());
  }
  EXPECT_TRUE(std::equal(v.begin(), v.end(), want.begin(), want.end()));
}

TEST(RemapVector, ResizeZeroFillsAndShrinkingKeepsTheFront) {
  RemapVector<float> v;
  v.resize(10);
  for (float x : v) EXPECT_EQ(x, 0.0f);
  v[3] = 3;
  v.resize(2 * kMapFloats);  // into a mapping
  EXPECT_EQ(v[3], 3.0f);
  EXPECT_EQ(v[2 * kMapFloats - 1], 0.0f);
  v[2 * kMapFloats - 1] = 7;
  v.resize(4);
  EXPECT_EQ(v.size(), 4u);
  EXPECT_EQ(v[3], 3.0f);
  v.resize(2 * kMapFloats);  // the values beyond the old size are zero again
  EXPECT_EQ(v[2 * kMapFloats - 1], 0.0f);
}

TEST(RemapVector, MovedFromIsEmptyAndTheTargetOwnsTheArray) {
  RemapVector<float> a;
  a.resize(3 * kMapFloats);
  a[5] = 5;
  const float* where = a.data();
  RemapVector<float> b(std::move(a));
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(b.data(), where);
  EXPECT_EQ(b[5], 5.0f);
  RemapVector<float> c;
  c.resize(10);
  c = std::move(b);
  EXPECT_EQ(c.data(), where);
  EXPECT_EQ(c.size(), 3 * kMapFloats);
}

// Growth inside a mapping moves page table entries, not bytes: the pages
// already written are still the same pages, so none of them faults again.
TEST(RemapVector, GrowingAMappedArrayDoesNotTouchItsRows) {
  RemapVector<float> v;
  v.resize(8 * kMapFloats);  // 32 MiB, written
  for (size_t i = 0; i < v.size(); i += 1024) v[i] = static_cast<float>(i);
  auto minor_faults = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
  };
  const long before = minor_faults();
  v.reserve(64 * kMapFloats);  // 256 MiB
  const long growth_faults = minor_faults() - before;
  // A copy would fault in the 8,192 pages it writes.
  EXPECT_LT(growth_faults, 100) << "growing faulted " << growth_faults << " pages";
  for (size_t i = 0; i < 8 * kMapFloats; i += 1024) ASSERT_EQ(v[i], static_cast<float>(i));
}

}  // namespace
}  // namespace quiver
