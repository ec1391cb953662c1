// The one place where Quiver's Status becomes a gRPC status.
#pragma once

#include <grpcpp/support/status.h>
#include <grpcpp/support/sync_stream.h>

#include "common/status.h"

namespace quiver::service {

grpc::Status ToGrpc(const Status& status);
/// The reverse, for answers from other nodes (the peer port).
Status FromGrpc(const grpc::Status& status);

/// Reads the request of a streamed-unary handler (a unary method whose
/// handler parses its own request, into an arena or to move fields out).
/// Bytes that do not parse as `Request` are INVALID_ARGUMENT naming it.
template <typename Request, typename Response>
Status ReadUnaryRequest(grpc::ServerUnaryStreamer<Request, Response>* call, Request* request) {
  if (call->Read(request)) return Status::Ok();
  return Status::InvalidArgument("the request is not a " + request->GetDescriptor()->name() +
                                 " (or the caller went away)");
}

}  // namespace quiver::service
