// One conformance suite that every LogStore implementation passes
// (the contract is written in storage/log_store.h).
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "storage/db.h"
#include "storage/log_store.h"
#include "storage/rocks_log_store.h"
#include "test_util.h"

namespace quiver::storage {
namespace {

// Each factory owns whatever its store needs (a database, a directory).
struct MemoryFactory {
  std::unique_ptr<MemoryLogStore> store = std::make_unique<MemoryLogStore>();
  LogStore* get() { return store.get(); }
  // A memory store has nothing to reopen; it stands for itself.
  LogStore* Reopen() { return store.get(); }
};

struct RocksFactory {
  quiver::testing::TempDir dir;
  std::unique_ptr<Db> db;
  std::unique_ptr<RocksLogStore> store;
  RocksFactory() { Reopen(); }
  LogStore* get() { return store.get(); }
  LogStore* Reopen() {
    store.reset();
    db.reset();
    auto d = Db::Open(dir.path());
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    db = std::move(d).value();
    auto s = RocksLogStore::Open(db.get());
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    store = std::move(s).value();
    return store.get();
  }
};

template <typename F>
class LogStoreConformance : public ::testing::Test {
 protected:
  F factory;
};

using Factories = ::testing::Types<MemoryFactory, RocksFactory>;
TYPED_TEST_SUITE(LogStoreConformance, Factories);

std::vector<LogEntry> Make(uint64_t lo, uint64_t hi, uint64_t term) {
  std::vector<LogEntry> v;
  for (uint64_t i = lo; i <= hi; ++i) v.push_back({i, term, EntryType::kCommand, "entry-" + std::to_string(i)});
  return v;
}

TYPED_TEST(LogStoreConformance, EmptyLog) {
  LogStore* s = this->factory.get();
  EXPECT_EQ(s->FirstIndex(), 1u);
  EXPECT_EQ(s->LastIndex(), 0u);
  EXPECT_EQ(*s->Term(0), 0u);
  EXPECT_EQ(s->Term(1).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(*s->GetHardState(), HardState{});
  auto e = s->Entries(1, 1, 100);
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->empty());
}

TYPED_TEST(LogStoreConformance, AppendAndReadBack) {
  LogStore* s = this->factory.get();
  auto entries = Make(1, 10, 1);
  HardState hs{1, 0, 10};
  ASSERT_TRUE(s->Append(entries, &hs).ok());
  EXPECT_EQ(s->LastIndex(), 10u);
  EXPECT_EQ(*s->GetHardState(), hs);
  auto got = s->Entries(1, 11, UINT64_MAX);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, entries);
  EXPECT_EQ(*s->Term(5), 1u);
}

TYPED_TEST(LogStoreConformance, SurvivesReopen) {
  LogStore* s = this->factory.get();
  auto entries = Make(1, 5, 3);
  HardState hs{3, 2, 4};
  ASSERT_TRUE(s->Append(entries, &hs).ok());
  s = this->factory.Reopen();
  EXPECT_EQ(s->LastIndex(), 5u);
  EXPECT_EQ(*s->GetHardState(), hs);
  EXPECT_EQ(*s->Entries(1, 6, UINT64_MAX), entries);
}

// A leader's no-op carries no data at all (an empty EntryData holds no buffer).
TYPED_TEST(LogStoreConformance, EntriesWithoutDataSurviveReopen) {
  LogStore* s = this->factory.get();
  std::vector<LogEntry> entries = {{1, 1, EntryType::kNoop, EntryData()}, {2, 1, EntryType::kCommand, ""}};
  ASSERT_TRUE(s->Append(entries, nullptr).ok());
  s = this->factory.Reopen();
  auto back = s->Entries(1, 3, UINT64_MAX);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, entries);
}

TYPED_TEST(LogStoreConformance, ConflictingAppendReplacesSuffix) {
  LogStore* s = this->factory.get();
  ASSERT_TRUE(s->Append(Make(1, 10, 1), nullptr).ok());
  ASSERT_TRUE(s->Append(Make(6, 7, 2), nullptr).ok());
  EXPECT_EQ(s->LastIndex(), 7u);
  EXPECT_EQ(*s->Term(5), 1u);
  EXPECT_EQ(*s->Term(6), 2u);
  EXPECT_EQ(s->Term(8).status().code(), StatusCode::kOutOfRange);
  s = this->factory.Reopen();
  EXPECT_EQ(s->LastIndex(), 7u);
}

TYPED_TEST(LogStoreConformance, RejectsGapsAndNonContiguousAppends) {
  LogStore* s = this->factory.get();
  ASSERT_TRUE(s->Append(Make(1, 3, 1), nullptr).ok());
  EXPECT_FALSE(s->Append(Make(5, 6, 1), nullptr).ok());  // gap
  std::vector<LogEntry> holes = {{4, 1, EntryType::kCommand, "a"}, {6, 1, EntryType::kCommand, "b"}};
  EXPECT_FALSE(s->Append(holes, nullptr).ok());
  EXPECT_EQ(s->LastIndex(), 3u);  // nothing changed
}

