#include "engine/filter.h"

#include <algorithm>
#include <cmath>

#include "engine/payload_index.h"

namespace quiver::engine {
namespace {

using quiver::v1::Value;

bool IsMatchable(const Value& v) {
  return v.kind_case() == Value::kStringValue || v.kind_case() == Value::kIntValue ||
         v.kind_case() == Value::kBoolValue;
}

bool ScalarEquals(const Value& field, const Value& want) {
  if (field.kind_case() != want.kind_case()) return false;
  switch (want.kind_case()) {
    case Value::kStringValue: return field.string_value() == want.string_value();
    case Value::kIntValue: return field.int_value() == want.int_value();
    case Value::kBoolValue: return field.bool_value() == want.bool_value();
    default: return false;
  }
}

// Calls `pred` on the field's value, or on each element of a list field.
template <typename Pred>
bool AnyElement(const quiver::v1::Payload& payload, const std::string& key, Pred pred) {
  auto it = payload.fields().find(key);
  if (it == payload.fields().end()) return false;
  const Value& v = it->second;
  if (v.kind_case() != Value::kListValue) return pred(v);
  for (const Value& e : v.list_value().values()) {
    if (pred(e)) return true;
  }
  return false;
}

bool InRange(const quiver::v1::FieldRange& r, const Value& v) {
  double x;
  if (v.kind_case() == Value::kIntValue) {
    x = static_cast<double>(v.int_value());
  } else if (v.kind_case() == Value::kDoubleValue) {
    x = v.double_value();
  } else {
    return false;
  }
  return (!r.has_gt() || x > r.gt()) && (!r.has_gte() || x >= r.gte()) && (!r.has_lt() || x < r.lt()) &&
         (!r.has_lte() || x <= r.lte());
}

Status Validate(const quiver::v1::Filter& f, const std::string& field, int depth) {
  if (depth > kMaxFilterDepth) return Status::InvalidArgument(field + " nests deeper than " + std::to_string(kMaxFilterDepth));
  switch (f.kind_case()) {
    case quiver::v1::Filter::kMatch:
      if (f.match().key().empty()) return Status::InvalidArgument(field + ".match.key is empty");
      if (!IsMatchable(f.match().value())) {
        return Status::InvalidArgument(field + ".match.value must be a string, int or bool");
      }
      return Status::Ok();
    case quiver::v1::Filter::kRange: {
      const auto& r = f.range();
      if (r.key().empty()) return Status::InvalidArgument(field + ".range.key is empty");
      if (!r.has_gt() && !r.has_gte() && !r.has_lt() && !r.has_lte()) {
        return Status::InvalidArgument(field + ".range has no bound");
      }
      for (double b : {r.gt(), r.gte(), r.lt(), r.lte()}) {
        if (std::isnan(b)) return Status::InvalidArgument(field + ".range has a NaN bound");
      }
      return Status::Ok();
    }
    case quiver::v1::Filter::kIn:
      if (f.in().key().empty()) return Status::InvalidArgument(field + ".in.key is empty");
      for (int i = 0; i < f.in().values_size(); ++i) {
        if (!IsMatchable(f.in().values(i))) {
          return Status::InvalidArgument(field + ".in.values[" + std::to_string(i) + "] must be a string, int or bool");
        }
      }
      return Status::Ok();
    case quiver::v1::Filter::kAnd:
    case quiver::v1::Filter::kOr: {
      const bool is_and = f.kind_case() == quiver::v1::Filter::kAnd;
      const auto& list = is_and ? f.and_() : f.or_();
      for (int i = 0; i < list.filters_size(); ++i) {
        QUIVER_RETURN_IF_ERROR(Validate(list.filters(i),
                                        field + (is_and ? ".and" : ".or") + ".filters[" + std::to_string(i) + "]",
                                        depth + 1));
      }
      return Status::Ok();
    }
    case quiver::v1::Filter::kNot:
      return Validate(f.not_(), field + ".not", depth + 1);
    case quiver::v1::Filter::KIND_NOT_SET:
      break;
  }
  return Status::InvalidArgument(field + " has no condition set");
}

}  // namespace

Status ValidateFilter(const quiver::v1::Filter& filter, const std::string& field) { return Validate(filter, field, 0); }

bool FilterMatches(const quiver::v1::Filter& f, const quiver::v1::Payload& payload) {
  switch (f.kind_case()) {
    case quiver::v1::Filter::kMatch:
      return AnyElement(payload, f.match().key(), [&](const Value& v) { return ScalarEquals(v, f.match().value()); });
    case quiver::v1::Filter::kRange:
      return AnyElement(payload, f.range().key(), [&](const Value& v) { return InRange(f.range(), v); });
    case quiver::v1::Filter::kIn:
      return AnyElement(payload, f.in().key(), [&](const Value& v) {
        for (const Value& want : f.in().values()) {
          if (ScalarEquals(v, want)) return true;
        }
        return false;
      });
    case quiver::v1::Filter::kAnd:
      for (const auto& sub : f.and_().filters()) {
        if (!FilterMatches(sub, payload)) return false;
      }
      return true;
    case quiver::v1::Filter::kOr:
      for (const auto& sub : f.or_().filters()) {
        if (FilterMatches(sub, payload)) return true;
      }
      return false;
    case quiver::v1::Filter::kNot:
      return !FilterMatches(f.not_(), payload);
    case quiver::v1::Filter::KIND_NOT_SET:
      break;
  }
  return false;
}

namespace {

using Bits = std::vector<uint64_t>;

bool UsesIndex(const quiver::v1::Filter& f, const PayloadIndex& index) {
  switch (f.kind_case()) {
    case quiver::v1::Filter::kMatch: return index.Covers(f.match().key());
    case quiver::v1::Filter::kRange: return index.Covers(f.range().key());
    case quiver::v1::Filter::kIn: return index.Covers(f.in().key());
    case quiver::v1::Filter::kAnd:
    case quiver::v1::Filter::kOr: {
      const auto& list = f.kind_case() == quiver::v1::Filter::kAnd ? f.and_() : f.or_();
      return std::any_of(list.filters().begin(), list.filters().end(),
                         [&](const auto& sub) { return UsesIndex(sub, index); });
    }
    case quiver::v1::Filter::kNot: return UsesIndex(f.not_(), index);
    case quiver::v1::Filter::KIND_NOT_SET: break;
  }
  return false;
}

bool Empty(const Bits& b) {
  return std::all_of(b.begin(), b.end(), [](uint64_t w) { return w == 0; });
}

Bits Evaluate(const quiver::v1::Filter& f, const PayloadIndex* index, const std::vector<std::string>& payloads,
              Bits cand) {
  if (index == nullptr || !UsesIndex(f, *index)) {
    // No index helps below here: one parse per candidate row for the subtree.
    quiver::v1::Payload payload;
    for (size_t w = 0; w < cand.size(); ++w) {
      for (uint64_t word = cand[w]; word != 0; word &= word - 1) {
        const size_t row = w * 64 + static_cast<size_t>(__builtin_ctzll(word));
        payload.Clear();
        if (!payloads[row].empty() && !payload.ParseFromString(payloads[row])) payload.Clear();
        if (!FilterMatches(f, payload)) cand[w] &= ~(uint64_t{1} << (row % 64));
      }
    }
    return cand;
  }
  switch (f.kind_case()) {
    case quiver::v1::Filter::kMatch:
    case quiver::v1::Filter::kRange:
    case quiver::v1::Filter::kIn: {
      Bits hit(cand.size(), 0);
      if (f.has_match()) index->SetEqual(f.match().key(), f.match().value(), hit.data());
      if (f.has_range()) index->SetInRange(f.range(), hit.data());
      if (f.has_in()) {
        for (const auto& v : f.in().values()) index->SetEqual(f.in().key(), v, hit.data());
      }
      for (size_t w = 0; w < cand.size(); ++w) cand[w] &= hit[w];
      return cand;
    }
    case quiver::v1::Filter::kAnd: {
      // Indexed conditions first: each narrows the rows the next one checks.
      std::vector<const quiver::v1::Filter*> order;
      for (const auto& sub : f.and_().filters()) order.push_back(&sub);
      std::stable_partition(order.begin(), order.end(), [&](const auto* sub) { return UsesIndex(*sub, *index); });
      for (const auto* sub : order) {
        if (Empty(cand)) break;
        cand = Evaluate(*sub, index, payloads, std::move(cand));
      }
      return cand;
    }
    case quiver::v1::Filter::kOr: {
      Bits any(cand.size(), 0);
      for (const auto& sub : f.or_().filters()) {
        const Bits part = Evaluate(sub, index, payloads, cand);
        for (size_t w = 0; w < cand.size(); ++w) any[w] |= part[w];
      }
      return any;
    }
    case quiver::v1::Filter::kNot: {
      const Bits inner = Evaluate(f.not_(), index, payloads, cand);
      for (size_t w = 0; w < cand.size(); ++w) cand[w] &= ~inner[w];
      return cand;
    }
    case quiver::v1::Filter::KIND_NOT_SET: break;
  }
  return Bits(cand.size(), 0);
}

}  // namespace

std::vector<uint64_t> EvaluateFilter(const quiver::v1::Filter& filter, const PayloadIndex* index,
                                     const std::vector<std::string>& payloads, std::vector<uint64_t> candidates) {
  return Evaluate(filter, index, payloads, std::move(candidates));
}

}  // namespace quiver::engine
