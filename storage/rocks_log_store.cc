#include "storage/rocks_log_store.h"

#include <rocksdb/db.h>
#include <rocksdb/write_batch.h>

#include "common/encoding.h"
#include "storage/records.h"

namespace quiver::storage {

Result<std::unique_ptr<RocksLogStore>> RocksLogStore::Open(Db* db) {
  std::unique_ptr<RocksLogStore> store(new RocksLogStore(db));
  std::string value;
  rocksdb::Status s = db->raw()->Get(rocksdb::ReadOptions(), db->meta(), std::string(kHardStateKey), &value);
  if (s.ok()) {
    QUIVER_ASSIGN_OR_RETURN(store->hard_state_, DecodeHardState(value));
  } else if (!s.IsNotFound()) {
    return FromRocks(&s, "reading hard state");
  }
  s = db->raw()->Get(rocksdb::ReadOptions(), db->meta(), std::string(kLogCompactedKey), &value);
  if (s.ok()) {
    QUIVER_ASSIGN_OR_RETURN(auto pair, DecodeU64Pair(kLogCompactedKey, value));
    store->compacted_index_ = pair.first;
    store->compacted_term_ = pair.second;
  } else if (!s.IsNotFound()) {
    return FromRocks(&s, "reading log compaction point");
  }

  // The last key in the log column family is the last index.
  std::unique_ptr<rocksdb::Iterator> it(db->raw()->NewIterator(rocksdb::ReadOptions(), db->log()));
  it->SeekToLast();
  store->last_index_ = store->compacted_index_;
  if (it->Valid()) {
    if (it->key().size() != 8) {
      return Status::Corruption("log key '" + EscapeKey(it->key().ToStringView()) + "' is not 8 bytes");
    }
    const uint64_t last = DecodeFixed64BE(it->key().data());
    if (last < store->compacted_index_) {
      return Status::Corruption("log holds index " + std::to_string(last) + " below its compaction point " +
                                std::to_string(store->compacted_index_));
    }
    store->last_index_ = last;
    // Validate the first entry too: a gap at the head means lost entries.
    it->SeekToFirst();
    const uint64_t first = DecodeFixed64BE(it->key().data());
    if (first != store->compacted_index_ + 1) {
      return Status::Corruption("log starts at index " + std::to_string(first) + " but its compaction point is " +
                                std::to_string(store->compacted_index_) + ": entries are missing");
    }
  } else if (!it->status().ok()) {
    rocksdb::Status is = it->status();
    return FromRocks(&is, "scanning log");
  }
  store->terms_first_ = store->last_index_ + 1;
  return store;
}

Status RocksLogStore::Append(std::span<const LogEntry> entries, const HardState* hard_state) {
  std::lock_guard lock(mu_);
  QUIVER_RETURN_IF_ERROR(ValidateAppend(entries, compacted_index_ + 1, last_index_));
  rocksdb::WriteBatch& batch = append_batch_;  // empty: cleared after each write
  if (!entries.empty() && entries.front().index <= last_index_) {
    batch.DeleteRange(db_->log(), LogKey(entries.front().index), LogKey(last_index_ + 1));
  }
  for (const LogEntry& e : entries) {
    const std::string key = LogKey(e.index);
    char header[kLogEntryHeaderBytes];
    EncodeLogEntryHeader(e, header);
    const rocksdb::Slice key_slice(key);
    const rocksdb::Slice value_parts[2] = {rocksdb::Slice(header, kLogEntryHeaderBytes), rocksdb::Slice(e.data)};
    batch.Put(db_->log(), rocksdb::SliceParts(&key_slice, 1), rocksdb::SliceParts(value_parts, 2));
  }
  if (hard_state != nullptr) batch.Put(db_->meta(), std::string(kHardStateKey), EncodeHardState(*hard_state));
  rocksdb::WriteOptions wo;
  // Acknowledged means durable; a commit index alone may wait for the next
  // synced write (AppendMustSync), since the WAL recovers a prefix of writes.
  wo.sync = AppendMustSync(entries, hard_state, hard_state_);
  rocksdb::Status s = db_->raw()->Write(wo, &batch);
  ClearForReuse(&batch);
  if (!s.ok()) return FromRocks(&s, "appending to log");
  if (!entries.empty()) {
    const uint64_t first = entries.front().index;
    if (first < terms_first_) {
      terms_.clear();  // rewrites entries from before the restart
      terms_first_ = first;
    } else {
      terms_.resize(first - terms_first_);  // drops a replaced suffix
    }
    for (const LogEntry& e : entries) terms_.push_back(e.term);
    last_index_ = entries.back().index;
  }
  if (hard_state != nullptr) hard_state_ = *hard_state;
  return Status::Ok();
}

Result<HardState> RocksLogStore::GetHardState() const {
  std::lock_guard lock(mu_);
  return hard_state_;
}

uint64_t RocksLogStore::FirstIndex() const {
  std::lock_guard lock(mu_);
  return compacted_index_ + 1;
}

uint64_t RocksLogStore::LastIndex() const {
  std::lock_guard lock(mu_);
  return last_index_;
}

Result<LogEntry> RocksLogStore::ReadEntry(uint64_t index) const {
  const std::string key = LogKey(index);
  std::string value;
  rocksdb::Status s = db_->raw()->Get(rocksdb::ReadOptions(), db_->log(), key, &value);
  if (s.IsNotFound()) {
    return Status::Corruption("log entry " + std::to_string(index) + " is missing inside the log's bounds");
  }
  if (!s.ok()) return FromRocks(&s, "reading log entry " + std::to_string(index));
  return DecodeLogEntry(key, index, value);
}

Result<uint64_t> RocksLogStore::TermLocked(uint64_t index) const {
  if (index >= terms_first_ && index - terms_first_ < terms_.size()) return terms_[index - terms_first_];
  QUIVER_ASSIGN_OR_RETURN(LogEntry e, ReadEntry(index));
  return e.term;
}

Result<uint64_t> RocksLogStore::Term(uint64_t index) const {
  std::lock_guard lock(mu_);
  if (index == compacted_index_) return compacted_term_;
  if (index < compacted_index_) return Status::OutOfRange("log index " + std::to_string(index) + " is compacted");
  if (index > last_index_) return Status::OutOfRange("log index " + std::to_string(index) + " is beyond the last entry");
  return TermLocked(index);
}

Result<std::vector<LogEntry>> RocksLogStore::Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) const {
  std::lock_guard lock(mu_);
  if (lo <= compacted_index_) return Status::OutOfRange("log index " + std::to_string(lo) + " is compacted");
  if (hi > last_index_ + 1 || lo > hi) {
    return Status::OutOfRange("log range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                              ") is beyond the last entry");
  }
  std::vector<LogEntry> out;
  if (lo == hi) return out;
  rocksdb::ReadOptions ro;
  const std::string upper = LogKey(hi);
  rocksdb::Slice upper_slice(upper);
  ro.iterate_upper_bound = &upper_slice;
  std::unique_ptr<rocksdb::Iterator> it(db_->raw()->NewIterator(ro, db_->log()));
  uint64_t expect = lo;
  uint64_t bytes = 0;
  for (it->Seek(LogKey(lo)); it->Valid(); it->Next()) {
    const std::string_view key = it->key().ToStringView();
    if (key.size() != 8 || DecodeFixed64BE(key.data()) != expect) {
      return Status::Corruption("log entry " + std::to_string(expect) + " is missing (found key '" + EscapeKey(key) +
                                "')");
    }
    QUIVER_ASSIGN_OR_RETURN(LogEntry e, DecodeLogEntry(key, expect, it->value().ToStringView()));
    if (!out.empty() && bytes + e.data.size() > max_bytes) break;
    bytes += e.data.size();
    out.push_back(std::move(e));
    ++expect;
  }
  if (!it->status().ok()) {
    rocksdb::Status s = it->status();
    return FromRocks(&s, "reading log");
  }
  const bool budget_stop = !out.empty() && it->Valid();
  if (expect < hi && !budget_stop) {
    return Status::Corruption("log entry " + std::to_string(expect) + " is missing inside the log's bounds");
  }
  return out;
}

