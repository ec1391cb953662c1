#include "replication/backup.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/clock.h"
#include "common/encoding.h"
#include "storage/db.h"

namespace quiver::replication {
namespace {

namespace fs = std::filesystem;

constexpr const char* kManifest = "MANIFEST";
constexpr const char* kManifestHeader = "quiver-backup 1";

struct FileSum {
  uint64_t bytes = 0;
  uint32_t crc = 0;
};

Result<FileSum> SumFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError("cannot read " + path);
  std::string buffer(1 << 20, '\0');
  FileSum sum;
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const size_t n = static_cast<size_t>(in.gcount());
    sum.crc = ChecksumExtend(sum.crc, std::string_view(buffer.data(), n));
    sum.bytes += n;
  }
  if (in.bad()) return Status::IOError("reading " + path);
  return sum;
}

Result<std::pair<BackupInfo, std::vector<std::pair<std::string, FileSum>>>> ReadManifest(const std::string& path) {
  const std::string manifest = path + "/" + kManifest;
  std::ifstream in(manifest);
  if (!in) return Status::NotFound("no backup at " + path + " (" + kManifest + " is missing)");
  auto bad = [&](const std::string& why) { return Status::Corruption("backup manifest " + manifest + ": " + why); };
  std::string line;
  if (!std::getline(in, line) || line != kManifestHeader) return bad("not a quiver backup manifest");
  BackupInfo info;
  info.path = path;
  std::vector<std::pair<std::string, FileSum>> files;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string key;
    words >> key;
    if (key == "name") {
      words >> info.name;
    } else if (key == "applied_index") {
      words >> info.applied_index;
    } else if (key == "cluster_id") {
      words >> info.cluster_id;
    } else if (key == "created_unix_ms") {
      words >> info.created_unix_ms;
    } else if (key == "file") {
      std::string name;
      FileSum sum;
      words >> name >> sum.bytes >> sum.crc;
      if (name.empty() || name.find('/') != std::string::npos || name == kManifest) return bad("bad file line");
      files.emplace_back(name, sum);
      info.bytes += sum.bytes;
    } else {
      return bad("unknown line '" + line + "'");
    }
    if (words.fail()) return bad("bad line '" + line + "'");
  }
  if (info.applied_index == 0 || files.empty()) return bad("no applied index or no files");
  info.files = static_cast<uint32_t>(files.size());
  return std::make_pair(info, files);
}

}  // namespace

Status ValidateBackupName(const std::string& name) {
  const bool ok = !name.empty() && name.size() <= 64 && name[0] != '.' &&
                  std::all_of(name.begin(), name.end(), [](char c) {
                    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
                  }) &&
                  !name.ends_with(".tmp");
  if (ok) return Status::Ok();
  return Status::InvalidArgument("backup name '" + name +
                                 "' must be 1 to 64 of A-Z a-z 0-9 . _ -, not start with '.' nor end with .tmp");
}

Result<BackupInfo> CreateBackup(storage::StateMachine* state, const std::string& dir, const std::string& name,
                                const std::string& cluster_id, const std::atomic<bool>* stop) {
  QUIVER_RETURN_IF_ERROR(ValidateBackupName(name));
  const std::string path = dir + "/" + name;
  const std::string tmp = path + ".tmp";
  std::error_code ec;
  if (fs::exists(path, ec)) return Status::AlreadyExists("backup '" + name + "' exists");
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec)) return Status::IOError("cannot create " + tmp + ": " + ec.message());
  auto cleanup = [&](Status st) {
    fs::remove_all(tmp, ec);
    return st;
  };
  Result<uint64_t> applied = state->ExportSnapshot(tmp, stop);
  if (!applied.ok()) return cleanup(applied.status());
  BackupInfo info;
  info.name = name;
  info.path = path;
  info.applied_index = *applied;
  info.cluster_id = cluster_id;
  info.created_unix_ms = UnixMillisNow();
  std::ostringstream manifest;
  manifest << kManifestHeader << "\nname " << name << "\napplied_index " << info.applied_index << "\ncluster_id "
           << (cluster_id.empty() ? "-" : cluster_id) << "\ncreated_unix_ms " << info.created_unix_ms << "\n";
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(tmp, ec)) {
    if (entry.is_regular_file()) names.push_back(entry.path().filename());
  }
  std::sort(names.begin(), names.end());
  for (const std::string& file : names) {
    // Segment files are hard links to the live ones: they are never
    // rewritten in place, so the link keeps this version when the node
    // deletes or replaces its own.
    const std::string at = tmp + "/" + file;
    Result<FileSum> sum = SumFile(at);
    if (!sum.ok()) return cleanup(sum.status());
    manifest << "file " << file << " " << sum->bytes << " " << sum->crc << "\n";
    info.bytes += sum->bytes;
    ++info.files;
  }
  {
    std::ofstream out(tmp + "/" + kManifest);
    out << manifest.str();
    out.close();
    if (!out) return cleanup(Status::IOError("writing " + tmp + "/" + kManifest));
  }
  if (Status st = storage::SyncDirectory(tmp); !st.ok()) return cleanup(st);
  fs::rename(tmp, path, ec);
  if (ec) return cleanup(Status::IOError("renaming " + tmp + ": " + ec.message()));
  return info;
}

