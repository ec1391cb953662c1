#include "engine/collection.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <mutex>
#include <shared_mutex>

#include "common/encoding.h"
#include "engine/filter.h"
#include "engine/validation.h"
#include "kernels/graph.h"
#include "kernels/ivf_flat.h"
#include "kernels/ivf_pq.h"

namespace quiver::engine {

kernels::Metric ToKernelMetric(quiver::v1::Metric metric) {
  switch (metric) {
    case quiver::v1::IP: return kernels::Metric::kInnerProduct;
    case quiver::v1::COSINE: return kernels::Metric::kCosine;
    default: return kernels::Metric::kL2;
  }
}

Collection::Collection(quiver::v1::CollectionInfo info, std::shared_ptr<GpuExecutor> gpu)
    : info_(std::move(info)),
      metric_(ToKernelMetric(info_.config().metric())),
      dim_(info_.config().dimension()),
      segment_max_points_(info_.config().segment_max_points() != 0 ? info_.config().segment_max_points()
                                                                   : kDefaultSegmentPoints),
      index_type_(info_.config().index().type()),
      wants_index_(index_type_ == quiver::v1::IVF_FLAT || index_type_ == quiver::v1::IVF_PQ ||
                   index_type_ == quiver::v1::GRAPH),
      default_nprobe_([&] {
        const uint32_t p = index_type_ == quiver::v1::IVF_PQ ? info_.config().index().ivf_pq().nprobe()
                                                             : info_.config().index().ivf_flat().nprobe();
        return p != 0 ? p : 32u;
      }()),
      default_itopk_(info_.config().index().graph().itopk() != 0 ? info_.config().index().graph().itopk() : 64),
      default_refine_factor_(info_.config().index().ivf_pq().refine_factor() != 0
                                 ? info_.config().index().ivf_pq().refine_factor()
                                 : 8),
      payload_fields_(info_.config().indexed_payload_fields().begin(), info_.config().indexed_payload_fields().end()) {
  info_.clear_points_count();
  gpu_ = std::move(gpu);
}

Collection::~Collection() {
  if (gpu_ == nullptr) return;
  for (const auto& s : sealed_) gpu_->Forget(s->uid);
}

quiver::v1::CollectionInfo Collection::Info() const {
  quiver::v1::CollectionInfo out = info_;
  std::shared_lock lock(mu_);
  out.set_points_count(where_.size());
  out.set_sealed_segments(static_cast<uint32_t>(sealed_.size()));
  uint32_t indexed = 0;
  uint64_t tombstones = 0, index_bytes = 0, indexed_rows = 0;
  for (const auto& s : sealed_) {
    tombstones += s->rows() - s->live;
    if (s->index == nullptr) continue;
    ++indexed;
    index_bytes += s->index->MemoryBytes();
    indexed_rows += s->rows();
  }
  out.set_indexed_segments(indexed);
  out.set_tombstones(tombstones);
  out.set_index_bytes(index_bytes);
  out.set_index_bytes_per_vector(indexed_rows > 0 ? double(index_bytes) / double(indexed_rows) : 0.0);
  return out;
}

size_t Collection::Count() const {
  std::shared_lock lock(mu_);
  return where_.size();
}

void Collection::Reserve(size_t extra) {
  std::unique_lock lock(mu_);
  size_t want = std::min(growing_.rows() + extra, segment_max_points_);
  if (want <= growing_.ids.capacity()) return;
  // Grow geometrically: reserving exactly would copy every vector on every
  // batch, which is quadratic in the segment size.
  want = std::min(std::max(want, growing_.ids.capacity() + growing_.ids.capacity() / 2), segment_max_points_);
  growing_.vectors.reserve(want * dim_);
  growing_.sq_norms.reserve(want);
  growing_.ids.reserve(want);
  growing_.payloads.reserve(want);
  // Geometrically too: reserve(size + extra) on every batch rehashed the
  // whole id map each time the bucket count's next prime moved.
  if (double(where_.size() + extra) > double(where_.bucket_count()) * where_.max_load_factor()) {
    where_.reserve(std::max(where_.size() + extra, 2 * where_.size()));
  }
}

Collection::WriteEffect Collection::Upsert(uint64_t id, const float* vector, std::string payload) {
  float norm = 0;
  kernels::SquaredNorms(vector, 1, dim_, &norm);
  WriteEffect effect;
  std::unique_lock lock(mu_);
  auto it = where_.find(id);
  if (it != where_.end()) {
    effect.found = true;
    if (it->second.segment == kGrowing) {  // overwrite in place
      const uint32_t row = it->second.row;
      std::memcpy(&growing_.vectors[size_t{row} * dim_], vector, dim_ * sizeof(float));
      growing_.sq_norms[row] = norm;
      growing_.payloads[row] = std::move(payload);
      return effect;
    }
    RemoveLocked(it->second);  // tombstone in its sealed segment; the new version goes to growing
    effect.tombstoned = true;
  }
  const uint32_t row = static_cast<uint32_t>(growing_.rows());
  growing_.vectors.append(vector, vector + dim_);
  growing_.sq_norms.push_back(norm);
  growing_.ids.push_back(id);
  growing_.payloads.push_back(std::move(payload));
  where_[id] = {kGrowing, row};
  if (growing_.rows() >= segment_max_points_) {
    SealLocked();
    effect.sealed = true;
  }
  return effect;
}

void Collection::SealLocked() {
  auto seg = std::make_shared<Segment>(std::move(growing_));
  growing_ = Segment{};
  seg->deleted.assign((seg->rows() + 63) / 64, 0);
  seg->live = seg->rows();
  seg->number = next_segment_number_++;
  const int32_t index = static_cast<int32_t>(sealed_.size());
  for (uint32_t r = 0; r < seg->rows(); ++r) where_[seg->ids[r]] = {index, r};
  sealed_.push_back(std::move(seg));
}

void Collection::RemoveLocked(const Location& loc) {
  if (loc.segment != kGrowing) {
    Segment& seg = *sealed_[static_cast<size_t>(loc.segment)];
    seg.deleted[loc.row / 64] |= uint64_t{1} << (loc.row % 64);
    --seg.live;
    return;
  }
  // Growing: move the last row into the hole so rows stay dense.
  const uint32_t row = loc.row;
  const uint32_t last = static_cast<uint32_t>(growing_.rows() - 1);
  if (row != last) {
    std::memcpy(&growing_.vectors[size_t{row} * dim_], &growing_.vectors[size_t{last} * dim_], dim_ * sizeof(float));
    growing_.sq_norms[row] = growing_.sq_norms[last];
    growing_.ids[row] = growing_.ids[last];
    growing_.payloads[row] = std::move(growing_.payloads[last]);
    where_[growing_.ids[row]] = {kGrowing, row};
  }
  growing_.vectors.resize(size_t{last} * dim_);
  growing_.sq_norms.pop_back();
  growing_.ids.pop_back();
  growing_.payloads.pop_back();
}

Collection::WriteEffect Collection::Remove(uint64_t id) {
  WriteEffect effect;
  std::unique_lock lock(mu_);
  auto it = where_.find(id);
  if (it == where_.end()) return effect;
  const Location loc = it->second;
  where_.erase(it);
  RemoveLocked(loc);
  effect.found = true;
  effect.tombstoned = loc.segment != kGrowing;
  return effect;
}

Status Collection::SearchSegmentLocked(const kernels::Resources& res, const Segment& seg, const uint64_t* excluded,
                                       bool use_index, double kept_fraction, const float* queries, size_t nq,
                                       size_t k, const SearchOptions& options, int64_t* rows, float* scores) const {
  if (seg.rows() == 0) {
    std::fill(rows, rows + nq * k, -1);
    return Status::Ok();
  }
  kernels::BaseView base{seg.vectors.data(), seg.sq_norms.data(), seg.rows(), dim_, excluded};
  if (use_index) {
    kernels::IndexSearchParams params;
    params.nprobe = options.nprobe != 0 ? options.nprobe : default_nprobe_;
    // Tombstones and a filter that leave a fraction f of the rows leave f of
    // the beam returnable: widen the beam (at least k) by 1/f so that k
    // returnable rows remain (on a third deleted, a beam of exactly k ended
    // with ~0.9 k live rows).
    const double asked = double(std::max<size_t>(options.itopk != 0 ? options.itopk : default_itopk_, k));
    const double itopk = asked / std::max(kept_fraction, 1e-3);
    params.itopk = static_cast<uint32_t>(std::min<double>(std::ceil(itopk), kMaxItopk));
    params.search_width = options.search_width != 0 ? options.search_width : 1;
    params.refine_factor = options.refine_factor != 0 ? options.refine_factor : default_refine_factor_;
    if (gpu_ != nullptr && k <= kernels::gpu::kMaxK) {
      const Status st = SearchIndexOnGpu(seg, base, queries, nq, k, params, rows, scores);
      if (st.ok()) return st;
      gpu_->NoteFallback(st);
    }
    return seg.index->Search(res, base, queries, nq, k, params, rows, scores);
  }
  if (gpu_ != nullptr && &seg != &growing_ && k <= kernels::gpu::kMaxK) {
    // Sealed rows never change: the GPU keeps a copy; tombstones and the
    // filter travel with each call. Any failure is served on the CPU below.
    const Status st = gpu_->SearchSealed(seg.uid, base, queries, nq, {metric_, k}, rows, scores);
    if (st.ok()) return st;
    gpu_->NoteFallback(st);
  }
  return kernels::FlatSearch(res, base, queries, nq, {metric_, k}, rows, scores);
}

Status Collection::SearchIndexOnGpu(const Segment& seg, const kernels::BaseView& base, const float* queries, size_t nq,
                                    size_t k, const kernels::IndexSearchParams& params, int64_t* rows,
                                    float* scores) const {
  const kernels::VectorIndex* index = seg.index.get();
  if (const auto* ivf = dynamic_cast<const kernels::IvfFlatIndex*>(index)) {
    return gpu_->SearchIvfFlat(seg.uid, *ivf, base.deleted, queries, nq, k, params.nprobe, rows, scores);
  }
  if (const auto* pq = dynamic_cast<const kernels::IvfPqIndex*>(index)) {
    return gpu_->SearchIvfPq(seg.uid, *pq, base, queries, nq, k, params.nprobe, params.refine_factor, rows, scores);
  }
  if (const auto* graph = dynamic_cast<const kernels::GraphIndex*>(index)) {
    // A beam widened for tombstones or a filter may pass the GPU's limit;
    // the GPU's widest beam serves it rather than the CPU (k itself is
    // within the limit: kMaxK).
    const auto itopk = std::min<uint32_t>(params.itopk, kernels::gpu::kMaxGraphItopk);
    return gpu_->SearchGraph(seg.uid, *graph, base, queries, nq, k, itopk, params.search_width, rows, scores);
  }
  return Status::Unimplemented(std::string("no GPU search for ") + index->kind() + " indexes");
}

Status Collection::SearchGatheredLocked(const kernels::Resources& res, const Segment& seg, const uint64_t* excluded,
                                        size_t allowed, const float* queries, size_t nq, size_t k, int64_t* rows,
                                        float* scores) const {
  std::vector<uint32_t> picked;
  picked.reserve(allowed);
  std::vector<float> vectors;
  vectors.reserve(allowed * dim_);
  std::vector<float> norms;
  norms.reserve(allowed);
  for (uint32_t r = 0; r < seg.rows(); ++r) {
    if ((excluded[r / 64] >> (r % 64)) & 1u) continue;
    picked.push_back(r);
    vectors.insert(vectors.end(), &seg.vectors[size_t{r} * dim_], &seg.vectors[size_t{r} * dim_] + dim_);
    norms.push_back(seg.sq_norms[r]);
  }
  kernels::BaseView base{vectors.data(), norms.data(), picked.size(), dim_, nullptr};
  QUIVER_RETURN_IF_ERROR(kernels::FlatSearch(res, base, queries, nq, {metric_, k}, rows, scores));
  for (size_t i = 0; i < nq * k; ++i) {
    if (rows[i] >= 0) rows[i] = picked[static_cast<size_t>(rows[i])];  // back to segment rows
  }
  return Status::Ok();
}

Status Collection::Search(const kernels::Resources& res, const float* queries, size_t nq, size_t k,
                          const SearchOptions& options, std::vector<std::vector<Hit>>* out) const {
  std::shared_lock lock(mu_);
  out->assign(nq, {});
  const size_t kk = std::min(k, where_.size());
  if (kk == 0) return Status::Ok();
  // Every segment's best kk per query; the growing segment goes last.
  std::vector<const Segment*> segs;
  for (const auto& s : sealed_) {
    if (s->live > 0) segs.push_back(s.get());
  }
  const size_t nsealed = segs.size();
  if (growing_.rows() > 0) segs.push_back(&growing_);
  std::vector<int64_t> rows(segs.size() * nq * kk);
  std::vector<float> scores(rows.size());
  std::vector<uint64_t> excluded;
  for (size_t s = 0; s < segs.size(); ++s) {
    const Segment& seg = *segs[s];
    const bool sealed = s < nsealed;
    // No bitset for a segment without tombstones: nothing to test in the scan,
    // nothing to copy to a GPU.
    const uint64_t* skip = sealed && seg.live < seg.rows() ? seg.deleted.data() : nullptr;
    bool use_index = sealed && seg.index != nullptr;
    double kept_fraction = sealed && seg.rows() > 0 ? double(seg.live) / double(seg.rows()) : 1.0;
    if (options.filter != nullptr) {
      // The filter becomes a bitset of excluded rows, evaluated once for all
      // queries, from the payload index where the segment has one.
      const size_t words = (seg.rows() + 63) / 64;
      std::vector<uint64_t> live(words, ~uint64_t{0});
      if (seg.rows() % 64 != 0) live[words - 1] = (uint64_t{1} << (seg.rows() % 64)) - 1;
      if (sealed) {
        for (size_t w = 0; w < words; ++w) live[w] &= ~seg.deleted[w];
      }
      excluded = EvaluateFilter(*options.filter, seg.payload_index.get(), seg.payloads, std::move(live));
      size_t allowed = 0;
      for (uint64_t& w : excluded) {
        allowed += static_cast<size_t>(std::popcount(w));
        w = ~w;
      }
      int64_t* seg_rows = rows.data() + s * nq * kk;
      if (allowed == 0) {
        std::fill(seg_rows, seg_rows + nq * kk, -1);
        continue;
      }
      skip = excluded.data();
      kept_fraction = double(allowed) / double(seg.rows());
      use_index = use_index && double(allowed) > kExactFilterFraction * double(seg.rows());
      if (!use_index && double(allowed) <= kExactFilterFraction * double(seg.rows())) {
        // Few rows pass: score only those (gathered), not the whole segment.
        QUIVER_RETURN_IF_ERROR(SearchGatheredLocked(res, seg, excluded.data(), allowed, queries, nq, kk,
                                                    rows.data() + s * nq * kk, scores.data() + s * nq * kk));
        continue;
      }
    }
    QUIVER_RETURN_IF_ERROR(SearchSegmentLocked(res, seg, skip, use_index, kept_fraction, queries, nq, kk, options,
                                               rows.data() + s * nq * kk, scores.data() + s * nq * kk));
  }
  const bool smaller_better = metric_ == kernels::Metric::kL2;
  struct Candidate {
    float score;
    uint32_t seg;
    int64_t row;
  };
  std::vector<Candidate> cand;
  for (size_t q = 0; q < nq; ++q) {
    cand.clear();
    for (size_t s = 0; s < segs.size(); ++s) {
      for (size_t i = 0; i < kk; ++i) {
        const size_t at = (s * nq + q) * kk + i;
        if (rows[at] >= 0) cand.push_back({scores[at], static_cast<uint32_t>(s), rows[at]});
      }
    }
    const size_t take = std::min(kk, cand.size());
    std::partial_sort(cand.begin(), cand.begin() + static_cast<ptrdiff_t>(take), cand.end(),
                      [&](const Candidate& a, const Candidate& b) {
                        if (a.score != b.score) return smaller_better ? a.score < b.score : a.score > b.score;
                        return a.seg != b.seg ? a.seg < b.seg : a.row < b.row;
                      });
    auto& hits = (*out)[q];
    hits.reserve(take);
    for (size_t i = 0; i < take; ++i) {
      const Segment& seg = *segs[cand[i].seg];
      const size_t row = static_cast<size_t>(cand[i].row);
      Hit h;
      h.id = seg.ids[row];
      h.score = cand[i].score;
      if (options.with_payload) h.payload = seg.payloads[row];
      if (options.with_vector) h.vector.assign(&seg.vectors[row * dim_], &seg.vectors[row * dim_] + dim_);
      hits.push_back(std::move(h));
    }
  }
  return Status::Ok();
}

std::vector<StoredPoint> Collection::Get(std::span<const uint64_t> ids, bool with_payload, bool with_vector) const {
  std::shared_lock lock(mu_);
  std::vector<StoredPoint> out;
  for (uint64_t id : ids) {
    auto it = where_.find(id);
    if (it == where_.end()) continue;
    const Segment& seg = it->second.segment == kGrowing ? growing_ : *sealed_[static_cast<size_t>(it->second.segment)];
    const size_t row = it->second.row;
    StoredPoint p;
    p.id = id;
    if (with_payload) p.payload = seg.payloads[row];
    if (with_vector) p.vector.assign(&seg.vectors[row * dim_], &seg.vectors[row * dim_] + dim_);
    out.push_back(std::move(p));
  }
  return out;
}

Result<std::shared_ptr<const kernels::VectorIndex>> Collection::BuildIndex(const kernels::Resources& res,
                                                                             const Segment& seg) const {
  if (index_type_ == quiver::v1::GRAPH) {
    kernels::GraphBuildParams params;
    if (info_.config().index().graph().degree() != 0) params.degree = info_.config().index().graph().degree();
    // With a GPU its kNN graphs are built there (GpuExecutor::BuildGraph
    // falls back to the CPU by itself).
    QUIVER_ASSIGN_OR_RETURN(auto index,
                            gpu_ != nullptr
                                ? gpu_->BuildGraph(res.num_threads, metric_, seg.vectors.data(), seg.rows(), dim_, params)
                                : kernels::GraphIndex::Build(res, metric_, seg.vectors.data(), seg.rows(), dim_, params));
    return std::shared_ptr<const kernels::VectorIndex>(std::move(index));
  }
  // IVF: 4 * sqrt(rows) lists unless the collection says.
  auto nlist_for = [&](uint32_t configured) {
    return configured != 0 ? configured
                           : static_cast<uint32_t>(std::clamp<double>(4.0 * std::sqrt(double(seg.rows())), 1, 4096));
  };
  if (index_type_ == quiver::v1::IVF_PQ) {
    const auto& cfg = info_.config().index().ivf_pq();
    kernels::IvfPqBuildParams params;
    params.nlist = nlist_for(cfg.nlist());
    params.pq_dim = cfg.pq_dim();
    params.pq_bits = cfg.pq_bits() != 0 ? cfg.pq_bits() : 8;
    QUIVER_ASSIGN_OR_RETURN(auto index,
                            kernels::IvfPqIndex::Build(res, metric_, seg.vectors.data(), seg.rows(), dim_, params));
    return std::shared_ptr<const kernels::VectorIndex>(std::move(index));
  }
  kernels::IvfFlatBuildParams params;
  params.nlist = nlist_for(info_.config().index().ivf_flat().nlist());
  QUIVER_ASSIGN_OR_RETURN(auto index,
                          kernels::IvfFlatIndex::Build(res, metric_, seg.vectors.data(), seg.rows(), dim_, params));
  return std::shared_ptr<const kernels::VectorIndex>(std::move(index));
}

Result<bool> Collection::BuildOneIndex(const kernels::Resources& res) {
  std::shared_ptr<Segment> job;
  bool want_ivf = false, want_payload = false;
  {
    std::unique_lock lock(mu_);
    for (const auto& s : sealed_) {
      want_ivf = wants_index_ && !s->build_started && s->live > 0;
      want_payload = !payload_fields_.empty() && !s->payload_index_started && s->live > 0;
      if (want_ivf || want_payload) {
        // One attempt each: a failed build leaves the segment searched exactly.
        s->build_started = s->build_started || want_ivf;
        s->payload_index_started = s->payload_index_started || want_payload;
        job = s;
        break;
      }
    }
  }
  if (job == nullptr) return false;
  // Sealed rows never change, so the builds read them without the lock.
  std::shared_ptr<const PayloadIndex> payload_index;
  if (want_payload) payload_index = std::make_shared<const PayloadIndex>(PayloadIndex::Build(job->payloads, payload_fields_));
  std::shared_ptr<const kernels::VectorIndex> index;
  Status status;
  if (want_ivf) {
    auto built = BuildIndex(res, *job);
    if (built.ok()) {
      index = std::move(built).value();
    } else {
      status = built.status();
    }
  }
  std::unique_lock lock(mu_);
  // If compaction replaced `job` meanwhile, these are dropped with it.
  if (payload_index != nullptr) job->payload_index = std::move(payload_index);
  if (index != nullptr) job->index = std::move(index);
  if (!status.ok()) return status;
  return true;
}

Result<bool> Collection::CompactOne(const kernels::Resources& res, double deleted_fraction) {
  size_t slot = 0;
  auto fresh = std::make_shared<Segment>();
  std::vector<uint32_t> old_rows;  // fresh row -> row in the old segment
  {
    std::unique_lock lock(mu_);
    std::shared_ptr<Segment> old;
    for (size_t i = 0; i < sealed_.size(); ++i) {
      const Segment& s = *sealed_[i];
      const size_t dead = s.rows() - s.live;
      if (!s.compacting && dead > 0 && double(dead) >= deleted_fraction * double(s.rows())) {
        old = sealed_[i];
        slot = i;
        break;
      }
    }
    if (old == nullptr) return false;
    old->compacting = true;
  }
  {
    // Sealed rows never change, only their tombstones, so a shared lock gives
    // a consistent copy; rows deleted after it are caught at the swap below.
    std::shared_lock lock(mu_);
    const std::shared_ptr<Segment>& old = sealed_[slot];
    fresh->vectors.reserve(old->live * dim_);
    for (uint32_t r = 0; r < old->rows(); ++r) {
      if ((old->deleted[r / 64] >> (r % 64)) & 1u) continue;
      fresh->vectors.append(&old->vectors[size_t{r} * dim_], &old->vectors[size_t{r} * dim_] + dim_);
      fresh->sq_norms.push_back(old->sq_norms[r]);
      fresh->ids.push_back(old->ids[r]);
      fresh->payloads.push_back(old->payloads[r]);
      old_rows.push_back(r);
    }
  }
  std::shared_ptr<const kernels::VectorIndex> index;
  Status build_status;
  if (!payload_fields_.empty() && fresh->rows() > 0) {
    fresh->payload_index = std::make_shared<const PayloadIndex>(PayloadIndex::Build(fresh->payloads, payload_fields_));
  }
  fresh->payload_index_started = true;
  if (wants_index_ && fresh->rows() > 0) {
    auto built = BuildIndex(res, *fresh);  // outside the lock: fresh is private until swapped in
    if (built.ok()) {
      index = std::move(built).value();
    } else {
      build_status = built.status();  // still swap in: searched exactly, like a failed build
    }
  }
  std::unique_lock lock(mu_);
  fresh->index = std::move(index);
  fresh->build_started = true;
  fresh->deleted.assign((fresh->rows() + 63) / 64, 0);
  fresh->live = fresh->rows();
  fresh->number = next_segment_number_++;
  if (sealed_[slot]->persisted) retired_files_.push_back(sealed_[slot]->number);
  const int32_t seg = static_cast<int32_t>(slot);
  for (uint32_t r = 0; r < fresh->rows(); ++r) {
    auto it = where_.find(fresh->ids[r]);
    if (it != where_.end() && it->second.segment == seg && it->second.row == old_rows[r]) {
      it->second.row = r;  // still this version of the point: it moves to its new row
    } else {
      fresh->deleted[r / 64] |= uint64_t{1} << (r % 64);  // deleted or overwritten during the rewrite
      --fresh->live;
    }
  }
  if (gpu_ != nullptr) gpu_->Forget(sealed_[slot]->uid);
  sealed_[slot] = std::move(fresh);
  if (!build_status.ok()) return build_status;
  return true;
}

// ---- segment files ----
//
// Content (after storage's file header), little-endian:
//   [version u32 = 1][metric u32][dim u64][rows u64][index bytes u64]
//   ids: rows x u64 | vectors: rows x dim f32 | the index bytes (IVF_FLAT,
//   IVF_PQ or GRAPH, told apart by their own magic)
namespace {
constexpr uint32_t kSegmentContentVersion = 1;
constexpr size_t kSegmentHeaderBytes = 4 + 4 + 8 + 8 + 8;
static_assert(std::endian::native == std::endian::little, "segment files store raw little-endian arrays");

std::string_view Bytes(const auto& vec) {
  return {reinterpret_cast<const char*>(vec.data()), vec.size() * sizeof(vec[0])};
}
}  // namespace

Result<bool> Collection::PersistOne(storage::SegmentStore* store) {
  std::shared_ptr<Segment> job;
  std::vector<uint64_t> retired;
  {
    std::unique_lock lock(mu_);
    retired.swap(retired_files_);
    for (const auto& s : sealed_) {
      if (s->index != nullptr && !s->persist_started) {
        s->persist_started = true;  // one attempt; a failure is rebuilt after the next restart
        job = s;
        break;
      }
    }
  }
  for (uint64_t number : retired) QUIVER_RETURN_IF_ERROR(store->Remove(id(), number));
  if (job == nullptr) return !retired.empty();
  // The segment's rows and index never change once sealed: encode without the lock.
  const std::string index_bytes = job->index->Serialize();
  std::string header;
  PutFixed32LE(&header, kSegmentContentVersion);
  PutFixed32LE(&header, static_cast<uint32_t>(metric_));
  PutFixed64LE(&header, dim_);
  PutFixed64LE(&header, job->rows());
  PutFixed64LE(&header, index_bytes.size());
  const std::string_view parts[] = {header, Bytes(job->ids), Bytes(job->vectors), index_bytes};
  QUIVER_RETURN_IF_ERROR(store->Save(id(), job->number, parts));
  std::unique_lock lock(mu_);
  job->persisted = true;
  // Replaced by compaction while being written: its file is already stale.
  if (std::find(sealed_.begin(), sealed_.end(), job) == sealed_.end()) retired_files_.push_back(job->number);
  return true;
}

Status Collection::AdoptSegment(uint64_t number, std::string_view content, const std::string& what) {
  auto bad = [&](const std::string& why) { return Status::Corruption("segment file " + what + " " + why); };
  if (content.size() < kSegmentHeaderBytes) return bad("is too short");
  const char* p = content.data();
  if (DecodeFixed32LE(p) != kSegmentContentVersion) return bad("has an unknown content version");
  if (DecodeFixed32LE(p + 4) != static_cast<uint32_t>(metric_) || DecodeFixed64LE(p + 8) != dim_) {
    return bad("was written for another metric or dimension");
  }
  const uint64_t rows = DecodeFixed64LE(p + 16);
  const uint64_t index_bytes = DecodeFixed64LE(p + 24);
  const uint64_t body = content.size() - kSegmentHeaderBytes;
  // Checked before multiplying or allocating: each row takes 8 + 4 * dim bytes.
  if (rows > body / (8 + 4 * dim_) || index_bytes > body ||
      rows * (8 + 4 * dim_) + index_bytes != body || rows == 0 || rows > UINT32_MAX) {
    return bad("has sizes that disagree with its length");
  }
  auto seg = std::make_shared<Segment>();
  p += kSegmentHeaderBytes;
  seg->ids.resize(rows);
  std::memcpy(seg->ids.data(), p, rows * 8);
  p += rows * 8;
  seg->vectors.resize(rows * dim_);
  std::memcpy(seg->vectors.data(), p, rows * dim_ * 4);
  p += rows * dim_ * 4;
  QUIVER_ASSIGN_OR_RETURN(auto index, kernels::DeserializeIndex(std::string_view(p, index_bytes), what));
  if (index->size() != rows || index->dim() != dim_ || index->metric() != metric_ ||
      index->kind() != quiver::v1::IndexType_Name(index_type_)) {
    return bad("holds an index of another kind, size, dimension or metric");
  }
  seg->index = std::move(index);
  seg->sq_norms.resize(rows);
  kernels::SquaredNorms(seg->vectors.data(), rows, dim_, seg->sq_norms.data());
  seg->payloads.resize(rows);
  seg->deleted.assign((rows + 63) / 64, ~uint64_t{0});  // all tombstones until LoadPoint revives them
  seg->live = 0;
  seg->number = number;
  seg->build_started = seg->persist_started = seg->persisted = true;
  std::unique_lock lock(mu_);
  const int32_t slot = static_cast<int32_t>(sealed_.size());
  for (uint32_t r = 0; r < rows; ++r) {
    // An id in several files (overwritten, then sealed again; or a compaction
    // cut short by a crash): the newest file's row is the candidate.
    auto [it, fresh] = adopted_rows_.try_emplace(seg->ids[r], Location{slot, r});
    if (!fresh && sealed_[static_cast<size_t>(it->second.segment)]->number < number) it->second = {slot, r};
  }
  next_segment_number_ = std::max(next_segment_number_, number + 1);
  sealed_.push_back(std::move(seg));
  return Status::Ok();
}

void Collection::LoadPoint(uint64_t id, const float* vector, std::string payload) {
  {
    std::unique_lock lock(mu_);
    auto it = adopted_rows_.find(id);
    if (it != adopted_rows_.end()) {
      const Location loc = it->second;
      adopted_rows_.erase(it);
      Segment& seg = *sealed_[static_cast<size_t>(loc.segment)];
      if (std::memcmp(&seg.vectors[size_t{loc.row} * dim_], vector, dim_ * sizeof(float)) == 0) {
        seg.deleted[loc.row / 64] &= ~(uint64_t{1} << (loc.row % 64));
        ++seg.live;
        seg.payloads[loc.row] = std::move(payload);
        where_[id] = loc;
        return;
      }
    }
  }
  Upsert(id, vector, std::move(payload));
}

void Collection::FinishLoad() {
  std::unique_lock lock(mu_);
  adopted_rows_ = {};
}

}  // namespace quiver::engine
