#include "storage/log_store.h"

namespace quiver::storage {

Status ValidateAppend(std::span<const LogEntry> entries, uint64_t first_index, uint64_t last_index) {
  if (entries.empty()) return Status::Ok();
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].index != entries[i - 1].index + 1) {
      return Status::InvalidArgument("log append: entries are not contiguous at index " +
                                     std::to_string(entries[i - 1].index));
    }
  }
  const uint64_t lo = entries.front().index;
  if (lo < first_index || lo > last_index + 1) {
    return Status::OutOfRange("log append: first index " + std::to_string(lo) + " outside [" +
                              std::to_string(first_index) + ", " + std::to_string(last_index + 1) + "]");
  }
  return Status::Ok();
}

bool AppendMustSync(std::span<const LogEntry> entries, const HardState* next, const HardState& current) {
  if (!entries.empty()) return true;
  return next != nullptr && (next->term != current.term || next->vote != current.vote);
}

Status MemoryLogStore::Append(std::span<const LogEntry> entries, const HardState* hard_state) {
  std::lock_guard lock(mu_);
  const uint64_t first = compacted_index_ + 1;
  const uint64_t last = compacted_index_ + entries_.size();
  QUIVER_RETURN_IF_ERROR(ValidateAppend(entries, first, last));
  if (!entries.empty()) {
    entries_.resize(entries.front().index - first);  // drop the conflicting suffix
    entries_.insert(entries_.end(), entries.begin(), entries.end());
  }
  if (hard_state != nullptr) hard_state_ = *hard_state;
  return Status::Ok();
}

Result<HardState> MemoryLogStore::GetHardState() const {
  std::lock_guard lock(mu_);
  return hard_state_;
}

uint64_t MemoryLogStore::FirstIndex() const {
  std::lock_guard lock(mu_);
  return compacted_index_ + 1;
}

uint64_t MemoryLogStore::LastIndex() const {
  std::lock_guard lock(mu_);
  return compacted_index_ + entries_.size();
}

Result<uint64_t> MemoryLogStore::Term(uint64_t index) const {
  std::lock_guard lock(mu_);
  if (index == compacted_index_) return compacted_term_;
  if (index < compacted_index_) return Status::OutOfRange("log index " + std::to_string(index) + " is compacted");
  if (index > compacted_index_ + entries_.size()) {
    return Status::OutOfRange("log index " + std::to_string(index) + " is beyond the last entry");
  }
  return entries_[index - compacted_index_ - 1].term;
}

Result<std::vector<LogEntry>> MemoryLogStore::Entries(uint64_t lo, uint64_t hi, uint64_t max_bytes) const {
  std::lock_guard lock(mu_);
  const uint64_t first = compacted_index_ + 1;
  const uint64_t last = compacted_index_ + entries_.size();
  if (lo < first) return Status::OutOfRange("log index " + std::to_string(lo) + " is compacted");
  if (hi > last + 1 || lo > hi) return Status::OutOfRange("log range [" + std::to_string(lo) + ", " +
                                                          std::to_string(hi) + ") is beyond the last entry");
  std::vector<LogEntry> out;
  uint64_t bytes = 0;
  for (uint64_t i = lo; i < hi; ++i) {
    const LogEntry& e = entries_[i - first];
    if (!out.empty() && bytes + e.data.size() > max_bytes) break;
    bytes += e.data.size();
    out.push_back(e);
  }
  return out;
}

Status MemoryLogStore::CompactTo(uint64_t index) {
  std::lock_guard lock(mu_);
  return CompactLocked(index);
}

// Nothing here is durable, so staging is compacting.
Status MemoryLogStore::StageCompaction(uint64_t index, std::string_view snapshot_record) {
  std::lock_guard lock(mu_);
  if (index <= compacted_index_) return Status::Ok();
  QUIVER_RETURN_IF_ERROR(CompactLocked(index));
  snapshot_record_ = std::string(snapshot_record);
  return Status::Ok();
}

Status MemoryLogStore::CompactLocked(uint64_t index) {
  const uint64_t last = compacted_index_ + entries_.size();
  if (index <= compacted_index_) return Status::Ok();
  if (index > last) return Status::OutOfRange("cannot compact past the last entry " + std::to_string(last));
  compacted_term_ = entries_[index - compacted_index_ - 1].term;
  entries_.erase(entries_.begin(), entries_.begin() + static_cast<ptrdiff_t>(index - compacted_index_));
  compacted_index_ = index;
  return Status::Ok();
}

Status MemoryLogStore::ResetToSnapshot(uint64_t index, uint64_t term, const HardState& hard_state) {
  std::lock_guard lock(mu_);
  entries_.clear();
  compacted_index_ = index;
  compacted_term_ = term;
  hard_state_ = hard_state;
  return Status::Ok();
}

Status MemoryLogStore::SetSnapshotRecord(std::string_view record) {
  std::lock_guard lock(mu_);
  snapshot_record_ = std::string(record);
  return Status::Ok();
}

Result<std::string> MemoryLogStore::GetSnapshotRecord() const {
  std::lock_guard lock(mu_);
  return snapshot_record_;
}

Status MemoryLogStore::SetClusterId(std::string_view id) {
  std::lock_guard lock(mu_);
  cluster_id_ = std::string(id);
  return Status::Ok();
}

Result<std::string> MemoryLogStore::GetClusterId() const {
  std::lock_guard lock(mu_);
  return cluster_id_;
}

Status MemoryLogStore::SetInstallRecord(std::string_view record) {
  std::lock_guard lock(mu_);
  install_record_ = std::string(record);
  return Status::Ok();
}

Result<std::string> MemoryLogStore::GetInstallRecord() const {
  std::lock_guard lock(mu_);
  return install_record_;
}

Status MemoryLogStore::SetPeerAddresses(std::string_view record) {
  std::lock_guard lock(mu_);
  peer_addresses_ = std::string(record);
  return Status::Ok();
}

Result<std::string> MemoryLogStore::GetPeerAddresses() const {
  std::lock_guard lock(mu_);
  return peer_addresses_;
}

}  // namespace quiver::storage
