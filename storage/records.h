// Encodings of every record Quiver stores, with validation on decode.
//
// Each value starts with a CRC-32 of the rest and a one-byte format version,
// so a torn or bit-flipped record is reported as DATA_LOSS naming its key
// instead of being misread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/status.h"
#include "storage/log_store.h"

namespace quiver::storage {

inline constexpr uint8_t kRecordVersion = 1;

// ---- keys ----
std::string LogKey(uint64_t index);
std::string PointKey(uint64_t collection_id, uint64_t point_id);
/// [collection_id, collection_id + 1): the range of one collection's points.
std::string CollectionPrefix(uint64_t collection_id);
std::string CollectionMetaKey(uint64_t collection_id);
inline constexpr std::string_view kHardStateKey = "raft/hard_state";
inline constexpr std::string_view kLogCompactedKey = "raft/log_compacted";
inline constexpr std::string_view kSnapshotRecordKey = "raft/snapshot";
inline constexpr std::string_view kClusterIdKey = "raft/cluster_id";
inline constexpr std::string_view kInstallRecordKey = "raft/snapshot_install";
inline constexpr std::string_view kPeerAddressesKey = "raft/peer_addresses";
inline constexpr std::string_view kAppliedIndexKey = "applied_index";
inline constexpr std::string_view kCollectionMetaPrefix = "collection/";
// One record per client that sent request ids: "request/<client id>".
inline constexpr std::string_view kRequestRecordPrefix = "request/";

// ---- values ----
std::string EncodeLogEntry(const LogEntry& e);
/// The record EncodeLogEntry writes is this header followed by e.data, so a
/// batch of vectors can be stored from where it is (rocksdb::SliceParts)
/// instead of being copied into one string first.
inline constexpr size_t kLogEntryHeaderBytes = 14;
void EncodeLogEntryHeader(const LogEntry& e, char header[kLogEntryHeaderBytes]);
/// `key` is only used in the error message.
Result<LogEntry> DecodeLogEntry(std::string_view key, uint64_t index, std::string_view value);

std::string EncodeHardState(const HardState& hs);
Result<HardState> DecodeHardState(std::string_view value);

/// A pair of uint64 (applied index; compaction point's index and term).
std::string EncodeU64Pair(uint64_t a, uint64_t b);
Result<std::pair<uint64_t, uint64_t>> DecodeU64Pair(std::string_view key, std::string_view value);

std::string EncodeVector(std::span<const float> v);
/// The record EncodeVector would produce is this header followed by the raw
/// floats: lets a writer hand both pieces to RocksDB without a copy.
inline constexpr size_t kVectorHeaderBytes = 9;
void EncodeVectorHeader(std::span<const float> v, char header[kVectorHeaderBytes]);
/// Checks checksum and that the stored dimension equals `dim`; copies into `out`.
Status DecodeVector(std::string_view key, std::string_view value, uint32_t dim, float* out);

/// Opaque bytes (payloads, collection metadata) with checksum and version.
std::string EncodeBlob(std::string_view bytes);
Result<std::string_view> DecodeBlob(std::string_view key, std::string_view value);

}  // namespace quiver::storage
