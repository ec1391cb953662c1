// Configuration layering (defaults -> YAML -> env -> flags) and vector files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "common/vector_file.h"
#include "service/config.h"
#include "service/peer.h"
#include "test_util.h"

namespace quiver {
namespace {

Result<service::ParseOutcome> Parse(std::vector<std::string> args, service::ServerConfig* cfg) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return service::LoadConfig(static_cast<int>(args.size()), argv.data(), cfg);
}

TEST(Config, DefaultsNeedNoFile) {
  service::ServerConfig cfg;
  ASSERT_TRUE(Parse({"quiverd"}, &cfg).ok());
  EXPECT_EQ(cfg.listen, "127.0.0.1:7700");
  EXPECT_EQ(cfg.admin_listen, "127.0.0.1:7702");
  EXPECT_EQ(cfg.data_dir, "./data");
  EXPECT_EQ(cfg.max_k, 10000u);
}

// docs/config.yaml documents every key with its default: it must load, and
// give exactly the compiled defaults.
TEST(Config, ReferenceFileListsEveryKeyWithItsDefault) {
  service::ServerConfig from_file;
  auto r = Parse({"quiverd", "--config", std::string(QUIVER_SOURCE_DIR) + "/docs/config.yaml"}, &from_file);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  service::ServerConfig defaults;
  EXPECT_EQ(from_file.listen, defaults.listen);
  EXPECT_EQ(from_file.admin_listen, defaults.admin_listen);
  EXPECT_EQ(from_file.data_dir, defaults.data_dir);
  EXPECT_EQ(from_file.max_k, defaults.max_k);
  EXPECT_EQ(from_file.max_message_bytes, defaults.max_message_bytes);
  EXPECT_EQ(from_file.max_points_per_request, defaults.max_points_per_request);
  EXPECT_EQ(from_file.max_batch_queries, defaults.max_batch_queries);
  EXPECT_EQ(from_file.max_payload_bytes, defaults.max_payload_bytes);
  EXPECT_EQ(from_file.write_timeout_ms, defaults.write_timeout_ms);
  EXPECT_EQ(from_file.shutdown_drain_ms, defaults.shutdown_drain_ms);
  EXPECT_EQ(from_file.grpc_max_threads, defaults.grpc_max_threads);
  EXPECT_EQ(from_file.search_threads, defaults.search_threads);
  EXPECT_EQ(from_file.search_batch_max_queries, defaults.search_batch_max_queries);
  EXPECT_EQ(from_file.search_batch_max_wait_us, defaults.search_batch_max_wait_us);
  EXPECT_EQ(from_file.gpu, defaults.gpu);
  EXPECT_EQ(from_file.gpu_memory_budget_mb, defaults.gpu_memory_budget_mb);
  EXPECT_EQ(from_file.gpu_flat_gemm, defaults.gpu_flat_gemm);
  EXPECT_EQ(from_file.log_level, defaults.log_level);
  EXPECT_EQ(from_file.log_format, defaults.log_format);
  EXPECT_EQ(from_file.ready_file, defaults.ready_file);
  // Every key in the file is one quiverd knows (unknown keys are refused), and
  // every flag quiverd has appears in the file.
  std::ifstream f(std::string(QUIVER_SOURCE_DIR) + "/docs/config.yaml");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (const char* key : {"listen:", "admin_listen:", "data_dir:", "max_k:", "max_message_bytes:",
                          "max_points_per_request:", "max_batch_queries:", "max_payload_bytes:", "write_timeout_ms:",
                          "shutdown_drain_ms:", "grpc_max_threads:", "search_threads:", "search_batch_max_queries:",
                          "search_batch_max_wait_us:", "gpu:", "gpu_memory_budget_mb:", "gpu_flat_gemm:", "log_level:", "log_format:",
                          "ready_file:"}) {
    EXPECT_NE(text.find(std::string("\n") + key), std::string::npos) << key;
  }
}

TEST(Config, FileThenEnvThenFlags) {
  quiver::testing::TempDir dir;
  const std::string path = dir.path() + "/q.yaml";
  std::ofstream(path) << "max_k: 50\ndata_dir: /from/file\nlisten: 0.0.0.0:9000\n";
  ::setenv("QUIVER_DATA_DIR", "/from/env", 1);
  service::ServerConfig cfg;
  auto r = Parse({"quiverd", "--config", path, "--listen", "127.0.0.1:1234"}, &cfg);
  ::unsetenv("QUIVER_DATA_DIR");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(cfg.max_k, 50u);               // file
  EXPECT_EQ(cfg.data_dir, "/from/env");    // env beats file
  EXPECT_EQ(cfg.listen, "127.0.0.1:1234");  // flag beats file
}

TEST(Config, BadValuesNameTheKey) {
  quiver::testing::TempDir dir;
  const std::string path = dir.path() + "/q.yaml";
  std::ofstream(path) << "max_kk: 5\n";
  service::ServerConfig cfg;
  auto r = Parse({"quiverd", "--config", path}, &cfg);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("max_kk"), std::string::npos);
  service::ServerConfig cfg2;
  r = Parse({"quiverd", "--max-k", "lots"}, &cfg2);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("max-k"), std::string::npos);
  service::ServerConfig cfg3;
  r = Parse({"quiverd", "--log-format", "xml"}, &cfg3);
  EXPECT_FALSE(r.ok());
  for (const char* gpu : {"gpu0", "-1", "99999"}) {
    service::ServerConfig cfg4;
    r = Parse({"quiverd", "--gpu", gpu}, &cfg4);
    ASSERT_FALSE(r.ok()) << gpu;
    EXPECT_NE(r.status().message().find("gpu"), std::string::npos);
  }
  for (const char* gpu : {"auto", "off", "1"}) {
    service::ServerConfig cfg5;
    EXPECT_TRUE(Parse({"quiverd", "--gpu", gpu}, &cfg5).ok()) << gpu;
    EXPECT_EQ(cfg5.gpu, gpu);
  }
  for (const char* gemm : {"tf32", "FP32"}) {
    service::ServerConfig cfg6;
    r = Parse({"quiverd", "--gpu-flat-gemm", gemm}, &cfg6);
    ASSERT_FALSE(r.ok()) << gemm;
    EXPECT_NE(r.status().message().find("gpu_flat_gemm"), std::string::npos) << r.status().ToString();
    EXPECT_EQ(cfg6.gpu_flat_gemm, "auto") << "a refused value changes nothing";
  }
  for (const char* gemm : {"auto", "fp32", "3xtf32"}) {
    service::ServerConfig cfg7;
    EXPECT_TRUE(Parse({"quiverd", "--gpu-flat-gemm", gemm}, &cfg7).ok()) << gemm;
    EXPECT_EQ(cfg7.gpu_flat_gemm, gemm);
  }
}

