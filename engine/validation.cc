#include "engine/validation.h"

#include <cmath>
#include <cstring>
#include <string>

namespace quiver::engine {
namespace {

std::string Str(std::string_view s) { return std::string(s); }

Status ValidateScalar(const quiver::v1::Value& v, const std::string& where, bool allow_list) {
  switch (v.kind_case()) {
    case quiver::v1::Value::kStringValue:
    case quiver::v1::Value::kIntValue:
    case quiver::v1::Value::kBoolValue:
      return Status::Ok();
    case quiver::v1::Value::kDoubleValue:
      if (!std::isfinite(v.double_value())) return Status::InvalidArgument(where + " is not a finite number");
      return Status::Ok();
    case quiver::v1::Value::kListValue: {
      if (!allow_list) return Status::InvalidArgument(where + " is a nested list; lists hold scalars only");
      const auto& values = v.list_value().values();
      for (int i = 0; i < values.size(); ++i) {
        QUIVER_RETURN_IF_ERROR(ValidateScalar(values[i], where + "[" + std::to_string(i) + "]", false));
      }
      return Status::Ok();
    }
    case quiver::v1::Value::KIND_NOT_SET:
      break;
  }
  return Status::InvalidArgument(where + " has no value set");
}

}  // namespace

Status ValidateCollectionName(std::string_view name, std::string_view field) {
  if (name.empty()) return Status::InvalidArgument(Str(field) + " is empty");
  if (name.size() > kMaxCollectionNameLength) {
    return Status::InvalidArgument(Str(field) + " is longer than " + std::to_string(kMaxCollectionNameLength) +
                                   " characters");
  }
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) return Status::InvalidArgument(Str(field) + " must start with a letter or digit");
  for (char c : name) {
    if (!alnum(c) && c != '_' && c != '-') {
      return Status::InvalidArgument(Str(field) + " may hold only letters, digits, '_' and '-'");
    }
  }
  return Status::Ok();
}

Status ValidateCollectionConfig(const quiver::v1::CollectionConfig& config) {
  QUIVER_RETURN_IF_ERROR(ValidateCollectionName(config.name(), "config.name"));
  if (config.dimension() < 1 || config.dimension() > kMaxDimension) {
    return Status::InvalidArgument("config.dimension is " + std::to_string(config.dimension()) + ", must be in 1.." +
                                   std::to_string(kMaxDimension));
  }
  switch (config.metric()) {
    case quiver::v1::L2:
    case quiver::v1::IP:
    case quiver::v1::COSINE:
      break;
    case quiver::v1::METRIC_UNSPECIFIED:
      return Status::InvalidArgument("config.metric is not set (L2, IP or COSINE)");
    default:
      return Status::InvalidArgument("config.metric has unknown value " + std::to_string(config.metric()));
  }
  const uint32_t seg = config.segment_max_points();
  if (seg != 0 && (seg < kMinSegmentPoints || seg > kMaxSegmentPoints)) {
    return Status::InvalidArgument("config.segment_max_points is " + std::to_string(seg) + ", must be 0 or in " +
                                   std::to_string(kMinSegmentPoints) + ".." + std::to_string(kMaxSegmentPoints));
  }
  if (config.indexed_payload_fields_size() > kMaxIndexedPayloadFields) {
    return Status::InvalidArgument("config.indexed_payload_fields has " +
                                   std::to_string(config.indexed_payload_fields_size()) + " entries, at most " +
                                   std::to_string(kMaxIndexedPayloadFields));
  }
  for (int i = 0; i < config.indexed_payload_fields_size(); ++i) {
    const std::string& key = config.indexed_payload_fields(i);
    const std::string where = "config.indexed_payload_fields[" + std::to_string(i) + "]";
    if (key.empty() || key.size() > kMaxPayloadKeyBytes) {
      return Status::InvalidArgument(where + " must be 1.." + std::to_string(kMaxPayloadKeyBytes) + " bytes");
    }
    for (int j = 0; j < i; ++j) {
      if (config.indexed_payload_fields(j) == key) return Status::InvalidArgument(where + " repeats '" + key + "'");
    }
  }
  switch (config.index().type()) {
    case quiver::v1::INDEX_TYPE_UNSPECIFIED:
    case quiver::v1::FLAT:
      return Status::Ok();
    case quiver::v1::IVF_FLAT:
      if (config.index().ivf_flat().nlist() > kMaxNlist) {
        return Status::InvalidArgument("config.index.ivf_flat.nlist is " +
                                       std::to_string(config.index().ivf_flat().nlist()) + ", at most " +
                                       std::to_string(kMaxNlist));
      }
      if (config.index().ivf_flat().nprobe() > kMaxNlist) {
        return Status::InvalidArgument("config.index.ivf_flat.nprobe is above " + std::to_string(kMaxNlist));
      }
      return Status::Ok();
    case quiver::v1::GRAPH: {
      const uint32_t degree = config.index().graph().degree();
      if (degree != 0 && (degree < kMinGraphDegree || degree > kMaxGraphDegree)) {
        return Status::InvalidArgument("config.index.graph.degree is " + std::to_string(degree) + ", must be 0 or " +
                                       std::to_string(kMinGraphDegree) + ".." + std::to_string(kMaxGraphDegree));
      }
      if (config.index().graph().itopk() > kMaxItopk) {
        return Status::InvalidArgument("config.index.graph.itopk is above " + std::to_string(kMaxItopk));
      }
      return Status::Ok();
    }
    case quiver::v1::IVF_PQ: {
      const auto& pq = config.index().ivf_pq();
      if (pq.nlist() > kMaxNlist || pq.nprobe() > kMaxNlist) {
        return Status::InvalidArgument("config.index.ivf_pq.nlist and nprobe must be at most " +
                                       std::to_string(kMaxNlist));
      }
      if (pq.pq_dim() > config.dimension()) {
        return Status::InvalidArgument("config.index.ivf_pq.pq_dim is " + std::to_string(pq.pq_dim()) +
                                       ", above the dimension " + std::to_string(config.dimension()));
      }
      if (pq.pq_bits() != 0 && pq.pq_bits() != 4 && pq.pq_bits() != 8) {
        return Status::InvalidArgument("config.index.ivf_pq.pq_bits is " + std::to_string(pq.pq_bits()) +
                                       ", must be 0, 4 or 8");
      }
      if (pq.refine_factor() > kMaxRefineFactor) {
        return Status::InvalidArgument("config.index.ivf_pq.refine_factor is above " + std::to_string(kMaxRefineFactor));
      }
      return Status::Ok();
    }
    default:
      return Status::InvalidArgument("config.index.type has unknown value " + std::to_string(config.index().type()));
  }
}

