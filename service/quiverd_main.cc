// quiverd: one Quiver node. `quiverd --help` lists every setting.
#include <pthread.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "kernels/blas.h"
#include "service/config.h"
#include "service/server.h"

namespace {

void SetUpLogging(const quiver::service::ServerConfig& config) {
  auto logger = spdlog::stderr_color_mt("quiverd");
  if (config.log_format == "json") {
    logger->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","pid":%P,"msg":"%v"})");
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
  logger->set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_default_logger(logger);
}

}  // namespace

int main(int argc, char** argv) {
  quiver::kernels::EnsureFastBlas(argv);

  // Signals are taken by one thread with sigwait, so the handler may do
  // anything; every other thread (gRPC's, RocksDB's) inherits the block.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  quiver::service::ServerConfig config;
  auto parsed = quiver::service::LoadConfig(argc, argv, &config);
  if (!parsed.ok()) {
    std::fprintf(stderr, "quiverd: %s\n", parsed.status().message().c_str());
    return 2;
  }
  if (*parsed == quiver::service::ParseOutcome::kExit) return 0;
  SetUpLogging(config);

  quiver::service::Server server(config);
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    spdlog::info("received {}, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    server.RequestStop();
    // The shutdown is bounded: if draining and flushing overrun, exit anyway.
    // Acknowledged writes are already durable in the synced log.
    std::this_thread::sleep_for(std::chrono::milliseconds(config.shutdown_drain_ms) + std::chrono::seconds(4));
    spdlog::error("shutdown did not finish in time; exiting");
    spdlog::shutdown();
    std::_Exit(3);
  });
  signal_thread.detach();

  quiver::Status st = server.Run();
  if (!st.ok()) {
    spdlog::critical("{}", st.ToString());
    spdlog::shutdown();
    return 1;
  }
  spdlog::shutdown();
  return 0;
}
