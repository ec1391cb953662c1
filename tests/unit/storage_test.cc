// Record validation and the state store: every corrupt record is an error
// naming its key, never a crash or a silent skip.
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <sys/vfs.h>

#include <filesystem>

#include "common/encoding.h"
#include "storage/db.h"
#include "storage/records.h"
#include "storage/rocks_log_store.h"
#include "storage/state_store.h"
#include "test_util.h"

namespace quiver::storage {
namespace {

TEST(Encoding, BigEndianKeysSortNumerically) {
  EXPECT_LT(LogKey(255), LogKey(256));
  EXPECT_LT(LogKey(1), LogKey(1ull << 40));
  EXPECT_LT(PointKey(1, UINT64_MAX), PointKey(2, 0));
  EXPECT_EQ(DecodeFixed64BE(LogKey(0x0102030405060708ull).data()), 0x0102030405060708ull);
}

TEST(Records, LogEntryRoundTripAndCorruption) {
  LogEntry e{9, 3, EntryType::kCommand, std::string("payload\0bytes", 13)};
  std::string v = EncodeLogEntry(e);
  auto back = DecodeLogEntry(LogKey(9), 9, v);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, e);
  for (size_t i = 0; i < v.size(); ++i) {
    std::string bad = v;
    bad[i] ^= 0x20;
    auto r = DecodeLogEntry(LogKey(9), 9, bad);
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << "flip at byte " << i;
  }
  auto truncated = DecodeLogEntry(LogKey(9), 9, v.substr(0, 3));
  EXPECT_EQ(truncated.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(truncated.status().message().find("\\x00"), std::string::npos) << "message names the key";
}

TEST(Records, VectorHeaderPlusFloatsEqualsEncodedVector) {
  std::vector<float> v = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f};
  char header[kVectorHeaderBytes];
  EncodeVectorHeader(v, header);
  std::string joined(header, kVectorHeaderBytes);
  joined.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  EXPECT_EQ(joined, EncodeVector(v));
  EXPECT_EQ(ChecksumExtend(Checksum("abc"), "def"), Checksum("abcdef"));
  // libdeflate answers 0 for a null buffer; an empty view may have one.
  EXPECT_EQ(ChecksumExtend(Checksum("abc"), std::string_view()), Checksum("abc"));
  EXPECT_EQ(Checksum("123456789"), 0xCBF43926u) << "the standard CRC-32 check value (zlib, gzip, PNG)";
  EXPECT_EQ(Checksum(""), 0u);
}

TEST(Records, VectorDimensionChecked) {
  std::vector<float> v = {1, 2, 3};
  std::string rec = EncodeVector(v);
  std::vector<float> out(3);
  EXPECT_TRUE(DecodeVector("k", rec, 3, out.data()).ok());
  EXPECT_EQ(out, v);
  std::vector<float> out4(4);
  EXPECT_EQ(DecodeVector("k", rec, 4, out4.data()).code(), StatusCode::kDataLoss);
}

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open() {
    store_.reset();
    db_.reset();
    db_ = std::move(Db::Open(dir_.path())).value();
    store_ = std::make_unique<StateStore>(db_.get());
  }
  quiver::testing::TempDir dir_;
  std::unique_ptr<Db> db_;
  std::unique_ptr<StateStore> store_;
};

TEST_F(StateStoreTest, PointsAndAppliedIndexCommitTogether) {
  auto b = store_->NewBatch();
  b->PutCollection(5, "meta5");
  std::vector<float> v = {1, 2};
  b->PutPoint(5, 10, v, "p10");
  b->PutPoint(5, 11, v, "");
  b->PutPoint(6, 1, v, "other");
  b->SetAppliedIndex(42);
  ASSERT_TRUE(store_->Commit(*b).ok());
  Open();
  EXPECT_EQ(*store_->AppliedIndex(), 42u);
  auto colls = store_->LoadCollections();
  ASSERT_TRUE(colls.ok());
  ASSERT_EQ(colls->size(), 1u);
  EXPECT_EQ((*colls)[0].id, 5u);
  EXPECT_EQ((*colls)[0].meta, "meta5");
  std::vector<std::pair<uint64_t, std::string>> seen;
  ASSERT_TRUE(store_->ForEachPoint(5, 2, [&](uint64_t id, const float* vec, std::string_view payload) {
                EXPECT_EQ(vec[1], 2.0f);
                seen.emplace_back(id, std::string(payload));
                return Status::Ok();
              }).ok());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], std::make_pair(uint64_t{10}, std::string("p10")));
  EXPECT_EQ(seen[1], std::make_pair(uint64_t{11}, std::string()));
}

