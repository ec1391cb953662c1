// One RocksDB per node, with a column family per kind of record:
//   meta     node metadata, hard state, collections, applied index
//   log      the replicated log, key = big-endian index
//   vectors  point vectors, key = big-endian (collection id, point id)
//   payloads point payloads, same key
// Record formats live in storage/records.h; every read validates them.
#pragma once

#include <memory>
#include <string>

#include "common/status.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace quiver::storage {

struct DbOptions {
  /// Bytes of memtable per column family before a flush. Default: 64 MiB.
  size_t write_buffer_bytes = 64ull << 20;
  /// Create the database if the directory holds none. Default: true.
  bool create_if_missing = true;
  /// Flushes and compactions write SST files with O_DIRECT where the file
  /// system takes it (probed at open; see DirectIoSupported). The state's
  /// bytes are written once and read back only at start-up or by a
  /// compaction, so copying them into the page cache only cost CPU, memory
  /// to zero and writeback: in quiver-bench cluster, 3 nodes wrote ~8% more
  /// with it. The WAL stays buffered (it is fsynced per write). Default: true.
  bool direct_flush_writes = true;
};

class Db {
 public:
  /// Opens (or creates) the database under `path`. Fails with a message naming
  /// the path if another process holds it or the files are unreadable.
  static Result<std::unique_ptr<Db>> Open(const std::string& path, const DbOptions& options = {});
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  rocksdb::DB* raw() const { return db_; }
  rocksdb::ColumnFamilyHandle* meta() const { return meta_; }
  rocksdb::ColumnFamilyHandle* log() const { return log_; }
  rocksdb::ColumnFamilyHandle* vectors() const { return vectors_; }
  rocksdb::ColumnFamilyHandle* payloads() const { return payloads_; }
  const std::string& path() const { return path_; }
  /// Whether flushes and compactions write with O_DIRECT (DbOptions).
  bool direct_flush_writes() const { return direct_flush_writes_; }

  /// Flushes memtables and syncs the WAL; used on clean shutdown.
  Status Flush();

 private:
  Db() = default;
  std::string path_;
  bool direct_flush_writes_ = false;
  rocksdb::DB* db_ = nullptr;
  rocksdb::ColumnFamilyHandle* default_ = nullptr;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* log_ = nullptr;
  rocksdb::ColumnFamilyHandle* vectors_ = nullptr;
  rocksdb::ColumnFamilyHandle* payloads_ = nullptr;
};

/// Empties a write batch that is kept for the next write, keeping its buffer:
/// a follower writes a few MB to tens of MB at a time, and a new buffer each
/// time was new memory for the kernel to zero on first touch (a tenth of a
/// follower's CPU in quiver-bench cluster). A buffer past 64 MiB (the
/// replicator's largest batch) is freed, so one huge write does not pin it.
void ClearForReuse(rocksdb::WriteBatch* batch);

/// fsyncs every regular file in `dir`, then `dir` itself: files written with
/// plain streams (a received snapshot) become durable before a record names them.
Status SyncDirectory(const std::string& dir);

/// Whether files in `dir` can be written with O_DIRECT: opens, writes and
/// removes a probe file there. False on file systems without it (older tmpfs,
/// some FUSE and network file systems), where RocksDB's direct writes would
/// fail at the first flush instead of at open.
bool DirectIoSupported(const std::string& dir);

/// Converts a rocksdb::Status-like (code, message) into ours; in db.cc.
Status FromRocks(const void* rocksdb_status, const std::string& context);

}  // namespace quiver::storage
