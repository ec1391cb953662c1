// GPU GRAPH search (kernels/gpu_search.h), CAGRA's shapes: one thread block
// per query for large batches; for small ones (fewer queries than SMs)
// several blocks per query, each with its own beam and visited hash and its
// own share of the seeds, merged at the end (duplicates dropped).
//
// Shared memory of a block:
//   beam  uint64[2][itopk]  keys (score bits << 32 | node), sorted, double
//                           buffered; bit 31 of a key marks a node already
//                           expanded
//   kept  uint64[2][k]      with tombstones only: the k best returnable keys
//                           seen (without tombstones they are the beam's first k)
//   ckeys uint64[E]         the step's candidate keys, E = NextPow2(expansion)
//   kkeys uint64[E]         with tombstones only: the returnable ones
//   query float[dim]
//   hash  uint32[2^hash_bits]  visited nodes, open addressing
//   cand  uint32[expansion] the step's candidate nodes
// A step: warp 0 picks the search_width best unexpanded beam nodes and
// marks them; the block lists their neighbours, drops those already visited
// (atomicCAS into the hash), scores the rest a warp per node with exact fp32
// distances (coalesced reads of the row-major vectors), sorts the candidates
// (one warp with shuffles when there are at most 32) and merges them into the
// sorted beam by rank (each key's place is its index plus the number of
// smaller keys in the other list), keeping the best itopk. Only the
// candidates are sorted each step, never the whole beam. The search ends
// when every beam node is expanded, or after the steps the hash was sized
// for (it never holds more than half its slots, so lookups stay short and no
// node is scored twice). The seeds enter through the same path, expansion at
// a time.
#include <cub/block/block_scan.cuh>

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
// Blocks per query for small batches, and the most keys their merge holds.
constexpr int kMaxCtasPerQuery = 8;
constexpr int kMaxCtaMergeKeys = 4096;

struct GraphArgs {
  const float* vectors;
  const uint32_t* graph;
  const uint32_t* seeds;
  const float* queries;
  const uint64_t* deleted;
  uint64_t* out;  // (nq x ctas) x k keys
  int dim;
  int degree;
  int num_seeds;
  int ctas;       // blocks per query
  int k;
  int itopk;      // the beam: max(itopk, k)
  int width;
  int expansion;  // width * degree: candidates per step
  int cand_len;   // NextPow2(expansion)
  int max_steps;
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

// Sorts buf[0, 32) ascending within one warp (bitonic, shuffles only).
__device__ __forceinline__ void WarpSort32(uint64_t* buf, int lane) {
  uint64_t key = buf[lane];
#pragma unroll
  for (int size = 2; size <= 32; size <<= 1) {
#pragma unroll
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      const uint64_t other = __shfl_xor_sync(0xffffffffu, key, stride);
      const bool lower = (lane & stride) == 0;
      const bool ascending = (lane & size) == 0;
      key = (lower == ascending) ? min(key, other) : max(key, other);
    }
  }
  buf[lane] = key;
}

// The order of keys: the expanded mark aside. Marking a beam key in place
// must not unsort the beam (with equal scores the mark would put a node after
// a higher-numbered one); kEmptyKey stays above every real key.
__device__ __forceinline__ uint64_t Order(uint64_t key) { return key & ~kExpandedBit; }