TEST(Config, ClusterKeysAreChecked) {
  service::ServerConfig ok;
  ASSERT_TRUE(Parse({"quiverd", "--node-id", "2", "--peers", "1=a:7701,2=b:7701,3=c:7701"}, &ok).ok());
  EXPECT_EQ(ok.node_id, 2u);
  for (std::vector<std::string> bad : {
           std::vector<std::string>{"quiverd", "--node-id", "4", "--peers", "1=a:1,2=b:1"},  // not listed
           std::vector<std::string>{"quiverd", "--node-id", "0"},
           std::vector<std::string>{"quiverd", "--peers", "1=a:1,1=b:1"},  // twice
           std::vector<std::string>{"quiverd", "--peers", "x=a:1"},
           std::vector<std::string>{"quiverd", "--peers", "1=nohostport"},
           std::vector<std::string>{"quiverd", "--raft-tick-ms", "5"},
       }) {
    service::ServerConfig cfg;
    EXPECT_FALSE(Parse(bad, &cfg).ok()) << bad[1] << " " << bad[2];
  }
  auto peers = service::ParsePeers("3=h3:7701,1=h1:7701");
  ASSERT_TRUE(peers.ok());
  EXPECT_EQ(peers->size(), 2u);
  EXPECT_EQ(peers->at(3), "h3:7701");
  EXPECT_TRUE(service::ParsePeers("")->empty());
}

