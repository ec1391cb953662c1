#include "engine/collection.h"

#include <algorithm>
#include <cstring>
#include <mutex>

namespace quiver::engine {

kernels::Metric ToKernelMetric(quiver::v1::Metric metric) {
  switch (metric) {
    case quiver::v1::IP: return kernels::Metric::kInnerProduct;
    case quiver::v1::COSINE: return kernels::Metric::kCosine;
    default: return kernels::Metric::kL2;
  }
}

Collection::Collection(quiver::v1::CollectionInfo info)
    : info_(std::move(info)), metric_(ToKernelMetric(info_.config().metric())), dim_(info_.config().dimension()) {
  info_.clear_points_count();
}

quiver::v1::CollectionInfo Collection::Info() const {
  quiver::v1::CollectionInfo out = info_;
  out.set_points_count(Count());
  return out;
}

size_t Collection::Count() const {
  std::shared_lock lock(mu_);
  return ids_.size();
}

void Collection::Reserve(size_t extra) {
  std::unique_lock lock(mu_);
  size_t want = ids_.size() + extra;
  if (want <= ids_.capacity()) return;
  // Grow geometrically: reserving exactly would copy every vector on every
  // batch, which is quadratic in the collection size.
  want = std::max(want, ids_.capacity() + ids_.capacity() / 2);
  vectors_.reserve(want * dim_);
  sq_norms_.reserve(want);
  ids_.reserve(want);
  payloads_.reserve(want);
  row_of_.reserve(want);
}

void Collection::Upsert(uint64_t id, const float* vector, std::string payload) {
  float norm = 0;
  kernels::SquaredNorms(vector, 1, dim_, &norm);
  std::unique_lock lock(mu_);
  auto [it, inserted] = row_of_.try_emplace(id, static_cast<uint32_t>(ids_.size()));
  if (inserted) {
    vectors_.insert(vectors_.end(), vector, vector + dim_);
    sq_norms_.push_back(norm);
    ids_.push_back(id);
    payloads_.push_back(std::move(payload));
    return;
  }
  const uint32_t row = it->second;
  std::memcpy(&vectors_[size_t{row} * dim_], vector, dim_ * sizeof(float));
  sq_norms_[row] = norm;
  payloads_[row] = std::move(payload);
}

bool Collection::Remove(uint64_t id) {
  std::unique_lock lock(mu_);
  auto it = row_of_.find(id);
  if (it == row_of_.end()) return false;
  const uint32_t row = it->second;
  const uint32_t last = static_cast<uint32_t>(ids_.size() - 1);
  row_of_.erase(it);
  if (row != last) {
    std::memcpy(&vectors_[size_t{row} * dim_], &vectors_[size_t{last} * dim_], dim_ * sizeof(float));
    sq_norms_[row] = sq_norms_[last];
    ids_[row] = ids_[last];
    payloads_[row] = std::move(payloads_[last]);
    row_of_[ids_[row]] = row;
  }
  vectors_.resize(size_t{last} * dim_);
  sq_norms_.pop_back();
  ids_.pop_back();
  payloads_.pop_back();
  return true;
}

Status Collection::Search(const kernels::Resources& res, const float* queries, size_t nq, size_t k, bool with_payload,
                          bool with_vector, std::vector<std::vector<Hit>>* out) const {
  std::shared_lock lock(mu_);
  const size_t n = ids_.size();
  const size_t kk = std::min(k, n);
  out->assign(nq, {});
  if (kk == 0) return Status::Ok();
  std::vector<int64_t> rows(nq * kk);
  std::vector<float> scores(nq * kk);
  kernels::BaseView base{vectors_.data(), sq_norms_.data(), n, dim_};
  QUIVER_RETURN_IF_ERROR(
      kernels::FlatSearch(res, base, queries, nq, {metric_, kk}, rows.data(), scores.data()));
  for (size_t q = 0; q < nq; ++q) {
    auto& hits = (*out)[q];
    hits.reserve(kk);
    for (size_t i = 0; i < kk; ++i) {
      const int64_t row = rows[q * kk + i];
      if (row < 0) break;
      Hit h;
      h.id = ids_[static_cast<size_t>(row)];
      h.score = scores[q * kk + i];
      if (with_payload) h.payload = payloads_[static_cast<size_t>(row)];
      if (with_vector) {
        const float* v = &vectors_[static_cast<size_t>(row) * dim_];
        h.vector.assign(v, v + dim_);
      }
      hits.push_back(std::move(h));
    }
  }
  return Status::Ok();
}

std::vector<StoredPoint> Collection::Get(std::span<const uint64_t> ids, bool with_payload, bool with_vector) const {
  std::shared_lock lock(mu_);
  std::vector<StoredPoint> out;
  for (uint64_t id : ids) {
    auto it = row_of_.find(id);
    if (it == row_of_.end()) continue;
    StoredPoint p;
    p.id = id;
    if (with_payload) p.payload = payloads_[it->second];
    if (with_vector) {
      const float* v = &vectors_[size_t{it->second} * dim_];
      p.vector.assign(v, v + dim_);
    }
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace quiver::engine
