// Configuration layering (defaults -> YAML -> env -> flags) and vector files.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "common/vector_file.h"
#include "service/config.h"
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
