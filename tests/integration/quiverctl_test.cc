// quiverctl against a real quiverd: every command, --help everywhere, JSON
// output, and exit codes for bad input.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>

#include "common/vector_file.h"
#include "process_fixture.h"
#include "tls_files.h"

namespace quiver::testing {
namespace {

struct CtlResult {
  int code;
  std::string out;
};

CtlResult Ctl(const std::string& args) {
  const std::string cmd = std::string(QUIVERCTL_PATH) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(Quiverctl, EveryCommandAgainstARealServer) {
  TempDir dir;
  QuiverdProcess q(dir.path() + "/data", dir.path());
  q.Start();
  // The ready file names the port; quiverctl takes it through --addr.
  int grpc_port = 0, admin_port = 0;
  ASSERT_TRUE(ReadReadyFile(dir.path() + "/ready-1.json", &grpc_port, &admin_port));
  const std::string addr = "--addr 127.0.0.1:" + std::to_string(grpc_port) + " ";

  FloatMatrix m{50, 8, RandomVectors(50, 8, 3)};
  ASSERT_TRUE(WriteNpy(dir.path() + "/v.npy", m).ok());
  ASSERT_TRUE(WriteFvecs(dir.path() + "/v.fvecs", m).ok());

  CtlResult r = Ctl(addr + "collections create docs --dim 8 --metric cosine");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("metric=COSINE"), std::string::npos) << r.out;
  r = Ctl(addr + "upsert docs " + dir.path() + "/v.npy --batch 7");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("upserted 50 points"), std::string::npos) << r.out;
  r = Ctl(addr + "upsert docs " + dir.path() + "/v.fvecs --start-id 1000");
  ASSERT_EQ(r.code, 0) << r.out;
  r = Ctl(addr + "--json count docs");
  EXPECT_EQ(r.out, "{\"count\":100}\n");
  r = Ctl(addr + "--json collections list");
  EXPECT_EQ(r.out,
            "[{\"name\":\"docs\",\"dimension\":8,\"metric\":\"COSINE\",\"index\":\"FLAT\",\"points\":100,"
            "\"sealed_segments\":0,\"indexed_segments\":0,\"tombstones\":0,\"index_bytes\":0,"
            "\"index_bytes_per_vector\":0,\"indexed_payload_fields\":[]}]\n");
  r = Ctl(addr + "collections describe docs");
  EXPECT_NE(r.out.find("points=100"), std::string::npos) << r.out;
  // Row 5 as the query: ids 5 and 1005 hold the same vector, cosine 1.
  r = Ctl(addr + "--json search docs " + dir.path() + "/v.fvecs --k 2 --row 5");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"id\":5,\"score\":1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"id\":1005,\"score\":1"), std::string::npos) << r.out;
  r = Ctl(addr + "search docs " + dir.path() + "/v.npy --k 1 --all");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("# query 49"), std::string::npos) << r.out;

  // Errors: server-side statuses exit 1 with the message; bad usage exits 2.
  r = Ctl(addr + "collections describe nope");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("does not exist"), std::string::npos) << r.out;
  r = Ctl(addr + "collections create x --dim 8 --metric manhattan");
  EXPECT_EQ(r.code, 2) << r.out;
  r = Ctl(addr + "collections create docs --dim 8");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("already exists"), std::string::npos) << r.out;
  r = Ctl(addr + "search docs " + dir.path() + "/v.npy --row 50");
  EXPECT_EQ(r.code, 2) << r.out;

  // An IVF_FLAT collection with small segments, searched with --nprobe.
  r = Ctl(addr + "collections create ivf --dim 8 --index ivf_flat --nlist 4 --segment-points 64 --index-field tag "
                 "--index-field n");
  ASSERT_EQ(r.code, 0) << r.out;
  r = Ctl(addr + "--json collections describe ivf");
  EXPECT_NE(r.out.find("\"indexed_payload_fields\":[\"tag\",\"n\"]"), std::string::npos) << r.out;
  r = Ctl(addr + "collections create bad --dim 8 --index-field tag --index-field tag");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("config.indexed_payload_fields[1] repeats 'tag'"), std::string::npos) << r.out;
  r = Ctl(addr + "upsert ivf " + dir.path() + "/v.npy");
  ASSERT_EQ(r.code, 0) << r.out;
  r = Ctl(addr + "--json search ivf " + dir.path() + "/v.npy --k 1 --row 7 --nprobe 4");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("[[{\"id\":7,\"score\":0"), std::string::npos) << r.out;
  r = Ctl(addr + "collections delete ivf");
  EXPECT_EQ(r.code, 0) << r.out;

  r = Ctl(addr + "collections delete docs");
  EXPECT_EQ(r.code, 0) << r.out;
  r = Ctl(addr + "--json collections list");
  EXPECT_EQ(r.out, "[]\n");
}

