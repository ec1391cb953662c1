// GPU GRAPH search (kernels/gpu_search.h), CAGRA's single-CTA shape: one
// thread block per query, everything it updates in shared memory.
//
// Shared memory of a block:
//   beam  uint64[beam_len]  keys (score bits << 32 | node), the first itopk
//                           sorted; bit 31 of a key marks a node already
//                           expanded; [itopk, beam_len) takes each step's
//                           candidates before the merge
//   kept  uint64[kept_len]  the k best returnable (not tombstoned) keys seen,
//                           then the step's returnable candidates
//   query float[dim]
//   hash  uint32[2^hash_bits]  visited nodes, open addressing
//   cand  uint32[expansion] the step's candidate nodes
// A step: warp 0 picks the search_width best unexpanded beam nodes and
// marks them; the block lists their neighbours, drops those already visited
// (atomicCAS into the hash), scores the rest a warp per node with exact fp32
// distances (coalesced reads of the row-major vectors), and sorts beam and
// kept (bitonic) so the best stay in front. The search ends when every beam
// node is expanded, or after the steps the hash was sized for (it never
// holds more than half its slots, so lookups stay short and no node is
// scored twice). The seeds enter through the same path, expansion at a time.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/kmeans.h"
#include "kernels/gpu/flat_detail.cuh"
#include "kernels/gpu_search.h"

