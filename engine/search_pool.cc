// The node's shared search threads (search_pool.h).
#include "engine/search_pool.h"

#include <algorithm>

#include "common/thread_name.h"

namespace quiver::engine {

SearchPool::SearchPool(size_t threads) {
  threads = std::max<size_t>(threads, 1);
  threads_.reserve(threads);
  for (size_t t = 0; t < threads; ++t) {
    threads_.emplace_back([this] {
      NameThisThread("search");
      Work();
    });
  }
}

SearchPool::~SearchPool() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  has_work_.notify_all();
  for (auto& t : threads_) t.join();
}

void SearchPool::Work() {
  std::unique_lock lock(mu_);
  for (;;) {
    // Stopping ends the thread only once nothing is queued: a caller in Run
    // waits for its tasks, so each of them must run.
    has_work_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
    if (jobs_.empty()) return;
    Job& job = *jobs_.front();
    const size_t i = job.next++;
    if (job.next == job.tasks) jobs_.pop_front();
    lock.unlock();
    (*job.task)(i);
    lock.lock();
    // The caller may return (and `job` die) as soon as done reaches tasks.
    if (++job.done == job.tasks) job.finished.notify_one();
  }
}

void SearchPool::Run(size_t tasks, const std::function<void(size_t)>& task) {
  if (tasks == 0) return;
  Job job;
  job.task = &task;
  job.tasks = tasks;
  std::unique_lock lock(mu_);
  jobs_.push_back(&job);
  if (tasks == 1) {
    has_work_.notify_one();
  } else {
    has_work_.notify_all();
  }
  // Not a wait on shutdown: every queued task runs, even while the pool
  // stops (~SearchPool drains the queue before its threads end).
  job.finished.wait(lock, [&] { return job.done == job.tasks; });
}

size_t SearchPool::ChunkQueries(size_t nq) const {
  const size_t t = threads();
  const size_t balanced = (nq + 4 * t - 1) / (4 * t);
  const size_t one_per_thread = (nq + t - 1) / t;
  return std::max<size_t>({balanced, std::min(kMinChunkQueries, one_per_thread), 1});
}

Status SearchPool::Search(const Collection& coll, const float* queries, size_t nq, size_t k,
                          const SearchOptions& options, std::vector<std::vector<Hit>>* out) {
  kernels::Resources one_thread;
  one_thread.num_threads = 1;
  const size_t chunk = ChunkQueries(nq);
  const size_t chunks = (nq + chunk - 1) / chunk;
  if (chunks <= 1) return coll.Search(one_thread, queries, nq, k, options, out);
  std::vector<std::vector<std::vector<Hit>>> parts(chunks);
  std::vector<Status> status(chunks);
  const size_t dim = coll.dimension();
  Run(chunks, [&](size_t c) {
    const size_t lo = c * chunk, count = std::min(chunk, nq - lo);
    status[c] = coll.Search(one_thread, queries + lo * dim, count, k, options, &parts[c]);
  });
  for (const Status& st : status) QUIVER_RETURN_IF_ERROR(st);
  out->clear();
  out->reserve(nq);
  for (auto& part : parts) {
    for (auto& hits : part) out->push_back(std::move(hits));
  }
  return Status::Ok();
}

}  // namespace quiver::engine
