// CRC-32C (Castagnoli), the checksum of RocksDB's WAL records, computed with
// the CPU's crc32 instruction.
//
// Debian's librocksdb is a portable build: its crc32c::Extend takes the
// table-driven path (Slow_CRC32) even where the CPU has SSE4.2, and every
// Raft log entry goes through the WAL, so that table walk was 23% of a Raft
// driver's CPU in quiver-bench cluster. storage/db.cc therefore defines
// RocksDB's three crc32c functions itself on x86-64, forwarding here; the static
// archive's crc32c object resolves nothing then and is never linked, and
// RocksDB's WAL writes and reads, backups and file checksums all use these.
// They compute the same CRC-32C (tests/unit/crc32c_test.cc checks them against
// a bitwise reference and the standard check values), so WAL files written
// by the archive's code read back unchanged.
#pragma once

#include <cstddef>
#include <cstdint>

namespace quiver::storage {

/// The CRC-32C of the bytes whose CRC-32C is `crc`, followed by `data[0, n)`
/// (RocksDB's crc32c::Extend; Crc32cExtend(0, d, n) is the CRC of d alone).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n);

/// The CRC-32C of A followed by B, given crc_a = CRC(A), crc_b = CRC(B) and
/// len_b = |B| (RocksDB's crc32c::Crc32cCombine).
uint32_t Crc32cCombine(uint32_t crc_a, uint32_t crc_b, size_t len_b);

/// Whether Crc32cExtend uses the crc32 instruction (SSE4.2, checked at start-up)
/// rather than the portable table.
bool Crc32cUsesHardware();

/// The portable table walk, whatever the CPU; for tests and as the fallback.
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n);

}  // namespace quiver::storage
