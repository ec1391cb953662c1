// Dynamic batching of concurrent searches (search_batcher.h).
#include "engine/search_batcher.h"

#include <algorithm>
#include <chrono>

namespace quiver::engine {

Status SearchBatcher::Search(const Collection& coll, const float* queries, size_t nq, size_t k,
                             const SearchOptions& options,
                             const std::function<kernels::Resources(size_t calls)>& resources,
                             std::vector<std::vector<Hit>>* out) {
  const size_t dim = coll.dimension();
  std::unique_lock lock(mu_);
  ++active_;
  struct Leave {
    SearchBatcher* b;
    std::unique_lock<std::mutex>* lock;
    ~Leave() {
      if (!lock->owns_lock()) lock->lock();
      --b->active_;
    }
  } leave{this, &lock};

  if (options.filter != nullptr || options_.max_wait_us == 0 || nq >= options_.max_queries ||
      !coll.GainsFromBatching()) {
    // Filters differ per call; a call as large as a batch gains nothing, and
    // neither does a collection searched query by query.
    lock.unlock();
    return coll.Search(resources(1), queries, nq, k, options, out);
  }
  const Key key{&coll,
                k,
                options.nprobe,
                options.itopk,
                options.search_width,
                options.refine_factor,
                options.with_payload,
                options.with_vector};

  // Join an open batch with room.
  for (const auto& open : open_) {
    Batch& b = *open;
    if (b.closed || !(b.key == key) || b.nq + nq > options_.max_queries) continue;
    const std::shared_ptr<Batch> keep = open;
    const size_t offset = b.nq;
    b.queries.insert(b.queries.end(), queries, queries + nq * dim);
    b.nq += nq;
    ++b.calls;
    if (b.nq == options_.max_queries) {
      b.closed = true;
      leaders_.notify_all();
    }
    // Bounded: the leader waits at most max_wait_us plus the running batch's
    // search, then runs this one.
    b.cv.wait(lock, [&] { return b.done; });
    if (!b.status.ok()) return b.status;
    out->assign(std::make_move_iterator(b.hits.begin() + static_cast<ptrdiff_t>(offset)),
                std::make_move_iterator(b.hits.begin() + static_cast<ptrdiff_t>(offset + nq)));
    return Status::Ok();
  }

  // Lead a new batch; wait for joiners only while other searches run.
  auto batch = std::make_shared<Batch>();
  Batch& b = *batch;
  b.key = key;
  b.queries.assign(queries, queries + nq * dim);
  b.nq = nq;
  b.calls = 1;
  open_.push_back(batch);
  auto running = [&] { return std::find(running_.begin(), running_.end(), key) != running_.end(); };
  if (active_ > 1) {
    leaders_.wait_for(lock, std::chrono::microseconds(options_.max_wait_us), [&] { return b.closed; });
  }
  // While a batch of this key is searched, keep gathering; it wakes us when done.
  leaders_.wait(lock, [&] { return b.closed || !running(); });
  b.closed = true;
  open_.erase(std::find(open_.begin(), open_.end(), batch));
  running_.push_back(key);
  const size_t calls = b.calls;
  lock.unlock();

  std::vector<std::vector<Hit>> hits;
  Status st = coll.Search(resources(calls), b.queries.data(), b.nq, k, options, &hits);

  lock.lock();
  running_.erase(std::find(running_.begin(), running_.end(), key));
  leaders_.notify_all();
  ++searches_;
  calls_ += calls;
  b.status = st;
  b.hits = std::move(hits);
  b.done = true;
  b.cv.notify_all();
  if (!st.ok()) return st;
  out->assign(std::make_move_iterator(b.hits.begin()), std::make_move_iterator(b.hits.begin() + static_cast<ptrdiff_t>(nq)));
  return Status::Ok();
}

SearchBatcher::Stats SearchBatcher::stats() const {
  std::lock_guard lock(mu_);
  return {searches_, calls_};
}

}  // namespace quiver::engine
