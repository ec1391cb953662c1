// Byte-level helpers for on-disk records.
//
// Keys are big-endian so RocksDB's bytewise order is numeric order. Record
// values carry a checksum (the CRC-32 of zlib and gzip, computed by
// libdeflate) so every read can be validated.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace quiver {

void PutFixed64BE(std::string* dst, uint64_t v);
void PutFixed32BE(std::string* dst, uint32_t v);
/// Reads 8 big-endian bytes; `src` must hold at least 8.
uint64_t DecodeFixed64BE(const char* src);
uint32_t DecodeFixed32BE(const char* src);

void PutFixed32LE(std::string* dst, uint32_t v);
void PutFixed64LE(std::string* dst, uint64_t v);
uint32_t DecodeFixed32LE(const char* src);
uint64_t DecodeFixed64LE(const char* src);

/// CRC-32 (zlib polynomial and values) of `data`.
uint32_t Checksum(std::string_view data);
/// Continues a checksum: ChecksumExtend(Checksum(a), b) == Checksum(a + b).
uint32_t ChecksumExtend(uint32_t crc, std::string_view data);

/// Renders a binary key for error messages: printable bytes as-is, others as \xNN.
std::string EscapeKey(std::string_view key);

}  // namespace quiver