TYPED_TEST(LogStoreConformance, EntriesRespectsByteBudgetButReturnsOne) {
  LogStore* s = this->factory.get();
  ASSERT_TRUE(s->Append(Make(1, 10, 1), nullptr).ok());
  auto one = s->Entries(1, 11, 0);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->size(), 1u);
  const uint64_t per = Make(1, 1, 1)[0].data.size();
  auto three = s->Entries(1, 11, per * 3);
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(three->size(), 3u);
  EXPECT_EQ(s->Entries(1, 12, 100).status().code(), StatusCode::kOutOfRange);
}

TYPED_TEST(LogStoreConformance, CompactionKeepsTermOfCompactionPoint) {
  LogStore* s = this->factory.get();
  ASSERT_TRUE(s->Append(Make(1, 10, 4), nullptr).ok());
  ASSERT_TRUE(s->CompactTo(6).ok());
  EXPECT_EQ(s->FirstIndex(), 7u);
  EXPECT_EQ(*s->Term(6), 4u);
  EXPECT_EQ(s->Term(5).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s->Entries(5, 8, 100).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s->Entries(7, 11, UINT64_MAX)->size(), 4u);
  EXPECT_FALSE(s->CompactTo(11).ok());
  EXPECT_FALSE(s->Append(Make(3, 4, 4), nullptr).ok());  // below the first index
  ASSERT_TRUE(s->Append(Make(11, 12, 5), nullptr).ok());
  s = this->factory.Reopen();
  EXPECT_EQ(s->FirstIndex(), 7u);
  EXPECT_EQ(s->LastIndex(), 12u);
  EXPECT_EQ(*s->Term(6), 4u);
}

// Terms as Raft asks for them, through restarts, replaced suffixes (of
// entries written before and after a restart) and compaction: the RocksDB
// store answers recent terms from memory and older ones from disk.
TYPED_TEST(LogStoreConformance, TermsStayRightAcrossReopenReplacementAndCompaction) {
  LogStore* s = this->factory.get();
  ASSERT_TRUE(s->Append(Make(1, 10, 1), nullptr).ok());
  s = this->factory.Reopen();
  ASSERT_TRUE(s->Append(Make(6, 8, 2), nullptr).ok());  // replaces entries from before the restart
  EXPECT_EQ(*s->Term(5), 1u);
  for (uint64_t i = 6; i <= 8; ++i) EXPECT_EQ(*s->Term(i), 2u) << i;
  EXPECT_EQ(s->Term(9).status().code(), StatusCode::kOutOfRange);
  ASSERT_TRUE(s->Append(Make(9, 12, 2), nullptr).ok());
  ASSERT_TRUE(s->Append(Make(10, 10, 3), nullptr).ok());  // replaces entries from this run
  EXPECT_EQ(*s->Term(9), 2u);
  EXPECT_EQ(*s->Term(10), 3u);
  EXPECT_EQ(s->Term(11).status().code(), StatusCode::kOutOfRange);
  ASSERT_TRUE(s->CompactTo(7).ok());
  EXPECT_EQ(*s->Term(7), 2u);
  EXPECT_EQ(*s->Term(8), 2u);
  EXPECT_EQ(s->Term(6).status().code(), StatusCode::kOutOfRange);
  s = this->factory.Reopen();
  EXPECT_EQ(*s->Term(7), 2u);
  EXPECT_EQ(*s->Term(9), 2u);
  EXPECT_EQ(*s->Term(10), 3u);
  // Everything compacted, then a restart with an empty log, then new entries.
  ASSERT_TRUE(s->CompactTo(10).ok());
  s = this->factory.Reopen();
  EXPECT_EQ(*s->Term(10), 3u);
  ASSERT_TRUE(s->Append(Make(11, 12, 4), nullptr).ok());
  EXPECT_EQ(*s->Term(11), 4u);
  EXPECT_EQ(*s->Term(12), 4u);
  ASSERT_TRUE(s->CompactTo(11).ok());
  EXPECT_EQ(*s->Term(12), 4u);
  ASSERT_TRUE(s->Append(Make(13, 13, 5), nullptr).ok());
  EXPECT_EQ(*s->Term(13), 5u);
  EXPECT_EQ(s->Entries(12, 14, UINT64_MAX)->size(), 2u);
}

TYPED_TEST(LogStoreConformance, HardStateAloneIsStored) {
  LogStore* s = this->factory.get();
  HardState hs{7, 3, 0};
  ASSERT_TRUE(s->Append({}, &hs).ok());
  EXPECT_EQ(*s->GetHardState(), hs);
  s = this->factory.Reopen();
  EXPECT_EQ(*s->GetHardState(), hs);
}