// Number of keys in list[0, n) (sorted by Order) below `key` (unmarked).
__device__ __forceinline__ int CountBelow(const uint64_t* list, int n, uint64_t key) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (Order(list[mid]) < key) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// out[0, len) = the len smallest keys of a[0, len) and c[0, clen), both
// sorted by Order (only a's keys carry expanded marks). Real keys are
// distinct (a node is scored once); kEmptyKey pads both lists' ends. Called by the whole block; ends with a barrier.
__device__ void MergeSmallest(const uint64_t* a, int len, const uint64_t* c, int clen, uint64_t* out) {
  for (int i = threadIdx.x; i < len; i += kGraphBlock) out[i] = kEmptyKey;
  __syncthreads();
  for (int i = threadIdx.x; i < len; i += kGraphBlock) {
    const uint64_t x = a[i];
    if (x == kEmptyKey) break;  // the rest of a is empty too
    const int pos = i + CountBelow(c, clen, Order(x));
    if (pos < len) out[pos] = x;
  }
  for (int j = threadIdx.x; j < clen; j += kGraphBlock) {
    const uint64_t y = c[j];
    if (y == kEmptyKey) break;
    const int pos = j + CountBelow(a, len, y);
    if (pos < len) out[pos] = y;
  }
  __syncthreads();
}

struct Lists {
  uint64_t* beam;   // current, sorted
  uint64_t* beam_next;
  uint64_t* kept;   // null without tombstones
  uint64_t* kept_next;
  uint64_t* ckeys;
  uint64_t* kkeys;
};

// Scores cand[0, a.expansion) (kNoEdge = none) and merges them into the beam
// (and the kept list); swaps the double buffers. Called by the whole block.
__device__ __forceinline__ void ScoreAndMerge(const GraphArgs& a, Lists& l, const float* query, uint32_t* hash,
                                              uint32_t* cand) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid / 32;
  for (int i = tid; i < a.expansion; i += kGraphBlock) {
    const uint32_t node = cand[i];
    if (node != kNoEdge && !VisitOnce(hash, a.hash_bits, node)) cand[i] = kNoEdge;
  }
  const int sort_len = max(a.cand_len, 32);  // the warp sort takes 32 keys
  for (int i = tid; i < sort_len; i += kGraphBlock) {
    l.ckeys[i] = kEmptyKey;
    if (l.kept != nullptr) l.kkeys[i] = kEmptyKey;
  }
  __syncthreads();
  for (int c = warp; c < a.expansion; c += kWarps) {
    const uint32_t node = cand[c];
    if (node == kNoEdge) continue;  // the same for the whole warp
    const float s = WarpScore(query, a.vectors + static_cast<size_t>(node) * a.dim, a.dim, a.l2, lane);
    if (lane == 0) {
      const uint64_t key = MakeKey(a.l2 ? s : -s, node);
      l.ckeys[c] = key;
      if (l.kept != nullptr && !IsDeleted(a.deleted, node)) l.kkeys[c] = key;
    }
  }
  __syncthreads();
  if (sort_len == 32) {
    if (warp == 0) WarpSort32(l.ckeys, lane);
    if (warp == 1 && l.kept != nullptr) WarpSort32(l.kkeys, lane);
    __syncthreads();
  } else {
    BlockBitonicSort<kGraphBlock>(l.ckeys, sort_len);
    if (l.kept != nullptr) BlockBitonicSort<kGraphBlock>(l.kkeys, sort_len);
  }
  MergeSmallest(l.beam, a.itopk, l.ckeys, sort_len, l.beam_next);
  if (l.kept != nullptr) MergeSmallest(l.kept, a.k, l.kkeys, sort_len, l.kept_next);
  uint64_t* t = l.beam;
  l.beam = l.beam_next;
  l.beam_next = t;
  t = l.kept;
  l.kept = l.kept_next;
  l.kept_next = t;
}

