#include "kernels/vector_index.h"

#include <cstring>

#include "kernels/graph.h"
#include "kernels/ivf_flat.h"
#include "kernels/ivf_pq.h"

namespace quiver::kernels {

Result<std::unique_ptr<VectorIndex>> DeserializeIndex(std::string_view bytes, const std::string& what) {
  // Every format starts with an 8-byte magic naming its kind.
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), "QVIVFFL1", 8) == 0) {
    QUIVER_ASSIGN_OR_RETURN(auto index, IvfFlatIndex::Deserialize(bytes, what));
    return std::unique_ptr<VectorIndex>(std::move(index));
  }
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), "QVIVFPQ1", 8) == 0) {
    QUIVER_ASSIGN_OR_RETURN(auto index, IvfPqIndex::Deserialize(bytes, what));
    return std::unique_ptr<VectorIndex>(std::move(index));
  }
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), "QVGRAPH1", 8) == 0) {
    QUIVER_ASSIGN_OR_RETURN(auto index, GraphIndex::Deserialize(bytes, what));
    return std::unique_ptr<VectorIndex>(std::move(index));
  }
  return Status::Corruption("index " + what + ": unknown magic");
}

}  // namespace quiver::kernels
