#include "storage/state_store.h"

#include <sys/stat.h>

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_reader.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/write_batch.h>

#include "common/encoding.h"
#include "storage/records.h"

namespace quiver::storage {

StateStore::Batch::Batch() : batch_(std::make_unique<rocksdb::WriteBatch>()) {}
StateStore::Batch::~Batch() = default;

void StateStore::Batch::PutCollection(uint64_t collection_id, std::string_view meta) {
  batch_->Put(db_->meta(), CollectionMetaKey(collection_id), EncodeBlob(meta));
}

void StateStore::Batch::DeleteCollection(uint64_t collection_id) {
  batch_->Delete(db_->meta(), CollectionMetaKey(collection_id));
  const std::string lo = CollectionPrefix(collection_id);
  const std::string hi = CollectionPrefix(collection_id + 1);
  batch_->DeleteRange(db_->vectors(), lo, hi);
  batch_->DeleteRange(db_->payloads(), lo, hi);
}

void StateStore::Batch::PutPoint(uint64_t collection_id, uint64_t point_id, std::span<const float> vector,
                                 std::string_view payload, bool is_new) {
  const std::string key = PointKey(collection_id, point_id);
  char header[kVectorHeaderBytes];
  EncodeVectorHeader(vector, header);
  const rocksdb::Slice key_slice(key);
  const rocksdb::Slice value_parts[2] = {rocksdb::Slice(header, kVectorHeaderBytes),
                                         rocksdb::Slice(reinterpret_cast<const char*>(vector.data()),
                                                        vector.size_bytes())};
  batch_->Put(db_->vectors(), rocksdb::SliceParts(&key_slice, 1), rocksdb::SliceParts(value_parts, 2));
  if (payload.empty()) {
    if (!is_new) batch_->Delete(db_->payloads(), key);
  } else {
    batch_->Put(db_->payloads(), key, EncodeBlob(payload));
  }
}

void StateStore::Batch::DeletePoint(uint64_t collection_id, uint64_t point_id) {
  const std::string key = PointKey(collection_id, point_id);
  batch_->Delete(db_->vectors(), key);
  batch_->Delete(db_->payloads(), key);
}

void StateStore::Batch::SetAppliedIndex(uint64_t index) {
  batch_->Put(db_->meta(), std::string(kAppliedIndexKey), EncodeU64Pair(index, 0));
}

void StateStore::Batch::PutRequestRecord(std::string_view client_id, std::string_view record) {
  batch_->Put(db_->meta(), std::string(kRequestRecordPrefix) + std::string(client_id), EncodeBlob(record));
}

void StateStore::Batch::Clear() { ClearForReuse(batch_.get()); }

std::unique_ptr<StateStore::Batch> StateStore::NewBatch() const {
  auto b = std::make_unique<Batch>();
  b->db_ = db_;
  return b;
}

Status StateStore::Commit(Batch& batch) {
  rocksdb::WriteOptions wo;
  wo.disableWAL = true;  // the replicated log is the write-ahead log (see header)
  rocksdb::Status s = db_->raw()->Write(wo, batch.batch_.get());
  return FromRocks(&s, "writing applied state");
}

Status StateStore::Flush() {
  rocksdb::FlushOptions fo;
  fo.wait = true;
  fo.allow_write_stall = true;
  // The log too: a compaction staged for this flush (LogStore::StageCompaction)
  // must become durable at the same point as the state that covers it.
  std::vector<rocksdb::ColumnFamilyHandle*> cfs = {db_->meta(), db_->log(), db_->vectors(), db_->payloads()};
  rocksdb::Status s = db_->raw()->Flush(fo, cfs);
  return FromRocks(&s, "flushing applied state");
}

Result<uint64_t> StateStore::AppliedIndex() const {
  std::string value;
  rocksdb::Status s = db_->raw()->Get(rocksdb::ReadOptions(), db_->meta(), std::string(kAppliedIndexKey), &value);
  if (s.IsNotFound()) return uint64_t{0};
  if (!s.ok()) return FromRocks(&s, "reading applied index");
  QUIVER_ASSIGN_OR_RETURN(auto pair, DecodeU64Pair(kAppliedIndexKey, value));
  return pair.first;
}

Result<std::vector<StateStore::StoredCollection>> StateStore::LoadCollections() const {
  std::vector<StoredCollection> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->raw()->NewIterator(rocksdb::ReadOptions(), db_->meta()));
  for (it->Seek(std::string(kCollectionMetaPrefix)); it->Valid() && it->key().starts_with(kCollectionMetaPrefix);
       it->Next()) {
    const std::string_view key = it->key().ToStringView();
    if (key.size() != kCollectionMetaPrefix.size() + 8) {
      return Status::Corruption("collection key '" + EscapeKey(key) + "' has the wrong length");
    }
    QUIVER_ASSIGN_OR_RETURN(std::string_view meta, DecodeBlob(key, it->value().ToStringView()));
    out.push_back({DecodeFixed64BE(key.data() + kCollectionMetaPrefix.size()), std::string(meta)});
  }
  if (!it->status().ok()) {
    rocksdb::Status s = it->status();
    return FromRocks(&s, "scanning collections");
  }
  return out;
}

