// GPU FLAT search and select-k (kernels/gpu_search.h).
//
// A batch runs as query tiles x base tiles. For each pair, one cuBLAS SGEMM
// (or, with FlatGemm::kTf32x3, one TF32 tensor-core GEMM over the values
// split into their TF32 part and remainder: SplitTf32Kernel) writes the
// tile's dot products (row-major, qt x bt) and the select kernel
// turns them into keys (norms, cosine scaling and tombstones applied on the
// fly) and keeps k per query. With several base tiles the per-tile winners
// (qt x tiles x k keys) are selected again. Finally one block per query
// recomputes the winners' scores exactly and re-sorts them, like the CPU path,
// so L2 scores carry no |x|^2 - 2q.x + |q|^2 cancellation.
//
// With several base tiles the distance tiles are double buffered: each
// tile's select runs on the resources' side stream while the next GEMM
// fills the other buffer (events order them), so the select's memory
// traffic can run beside the GEMM's arithmetic where SMs are free (beside
// SGEMM, which holds every SM, it gained nothing on an H100).
//
// Memory per query tile: bt floats of dot products (twice when double
// buffered) plus the candidates; tiles are sized to stay within a workspace
// of at most 4 GiB or half of the free budget, whichever is smaller.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cuda/cuda_check.cuh"
#include "kernels/cpu/kmeans.h"
#include "kernels/gpu/flat_detail.cuh"
#include "kernels/gpu/select_k.cuh"
#include "kernels/gpu_search.h"

namespace quiver::kernels::gpu {

using detail::CheckK;
using detail::LaunchSelect;

namespace {

constexpr int kFinalBlock = 256;

__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// 1/|q| for each query (0 for the zero vector), one warp per query.
__global__ void QueryInvNormsKernel(const float* queries, int nq, int dim, float* inv_norms) {
  const int q = static_cast<int>((blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x) / 32);
  const int lane = threadIdx.x & 31;
  if (q >= nq) return;  // whole warps leave together
  const float* v = queries + static_cast<size_t>(q) * dim;
  float s = 0.0f;
  for (int d = lane; d < dim; d += 32) s += v[d] * v[d];
  s = WarpSum(s);
  if (lane == 0) inv_norms[q] = s > 0.0f ? 1.0f / sqrtf(s) : 0.0f;
}

// The TF32 part of v (10 mantissa bits, rounded to nearest; the tensor
// cores read only those bits) — the remainder v - hi is exact in fp32.
__device__ __forceinline__ float Tf32High(float v) {
  return __uint_as_float((__float_as_uint(v) + 0x1000u) & 0xffffe000u);
}

// rows x dim -> rows x 3*dim for FlatGemm::kTf32x3: [hi, lo, hi] per base
// row, [hi, hi, lo] per query row, so one GEMM over 3*dim sums
// hi*hi + lo*hi + hi*lo.
__global__ void SplitTf32Kernel(const float* src, size_t rows, int dim, bool base_layout, float* out) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * dim) return;
  const size_t r = i / dim;
  const int d = static_cast<int>(i - r * dim);
  const float v = src[i];
  const float hi = Tf32High(v), lo = v - hi;
  float* o = out + r * 3 * dim;
  o[d] = hi;
  o[dim + d] = base_layout ? lo : hi;
  o[2 * dim + d] = base_layout ? hi : lo;
}

Status SplitTf32(cudaStream_t stream, const float* src, size_t rows, int dim, bool base_layout, float* out) {
  const size_t count = rows * static_cast<size_t>(dim);
  if (count == 0) return Status::Ok();
  SplitTf32Kernel<<<static_cast<unsigned>((count + 255) / 256), 256, 0, stream>>>(src, rows, dim, base_layout, out);
  return cuda::CheckLaunch("SplitTf32Kernel");
}

// Keys (smaller is better) of one GEMM tile: query q of the tile, base row
// row0 + j. Same key as the CPU's: L2 |x|^2 - 2q.x (|q|^2 is constant per
// query), IP -q.x, cosine -q.x / (|q||x|) (0 for a zero vector).
struct TileKeys {
  const float* dots;
  size_t ld;
  uint32_t row0;
  const float* sq_norms;
  const uint64_t* deleted;
  const float* q_inv_norms;
  Metric metric;

