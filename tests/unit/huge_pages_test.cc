// HugePageAllocator: large arrays on 2 MiB boundaries and advised huge
// pages, contents kept as a vector grows and shrinks through the threshold.
#include "common/huge_pages.h"

#include <gtest/gtest.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>

namespace quiver {
namespace {

TEST(HugePageVector, LargeArraysStartOnAHugePageBoundary) {
  HugePageVector<uint32_t> v(3 * (HugePageAllocator<uint32_t>::kHugePage / sizeof(uint32_t)) + 5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % HugePageAllocator<uint32_t>::kHugePage, 0u);
  std::iota(v.begin(), v.end(), 0u);
  EXPECT_EQ(v.back(), v.size() - 1);
}

// The mapping holding `p`, from /proc/self/smaps: its VmFlags line ("hg" =
// advised MADV_HUGEPAGE), or "" if no mapping holds it.
std::string VmFlagsOf(const void* p) {
  std::ifstream smaps("/proc/self/smaps");
  const auto at = reinterpret_cast<uintptr_t>(p);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " ", &lo, &hi) == 2) {
      inside = lo <= at && at < hi;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

TEST(HugePageVector, LargeArraysAreAdvisedHugePagesAndSmallOnesAreNot) {
  if (!std::filesystem::exists("/sys/kernel/mm/transparent_hugepage/enabled")) {
    GTEST_SKIP() << "this kernel has no transparent huge pages: the advice is refused and nothing is to check";
  }
  HugePageVector<float> large(HugePageAllocator<float>::kHugePage / sizeof(float) + 1, 1.0f);
  const std::string flags = VmFlagsOf(large.data());
  ASSERT_FALSE(flags.empty());
  EXPECT_NE(flags.find(" hg"), std::string::npos) << flags;
  HugePageVector<float> small(1000, 1.0f);  // from operator new: the heap is not advised
  EXPECT_EQ(VmFlagsOf(small.data()).find(" hg"), std::string::npos);
}

TEST(HugePageVector, GrowingPastTheThresholdMovesTheContentsOntoAlignedStorageAndBack) {
  constexpr size_t kHuge = HugePageAllocator<uint8_t>::kHugePage;
  HugePageVector<uint8_t> v;
  for (size_t i = 0; i < 5 * kHuge; ++i) v.push_back(static_cast<uint8_t>(i * 7));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % kHuge, 0u);
  for (size_t i = 0; i < v.size(); i += 4099) ASSERT_EQ(v[i], static_cast<uint8_t>(i * 7)) << i;
  v.resize(100);
  v.shrink_to_fit();
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], static_cast<uint8_t>(i * 7)) << i;
  HugePageVector<uint8_t> copy = v;
  EXPECT_EQ(copy, v);
}

}  // namespace
}  // namespace quiver
