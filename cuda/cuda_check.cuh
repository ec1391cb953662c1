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
};

struct GpuResources::Impl {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
};

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
