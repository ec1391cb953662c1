#include "engine/engine.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <unordered_set>

#include "common/encoding.h"
#include "common/thread_name.h"
#include "engine/validation.h"
#include "quiver/internal/v1/wal.pb.h"

namespace quiver::engine {

using quiver::internal::v1::Command;

Result<std::unique_ptr<Engine>> Engine::Open(storage::Db* db, const EngineOptions& options,
                                             const std::atomic<bool>* stop) {
  std::unique_ptr<Engine> engine(new Engine(db, options));
  QUIVER_RETURN_IF_ERROR(engine->LoadState(stop));
  std::lock_guard lock(engine->builder_thread_mu_);
  engine->StartBackgroundWorkLocked();
  return engine;
}

Status Engine::LoadState(const std::atomic<bool>* stop) {
  QUIVER_ASSIGN_OR_RETURN(uint64_t applied, store_.AppliedIndex());
  QUIVER_ASSIGN_OR_RETURN(auto stored, store_.LoadCollections());
  QUIVER_ASSIGN_OR_RETURN(auto records, store_.LoadRequestRecords());
  std::map<std::string, AppliedRequest, std::less<>> requests;
  for (const auto& [client, record] : records) {
    // sequence (8 bytes LE), status code (4 bytes LE), message.
    if (record.size() < 12) return Status::Corruption("request record of client '" + client + "' is truncated");
    AppliedRequest r;
    r.sequence = DecodeFixed64LE(record.data());
    const uint32_t code = DecodeFixed32LE(record.data() + 8);
    if (code > static_cast<uint32_t>(StatusCode::kUnauthenticated)) {
      return Status::Corruption("request record of client '" + client + "' has status code " + std::to_string(code));
    }
    r.outcome = code == 0 ? Status::Ok() : Status(static_cast<StatusCode>(code), record.substr(12));
    requests[client] = std::move(r);
  }
  QUIVER_RETURN_IF_ERROR(segments_.RemoveUnlisted());
  QUIVER_ASSIGN_OR_RETURN(const auto segment_refs, segments_.List());
  std::set<uint64_t> known;
  for (const auto& sc : stored) known.insert(sc.id);
  for (const auto& ref : segment_refs) {
    // Files of a collection deleted just before a crash.
    if (known.count(ref.collection_id) == 0) QUIVER_RETURN_IF_ERROR(segments_.Remove(ref.collection_id, ref.segment));
  }
  std::map<std::string, std::shared_ptr<Collection>> collections;
  for (const auto& sc : stored) {
    quiver::v1::CollectionInfo info;
    const std::string key = "collection/" + std::to_string(sc.id);
    if (!info.ParseFromString(sc.meta) || info.created_at_index() != sc.id) {
      return Status::Corruption("collection record " + key + " does not parse or names another id");
    }
    Status valid = ValidateCollectionConfig(info.config());
    if (!valid.ok()) return Status::Corruption("collection record " + key + " is invalid: " + valid.message());
    auto coll = std::make_shared<Collection>(info, options_.gpu);
    std::vector<storage::SegmentRef> refs;
    for (const auto& ref : segment_refs) {
      if (ref.collection_id == sc.id) refs.push_back(ref);
    }
    const auto t0 = std::chrono::steady_clock::now();
    QUIVER_RETURN_IF_ERROR(LoadSegmentFiles(coll.get(), refs, stop));
    const auto t1 = std::chrono::steady_clock::now();
    size_t visited = 0;
    Status st = store_.ForEachPoint(
        sc.id, info.config().dimension(), [&](uint64_t id, const float* vec, std::string_view payload) -> Status {
          if ((++visited & 0xfff) == 0 && stop != nullptr && stop->load()) {
            return Status::Cancelled("shutdown requested while loading collection " + info.config().name());
          }
          coll->LoadPoint(id, vec, std::string(payload));
          return Status::Ok();
        });
    QUIVER_RETURN_IF_ERROR(st);
    coll->FinishLoad();
    using Seconds = std::chrono::duration<double>;
    spdlog::info("collection '{}': {} segment file(s) in {:.2f}s, {} points in {:.2f}s", info.config().name(),
                 refs.size(), Seconds(t1 - t0).count(), visited, Seconds(std::chrono::steady_clock::now() - t1).count());
    collections[info.config().name()] = std::move(coll);
  }
  {
    std::unique_lock lock(mu_);
    collections_.swap(collections);
  }
  applied_requests_ = std::move(requests);
  applied_index_.store(applied, std::memory_order_release);
  return Status::Ok();
}

void Engine::StartBackgroundWorkLocked() {
  if (shut_down_) return;
  {
    std::lock_guard lock(build_mu_);
    stop_builder_ = false;
  }
  // Segments sealed while loading get their indexes in the background; the
  // node serves meanwhile, searching them exactly.
  builder_ = std::thread([this] {
    NameThisThread("index-builder");
    BackgroundLoop();
  });
  RequestBackgroundWork();
}

Result<uint64_t> Engine::ExportSnapshot(const std::string& dir, const std::atomic<bool>* stop) {
  // The segment files are a cache that the receiver checks against the
  // points (Collection::AdoptSegment): any set, older or newer than the
  // state, is correct; linking first makes it likelier they cover it.
  QUIVER_RETURN_IF_ERROR(segments_.LinkListedInto(dir));
  return store_.ExportSnapshot(dir, stop);
}

Result<uint64_t> Engine::InstallSnapshot(const std::string& dir, const std::atomic<bool>* stop) {
  std::lock_guard thread_lock(builder_thread_mu_);
  // No build may write a segment file of the state being replaced.
  {
    std::lock_guard lock(build_mu_);
    stop_builder_ = true;
    dropped_collections_.clear();  // every listed file is replaced below
  }
  build_cv_.notify_all();
  if (builder_.joinable()) builder_.join();
  Result<uint64_t> applied = store_.ImportSnapshot(dir);
  std::vector<std::string> rejected;
  Status st = applied.status();
  if (st.ok()) st = segments_.ReplaceFrom(dir, &rejected);
  for (const std::string& why : rejected) {
    spdlog::warn("snapshot segment file {} is unusable; its index will be rebuilt", why);
  }
  if (st.ok()) st = LoadState(stop);
  StartBackgroundWorkLocked();
  if (!st.ok()) return st.WithContext("installing snapshot from " + dir);
  spdlog::info("installed a snapshot at applied index {} ({} collections, {} points)", *applied, List().size(),
               TotalPoints());
  return applied;
}

Status Engine::LoadSegmentFiles(Collection* coll, const std::vector<storage::SegmentRef>& refs,
                                const std::atomic<bool>* stop) {
  // Reading, checksumming and decoding a file is independent of the others:
  // one loader per core.
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status first_error;
  auto load = [&] {
    for (size_t i = next++; i < refs.size(); i = next++) {
      if (stop != nullptr && stop->load()) {
        std::lock_guard lock(mu);
        first_error = Status::Cancelled("shutdown requested while loading collection " + coll->config().name());
        return;
      }
      const storage::SegmentRef& ref = refs[i];
      const std::string path = segments_.PathOf(ref.collection_id, ref.segment);
      auto content = segments_.Read(ref);
      Status st = content.ok() ? coll->AdoptSegment(ref.segment, content->bytes(), path) : content.status();
      if (st.ok()) {
        std::lock_guard lock(mu);
        ++segments_loaded_;
        continue;
      }
      // The points are in the vectors column family: rebuilding is always possible.
      spdlog::warn("collection '{}': segment file {} is unusable ({}); rebuilding its index from the stored vectors",
                   coll->config().name(), path, st.ToString());
      Status removed = segments_.Remove(ref.collection_id, ref.segment);
      std::lock_guard lock(mu);
      ++segment_files_discarded_;
      if (!removed.ok() && first_error.ok()) first_error = removed;
    }
  };
  const size_t workers = std::min<size_t>(refs.size(), std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (size_t w = 1; w < workers; ++w) pool.emplace_back(load);
  load();
  for (auto& t : pool) t.join();
  return first_error;
}

void Engine::RemoveDroppedSegmentFiles() {
  std::vector<uint64_t> dropped;
  {
    std::lock_guard lock(build_mu_);
    dropped.swap(dropped_collections_);
  }
  if (dropped.empty()) return;
  auto refs = segments_.List();
  if (!refs.ok()) {
    ++failed_builds_;
    return;
  }
  for (const auto& ref : *refs) {
    if (std::find(dropped.begin(), dropped.end(), ref.collection_id) == dropped.end()) continue;
    if (!segments_.Remove(ref.collection_id, ref.segment).ok()) ++failed_builds_;  // removed at the next start
  }
}

Engine::Engine(storage::Db* db, const EngineOptions& options)
    : options_(options),
      store_(db),
      segments_(db),
      apply_batch_(store_.NewBatch()),
      apply_command_(std::make_unique<Command>()) {}

Engine::~Engine() { StopBackgroundWork(); }

void Engine::StopBackgroundWork() {
  std::lock_guard thread_lock(builder_thread_mu_);
  shut_down_ = true;
  {
    std::lock_guard lock(build_mu_);
    stop_builder_ = true;
  }
  build_cv_.notify_all();
  if (builder_.joinable()) builder_.join();
}

void Engine::RequestBackgroundWork() {
  {
    std::lock_guard lock(build_mu_);
    build_requested_ = true;
    builder_idle_ = false;
  }
  build_cv_.notify_all();
}

bool Engine::WaitForBackgroundWork(std::chrono::milliseconds timeout) {
  std::unique_lock lock(build_mu_);
  return build_cv_.wait_for(lock, timeout, [&] { return builder_idle_ || stop_builder_; }) && builder_idle_;
}

void Engine::BackgroundLoop() {
  kernels::Resources res;
  res.num_threads = options_.build_threads;
  for (;;) {
    {
      std::unique_lock lock(build_mu_);
      build_cv_.wait(lock, [&] { return stop_builder_ || build_requested_; });
      if (stop_builder_) return;
      build_requested_ = false;
    }
    // One build at a time, checking for shutdown between builds.
    bool built = true;
    while (built) {
      built = false;
      for (const auto& coll : ListMutable()) {
        {
          std::lock_guard lock(build_mu_);
          if (stop_builder_) return;
        }
        for (Result<bool> r : {coll->BuildOneIndex(res), coll->CompactOne(res, options_.compact_deleted_fraction),
                               coll->PersistOne(&segments_)}) {
          if (!r.ok()) {
            ++failed_builds_;
            spdlog::warn("collection '{}': background work failed: {}", coll->config().name(), r.status().ToString());
          } else if (*r) {
            built = true;
          }
        }
      }
      // After the pass: a pass that began before a collection was dropped may
      // still have written one of its files.
      RemoveDroppedSegmentFiles();
    }
    std::lock_guard lock(build_mu_);
    if (!build_requested_) {
      builder_idle_ = true;
      build_cv_.notify_all();
    }
  }
}

Result<uint64_t> Engine::Checkpoint() {
  // Read first: every apply up to this index has committed its batch, so the
  // flush below (which switches memtables after this point) covers it.
  const uint64_t applied = AppliedIndex();
  QUIVER_RETURN_IF_ERROR(store_.Flush());
  return applied;
}

std::shared_ptr<Collection> Engine::FindMutable(const std::string& name) const {
  std::shared_lock lock(mu_);
  auto it = collections_.find(name);
  return it == collections_.end() ? nullptr : it->second;
}

Result<std::shared_ptr<const Collection>> Engine::Find(const std::string& name) const {
  auto c = FindMutable(name);
  if (c == nullptr) return Status::NotFound("collection '" + name + "' does not exist");
  return std::shared_ptr<const Collection>(std::move(c));
}

std::vector<std::shared_ptr<Collection>> Engine::ListMutable() const {
  std::shared_lock lock(mu_);
  std::vector<std::shared_ptr<Collection>> out;
  for (const auto& [name, c] : collections_) out.push_back(c);
  return out;
}

std::vector<std::shared_ptr<const Collection>> Engine::List() const {
  std::shared_lock lock(mu_);
  std::vector<std::shared_ptr<const Collection>> out;
  for (const auto& [name, c] : collections_) out.push_back(c);
  return out;
}

uint64_t Engine::TotalPoints() const {
  uint64_t n = 0;
  for (const auto& c : List()) n += c->Count();
  return n;
}

Status Engine::Apply(std::span<const storage::LogEntry> entries, std::vector<Status>* outcomes) {
  outcomes->clear();
  storage::StateStore::Batch* batch = apply_batch_.get();
  batch->Clear();
  Command& cmd = *apply_command_;
  uint64_t last = AppliedIndex();
  for (const storage::LogEntry& e : entries) {
    if (e.index <= last) {
      // Already applied (replay after a crash): the outcome was given then.
      outcomes->push_back(Status::Ok());
      continue;
    }
    if (e.index != last + 1) {
      return Status::Internal("apply gap: entry " + std::to_string(e.index) + " after applied index " +
                              std::to_string(last));
    }
    last = e.index;
    if (e.type != storage::EntryType::kCommand) {
      outcomes->push_back(Status::Ok());
      continue;
    }
    if (!cmd.ParseFromArray(e.data.data(), static_cast<int>(e.data.size()))) {
      // A log entry that passed its checksum but does not parse was written by
      // a broken or newer binary: refuse to guess.
      return Status::Corruption("log entry " + std::to_string(e.index) + " holds an undecodable command");
    }
    outcomes->push_back(ApplyOnce(e.index, cmd, batch));
  }
  if (last == AppliedIndex()) return Status::Ok();
  batch->SetAppliedIndex(last);
  QUIVER_RETURN_IF_ERROR(store_.Commit(*batch));
  applied_index_.store(last, std::memory_order_release);
  return Status::Ok();
}

Status Engine::ApplyOnce(uint64_t index, const Command& cmd, storage::StateStore::Batch* batch) {
  if (cmd.client_id().empty()) return ApplyCommand(index, cmd, batch);
  auto it = applied_requests_.find(cmd.client_id());
  if (it != applied_requests_.end() && cmd.sequence() <= it->second.sequence) {
    if (cmd.sequence() == it->second.sequence) return it->second.outcome;  // a retry: same answer, no effect
    return Status::FailedPrecondition("request " + std::to_string(cmd.sequence()) + " of client '" + cmd.client_id() +
                                      "' is older than its last applied request " +
                                      std::to_string(it->second.sequence) + ": it was applied before or superseded");
  }
  Status outcome = ApplyCommand(index, cmd, batch);
  AppliedRequest& r = applied_requests_[cmd.client_id()];
  r.sequence = cmd.sequence();
  r.outcome = outcome;
  std::string record;
  PutFixed64LE(&record, r.sequence);
  PutFixed32LE(&record, static_cast<uint32_t>(outcome.code()));
  record += outcome.message();
  batch->PutRequestRecord(cmd.client_id(), record);
  return outcome;
}

Status Engine::ApplyCommand(uint64_t index, const Command& cmd, storage::StateStore::Batch* batch) {
  switch (cmd.op_case()) {
    case Command::kCreateCollection: {
      const auto& config = cmd.create_collection().config();
      QUIVER_RETURN_IF_ERROR(ValidateCollectionConfig(config));
      if (FindMutable(config.name()) != nullptr) {
        return Status::AlreadyExists("collection '" + config.name() + "' already exists");
      }
      quiver::v1::CollectionInfo info;
      *info.mutable_config() = config;
      if (!info.config().has_index() || info.config().index().type() == quiver::v1::INDEX_TYPE_UNSPECIFIED) {
        info.mutable_config()->mutable_index()->set_type(quiver::v1::FLAT);
      }
      info.set_created_at_index(index);
      batch->PutCollection(index, info.SerializeAsString());
      std::unique_lock lock(mu_);
      collections_[config.name()] = std::make_shared<Collection>(std::move(info), options_.gpu);
      return Status::Ok();
    }
    case Command::kDeleteCollection: {
      std::unique_lock lock(mu_);
      auto it = collections_.find(cmd.delete_collection().name());
      if (it == collections_.end()) {
        return Status::NotFound("collection '" + cmd.delete_collection().name() + "' does not exist");
      }
      batch->DeleteCollection(it->second->id());
      const uint64_t dropped = it->second->id();
      collections_.erase(it);
      lock.unlock();
      {
        std::lock_guard build_lock(build_mu_);
        dropped_collections_.push_back(dropped);
      }
      RequestBackgroundWork();
      return Status::Ok();
    }
    case Command::kUpsertPoints: {
      const auto& up = cmd.upsert_points();
      auto coll = FindMutable(up.collection());
      if (coll == nullptr || (up.collection_created_at() != 0 && coll->id() != up.collection_created_at())) {
        return Status::NotFound("collection '" + up.collection() + "' does not exist");
      }
      const uint32_t dim = coll->dimension();
      const size_t n = up.ids().size() / 8;
      if (up.dimension() != dim || up.ids().size() % 8 != 0 || up.vectors().size() != n * dim * sizeof(float) ||
          (up.payloads_size() != 0 && static_cast<size_t>(up.payloads_size()) != n)) {
        return Status::InvalidArgument("points do not match collection '" + up.collection() + "' of dimension " +
                                       std::to_string(dim));
      }
      std::vector<float> vec(dim);
      static const std::string kNoPayload;
      coll->Reserve(n);
      bool background = false;
      for (size_t i = 0; i < n; ++i) {
        const uint64_t id = DecodeFixed64LE(up.ids().data() + i * 8);
        std::memcpy(vec.data(), up.vectors().data() + i * dim * sizeof(float), dim * sizeof(float));
        const std::string& payload = up.payloads_size() != 0 ? up.payloads(static_cast<int>(i)) : kNoPayload;
        const Collection::WriteEffect effect = coll->Upsert(id, vec.data(), payload);
        // Points the engine does not hold have nothing stored (it loads every
        // stored point, and deletes remove both), so no payload to remove.
        batch->PutPoint(coll->id(), id, vec, payload, /*is_new=*/!effect.found);
        background = effect.needs_background() || background;
      }
      // A seal needs an index build; overwrites of sealed rows may make a segment due for compaction.
      if (background) RequestBackgroundWork();
      return Status::Ok();
    }
    case Command::kDeletePoints: {
      const auto& del = cmd.delete_points();
      auto coll = FindMutable(del.collection());
      if (coll == nullptr || (del.collection_created_at() != 0 && coll->id() != del.collection_created_at())) {
        return Status::NotFound("collection '" + del.collection() + "' does not exist");
      }
      if (del.ids().size() % 8 != 0) return Status::InvalidArgument("ids are not a whole number of uint64");
      bool background = false;
      for (size_t i = 0; i < del.ids().size() / 8; ++i) {
        const uint64_t id = DecodeFixed64LE(del.ids().data() + i * 8);
        const Collection::WriteEffect effect = coll->Remove(id);
        if (effect.found) batch->DeletePoint(coll->id(), id);
        background = effect.needs_background() || background;
      }
      if (background) RequestBackgroundWork();  // tombstones may make a segment due for compaction
      return Status::Ok();
    }
    case Command::OP_NOT_SET:
      break;
  }
  return Status::InvalidArgument("log entry " + std::to_string(index) + " holds an empty command");
}

}  // namespace quiver::engine
