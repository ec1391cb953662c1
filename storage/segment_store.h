// Sealed segment artefacts: one file per segment under <data_dir>/segments,
// listed in the meta column family, so a restart loads a segment's index
// instead of rebuilding it.
//
// A file is [magic "QVSEGMT1"][version u32][collection id u64][segment u64]
// [content bytes u64][content][CRC-32 u32 of everything before it]; the
// content is the engine's (engine/segment_codec.h). Save() writes a
// temporary file, fsyncs it, renames it into place, fsyncs the directory and
// only then lists it, so a listed file is always complete. The list is a
// cache index, not state: losing an entry (or a file) only costs a rebuild,
// because the points themselves live in the vectors column family.
//
// Example:
//   SegmentStore store(db);
//   store.Save(coll_id, seq, {header, ids, vectors});
//   for (auto& ref : *store.List()) auto content = store.Read(ref);  // DATA_LOSS naming the file if bad
#pragma once

#include <cstdint>
#include <span>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "storage/db.h"

namespace quiver::storage {

/// A segment file mapped read-only: its content without a copy.
class SegmentContent {
 public:
  SegmentContent() = default;
  SegmentContent(SegmentContent&& other) noexcept;
  SegmentContent& operator=(SegmentContent&& other) noexcept;
  ~SegmentContent();
  std::string_view bytes() const { return content_; }

 private:
  friend class SegmentStore;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  std::string_view content_;
};

struct SegmentRef {
  uint64_t collection_id = 0;
  uint64_t segment = 0;  // the collection's segment number
  uint64_t file_bytes = 0;
};

class SegmentStore {
 public:
  explicit SegmentStore(Db* db);

  /// Writes the segment's file (the content is the concatenation of `parts`)
  /// durably and lists it, replacing any earlier file of the same number.
  Status Save(uint64_t collection_id, uint64_t segment, std::span<const std::string_view> parts);

  /// Every listed segment, in (collection, segment) order.
  Result<std::vector<SegmentRef>> List() const;

  /// The content of a listed segment after checking the file's size against
  /// the list, and its magic, version, ids and checksum. DATA_LOSS naming the
  /// file on any mismatch; NOT_FOUND if the file is missing. The file is
  /// mapped, not copied: loading a large segment touches its bytes once.
  Result<SegmentContent> Read(const SegmentRef& ref) const;

  /// Unlists the segment, then deletes its file. Absent is fine.
  Status Remove(uint64_t collection_id, uint64_t segment);

  /// Deletes files that are not listed: temporaries and files whose listing
  /// was lost in a crash. Call before anything else uses the store.
  Status RemoveUnlisted();

  std::string PathOf(uint64_t collection_id, uint64_t segment) const;

  /// Hard-links every listed segment file into `dir` (an existing
  /// directory): a point-in-time copy for a snapshot without copying bytes.
  /// Files removed meanwhile (compaction, a dropped collection) are skipped:
  /// the list is a cache, the receiver rebuilds what is missing.
  Status LinkListedInto(const std::string& dir) const;

  /// Replaces every listed segment with the segment files found in `dir`
  /// (hard-linked, so `dir` keeps them for a redo; copied from another file
  /// system). A file that fails
  /// validation is not listed; `rejected` receives its name and why.
  Status ReplaceFrom(const std::string& dir, std::vector<std::string>* rejected);

 private:
  Db* db_;
  std::string dir_;
};

}  // namespace quiver::storage