TEST(Quiverctl, ApiKeyAndTlsAgainstARealServer) {
  if (!HaveOpensslTool()) GTEST_SKIP() << "no openssl tool to make certificates";
  TempDir dir;
  TlsFiles tls;
  QuiverdProcess q(dir.path() + "/data", dir.path(),
                   {"--tls-cert-file", tls.Path("server.pem"), "--tls-key-file", tls.Path("server.key"), "--api-key",
                    "k-rw", "--read-only-api-key", "k-ro"});
  q.Start();
  int grpc_port = 0, admin_port = 0;
  ASSERT_TRUE(ReadReadyFile(dir.path() + "/ready-1.json", &grpc_port, &admin_port));
  const std::string addr = "--addr localhost:" + std::to_string(grpc_port) + " --tls-ca " + tls.Path("ca.pem") + " ";
  CtlResult r = Ctl(addr + "--api-key k-rw collections create c --dim 4");
  EXPECT_EQ(r.code, 0) << r.out;
  r = Ctl(addr + "--api-key k-ro --json collections list");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"name\":\"c\""), std::string::npos) << r.out;
  r = Ctl(addr + "--api-key k-ro collections delete c");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("read-only"), std::string::npos) << r.out;
  r = Ctl(addr + "collections list");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("requires an API key"), std::string::npos) << r.out;
  r = Ctl("--addr localhost:" + std::to_string(grpc_port) + " --api-key k-rw --timeout 3 collections list");
  EXPECT_EQ(r.code, 1) << "plaintext to a TLS port fails: " << r.out;
}

// Backups: `snapshot create` while the node serves, `snapshot list`, and a
// new data directory started from the backup with quiverd --restore-from.
TEST(Quiverctl, SnapshotCreateListAndRestoreIntoANewNode) {
  TempDir dir;
  QuiverdProcess q(dir.path() + "/data", dir.path());
  q.Start();
  const std::string addr = "--addr 127.0.0.1:" + std::to_string(q.grpc_port()) + " ";
  FloatMatrix m{300, 8, RandomVectors(300, 8, 4)};
  ASSERT_TRUE(WriteNpy(dir.path() + "/v.npy", m).ok());
  ASSERT_EQ(Ctl(addr + "collections create docs --dim 8 --index ivf_flat --nlist 4 --segment-points 100").code, 0);
  ASSERT_EQ(Ctl(addr + "upsert docs " + dir.path() + "/v.npy --batch 50").code, 0);
  CtlResult r = Ctl(addr + "snapshot create nightly");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("nightly"), std::string::npos) << r.out;
  EXPECT_EQ(Ctl(addr + "snapshot create nightly").code, 1) << "names are unique";
  EXPECT_NE(Ctl(addr + "snapshot create ../escape").code, 0);
  // Later writes are not in the backup.
  ASSERT_EQ(Ctl(addr + "upsert docs " + dir.path() + "/v.npy --start-id 5000").code, 0);
  r = Ctl(addr + "--json snapshot list");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out.rfind("[{\"name\":\"nightly\"", 0), 0u) << r.out;
  const std::string path = dir.path() + "/data/backups/nightly";
  EXPECT_NE(r.out.find(path), std::string::npos) << r.out;

  // Online: the backup's collection back under a new name while the node
  // serves; the scratch copy it was read from is gone afterwards.
  r = Ctl(addr + "--json snapshot restore nightly --collection docs --suffix _restored");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"collections\":[{\"source\":\"docs\",\"target\":\"docs_restored\",\"points\":300}]"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(Ctl(addr + "--json count docs_restored").out, "{\"count\":300}\n");
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/data/restore-scratch"));
  r = Ctl(addr + "snapshot restore nightly");
  EXPECT_EQ(r.code, 1) << "docs exists: " << r.out;
  EXPECT_NE(r.out.find("exists"), std::string::npos) << r.out;
  r = Ctl(addr + "snapshot restore no-such-backup");
  EXPECT_EQ(r.code, 1) << r.out;

  TempDir other;
  QuiverdProcess restored(other.path() + "/data", other.path(), {"--restore-from", path});
  restored.Start();
  const std::string addr2 = "--addr 127.0.0.1:" + std::to_string(restored.grpc_port()) + " ";
  r = Ctl(addr2 + "--json count docs");
  EXPECT_EQ(r.out, "{\"count\":300}\n");
  EXPECT_EQ(Ctl(addr + "--json count docs").out, "{\"count\":600}\n");
  // The restored node takes writes, and a restart does not restore again.
  ASSERT_EQ(Ctl(addr2 + "upsert docs " + dir.path() + "/v.npy --start-id 9000").code, 0);
  restored.Kill(SIGTERM);
  ASSERT_TRUE(restored.WaitExit(std::chrono::seconds(10)).has_value());
  restored.Start();
  const std::string addr3 = "--addr 127.0.0.1:" + std::to_string(restored.grpc_port()) + " ";
  EXPECT_EQ(Ctl(addr3 + "--json count docs").out, "{\"count\":600}\n");
  EXPECT_NE(restored.Log().find("restore_from ignored"), std::string::npos);
}

TEST(Quiverctl, HelpEverywhere) {
  for (const char* sub : {"", "collections", "collections create", "collections list", "collections describe",
                          "collections delete", "upsert", "search", "count", "snapshot", "snapshot create",
                          "snapshot list", "snapshot restore"}) {
    CtlResult r = Ctl(std::string(sub) + " --help");
    EXPECT_EQ(r.code, 0) << sub << ": " << r.out;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << sub;
  }
}

}  // namespace
}  // namespace quiver::testing
