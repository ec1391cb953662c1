// A Quiver node: storage, engine, replicator, the gRPC API and the admin HTTP
// endpoints, with an orderly start and a bounded shutdown.
//
// Start order: admin HTTP (so /healthz answers and /readyz says 503 while the
// node recovers) -> RocksDB -> engine load -> log replay -> gRPC -> ready.
// RequestStop() may come at any point, including during recovery: each long
// step watches it, and Run() returns OK.
//
// Shutdown: not ready -> gRPC stops intake and drains in-flight calls until
// shutdown_drain_ms (then cancels them) -> replicator finishes queued writes ->
// RocksDB flush -> return.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"
#include "service/config.h"

namespace quiver::service {

class Server {
 public:
  explicit Server(ServerConfig config);
  ~Server();

  /// Starts the node and blocks until RequestStop() and the shutdown finish.
  /// OK after a clean stop (also when stopped during recovery); an error if
  /// the node could not start or storage failed.
  Status Run();

  /// Thread- and signal-thread-safe; idempotent.
  void RequestStop();

  bool ready() const { return ready_.load(); }

  /// For benchmarks and tests in the same process: waits until the engine's
  /// background work (index builds, compactions, segment files) is done, at
  /// most `timeout`. False if not serving yet or still busy at the timeout.
  bool WaitForBackgroundWork(std::chrono::milliseconds timeout);

 private:
  struct State;
  Status Start();
  void Shutdown();
  // A joining node's request to be added (Cluster.AddNode through `join`),
  // retried until the cluster answers it or shutdown.
  void AskToJoin(const std::string& advertised_peer_address);

  ServerConfig config_;
  std::unique_ptr<State> state_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> ready_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace quiver::service