// ext4 and XFS take O_DIRECT writes of 4 KiB-aligned blocks: a probe that
// says no there would silently put every flush back through the page cache.
TEST(Db, DirectIoProbeSaysYesOnExt4AndXfs) {
  quiver::testing::TempDir dir;
  struct statfs fs {};
  ASSERT_EQ(statfs(dir.path().c_str(), &fs), 0);
  constexpr long kExt4 = 0xEF53, kXfs = 0x58465342;
  if (fs.f_type != kExt4 && fs.f_type != kXfs) {
    GTEST_SKIP() << "the temporary directory is on file system type 0x" << std::hex << fs.f_type
                 << ", neither ext4 nor XFS";
  }
  EXPECT_TRUE(DirectIoSupported(dir.path())) << dir.path();
  auto db = std::move(Db::Open(dir.path())).value();
  EXPECT_TRUE(db->direct_flush_writes());
}

// Flushes write SSTs with O_DIRECT where the file system takes it; sizes
// that are not multiples of the 4 KiB block must still read back whole,
// after a restart, with and without it.
TEST(Db, FlushedStateReadsBackWithAndWithoutDirectWrites) {
  EXPECT_FALSE(DirectIoSupported("/nonexistent/quiver")) << "a directory that cannot be written";
  for (const bool direct : {true, false}) {
    SCOPED_TRACE(direct ? "direct flush writes" : "buffered flush writes");
    quiver::testing::TempDir dir;
    {
      auto db = std::move(Db::Open(dir.path(), {.direct_flush_writes = direct})).value();
      EXPECT_EQ(db->direct_flush_writes(), direct && DirectIoSupported(dir.path()));
      StateStore store(db.get());
      auto b = store.NewBatch();
      std::vector<float> v(37);
      for (uint64_t id = 0; id < 3001; ++id) {
        v[id % v.size()] = static_cast<float>(id);
        b->PutPoint(7, id, v, id % 3 == 0 ? std::string(id % 101, 'p') : std::string());
      }
      b->SetAppliedIndex(3001);
      ASSERT_TRUE(store.Commit(*b).ok());
      ASSERT_TRUE(store.Flush().ok());
    }
    auto db = std::move(Db::Open(dir.path(), {.direct_flush_writes = direct})).value();
    StateStore store(db.get());
    EXPECT_EQ(*store.AppliedIndex(), 3001u);
    uint64_t next = 0;
    ASSERT_TRUE(store.ForEachPoint(7, 37, [&](uint64_t id, const float* vec, std::string_view payload) {
                  EXPECT_EQ(id, next++);
                  EXPECT_EQ(vec[id % 37], static_cast<float>(id));
                  EXPECT_EQ(payload.size(), id % 3 == 0 ? id % 101 : 0u);
                  return Status::Ok();
                }).ok());
    EXPECT_EQ(next, 3001u);
  }
}

TEST_F(StateStoreTest, DeleteCollectionRemovesAllItsPoints) {
  auto b = store_->NewBatch();
  b->PutCollection(5, "m");
  std::vector<float> v = {1};
  for (uint64_t i = 0; i < 100; ++i) b->PutPoint(5, i, v, "x");
  ASSERT_TRUE(store_->Commit(*b).ok());
  auto d = store_->NewBatch();
  d->DeleteCollection(5);
  ASSERT_TRUE(store_->Commit(*d).ok());
  size_t n = 0;
  ASSERT_TRUE(store_->ForEachPoint(5, 1, [&](uint64_t, const float*, std::string_view) {
                ++n;
                return Status::Ok();
              }).ok());
  EXPECT_EQ(n, 0u);
  EXPECT_TRUE(store_->LoadCollections()->empty());
}

