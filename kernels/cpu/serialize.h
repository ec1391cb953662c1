// Little helpers for index serialisation (internal header): append raw
// values, and a bounds-checked reader whose errors name the index and file.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace quiver::kernels {

template <typename T>
void Put(std::string* out, const T& v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename T>
void PutArray(std::string* out, const std::vector<T>& v) {
  if (v.empty()) return;  // data() may be null
  out->append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// Reads fields in order; every read is checked against the bytes left, and
// array sizes are checked before allocating, so a corrupt size cannot make
// us allocate or read past the end.
class Reader {
 public:
  /// `kind` names the index ("IVF_FLAT index"), `what` the file.
  Reader(std::string_view bytes, const char* kind, const std::string& what) : bytes_(bytes), kind_(kind), what_(what) {}

  template <typename T>
  Status Get(T* v, const char* field) {
    if (left() < sizeof(T)) return Truncated(field);
    std::memcpy(v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::Ok();
  }
  template <typename T>
  Status GetArray(std::vector<T>* v, size_t count, const char* field) {
    if (count > left() / sizeof(T)) return Truncated(field);
    v->resize(count);
    if (count == 0) return Status::Ok();  // memcpy must not see an empty vector's null data()
    std::memcpy(v->data(), bytes_.data() + pos_, count * sizeof(T));
    pos_ += count * sizeof(T);
    return Status::Ok();
  }
  size_t left() const { return bytes_.size() - pos_; }
  Status Corrupt(const std::string& why) const {
    return Status::Corruption(std::string(kind_) + " " + what_ + ": " + why + " (at byte " + std::to_string(pos_) + ")");
  }

 private:
  Status Truncated(const char* field) const { return Corrupt(std::string("truncated in ") + field); }
  std::string_view bytes_;
  const char* kind_;
  const std::string& what_;
  size_t pos_ = 0;
};

}  // namespace quiver::kernels
