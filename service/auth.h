// API keys on the public gRPC services.
//
// With no key configured every call is allowed (a node on a private network,
// or behind a mesh that authenticates). With `api_key` set, every call to
// quiver.v1.Collections and quiver.v1.Points must carry a key, as metadata
// `authorization: Bearer <key>` or `api-key: <key>`: the read-write key allows
// everything, `read_only_api_key` allows reads (Get, List, Count, Search,
// SearchBatch). Health checks and reflection stay open, for probes.
#pragma once

#include <string_view>

#include "common/status.h"
#include "service/config.h"

namespace grpc {
class ServerContext;
}

namespace quiver::service {

enum class Access { kRead, kWrite };

/// OK when no key is configured or the call's key grants `access`;
/// UNAUTHENTICATED when the key is missing or unknown; PERMISSION_DENIED for
/// the read-only key on a write. Keys are compared in constant time.
Status Authorize(const ServerConfig& config, const grpc::ServerContext& call, Access access);

}  // namespace quiver::service
