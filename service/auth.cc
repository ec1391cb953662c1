#include "service/auth.h"

#include <grpcpp/server_context.h>

#include <cctype>

namespace quiver::service {
namespace {

// Constant time in the key's content (not its length): a wrong key does not
// reveal how many of its leading bytes were right.
bool SameKey(std::string_view given, std::string_view want) {
  if (given.size() != want.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff |= static_cast<unsigned char>(given[i] ^ want[i]);
  return diff == 0;
}

bool StartsWithBearer(std::string_view v) {
  constexpr std::string_view kBearer = "bearer ";
  if (v.size() < kBearer.size()) return false;
  for (size_t i = 0; i < kBearer.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(v[i])) != kBearer[i]) return false;
  }
  return true;
}

}  // namespace

Status Authorize(const ServerConfig& config, const grpc::ServerContext& call, Access access) {
  if (config.api_key.empty()) return Status::Ok();
  std::string_view key;
  bool present = false;
  for (const auto& [name, value] : call.client_metadata()) {
    const std::string_view n(name.data(), name.size());
    std::string_view v(value.data(), value.size());
    if (n == "authorization" && StartsWithBearer(v)) {
      v.remove_prefix(7);
    } else if (n != "api-key") {
      continue;
    }
    key = v;
    present = true;
    break;
  }
  if (!present) {
    return Status::Unauthenticated("this node requires an API key: metadata 'authorization: Bearer <key>' or "
                                   "'api-key: <key>'");
  }
  if (SameKey(key, config.api_key)) return Status::Ok();
  if (!config.read_only_api_key.empty() && SameKey(key, config.read_only_api_key)) {
    if (access == Access::kRead) return Status::Ok();
    return Status::PermissionDenied("the read-only API key cannot change data; use the read-write key");
  }
  return Status::Unauthenticated("the API key is not valid for this node");
}

}  // namespace quiver::service
