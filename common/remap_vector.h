// An array of trivially copyable values that grows without copying.
//
// A collection's growing segment takes every upsert's vectors at its end. As
// a std::vector it moved to a new allocation at each geometric step: the old
// rows were copied, and the new pages faulted in 4 KiB at a time as the copy
// touched them, then once more for the rows appended after. That was a tenth
// of a replica's CPU under upserts. Here storage of 1 MiB and more is an
// anonymous mapping that grows with mremap(2): the kernel moves the page
// table entries, no row is copied, and only pages never touched before fault.
// (Advising transparent huge pages instead made replicas slower here: with
// the usual defrag=madvise setting a huge page fault may compact memory.)
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <utility>

namespace quiver {

template <typename T>
class RemapVector {
  static_assert(std::is_trivially_copyable_v<T>, "rows are moved as bytes");

 public:
  /// Arrays at least this large live in their own mapping; smaller ones on the heap.
  static constexpr size_t kMapBytes = size_t{1} << 20;

  RemapVector() = default;
  ~RemapVector() { Release(); }
  RemapVector(const RemapVector&) = delete;
  RemapVector& operator=(const RemapVector&) = delete;
  RemapVector(RemapVector&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)),
        size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)),
        mapped_(std::exchange(o.mapped_, false)) {}
  RemapVector& operator=(RemapVector&& o) noexcept {
    if (this != &o) {
      Release();
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
      capacity_ = std::exchange(o.capacity_, 0);
      mapped_ = std::exchange(o.mapped_, false);
    }
    return *this;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  bool empty() const { return size_ == 0; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }

  /// Capacity for at least `n` values; the contents stay where they are in
  /// the array (the array itself may move). Throws std::bad_alloc.
  void reserve(size_t n) {
    if (n <= capacity_) return;
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    size_t bytes = n * sizeof(T);
    void* p = nullptr;
    if (bytes < kMapBytes && !mapped_) {
      p = std::realloc(data_, bytes);
      if (p == nullptr) throw std::bad_alloc();
    } else {
      bytes = RoundToPages(bytes);
      if (mapped_) {
        p = ::mremap(data_, MappedBytes(), bytes, MREMAP_MAYMOVE);
        if (p == MAP_FAILED) throw std::bad_alloc();
      } else {  // from the heap into a mapping: at most 1 MiB to copy
        p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        if (size_ != 0) std::memcpy(p, data_, size_ * sizeof(T));
        std::free(data_);
        mapped_ = true;
      }
    }
    data_ = static_cast<T*>(p);
    capacity_ = bytes / sizeof(T);
  }

  /// Appends [first, last), which must not point into this array.
  void append(const T* first, const T* last) {
    const auto n = static_cast<size_t>(last - first);
    if (size_ + n > capacity_) reserve(std::max(size_ + n, capacity_ + capacity_ / 2));
    if (n != 0) std::memcpy(data_ + size_, first, n * sizeof(T));
    size_ += n;
  }

  /// New values are zero. Shrinking keeps the capacity.
  void resize(size_t n) {
    reserve(n);
    if (n > size_) std::memset(static_cast<void*>(data_ + size_), 0, (n - size_) * sizeof(T));
    size_ = n;
  }

 private:
  // Lengths given to the kernel; it rounds them up to its own page size.
  static size_t RoundToPages(size_t bytes) {
    constexpr size_t kPage = 4096;
    return (bytes + kPage - 1) & ~(kPage - 1);
  }
  size_t MappedBytes() const { return RoundToPages(capacity_ * sizeof(T)); }
  void Release() {
    if (data_ == nullptr) return;
    if (mapped_) {
      ::munmap(data_, MappedBytes());
    } else {
      std::free(data_);
    }
    data_ = nullptr;
    size_ = capacity_ = 0;
    mapped_ = false;
  }

  T* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
  bool mapped_ = false;  // an mmap'd array, else one from malloc
};

}  // namespace quiver
