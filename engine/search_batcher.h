// Dynamic batching of concurrent searches: unfiltered calls that ask the same
// collection with the same k and search settings while others are running
// are gathered, for at most max_wait_us, into one Collection::Search of up to
// max_queries queries. One batched search replaces many small ones: on the GPU
// one launch sequence instead of one per call, on the CPU one pass of the
// base through sgemm instead of one scan per query. Collections whose CPU
// index searches query by query (Collection::GainsFromBatching) are not
// batched.
//
// No thread of its own: the first call of a batch (its leader) waits for
// joiners, runs the batch and hands each joiner its rows. One batch per key
// runs at a time: calls arriving meanwhile gather into the next one, which
// starts when the running one ends (or when it is full), so under load batches
// grow to what the search rate allows rather than to what arrives in
// max_wait_us. A call that finds no other search running does not wait at
// all, so a lone client pays nothing.
//
// Example:
//   SearchBatcher batcher({.max_queries = 64, .max_wait_us = 200});
//   Status st = batcher.Search(*coll, query, 1, 10, options,
//                              [](size_t calls) { return kernels::Resources{}; }, &hits);
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "common/status.h"
#include "engine/collection.h"

namespace quiver::engine {

struct SearchBatcherOptions {
  /// Most queries one batched search holds. Default: 64.
  size_t max_queries = 64;
  /// How long the first call of a batch waits for others to join, in
  /// microseconds, when other searches are running; 0 = never batch.
  /// Default: 200.
  uint32_t max_wait_us = 200;
};

class SearchBatcher {
 public:
  explicit SearchBatcher(const SearchBatcherOptions& options) : options_(options) {}

  /// Collection::Search, batched with concurrent compatible calls (same
  /// collection object, k and SearchOptions, no filter). `resources(calls)`
  /// gives the kernel resources for a search serving `calls` calls. Results
  /// and errors are exactly those of coll.Search for this call's queries.
  Status Search(const Collection& coll, const float* queries, size_t nq, size_t k, const SearchOptions& options,
                const std::function<kernels::Resources(size_t calls)>& resources,
                std::vector<std::vector<Hit>>* out);

  struct Stats {
    uint64_t searches = 0;  // Collection::Search calls made for batchable calls
    uint64_t calls = 0;     // batchable calls served (calls / searches = mean batch size)
  };
  Stats stats() const;

 private:
  struct Key {
    const Collection* collection;
    size_t k;
    uint32_t nprobe, itopk, search_width, refine_factor;
    bool with_payload, with_vector;
    bool operator==(const Key&) const = default;
  };
  struct Batch {
    Key key;
    std::vector<float> queries;
    size_t nq = 0;
    size_t calls = 0;
    bool closed = false;  // no more joiners: full, or its leader started it
    bool done = false;
    Status status;
    std::vector<std::vector<Hit>> hits;
    std::condition_variable cv;  // done (to the joiners)
  };

  const SearchBatcherOptions options_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Batch>> open_;  // guarded by mu_
  std::vector<Key> running_;                  // guarded by mu_: keys of batches being searched
  std::condition_variable leaders_;           // a batch filled up or finished
  size_t active_ = 0;                         // guarded by mu_: calls inside Search
  uint64_t searches_ = 0;                     // guarded by mu_
  uint64_t calls_ = 0;                        // guarded by mu_
};

}  // namespace quiver::engine
