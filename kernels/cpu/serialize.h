// Little helpers for index serialisation (internal header): append raw
// values, and a bounds-checked reader whose errors name the index and file.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/encoding.h"
#include "common/status.h"

namespace quiver::kernels {

template <typename T>
void Put(std::string* out, const T& v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}

template <typename T, typename Alloc>
void PutArray(std::string* out, const std::vector<T, Alloc>& v) {
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
  template <typename T, typename Alloc>
  Status GetArray(std::vector<T, Alloc>* v, size_t count, const char* field) {
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

/// Checks what every index format has: at least `header_bytes` plus the
/// trailing CRC-32, the 8-byte magic first, and the CRC over the rest. On
/// success *body is the bytes without the CRC. Errors go through `r`.
inline Status CheckEnvelope(std::string_view bytes, const char (&magic)[8], size_t header_bytes, const Reader& r,
                            std::string_view* body) {
  if (bytes.size() < header_bytes + 4) return r.Corrupt("shorter than its header");
  if (std::memcmp(bytes.data(), magic, sizeof magic) != 0) return r.Corrupt("bad magic");
  uint32_t stored_crc;
  std::memcpy(&stored_crc, bytes.data() + bytes.size() - 4, 4);
  *body = bytes.substr(0, bytes.size() - 4);
  if (Checksum(*body) != stored_crc) return r.Corrupt("checksum mismatch");
  return Status::Ok();
}

/// Inverted lists (IVF_FLAT, IVF_PQ): the first `size` slots of list `list`
/// hold distinct rows in 0..n-1 not seen in another list (marked in `seen`),
/// the padding slots hold -1.
inline Status CheckListRows(const std::vector<int64_t>& rows, uint64_t size, uint64_t n, uint64_t list,
                            std::vector<uint8_t>* seen, const Reader& r) {
  for (size_t s = 0; s < rows.size(); ++s) {
    const int64_t row = rows[s];
    if (s >= size) {
      if (row != -1) return r.Corrupt("list " + std::to_string(list) + " has a row in its padding");
      continue;
    }
    if (row < 0 || static_cast<uint64_t>(row) >= n || (*seen)[static_cast<size_t>(row)]++ != 0) {
      return r.Corrupt("list " + std::to_string(list) + " holds invalid or repeated row " + std::to_string(row));
    }
  }
  return Status::Ok();
}

/// After every list: each row is in one.
inline Status CheckEveryRowListed(const std::vector<uint8_t>& seen, const Reader& r) {
  for (size_t row = 0; row < seen.size(); ++row) {
    if (!seen[row]) return r.Corrupt("row " + std::to_string(row) + " is in no list");
  }
  return Status::Ok();
}

}  // namespace quiver::kernels
