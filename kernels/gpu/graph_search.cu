// GPU GRAPH search (kernels/gpu_search.h), CAGRA's shapes: one thread block
// per query for large batches; for small ones (fewer queries than SMs)
// several blocks per query, each with its own beam and visited hash, entering
// layer 0 from its own share of the descent's nodes and seeds, merged at the
// end (duplicates dropped). In layer 0 a query's blocks also share a visited
// bit per node in global memory: a node one block scored, the others skip,
// so their beams spread over different nodes instead of converging on the
// same ones (recall@10 at itopk 16, batches of 10, 1M x 128: 0.949 without,
// 0.995 with). Which block claims a node first varies between calls, so
// small batches are not bit-for-bit repeatable.
//
// Like the CPU search, a block first scores the top layer's nodes, searches
// each upper layer with a beam of kUpperBeam and hands the beam down, then
// searches layer 0 with the full beam. Layer 0 alone is not navigable from
// random seeds on clustered data: without the descent, recall@10 on 1M x 128
// (1,000 clusters) stayed at 0.40-0.69 where the CPU's reached 0.89-0.99.
//
// Shared memory of a block:
//   beam  uint64[2][max(itopk, 8)]  keys (score bits << 32 | node), sorted,
//                           double buffered; bit 31 of a key marks a node
//                           already expanded
//   kept  uint64[2][k]      with tombstones only: the k best returnable keys
//                           seen (without tombstones they are the beam's first k)
//   ckeys uint64[E]         the step's candidate keys, E = max(32, NextPow2(expansion))
//   kkeys uint64[E]         with tombstones only: the returnable ones
//   query float[dim]
//   hash  uint32[2^hash_bits]  visited nodes, open addressing
//   cand  uint32[expansion] the step's candidate nodes
// A step: warp 0 picks the search_width best unexpanded beam nodes and
// marks them; the block lists their neighbours, drops those already visited
// (atomicCAS into the hash), scores the rest with exact fp32 distances, a
// team of 4 to 32 lanes per node so that every candidate's row is loaded at
// once (one memory latency per step, where a warp per node paid one per
// node it scored), sorts the candidates in 32-key chunks (a warp each, with
// shuffles) and merges them into the sorted beam by rank (each key's place
// is its index plus the number of smaller keys in the other lists), keeping
// the best itopk. Only the candidates are sorted each step, never the whole
// beam. The search ends
// when every beam node is expanded, as on the CPU. The hash never holds more
// than half its slots (lookups stay short): before a step could pass that,
// it is emptied but for the beam's and kept list's nodes (RefillHash). A
// step cap sized for the hash alone had stopped searches early (recall 0.71
// where the CPU's was 0.89). The seeds enter through the same path,
// expansion at a time.
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
constexpr uint64_t kExpandedBit = 1ull << 31;
constexpr uint32_t kFreeSlot = 0xffffffffu;
// Hash slots: 2x the nodes a typical search scores, at most 2^14 (64 KiB);
// longer searches refill it (RefillHash).
constexpr int kMinHashBits = 10;
constexpr int kMaxHashBits = 14;
// Blocks per query for small batches (chosen, and the most that may be
// asked for), and the most keys their merge holds.
constexpr int kAutoMaxCtasPerQuery = 8;
constexpr int kMaxCtasPerQuery = 32;
constexpr int kMaxCtaMergeKeys = 4096;
// The most device memory a call's shared visited sets may take (a bit per
// node per query: 125 KiB a query for a million nodes).
constexpr size_t kMaxSharedVisitedBytes = size_t{64} << 20;
// Candidate lists up to this long are sorted in warp-sized chunks and
// merged as chunks (MergeCandidates), longer ones by a block sort.
constexpr int kWarpSortedKeys = 256;
// The beam while descending the upper layers: the CPU's for itopk >= 32
// (the CPU narrows it to 4 below that; not yet measured on a GPU).
constexpr int kUpperBeam = 8;

struct GraphArgs {
  const float* vectors;
  const uint32_t* graph;
  const uint32_t* seeds;
  const uint32_t* upper;  // DeviceGraph::upper()
  GraphUpperLayer layers[kMaxGraphUpperLayers];  // layers 1..num_upper
  int num_upper;
  int upper_steps;  // step limit per upper layer
  const float* queries;
  const uint64_t* deleted;
  uint64_t* out;  // (nq x ctas) x k keys
  // With several blocks per query: a bit per layer-0 node for each query,
  // shared by its blocks (null with one block, or when too large).
  uint32_t* visited;
  size_t visited_words;  // per query
  int dim;
  int degree;
  int num_seeds;
  int ctas;       // blocks per query
  int k;
  int itopk;      // the beam: max(itopk, k)
  int width;
  int upper_width;      // width in the upper layers (wider: fewer dependent steps)
  int cand_cap;         // the larger of the two widths x degree: cand's length
  int sort_cap;         // max(32, NextPow2(cand_cap)): ckeys' and kkeys' length
  int max_steps;
  int hash_bits;
  int hash_half;  // nodes the hash holds before it is refilled with the beam's
  bool l2;
};

// The node of a beam key, its expanded mark aside.
__device__ __forceinline__ uint32_t KeyNode(uint64_t key) { return static_cast<uint32_t>(key & 0x7fffffffu); }

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

