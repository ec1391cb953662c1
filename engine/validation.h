// Validation rules shared by the service (before a write is proposed) and the
// engine (when it is applied), so a rule lives in exactly one place.
// Every error is INVALID_ARGUMENT (or UNIMPLEMENTED) with a message naming the
// offending field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"
#include "quiver/v1/collections.pb.h"
#include "quiver/v1/points.pb.h"

namespace quiver::engine {

inline constexpr uint32_t kMaxDimension = 4096;
inline constexpr size_t kMaxCollectionNameLength = 64;
inline constexpr uint32_t kMinSegmentPoints = 64;
inline constexpr uint32_t kMaxSegmentPoints = 10'000'000;
inline constexpr uint32_t kDefaultSegmentPoints = 100'000;
inline constexpr uint32_t kMaxNlist = 65536;
inline constexpr uint32_t kMinGraphDegree = 4;
inline constexpr uint32_t kMaxGraphDegree = 256;
inline constexpr uint32_t kMaxItopk = 4096;
inline constexpr uint32_t kMaxSearchWidth = 64;
inline constexpr uint32_t kMaxRefineFactor = 64;
inline constexpr int kMaxIndexedPayloadFields = 32;
inline constexpr size_t kMaxPayloadKeyBytes = 256;

/// 1..64 characters of [A-Za-z0-9_-], starting with a letter or digit.
Status ValidateCollectionName(std::string_view name, std::string_view field = "name");

/// Name, dimension 1..4096, metric set, segment size, indexed payload fields,
/// index type known and its parameters in range; index types not served yet (IVF_PQ, GRAPH) are
/// UNIMPLEMENTED. An unspecified index type means FLAT.
Status ValidateCollectionConfig(const quiver::v1::CollectionConfig& config);

/// Per-request search settings within their bounds (0 = default).
Status ValidateSearchParams(const quiver::v1::SearchParams& params);

/// The name of a request field for error messages, rendered only when one is
/// written: "points[7].vector" is {"points", 7, ".vector"}. Validating each of
/// the thousand points of an Upsert must not build a thousand names.
struct FieldName {
  FieldName(const char* whole) : name(whole) {}  // NOLINT: a plain name converts
  FieldName(std::string_view whole) : name(whole) {}  // NOLINT
  FieldName(std::string_view array, size_t index, std::string_view suffix)
      : name(array), index(static_cast<int64_t>(index)), suffix(suffix) {}
  std::string str() const;

  std::string_view name;
  int64_t index = -1;  // -1: not an array element
  std::string_view suffix;
};

/// Every float finite and the count equal to `dimension`.
Status ValidateVector(const float* values, size_t count, uint32_t dimension, const FieldName& field);

/// Keys non-empty and at most 256 bytes; values set, doubles finite, lists of
/// scalars only (no nesting). `field` prefixes error messages.
Status ValidatePayload(const google::protobuf::Map<std::string, quiver::v1::Value>& payload, const FieldName& field);

}  // namespace quiver::engine
