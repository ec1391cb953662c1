#include "engine/filter.h"

#include <cmath>

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

}  // namespace quiver::engine
