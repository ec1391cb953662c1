// Payload filters: validation and evaluation of quiver.v1.Filter trees.
//
// A search with a filter turns it into a per-segment bitset of excluded rows
// (tombstones included) before the scan, so the kernels skip those rows and
// k matching results still come back. When a filter keeps few rows of a
// segment, the segment is searched exactly instead of through its index, so
// selective filters do not cost recall (engine/collection.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "quiver/v1/points.pb.h"

namespace quiver::engine {

/// Deepest nesting of and/or/not accepted.
inline constexpr int kMaxFilterDepth = 32;

/// INVALID_ARGUMENT naming the field (e.g. "filter.and.filters[1].range") for
/// an empty node, an empty key, a match/in value that is not a string, int or
/// bool, a range without bounds or with NaN, or nesting deeper than 32.
Status ValidateFilter(const quiver::v1::Filter& filter, const std::string& field = "filter");

/// True if `payload` satisfies `filter` (which must be valid).
bool FilterMatches(const quiver::v1::Filter& filter, const quiver::v1::Payload& payload);

class PayloadIndex;

/// The rows of a segment that satisfy `filter` (valid), among `candidates`
/// (bit r of word r / 64; no bits past the last row). Conditions on fields
/// `index` covers (null: none) come from the index; a subtree without such
/// conditions parses `payloads[row]` only for the rows still in question, and
/// an AND evaluates its indexed conditions first, so a selective indexed
/// condition spares the payloads of the rows it rejects.
std::vector<uint64_t> EvaluateFilter(const quiver::v1::Filter& filter, const PayloadIndex* index,
                                     const std::vector<std::string>& payloads, std::vector<uint64_t> candidates);

}  // namespace quiver::engine
