#include "common/encoding.h"

#include <libdeflate.h>

#include <cstring>

namespace quiver {

void PutFixed64BE(std::string* dst, uint64_t v) {
  char buf[8];
  for (int i = 7; i >= 0; --i) { buf[i] = static_cast<char>(v & 0xff); v >>= 8; }
  dst->append(buf, 8);
}

void PutFixed32BE(std::string* dst, uint32_t v) {
  char buf[4];
  for (int i = 3; i >= 0; --i) { buf[i] = static_cast<char>(v & 0xff); v >>= 8; }
  dst->append(buf, 4);
}

uint64_t DecodeFixed64BE(const char* src) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(src[i]);
  return v;
}

uint32_t DecodeFixed32BE(const char* src) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(src[i]);
  return v;
}

// Little-endian helpers: x86-64 and aarch64 hosts are little-endian; memcpy keeps
// the reads free of alignment and aliasing problems.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "Quiver assumes a little-endian host");

void PutFixed32LE(std::string* dst, uint32_t v) { dst->append(reinterpret_cast<const char*>(&v), 4); }
void PutFixed64LE(std::string* dst, uint64_t v) { dst->append(reinterpret_cast<const char*>(&v), 8); }
uint32_t DecodeFixed32LE(const char* src) { uint32_t v; std::memcpy(&v, src, 4); return v; }
uint64_t DecodeFixed64LE(const char* src) { uint64_t v; std::memcpy(&v, src, 8); return v; }

uint32_t Checksum(std::string_view data) { return ChecksumExtend(0, data); }

uint32_t ChecksumExtend(uint32_t initial, std::string_view data) {
  // libdeflate's CRC-32 is zlib's function (same polynomial and values) with
  // carry-less-multiply folding: several times faster on the segment files
  // and vector records read at every start. It returns 0, not `initial`,
  // for a null buffer, which an empty string_view may have.
  if (data.empty()) return initial;
  return libdeflate_crc32(initial, data.data(), data.size());
}

std::string EscapeKey(std::string_view key) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : key) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  return out;
}

}  // namespace quiver
