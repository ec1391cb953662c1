// Payload indexes: for the fields a collection declares
// (CollectionConfig.indexed_payload_fields), each sealed segment keeps
//   - an equality index: scalar value (string, int, bool) -> ascending rows, and
//   - a numeric index: (value, row) pairs of ints and doubles, sorted by value,
// built once by the background thread (sealed rows never change). A filter
// condition on such a field becomes a bitset from the index instead of a
// parse of every payload; conditions on other fields are checked only on the
// rows the indexed ones leave (EvaluateFilter in engine/filter.h).
//
// Semantics are FilterMatches' exactly: a list field matches if any element
// does; ranges compare ints and doubles as doubles; a missing field matches
// nothing.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "quiver/v1/points.pb.h"

namespace quiver::engine {

class PayloadIndex {
 public:
  /// Indexes `fields` of `payloads` (serialized quiver.v1.Payload per row;
  /// empty = none; unparsable = none).
  static PayloadIndex Build(const std::vector<std::string>& payloads, const std::vector<std::string>& fields);

  bool Covers(const std::string& key) const { return fields_.count(key) != 0; }
  /// Sets the bit of every row whose `key` equals `value` (string, int or bool).
  void SetEqual(const std::string& key, const quiver::v1::Value& value, uint64_t* bits) const;
  /// Sets the bit of every row whose numeric `key` lies within `range`.
  void SetInRange(const quiver::v1::FieldRange& range, uint64_t* bits) const;
  /// Bytes held by the index.
  size_t MemoryBytes() const;

 private:
  struct Field {
    std::unordered_map<std::string, std::vector<uint32_t>> equal;  // canonical scalar -> rows
    std::vector<std::pair<double, uint32_t>> numeric;              // sorted by value
  };
  std::unordered_map<std::string, Field> fields_;
};

/// The equality index's key of a scalar: a type tag and the value's bytes, so
/// "1", 1 and true stay distinct. False for doubles and lists.
bool CanonicalScalar(const quiver::v1::Value& v, std::string* out);

}  // namespace quiver::engine
