#include "storage/segment_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <cstring>
#include <set>
#include <utility>

#include <rocksdb/db.h>

#include "common/encoding.h"
#include "storage/records.h"

namespace quiver::storage {
namespace {

constexpr std::string_view kMagic = "QVSEGMT1";
constexpr uint32_t kFileVersion = 1;
constexpr size_t kHeaderBytes = 8 + 4 + 8 + 8 + 8;
constexpr std::string_view kManifestPrefix = "segment/";
constexpr std::string_view kSuffix = ".qseg";

std::string ManifestKey(uint64_t collection_id, uint64_t segment) {
  std::string k(kManifestPrefix);
  PutFixed64BE(&k, collection_id);
  PutFixed64BE(&k, segment);
  return k;
}

std::string FileName(uint64_t collection_id, uint64_t segment) {
  return "c" + std::to_string(collection_id) + "-s" + std::to_string(segment) + std::string(kSuffix);
}

Status Errno(const std::string& what, const std::string& path) {
  return Status::Internal(what + " " + path + ": " + std::strerror(errno));
}

Status WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("writing", path);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("opening directory", dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? Status::Ok() : Errno("syncing directory", dir);
}

// Parses FileName's output; false for anything else.
bool ParseFileName(const std::string& name, uint64_t* collection_id, uint64_t* segment) {
  unsigned long long c = 0, n = 0;
  int used = 0;
  if (std::sscanf(name.c_str(), "c%llu-s%llu%n", &c, &n, &used) != 2) return false;
  if (name.substr(static_cast<size_t>(used)) != kSuffix || FileName(c, n) != name) return false;
  *collection_id = c;
  *segment = n;
  return true;
}

Result<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return std::vector<std::string>();
    return Errno("listing", dir);
  }
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  return names;
}

}  // namespace

SegmentStore::SegmentStore(Db* db) : db_(db), dir_(db->path() + "/segments") {}

std::string SegmentStore::PathOf(uint64_t collection_id, uint64_t segment) const {
  return dir_ + "/" + FileName(collection_id, segment);
}

Status SegmentStore::Save(uint64_t collection_id, uint64_t segment, std::span<const std::string_view> parts) {
  if (::mkdir(dir_.c_str(), 0755) != 0 && errno != EEXIST) return Errno("creating", dir_);
  uint64_t content_bytes = 0;
  for (std::string_view p : parts) content_bytes += p.size();
  std::string header(kMagic);
  PutFixed32LE(&header, kFileVersion);
  PutFixed64LE(&header, collection_id);
  PutFixed64LE(&header, segment);
  PutFixed64LE(&header, content_bytes);
  uint32_t crc = Checksum(header);
  for (std::string_view p : parts) crc = ChecksumExtend(crc, p);
  std::string trailer;
  PutFixed32LE(&trailer, crc);

  const std::string path = PathOf(collection_id, segment);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("creating", tmp);
  Status st = WriteAll(fd, header, tmp);
  for (std::string_view p : parts) {
    if (st.ok()) st = WriteAll(fd, p, tmp);
  }
  if (st.ok()) st = WriteAll(fd, trailer, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = Errno("syncing", tmp);
  ::close(fd);
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = Errno("renaming", tmp);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  QUIVER_RETURN_IF_ERROR(SyncDir(dir_));
  // Listed only once the file is durable. The listing goes through RocksDB's
  // WAL (unlike applied state): it is not in the replicated log.
  const uint64_t file_bytes = kHeaderBytes + content_bytes + 4;
  rocksdb::Status s =
      db_->raw()->Put(rocksdb::WriteOptions(), db_->meta(), ManifestKey(collection_id, segment), EncodeU64Pair(file_bytes, 0));
  return FromRocks(&s, "listing segment file " + path);
}

Result<std::vector<SegmentRef>> SegmentStore::List() const {
  std::vector<SegmentRef> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->raw()->NewIterator(rocksdb::ReadOptions(), db_->meta()));
  for (it->Seek(std::string(kManifestPrefix)); it->Valid() && it->key().starts_with(kManifestPrefix); it->Next()) {
    const std::string_view key = it->key().ToStringView();
    if (key.size() != kManifestPrefix.size() + 16) {
      return Status::Corruption("segment key '" + EscapeKey(key) + "' has the wrong length");
    }
    QUIVER_ASSIGN_OR_RETURN(auto value, DecodeU64Pair(key, it->value().ToStringView()));
    out.push_back({DecodeFixed64BE(key.data() + kManifestPrefix.size()),
                   DecodeFixed64BE(key.data() + kManifestPrefix.size() + 8), value.first});
  }
  if (!it->status().ok()) {
    rocksdb::Status s = it->status();
    return FromRocks(&s, "listing segment files");
  }
  return out;
}

SegmentContent::SegmentContent(SegmentContent&& other) noexcept { *this = std::move(other); }

