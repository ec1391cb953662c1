#include "storage/records.h"

#include <cstring>

#include "common/encoding.h"

namespace quiver::storage {
namespace {

// Layout shared by all values: [crc32 LE][version u8][body...], crc over
// version+body. Built in place (a placeholder for the checksum, patched at
// the end) so large records are copied once.
std::string StartRecord(size_t body_bytes) {
  std::string out;
  out.reserve(5 + body_bytes);
  out.append(4, '\0');
  out.push_back(static_cast<char>(kRecordVersion));
  return out;
}

std::string Seal(std::string record) {
  const uint32_t crc = Checksum(std::string_view(record).substr(4));
  std::memcpy(record.data(), &crc, 4);
  return record;
}

// Returns the body (after the version byte) or a DATA_LOSS naming `key`.
Result<std::string_view> Unseal(std::string_view key, std::string_view value, const char* what) {
  if (value.size() < 5) {
    return Status::Corruption(std::string(what) + " record at key '" + EscapeKey(key) + "' is truncated (" +
                              std::to_string(value.size()) + " bytes)");
  }
  const uint32_t stored = DecodeFixed32LE(value.data());
  const std::string_view rest = value.substr(4);
  if (Checksum(rest) != stored) {
    return Status::Corruption(std::string(what) + " record at key '" + EscapeKey(key) + "' fails its checksum");
  }
  if (static_cast<uint8_t>(rest[0]) != kRecordVersion) {
    return Status::Corruption(std::string(what) + " record at key '" + EscapeKey(key) + "' has unknown version " +
                              std::to_string(static_cast<uint8_t>(rest[0])));
  }
  return rest.substr(1);
}


}  // namespace

std::string LogKey(uint64_t index) {
  std::string k;
  PutFixed64BE(&k, index);
  return k;
}

std::string PointKey(uint64_t collection_id, uint64_t point_id) {
  std::string k;
  PutFixed64BE(&k, collection_id);
  PutFixed64BE(&k, point_id);
  return k;
}

std::string CollectionPrefix(uint64_t collection_id) {
  std::string k;
  PutFixed64BE(&k, collection_id);
  return k;
}

std::string CollectionMetaKey(uint64_t collection_id) {
  std::string k(kCollectionMetaPrefix);
  PutFixed64BE(&k, collection_id);
  return k;
}

void EncodeLogEntryHeader(const LogEntry& e, char header[kLogEntryHeaderBytes]) {
  header[4] = static_cast<char>(kRecordVersion);
  std::string term;
  PutFixed64LE(&term, e.term);
  std::memcpy(header + 5, term.data(), 8);
  header[13] = static_cast<char>(e.type);
  const uint32_t crc = ChecksumExtend(ChecksumExtend(0, std::string_view(header + 4, 10)), e.data);
  std::memcpy(header, &crc, 4);
}

std::string EncodeLogEntry(const LogEntry& e) {
  char header[kLogEntryHeaderBytes];
  EncodeLogEntryHeader(e, header);
  std::string out;
  out.reserve(kLogEntryHeaderBytes + e.data.size());
  out.append(header, kLogEntryHeaderBytes);
  out += e.data;
  return out;
}

Result<LogEntry> DecodeLogEntry(std::string_view key, uint64_t index, std::string_view value) {
  QUIVER_ASSIGN_OR_RETURN(std::string_view body, Unseal(key, value, "log entry"));
  if (body.size() < 9) return Status::Corruption("log entry at key '" + EscapeKey(key) + "' has a short header");
  const uint8_t type = static_cast<uint8_t>(body[8]);
  if (type > static_cast<uint8_t>(EntryType::kConfChange)) {
    return Status::Corruption("log entry at key '" + EscapeKey(key) + "' has unknown type " + std::to_string(type));
  }
  LogEntry e;
  e.index = index;
  e.term = DecodeFixed64LE(body.data());
  e.type = static_cast<EntryType>(type);
  e.data = EntryData(body.substr(9));
  return e;
}

std::string EncodeHardState(const HardState& hs) {
  std::string body = StartRecord(24);
  PutFixed64LE(&body, hs.term);
  PutFixed64LE(&body, hs.vote);
  PutFixed64LE(&body, hs.commit);
  return Seal(std::move(body));
}

Result<HardState> DecodeHardState(std::string_view value) {
  QUIVER_ASSIGN_OR_RETURN(std::string_view body, Unseal(kHardStateKey, value, "hard state"));
  if (body.size() != 24) return Status::Corruption("hard state record at key 'raft/hard_state' has wrong size");
  return HardState{DecodeFixed64LE(body.data()), DecodeFixed64LE(body.data() + 8), DecodeFixed64LE(body.data() + 16)};
}

std::string EncodeU64Pair(uint64_t a, uint64_t b) {
  std::string body = StartRecord(24);
  PutFixed64LE(&body, a);
  PutFixed64LE(&body, b);
  return Seal(std::move(body));
}

Result<std::pair<uint64_t, uint64_t>> DecodeU64Pair(std::string_view key, std::string_view value) {
  QUIVER_ASSIGN_OR_RETURN(std::string_view body, Unseal(key, value, "metadata"));
  if (body.size() != 16) return Status::Corruption("metadata record at key '" + EscapeKey(key) + "' has wrong size");
  return std::pair<uint64_t, uint64_t>{DecodeFixed64LE(body.data()), DecodeFixed64LE(body.data() + 8)};
}

std::string EncodeVector(std::span<const float> v) {
  std::string body = StartRecord(4 + v.size_bytes());
  PutFixed32LE(&body, static_cast<uint32_t>(v.size()));
  body.append(reinterpret_cast<const char*>(v.data()), v.size_bytes());
  return Seal(std::move(body));
}

Status DecodeVector(std::string_view key, std::string_view value, uint32_t dim, float* out) {
  QUIVER_ASSIGN_OR_RETURN(std::string_view body, Unseal(key, value, "vector"));
  if (body.size() < 4) return Status::Corruption("vector record at key '" + EscapeKey(key) + "' has a short header");
  const uint32_t stored_dim = DecodeFixed32LE(body.data());
  if (stored_dim != dim || body.size() != 4 + size_t{dim} * sizeof(float)) {
    return Status::Corruption("vector record at key '" + EscapeKey(key) + "' holds dimension " +
                              std::to_string(stored_dim) + " (" + std::to_string(body.size()) +
                              " bytes), collection dimension is " + std::to_string(dim));
  }
  std::memcpy(out, body.data() + 4, size_t{dim} * sizeof(float));
  return Status::Ok();
}

void EncodeVectorHeader(std::span<const float> v, char header[kVectorHeaderBytes]) {
  const uint32_t dim = static_cast<uint32_t>(v.size());
  header[4] = static_cast<char>(kRecordVersion);
  std::memcpy(header + 5, &dim, 4);
  uint32_t crc = ChecksumExtend(0, std::string_view(header + 4, 5));
  crc = ChecksumExtend(crc, std::string_view(reinterpret_cast<const char*>(v.data()), v.size_bytes()));
  std::memcpy(header, &crc, 4);
}

std::string EncodeBlob(std::string_view bytes) {
  std::string body = StartRecord(bytes.size());
  body += bytes;
  return Seal(std::move(body));
}

Result<std::string_view> DecodeBlob(std::string_view key, std::string_view value) {
  return Unseal(key, value, "blob");
}

}  // namespace quiver::storage
