// Starts quiverd as a child process on ephemeral ports and talks to it.
#pragma once

#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <optional>
#include <thread>

#include "quiver/v1/collections.grpc.pb.h"
#include "quiver/v1/points.grpc.pb.h"
#include "server_fixture.h"

namespace quiver::testing {

class QuiverdProcess {
 public:
  /// `data_dir` persists across restarts; `extra` are additional flags.
  QuiverdProcess(std::string data_dir, std::string work_dir, std::vector<std::string> extra = {})
      : data_dir_(std::move(data_dir)), work_dir_(std::move(work_dir)), extra_(std::move(extra)) {}
  ~QuiverdProcess() {
    if (pid_ > 0) Kill(SIGKILL);
  }

  /// Starts the process; if `wait_ready`, waits until it serves.
  void Start(bool wait_ready = true) {
    ready_file_ = work_dir_ + "/ready-" + std::to_string(++starts_) + ".json";
    log_file_ = work_dir_ + "/quiverd-" + std::to_string(starts_) + ".log";
    std::vector<std::string> args = {QUIVERD_PATH,  "--listen",     "127.0.0.1:0", "--admin-listen",
                                     "127.0.0.1:0", "--data-dir",   data_dir_,     "--ready-file",
                                     ready_file_,   "--log-level",  "info"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    // Everything the child needs is built before fork: between fork and exec
    // only async-signal-safe calls are allowed (another thread may hold the
    // malloc lock at the moment of the fork).
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int fd = open(log_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(fd, 0) << log_file_;
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fd, 2);  // dup2 clears O_CLOEXEC on the copies
      dup2(fd, 1);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fd);
    ASSERT_GT(pid_, 0);
    if (wait_ready) WaitReady();
  }

  void WaitReady(std::chrono::seconds limit = std::chrono::seconds(60)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!ReadReadyFile(ready_file_, &grpc_port_, &admin_port_)) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "quiverd not ready; log:\n" << Log();
      int status = 0;
      ASSERT_EQ(waitpid(pid_, &status, WNOHANG), 0) << "quiverd exited early; log:\n" << Log();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(256 << 20);
    args.SetMaxReceiveMessageSize(256 << 20);
    channel_ = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(grpc_port_),
                                         grpc::InsecureChannelCredentials(), args);
    collections = quiver::v1::Collections::NewStub(channel_);
    points = quiver::v1::Points::NewStub(channel_);
  }

  pid_t pid() const { return pid_; }

  void Kill(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    if (sig == SIGKILL) {
      int status = 0;
      waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

  /// Waits for exit up to `limit`; returns the exit status (or nullopt on timeout).
  std::optional<int> WaitExit(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      const pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return std::nullopt;
  }

  std::string Log() const {
    std::ifstream f(log_file_);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }
  int admin_port() const { return admin_port_; }
  const std::string& data_dir() const { return data_dir_; }
  int grpc_port() const { return grpc_port_; }

  std::unique_ptr<quiver::v1::Collections::Stub> collections;
  std::unique_ptr<quiver::v1::Points::Stub> points;

 private:
  std::string data_dir_, work_dir_;
  std::vector<std::string> extra_;
  std::string ready_file_, log_file_;
  int starts_ = 0;
  pid_t pid_ = -1;
  int grpc_port_ = 0, admin_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace quiver::testing