Result<std::vector<std::pair<std::string, std::string>>> StateStore::LoadRequestRecords() const {
  std::vector<std::pair<std::string, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->raw()->NewIterator(rocksdb::ReadOptions(), db_->meta()));
  for (it->Seek(std::string(kRequestRecordPrefix)); it->Valid() && it->key().starts_with(kRequestRecordPrefix);
       it->Next()) {
    const std::string_view key = it->key().ToStringView();
    QUIVER_ASSIGN_OR_RETURN(std::string_view record, DecodeBlob(key, it->value().ToStringView()));
    out.emplace_back(std::string(key.substr(kRequestRecordPrefix.size())), std::string(record));
  }
  if (!it->status().ok()) {
    rocksdb::Status s = it->status();
    return FromRocks(&s, "scanning request records");
  }
  return out;
}

Status StateStore::ForEachPoint(uint64_t collection_id, uint32_t dimension, const PointVisitor& visit) const {
  const std::string lo = CollectionPrefix(collection_id);
  const std::string hi = CollectionPrefix(collection_id + 1);
  rocksdb::Slice hi_slice(hi);
  rocksdb::ReadOptions ro;
  ro.iterate_upper_bound = &hi_slice;
  ro.fill_cache = false;  // a one-off scan at start must not evict the hot set
  std::unique_ptr<rocksdb::Iterator> vit(db_->raw()->NewIterator(ro, db_->vectors()));
  std::unique_ptr<rocksdb::Iterator> pit(db_->raw()->NewIterator(ro, db_->payloads()));
  pit->Seek(lo);
  std::vector<float> vec(dimension);
  for (vit->Seek(lo); vit->Valid(); vit->Next()) {
    const std::string_view key = vit->key().ToStringView();
    if (key.size() != 16) return Status::Corruption("vector key '" + EscapeKey(key) + "' has the wrong length");
    QUIVER_RETURN_IF_ERROR(DecodeVector(key, vit->value().ToStringView(), dimension, vec.data()));
    // Payload keys are a subset of vector keys: an orphan payload means a lost
    // vector, which is reported rather than paired with the wrong point.
    if (pit->Valid() && pit->key().compare(vit->key()) < 0) {
      return Status::Corruption("payload at key '" + EscapeKey(pit->key().ToStringView()) + "' has no vector");
    }
    std::string_view payload;
    if (pit->Valid() && pit->key() == vit->key()) {
      QUIVER_ASSIGN_OR_RETURN(payload, DecodeBlob(pit->key().ToStringView(), pit->value().ToStringView()));
    }
    QUIVER_RETURN_IF_ERROR(visit(DecodeFixed64BE(key.data() + 8), vec.data(), payload));
    if (pit->Valid() && pit->key() == vit->key()) pit->Next();
  }
  for (auto* it : {vit.get(), pit.get()}) {
    if (!it->status().ok()) {
      rocksdb::Status s = it->status();
      return FromRocks(&s, "scanning points of collection " + std::to_string(collection_id));
    }
  }
  return Status::Ok();
}

namespace {

// The meta column family also holds the node's Raft state and segment list:
// only these keys are applied state.
bool IsStateMetaKey(std::string_view key) {
  return key == kAppliedIndexKey || key.starts_with(kCollectionMetaPrefix) || key.starts_with(kRequestRecordPrefix);
}

// One past every key that starts with `prefix` ("collection/" -> "collection0").
std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  end.back() = static_cast<char>(end.back() + 1);
  return end;
}

// Point keys are 16 bytes: this sorts after all of them.
const std::string kAfterEveryPointKey(17, '\xff');

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