// This block's query's shared set of layer-0 nodes (null without one).
__device__ __forceinline__ uint32_t* QueryVisited(const GraphArgs& a) {
  return a.visited == nullptr ? nullptr : a.visited + static_cast<size_t>(blockIdx.x / a.ctas) * a.visited_words;
}

// True when this block is the first of its query's blocks to claim layer-0
// `node` (always, without a shared set). The blocks of one query thus
// explore apart: a node one of them scored is skipped by the others, whose
// beams move on to other nodes instead of repeating its work.
__device__ __forceinline__ bool ClaimForQuery(uint32_t* visited, uint32_t node) {
  if (visited == nullptr) return true;
  const uint32_t bit = 1u << (node & 31u);
  return (atomicOr(&visited[node >> 5], bit) & bit) == 0;
}

// Squared L2 distance or dot product of the shared query and the vector at
// v (null: none, 0), summed across a team of `team` lanes (a power of two
// dividing 32, aligned in the warp; every lane of the warp calls this, since
// the sum shuffles across it). The unrolled loop issues each lane's loads
// together (up to 8 float4, a 128-float row over 4 lanes), and every team of
// the block loads at once: a step pays one memory latency for all its
// candidates, not one per candidate per warp.
__device__ __forceinline__ float TeamScore(const float* q, const float* v, int dim, bool l2, int member, int team) {
  float acc = 0.0f;
  if (v != nullptr) {
    if ((dim & 3) == 0) {  // rows (and the shared query) are 16-byte aligned: float4 reads
      const float4* v4 = reinterpret_cast<const float4*>(v);
      const float4* q4 = reinterpret_cast<const float4*>(q);
#pragma unroll 8
      for (int i = member; i < dim / 4; i += team) {
        const float4 x = v4[i];
        const float4 y = q4[i];
        if (l2) {
          const float a = y.x - x.x, b = y.y - x.y, c = y.z - x.z, d = y.w - x.w;
          acc += a * a + b * b + c * c + d * d;
        } else {
          acc += y.x * x.x + y.y * x.y + y.z * x.z + y.w * x.w;
        }
      }
    } else {
#pragma unroll 4
      for (int d = member; d < dim; d += team) {
        const float x = v[d];
        acc += l2 ? (q[d] - x) * (q[d] - x) : q[d] * x;
      }
    }
  }
  for (int offset = team >> 1; offset > 0; offset >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
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

// out[0, len) = the len smallest keys of a[0, len) and of c's `chunks`
// lists of chunk_len keys each (c[ch * chunk_len, (ch + 1) * chunk_len)),
// all sorted by Order (only a's keys carry expanded marks). A key's place is
// its index in its own list plus the number of smaller keys in each other
// list. Real keys are distinct (a node is scored once); kEmptyKey pads the
// lists' ends. Called by the whole block; ends with a barrier.
__device__ void MergeSmallest(const uint64_t* a, int len, const uint64_t* c, int chunks, int chunk_len,
                              uint64_t* out) {
  for (int i = threadIdx.x; i < len; i += kGraphBlock) out[i] = kEmptyKey;
  __syncthreads();
  for (int i = threadIdx.x; i < len; i += kGraphBlock) {
    const uint64_t x = a[i];
    if (x == kEmptyKey) break;  // the rest of a is empty too
    int pos = i;
    for (int ch = 0; ch < chunks && pos < len; ++ch) pos += CountBelow(c + ch * chunk_len, chunk_len, Order(x));
    if (pos < len) out[pos] = x;
  }
  for (int j = threadIdx.x; j < chunks * chunk_len; j += kGraphBlock) {
    const uint64_t y = c[j];
    const int own = j / chunk_len, index = j - own * chunk_len;
    if (y == kEmptyKey || index >= len) continue;  // a key past len in its own list stays out
    int pos = index + CountBelow(a, len, y);
    for (int ch = 0; ch < chunks && pos < len; ++ch) {
      if (ch != own) pos += CountBelow(c + ch * chunk_len, chunk_len, y);
    }
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

// The layer a search step works in: its neighbour matrix and its nodes' rows
// (null in layer 0, where node = row). Kept rows are gathered in layer 0 only.
struct LayerView {
  const uint32_t* graph;
  const uint32_t* rows;
  int beam_len;   // kUpperBeam above layer 0, the beam in it
  int width;      // nodes expanded per step
  int expansion;  // width * degree
  int sort_len;   // max(32, NextPow2(expansion)): candidate keys sorted per step
  int team;       // threads scoring one candidate (TeamScore)
  bool keep;
};

// A team per candidate, so that one round scores a step's expansion (8
// lanes each for 32 candidates, 4 for 64), at least 4 lanes, and wider for
// long rows (at most 32 floats a lane: TeamScore's loads in one go), at most
// a warp.
__device__ __forceinline__ int TeamSize(int expansion, int dim) {
  int team = min(32, max(4, kGraphBlock / NextPow2(expansion)));
  while (team < 32 && dim > team * 32) team *= 2;
  return team;
}

__device__ __forceinline__ LayerView MakeLayerView(const GraphArgs& a, const uint32_t* graph, const uint32_t* rows,
                                                   int beam_len, int width, bool keep) {
  const int expansion = width * a.degree;
  return LayerView{graph, rows, beam_len, width, expansion, max(32, NextPow2(expansion)), TeamSize(expansion, a.dim),
                   keep};
}

__device__ __forceinline__ void Swap(uint64_t*& x, uint64_t*& y) {
  uint64_t* t = x;
  x = y;
  y = t;
}

// Sorts the step's candidate keys (ckeys, and kkeys where kept) and merges
// them into the beam (and the kept list); swaps the double buffers. Called
// by the whole block after the keys are written and a barrier. Up to
// kWarpSortedKeys candidates are sorted in 32-key chunks, a warp each at
// once, and merged as separate lists: a block-wide bitonic sort of 128 keys
// took 28 barrier-separated stages, and the upper layers' steps (4 nodes,
// 128 candidates) paid that every step.
__device__ __forceinline__ void MergeCandidates(const GraphArgs& a, Lists& l, const LayerView& layer) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid / 32;
  const int sort_len = layer.sort_len;  // at least 32: the warp sort takes 32 keys
  const bool kept = layer.keep && l.kept != nullptr;
  int chunks = 1, chunk_len = sort_len;
  if (sort_len <= kWarpSortedKeys) {
    chunks = sort_len / 32;
    chunk_len = 32;
    for (int c = warp; c < (kept ? 2 : 1) * chunks; c += kGraphBlock / 32) {
      WarpSort32(c < chunks ? l.ckeys + 32 * c : l.kkeys + 32 * (c - chunks), lane);
    }
    __syncthreads();
  } else {
    BlockBitonicSort<kGraphBlock>(l.ckeys, sort_len);
    if (kept) BlockBitonicSort<kGraphBlock>(l.kkeys, sort_len);
  }
  MergeSmallest(l.beam, layer.beam_len, l.ckeys, chunks, chunk_len, l.beam_next);
  Swap(l.beam, l.beam_next);
  if (kept) {
    MergeSmallest(l.kept, a.k, l.kkeys, chunks, chunk_len, l.kept_next);
    Swap(l.kept, l.kept_next);
  }
}

// Empties the candidate key lists' first sort_len. Called by the whole block
// (a barrier follows before they are written).
__device__ __forceinline__ void ClearCandidates(Lists& l, int sort_len) {
  for (int i = threadIdx.x; i < sort_len; i += kGraphBlock) {
    l.ckeys[i] = kEmptyKey;
    if (l.kept != nullptr) l.kkeys[i] = kEmptyKey;
  }
}

// Scores cand[0, layer.expansion) (nodes of `layer`; kNoEdge = none) and merges
// them. Called by the whole block.
__device__ __forceinline__ void ScoreAndMerge(const GraphArgs& a, Lists& l, const LayerView& layer,
                                              const float* query, uint32_t* hash, uint32_t* cand) {
  const int tid = threadIdx.x;
  // Layer 0 (layer.keep) only: the descent above it is each block's own.
  uint32_t* shared_visited = layer.keep ? QueryVisited(a) : nullptr;
  // The same thread wrote cand[i] (SearchLayer, ScoreList): no barrier before.
  // The block's hash first (shared memory, cheap), then the query's set.
  for (int i = tid; i < layer.expansion; i += kGraphBlock) {
    const uint32_t node = cand[i];
    if (node != kNoEdge && (!VisitOnce(hash, a.hash_bits, node) || !ClaimForQuery(shared_visited, node))) {
      cand[i] = kNoEdge;
    }
  }
  ClearCandidates(l, layer.sort_len);
  __syncthreads();
  const bool kept = layer.keep && l.kept != nullptr;
  const int teams = kGraphBlock / layer.team, member = tid & (layer.team - 1);
  for (int c0 = 0; c0 < layer.expansion; c0 += teams) {  // uniform: every lane reaches the shuffles
    const int c = c0 + tid / layer.team;
    const uint32_t node = c < layer.expansion ? cand[c] : kNoEdge;
    const uint32_t row = node == kNoEdge ? 0 : (layer.rows != nullptr ? layer.rows[node] : node);
    const float s = TeamScore(query, node == kNoEdge ? nullptr : a.vectors + static_cast<size_t>(row) * a.dim, a.dim,
                              a.l2, member, layer.team);
    if (member == 0 && node != kNoEdge) {
      const uint64_t key = MakeKey(a.l2 ? s : -s, node);
      l.ckeys[c] = key;
      if (kept && !IsDeleted(a.deleted, row)) l.kkeys[c] = key;
    }
  }
  __syncthreads();
  MergeCandidates(a, l, layer);
}

__device__ __forceinline__ void ClearHash(uint32_t* hash, int bits) {
  for (int i = threadIdx.x; i < (1 << bits); i += kGraphBlock) hash[i] = kFreeSlot;
}

// Empties the visited hash but for the nodes of the beam and the kept list.
// A node that leaves is never scored into them again (their worst keys only
// improve), so scoring it twice costs time, never a duplicate. Called by the
// whole block; ends with a barrier.
__device__ __forceinline__ void RefillHash(const GraphArgs& a, const Lists& l, const LayerView& layer,
                                           uint32_t* hash) {
  ClearHash(hash, a.hash_bits);
  __syncthreads();
  for (int i = threadIdx.x; i < layer.beam_len; i += kGraphBlock) {
    if (l.beam[i] != kEmptyKey) VisitOnce(hash, a.hash_bits, KeyNode(l.beam[i]));
  }
  if (layer.keep && l.kept != nullptr) {
    for (int i = threadIdx.x; i < a.k; i += kGraphBlock) {
      if (l.kept[i] != kEmptyKey) VisitOnce(hash, a.hash_bits, KeyRow(l.kept[i]));
    }
  }
  __syncthreads();
}

// Best-first search of one layer from the beam: each step expands the
// width best unexpanded nodes, until none is left (or, as a safety net,
// after max_steps). `filled`: nodes in the hash so far, at most; when a step
// could pass half the hash, it keeps only the beam's and kept list's.
__device__ __forceinline__ void SearchLayer(const GraphArgs& a, Lists& l, const LayerView& layer, const float* query,
                                            uint32_t* hash, uint32_t* cand, uint32_t* parents, int* num_parents,
                                            int max_steps, int filled) {
  const int tid = threadIdx.x;
  for (int step = 0; step < max_steps; ++step) {
    if (filled + layer.expansion > a.hash_half) {  // uniform
      RefillHash(a, l, layer, hash);
      filled = layer.beam_len + (layer.keep && l.kept != nullptr ? a.k : 0);
    }
    if (tid < 32) {  // warp 0 picks the parents, 32 beam slots at a time
      int picked = 0;   // the same in every lane
      for (int base = 0; base < layer.beam_len && picked < layer.width; base += 32) {
        const int i = base + tid;
        const uint64_t key = i < layer.beam_len ? l.beam[i] : kEmptyKey;
        const bool open = key != kEmptyKey && !(key & kExpandedBit);
        const uint32_t mask = __ballot_sync(0xffffffffu, open);
        const int rank = picked + __popc(mask & ((1u << tid) - 1u));
        if (open && rank < layer.width) {
          l.beam[i] = key | kExpandedBit;
          parents[rank] = KeyNode(key);
        }
        picked = min(layer.width, picked + __popc(mask));
      }
      if (tid == 0) *num_parents = picked;
    }
    __syncthreads();
    const int picked = *num_parents;
    if (picked == 0) break;  // every beam node expanded (uniform)
    for (int i = tid; i < layer.expansion; i += kGraphBlock) {
      const int p = i / a.degree;
      cand[i] = p < picked ? layer.graph[static_cast<size_t>(parents[p]) * a.degree + (i - p * a.degree)] : kNoEdge;
    }
    ScoreAndMerge(a, l, layer, query, hash, cand);
    filled += layer.expansion;
  }
}

// Scores `count` nodes listed at list[first + i * stride] (or first + i
// itself where list is null), expansion at a time.
__device__ __forceinline__ void ScoreList(const GraphArgs& a, Lists& l, const LayerView& layer, const float* query,
                                          uint32_t* hash, uint32_t* cand, const uint32_t* list, int first, int stride,
                                          int count) {
  for (int s0 = 0; s0 < count; s0 += layer.expansion) {
    for (int i = threadIdx.x; i < layer.expansion; i += kGraphBlock) {
      const int at = first + (s0 + i) * stride;
      cand[i] = s0 + i < count ? (list != nullptr ? list[at] : static_cast<uint32_t>(at)) : kNoEdge;
    }
    ScoreAndMerge(a, l, layer, query, hash, cand);
  }
}

// Two blocks per SM: up to 128 registers a thread (it takes 124 on sm_90,
// no spills; an earlier version, bounded by the block size alone, got 64 and
// spilled).
__global__ void __launch_bounds__(kGraphBlock, 2) GraphSearchKernel(GraphArgs a) {
  extern __shared__ __align__(16) uint64_t smem[];  // 16: the query is read as float4
  const bool tombstones = a.deleted != nullptr;
  const int sort_len = a.sort_cap;
  const int beam_slots = max(a.itopk, kUpperBeam);
  Lists l;
  l.beam = smem;
  l.beam_next = l.beam + beam_slots;
  l.kept = tombstones ? l.beam_next + beam_slots : nullptr;
  l.kept_next = tombstones ? l.kept + a.k : nullptr;
  l.ckeys = l.beam_next + beam_slots + (tombstones ? 2 * a.k : 0);
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
  for (int i = tid; i < beam_slots; i += kGraphBlock) l.beam[i] = kEmptyKey;
  if (tombstones) {
    for (int i = tid; i < a.k; i += kGraphBlock) l.kept[i] = kEmptyKey;
  }
  ClearHash(hash, a.hash_bits);
  __syncthreads();

  const LayerView bottom = MakeLayerView(a, a.graph, nullptr, a.itopk, a.width, true);
  if (a.num_upper > 0) {
    // As the CPU: score every node of the top layer, search each upper layer
    // with a beam of kUpperBeam, hand the beam down (same scores, the nodes'
    // indices in the layer below, which starts a fresh visited set), adding
    // that layer's extra seeds.
    const GraphUpperLayer& top = a.layers[a.num_upper - 1];
    LayerView upper = MakeLayerView(a, a.upper + top.graph, a.upper + top.rows, kUpperBeam, a.upper_width, false);
    ScoreList(a, l, upper, query, hash, cand, nullptr, 0, 1, static_cast<int>(top.size));
    for (int li = a.num_upper - 1; li >= 0; --li) {
      const GraphUpperLayer& layer = a.layers[li];
      upper = MakeLayerView(a, a.upper + layer.graph, a.upper + layer.rows, kUpperBeam, a.upper_width, false);
      const int entered = li == a.num_upper - 1 ? static_cast<int>(top.size)
                                                 : kUpperBeam + static_cast<int>(a.layers[li].extra_count);
      SearchLayer(a, l, upper, query, hash, cand, parents, &num_parents, a.upper_steps, entered);
      const uint32_t* down = a.upper + layer.down;
      const bool into_bottom = li == 0;
      ClearHash(hash, a.hash_bits);
      ClearCandidates(l, a.sort_cap);
      __syncthreads();
      if (tid < 32) {  // warp 0 relabels the (at most 32) beam keys
        const uint64_t key = tid < kUpperBeam ? l.beam[tid] : kEmptyKey;
        const int count = __popc(__ballot_sync(0xffffffffu, key != kEmptyKey));
        // Into layer 0, each block takes its share of the descent's nodes
        // (one each when there are fewer nodes than blocks).
        const int share = max(1, min(a.ctas, count));
        const bool mine = !into_bottom || tid % share == cta % share;
        const uint32_t node = key != kEmptyKey && mine ? down[KeyNode(key)] : kNoEdge;
        // With more blocks than nodes, blocks share one: the first keeps it.
        if (node != kNoEdge && (!into_bottom || ClaimForQuery(QueryVisited(a), node))) {
          VisitOnce(hash, a.hash_bits, node);
          const uint64_t relabelled = (key & 0xffffffff00000000ull) | node;
          l.ckeys[tid] = relabelled;
          if (into_bottom && tombstones && !IsDeleted(a.deleted, node)) l.kkeys[tid] = relabelled;
        }
      }
      __syncthreads();  // the beam was read above: empty it only now
      for (int i = tid; i < beam_slots; i += kGraphBlock) l.beam[i] = kEmptyKey;
      __syncthreads();
      const LayerView next = into_bottom ? bottom : upper;  // upper: only its beam length matters here
      MergeCandidates(a, l, next);
      if (!into_bottom) {
        const GraphUpperLayer& below = a.layers[li - 1];
        const LayerView below_view =
            MakeLayerView(a, a.upper + below.graph, a.upper + below.rows, kUpperBeam, a.upper_width, false);
        ScoreList(a, l, below_view, query, hash, cand, a.upper + below.extra, 0, 1, static_cast<int>(below.extra_count));
      }
    }
  }
  // Layer 0's extra seeds (with no upper layer, every node too), this
  // block's share.
  const int my_seeds = (a.num_seeds - cta + a.ctas - 1) / a.ctas;
  ScoreList(a, l, bottom, query, hash, cand, a.seeds, cta, a.ctas, my_seeds);
  SearchLayer(a, l, bottom, query, hash, cand, parents, &num_parents, a.max_steps,
              my_seeds + (a.num_upper > 0 ? kUpperBeam : 0));
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
  const auto& layers = index.layers();
  if (layers.size() - 1 > kMaxGraphUpperLayers) {
    return Status::InvalidArgument("the GPU GRAPH search descends at most " + std::to_string(kMaxGraphUpperLayers) +
                                   " upper layers, the index has " + std::to_string(layers.size() - 1));
  }
  // Layer 0's seeds: its extra seeds; with no upper layer, every node too.
  std::vector<uint32_t> seeds;
  if (layers.size() == 1) seeds = index.entry_points();
  seeds.insert(seeds.end(), layers.front().extra_seeds.begin(), layers.front().extra_seeds.end());
  // The upper layers, one after the other: rows, down, extra seeds, graph.
  std::vector<uint32_t> upper;
  for (size_t li = 1; li < layers.size(); ++li) {
    const GraphIndex::Layer& layer = layers[li];
    GraphUpperLayer at;
    at.size = static_cast<uint32_t>(layer.rows.size());
    at.extra_count = static_cast<uint32_t>(layer.extra_seeds.size());
    at.rows = upper.size();
    upper.insert(upper.end(), layer.rows.begin(), layer.rows.end());
    at.down = upper.size();
    upper.insert(upper.end(), layer.down.begin(), layer.down.end());
    at.extra = upper.size();
    upper.insert(upper.end(), layer.extra_seeds.begin(), layer.extra_seeds.end());
    at.graph = upper.size();
    upper.insert(upper.end(), layer.graph.begin(), layer.graph.end());
    out.upper_layers_.push_back(at);
  }
  QUIVER_RETURN_IF_ERROR(detail::Upload(res, vectors, long_lived, "GRAPH vectors", &out.vectors_));
  QUIVER_RETURN_IF_ERROR(detail::Upload(res, graph, long_lived, "GRAPH neighbours", &out.graph_));
  QUIVER_RETURN_IF_ERROR(detail::Upload(res, seeds, long_lived, "GRAPH seeds", &out.seeds_));
  QUIVER_RETURN_IF_ERROR(detail::Upload(res, upper, long_lived, "GRAPH upper layers", &out.upper_));
  // The host vectors above go away; other streams may read a long-lived copy.
  QUIVER_RETURN_IF_ERROR(res.Synchronize());
  return std::move(out);
}

Status GraphSearch(cuda::GpuResources& res, const DeviceGraph& graph, const uint64_t* deleted, const float* queries,
                   size_t nq, size_t k, uint32_t itopk, uint32_t search_width, int64_t* rows, float* scores) {
  QUIVER_RETURN_IF_ERROR(CheckGraphArguments(k, itopk, search_width, graph.degree()));
  if (nq == 0) return Status::Ok();
  const auto& upper_layers = graph.upper_layers();
  if (graph.size() == 0 || (graph.num_seeds() == 0 && upper_layers.empty())) {
    detail::FillEmpty(graph.metric(), nq * k, rows, scores);
    return Status::Ok();
  }
  if (nq > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("too many queries in one GPU call");
  }
  const size_t dim = graph.dim();
  const int beam = static_cast<int>(std::max<size_t>(itopk, k));
  const int width = static_cast<int>(search_width);
  const int expansion = static_cast<int>(search_width * graph.degree());
  // The upper layers' beam is 8: expanding up to 4 of its nodes per step
  // (where the candidates fit) takes fewer dependent steps, each a round of
  // global loads, through a descent whose length does not depend on itopk.
  const int upper_width =
      std::max(width, std::min(4, static_cast<int>(kMaxGraphExpansion / std::max<size_t>(graph.degree(), 1))));
  const int cand_cap = upper_layers.empty() ? expansion : std::max(expansion, upper_width * static_cast<int>(graph.degree()));
  // The visited hash: twice the nodes a typical search scores (the beam
  // expanded twice over), never below twice what it must hold at once,
  // within 2^kMaxHashBits slots. A longer search refills it with the
  // beam's nodes whenever half is used (RefillHash), so the hash bounds
  // shared memory, not the search. Steps: until every beam node is
  // expanded, as on the CPU, with a generous cap as a safety net.
  const int seeds = static_cast<int>(graph.num_seeds());
  const int64_t typical = std::min<int64_t>(static_cast<int64_t>(graph.size()),
                                            seeds + kUpperBeam + int64_t{2 * (beam + width - 1) / width + 16} * expansion);
  // Scored before the first refill: the top layer (at most 256 nodes) or
  // the seeds, then a step's expansion.
  const int64_t needed = std::max<int64_t>({int64_t{beam} + static_cast<int64_t>(k), seeds + kUpperBeam, 256}) + cand_cap;
  int hash_bits = kMinHashBits;
  while (hash_bits < kMaxHashBits && (int64_t{1} << hash_bits) < 2 * std::max(typical, needed)) ++hash_bits;
  const int max_steps = 16 * ((beam + width - 1) / width) + 256;
  const int upper_steps = 16 * ((kUpperBeam + width - 1) / width) + 256;
  const cuda::GpuDevice::Impl& device = res.device().impl();
  QUIVER_CUDA_TRY(cudaSetDevice(device.ordinal));
  const size_t shared_limit = device.shared_per_block_optin;
  const int sms = device.multiprocessors;
  // Fewer queries than SMs: several blocks per query (each its own beam and
  // share of the seeds), so a small batch does not leave most SMs idle.
  // Into layer 0 each block takes its share of the descent's nodes (or, with
  // no upper layer, of the seeds).
  const int seed_cap = upper_layers.empty() ? seeds : kMaxCtasPerQuery;
  int ctas = 1;
  if (const size_t wanted = res.device().options().graph_blocks_per_query; wanted > 0) {
    ctas = static_cast<int>(std::min<size_t>({wanted, size_t(kMaxCtasPerQuery), size_t(seed_cap)}));
  } else if (nq < static_cast<size_t>(sms)) {
    ctas = std::clamp(sms / static_cast<int>(nq), 1, std::min(kAutoMaxCtasPerQuery, seed_cap));
  }
  while (ctas > 1 && NextPow2(ctas * static_cast<int>(k)) > kMaxCtaMergeKeys) --ctas;

  GraphArgs args{};
  args.dim = static_cast<int>(dim);
  args.degree = static_cast<int>(graph.degree());
  args.num_seeds = seeds;
  args.upper = graph.upper();
  args.num_upper = static_cast<int>(upper_layers.size());
  std::copy(upper_layers.begin(), upper_layers.end(), args.layers);
  args.upper_steps = upper_steps;
  args.ctas = ctas;
  args.k = static_cast<int>(k);
  args.itopk = beam;
  args.width = static_cast<int>(search_width);
  args.upper_width = upper_width;
  args.cand_cap = cand_cap;
  args.sort_cap = std::max(32, NextPow2(cand_cap));
  args.max_steps = max_steps;
  args.hash_bits = hash_bits;
  args.hash_half = (1 << hash_bits) / 2;
  args.l2 = graph.metric() == Metric::kL2;
  const bool tombstones = deleted != nullptr;
  const size_t sort_len = args.sort_cap;
  const size_t key_slots = 2 * size_t(std::max(beam, kUpperBeam)) + (tombstones ? 2 * k + 2 * sort_len : sort_len);
  const size_t shared =
      key_slots * sizeof(uint64_t) + dim * sizeof(float) + ((size_t{1} << hash_bits) + cand_cap) * sizeof(uint32_t);
  const size_t static_shared = kMaxGraphExpansion * sizeof(uint32_t) + sizeof(int);
  if (shared + static_shared > shared_limit) {
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
  // Several blocks per query share a visited bit per node (cleared per
  // call; nq < SMs here, so at most a few MiB for a million nodes), unless
  // that would pass kMaxSharedVisitedBytes: then they search independently.
  const size_t visited_words = (graph.size() + 31) / 32;
  const bool share_visited = ctas > 1 && nq * visited_words * sizeof(uint32_t) <= kMaxSharedVisitedBytes;
  QUIVER_ASSIGN_OR_RETURN(auto visited, cuda::DeviceBuffer<uint32_t>::Allocate(
                                            res, share_visited ? nq * visited_words : 0, "shared visited sets"));
  if (share_visited) {
    QUIVER_CUDA_TRY(cudaMemsetAsync(visited.data(), 0, nq * visited_words * sizeof(uint32_t), stream));
  }
  args.visited = share_visited ? visited.data() : nullptr;
  args.visited_words = visited_words;
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

  return detail::DownloadKeys(res, keys.data(), nq * k, !args.l2, rows, scores);
}

Status GraphSearch(cuda::GpuResources& res, const GraphIndex& index, const BaseView& base, const float* queries,
                   size_t nq, size_t k, uint32_t itopk, uint32_t search_width, int64_t* rows, float* scores) {
  QUIVER_RETURN_IF_ERROR(CheckGraphArguments(k, itopk, search_width, index.degree()));
  if (nq == 0) return Status::Ok();
  QUIVER_ASSIGN_OR_RETURN(DeviceGraph device_graph, DeviceGraph::Upload(res, index, base, /*long_lived=*/false));
  return GraphSearch(res, device_graph, base.deleted, queries, nq, k, itopk, search_width, rows, scores);
}

namespace {

constexpr int kPruneBlock = 128;

// One block per node a: CAGRA's rank-based pruning, PruneByDetours of
// kernels/cpu/graph.cc on the device. The edge a->list[j] has a detour
// through list[i] when i < j and list[j] is in list[i]'s own kNN list at a
// rank r < j; the node keeps the `degree` edges with the fewest detours,
// ties by rank. Shared memory: the list and its detour counts (knn each),
// and a node -> rank hash of 2^table_bits slots (keys, ranks).
__global__ void __launch_bounds__(kPruneBlock)
    PruneByDetoursKernel(const uint32_t* knn_graph, int knn, int degree, int table_bits, uint32_t* pruned) {
  extern __shared__ uint32_t prune_smem[];
  uint32_t* list = prune_smem;
  uint32_t* detours = list + knn;
  uint32_t* keys = detours + knn;
  uint32_t* ranks = keys + (1 << table_bits);
  __shared__ int len;
  const size_t a = blockIdx.x;
  const uint32_t mask = (1u << table_bits) - 1u;
  if (threadIdx.x == 0) len = knn;
  for (int j = threadIdx.x; j < knn; j += kPruneBlock) {
    list[j] = knn_graph[a * knn + j];
    detours[j] = 0;
  }
  for (int t = threadIdx.x; t <= static_cast<int>(mask); t += kPruneBlock) keys[t] = kNoEdge;
  __syncthreads();
  for (int j = threadIdx.x; j < knn; j += kPruneBlock) {
    if (list[j] == kNoEdge) atomicMin(&len, j);  // lists are padded at the end only
  }
  __syncthreads();
  const int n_len = len;
  // A kNN list never repeats a node: each key goes in once.
  for (int j = threadIdx.x; j < n_len; j += kPruneBlock) {
    uint32_t t = (list[j] * 2654435761u) & mask;
    while (atomicCAS(&keys[t], kNoEdge, list[j]) != kNoEdge) t = (t + 1u) & mask;
    ranks[t] = static_cast<uint32_t>(j);
  }
  __syncthreads();
  // Every (i, r) with i, r < len - 1: B = list[i], C = B's r-th neighbour.
  const int side = n_len - 1;
  const int pairs = side > 0 ? side * side : 0;
  for (int p = threadIdx.x; p < pairs; p += kPruneBlock) {
    const int i = p / side, r = p - i * side;
    const uint32_t c = knn_graph[static_cast<size_t>(list[i]) * knn + r];
    if (c == kNoEdge) continue;
    uint32_t t = (c * 2654435761u) & mask;
    while (keys[t] != kNoEdge && keys[t] != c) t = (t + 1u) & mask;
    if (keys[t] != c) continue;
    const int j = static_cast<int>(ranks[t]);
    if (j > i && j > r) atomicAdd(&detours[j], 1u);
  }
  __syncthreads();
  // A stable sort by detours: each edge's place is the number of edges with
  // fewer detours plus those with as many and a better rank.
  for (int j = threadIdx.x; j < n_len; j += kPruneBlock) {
    const uint32_t dj = detours[j];
    int place = 0;
    for (int x = 0; x < n_len; ++x) place += detours[x] < dj || (detours[x] == dj && x < j);
    if (place < degree) pruned[a * degree + place] = list[j];
  }
}

}  // namespace

Status PruneByDetours(cuda::GpuResources& res, const uint32_t* knn_graph, size_t n, size_t knn, size_t degree,
                      uint32_t* pruned) {
  if (knn == 0 || knn > kMaxK || degree == 0) {
    return Status::InvalidArgument("the GPU pruning takes kNN lists of 1 to " + std::to_string(kMaxK) +
                                   " and a degree of at least 1");
  }
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("the GPU pruning takes at most 2^31 - 1 nodes");
  }
  std::fill(pruned, pruned + n * degree, kNoEdge);
  if (n == 0) return Status::Ok();
  QUIVER_CUDA_TRY(cudaSetDevice(res.device().impl().ordinal));
  int table_bits = 1;
  while ((size_t{1} << table_bits) < 4 * knn) ++table_bits;  // at most a quarter full, as on the CPU
  const size_t shared = (2 * knn + 2 * (size_t{1} << table_bits)) * sizeof(uint32_t);
  QUIVER_ASSIGN_OR_RETURN(auto d_knn, cuda::DeviceBuffer<uint32_t>::Allocate(res, n * knn, "kNN graph"));
  QUIVER_RETURN_IF_ERROR(d_knn.CopyFromHost(res, knn_graph, n * knn));
  QUIVER_ASSIGN_OR_RETURN(auto d_pruned, cuda::DeviceBuffer<uint32_t>::Allocate(res, n * degree, "pruned graph"));
  cudaStream_t stream = res.impl().stream;
  QUIVER_CUDA_TRY(cudaMemsetAsync(d_pruned.data(), 0xff, n * degree * sizeof(uint32_t), stream));  // kNoEdge
  PruneByDetoursKernel<<<static_cast<unsigned>(n), kPruneBlock, shared, stream>>>(
      d_knn.data(), static_cast<int>(knn), static_cast<int>(degree), table_bits, d_pruned.data());
  QUIVER_RETURN_IF_ERROR(cuda::CheckLaunch("PruneByDetoursKernel"));
  QUIVER_RETURN_IF_ERROR(d_pruned.CopyToHost(res, pruned, n * degree));
  return res.Synchronize();
}

Status KnnGraph(cuda::GpuResources& res, Metric metric, const float* data, size_t n, size_t dim, size_t knn,
                uint32_t* graph) {
  if (metric == Metric::kCosine) return Status::InvalidArgument("KnnGraph takes unit vectors and inner product");
  if (knn == 0 || knn + 1 > kMaxK) {
    return Status::InvalidArgument("the GPU kNN graph keeps 1 to " + std::to_string(kMaxK - 1) + " neighbours, asked " +
                                   std::to_string(knn));
  }
  if (n > kMaxGpuKnnGraphRows) {
    return Status::InvalidArgument("the GPU kNN graph takes at most " + std::to_string(kMaxGpuKnnGraphRows) +
                                   " rows, asked " + std::to_string(n));
  }
  if (dim == 0) return Status::InvalidArgument("dimension must be at least 1");
  std::fill(graph, graph + n * knn, kNoEdge);
  if (n < 2) return Status::Ok();
  std::vector<float> norms(n);
  SquaredNorms(data, n, dim, norms.data());
  QUIVER_ASSIGN_OR_RETURN(DeviceFlatBase base,
                          DeviceFlatBase::Upload(res, BaseView{data, norms.data(), n, dim}, /*long_lived=*/false));
  // Every row searches all rows for knn + 1: itself among them (first,
  // unless exact duplicates of lower rows come before it), then dropped.
  const size_t k = std::min(knn + 1, n);
  const size_t chunk = std::min<size_t>(n, 65536);
  QUIVER_ASSIGN_OR_RETURN(auto d_rows, cuda::DeviceBuffer<int64_t>::Allocate(res, chunk * k, "kNN rows"));
  QUIVER_ASSIGN_OR_RETURN(auto d_scores, cuda::DeviceBuffer<float>::Allocate(res, chunk * k, "kNN scores"));
  std::vector<int64_t> rows(chunk * k);
  const detail::DeviceBase all{base.vectors(), base.sq_norms(), nullptr, n, dim};
  for (size_t q0 = 0; q0 < n; q0 += chunk) {
    const size_t qn = std::min(chunk, n - q0);
    QUIVER_RETURN_IF_ERROR(detail::SearchDevice(res, all, base.vectors() + q0 * dim, qn, {metric, k}, d_rows.data(),
                                                d_scores.data()));
    QUIVER_RETURN_IF_ERROR(d_rows.CopyToHost(res, rows.data(), qn * k));
    QUIVER_RETURN_IF_ERROR(res.Synchronize());
    for (size_t i = 0; i < qn; ++i) {
      const int64_t self = static_cast<int64_t>(q0 + i);
      uint32_t* out = graph + (q0 + i) * knn;
      size_t kept = 0;
      for (size_t j = 0; j < k && kept < knn; ++j) {
        const int64_t r = rows[i * k + j];
        if (r >= 0 && r != self) out[kept++] = static_cast<uint32_t>(r);
      }
    }
  }
  return Status::Ok();
}

}  // namespace quiver::kernels::gpu