TEST_F(StateStoreTest, NewPointsWithoutPayloadWriteNoPayloadTombstone) {
  auto deletes_in_memtable = [&] {
    uint64_t n = 0;
    EXPECT_TRUE(db_->raw()->GetIntProperty(db_->payloads(), "rocksdb.num-deletes-active-mem-table", &n));
    return n;
  };
  std::vector<float> v = {1};
  auto b = store_->NewBatch();
  for (uint64_t i = 0; i < 10; ++i) b->PutPoint(5, i, v, "", /*is_new=*/true);
  ASSERT_TRUE(store_->Commit(*b).ok());
  EXPECT_EQ(deletes_in_memtable(), 0u);
  auto again = store_->NewBatch();
  for (uint64_t i = 0; i < 10; ++i) again->PutPoint(5, i, v, "");  // may have had one: removed
  ASSERT_TRUE(store_->Commit(*again).ok());
  EXPECT_EQ(deletes_in_memtable(), 10u);
}

// The engine reuses one batch for every apply: what it held before Clear must
// not be written again (here: a point deleted meanwhile coming back).
TEST_F(StateStoreTest, ClearedBatchWritesOnlyWhatFollows) {
  std::vector<float> v = {1};
  auto b = store_->NewBatch();
  b->PutPoint(5, 1, v, "");
  ASSERT_TRUE(store_->Commit(*b).ok());
  auto del = store_->NewBatch();
  del->DeletePoint(5, 1);
  ASSERT_TRUE(store_->Commit(*del).ok());
  b->Clear();
  b->PutPoint(5, 2, v, "");
  ASSERT_TRUE(store_->Commit(*b).ok());
  std::vector<uint64_t> ids;
  ASSERT_TRUE(store_
                  ->ForEachPoint(5, 1,
                                 [&](uint64_t id, const float*, std::string_view) {
                                   ids.push_back(id);
                                   return Status::Ok();
                                 })
                  .ok());
  EXPECT_EQ(ids, std::vector<uint64_t>{2});
}

TEST(EntryDataTest, TakesItsBytesWithoutACopyAndSharesThem) {
  std::string bytes(4096, 'v');
  const char* buffer = bytes.data();
  EntryData a(std::move(bytes));
  EXPECT_EQ(a.data(), buffer);  // moved in
  EntryData b = a;
  EXPECT_EQ(b.data(), buffer);  // shared
  EXPECT_EQ(a, b);
  EXPECT_EQ(b, std::string(4096, 'v'));
  EXPECT_EQ(EntryData(), "");
  EXPECT_EQ(EntryData("").size(), 0u);
  EXPECT_NE(EntryData().data(), nullptr);  // checksums and slices of it see no null buffer
}

TEST_F(StateStoreTest, CorruptVectorIsReportedWithItsKey) {
  auto b = store_->NewBatch();
  std::vector<float> v = {1, 2};
  b->PutPoint(7, 3, v, "");
  ASSERT_TRUE(store_->Commit(*b).ok());
  // Overwrite the record with garbage behind the store's back.
  ASSERT_TRUE(db_->raw()->Put(rocksdb::WriteOptions(), db_->vectors(), PointKey(7, 3), "garbage!").ok());
  Status st = store_->ForEachPoint(7, 2, [](uint64_t, const float*, std::string_view) { return Status::Ok(); });
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("vector record at key"), std::string::npos) << st.message();
}

TEST_F(StateStoreTest, CorruptLogEntryIsReportedNotSkipped) {
  auto log = std::move(RocksLogStore::Open(db_.get())).value();
  std::vector<LogEntry> entries = {{1, 1, EntryType::kCommand, "a"}, {2, 1, EntryType::kCommand, "b"}};
  ASSERT_TRUE(log->Append(entries, nullptr).ok());
  ASSERT_TRUE(db_->raw()->Put(rocksdb::WriteOptions(), db_->log(), LogKey(2), "xxxxxxxxxxxxxxxx").ok());
  auto got = log->Entries(1, 3, UINT64_MAX);
  EXPECT_EQ(got.status().code(), StatusCode::kDataLoss);
}

TEST_F(StateStoreTest, MissingLogEntryInsideBoundsIsCorruption) {
  auto log = std::move(RocksLogStore::Open(db_.get())).value();
  std::vector<LogEntry> entries = {{1, 1, EntryType::kCommand, "a"}, {2, 1, EntryType::kCommand, "b"},
                                   {3, 1, EntryType::kCommand, "c"}};
  ASSERT_TRUE(log->Append(entries, nullptr).ok());
  ASSERT_TRUE(db_->raw()->Delete(rocksdb::WriteOptions(), db_->log(), LogKey(2)).ok());
  EXPECT_EQ(log->Entries(1, 4, UINT64_MAX).status().code(), StatusCode::kDataLoss);
  // A hole at the head is found when the log is opened.
  ASSERT_TRUE(db_->raw()->Delete(rocksdb::WriteOptions(), db_->log(), LogKey(1)).ok());
  log.reset();
  EXPECT_EQ(RocksLogStore::Open(db_.get()).status().code(), StatusCode::kDataLoss);
}