Result<uint64_t> StateStore::ExportSnapshot(const std::string& dir, const std::atomic<bool>* stop) const {
  rocksdb::DB* raw = db_->raw();
  // One RocksDB snapshot for every part: the applied index, the points and
  // the collections it covers are of the same instant (the apply thread
  // writes them in one batch).
  const rocksdb::Snapshot* snap = raw->GetSnapshot();
  struct Release {
    rocksdb::DB* db;
    const rocksdb::Snapshot* snap;
    ~Release() { db->ReleaseSnapshot(snap); }
  } release{raw, snap};
  rocksdb::ReadOptions ro;
  ro.snapshot = snap;
  ro.fill_cache = false;

  std::string value;
  rocksdb::Status s = raw->Get(ro, db_->meta(), std::string(kAppliedIndexKey), &value);
  if (s.IsNotFound()) return Status::FailedPrecondition("nothing has been applied: there is no state to export");
  if (!s.ok()) return FromRocks(&s, "reading applied index");
  QUIVER_ASSIGN_OR_RETURN(auto applied, DecodeU64Pair(kAppliedIndexKey, value));

  struct Part {
    rocksdb::ColumnFamilyHandle* cf;
    std::string_view file;
    bool meta;
  };
  for (const Part& part : {Part{db_->meta(), kSnapshotMetaFile, true}, Part{db_->vectors(), kSnapshotVectorsFile, false},
                           Part{db_->payloads(), kSnapshotPayloadsFile, false}}) {
    const std::string path = dir + "/" + std::string(part.file);
    rocksdb::Options options;
    options.compression = part.cf == db_->vectors() ? rocksdb::kNoCompression : rocksdb::kSnappyCompression;
    rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), options);
    bool open = false;
    size_t n = 0;
    std::unique_ptr<rocksdb::Iterator> it(raw->NewIterator(ro, part.cf));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      if (part.meta && !IsStateMetaKey(it->key().ToStringView())) continue;
      if ((++n & 0xfff) == 0 && stop != nullptr && stop->load()) {
        return Status::Cancelled("shutdown requested while exporting a snapshot");
      }
      if (!open) {
        s = writer.Open(path);
        if (!s.ok()) return FromRocks(&s, "creating " + path);
        open = true;
      }
      s = writer.Put(it->key(), it->value());
      if (!s.ok()) return FromRocks(&s, "writing " + path);
    }
    if (!it->status().ok()) {
      s = it->status();
      return FromRocks(&s, "reading state for " + path);
    }
    if (open) {
      s = writer.Finish();  // also syncs the file
      if (!s.ok()) return FromRocks(&s, "finishing " + path);
    }
  }
  return applied.first;
}

Result<uint64_t> StateStore::ImportSnapshot(const std::string& dir) {
  struct Part {
    rocksdb::ColumnFamilyHandle* cf;
    std::string path;
  };
  std::vector<Part> parts;
  for (const Part& part : {Part{db_->meta(), dir + "/" + std::string(kSnapshotMetaFile)},
                           Part{db_->vectors(), dir + "/" + std::string(kSnapshotVectorsFile)},
                           Part{db_->payloads(), dir + "/" + std::string(kSnapshotPayloadsFile)}}) {
    if (FileExists(part.path)) parts.push_back(part);
  }
  if (parts.empty() || parts.front().cf != db_->meta()) {
    return Status::Corruption("snapshot in " + dir + " has no " + std::string(kSnapshotMetaFile));
  }
  // Every file whole before anything changes; the records inside are
  // validated again when the engine loads them.
  for (const Part& part : parts) {
    rocksdb::Options options;
    rocksdb::SstFileReader reader(options);
    rocksdb::Status s = reader.Open(part.path);
    if (s.ok()) s = reader.VerifyChecksum();
    if (!s.ok()) return Status::Corruption("snapshot file " + part.path + " is damaged: " + s.ToString());
  }

  rocksdb::WriteBatch wipe;
  wipe.Delete(db_->meta(), std::string(kAppliedIndexKey));
  for (std::string_view prefix : {kCollectionMetaPrefix, kRequestRecordPrefix}) {
    wipe.DeleteRange(db_->meta(), std::string(prefix), PrefixEnd(prefix));
  }
  wipe.DeleteRange(db_->vectors(), std::string(), kAfterEveryPointKey);
  wipe.DeleteRange(db_->payloads(), std::string(), kAfterEveryPointKey);
  rocksdb::WriteOptions wo;
  wo.sync = true;
  rocksdb::Status s = db_->raw()->Write(wo, &wipe);
  QUIVER_RETURN_IF_ERROR(FromRocks(&s, "clearing the state before installing a snapshot"));

  std::vector<rocksdb::IngestExternalFileArg> args;
  for (const Part& part : parts) {
    rocksdb::IngestExternalFileArg arg;
    arg.column_family = part.cf;
    arg.external_files = {part.path};
    arg.options.move_files = false;  // the files stay for a redo after a crash
    arg.options.allow_global_seqno = true;
    arg.options.allow_blocking_flush = true;
    arg.options.verify_checksums_before_ingest = false;  // checked above
    args.push_back(std::move(arg));
  }
  s = db_->raw()->IngestExternalFiles(args);  // atomic across the column families
  QUIVER_RETURN_IF_ERROR(FromRocks(&s, "ingesting the snapshot in " + dir));
  QUIVER_ASSIGN_OR_RETURN(uint64_t applied, AppliedIndex());
  if (applied == 0) return Status::Corruption("snapshot in " + dir + " holds no applied index");
  return applied;
}

}  // namespace quiver::storage
