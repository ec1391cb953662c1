// Runs a quiverd Server in this process on ephemeral ports, with stubs.
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <thread>

#include "quiver/v1/cluster.grpc.pb.h"
#include "quiver/v1/collections.grpc.pb.h"
#include "quiver/v1/points.grpc.pb.h"
#include "service/server.h"
#include "test_util.h"

namespace quiver::testing {

/// Reads {"grpc_port": N, "admin_port": M, ...} written by quiverd.
inline bool ReadReadyFile(const std::string& path, int* grpc_port, int* admin_port) {
  std::ifstream f(path);
  if (!f) return false;
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(R"("grpc_port": (\d+), "admin_port": (\d+))"))) return false;
  *grpc_port = std::stoi(m[1]);
  *admin_port = std::stoi(m[2]);
  return true;
}

class InProcessServer {
 public:
  explicit InProcessServer(service::ServerConfig cfg = {}) {
    cfg.listen = "127.0.0.1:0";
    cfg.admin_listen = "127.0.0.1:0";
    if (cfg.data_dir == "./data") cfg.data_dir = dir_.path() + "/data";
    cfg.ready_file = dir_.path() + "/ready.json";
    server_ = std::make_unique<service::Server>(cfg);
    thread_ = std::thread([this] { status_ = server_->Run(); });
    for (int i = 0; i < 500 && !ReadReadyFile(cfg.ready_file, &grpc_port_, &admin_port_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_GT(grpc_port_, 0) << "server did not become ready";
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(256 << 20);
    args.SetMaxReceiveMessageSize(256 << 20);
    channel_ = grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(grpc_port_), grpc::InsecureChannelCredentials(),
                                         args);
    collections = quiver::v1::Collections::NewStub(channel_);
    points = quiver::v1::Points::NewStub(channel_);
    cluster = quiver::v1::Cluster::NewStub(channel_);
  }
  ~InProcessServer() { EXPECT_TRUE(Stop().ok()); }
  Status Stop() {
    if (thread_.joinable()) {
      server_->RequestStop();
      thread_.join();
    }
    return status_;
  }
  int admin_port() const { return admin_port_; }
  int grpc_port() const { return grpc_port_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

  std::unique_ptr<quiver::v1::Collections::Stub> collections;
  std::unique_ptr<quiver::v1::Points::Stub> points;
  std::unique_ptr<quiver::v1::Cluster::Stub> cluster;

 private:
  TempDir dir_;
  std::unique_ptr<service::Server> server_;
  std::thread thread_;
  Status status_;
  int grpc_port_ = 0, admin_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace quiver::testing
