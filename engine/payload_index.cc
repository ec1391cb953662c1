#include "engine/payload_index.h"

#include <algorithm>
#include <cstring>

namespace quiver::engine {

using quiver::v1::Value;

bool CanonicalScalar(const Value& v, std::string* out) {
  out->clear();
  switch (v.kind_case()) {
    case Value::kStringValue:
      out->push_back('s');
      out->append(v.string_value());
      return true;
    case Value::kIntValue: {
      out->push_back('i');
      const int64_t x = v.int_value();
      out->append(reinterpret_cast<const char*>(&x), sizeof x);
      return true;
    }
    case Value::kBoolValue:
      out->push_back(v.bool_value() ? 'T' : 'F');
      return true;
    default:
      return false;
  }
}

PayloadIndex PayloadIndex::Build(const std::vector<std::string>& payloads, const std::vector<std::string>& fields) {
  PayloadIndex index;
  for (const auto& f : fields) index.fields_[f];
  quiver::v1::Payload payload;
  std::string key;
  for (uint32_t row = 0; row < payloads.size(); ++row) {
    if (payloads[row].empty()) continue;
    payload.Clear();
    if (!payload.ParseFromString(payloads[row])) continue;  // as FilterMatches: no fields
    for (auto& [name, field] : index.fields_) {
      auto it = payload.fields().find(name);
      if (it == payload.fields().end()) continue;
      auto add = [&](const Value& v) {
        if (CanonicalScalar(v, &key)) {
          auto& rows = field.equal[key];
          if (rows.empty() || rows.back() != row) rows.push_back(row);  // a list may repeat a value
        }
        if (v.kind_case() == Value::kIntValue) field.numeric.emplace_back(static_cast<double>(v.int_value()), row);
        if (v.kind_case() == Value::kDoubleValue) field.numeric.emplace_back(v.double_value(), row);
      };
      if (it->second.kind_case() == Value::kListValue) {
        for (const Value& e : it->second.list_value().values()) add(e);
      } else {
        add(it->second);
      }
    }
  }
  for (auto& [name, field] : index.fields_) {
    std::sort(field.numeric.begin(), field.numeric.end());
    field.numeric.shrink_to_fit();
  }
  return index;
}

void PayloadIndex::SetEqual(const std::string& key, const Value& value, uint64_t* bits) const {
  auto f = fields_.find(key);
  std::string canonical;
  if (f == fields_.end() || !CanonicalScalar(value, &canonical)) return;
  auto it = f->second.equal.find(canonical);
  if (it == f->second.equal.end()) return;
  for (uint32_t row : it->second) bits[row / 64] |= uint64_t{1} << (row % 64);
}

void PayloadIndex::SetInRange(const quiver::v1::FieldRange& r, uint64_t* bits) const {
  auto f = fields_.find(r.key());
  if (f == fields_.end()) return;
  const auto& num = f->second.numeric;
  using Entry = std::pair<double, uint32_t>;
  auto lo = num.begin();
  auto hi = num.end();
  // Tightest lower and upper bounds; rows are only a tie-break in the order.
  if (r.has_gte()) lo = std::max(lo, std::lower_bound(num.begin(), num.end(), Entry{r.gte(), 0}));
  if (r.has_gt()) lo = std::max(lo, std::upper_bound(num.begin(), num.end(), Entry{r.gt(), UINT32_MAX}));
  if (r.has_lte()) hi = std::min(hi, std::upper_bound(num.begin(), num.end(), Entry{r.lte(), UINT32_MAX}));
  if (r.has_lt()) hi = std::min(hi, std::lower_bound(num.begin(), num.end(), Entry{r.lt(), 0}));
  for (auto it = lo; it < hi; ++it) bits[it->second / 64] |= uint64_t{1} << (it->second % 64);
}

size_t PayloadIndex::MemoryBytes() const {
  size_t bytes = 0;
  for (const auto& [name, field] : fields_) {
    bytes += name.size() + field.numeric.capacity() * sizeof(field.numeric[0]);
    for (const auto& [value, rows] : field.equal) bytes += value.size() + 32 + rows.capacity() * sizeof(uint32_t);
  }
  return bytes;
}

}  // namespace quiver::engine