namespace quiver::kernels::gpu {
namespace {

constexpr int kGraphBlock = 256;
constexpr int kWarps = kGraphBlock / 32;
constexpr uint64_t kExpandedBit = 1ull << 31;
constexpr uint32_t kFreeSlot = 0xffffffffu;
// Hash slots: at least 2x the nodes a search may visit, at most 2^14 (64 KiB).
constexpr int kMinHashBits = 10;
constexpr int kMaxHashBits = 14;

struct GraphArgs {
  const float* vectors;
  const uint32_t* graph;
  const uint32_t* seeds;
  const float* queries;
  const uint64_t* deleted;
  uint64_t* out;  // nq x k keys
  int dim;
  int degree;
  int num_seeds;
  int k;
  int itopk;
  int width;
  int expansion;  // width * degree: candidates per step
  int max_steps;
  int beam_len;   // NextPow2(itopk + expansion)
  int kept_len;   // NextPow2(k + expansion)
  int hash_bits;
  bool l2;
};

__device__ __forceinline__ bool IsDeleted(const uint64_t* deleted, uint32_t row) {
  return deleted != nullptr && ((deleted[row >> 6] >> (row & 63u)) & 1ull);
}

// True when `node` was not yet in the hash (this call inserted it). A full
// probe sequence counts as visited: the node is skipped, never scored twice.
__device__ bool VisitOnce(uint32_t* hash, int bits, uint32_t node) {
  const uint32_t mask = (1u << bits) - 1u;
  uint32_t slot = (node * 2654435761u) >> (32 - bits);
  for (uint32_t probe = 0; probe <= mask; ++probe) {
    const uint32_t seen = atomicCAS(&hash[slot], kFreeSlot, node);
    if (seen == kFreeSlot) return true;
    if (seen == node) return false;
    slot = (slot + 1u) & mask;
  }
  return false;
}

// Squared L2 distance or dot product of the shared query and one vector,
// summed across the warp (every lane gets the total).
__device__ float WarpScore(const float* q, const float* v, int dim, bool l2, int lane) {
  float acc = 0.0f;
  if ((dim & 3) == 0) {  // rows are 16-byte aligned: float4 reads
    const float4* v4 = reinterpret_cast<const float4*>(v);
    for (int i = lane; i < dim / 4; i += 32) {
      const float4 x = v4[i];
      const float* qi = q + 4 * i;
      if (l2) {
        const float a = qi[0] - x.x, b = qi[1] - x.y, c = qi[2] - x.z, d = qi[3] - x.w;
        acc += a * a + b * b + c * c + d * d;
      } else {
        acc += qi[0] * x.x + qi[1] * x.y + qi[2] * x.z + qi[3] * x.w;
      }
    }
  } else {
    for (int d = lane; d < dim; d += 32) {
      const float x = v[d];
      acc += l2 ? (q[d] - x) * (q[d] - x) : q[d] * x;
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  return acc;
}

// Scores cand[0, a.expansion) (kNoEdge = none) into the tails of beam and
// kept, then sorts both. Called by the whole block.
__device__ __forceinline__ void ScoreAndMerge(const GraphArgs& a, uint64_t* beam, uint64_t* kept, const float* query,
                                              uint32_t* hash, uint32_t* cand) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid / 32;
  for (int i = tid; i < a.expansion; i += kGraphBlock) {
    const uint32_t node = cand[i];
    if (node != kNoEdge && !VisitOnce(hash, a.hash_bits, node)) cand[i] = kNoEdge;
  }
  for (int i = a.itopk + tid; i < a.beam_len; i += kGraphBlock) beam[i] = kEmptyKey;
  for (int i = a.k + tid; i < a.kept_len; i += kGraphBlock) kept[i] = kEmptyKey;
  __syncthreads();
  for (int c = warp; c < a.expansion; c += kWarps) {
    const uint32_t node = cand[c];
    if (node == kNoEdge) continue;  // the same for the whole warp
    const float s = WarpScore(query, a.vectors + static_cast<size_t>(node) * a.dim, a.dim, a.l2, lane);
    if (lane == 0) {
      const uint64_t key = MakeKey(a.l2 ? s : -s, node);
      beam[a.itopk + c] = key;
      if (!IsDeleted(a.deleted, node)) kept[a.k + c] = key;
    }
  }
  __syncthreads();
  BlockBitonicSort<kGraphBlock>(beam, a.beam_len);
  BlockBitonicSort<kGraphBlock>(kept, a.kept_len);
}

// Two blocks per SM: ptxas then has 128 registers a thread and spills none
// (with the block size alone it chose 64 on sm_80 and spilled); the ~70 KiB
// of shared memory a block takes at itopk 64 allows about three anyway.
__global__ void __launch_bounds__(kGraphBlock, 2) GraphSearchKernel(GraphArgs a) {
  extern __shared__ uint64_t smem[];
  uint64_t* beam = smem;
  uint64_t* kept = beam + a.beam_len;
  float* query = reinterpret_cast<float*>(kept + a.kept_len);
  uint32_t* hash = reinterpret_cast<uint32_t*>(query + a.dim);
  uint32_t* cand = hash + (1 << a.hash_bits);
  __shared__ uint32_t parents[kMaxGraphExpansion];
  __shared__ int num_parents;

  const int tid = threadIdx.x;
  const float* q = a.queries + static_cast<size_t>(blockIdx.x) * a.dim;
  for (int i = tid; i < a.dim; i += kGraphBlock) query[i] = q[i];
  for (int i = tid; i < a.beam_len; i += kGraphBlock) beam[i] = kEmptyKey;
  for (int i = tid; i < a.kept_len; i += kGraphBlock) kept[i] = kEmptyKey;
  for (int i = tid; i < (1 << a.hash_bits); i += kGraphBlock) hash[i] = kFreeSlot;
  __syncthreads();

  for (int s0 = 0; s0 < a.num_seeds; s0 += a.expansion) {
    for (int i = tid; i < a.expansion; i += kGraphBlock) cand[i] = s0 + i < a.num_seeds ? a.seeds[s0 + i] : kNoEdge;
    __syncthreads();
    ScoreAndMerge(a, beam, kept, query, hash, cand);
  }
  for (int step = 0; step < a.max_steps; ++step) {
    if (tid < 32) {  // warp 0 picks the parents, 32 beam slots at a time
      int picked = 0;   // the same in every lane
      for (int base = 0; base < a.itopk && picked < a.width; base += 32) {
        const int i = base + tid;
        const uint64_t key = i < a.itopk ? beam[i] : kEmptyKey;
        const bool open = key != kEmptyKey && !(key & kExpandedBit);
        const uint32_t mask = __ballot_sync(0xffffffffu, open);
        const int rank = picked + __popc(mask & ((1u << tid) - 1u));
        if (open && rank < a.width) {
          beam[i] = key | kExpandedBit;
          parents[rank] = static_cast<uint32_t>(key & 0x7fffffffu);
        }
        picked = min(a.width, picked + __popc(mask));
      }
      if (tid == 0) num_parents = picked;
    }
    __syncthreads();
    const int picked = num_parents;
    if (picked == 0) break;  // every beam node expanded (uniform)
    for (int i = tid; i < a.expansion; i += kGraphBlock) {
      const int p = i / a.degree;
      cand[i] = p < picked ? a.graph[static_cast<size_t>(parents[p]) * a.degree + (i - p * a.degree)] : kNoEdge;
    }
    __syncthreads();
    ScoreAndMerge(a, beam, kept, query, hash, cand);
  }
  uint64_t* out = a.out + static_cast<size_t>(blockIdx.x) * a.k;
  for (int i = tid; i < a.k; i += kGraphBlock) out[i] = kept[i];
}

Status CheckGraphArguments(size_t k, uint32_t itopk, uint32_t search_width, size_t degree) {
  QUIVER_RETURN_IF_ERROR(detail::CheckK(k));
  if (itopk == 0) return Status::InvalidArgument("itopk must be at least 1");
  if (search_width == 0) return Status::InvalidArgument("search_width must be at least 1");
  if (std::max<size_t>(itopk, k) > kMaxGraphItopk) {
    return Status::InvalidArgument("the GPU GRAPH beam holds at most " + std::to_string(kMaxGraphItopk) +
                                   " nodes, asked for " + std::to_string(std::max<size_t>(itopk, k)));
  }
  if (size_t{search_width} * degree > kMaxGraphExpansion) {
    return Status::InvalidArgument("the GPU GRAPH search expands at most " + std::to_string(kMaxGraphExpansion) +
                                   " neighbours per step, asked for search_width " + std::to_string(search_width) +
                                   " x degree " + std::to_string(degree));
  }
  return Status::Ok();
}

}  // namespace

Result<DeviceGraph> DeviceGraph::Upload(cuda::GpuResources& res, const GraphIndex& index, const BaseView& base,
                                        bool long_lived) {
  const size_t n = index.size(), dim = index.dim();
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("the GPU path addresses at most 2^31 - 1 rows per index");
  }
  if (base.rows != n || base.dim != dim || base.vectors == nullptr) {
    return Status::InvalidArgument("GRAPH upload needs the index's own vectors");
  }
  DeviceGraph out;
  out.metric_ = index.metric();
  out.dim_ = dim;
  out.n_ = n;
  out.degree_ = index.degree();
  if (n == 0) return std::move(out);
  QUIVER_CUDA_TRY(cudaSetDevice(res.device().impl().ordinal));
  std::vector<float> vectors = index.metric() == Metric::kCosine ? Normalized(base.vectors, n, dim)
                                                                  : std::vector<float>(base.vectors, base.vectors + n * dim);
  std::vector<uint32_t> graph(index.neighbors(0), index.neighbors(0) + n * index.degree());
  std::vector<uint32_t> seeds = index.entry_points();
  const auto& extra = index.layers().front().extra_seeds;
  seeds.insert(seeds.end(), extra.begin(), extra.end());
  QUIVER_RETURN_IF_ERROR(detail::Upload(res, vectors, long_lived, "GRAPH vectors", &out.vectors_));
  QUIVER_RETURN_IF_ERROR(detail::Upload(res, graph, long_lived, "GRAPH neighbours", &out.graph_));
  QUIVER_RETURN_IF_ERROR(detail::Upload(res, seeds, long_lived, "GRAPH seeds", &out.seeds_));
  // The host vectors above go away; other streams may read a long-lived copy.
  QUIVER_RETURN_IF_ERROR(res.Synchronize());
  return std::move(out);
}

Status GraphSearch(cuda::GpuResources& res, const DeviceGraph& graph, const uint64_t* deleted, const float* queries,
                   size_t nq, size_t k, uint32_t itopk, uint32_t search_width, int64_t* rows, float* scores) {
  QUIVER_RETURN_IF_ERROR(CheckGraphArguments(k, itopk, search_width, graph.degree()));
  if (nq == 0) return Status::Ok();
  if (graph.size() == 0 || graph.num_seeds() == 0) {
    detail::FillEmpty(graph.metric(), nq * k, rows, scores);
    return Status::Ok();
  }
  if (nq > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("too many queries in one GPU call");
  }
  const size_t dim = graph.dim();
  const int beam = static_cast<int>(std::max<size_t>(itopk, k));
  const int expansion = static_cast<int>(search_width * graph.degree());
  // Enough steps to expand the whole beam twice over (a search normally ends
  // sooner, when every beam node is expanded), and a hash twice the nodes
  // that many steps can visit (never more than the graph holds), within
  // 2^kMaxHashBits slots; where the hash is the limit, fewer steps.
  const int seeds = static_cast<int>(graph.num_seeds());
  const int wanted_steps = 2 * (beam + static_cast<int>(search_width) - 1) / static_cast<int>(search_width) + 16;
  const int64_t visits = std::min<int64_t>(static_cast<int64_t>(graph.size()), seeds + int64_t{wanted_steps} * expansion);
  int hash_bits = kMinHashBits;
  while (hash_bits < kMaxHashBits && (int64_t{1} << hash_bits) < 2 * visits) ++hash_bits;
  const int max_steps = 2 * visits <= (int64_t{1} << hash_bits)
                            ? wanted_steps
                            : std::clamp(((1 << hash_bits) / 2 - seeds) / expansion, 1, wanted_steps);

  GraphArgs args{};
  args.dim = static_cast<int>(dim);
  args.degree = static_cast<int>(graph.degree());
  args.num_seeds = seeds;
  args.k = static_cast<int>(k);
  args.itopk = beam;
  args.width = static_cast<int>(search_width);
  args.expansion = expansion;
  args.max_steps = max_steps;
  args.beam_len = NextPow2(beam + expansion);
  args.kept_len = NextPow2(static_cast<int>(k) + expansion);
  args.hash_bits = hash_bits;
  args.l2 = graph.metric() == Metric::kL2;
  const size_t shared = (size_t(args.beam_len) + args.kept_len) * sizeof(uint64_t) + dim * sizeof(float) +
                        ((size_t{1} << hash_bits) + expansion) * sizeof(uint32_t);

  const int ordinal = res.device().impl().ordinal;
  QUIVER_CUDA_TRY(cudaSetDevice(ordinal));
  int shared_limit = 0;
  QUIVER_CUDA_TRY(cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, ordinal));
  const size_t static_shared = kMaxGraphExpansion * sizeof(uint32_t) + sizeof(int);
  if (shared + static_shared > static_cast<size_t>(shared_limit)) {
    return Status::InvalidArgument("GPU GRAPH search needs " + std::to_string(shared + static_shared) +
                                   " bytes of shared memory per query (dimension " + std::to_string(dim) +
                                   "), above the device's " + std::to_string(shared_limit));
  }
  QUIVER_CUDA_TRY(cudaFuncSetAttribute(GraphSearchKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(shared)));
  cudaStream_t stream = res.impl().stream;