Status RocksLogStore::CompactTo(uint64_t index) { return Compact(index, nullptr); }

Status RocksLogStore::StageCompaction(uint64_t index, std::string_view snapshot_record) {
  return Compact(index, &snapshot_record);
}

Status RocksLogStore::Compact(uint64_t index, const std::string_view* staged_record) {
  std::lock_guard lock(mu_);
  if (index <= compacted_index_) return Status::Ok();
  if (index > last_index_) return Status::OutOfRange("cannot compact past the last entry " + std::to_string(last_index_));
  QUIVER_ASSIGN_OR_RETURN(const uint64_t term, TermLocked(index));
  rocksdb::WriteBatch batch;
  batch.Put(db_->meta(), std::string(kLogCompactedKey), EncodeU64Pair(index, term));
  batch.DeleteRange(db_->log(), LogKey(compacted_index_ + 1), LogKey(index + 1));
  rocksdb::WriteOptions wo;
  if (staged_record != nullptr) {
    batch.Put(db_->meta(), std::string(kSnapshotRecordKey), EncodeBlob(*staged_record));
    // Durable only when the next flush persists the memtables, which is
    // atomic across column families: the state's applies (also written
    // without the WAL) up to this point become durable at the same instant.
    wo.disableWAL = true;
  }
  // Otherwise not synced: the WAL is ordered, so this write becomes durable
  // only after the writes it follows, and losing it merely keeps entries
  // longer.
  rocksdb::Status s = db_->raw()->Write(wo, &batch);
  if (!s.ok()) return FromRocks(&s, "compacting log");
  compacted_index_ = index;
  compacted_term_ = term;
  while (!terms_.empty() && terms_first_ <= index) {
    terms_.pop_front();
    ++terms_first_;
  }
  return Status::Ok();
}