  __device__ void Prepare(int, float*) {}
  __device__ int Length(int, int len) const { return len; }
  __device__ uint64_t operator()(int q, int j) const {
    const uint32_t row = row0 + static_cast<uint32_t>(j);
    if (deleted != nullptr && ((deleted[row >> 6] >> (row & 63u)) & 1ull)) return kEmptyKey;
    const float dot = dots[static_cast<size_t>(q) * ld + j];
    float key;
    if (metric == Metric::kL2) {
      key = sq_norms[row] - 2.0f * dot;
    } else if (metric == Metric::kInnerProduct) {
      key = -dot;
    } else {
      const float n = sq_norms[row];
      key = n > 0.0f ? -dot * q_inv_norms[q] * rsqrtf(n) : 0.0f;
    }
    return MakeKey(key, row);
  }
};

// Raw values for SelectK.
struct ValueKeys {
  const float* values;
  size_t ld;
  bool select_max;
  __device__ void Prepare(int, float*) {}
  __device__ int Length(int, int len) const { return len; }
  __device__ uint64_t operator()(int row, int j) const {
    const float v = values[static_cast<size_t>(row) * ld + j];
    return MakeKey(select_max ? -v : v, static_cast<uint32_t>(j));
  }
};

// One block per query: exact scores of the k winners (a warp per winner),
// re-sorted, written as rows and metric scores.
__global__ void __launch_bounds__(kFinalBlock)
    FinalizeKernel(const uint64_t* keys, int k, int cap, const float* queries, const float* base,
                   const float* sq_norms, const float* q_inv_norms, int dim, Metric metric, int64_t* out_rows,
                   float* out_scores) {
  extern __shared__ uint64_t buf[];
  const int q = blockIdx.x;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  for (int i = threadIdx.x; i < cap; i += kFinalBlock) buf[i] = kEmptyKey;
  __syncthreads();
  const float* qv = queries + static_cast<size_t>(q) * dim;
  for (int i = warp; i < k; i += kFinalBlock / 32) {
    const uint64_t key = keys[static_cast<size_t>(q) * k + i];
    if (key == kEmptyKey) continue;  // the same for the whole warp
    const uint32_t row = KeyRow(key);
    const float* x = base + static_cast<size_t>(row) * dim;
    float acc = 0.0f;
    if (metric == Metric::kL2) {
      for (int d = lane; d < dim; d += 32) {
        const float diff = qv[d] - x[d];
        acc += diff * diff;
      }
    } else {
      for (int d = lane; d < dim; d += 32) acc += qv[d] * x[d];
    }
    acc = WarpSum(acc);
    if (lane == 0) {
      float smaller_better;
      if (metric == Metric::kL2) {
        smaller_better = acc;
      } else if (metric == Metric::kInnerProduct) {
        smaller_better = -acc;
      } else {
        const float n = sq_norms[row];
        smaller_better = n > 0.0f ? -(acc * q_inv_norms[q] / sqrtf(n)) : 0.0f;
      }
      buf[i] = MakeKey(smaller_better, row);
    }
  }
  __syncthreads();
  BlockBitonicSort<kFinalBlock>(buf, cap);
  const bool larger_is_better = metric != Metric::kL2;
  for (int i = threadIdx.x; i < k; i += kFinalBlock) {
    const size_t at = static_cast<size_t>(q) * k + i;
    DecodeKey(buf[i], larger_is_better, &out_rows[at], &out_scores[at]);
  }
}

__global__ void DecodeKeysKernel(const uint64_t* keys, size_t count, bool larger_is_better, int64_t* rows,
                                 float* values) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  DecodeKey(keys[i], larger_is_better, &rows[i], &values[i]);
}

}  // namespace

