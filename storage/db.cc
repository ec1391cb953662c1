#include "storage/db.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "storage/crc32c.h"

// RocksDB's CRC-32C functions (util/crc32c.h of RocksDB 7.8, not an installed
// header), defined here so that the static archive's portable ones are never
// linked: storage/crc32c.h says why. This file is in every binary that opens
// a Db, ahead of librocksdb.a on the link line, so the archive's crc32c
// object has nothing left to resolve; were it linked too, the link would
// fail with duplicate definitions rather than fall back silently, and the
// test "rocksdb_crc32c_not_linked" checks quiverd's symbols for it. x86-64
// only: elsewhere RocksDB's own code may have a hardware path of its own.
#if defined(__x86_64__)
namespace rocksdb::crc32c {
uint32_t Extend(uint32_t crc, const char* data, size_t n);
uint32_t Crc32cCombine(uint32_t crc1, uint32_t crc2, size_t crc2len);
std::string IsFastCrc32Supported();

uint32_t Extend(uint32_t crc, const char* data, size_t n) { return quiver::storage::Crc32cExtend(crc, data, n); }
uint32_t Crc32cCombine(uint32_t crc1, uint32_t crc2, size_t crc2len) {
  return quiver::storage::Crc32cCombine(crc1, crc2, crc2len);
}
// RocksDB writes this into its LOG file at open.
std::string IsFastCrc32Supported() {
  return quiver::storage::Crc32cUsesHardware() ? "Supported on x86 (Quiver's SSE4.2 CRC-32C)"
                                               : "Not supported (Quiver's portable CRC-32C)";
}
}  // namespace rocksdb::crc32c
#endif

namespace quiver::storage {

Status SyncDirectory(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.is_regular_file()) paths.push_back(entry.path());
  }
  if (ec) return Status::IOError("listing " + dir + ": " + ec.message());
  paths.push_back(dir);
  for (const std::string& path : paths) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Status::IOError("opening " + path + ": " + std::strerror(errno));
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return Status::IOError("syncing " + path + ": " + std::strerror(err));
  }
  return Status::Ok();
}

bool DirectIoSupported(const std::string& dir) {
  const std::string probe = dir + "/.direct-io-probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  // Some file systems accept the flag at open and refuse the write; 4 KiB
  // aligned in memory and on disk is what any O_DIRECT file system takes.
  constexpr size_t kBlock = 4096;
  void* block = std::aligned_alloc(kBlock, kBlock);
  bool ok = block != nullptr;
  if (ok) {
    std::memset(block, 0, kBlock);
    ok = ::pwrite(fd, block, kBlock, 0) == static_cast<ssize_t>(kBlock);
  }
  std::free(block);
  ::close(fd);
  ::unlink(probe.c_str());
  return ok;
}

Status FromRocks(const void* p, const std::string& context) {
  const auto& s = *static_cast<const rocksdb::Status*>(p);
  if (s.ok()) return Status::Ok();
  if (s.IsCorruption()) return Status::Corruption(context + ": " + s.ToString());
  if (s.IsNotFound()) return Status::NotFound(context + ": " + s.ToString());
  if (s.IsIOError()) return Status::IOError(context + ": " + s.ToString());
  if (s.IsShutdownInProgress()) return Status::Unavailable(context + ": " + s.ToString());
  return Status::Internal(context + ": " + s.ToString());
}

Result<std::unique_ptr<Db>> Db::Open(const std::string& path, const DbOptions& options) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) return Status::IOError("cannot create data directory " + path + ": " + ec.message());

  rocksdb::DBOptions db_opts;
  db_opts.create_if_missing = options.create_if_missing;
  db_opts.create_missing_column_families = true;
  db_opts.IncreaseParallelism(2);
  // Point-in-time recovery: after a crash the DB holds a prefix of the writes
  // in WAL order, which is what lets log compaction follow unsynced applies.
  db_opts.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  db_opts.max_total_wal_size = 512ull << 20;
  // Applied state is written without the WAL (storage/state_store.h); atomic
  // flush persists all column families at one point, so after a crash the
  // points, payloads and applied index still agree.
  db_opts.atomic_flush = true;
  const bool direct = options.direct_flush_writes && DirectIoSupported(path);
  db_opts.use_direct_io_for_flush_and_compaction = direct;

  rocksdb::ColumnFamilyOptions cf_opts;
  cf_opts.write_buffer_size = options.write_buffer_bytes;
  cf_opts.max_write_buffer_number = 4;
  rocksdb::ColumnFamilyOptions log_opts = cf_opts;
  // Log entries are written once, read on replay, and deleted by range.
  log_opts.compression = rocksdb::kNoCompression;
  // Points and payloads keep RocksDB's default skip list memtable. A vector
  // memtable (unsorted, sorted at flush) was tried: its sort took 40% of the
  // flush thread, and the skip list, which inserts a key following the
  // previous one without a full search, was ~6% cheaper for a replicated node.
  // Insert hints per collection (memtable_insert_with_hint_prefix_extractor)
  // must not be used: RocksDB 7.8 hands the same hint to the range-deletion
  // memtable, and DeleteCollection's DeleteRange then trips its skip list.
  rocksdb::ColumnFamilyOptions vec_opts = cf_opts;
  vec_opts.compression = rocksdb::kNoCompression;  // float vectors do not compress

  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, cf_opts},
      {"meta", cf_opts},
      {"log", log_opts},
      {"vectors", vec_opts},
      {"payloads", cf_opts},
  };
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_opts, path, cfs, &handles, &raw);
  if (!s.ok()) return FromRocks(&s, "opening RocksDB at " + path);

  std::unique_ptr<Db> db(new Db());
  db->path_ = path;
  db->direct_flush_writes_ = direct;
  db->db_ = raw;
  db->default_ = handles[0];
  db->meta_ = handles[1];
  db->log_ = handles[2];
  db->vectors_ = handles[3];
  db->payloads_ = handles[4];
  return db;
}

void ClearForReuse(rocksdb::WriteBatch* batch) {
  constexpr size_t kMaxRetainedBytes = 64ull << 20;
  if (batch->Data().capacity() > kMaxRetainedBytes) {
    *batch = rocksdb::WriteBatch();
  } else {
    batch->Clear();
  }
}

Status Db::Flush() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  std::vector<rocksdb::ColumnFamilyHandle*> all = {meta_, log_, vectors_, payloads_};
  rocksdb::Status s = db_->Flush(fo, all);
  if (!s.ok()) return FromRocks(&s, "flushing " + path_);
  s = db_->SyncWAL();
  return FromRocks(&s, "syncing WAL of " + path_);
}

Db::~Db() {
  if (db_ == nullptr) return;
  for (auto* h : {default_, meta_, log_, vectors_, payloads_}) {
    if (h != nullptr) (void)db_->DestroyColumnFamilyHandle(h);
  }
  (void)db_->Close();
  delete db_;
}

}  // namespace quiver::storage