TEST(PeerMessages, RoundTripAndRejectWhatCouldMisleadTheCore) {
  replication::raft::Message m;
  m.type = replication::raft::MessageType::kAppend;
  m.from = 1;
  m.to = 2;
  m.term = 7;
  m.index = 10;
  m.log_term = 6;
  m.commit = 9;
  m.entries = {{11, 7, storage::EntryType::kCommand, "a"}, {12, 7, storage::EntryType::kConfChange, "b"}};
  m.snapshot = {40, 5, {{1, 2}, {3}}};
  m.context = "ctx";
  quiver::internal::v1::RaftMessage pm;
  service::ToProto(m, &pm);
  auto back = service::FromProto(pm);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->entries, m.entries);
  EXPECT_EQ(back->snapshot, m.snapshot);
  EXPECT_EQ(back->term, 7u);
  EXPECT_EQ(back->context, "ctx");
  // The receiver's version moves the data out of the request it owns.
  quiver::internal::v1::RaftMessage received = pm;
  received.mutable_entries(0)->set_data(std::string(4096, 'r'));
  const char* bytes = received.entries(0).data().data();
  auto taken = service::FromProto(std::move(received));
  ASSERT_TRUE(taken.ok()) << taken.status().ToString();
  EXPECT_EQ(taken->entries[0].data.data(), bytes);
  EXPECT_EQ(taken->entries[0].data, std::string(4096, 'r'));
  EXPECT_EQ(taken->entries[1], m.entries[1]);

  auto bad = pm;
  bad.set_type(99);
  EXPECT_EQ(service::FromProto(bad).status().code(), StatusCode::kInvalidArgument);
  bad = pm;
  bad.set_from(0);
  EXPECT_FALSE(service::FromProto(bad).ok());
  bad = pm;
  bad.mutable_entries(1)->set_index(14);  // a gap
  EXPECT_FALSE(service::FromProto(bad).ok());
  bad = pm;
  bad.mutable_entries(0)->set_type(7);
  EXPECT_FALSE(service::FromProto(bad).ok());
  bad = pm;
  bad.mutable_snapshot()->add_voters(0);
  EXPECT_FALSE(service::FromProto(bad).ok());
}