TYPED_TEST(LogStoreConformance, ResetToSnapshotDropsEveryEntry) {
  LogStore* s = this->factory.get();
  ASSERT_TRUE(s->Append(Make(1, 10, 2), nullptr).ok());
  ASSERT_TRUE(s->CompactTo(3).ok());
  // A snapshot beyond the log (the usual case for a lagging follower).
  HardState hs{9, 2, 40};
  ASSERT_TRUE(s->ResetToSnapshot(40, 8, hs).ok());
  EXPECT_EQ(s->FirstIndex(), 41u);
  EXPECT_EQ(s->LastIndex(), 40u);
  EXPECT_EQ(*s->Term(40), 8u);
  EXPECT_EQ(s->Term(10).status().code(), StatusCode::kOutOfRange);
  EXPECT_FALSE(s->Append(Make(40, 40, 9), nullptr).ok());  // at or below the snapshot
  ASSERT_TRUE(s->Append(Make(41, 42, 9), nullptr).ok());
  s = this->factory.Reopen();
  EXPECT_EQ(*s->GetHardState(), hs);
  EXPECT_EQ(s->FirstIndex(), 41u);
  EXPECT_EQ(s->LastIndex(), 42u);
  EXPECT_EQ(*s->Term(40), 8u);
  EXPECT_EQ(s->Entries(41, 43, UINT64_MAX)->back().data, "entry-42");
  // A snapshot inside the log replaces it too.
  ASSERT_TRUE(s->ResetToSnapshot(41, 9, hs).ok());
  EXPECT_EQ(s->LastIndex(), 41u);
  s = this->factory.Reopen();
  EXPECT_EQ(s->FirstIndex(), 42u);
  EXPECT_EQ(s->LastIndex(), 41u);
}

TYPED_TEST(LogStoreConformance, StagedCompactionIsVisibleAtOnce) {
  LogStore* s = this->factory.get();
  ASSERT_TRUE(s->Append(Make(1, 10, 3), nullptr).ok());
  ASSERT_TRUE(s->SetSnapshotRecord("old").ok());
  ASSERT_TRUE(s->StageCompaction(6, "at 6").ok());
  EXPECT_EQ(s->FirstIndex(), 7u);
  EXPECT_EQ(*s->Term(6), 3u);
  EXPECT_EQ(s->Entries(6, 8, 100).status().code(), StatusCode::kOutOfRange);
  EXPECT_EQ(s->Entries(7, 11, UINT64_MAX)->size(), 4u);
  EXPECT_EQ(*s->GetSnapshotRecord(), "at 6");
  // Nothing at or below the compaction point: the record stays as it is.
  ASSERT_TRUE(s->StageCompaction(5, "at 5").ok());
  EXPECT_EQ(*s->GetSnapshotRecord(), "at 6");
  EXPECT_FALSE(s->StageCompaction(11, "past the end").ok());
  EXPECT_EQ(s->FirstIndex(), 7u);
}

TYPED_TEST(LogStoreConformance, ClusterIdIsStored) {
  LogStore* s = this->factory.get();
  EXPECT_EQ(*s->GetClusterId(), "");
  ASSERT_TRUE(s->SetClusterId("c-123").ok());
  s = this->factory.Reopen();
  EXPECT_EQ(*s->GetClusterId(), "c-123");
}

TYPED_TEST(LogStoreConformance, SnapshotRecordIsStoredWhole) {
  LogStore* s = this->factory.get();
  EXPECT_EQ(*s->GetSnapshotRecord(), "");
  const std::string record("snapshot\0meta", 13);
  ASSERT_TRUE(s->SetSnapshotRecord(record).ok());
  EXPECT_EQ(*s->GetSnapshotRecord(), record);
  s = this->factory.Reopen();
  EXPECT_EQ(*s->GetSnapshotRecord(), record);
  ASSERT_TRUE(s->SetSnapshotRecord("newer").ok());
  EXPECT_EQ(*s->GetSnapshotRecord(), "newer");
}

// Only a change of the commit index alone may skip the sync: entries, a new
// term and a new vote must be durable before anything promises them.
TEST(AppendMustSync, OnlyACommitIndexAloneSkipsTheSync) {
  const HardState current{3, 2, 10};
  const LogEntry entry{11, 3, EntryType::kCommand, std::string("x")};
  const std::vector<LogEntry> one{entry};
  EXPECT_TRUE(AppendMustSync(one, nullptr, current));
  const HardState advanced{3, 2, 11};
  EXPECT_TRUE(AppendMustSync(one, &advanced, current)) << "entries with a commit index";
  EXPECT_FALSE(AppendMustSync({}, &advanced, current));
  EXPECT_FALSE(AppendMustSync({}, &current, current)) << "an unchanged hard state";
  const HardState new_term{4, 0, 10};
  EXPECT_TRUE(AppendMustSync({}, &new_term, current));
  const HardState new_vote{3, 1, 10};
  EXPECT_TRUE(AppendMustSync({}, &new_vote, current));
}

}  // namespace
}  // namespace quiver::storage