Status RocksLogStore::ResetToSnapshot(uint64_t index, uint64_t term, const HardState& hard_state) {
  std::lock_guard lock(mu_);
  rocksdb::WriteBatch batch;
  if (last_index_ > compacted_index_) {
    batch.DeleteRange(db_->log(), LogKey(compacted_index_ + 1), LogKey(last_index_ + 1));
  }
  batch.Put(db_->meta(), std::string(kLogCompactedKey), EncodeU64Pair(index, term));
  batch.Put(db_->meta(), std::string(kHardStateKey), EncodeHardState(hard_state));
  rocksdb::WriteOptions wo;
  wo.sync = true;  // the snapshot's data is already durable; this makes the log agree
  rocksdb::Status s = db_->raw()->Write(wo, &batch);
  if (!s.ok()) return FromRocks(&s, "resetting log to snapshot");
  compacted_index_ = index;
  compacted_term_ = term;
  last_index_ = index;
  terms_.clear();
  terms_first_ = index + 1;
  hard_state_ = hard_state;
  return Status::Ok();
}

Status RocksLogStore::PutMetaBlob(std::string_view key, std::string_view bytes, const char* what) {
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::Status s = db_->raw()->Put(wo, db_->meta(), std::string(key), EncodeBlob(bytes));
  if (!s.ok()) return FromRocks(&s, std::string("writing ") + what);
  return Status::Ok();
}

Result<std::string> RocksLogStore::GetMetaBlob(std::string_view key, const char* what) const {
  std::string value;
  rocksdb::Status s = db_->raw()->Get(rocksdb::ReadOptions(), db_->meta(), std::string(key), &value);
  if (s.IsNotFound()) return std::string();
  if (!s.ok()) return FromRocks(&s, std::string("reading ") + what);
  QUIVER_ASSIGN_OR_RETURN(std::string_view bytes, DecodeBlob(key, value));
  return std::string(bytes);
}

Status RocksLogStore::SetSnapshotRecord(std::string_view record) {
  return PutMetaBlob(kSnapshotRecordKey, record, "the snapshot record");
}

Result<std::string> RocksLogStore::GetSnapshotRecord() const {
  return GetMetaBlob(kSnapshotRecordKey, "the snapshot record");
}

Status RocksLogStore::SetInstallRecord(std::string_view record) {
  return PutMetaBlob(kInstallRecordKey, record, "the snapshot install record");
}

Result<std::string> RocksLogStore::GetInstallRecord() const {
  return GetMetaBlob(kInstallRecordKey, "the snapshot install record");
}

Status RocksLogStore::SetPeerAddresses(std::string_view record) {
  return PutMetaBlob(kPeerAddressesKey, record, "the peer addresses");
}

Result<std::string> RocksLogStore::GetPeerAddresses() const {
  return GetMetaBlob(kPeerAddressesKey, "the peer addresses");
}

Status RocksLogStore::SetClusterId(std::string_view id) { return PutMetaBlob(kClusterIdKey, id, "the cluster id"); }

Result<std::string> RocksLogStore::GetClusterId() const { return GetMetaBlob(kClusterIdKey, "the cluster id"); }

}  // namespace quiver::storage
