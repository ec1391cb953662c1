#include "replication/raft/raft_log.h"

#include <algorithm>
#include <string>

namespace quiver::replication::raft {

RaftLog::RaftLog(const storage::LogStore* stable, uint64_t committed, uint64_t applied)
    : stable_(stable), offset_(stable->LastIndex() + 1), committed_(committed), applied_(applied) {}

uint64_t RaftLog::FirstIndex() const {
  if (snapshot_) return snapshot_->index + 1;
  return stable_->FirstIndex();
}

Result<uint64_t> RaftLog::Term(uint64_t index) const {
  if (snapshot_ && index == snapshot_->index) return snapshot_->term;
  if (index > LastIndex()) return Status::OutOfRange("index " + std::to_string(index) + " is beyond the log");
  if (index >= offset_) return unstable_[index - offset_].term;
  if (snapshot_) return Status::OutOfRange("index " + std::to_string(index) + " is below the snapshot");
  return stable_->Term(index);
}

Result<std::vector<storage::LogEntry>> RaftLog::Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) const {
  if (lo < FirstIndex()) return Status::OutOfRange("index " + std::to_string(lo) + " is compacted");
  if (hi > LastIndex() + 1 || lo > hi) {
    return Status::Internal("raft log: range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                            ") is beyond the last entry " + std::to_string(LastIndex()));
  }
  std::vector<storage::LogEntry> out;
  uint64_t bytes = 0;
  const uint64_t recent_first = RecentFirst();
  if (lo < recent_first) {
    const uint64_t stable_hi = std::min(hi, recent_first);
    QUIVER_ASSIGN_OR_RETURN(out, stable_->Entries(lo, stable_hi, max_bytes));
    for (const auto& e : out) bytes += e.data.size();
    if (out.empty() || out.back().index + 1 < stable_hi) return out;  // the byte limit stopped it
    lo = stable_hi;
  }
  // Copies share the entries' data.
  for (uint64_t i = lo; i < hi; ++i) {
    const storage::LogEntry& e = i < offset_ ? recent_[i - recent_first] : unstable_[i - offset_];
    if (!out.empty() && bytes + e.data.size() > max_bytes) break;
    bytes += e.data.size();
    out.push_back(e);
  }
  return out;
}

Result<std::optional<uint64_t>> RaftLog::MaybeAppend(uint64_t index, uint64_t term, uint64_t commit,
                                                     const std::vector<storage::LogEntry>& entries) {
  Result<uint64_t> have = Term(index);
  if (!have.ok()) {
    if (have.status().code() != StatusCode::kOutOfRange) return have.status();
    return std::optional<uint64_t>();
  }
  if (*have != term) return std::optional<uint64_t>();
  const uint64_t last_new = index + entries.size();
  // The first entry that is new or conflicts with ours; entries we already
  // have are not rewritten (a duplicated, delayed message must not truncate).
  size_t first_new = entries.size();
  for (size_t i = 0; i < entries.size(); ++i) {
    Result<uint64_t> t = Term(entries[i].index);
    if (!t.ok() && t.status().code() != StatusCode::kOutOfRange) return t.status();
    if (!t.ok() || *t != entries[i].term) {
      first_new = i;
      break;
    }
  }
  if (first_new < entries.size()) {
    if (entries[first_new].index <= committed_) {
      return Status::Internal("raft log: entry " + std::to_string(entries[first_new].index) +
                              " conflicts with a committed entry (commit " + std::to_string(committed_) + ")");
    }
    TruncateAndAppend(std::vector<storage::LogEntry>(entries.begin() + static_cast<ptrdiff_t>(first_new),
                                                     entries.end()));
  }
  QUIVER_RETURN_IF_ERROR(CommitTo(std::min(commit, last_new)));
  return std::optional<uint64_t>(last_new);
}

void RaftLog::TruncateAndAppend(std::vector<storage::LogEntry> entries) {
  if (entries.empty()) return;
  const uint64_t after = entries.front().index;
  if (after <= offset_) {
    // Replaces durable entries too: the host's next append overwrites them.
    // recent_ ends at offset_ - 1, so what is left of it ends at after - 1.
    while (!recent_.empty() && recent_.back().index >= after) {
      recent_bytes_ -= recent_.back().data.size();
      recent_.pop_back();
    }
    offset_ = after;
    unstable_ = std::move(entries);
  } else {
    unstable_.resize(after - offset_);
    unstable_.insert(unstable_.end(), std::make_move_iterator(entries.begin()), std::make_move_iterator(entries.end()));
  }
}

Status RaftLog::CommitTo(uint64_t index) {
  if (index <= committed_) return Status::Ok();
  if (index > LastIndex()) {
    return Status::Internal("raft log: commit " + std::to_string(index) + " is beyond the last entry " +
                            std::to_string(LastIndex()));
  }
  committed_ = index;
  return Status::Ok();
}

void RaftLog::Restore(const SnapshotMeta& meta) {
  snapshot_ = meta;
  unstable_.clear();
  recent_.clear();
  recent_bytes_ = 0;
  offset_ = meta.index + 1;
  committed_ = meta.index;
}

bool RaftLog::IsUpToDate(uint64_t last_index, uint64_t last_term) const {
  Result<uint64_t> t = Term(LastIndex());
  const uint64_t my_term = t.ok() ? *t : 0;
  return last_term > my_term || (last_term == my_term && last_index >= LastIndex());
}

bool RaftLog::HasNextCommitted() const { return committed_ > std::max(applied_, FirstIndex() - 1); }

Result<std::vector<storage::LogEntry>> RaftLog::NextCommitted(uint64_t max_bytes) const {
  if (!HasNextCommitted()) return std::vector<storage::LogEntry>();
  return Entries(std::max(applied_ + 1, FirstIndex()), committed_ + 1, max_bytes);
}

void RaftLog::StableTo(uint64_t index, uint64_t term) {
  if (index < offset_ || index > LastIndex()) return;
  if (unstable_[index - offset_].term != term) return;  // replaced meanwhile
  const auto end = unstable_.begin() + static_cast<ptrdiff_t>(index + 1 - offset_);
  for (auto it = unstable_.begin(); it != end; ++it) {
    recent_bytes_ += it->data.size();
    recent_.push_back(std::move(*it));
  }
  unstable_.erase(unstable_.begin(), end);
  offset_ = index + 1;
  TrimRecent();
}

void RaftLog::TrimRecent() {
  while (!recent_.empty() && (recent_.front().index <= applied_ || recent_bytes_ > kMaxRecentBytes)) {
    recent_bytes_ -= recent_.front().data.size();
    recent_.pop_front();
  }
}

void RaftLog::StableSnapshotTo(uint64_t index) {
  if (snapshot_ && snapshot_->index == index) snapshot_.reset();
}

void RaftLog::AppliedTo(uint64_t index) {
  applied_ = std::max(applied_, std::min(index, committed_));
  TrimRecent();
}

}  // namespace quiver::replication::raft
