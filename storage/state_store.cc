#include "storage/state_store.h"

#include <rocksdb/db.h>
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
                                 std::string_view payload) {
  const std::string key = PointKey(collection_id, point_id);
  char header[kVectorHeaderBytes];
  EncodeVectorHeader(vector, header);
  const rocksdb::Slice key_slice(key);
  const rocksdb::Slice value_parts[2] = {rocksdb::Slice(header, kVectorHeaderBytes),
                                         rocksdb::Slice(reinterpret_cast<const char*>(vector.data()),
                                                        vector.size_bytes())};
  batch_->Put(db_->vectors(), rocksdb::SliceParts(&key_slice, 1), rocksdb::SliceParts(value_parts, 2));
  if (payload.empty()) {
    batch_->Delete(db_->payloads(), key);
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
  std::vector<rocksdb::ColumnFamilyHandle*> cfs = {db_->meta(), db_->vectors(), db_->payloads()};
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

}  // namespace quiver::storage