Result<std::vector<BackupInfo>> ListBackups(const std::string& dir) {
  std::vector<BackupInfo> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_directory() || entry.path().filename().string().ends_with(".tmp")) continue;
    auto manifest = ReadManifest(entry.path());
    if (manifest.ok()) out.push_back(manifest->first);
  }
  if (ec) return Status::IOError("listing " + dir + ": " + ec.message());
  std::sort(out.begin(), out.end(), [](const BackupInfo& a, const BackupInfo& b) { return a.name < b.name; });
  return out;
}

Result<BackupInfo> VerifyBackup(const std::string& path) {
  QUIVER_ASSIGN_OR_RETURN(auto manifest, ReadManifest(path));
  for (const auto& [file, expected] : manifest.second) {
    QUIVER_ASSIGN_OR_RETURN(FileSum sum, SumFile(path + "/" + file));
    if (sum.bytes != expected.bytes || sum.crc != expected.crc) {
      return Status::Corruption("backup file " + path + "/" + file + " is damaged: " + std::to_string(sum.bytes) +
                                " bytes with CRC-32 " + std::to_string(sum.crc) + ", the manifest says " +
                                std::to_string(expected.bytes) + " with " + std::to_string(expected.crc));
    }
  }
  return manifest.first;
}

Status RestoreBackup(const std::string& path, storage::LogStore* log, storage::StateMachine* state,
                     const std::set<raft::NodeId>& voters, const std::string& cluster_id,
                     const std::atomic<bool>* stop) {
  QUIVER_ASSIGN_OR_RETURN(const storage::HardState hs, log->GetHardState());
  if (log->LastIndex() != 0 || hs.term != 0 || state->AppliedIndex() != 0) {
    return Status::FailedPrecondition("a backup is restored into an empty data directory only");
  }
  if (voters.empty()) return Status::InvalidArgument("a restored cluster needs at least one voter");
  QUIVER_ASSIGN_OR_RETURN(const BackupInfo info, VerifyBackup(path));
  QUIVER_ASSIGN_OR_RETURN(const uint64_t applied, state->InstallSnapshot(path, stop));
  if (applied != info.applied_index) {
    return Status::Corruption("backup " + path + " holds state at index " + std::to_string(applied) +
                              ", its manifest says " + std::to_string(info.applied_index));
  }
  // A new cluster whose history starts at the backup's index: the log is
  // compacted up to it, and the snapshot record carries the membership.
  raft::SnapshotMeta meta;
  meta.index = applied;
  meta.term = 1;
  meta.conf.voters = voters;
  QUIVER_RETURN_IF_ERROR(log->SetClusterId(cluster_id));
  QUIVER_RETURN_IF_ERROR(log->SetSnapshotRecord(raft::EncodeSnapshotMeta(meta)));
  return log->ResetToSnapshot(applied, 1, storage::HardState{1, raft::kNoNode, applied});
}

Result<std::unique_ptr<BackupReader>> BackupReader::Open(const std::string& path, const std::string& scratch_dir) {
  QUIVER_ASSIGN_OR_RETURN(const BackupInfo info, VerifyBackup(path));
  std::error_code ec;
  fs::remove_all(scratch_dir, ec);
  if (ec) return Status::IOError("cannot empty " + scratch_dir + ": " + ec.message());
  std::unique_ptr<BackupReader> reader(new BackupReader());
  reader->info_ = info;
  reader->scratch_dir_ = scratch_dir;  // from here on the destructor removes it
  // Small memtables: nothing is written but the ingested files.
  QUIVER_ASSIGN_OR_RETURN(reader->db_, storage::Db::Open(scratch_dir, {.write_buffer_bytes = 1 << 20}));
  reader->store_ = std::make_unique<storage::StateStore>(reader->db_.get());
  QUIVER_ASSIGN_OR_RETURN(const uint64_t applied, reader->store_->ImportSnapshot(path));
  if (applied != info.applied_index) {
    return Status::Corruption("backup " + path + " holds state at index " + std::to_string(applied) +
                              ", its manifest says " + std::to_string(info.applied_index));
  }
  return reader;
}

BackupReader::~BackupReader() {
  store_.reset();
  db_.reset();
  if (!scratch_dir_.empty()) {
    std::error_code ec;
    fs::remove_all(scratch_dir_, ec);
  }
}

Result<std::vector<storage::StateStore::StoredCollection>> BackupReader::Collections() const {
  return store_->LoadCollections();
}

Status BackupReader::ForEachPoint(uint64_t collection_id, uint32_t dimension,
                                  const storage::StateStore::PointVisitor& visit) const {
  return store_->ForEachPoint(collection_id, dimension, visit);
}

}  // namespace quiver::replication