Status ValidateSearchParams(const quiver::v1::SearchParams& params) {
  if (params.itopk() > kMaxItopk) {
    return Status::InvalidArgument("params.itopk is " + std::to_string(params.itopk()) + ", at most " +
                                   std::to_string(kMaxItopk));
  }
  if (params.refine_factor() > kMaxRefineFactor) {
    return Status::InvalidArgument("params.refine_factor is " + std::to_string(params.refine_factor()) +
                                   ", at most " + std::to_string(kMaxRefineFactor));
  }
  if (params.search_width() > kMaxSearchWidth) {
    return Status::InvalidArgument("params.search_width is " + std::to_string(params.search_width()) + ", at most " +
                                   std::to_string(kMaxSearchWidth));
  }
  return Status::Ok();
}

std::string FieldName::str() const {
  std::string out(name);
  if (index >= 0) out += "[" + std::to_string(index) + "]";
  out += suffix;
  return out;
}

Status ValidateVector(const float* values, size_t count, uint32_t dimension, const FieldName& field) {
  if (count != dimension) {
    return Status::InvalidArgument(field.str() + " has " + std::to_string(count) + " floats, collection dimension is " +
                                   std::to_string(dimension));
  }
  // One pass without an early exit, so the compiler vectorises it: a float
  // is NaN or infinite exactly when its exponent bits are all ones.
  uint32_t non_finite = 0;
  for (size_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, values + i, sizeof(bits));
    non_finite |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  if (non_finite == 0) return Status::Ok();
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(values[i])) {
      return Status::InvalidArgument(field.str() + "[" + std::to_string(i) + "] is not finite");
    }
  }
  return Status::Ok();
}

Status ValidatePayload(const google::protobuf::Map<std::string, quiver::v1::Value>& payload, const FieldName& field) {
  for (const auto& [key, value] : payload) {
    if (key.empty()) return Status::InvalidArgument(field.str() + " has an empty key");
    if (key.size() > kMaxPayloadKeyBytes) {
      return Status::InvalidArgument(field.str() + " key '" + key.substr(0, 32) + "...' is too long");
    }
    QUIVER_RETURN_IF_ERROR(ValidateScalar(value, field.str() + "['" + key + "']", true));
  }
  return Status::Ok();
}

}  // namespace quiver::engine