namespace detail {

Status SearchDevice(cuda::GpuResources& res, const DeviceBase& base, const float* queries, size_t nq,
                    const FlatSearchParams& params, int64_t* out_rows, float* out_scores) {
  cudaStream_t stream = res.impl().stream;
  cublasHandle_t cublas = res.impl().cublas;
  const int k = static_cast<int>(params.k);
  const int dim = static_cast<int>(base.dim);
  const size_t n = base.rows;

  QUIVER_ASSIGN_OR_RETURN(auto q_inv, cuda::DeviceBuffer<float>::Allocate(res, nq, "query norms"));
  {
    const int threads = 256;
    const size_t blocks = (nq * 32 + threads - 1) / threads;
    QueryInvNormsKernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(queries, static_cast<int>(nq), dim,
                                                                               q_inv.data());
    QUIVER_RETURN_IF_ERROR(cuda::CheckLaunch("QueryInvNormsKernel"));
  }

  // Tiles: bt base rows x qt queries, within the workspace (with kTf32x3,
  // the split base tile takes at most a quarter of it).
  cuda::GpuDevice& device = res.device();
  const bool split = device.options().flat_gemm == cuda::FlatGemm::kTf32x3;
  const size_t free_budget = device.budget_bytes() - std::min(device.budget_bytes(), device.bytes_in_use());
  // Larger tiles ran faster on an H100 (1M x 128, 10k queries, kTf32x3:
  // 65,536 x 1,830 took 70 ms, 65,536 x 4,096 62 ms, 131,072 x 2,048 56 ms,
  // 131,072 x 4,096 54 ms, 262,144 x 2,048 52 ms).
  const size_t workspace = std::min<size_t>(size_t{4} << 30, free_budget / 2);
  const size_t split_row_bytes = split ? 3 * base.dim * sizeof(float) : 0;
  size_t bt = device.options().flat_base_tile_rows > 0 ? device.options().flat_base_tile_rows : size_t{262144};
  if (split) bt = std::min(bt, std::max<size_t>(workspace / 4 / split_row_bytes, 256));
  bt = std::min(bt, n);
  const size_t tiles = (n + bt - 1) / bt;
  // With several base tiles, two distance tiles: the select of one runs on
  // the side stream while the next GEMM fills the other (the select reads
  // memory, the GEMM computes).
  const size_t buffers = tiles > 1 ? 2 : 1;
  const size_t per_query = buffers * bt * sizeof(float) + (tiles > 1 ? tiles * k * sizeof(uint64_t) : 0) +
                           k * sizeof(uint64_t) + split_row_bytes;
  const size_t per_call = bt * split_row_bytes;
  const size_t qt_wanted = device.options().flat_query_tile_rows > 0
                               ? device.options().flat_query_tile_rows
                               : std::max<size_t>((workspace - std::min(workspace, per_call)) / per_query, 1);
  const size_t qt = std::clamp<size_t>(qt_wanted, 1, std::min<size_t>(nq, 16384));
  if (tiles * k > static_cast<size_t>(std::numeric_limits<int>::max())) {
    return Status::InvalidArgument("too many base tiles for k = " + std::to_string(k));
  }

  QUIVER_ASSIGN_OR_RETURN(auto dots, cuda::DeviceBuffer<float>::Allocate(res, buffers * qt * bt, "distance tiles"));
  // kTf32x3: the split query tile and base tile (3 x dim each row).
  QUIVER_ASSIGN_OR_RETURN(auto split_queries,
                          cuda::DeviceBuffer<float>::Allocate(res, split ? qt * 3 * base.dim : 0, "split queries"));
  QUIVER_ASSIGN_OR_RETURN(auto split_base,
                          cuda::DeviceBuffer<float>::Allocate(res, split ? bt * 3 * base.dim : 0, "split base tile"));
  QUIVER_ASSIGN_OR_RETURN(auto candidates, cuda::DeviceBuffer<uint64_t>::Allocate(
                                               res, tiles > 1 ? qt * tiles * k : 0, "per-tile candidates"));
  QUIVER_ASSIGN_OR_RETURN(auto winners, cuda::DeviceBuffer<uint64_t>::Allocate(res, qt * k, "winners"));

  // The selects run on the side stream when the tiles are double buffered.
  // Events order the two: a select after its GEMM, a GEMM after the select
  // that last read its buffer, the next query tile's selects after this
  // one's merge; the side stream is joined back before returning, on every
  // path (the buffers are freed in `stream`'s order).
  cudaStream_t select_stream = buffers > 1 ? res.impl().side_stream : stream;
  cuda::Event gemm_done[2], select_done[2], merged, joined;
  bool selecting[2] = {false, false};
  if (buffers > 1) {
    for (auto* e : {&gemm_done[0], &gemm_done[1], &select_done[0], &select_done[1], &merged, &joined}) {
      QUIVER_RETURN_IF_ERROR(e->Create());
    }
  }
  struct Join {
    cuda::Event* joined;
    cudaStream_t side, main;
    bool active;
    ~Join() {
      if (active) (void)joined->Order(side, main);
    }
  } join{&joined, select_stream, stream, buffers > 1};

  const float one = 1.0f, zero = 0.0f;
  const int final_cap = NextPow2(k);
  for (size_t q0 = 0; q0 < nq; q0 += qt) {
    const int qn = static_cast<int>(std::min(qt, nq - q0));
    const float* tile_queries = queries + q0 * base.dim;
    if (split) QUIVER_RETURN_IF_ERROR(SplitTf32(stream, tile_queries, qn, dim, false, split_queries.data()));
    // The previous query tile's merge has read `candidates`.
    if (buffers > 1 && q0 > 0) QUIVER_RETURN_IF_ERROR(merged.Order(stream, select_stream));
    for (size_t t = 0; t < tiles; ++t) {
      const size_t b0 = t * bt;
      const int bn = static_cast<int>(std::min(bt, n - b0));
      const size_t b = t % buffers;
      float* tile_dots = dots.data() + b * qt * bt;
      if (selecting[b]) QUIVER_RETURN_IF_ERROR(select_done[b].WaitIn(stream));  // its last select is done
      // Column-major view: dots^T (bn x qn, ld bt) = base_tile (dim x bn)^T * queries (dim x qn).
      if (split) {
        QUIVER_RETURN_IF_ERROR(SplitTf32(stream, base.vectors + b0 * base.dim, bn, dim, true, split_base.data()));
        QUIVER_CUBLAS_TRY(cuda::Cublas().gemm_ex(cublas, CUBLAS_OP_T, CUBLAS_OP_N, bn, qn, 3 * dim, &one,
                                                 split_base.data(), CUDA_R_32F, 3 * dim, split_queries.data(),
                                                 CUDA_R_32F, 3 * dim, &zero, tile_dots, CUDA_R_32F,
                                                 static_cast<int>(bt), CUBLAS_COMPUTE_32F_FAST_TF32,
                                                 CUBLAS_GEMM_DEFAULT));
      } else {
        QUIVER_CUBLAS_TRY(cuda::Cublas().sgemm(cublas, CUBLAS_OP_T, CUBLAS_OP_N, bn, qn, dim, &one,
                                               base.vectors + b0 * base.dim, dim, tile_queries, dim, &zero,
                                               tile_dots, static_cast<int>(bt)));
      }
      if (buffers > 1) QUIVER_RETURN_IF_ERROR(gemm_done[b].Order(stream, select_stream));
      const TileKeys keys{tile_dots, bt, static_cast<uint32_t>(b0), base.sq_norms, base.deleted,
                          q_inv.data() + q0, params.metric};
      if (tiles == 1) {
        QUIVER_RETURN_IF_ERROR(LaunchSelect(select_stream, keys, qn, bn, k, winners.data(), k));
      } else {
        QUIVER_RETURN_IF_ERROR(
            LaunchSelect(select_stream, keys, qn, bn, k, candidates.data() + t * k, tiles * k));
      }
      if (buffers > 1) {
        QUIVER_RETURN_IF_ERROR(select_done[b].Record(select_stream));
        selecting[b] = true;
      }
    }
    if (tiles > 1) {
      QUIVER_RETURN_IF_ERROR(joined.Order(select_stream, stream));  // every tile's select is done
      const StoredKeys keys{candidates.data(), tiles * k};
      QUIVER_RETURN_IF_ERROR(LaunchSelect(stream, keys, qn, static_cast<int>(tiles * k), k, winners.data(), k));
    }
    FinalizeKernel<<<qn, kFinalBlock, final_cap * sizeof(uint64_t), stream>>>(
        winners.data(), k, final_cap, tile_queries, base.vectors, base.sq_norms, q_inv.data() + q0, dim,
        params.metric, out_rows + q0 * k, out_scores + q0 * k);
    QUIVER_RETURN_IF_ERROR(cuda::CheckLaunch("FinalizeKernel"));
  }
  return Status::Ok();
}

Status DecodeKeys(cudaStream_t stream, const uint64_t* keys, size_t count, bool larger_is_better, int64_t* rows,
                  float* values) {
  if (count == 0) return Status::Ok();
  DecodeKeysKernel<<<static_cast<unsigned>((count + 255) / 256), 256, 0, stream>>>(keys, count, larger_is_better,
                                                                                   rows, values);
  return cuda::CheckLaunch("DecodeKeysKernel");
}

namespace {

// Host staging for one call's inputs: the queries, then the tombstone words
// at an 8-byte offset, in res's page-locked upload staging. Every per-call
// copy to the device goes through it: a copy from pageable memory is
// synchronous and takes the driver's own staging path under a driver-wide
// lock, where a stack dump of 64 concurrent calls found a quarter of them
// waiting.
struct StagedInputs {
  float* queries;
  uint64_t* deleted;  // null without tombstones
};

Result<StagedInputs> StageInputs(cuda::GpuResources& res, size_t query_floats, size_t deleted_words) {
  const size_t deleted_offset = (query_floats * sizeof(float) + 7) / 8 * 8;
  QUIVER_ASSIGN_OR_RETURN(void* staging, cuda::Staging(res.impl().upload_staging,
                                                       deleted_offset + deleted_words * sizeof(uint64_t),
                                                       "query staging"));
  char* bytes = static_cast<char*>(staging);
  return StagedInputs{reinterpret_cast<float*>(bytes),
                      deleted_words > 0 ? reinterpret_cast<uint64_t*>(bytes + deleted_offset) : nullptr};
}

}  // namespace

Status UploadSearchInputs(cuda::GpuResources& res, Metric metric, const float* queries, size_t nq, size_t dim,
                          const uint64_t* deleted, size_t rows, DeviceSearchInputs* out) {
  // Through res's page-locked staging (unit vectors written straight into it
  // for cosine): asynchronous copies, and the caller's closing
  // synchronisation frees the staging for the next call.
  const size_t count = nq * dim;
  const size_t words = deleted != nullptr ? (rows + 63) / 64 : 0;
  QUIVER_ASSIGN_OR_RETURN(const StagedInputs staged, StageInputs(res, count, words));
  if (metric == Metric::kCosine) {
    const std::vector<float> unit = Normalized(queries, nq, dim);
    std::copy(unit.begin(), unit.end(), staged.queries);
  } else {
    std::copy(queries, queries + count, staged.queries);
  }
  QUIVER_ASSIGN_OR_RETURN(out->queries, cuda::DeviceBuffer<float>::Allocate(res, count, "queries"));
  QUIVER_RETURN_IF_ERROR(out->queries.CopyFromHost(res, staged.queries, count));
  if (words > 0) {
    std::copy(deleted, deleted + words, staged.deleted);
    QUIVER_ASSIGN_OR_RETURN(out->deleted, cuda::DeviceBuffer<uint64_t>::Allocate(res, words, "tombstones"));
    QUIVER_RETURN_IF_ERROR(out->deleted.CopyFromHost(res, staged.deleted, words));
  }
  return Status::Ok();
}

Status DownloadKeys(cuda::GpuResources& res, const uint64_t* keys, size_t count, bool larger_is_better,
                    int64_t* rows, float* values) {
  QUIVER_ASSIGN_OR_RETURN(void* staging,
                          cuda::Staging(res.impl().download_staging, count * sizeof(uint64_t), "result staging"));
  QUIVER_CUDA_TRY(cudaMemcpyAsync(staging, keys, count * sizeof(uint64_t), cudaMemcpyDeviceToHost, res.impl().stream));
  QUIVER_RETURN_IF_ERROR(res.Synchronize());
  const uint64_t* host_keys = static_cast<const uint64_t*>(staging);
  float unused;
  for (size_t i = 0; i < count; ++i) DecodeKey(host_keys[i], larger_is_better, &rows[i], values ? &values[i] : &unused);
  return Status::Ok();
}

Status CoarseSearch(cuda::GpuResources& res, const float* centroids, const float* centroid_norms, size_t nlist,
                    size_t dim, Metric metric, const float* device_queries, size_t nq, size_t probes,
                    cuda::DeviceBuffer<int64_t>* lists, cuda::DeviceBuffer<float>* scores) {
  QUIVER_ASSIGN_OR_RETURN(*lists, cuda::DeviceBuffer<int64_t>::Allocate(res, nq * probes, "probed lists"));
  QUIVER_ASSIGN_OR_RETURN(*scores, cuda::DeviceBuffer<float>::Allocate(res, nq * probes, "probe scores"));
  const Metric coarse = metric == Metric::kL2 ? Metric::kL2 : Metric::kInnerProduct;
  const DeviceBase base{centroids, centroid_norms, nullptr, nlist, dim};
  return SearchDevice(res, base, device_queries, nq, {coarse, probes}, lists->data(), scores->data());
}

void FillEmpty(Metric metric, size_t count, int64_t* rows, float* scores) {
  const float empty =
      metric == Metric::kL2 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
  std::fill(rows, rows + count, int64_t{-1});
  std::fill(scores, scores + count, empty);
}

}  // namespace detail

