// HugePageAllocator: large arrays on 2 MiB boundaries, contents kept as a
// vector grows and shrinks through the small/large threshold.
#include "common/huge_pages.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>

namespace quiver {
namespace {

TEST(HugePageVector, LargeArraysStartOnAHugePageBoundary) {
  HugePageVector<uint32_t> v(3 * (HugePageAllocator<uint32_t>::kHugePage / sizeof(uint32_t)) + 5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % HugePageAllocator<uint32_t>::kHugePage, 0u);
  std::iota(v.begin(), v.end(), 0u);
  EXPECT_EQ(v.back(), v.size() - 1);
}

TEST(HugePageVector, ContentsSurviveGrowingPastTheThresholdAndShrinkingBelowIt) {
  HugePageVector<uint8_t> v;
  for (size_t i = 0; i < 5 * HugePageAllocator<uint8_t>::kHugePage; ++i) v.push_back(static_cast<uint8_t>(i * 7));
  for (size_t i = 0; i < v.size(); i += 4099) ASSERT_EQ(v[i], static_cast<uint8_t>(i * 7)) << i;
  v.resize(100);
  v.shrink_to_fit();
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], static_cast<uint8_t>(i * 7)) << i;
  HugePageVector<uint8_t> copy = v;
  EXPECT_EQ(copy, v);
}

}  // namespace
}  // namespace quiver