// What Peer.Send receives from EncodeRaftBatch, parsed as the service parses it.
quiver::internal::v1::RaftBatch ParseSent(const grpc::ByteBuffer& sent, std::vector<grpc::Slice>* slices) {
  EXPECT_TRUE(sent.Dump(slices).ok());
  std::string bytes;
  for (const grpc::Slice& s : *slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  quiver::internal::v1::RaftBatch batch;
  EXPECT_TRUE(batch.ParseFromString(bytes));
  return batch;
}

TEST(PeerMessages, EncodedBatchParsesAsTheProtoAndSharesLargeEntries) {
  using replication::raft::Message;
  using replication::raft::MessageType;
  const std::string large(3 * service::kSharedEntryBytes + 5, 'L');
  const std::string just_below(service::kSharedEntryBytes - 1, 's');
  std::vector<Message> messages(3);
  messages[0].type = MessageType::kAppend;
  messages[0].from = 1;
  messages[0].to = 2;
  messages[0].term = 9;
  messages[0].log_term = 8;
  messages[0].index = 100;
  messages[0].commit = 99;
  messages[0].entries = {{101, 9, storage::EntryType::kCommand, large},
                         {102, 9, storage::EntryType::kCommand, ""},  // a leader's no-op
                         {103, 9, storage::EntryType::kConfChange, just_below},
                         {104, 9, storage::EntryType::kCommand, large + "2"}};
  messages[1].type = MessageType::kHeartbeat;  // no entries
  messages[1].from = 1;
  messages[1].to = 2;
  messages[1].term = 9;
  messages[1].commit = 104;
  messages[1].context = "read-42";
  messages[2].type = MessageType::kSnapshot;
  messages[2].from = 1;
  messages[2].to = 2;
  messages[2].term = 9;
  messages[2].snapshot = {90, 8, {{1, 2, 3}, {4}}};
  messages[2].reject = true;
  messages[2].reject_hint = 77;

  quiver::internal::v1::RaftBatch expected;
  for (const Message& m : messages) service::ToProto(m, expected.add_messages());
  expected.set_cluster_id("peers-abc");
  const char* large_bytes = messages[0].entries[0].data.data();
  const char* other_large_bytes = messages[0].entries[3].data.data();

  grpc::ByteBuffer sent = service::EncodeRaftBatch(messages, "peers-abc");
  messages.clear();  // the buffer keeps what it shares alive
  std::vector<grpc::Slice> slices;
  quiver::internal::v1::RaftBatch got = ParseSent(sent, &slices);
  EXPECT_EQ(got.SerializeAsString(), expected.SerializeAsString()) << got.DebugString();
  ASSERT_EQ(got.messages_size(), 3);
  EXPECT_EQ(got.messages(0).entries(0).data(), large);
  EXPECT_EQ(got.messages(0).entries(3).data(), large + "2");
  auto back = service::FromProto(got.messages(0));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->entries.size(), 4u);
  // The large entries are slices of their own over the log's bytes; the
  // small ones were copied in with the fields around them.
  size_t shared = 0;
  for (const grpc::Slice& s : slices) {
    const char* begin = reinterpret_cast<const char*>(s.begin());
    if (begin == large_bytes) {
      EXPECT_EQ(s.size(), large.size());
      ++shared;
    } else if (begin == other_large_bytes) {
      EXPECT_EQ(s.size(), large.size() + 1);
      ++shared;
    }
  }
  EXPECT_EQ(shared, 2u);

  // No messages: just the cluster id.
  slices.clear();
  got = ParseSent(service::EncodeRaftBatch({}, "c"), &slices);
  EXPECT_EQ(got.messages_size(), 0);
  EXPECT_EQ(got.cluster_id(), "c");
}

TEST(VectorFiles, RoundTripsAndValidation) {
  quiver::testing::TempDir dir;
  FloatMatrix m;
  m.rows = 3;
  m.cols = 5;
  m.data = quiver::testing::RandomVectors(3, 5, 1);
  ASSERT_TRUE(WriteFvecs(dir.path() + "/a.fvecs", m).ok());
  ASSERT_TRUE(WriteNpy(dir.path() + "/a.npy", m).ok());
  for (const char* name : {"/a.fvecs", "/a.npy"}) {
    auto back = ReadVectorFile(dir.path() + name);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->rows, 3u);
    EXPECT_EQ(back->cols, 5u);
    EXPECT_EQ(back->data, m.data);
  }
  EXPECT_EQ(ReadVectorFile(dir.path() + "/a.fvecs", 2)->rows, 2u);
  std::ofstream(dir.path() + "/bad.fvecs", std::ios::binary) << "abcdefg";
  EXPECT_EQ(ReadVectorFile(dir.path() + "/bad.fvecs").status().code(), StatusCode::kInvalidArgument);
  std::ofstream(dir.path() + "/bad.npy", std::ios::binary) << "\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'}";
  EXPECT_EQ(ReadVectorFile(dir.path() + "/bad.npy").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadVectorFile(dir.path() + "/missing.fvecs").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace quiver
