// Certificates for TLS tests, made with the openssl tool in a temporary
// directory: a CA, a server certificate for localhost / 127.0.0.1 signed by
// it, a client certificate signed by it, and an unrelated CA.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace quiver::testing {

inline bool HaveOpensslTool() { return std::system("openssl version >/dev/null 2>&1") == 0; }

// Certificates under a temporary directory; Path() and Read() by file name.
class TlsFiles {
 public:
  TlsFiles() {
    const std::string d = dir_.path();
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    // (Written here: a shell redirection would lose to the quieting one below.)
    std::ofstream(d + "/san.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n";
    const std::vector<std::string> steps = {
        "openssl req -x509" + ec + " -keyout " + d + "/ca.key -out " + d + "/ca.pem -days 2 -subj /CN=quiver-test-ca",
        "openssl req -x509" + ec + " -keyout " + d + "/other.key -out " + d + "/other.pem -days 2 -subj /CN=other-ca",
        "openssl req" + ec + " -keyout " + d + "/server.key -out " + d + "/server.csr -subj /CN=localhost",

        "openssl x509 -req -in " + d + "/server.csr -CA " + d + "/ca.pem -CAkey " + d + "/ca.key -CAcreateserial -out " +
            d + "/server.pem -days 2 -extfile " + d + "/san.ext",
        "openssl req" + ec + " -keyout " + d + "/client.key -out " + d + "/client.csr -subj /CN=quiver-client",
        "openssl x509 -req -in " + d + "/client.csr -CA " + d + "/ca.pem -CAkey " + d + "/ca.key -CAcreateserial -out " +
            d + "/client.pem -days 2",
    };
    for (const auto& cmd : steps) {
      const std::string quiet = cmd + " >/dev/null 2>&1";
      EXPECT_EQ(std::system(quiet.c_str()), 0) << cmd;
    }
  }
  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }
  std::string Read(const std::string& name) const {
    std::ifstream f(Path(name));
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  }

 private:
  TempDir dir_;
};

}  // namespace quiver::testing
