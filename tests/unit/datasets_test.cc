// ann-benchmarks HDF5 files: round trip, truncation, and malformed files.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <fstream>

#include "bench/datasets.h"
#include "test_util.h"

namespace quiver::bench {
namespace {

AnnDataset Small() {
  AnnDataset d;
  d.train = {50, 4, quiver::testing::RandomVectors(50, 4, 1)};
  d.test = {3, 4, quiver::testing::RandomVectors(3, 4, 2)};
  d.neighbors.rows = 3;
  d.neighbors.cols = 2;
  d.neighbors.data = {1, 2, 3, 4, 5, 6};
  d.distance = "euclidean";
  return d;
}

TEST(AnnBenchmarksHdf5, RoundTrip) {
  quiver::testing::TempDir dir;
  const std::string path = dir.path() + "/small.hdf5";
  ASSERT_TRUE(WriteAnnBenchmarksHdf5(path, Small()).ok());
  auto d = ReadAnnBenchmarksHdf5(path);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->train.rows, 50u);
  EXPECT_EQ(d->train.cols, 4u);
  EXPECT_EQ(d->train.data, Small().train.data);
  EXPECT_EQ(d->test.data, Small().test.data);
  EXPECT_EQ(d->neighbors.data, Small().neighbors.data);
  EXPECT_EQ(d->distance, "euclidean");
  auto head = ReadAnnBenchmarksHdf5(path, 10);
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->train.rows, 10u);
  EXPECT_EQ(head->neighbors.rows, 0u) << "ground truth of the full set does not apply to a prefix";
}

TEST(AnnBenchmarksHdf5, MalformedFilesAreErrorsNamingTheProblem) {
  quiver::testing::TempDir dir;
  EXPECT_EQ(ReadAnnBenchmarksHdf5(dir.path() + "/missing.hdf5").status().code(), StatusCode::kNotFound);
  // No "test" dataset.
  AnnDataset d = Small();
  d.test = {};
  const std::string no_test = dir.path() + "/no_test.hdf5";
  {
    hid_t f = H5Fcreate(no_test.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[2] = {50, 4};
    hid_t space = H5Screate_simple(2, dims, nullptr);
    hid_t ds = H5Dcreate2(f, "train", H5T_NATIVE_FLOAT, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ASSERT_GE(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, Small().train.data.data()), 0);
    H5Dclose(ds);
    H5Sclose(space);
    H5Fclose(f);
  }
  auto r = ReadAnnBenchmarksHdf5(no_test);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no dataset 'test'"), std::string::npos) << r.status().message();
  // Test vectors of another dimension than train.
  d = Small();
  d.test = {3, 5, quiver::testing::RandomVectors(3, 5, 3)};
  const std::string mismatch = dir.path() + "/mismatch.hdf5";
  ASSERT_TRUE(WriteAnnBenchmarksHdf5(mismatch, d).ok());
  r = ReadAnnBenchmarksHdf5(mismatch);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("dimension"), std::string::npos);
  // Not an HDF5 file at all.
  const std::string garbage = dir.path() + "/garbage.hdf5";
  std::ofstream(garbage) << "not hdf5";
  EXPECT_FALSE(ReadAnnBenchmarksHdf5(garbage).ok());
}

}  // namespace
}  // namespace quiver::bench
