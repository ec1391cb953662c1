// Storage for large arrays read at random (a graph index's neighbour lists
// and codes): backed by transparent huge pages where the kernel allows.
//
// A search through a 1M-node graph touches a few cache lines of a
// 128-256 MB array per step, at random; with 4 KiB pages nearly every touch
// is also a TLB miss and a page walk. Most hosts (Debian's and Ubuntu's
// defaults) give huge pages only to memory that asks for them
// (transparent_hugepage=madvise), so these arrays ask: 1.2-1.4x GRAPH QPS
// at recall 0.95 on 1M x 128 (bench/RESULTS.md, session 12). Where the
// kernel has THP off this is plain memory, and nothing else changes.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace quiver {

/// Allocates arrays of 2 MiB and more as anonymous mappings aligned to 2 MiB
/// and advised MADV_HUGEPAGE before anything touches them (advice given
/// after the first touch would leave the pages small until khugepaged gets
/// round to them). Smaller arrays come from operator new.
template <typename T>
class HugePageAllocator {
 public:
  using value_type = T;
  static constexpr size_t kHugePage = size_t{2} << 20;

  HugePageAllocator() = default;
  template <typename U>
  HugePageAllocator(const HugePageAllocator<U>&) noexcept {}  // NOLINT: allocators convert implicitly

  T* allocate(size_t n) {
    if (n > max_size()) throw std::bad_array_new_length();
    const size_t bytes = n * sizeof(T);
    if (bytes < kHugePage) return static_cast<T*>(::operator new(bytes));
    // Map one huge page more than needed, keep the aligned part.
    const size_t mapped = RoundUp(bytes) + kHugePage;
    void* raw = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    const auto start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (start + kHugePage - 1) & ~(uintptr_t{kHugePage} - 1);
    if (aligned > start) ::munmap(raw, aligned - start);
    const uintptr_t end = start + mapped, kept_end = aligned + RoundUp(bytes);
    if (end > kept_end) ::munmap(reinterpret_cast<void*>(kept_end), end - kept_end);
    // Advice only: a kernel without THP refuses it and the pages stay small.
    (void)::madvise(reinterpret_cast<void*>(aligned), RoundUp(bytes), MADV_HUGEPAGE);
    return reinterpret_cast<T*>(aligned);
  }

  void deallocate(T* p, size_t n) noexcept {
    const size_t bytes = n * sizeof(T);
    if (bytes < kHugePage) {
      ::operator delete(p);
    } else {
      ::munmap(p, RoundUp(bytes));
    }
  }

  static constexpr size_t max_size() noexcept { return (size_t{1} << 47) / sizeof(T); }

  template <typename U>
  bool operator==(const HugePageAllocator<U>&) const noexcept {
    return true;  // stateless: any instance frees what another allocated
  }

 private:
  static constexpr size_t RoundUp(size_t bytes) { return (bytes + kHugePage - 1) & ~(kHugePage - 1); }
};

/// A std::vector whose storage, once 2 MiB or more, sits on huge pages.
template <typename T>
using HugePageVector = std::vector<T, HugePageAllocator<T>>;

}  // namespace quiver
