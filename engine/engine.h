// The engine: every collection of the node, and the state machine that applies
// committed log entries to them.
//
// Reads (Find, List) return shared pointers, so a search keeps working on a
// collection that is deleted meanwhile. Writes arrive only through Apply, in
// log order, from the replicator's single apply thread.
//
// Example:
//   QUIVER_ASSIGN_OR_RETURN(auto engine, Engine::Open(db, {}, &stop));
//   replicator.Start(engine.get());          // applies the log tail, then new writes
//   auto coll = engine->Find("docs");        // NOT_FOUND if absent
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "engine/collection.h"
#include "storage/db.h"
#include "storage/state_machine.h"
#include "storage/state_store.h"

namespace quiver::internal::v1 {
class Command;
}

namespace quiver::engine {

struct EngineOptions {};

class Engine final : public storage::StateMachine {
 public:
  /// Loads every collection and its points from `db`, validating each record.
  /// Returns CANCELLED if `stop` becomes true while loading (shutdown at start).
  static Result<std::unique_ptr<Engine>> Open(storage::Db* db, const EngineOptions& options,
                                              const std::atomic<bool>* stop);

  Status Apply(std::span<const storage::LogEntry> entries, std::vector<Status>* outcomes) override;
  uint64_t AppliedIndex() const override { return applied_index_.load(std::memory_order_acquire); }
  Result<uint64_t> Checkpoint() override;

  /// NOT_FOUND naming the collection if it does not exist.
  Result<std::shared_ptr<const Collection>> Find(const std::string& name) const;
  /// Sorted by name.
  std::vector<std::shared_ptr<const Collection>> List() const;

  uint64_t TotalPoints() const;

 private:
  Engine(storage::Db* db) : store_(db) {}
  // Applies one command to memory and `batch`; the returned status is the
  // client's answer. Deterministic.
  Status ApplyCommand(uint64_t index, const quiver::internal::v1::Command& cmd, storage::StateStore::Batch* batch);
  std::shared_ptr<Collection> FindMutable(const std::string& name) const;

  storage::StateStore store_;
  std::atomic<uint64_t> applied_index_{0};
  mutable std::shared_mutex mu_;  // guards collections_ (the map, not the collections)
  std::map<std::string, std::shared_ptr<Collection>> collections_;
};

}  // namespace quiver::engine
