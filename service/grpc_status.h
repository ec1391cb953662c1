// The one place where Quiver's Status becomes a gRPC status.
#pragma once

#include <grpcpp/support/status.h>

#include "common/status.h"

namespace quiver::service {

grpc::Status ToGrpc(const Status& status);
/// The reverse, for answers from other nodes (the peer port).
Status FromGrpc(const grpc::Status& status);

}  // namespace quiver::service