namespace {

Status CheckArguments(size_t rows, size_t dim, bool has_norms, const FlatSearchParams& params) {
  QUIVER_RETURN_IF_ERROR(CheckK(params.k));
  if (dim == 0) return Status::InvalidArgument("dimension must be at least 1");
  if (rows > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("the GPU path addresses at most 2^31 - 1 rows per base");
  }
  if (rows > 0 && params.metric != Metric::kInnerProduct && !has_norms) {
    return Status::InvalidArgument("L2 and cosine search need the base norms");
  }
  return Status::Ok();
}

}  // namespace

Result<DeviceFlatBase> DeviceFlatBase::Upload(cuda::GpuResources& res, const BaseView& base, bool long_lived) {
  QUIVER_CUDA_TRY(cudaSetDevice(res.device().impl().ordinal));
  auto allocate = [&](size_t count, const char* what) {
    return long_lived ? cuda::DeviceBuffer<float>::AllocateLongLived(res.device(), count, what)
                      : cuda::DeviceBuffer<float>::Allocate(res, count, what);
  };
  DeviceFlatBase out;
  out.rows_ = base.rows;
  out.dim_ = base.dim;
  QUIVER_ASSIGN_OR_RETURN(out.vectors_, allocate(base.rows * base.dim, "base vectors"));
  QUIVER_RETURN_IF_ERROR(out.vectors_.CopyFromHost(res, base.vectors, base.rows * base.dim));
  if (base.sq_norms != nullptr) {
    QUIVER_ASSIGN_OR_RETURN(out.norms_, allocate(base.rows, "base norms"));
    QUIVER_RETURN_IF_ERROR(out.norms_.CopyFromHost(res, base.sq_norms, base.rows));
  }
  // The host data may go away, and other streams may read a long-lived base.
  QUIVER_RETURN_IF_ERROR(res.Synchronize());
  return std::move(out);
}