SegmentContent& SegmentContent::operator=(SegmentContent&& other) noexcept {
  if (this != &other) {
    if (map_ != nullptr) ::munmap(map_, map_bytes_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    content_ = std::exchange(other.content_, {});
  }
  return *this;
}

SegmentContent::~SegmentContent() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

Result<SegmentContent> SegmentStore::Read(const SegmentRef& ref) const {
  const std::string path = PathOf(ref.collection_id, ref.segment);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("segment file " + path + " is missing");
    return Errno("opening", path);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return Errno("reading size of", path);
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size != ref.file_bytes || size < kHeaderBytes + 4) {
    ::close(fd);
    return Status::Corruption("segment file " + path + " has " + std::to_string(size) + " bytes, listed with " +
                              std::to_string(ref.file_bytes));
  }
  // The file is immutable once listed (replaced only by rename), so a private
  // read-only mapping sees exactly the bytes checked below.
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return Errno("mapping", path);
  SegmentContent out;
  out.map_ = map;
  out.map_bytes_ = size;
  const std::string_view all(static_cast<const char*>(map), size);
  const uint32_t stored_crc = DecodeFixed32LE(all.data() + size - 4);
  if (Checksum(all.substr(0, size - 4)) != stored_crc) {
    return Status::Corruption("segment file " + path + " fails its checksum");
  }
  if (all.substr(0, kMagic.size()) != kMagic) return Status::Corruption("segment file " + path + " has a bad magic");
  const uint32_t version = DecodeFixed32LE(all.data() + 8);
  if (version != kFileVersion) {
    return Status::Corruption("segment file " + path + " has unknown version " + std::to_string(version));
  }
  if (DecodeFixed64LE(all.data() + 12) != ref.collection_id || DecodeFixed64LE(all.data() + 20) != ref.segment) {
    return Status::Corruption("segment file " + path + " belongs to another collection or segment");
  }
  if (DecodeFixed64LE(all.data() + 28) != size - kHeaderBytes - 4) {
    return Status::Corruption("segment file " + path + " has a content size that disagrees with its length");
  }
  out.content_ = all.substr(kHeaderBytes, size - kHeaderBytes - 4);
  return out;
}

Status SegmentStore::Remove(uint64_t collection_id, uint64_t segment) {
  rocksdb::Status s = db_->raw()->Delete(rocksdb::WriteOptions(), db_->meta(), ManifestKey(collection_id, segment));
  QUIVER_RETURN_IF_ERROR(FromRocks(&s, "unlisting segment " + PathOf(collection_id, segment)));
  const std::string path = PathOf(collection_id, segment);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Errno("deleting", path);
  return Status::Ok();
}

Status SegmentStore::LinkListedInto(const std::string& dir) const {
  QUIVER_ASSIGN_OR_RETURN(auto refs, List());
  for (const auto& ref : refs) {
    const std::string from = PathOf(ref.collection_id, ref.segment);
    const std::string to = dir + "/" + FileName(ref.collection_id, ref.segment);
    if (::link(from.c_str(), to.c_str()) != 0 && errno != ENOENT) return Errno("linking " + from + " to", to);
  }
  return Status::Ok();
}

Status SegmentStore::ReplaceFrom(const std::string& dir, std::vector<std::string>* rejected) {
  QUIVER_ASSIGN_OR_RETURN(auto refs, List());
  for (const auto& ref : refs) QUIVER_RETURN_IF_ERROR(Remove(ref.collection_id, ref.segment));
  if (::mkdir(dir_.c_str(), 0755) != 0 && errno != EEXIST) return Errno("creating", dir_);
  QUIVER_ASSIGN_OR_RETURN(auto names, ListDir(dir));
  for (const std::string& name : names) {
    SegmentRef ref;
    if (!ParseFileName(name, &ref.collection_id, &ref.segment)) continue;  // not a segment file
    const std::string from = dir + "/" + name;
    const std::string to = PathOf(ref.collection_id, ref.segment);
    struct stat st {};
    if (::stat(from.c_str(), &st) != 0) return Errno("reading", from);
    ref.file_bytes = static_cast<uint64_t>(st.st_size);
    if (::unlink(to.c_str()) != 0 && errno != ENOENT) return Errno("deleting", to);
    if (::link(from.c_str(), to.c_str()) != 0) {
      // Another file system (a backup restored from elsewhere): copy.
      std::error_code ec;
      if (errno != EXDEV || !std::filesystem::copy_file(from, to, ec)) return Errno("linking " + from + " to", to);
    }
    if (Result<SegmentContent> content = Read(ref); !content.ok()) {
      rejected->push_back(name + ": " + content.status().message());
      ::unlink(to.c_str());
      continue;
    }
    rocksdb::Status s = db_->raw()->Put(rocksdb::WriteOptions(), db_->meta(), ManifestKey(ref.collection_id, ref.segment),
                                        EncodeU64Pair(ref.file_bytes, 0));
    QUIVER_RETURN_IF_ERROR(FromRocks(&s, "listing segment file " + to));
  }
  return SyncDir(dir_);
}

Status SegmentStore::RemoveUnlisted() {
  QUIVER_ASSIGN_OR_RETURN(auto refs, List());
  std::set<std::string> listed;
  for (const auto& r : refs) listed.insert(FileName(r.collection_id, r.segment));
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return errno == ENOENT ? Status::Ok() : Errno("listing", dir_);
  std::vector<std::string> doomed;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (listed.count(name) == 0) doomed.push_back(name);
  }
  ::closedir(d);
  for (const auto& name : doomed) {
    const std::string path = dir_ + "/" + name;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) return Errno("deleting unlisted", path);
  }
  return Status::Ok();
}

}  // namespace quiver::storage