// Two blocks per SM: ptxas then has 128 registers a thread and spills none
// (with the block size alone it chose 64 on sm_80 and spilled).
__global__ void __launch_bounds__(kGraphBlock, 2) GraphSearchKernel(GraphArgs a) {
  extern __shared__ uint64_t smem[];
  const bool tombstones = a.deleted != nullptr;
  const int sort_len = max(a.cand_len, 32);
  Lists l;
  l.beam = smem;
  l.beam_next = l.beam + a.itopk;
  l.kept = tombstones ? l.beam_next + a.itopk : nullptr;
  l.kept_next = tombstones ? l.kept + a.k : nullptr;
  l.ckeys = l.beam_next + a.itopk + (tombstones ? 2 * a.k : 0);
  l.kkeys = tombstones ? l.ckeys + sort_len : nullptr;
  float* query = reinterpret_cast<float*>(l.ckeys + (tombstones ? 2 : 1) * sort_len);
  uint32_t* hash = reinterpret_cast<uint32_t*>(query + a.dim);
  uint32_t* cand = hash + (1 << a.hash_bits);
  __shared__ uint32_t parents[kMaxGraphExpansion];
  __shared__ int num_parents;

  const int tid = threadIdx.x;
  const int query_index = blockIdx.x / a.ctas, cta = blockIdx.x % a.ctas;
  const float* q = a.queries + static_cast<size_t>(query_index) * a.dim;
  for (int i = tid; i < a.dim; i += kGraphBlock) query[i] = q[i];
  for (int i = tid; i < a.itopk; i += kGraphBlock) l.beam[i] = kEmptyKey;
  if (tombstones) {
    for (int i = tid; i < a.k; i += kGraphBlock) l.kept[i] = kEmptyKey;
  }
  for (int i = tid; i < (1 << a.hash_bits); i += kGraphBlock) hash[i] = kFreeSlot;
  __syncthreads();

  // This block's seeds: every ctas-th one from its own offset.
  const int my_seeds = (a.num_seeds - cta + a.ctas - 1) / a.ctas;
  for (int s0 = 0; s0 < my_seeds; s0 += a.expansion) {
    for (int i = tid; i < a.expansion; i += kGraphBlock) {
      cand[i] = s0 + i < my_seeds ? a.seeds[cta + (s0 + i) * a.ctas] : kNoEdge;
    }
    __syncthreads();
    ScoreAndMerge(a, l, query, hash, cand);
  }
  for (int step = 0; step < a.max_steps; ++step) {
    if (tid < 32) {  // warp 0 picks the parents, 32 beam slots at a time
      int picked = 0;   // the same in every lane
      for (int base = 0; base < a.itopk && picked < a.width; base += 32) {
        const int i = base + tid;
        const uint64_t key = i < a.itopk ? l.beam[i] : kEmptyKey;
        const bool open = key != kEmptyKey && !(key & kExpandedBit);
        const uint32_t mask = __ballot_sync(0xffffffffu, open);
        const int rank = picked + __popc(mask & ((1u << tid) - 1u));
        if (open && rank < a.width) {
          l.beam[i] = key | kExpandedBit;
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
    ScoreAndMerge(a, l, query, hash, cand);
  }
  uint64_t* out = a.out + static_cast<size_t>(blockIdx.x) * a.k;
  for (int i = tid; i < a.k; i += kGraphBlock) {
    // Without tombstones the kept rows are the beam's first k (itopk >= k).
    const uint64_t key = tombstones ? l.kept[i] : l.beam[i];
    out[i] = key == kEmptyKey ? kEmptyKey : key & ~kExpandedBit;
  }
}

// One block per query: the k best distinct keys of its ctas blocks' lists
// (a row found by several blocks has the same key in each: same query, same
// arithmetic). len = NextPow2(ctas * k) keys of shared memory.
__global__ void MergeCtaResultsKernel(const uint64_t* in, int ctas, int k, int len, uint64_t* out) {
  extern __shared__ uint64_t keys[];
  using Scan = cub::BlockScan<int, kGraphBlock>;
  __shared__ typename Scan::TempStorage scan_storage;
  const uint64_t* mine = in + static_cast<size_t>(blockIdx.x) * ctas * k;
  for (int i = threadIdx.x; i < len; i += kGraphBlock) keys[i] = i < ctas * k ? mine[i] : kEmptyKey;
  __syncthreads();
  BlockBitonicSort<kGraphBlock>(keys, len);
  // Each thread a contiguous chunk: count its distinct keys, scan, write.
  const int per = (len + kGraphBlock - 1) / kGraphBlock;
  const int begin = min(len, threadIdx.x * per), end = min(len, begin + per);
  int distinct = 0;
  for (int i = begin; i < end; ++i) distinct += keys[i] != kEmptyKey && (i == 0 || keys[i] != keys[i - 1]);
  int offset = 0;
  Scan(scan_storage).ExclusiveSum(distinct, offset);
  uint64_t* dst = out + static_cast<size_t>(blockIdx.x) * k;
  for (int i = begin; i < end && offset < k; ++i) {
    if (keys[i] != kEmptyKey && (i == 0 || keys[i] != keys[i - 1])) dst[offset++] = keys[i];
  }
  // Slots past the distinct keys: empty. The total is the last thread's end.
  __shared__ int total;
  if (threadIdx.x == kGraphBlock - 1) total = offset;
  __syncthreads();
  for (int i = total + threadIdx.x; i < k; i += kGraphBlock) dst[i] = kEmptyKey;
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

  const int ordinal = res.device().impl().ordinal;
  QUIVER_CUDA_TRY(cudaSetDevice(ordinal));
  int shared_limit = 0, sms = 0;
  QUIVER_CUDA_TRY(cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, ordinal));
  QUIVER_CUDA_TRY(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, ordinal));
  // Fewer queries than SMs: several blocks per query (each its own beam and
  // share of the seeds), so a small batch does not leave most SMs idle.
  int ctas = 1;
  if (nq < static_cast<size_t>(sms)) {
    ctas = std::clamp(sms / static_cast<int>(nq), 1, std::min(kMaxCtasPerQuery, seeds));
    while (ctas > 1 && NextPow2(ctas * static_cast<int>(k)) > kMaxCtaMergeKeys) --ctas;
  }

  GraphArgs args{};
  args.dim = static_cast<int>(dim);
  args.degree = static_cast<int>(graph.degree());
  args.num_seeds = seeds;
  args.ctas = ctas;
  args.k = static_cast<int>(k);
  args.itopk = beam;
  args.width = static_cast<int>(search_width);
  args.expansion = expansion;
  args.cand_len = NextPow2(expansion);
  args.max_steps = max_steps;
  args.hash_bits = hash_bits;
  args.l2 = graph.metric() == Metric::kL2;
  const bool tombstones = deleted != nullptr;
  const size_t sort_len = std::max(args.cand_len, 32);
  const size_t key_slots = 2 * size_t(beam) + (tombstones ? 2 * k + 2 * sort_len : sort_len);
  const size_t shared =
      key_slots * sizeof(uint64_t) + dim * sizeof(float) + ((size_t{1} << hash_bits) + expansion) * sizeof(uint32_t);
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
  QUIVER_ASSIGN_OR_RETURN(auto cta_keys, cuda::DeviceBuffer<uint64_t>::Allocate(res, ctas > 1 ? nq * ctas * k : 0,
                                                                               "per-block result keys"));
  args.vectors = graph.vectors();
  args.graph = graph.graph();
  args.seeds = graph.seeds();
  args.queries = in.queries.data();
  args.deleted = in.deleted.data();
  args.out = ctas > 1 ? cta_keys.data() : keys.data();
  GraphSearchKernel<<<static_cast<unsigned>(nq * ctas), kGraphBlock, shared, stream>>>(args);
  QUIVER_RETURN_IF_ERROR(cuda::CheckLaunch("GraphSearchKernel"));
  if (ctas > 1) {
    const int len = NextPow2(ctas * static_cast<int>(k));
    MergeCtaResultsKernel<<<static_cast<unsigned>(nq), kGraphBlock, len * sizeof(uint64_t), stream>>>(
        cta_keys.data(), ctas, static_cast<int>(k), len, keys.data());
    QUIVER_RETURN_IF_ERROR(cuda::CheckLaunch("MergeCtaResultsKernel"));
  }

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
