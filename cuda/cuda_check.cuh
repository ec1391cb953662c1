// CUDA-side internals of cuda/: the Impl structs behind GpuDevice and
// GpuResources, and the macros that turn every CUDA and cuBLAS error into a
// Status naming the call. Included only by .cu files (cuda/, kernels/gpu).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "common/status.h"
#include "cuda/gpu_resources.h"

namespace quiver::cuda {

struct GpuDevice::Impl {
  int ordinal = 0;
  cudaMemPool_t pool = nullptr;
  cudaStream_t stream = nullptr;  // long-lived allocations and their frees
  // Read once at Open: a small search must not pay for driver queries.
  int multiprocessors = 0;
  size_t shared_per_block_optin = 0;  // bytes of shared memory a block may opt in to
};

struct GpuResources::Impl {
  cudaStream_t stream = nullptr;
  // Work a call overlaps with its own work on `stream` (FLAT's select-k
  // while the next GEMM runs), ordered against it with events; the call
  // joins it back into `stream` before it returns.
  cudaStream_t side_stream = nullptr;
  cublasHandle_t cublas = nullptr;
  // Page-locked staging for a call's small copies (queries in, results out):
  // copies from pageable memory go through the driver's own bounce buffer
  // and cost several microseconds more each, which a batch of 10 queries
  // notices. Reused by the next call on this stream, which is the same thread.
  PinnedMemory upload_staging;
  PinnedMemory download_staging;
};

/// At least `bytes` of `staging` (grown to the next power of two when too
/// small). The caller synchronises its stream before the next call reuses it.
Result<void*> Staging(PinnedMemory& staging, size_t bytes, const char* what);

/// cuBLAS's entry points. quiverd does not link libcublas: it is opened with
/// dlopen when the first GPU is (GpuDevice::Open, through LoadCublas), so a
/// host without a GPU neither needs the library installed nor pays for
/// loading it (cuBLASLt's static initialisers touched ~84 MB at every start,
/// twice with the OpenBLAS re-execution). The types come from cublas_v2.h, so
/// a changed signature fails to compile.
struct CublasApi {
  decltype(&cublasCreate) create = nullptr;
  decltype(&cublasDestroy) destroy = nullptr;
  decltype(&cublasSetStream) set_stream = nullptr;
  decltype(&cublasSetMathMode) set_math_mode = nullptr;
  decltype(&cublasSgemm) sgemm = nullptr;
  // The exported cublasGemmEx (cublas_api.h adds a C++ overload taking the
  // legacy cudaDataType compute type); gpu_resources.cu checks the match.
  using GemmEx = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                    const void*, const void*, cudaDataType, int, const void*, cudaDataType, int,
                                    const void*, void*, cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  GemmEx gemm_ex = nullptr;
  decltype(&cublasGetStatusName) status_name = nullptr;
  decltype(&cublasGetStatusString) status_string = nullptr;
};

/// The loaded entry points; only after LoadCublas() succeeded (every open
/// GpuDevice implies it).
const CublasApi& Cublas();

/// RESOURCE_EXHAUSTED for out-of-memory, INTERNAL otherwise; the message names
/// the call and CUDA's error name. Clears CUDA's last-error state so one
/// failure is reported once.
Status CudaError(cudaError_t err, const char* call);
Status CublasError(cublasStatus_t err, const char* call);

/// The first error of the kernels launched so far on this thread (launch
/// configuration errors appear at once; faults during execution appear at the
/// next synchronisation).
inline Status CheckLaunch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? Status::Ok() : CudaError(err, kernel);
}

/// A CUDA event without timing, destroyed with its owner.
class Event {
 public:
  Event() = default;
  ~Event() {
    if (event_ != nullptr) (void)cudaEventDestroy(event_);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  Status Create() {
    if (const cudaError_t err = cudaEventCreateWithFlags(&event_, cudaEventDisableTiming); err != cudaSuccess) {
      event_ = nullptr;
      return CudaError(err, "cudaEventCreateWithFlags");
    }
    return Status::Ok();
  }
  /// Marks what `stream` has queued so far.
  Status Record(cudaStream_t stream) {
    const cudaError_t err = cudaEventRecord(event_, stream);
    return err == cudaSuccess ? Status::Ok() : CudaError(err, "cudaEventRecord");
  }
  /// Makes `stream` wait for the work marked by the last Record.
  Status WaitIn(cudaStream_t stream) {
    const cudaError_t err = cudaStreamWaitEvent(stream, event_, 0);
    return err == cudaSuccess ? Status::Ok() : CudaError(err, "cudaStreamWaitEvent");
  }
  /// Makes `waiter` wait for what `signaller` has queued so far.
  Status Order(cudaStream_t signaller, cudaStream_t waiter) {
    QUIVER_RETURN_IF_ERROR(Record(signaller));
    return WaitIn(waiter);
  }

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace quiver::cuda

/// Returns a Status naming `call` from the enclosing function if it fails.
#define QUIVER_CUDA_TRY(call)                                                     \
  do {                                                                            \
    const cudaError_t _quiver_cuda_err = (call);                                  \
    if (_quiver_cuda_err != cudaSuccess) return ::quiver::cuda::CudaError(_quiver_cuda_err, #call); \
  } while (0)

#define QUIVER_CUBLAS_TRY(call)                                                       \
  do {                                                                                \
    const cublasStatus_t _quiver_cublas_err = (call);                                 \
    if (_quiver_cublas_err != CUBLAS_STATUS_SUCCESS) return ::quiver::cuda::CublasError(_quiver_cublas_err, #call); \
  } while (0)
