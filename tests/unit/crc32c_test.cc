// CRC-32C: the functions RocksDB's WAL, backups and file checksums use in
// quiverd (storage/crc32c.h) against a bitwise reference, the standard check
// values, and RocksDB's own entry points.
#include "storage/crc32c.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace rocksdb::crc32c {
// RocksDB 7.8's util/crc32c.h (not installed); storage/db.cc defines them on x86-64.
uint32_t Extend(uint32_t crc, const char* data, size_t n);
uint32_t Crc32cCombine(uint32_t crc1, uint32_t crc2, size_t crc2len);
std::string IsFastCrc32Supported();
}  // namespace rocksdb::crc32c

namespace quiver::storage {
namespace {

// One bit at a time, straight from the definition (reflected, initial and
// final value all ones).
uint32_t BitwiseCrc32c(const std::string& bytes) {
  uint32_t reg = 0xFFFFFFFFu;
  for (unsigned char byte : bytes) {
    reg ^= byte;
    for (int bit = 0; bit < 8; ++bit) reg = (reg & 1) ? (reg >> 1) ^ 0x82F63B78u : reg >> 1;
  }
  return ~reg;
}

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

TEST(Crc32c, StandardCheckValues) {
  // The catalogue's check value, and RFC 3720's (iSCSI) examples.
  std::string ascending(32, '\0');
  std::string descending(32, '\0');
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<char>(i);
    descending[i] = static_cast<char>(31 - i);
  }
  const std::vector<std::pair<std::string, uint32_t>> cases = {
      {"123456789", 0xE3069283u},
      {std::string(32, '\0'), 0x8A9136AAu},
      {std::string(32, '\xFF'), 0x62A8AB43u},
      {ascending, 0x46DD794Eu},
      {descending, 0x113FDB5Cu},
      {"", 0u},
  };
  for (const auto& [bytes, want] : cases) {
    EXPECT_EQ(Crc32cExtend(0, bytes.data(), bytes.size()), want) << bytes.size() << " bytes";
    EXPECT_EQ(Crc32cExtendPortable(0, bytes.data(), bytes.size()), want) << bytes.size() << " bytes";
    EXPECT_EQ(BitwiseCrc32c(bytes), want) << bytes.size() << " bytes";
  }
}

TEST(Crc32c, EveryLengthAndAlignmentMatchesTheBitwiseReference) {
  std::mt19937_64 rng(7);
  const std::string buffer = RandomBytes(rng, 4096 + 64);
  for (size_t offset = 0; offset < 9; ++offset) {
    for (size_t n : {0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4095, 4096}) {
      const std::string bytes = buffer.substr(offset, n);
      const uint32_t want = BitwiseCrc32c(bytes);
      ASSERT_EQ(Crc32cExtend(0, buffer.data() + offset, n), want) << "offset " << offset << ", " << n << " bytes";
      ASSERT_EQ(Crc32cExtendPortable(0, buffer.data() + offset, n), want) << "offset " << offset << ", " << n;
    }
  }
}

TEST(Crc32c, ExtendingPieceByPieceEqualsTheWhole) {
  std::mt19937_64 rng(11);
  const std::string bytes = RandomBytes(rng, 100000);
  const uint32_t whole = Crc32cExtend(0, bytes.data(), bytes.size());
  ASSERT_EQ(whole, BitwiseCrc32c(bytes));
  for (int trial = 0; trial < 50; ++trial) {
    uint32_t crc = 0;
    size_t at = 0;
    while (at < bytes.size()) {
      const size_t n = std::min<size_t>(bytes.size() - at, rng() % 3000);
      crc = Crc32cExtend(crc, bytes.data() + at, n);
      at += n;
    }
    ASSERT_EQ(crc, whole) << "trial " << trial;
  }
}

TEST(Crc32c, CombineEqualsTheCrcOfTheConcatenation) {
  std::mt19937_64 rng(13);
  for (size_t len_b : {0, 1, 3, 8, 31, 32, 33, 1000, 65536, 1 << 20}) {
    const std::string a = RandomBytes(rng, 1 + rng() % 200);
    const std::string b = RandomBytes(rng, len_b);
    const uint32_t crc_a = Crc32cExtend(0, a.data(), a.size());
    const uint32_t crc_b = Crc32cExtend(0, b.data(), b.size());
    EXPECT_EQ(Crc32cCombine(crc_a, crc_b, len_b), BitwiseCrc32c(a + b)) << len_b << " bytes after";
  }
}

#if defined(__x86_64__)
// RocksDB's WAL, backups and file checksums call these entry points; in our
// x86-64 binaries they are ours (the archive's would say "Not supported on x86").
TEST(Crc32c, RocksDbsEntryPointsAreOurs) {
  EXPECT_NE(rocksdb::crc32c::IsFastCrc32Supported().find("Quiver"), std::string::npos)
      << rocksdb::crc32c::IsFastCrc32Supported();
  std::mt19937_64 rng(17);
  const std::string a = RandomBytes(rng, 777);
  const std::string b = RandomBytes(rng, 12345);
  const uint32_t crc_a = rocksdb::crc32c::Extend(0, a.data(), a.size());
  EXPECT_EQ(crc_a, BitwiseCrc32c(a));
  EXPECT_EQ(rocksdb::crc32c::Extend(crc_a, b.data(), b.size()), BitwiseCrc32c(a + b));
  EXPECT_EQ(rocksdb::crc32c::Crc32cCombine(crc_a, rocksdb::crc32c::Extend(0, b.data(), b.size()), b.size()),
            BitwiseCrc32c(a + b));
  EXPECT_EQ(Crc32cUsesHardware(), static_cast<bool>(__builtin_cpu_supports("sse4.2")));
}
#endif

}  // namespace
}  // namespace quiver::storage