  detail::DeviceSearchInputs in;
  QUIVER_RETURN_IF_ERROR(detail::UploadSearchInputs(res, graph.metric(), queries, nq, dim, deleted, graph.size(), &in));
  QUIVER_ASSIGN_OR_RETURN(auto keys, cuda::DeviceBuffer<uint64_t>::Allocate(res, nq * k, "result keys"));
  args.vectors = graph.vectors();
  args.graph = graph.graph();
  args.seeds = graph.seeds();
  args.queries = in.queries.data();
  args.deleted = in.deleted.data();
  args.out = keys.data();
  GraphSearchKernel<<<static_cast<unsigned>(nq), kGraphBlock, shared, stream>>>(args);
  QUIVER_RETURN_IF_ERROR(cuda::CheckLaunch("GraphSearchKernel"));

  QUIVER_ASSIGN_OR_RETURN(auto d_rows, cuda::DeviceBuffer<int64_t>::Allocate(res, nq * k, "result rows"));
  QUIVER_ASSIGN_OR_RETURN(auto d_scores, cuda::DeviceBuffer<float>::Allocate(res, nq * k, "result scores"));
  QUIVER_RETURN_IF_ERROR(detail::DecodeKeys(stream, keys.data(), nq * k, !args.l2, d_rows.data(), d_scores.data()));
  QUIVER_RETURN_IF_ERROR(d_rows.CopyToHost(res, rows, nq * k));
  QUIVER_RETURN_IF_ERROR(d_scores.CopyToHost(res, scores, nq * k));
  return res.Synchronize();
}

Status GraphSearch(cuda::GpuResources& res, const GraphIndex& index, const BaseView& base, const float* queries,
                   size_t nq, size_t k, uint32_t itopk, uint32_t search_width, int64_t* rows, float* scores) {
  QUIVER_RETURN_IF_ERROR(CheckGraphArguments(k, itopk, search_width, index.degree()));
  if (nq == 0) return Status::Ok();
  QUIVER_ASSIGN_OR_RETURN(DeviceGraph device_graph, DeviceGraph::Upload(res, index, base, /*long_lived=*/false));
  return GraphSearch(res, device_graph, base.deleted, queries, nq, k, itopk, search_width, rows, scores);
}

}  // namespace quiver::kernels::gpu
