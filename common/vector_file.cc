#include "common/vector_file.h"

#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>

namespace quiver {
namespace {

Result<std::string> Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::NotFound("cannot open " + path);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return bytes;
}

bool EndsWith(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// TEXMEX layout: rows of [int32 d][d values of elem_size bytes].
template <typename Out, typename In>
Status ReadTexmex(const std::string& path, const std::string& bytes, size_t max_rows, size_t* rows_out,
                  size_t* cols_out, std::vector<Out>* out) {
  if (bytes.size() < 4) return Status::InvalidArgument(path + ": file is shorter than one row header");
  int32_t d = 0;
  std::memcpy(&d, bytes.data(), 4);
  if (d <= 0 || d > (1 << 20)) return Status::InvalidArgument(path + ": row 0 has invalid dimension " + std::to_string(d));
  const size_t row_bytes = 4 + size_t(d) * sizeof(In);
  if (bytes.size() % row_bytes != 0) {
    return Status::InvalidArgument(path + ": size " + std::to_string(bytes.size()) +
                                   " is not a whole number of rows of dimension " + std::to_string(d));
  }
  size_t rows = bytes.size() / row_bytes;
  if (max_rows != 0 && rows > max_rows) rows = max_rows;
  out->resize(rows * size_t(d));
  for (size_t r = 0; r < rows; ++r) {
    int32_t dr = 0;
    std::memcpy(&dr, bytes.data() + r * row_bytes, 4);
    if (dr != d) {
      return Status::InvalidArgument(path + ": row " + std::to_string(r) + " has dimension " + std::to_string(dr) +
                                     ", row 0 has " + std::to_string(d));
    }
    const char* src = bytes.data() + r * row_bytes + 4;
    for (int32_t j = 0; j < d; ++j) {
      In v;
      std::memcpy(&v, src + size_t(j) * sizeof(In), sizeof(In));
      (*out)[r * size_t(d) + size_t(j)] = static_cast<Out>(v);
    }
  }
  *rows_out = rows;
  *cols_out = size_t(d);
  return Status::Ok();
}

Status ReadNpy(const std::string& path, const std::string& bytes, size_t max_rows, FloatMatrix* m) {
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) {
    return Status::InvalidArgument(path + ": not a .npy file (bad magic)");
  }
  const uint8_t major = static_cast<uint8_t>(bytes[6]);
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (size_t(static_cast<uint8_t>(bytes[9])) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) return Status::InvalidArgument(path + ": truncated .npy header");
    uint32_t len = 0;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    header_start = 12;
  } else {
    return Status::InvalidArgument(path + ": unsupported .npy version " + std::to_string(major));
  }
  if (header_start + header_len > bytes.size()) return Status::InvalidArgument(path + ": truncated .npy header");
  const std::string header = bytes.substr(header_start, header_len);
  std::smatch match;
  if (!std::regex_search(header, match, std::regex(R"('descr':\s*'([^']*)')")) || match[1] != "<f4") {
    return Status::InvalidArgument(path + ": .npy dtype must be little-endian float32 ('<f4')");
  }
  if (std::regex_search(header, match, std::regex(R"('fortran_order':\s*True)"))) {
    return Status::InvalidArgument(path + ": .npy must be in C order");
  }
  if (!std::regex_search(header, match, std::regex(R"('shape':\s*\((\d+),\s*(\d*)\s*\))"))) {
    return Status::InvalidArgument(path + ": .npy shape must be 1-D or 2-D");
  }
  size_t rows = std::stoull(match[1]);
  size_t cols = match[2].length() > 0 ? std::stoull(match[2]) : 0;
  if (cols == 0) {  // 1-D: one vector
    cols = rows;
    rows = 1;
  }
  const size_t data_start = header_start + header_len;
  if (cols == 0 || (bytes.size() - data_start) != rows * cols * 4) {
    return Status::InvalidArgument(path + ": .npy data size does not match its shape");
  }
  if (max_rows != 0 && rows > max_rows) rows = max_rows;
  m->rows = rows;
  m->cols = cols;
  m->data.resize(rows * cols);
  std::memcpy(m->data.data(), bytes.data() + data_start, rows * cols * 4);
  return Status::Ok();
}

Status WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) return Status::IOError("cannot write " + path);
  return Status::Ok();
}

}  // namespace

Result<FloatMatrix> ReadVectorFile(const std::string& path, size_t max_rows) {
  QUIVER_ASSIGN_OR_RETURN(std::string bytes, Slurp(path));
  FloatMatrix m;
  if (EndsWith(path, ".fvecs")) {
    QUIVER_RETURN_IF_ERROR(ReadTexmex<float, float>(path, bytes, max_rows, &m.rows, &m.cols, &m.data));
  } else if (EndsWith(path, ".bvecs")) {
    QUIVER_RETURN_IF_ERROR(ReadTexmex<float, uint8_t>(path, bytes, max_rows, &m.rows, &m.cols, &m.data));
  } else if (EndsWith(path, ".npy")) {
    QUIVER_RETURN_IF_ERROR(ReadNpy(path, bytes, max_rows, &m));
  } else {
    return Status::InvalidArgument(path + ": unknown extension (expected .fvecs, .bvecs or .npy)");
  }
  return m;
}

Result<IntMatrix> ReadIvecs(const std::string& path, size_t max_rows) {
  QUIVER_ASSIGN_OR_RETURN(std::string bytes, Slurp(path));
  IntMatrix m;
  QUIVER_RETURN_IF_ERROR(ReadTexmex<int32_t, int32_t>(path, bytes, max_rows, &m.rows, &m.cols, &m.data));
  return m;
}

Status WriteFvecs(const std::string& path, const FloatMatrix& m) {
  std::string out;
  out.reserve(m.rows * (4 + m.cols * 4));
  const int32_t d = static_cast<int32_t>(m.cols);
  for (size_t r = 0; r < m.rows; ++r) {
    out.append(reinterpret_cast<const char*>(&d), 4);
    out.append(reinterpret_cast<const char*>(m.row(r)), m.cols * 4);
  }
  return WriteBytes(path, out);
}

Status WriteIvecs(const std::string& path, const IntMatrix& m) {
  std::string out;
  const int32_t d = static_cast<int32_t>(m.cols);
  for (size_t r = 0; r < m.rows; ++r) {
    out.append(reinterpret_cast<const char*>(&d), 4);
    out.append(reinterpret_cast<const char*>(m.data.data() + r * m.cols), m.cols * 4);
  }
  return WriteBytes(path, out);
}

Status WriteNpy(const std::string& path, const FloatMatrix& m) {
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(m.rows) + ", " +
                       std::to_string(m.cols) + "), }";
  // Pad so the data starts on a 64-byte boundary, header ends with '\n'.
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out += header;
  out.append(reinterpret_cast<const char*>(m.data.data()), m.data.size() * 4);
  return WriteBytes(path, out);
}

}  // namespace quiver
