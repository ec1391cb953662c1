// quiverd: one Quiver node. `quiverd --help` lists every setting.
#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "kernels/blas.h"
#include "service/config.h"
#include "service/server.h"

namespace {

// Self-pipe: the handler only writes the signal number, which is
// async-signal-safe; a normal thread reads it and runs the shutdown. Blocking
// the signals with pthread_sigmask is not enough: OpenBLAS starts its threads
// before main() and would take the signal with its default action.
int g_signal_pipe[2] = {-1, -1};

void OnSignal(int sig) {
  const char c = static_cast<char>(sig);
  [[maybe_unused]] ssize_t n = ::write(g_signal_pipe[1], &c, 1);
}

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

// Freed memory stays with the process for reuse. A replicated write moves
// ~0.5 MB buffers (a batch of 1,000 x 128-d) through several threads; with
// glibc's defaults each came from fresh pages (mmap'd, or handed back by
// arena trimming and faulted in again), and zeroing them on first touch
// took 11% of a 3-node cluster's CPU (perf over quiver-bench cluster).
// 32 MiB is the largest mmap threshold glibc accepts.
void KeepFreedMemory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  quiver::kernels::EnsureFastBlas(argv, quiver::kernels::BlasWorkers::kNone);
  KeepFreedMemory();

  if (::pipe2(g_signal_pipe, O_CLOEXEC) != 0) {
    std::perror("quiverd: pipe2");
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
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
    char c = 0;
    while (::read(g_signal_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    const int sig = c;
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