Status FlatSearch(cuda::GpuResources& res, const DeviceFlatBase& base, const uint64_t* deleted, const float* queries,
                  size_t nq, const FlatSearchParams& params, int64_t* rows, float* scores) {
  QUIVER_RETURN_IF_ERROR(CheckArguments(base.rows(), base.dim(), base.has_norms(), params));
  if (nq == 0) return Status::Ok();
  const size_t k = params.k, n = base.rows(), dim = base.dim();
  if (n == 0) {
    detail::FillEmpty(params.metric, nq * k, rows, scores);
    return Status::Ok();
  }
  QUIVER_CUDA_TRY(cudaSetDevice(res.device().impl().ordinal));
  // Inputs and results through page-locked staging (StageInputs says why).
  const size_t words = deleted != nullptr ? (n + 63) / 64 : 0;
  QUIVER_ASSIGN_OR_RETURN(const detail::StagedInputs staged, detail::StageInputs(res, nq * dim, words));
  std::copy(queries, queries + nq * dim, staged.queries);
  cuda::DeviceBuffer<uint64_t> d_deleted;
  if (words > 0) {
    std::copy(deleted, deleted + words, staged.deleted);
    QUIVER_ASSIGN_OR_RETURN(d_deleted, cuda::DeviceBuffer<uint64_t>::Allocate(res, words, "tombstones"));
    QUIVER_RETURN_IF_ERROR(d_deleted.CopyFromHost(res, staged.deleted, words));
  }
  QUIVER_ASSIGN_OR_RETURN(auto d_queries, cuda::DeviceBuffer<float>::Allocate(res, nq * dim, "queries"));
  QUIVER_RETURN_IF_ERROR(d_queries.CopyFromHost(res, staged.queries, nq * dim));
  QUIVER_ASSIGN_OR_RETURN(auto d_rows, cuda::DeviceBuffer<int64_t>::Allocate(res, nq * k, "result rows"));
  QUIVER_ASSIGN_OR_RETURN(auto d_scores, cuda::DeviceBuffer<float>::Allocate(res, nq * k, "result scores"));

  const detail::DeviceBase device_base{base.vectors(), base.sq_norms(), d_deleted.data(), n, dim};
  QUIVER_RETURN_IF_ERROR(
      detail::SearchDevice(res, device_base, d_queries.data(), nq, params, d_rows.data(), d_scores.data()));
  const size_t results = nq * k;
  QUIVER_ASSIGN_OR_RETURN(void* down, cuda::Staging(res.impl().download_staging,
                                                    results * (sizeof(int64_t) + sizeof(float)), "result staging"));
  auto* staged_rows = static_cast<int64_t*>(down);
  auto* staged_scores = reinterpret_cast<float*>(staged_rows + results);
  QUIVER_RETURN_IF_ERROR(d_rows.CopyToHost(res, staged_rows, results));
  QUIVER_RETURN_IF_ERROR(d_scores.CopyToHost(res, staged_scores, results));
  QUIVER_RETURN_IF_ERROR(res.Synchronize());
  std::copy(staged_rows, staged_rows + results, rows);
  std::copy(staged_scores, staged_scores + results, scores);
  return Status::Ok();
}

