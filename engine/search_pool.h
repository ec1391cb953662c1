// One set of search threads shared by all concurrent searches of a node.
//
// The CPU kernels parallelise a call with an OpenMP team sized when the call
// starts: with two calls in flight on two cores each gets one thread, and
// while one call is between searches (its request being parsed, its answer
// sent) the other still runs on one core and the second core idles. The pool
// instead cuts each call's queries into chunks and runs the chunks of every
// call, in the order they came, on one thread per core: a thread that ends a
// chunk takes the next one, whichever call it belongs to. The cores stay busy
// while any call has a chunk left, and the node never runs more search
// threads than it was given.
//
// Example:
//   SearchPool pool(2);
//   Status st = pool.Search(coll, queries, nq, k, options, &hits);
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "common/status.h"
#include "engine/collection.h"

namespace quiver::engine {

class SearchPool {
 public:
  /// Starts `threads` threads (at least one).
  explicit SearchPool(size_t threads);
  /// Runs what is queued, then joins the threads.
  ~SearchPool();
  SearchPool(const SearchPool&) = delete;
  SearchPool& operator=(const SearchPool&) = delete;

  size_t threads() const { return threads_.size(); }

  /// Runs task(0) ... task(tasks - 1) on the pool's threads and returns once
  /// all of them have returned. Tasks of earlier calls run first.
  void Run(size_t tasks, const std::function<void(size_t)>& task);

  /// How many queries each chunk of a call of `nq` queries gets: about four
  /// chunks per thread (so the threads even out), but at least
  /// kMinChunkQueries where that still gives every thread one, since the
  /// coarse quantizer and FLAT multiply through sgemm from 16 queries on.
  static constexpr size_t kMinChunkQueries = 16;
  size_t ChunkQueries(size_t nq) const;

  /// coll.Search with one thread per chunk, the chunks run by Run; a call of
  /// one chunk runs on the calling thread. Results and errors are those of
  /// coll.Search. Each query sees one state of the collection, but two
  /// chunks may see two if a write lands between them, as two calls would.
  /// For unfiltered searches: a filter would be evaluated once per chunk.
  Status Search(const Collection& coll, const float* queries, size_t nq, size_t k, const SearchOptions& options,
                std::vector<std::vector<Hit>>* out);

 private:
  struct Job {
    const std::function<void(size_t)>* task = nullptr;
    size_t tasks = 0;
    size_t next = 0;  // the next task to hand out (under mu_)
    size_t done = 0;  // tasks that have returned (under mu_)
    std::condition_variable finished;
  };
  void Work();

  std::mutex mu_;
  std::condition_variable has_work_;
  std::deque<Job*> jobs_;  // jobs with tasks not yet handed out, oldest first
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace quiver::engine