// What a crash would leave on disk now: a copy of the files of the open
// database. Synced writes are in them; writes without the WAL that no flush
// has persisted are not.
void CopyAsCrashImage(const std::string& from, const std::string& to) {
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive);
}

// A database and its log store opened from a crash image (log null if
// either failed to open, with the failure reported).
struct CrashImage {
  explicit CrashImage(const std::string& dir) {
    auto opened = Db::Open(dir);
    if (!opened.ok()) {
      ADD_FAILURE() << opened.status().ToString();
      return;
    }
    db = std::move(opened).value();
    auto store = RocksLogStore::Open(db.get());
    if (!store.ok()) {
      ADD_FAILURE() << store.status().ToString();
      return;
    }
    log = std::move(store).value();
  }
  std::unique_ptr<Db> db;
  std::unique_ptr<RocksLogStore> log;
};

uint64_t LogSstBytes(Db* db) {
  uint64_t bytes = 0;
  EXPECT_TRUE(db->raw()->GetIntProperty(db->log(), "rocksdb.total-sst-files-size", &bytes));
  return bytes;
}

// The checkpoint's order (raft_replicator.cc): stage the compaction of
// applied entries, then flush the state. Before the flush a crash keeps the
// whole log and the old snapshot record; after it both changed, and the
// compacted entries never reached an SST file.
TEST_F(StateStoreTest, StagedLogCompactionIsDurableOnlyWithTheStatesFlush) {
  auto log = std::move(RocksLogStore::Open(db_.get())).value();
  const std::string big(100000, 'v');
  std::vector<LogEntry> entries;
  for (uint64_t i = 1; i <= 10; ++i) entries.push_back({i, 2, EntryType::kCommand, big + std::to_string(i)});
  ASSERT_TRUE(log->Append(entries, nullptr).ok());
  ASSERT_TRUE(log->SetSnapshotRecord("old").ok());
  auto b = store_->NewBatch();
  b->SetAppliedIndex(8);  // entries 1..8 applied, not yet flushed
  ASSERT_TRUE(store_->Commit(*b).ok());
  ASSERT_TRUE(log->StageCompaction(6, "at 6").ok());

  quiver::testing::TempDir crashes;
  CopyAsCrashImage(dir_.path(), crashes.path() + "/before");
  ASSERT_TRUE(store_->Flush().ok());
  EXPECT_LT(LogSstBytes(db_.get()), 5 * big.size()) << "compacted entries were written to SST files";
  CopyAsCrashImage(dir_.path(), crashes.path() + "/after");

  {
    CrashImage before(crashes.path() + "/before");
    ASSERT_NE(before.log, nullptr);
    EXPECT_EQ(before.log->FirstIndex(), 1u);
    EXPECT_EQ(before.log->LastIndex(), 10u);
    EXPECT_EQ(before.log->Entries(1, 11, UINT64_MAX)->size(), 10u);
    EXPECT_EQ(*before.log->GetSnapshotRecord(), "old");
    EXPECT_EQ(*StateStore(before.db.get()).AppliedIndex(), 0u);
  }
  CrashImage after(crashes.path() + "/after");
  ASSERT_NE(after.log, nullptr);
  EXPECT_EQ(after.log->FirstIndex(), 7u);
  EXPECT_EQ(after.log->LastIndex(), 10u);
  EXPECT_EQ(*after.log->Term(6), 2u);
  auto kept = after.log->Entries(7, 11, UINT64_MAX);
  ASSERT_TRUE(kept.ok());
  ASSERT_EQ(kept->size(), 4u);
  EXPECT_EQ(kept->front().data, big + "7");
  EXPECT_EQ(*after.log->GetSnapshotRecord(), "at 6");
  EXPECT_EQ(*StateStore(after.db.get()).AppliedIndex(), 8u);
}

}  // namespace
}  // namespace quiver::storage