Status FlatSearch(cuda::GpuResources& res, const BaseView& base, const float* queries, size_t nq,
                  const FlatSearchParams& params, int64_t* rows, float* scores) {
  QUIVER_RETURN_IF_ERROR(CheckArguments(base.rows, base.dim, base.sq_norms != nullptr, params));
  if (nq == 0) return Status::Ok();
  if (base.rows == 0) {
    detail::FillEmpty(params.metric, nq * params.k, rows, scores);
    return Status::Ok();
  }
  QUIVER_ASSIGN_OR_RETURN(DeviceFlatBase device_base, DeviceFlatBase::Upload(res, base, /*long_lived=*/false));
  return FlatSearch(res, device_base, base.deleted, queries, nq, params, rows, scores);
}

Status SelectK(cuda::GpuResources& res, const float* values, size_t rows, size_t len, size_t k, bool select_max,
               int64_t* out_columns, float* out_values) {
  QUIVER_RETURN_IF_ERROR(CheckK(k));
  if (len > static_cast<size_t>(std::numeric_limits<int32_t>::max()) ||
      rows > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return Status::InvalidArgument("SelectK takes fewer than 2^31 rows and columns");
  }
  if (rows == 0) return Status::Ok();
  QUIVER_CUDA_TRY(cudaSetDevice(res.device().impl().ordinal));
  cudaStream_t stream = res.impl().stream;
  QUIVER_ASSIGN_OR_RETURN(auto d_values, cuda::DeviceBuffer<float>::Allocate(res, rows * len, "select-k input"));
  QUIVER_RETURN_IF_ERROR(d_values.CopyFromHost(res, values, rows * len));
  QUIVER_ASSIGN_OR_RETURN(auto d_keys, cuda::DeviceBuffer<uint64_t>::Allocate(res, rows * k, "select-k keys"));
  QUIVER_ASSIGN_OR_RETURN(auto d_columns, cuda::DeviceBuffer<int64_t>::Allocate(res, rows * k, "select-k columns"));
  QUIVER_ASSIGN_OR_RETURN(auto d_out, cuda::DeviceBuffer<float>::Allocate(res, rows * k, "select-k values"));
  const ValueKeys keys{d_values.data(), len, select_max};
  QUIVER_RETURN_IF_ERROR(LaunchSelect(stream, keys, static_cast<int>(rows), static_cast<int>(len),
                                      static_cast<int>(k), d_keys.data(), k));
  const size_t count = rows * k;
  QUIVER_RETURN_IF_ERROR(detail::DecodeKeys(stream, d_keys.data(), count, select_max, d_columns.data(), d_out.data()));
  QUIVER_RETURN_IF_ERROR(d_columns.CopyToHost(res, out_columns, count));
  QUIVER_RETURN_IF_ERROR(d_out.CopyToHost(res, out_values, count));
  return res.Synchronize();
}

}  // namespace quiver::kernels::gpu
