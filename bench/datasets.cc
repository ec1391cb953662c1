#include "bench/datasets.h"

#include <hdf5.h>

#include <vector>

namespace quiver::bench {
namespace {

// Closes an HDF5 handle with the right function when it goes out of scope.
class Handle {
 public:
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Handle() {
    if (id_ >= 0) close_(id_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// HDF5 prints its own error stacks unless told not to; we report ours.
void Quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

template <typename T>
Status ReadMatrix(hid_t file, const std::string& path, const char* name, hid_t mem_type, size_t max_rows,
                  size_t* rows, size_t* cols, std::vector<T>* out) {
  Handle ds(H5Dopen2(file, name, H5P_DEFAULT), H5Dclose);
  if (!ds.ok()) return Status::InvalidArgument(path + ": no dataset '" + name + "'");
  Handle space(H5Dget_space(ds.get()), H5Sclose);
  if (!space.ok() || H5Sget_simple_extent_ndims(space.get()) != 2) {
    return Status::InvalidArgument(path + ": dataset '" + name + "' is not two-dimensional");
  }
  hsize_t dims[2];
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  if (dims[1] == 0 || dims[1] > (1u << 20)) {
    return Status::InvalidArgument(path + ": dataset '" + name + "' has " + std::to_string(dims[1]) + " columns");
  }
  hsize_t want[2] = {max_rows != 0 && max_rows < dims[0] ? max_rows : dims[0], dims[1]};
  hsize_t start[2] = {0, 0};
  if (H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start, nullptr, want, nullptr) < 0) {
    return Status::InvalidArgument(path + ": cannot select rows of '" + name + "'");
  }
  Handle mem(H5Screate_simple(2, want, nullptr), H5Sclose);
  out->resize(want[0] * want[1]);
  if (H5Dread(ds.get(), mem_type, mem.get(), space.get(), H5P_DEFAULT, out->data()) < 0) {
    return Status::InvalidArgument(path + ": cannot read dataset '" + name + "' as numbers");
  }
  *rows = want[0];
  *cols = want[1];
  return Status::Ok();
}

template <typename T>
Status WriteMatrix(hid_t file, const char* name, hid_t type, size_t rows, size_t cols, const std::vector<T>& data) {
  hsize_t dims[2] = {rows, cols};
  Handle space(H5Screate_simple(2, dims, nullptr), H5Sclose);
  Handle ds(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!ds.ok() || H5Dwrite(ds.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()) < 0) {
    return Status::IOError(std::string("cannot write dataset ") + name);
  }
  return Status::Ok();
}

}  // namespace

Result<AnnDataset> ReadAnnBenchmarksHdf5(const std::string& path, size_t max_train) {
  Quiet();
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) return Status::NotFound("cannot open " + path + " as HDF5");
  AnnDataset d;
  QUIVER_RETURN_IF_ERROR(
      ReadMatrix(file.get(), path, "train", H5T_NATIVE_FLOAT, max_train, &d.train.rows, &d.train.cols, &d.train.data));
  QUIVER_RETURN_IF_ERROR(
      ReadMatrix(file.get(), path, "test", H5T_NATIVE_FLOAT, 0, &d.test.rows, &d.test.cols, &d.test.data));
  if (d.test.cols != d.train.cols) {
    return Status::InvalidArgument(path + ": test has dimension " + std::to_string(d.test.cols) + ", train " +
                                   std::to_string(d.train.cols));
  }
  const bool truncated = max_train != 0;
  if (!truncated && H5Lexists(file.get(), "neighbors", H5P_DEFAULT) > 0) {
    QUIVER_RETURN_IF_ERROR(ReadMatrix(file.get(), path, "neighbors", H5T_NATIVE_INT32, 0, &d.neighbors.rows,
                                      &d.neighbors.cols, &d.neighbors.data));
    if (d.neighbors.rows != d.test.rows) {
      return Status::InvalidArgument(path + ": neighbors has " + std::to_string(d.neighbors.rows) + " rows, test " +
                                     std::to_string(d.test.rows));
    }
  }
  if (H5Aexists(file.get(), "distance") > 0) {
    Handle attr(H5Aopen(file.get(), "distance", H5P_DEFAULT), H5Aclose);
    Handle type(H5Aget_type(attr.get()), H5Tclose);
    if (H5Tget_class(type.get()) == H5T_STRING) {
      if (H5Tis_variable_str(type.get()) > 0) {
        char* value = nullptr;
        Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
        H5Tset_size(mem.get(), H5T_VARIABLE);
        if (H5Aread(attr.get(), mem.get(), &value) >= 0 && value != nullptr) {
          d.distance = value;
          H5free_memory(value);
        }
      } else {
        std::string value(H5Tget_size(type.get()), '\0');
        if (H5Aread(attr.get(), type.get(), value.data()) >= 0) d.distance = value.c_str();
      }
    }
  }
  return d;
}

Status WriteAnnBenchmarksHdf5(const std::string& path, const AnnDataset& d) {
  Quiet();
  Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) return Status::IOError("cannot create " + path);
  QUIVER_RETURN_IF_ERROR(WriteMatrix(file.get(), "train", H5T_NATIVE_FLOAT, d.train.rows, d.train.cols, d.train.data));
  QUIVER_RETURN_IF_ERROR(WriteMatrix(file.get(), "test", H5T_NATIVE_FLOAT, d.test.rows, d.test.cols, d.test.data));
  if (d.neighbors.rows > 0) {
    QUIVER_RETURN_IF_ERROR(WriteMatrix(file.get(), "neighbors", H5T_NATIVE_INT32, d.neighbors.rows, d.neighbors.cols,
                                       d.neighbors.data));
  }
  if (!d.distance.empty()) {
    Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(type.get(), d.distance.size());
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    Handle attr(H5Acreate2(file.get(), "distance", type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!attr.ok() || H5Awrite(attr.get(), type.get(), d.distance.data()) < 0) {
      return Status::IOError("cannot write attribute distance in " + path);
    }
  }
  return Status::Ok();
}

}  // namespace quiver::bench
