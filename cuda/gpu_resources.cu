// CUDA build of the GPU runtime handles (cuda/gpu_resources.h).
#include <dlfcn.h>

#include <string>
#include <type_traits>
#include <utility>

#include "cuda/cuda_check.cuh"
#include "cuda/gpu_resources.h"

namespace quiver::cuda {

Status CudaError(cudaError_t err, const char* call) {
  (void)cudaGetLastError();  // clear the non-sticky error state
  std::string msg = std::string("CUDA error in ") + call + ": " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
  return err == cudaErrorMemoryAllocation ? Status::ResourceExhausted(std::move(msg)) : Status::Internal(std::move(msg));
}

// cuda/CMakeLists.txt passes the toolkit's soname and directory; these serve
// compiles outside it (scripts/gpu-resource-report.sh).
#ifndef QUIVER_CUBLAS_SONAME
#define QUIVER_CUBLAS_SONAME "libcublas.so"
#endif
#ifndef QUIVER_CUBLAS_DIR
#define QUIVER_CUBLAS_DIR "/usr/local/cuda/lib64"
#endif

namespace {
// The exported name of a cuBLAS function: cublas_v2.h maps several to a _v2
// symbol with a macro (cublasCreate is cublasCreate_v2).
#define QUIVER_CUBLAS_NAME(fn) QUIVER_CUBLAS_NAME_OF(fn)
#define QUIVER_CUBLAS_NAME_OF(fn) #fn

// Unevaluated: fails to compile if cuBLAS's signature no longer matches.
static_assert(sizeof(static_cast<CublasApi::GemmEx>(&cublasGemmEx)) > 0);

CublasApi cublas_api;

std::string DlError() {
  const char* e = dlerror();
  return e != nullptr ? e : "unknown error";
}

Status LoadCublasOnce() {
  // The soname first (LD_LIBRARY_PATH, the cache, the system directories),
  // then the toolkit this binary was built against.
  void* lib = dlopen(QUIVER_CUBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
  std::string errors;
  if (lib == nullptr) {
    errors = DlError();
    lib = dlopen(QUIVER_CUBLAS_DIR "/" QUIVER_CUBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
  }
  if (lib == nullptr) {
    return Status::Unavailable(std::string("cannot load cuBLAS (" QUIVER_CUBLAS_SONAME "): ") + errors + "; " +
                               DlError());
  }
  // Never unloaded: handles and kernels may outlive any one owner.
  std::string missing;
  auto resolve = [&](auto& slot, const char* name) {
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(dlsym(lib, name));
    if (slot == nullptr) missing += std::string(missing.empty() ? "" : ", ") + name;
  };
  resolve(cublas_api.create, QUIVER_CUBLAS_NAME(cublasCreate));
  resolve(cublas_api.destroy, QUIVER_CUBLAS_NAME(cublasDestroy));
  resolve(cublas_api.set_stream, QUIVER_CUBLAS_NAME(cublasSetStream));
  resolve(cublas_api.set_math_mode, QUIVER_CUBLAS_NAME(cublasSetMathMode));
  resolve(cublas_api.sgemm, QUIVER_CUBLAS_NAME(cublasSgemm));
  resolve(cublas_api.gemm_ex, QUIVER_CUBLAS_NAME(cublasGemmEx));
  resolve(cublas_api.status_name, QUIVER_CUBLAS_NAME(cublasGetStatusName));
  resolve(cublas_api.status_string, QUIVER_CUBLAS_NAME(cublasGetStatusString));
  if (!missing.empty()) return Status::Unavailable(QUIVER_CUBLAS_SONAME " lacks " + missing);
  return Status::Ok();
}
}  // namespace

Status LoadCublas() {
  static const Status loaded = LoadCublasOnce();  // once per process, thread-safe
  return loaded;
}

const CublasApi& Cublas() { return cublas_api; }

Status CublasError(cublasStatus_t err, const char* call) {
  std::string msg = std::string("cuBLAS error in ") + call + ": " + Cublas().status_name(err) + ": " +
                    Cublas().status_string(err);
  return err == CUBLAS_STATUS_ALLOC_FAILED ? Status::ResourceExhausted(std::move(msg))
                                           : Status::Internal(std::move(msg));
}

// ---- GpuDevice ----

GpuDevice::GpuDevice(const GpuOptions& options, std::unique_ptr<Impl> impl, std::string name, size_t budget)
    : options_(options), impl_(std::move(impl)), name_(std::move(name)), budget_bytes_(budget) {}

Result<std::shared_ptr<GpuDevice>> GpuDevice::Open(const GpuOptions& options) {
  int count = 0;
  if (const cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
    // "driver version is insufficient" without a driver: any error means no GPU.
    return Status::Unavailable(CudaError(err, "cudaGetDeviceCount").message());
  }
  if (options.device < 0 || options.device >= count) {
    return Status::Unavailable("GPU " + std::to_string(options.device) + " requested, " + std::to_string(count) +
                               " present");
  }
  // Only once a device answers: a host without one never loads cuBLAS.
  QUIVER_RETURN_IF_ERROR(LoadCublas());
  auto unavailable = [](const Status& st) { return Status::Unavailable(st.message()); };
  auto impl = std::make_unique<Impl>();
  impl->ordinal = options.device;
  if (const cudaError_t err = cudaSetDevice(impl->ordinal); err != cudaSuccess) {
    return unavailable(CudaError(err, "cudaSetDevice"));
  }
  cudaDeviceProp prop{};
  if (const cudaError_t err = cudaGetDeviceProperties(&prop, impl->ordinal); err != cudaSuccess) {
    return unavailable(CudaError(err, "cudaGetDeviceProperties"));
  }
  int pools_supported = 0;
  (void)cudaDeviceGetAttribute(&pools_supported, cudaDevAttrMemoryPoolsSupported, impl->ordinal);
  if (!pools_supported) return Status::Unavailable(std::string(prop.name) + " has no stream-ordered memory pools");
  size_t free_bytes = 0, total_bytes = 0;
  if (const cudaError_t err = cudaMemGetInfo(&free_bytes, &total_bytes); err != cudaSuccess) {
    return unavailable(CudaError(err, "cudaMemGetInfo"));
  }
  const size_t budget = options.memory_budget_bytes > 0 ? options.memory_budget_bytes : free_bytes / 10 * 9;

  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = impl->ordinal;
  if (const cudaError_t err = cudaMemPoolCreate(&impl->pool, &props); err != cudaSuccess) {
    return unavailable(CudaError(err, "cudaMemPoolCreate"));
  }
  // Freed blocks stay in the pool up to the budget instead of going back to
  // the driver at every synchronisation.
  uint64_t threshold = budget;
  if (const cudaError_t err = cudaMemPoolSetAttribute(impl->pool, cudaMemPoolAttrReleaseThreshold, &threshold);
      err != cudaSuccess) {
    (void)cudaMemPoolDestroy(impl->pool);
    return unavailable(CudaError(err, "cudaMemPoolSetAttribute"));
  }
  if (const cudaError_t err = cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking); err != cudaSuccess) {
    (void)cudaMemPoolDestroy(impl->pool);
    return unavailable(CudaError(err, "cudaStreamCreateWithFlags"));
  }
  impl->multiprocessors = prop.multiProcessorCount;
  impl->shared_per_block_optin = prop.sharedMemPerBlockOptin;
  GpuOptions resolved = options;
  if (resolved.flat_gemm == FlatGemm::kAuto) {
    resolved.flat_gemm = prop.major >= 8 ? FlatGemm::kTf32x3 : FlatGemm::kFp32;
  }
  return std::shared_ptr<GpuDevice>(new GpuDevice(resolved, std::move(impl), prop.name, budget));
}

GpuDevice::~GpuDevice() {
  (void)cudaSetDevice(impl_->ordinal);
  (void)cudaStreamSynchronize(impl_->stream);
  (void)cudaStreamDestroy(impl_->stream);
  (void)cudaMemPoolDestroy(impl_->pool);
}

bool GpuDevice::Reserve(size_t bytes) {
  size_t used = bytes_in_use_.load(std::memory_order_relaxed);
  do {
    if (bytes > budget_bytes_ || used > budget_bytes_ - bytes) return false;
  } while (!bytes_in_use_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
  size_t peak = peak_bytes_.load(std::memory_order_relaxed);
  while (used + bytes > peak && !peak_bytes_.compare_exchange_weak(peak, used + bytes, std::memory_order_relaxed)) {
  }
  return true;
}

void GpuDevice::Unreserve(size_t bytes) { bytes_in_use_.fetch_sub(bytes, std::memory_order_relaxed); }

Result<std::unique_ptr<GpuResources>> GpuDevice::NewResources() {
  QUIVER_CUDA_TRY(cudaSetDevice(impl_->ordinal));
  auto impl = std::make_unique<GpuResources::Impl>();
  QUIVER_CUDA_TRY(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking));
  if (const cudaError_t err = cudaStreamCreateWithFlags(&impl->side_stream, cudaStreamNonBlocking);
      err != cudaSuccess) {
    (void)cudaStreamDestroy(impl->stream);
    return CudaError(err, "cudaStreamCreateWithFlags");
  }
  if (const cublasStatus_t err = Cublas().create(&impl->cublas); err != CUBLAS_STATUS_SUCCESS) {
    (void)cudaStreamDestroy(impl->side_stream);
    (void)cudaStreamDestroy(impl->stream);
    return CublasError(err, "cublasCreate");
  }
  // Plain FP32 GEMM unless a call asks for a compute type (FlatGemm::kTf32x3
  // asks for TF32 on split values): scores must match the CPU's within 1e-4.
  Status st = [&]() -> Status {
    QUIVER_CUBLAS_TRY(Cublas().set_stream(impl->cublas, impl->stream));
    QUIVER_CUBLAS_TRY(Cublas().set_math_mode(impl->cublas, CUBLAS_DEFAULT_MATH));
    return Status::Ok();
  }();
  if (!st.ok()) {
    (void)Cublas().destroy(impl->cublas);
    (void)cudaStreamDestroy(impl->side_stream);
    (void)cudaStreamDestroy(impl->stream);
    return st;
  }
  return std::unique_ptr<GpuResources>(new GpuResources(shared_from_this(), std::move(impl)));
}

// ---- GpuResources ----

GpuResources::GpuResources(std::shared_ptr<GpuDevice> device, std::unique_ptr<Impl> impl)
    : device_(std::move(device)), impl_(std::move(impl)) {}

GpuResources::~GpuResources() {
  (void)cudaSetDevice(device_->impl().ordinal);
  (void)cudaStreamSynchronize(impl_->side_stream);
  (void)cudaStreamSynchronize(impl_->stream);
  (void)Cublas().destroy(impl_->cublas);
  (void)cudaStreamDestroy(impl_->side_stream);
  (void)cudaStreamDestroy(impl_->stream);
}

Status GpuResources::Synchronize() {
  QUIVER_CUDA_TRY(cudaStreamSynchronize(impl_->stream));
  return Status::Ok();
}

// ---- DeviceMemory ----

namespace {

Status AllocateOn(GpuDevice& device, cudaStream_t stream, size_t bytes, const char* what, void** data) {
  if (!device.Reserve(bytes)) {
    return Status::ResourceExhausted("GPU memory budget: " + std::string(what) + " needs " + std::to_string(bytes) +
                                     " bytes, " + std::to_string(device.bytes_in_use()) + " of " +
                                     std::to_string(device.budget_bytes()) + " in use");
  }
  cudaError_t err = cudaSetDevice(device.impl().ordinal);
  if (err == cudaSuccess) err = cudaMallocFromPoolAsync(data, bytes, device.impl().pool, stream);
  if (err != cudaSuccess) {
    device.Unreserve(bytes);
    return CudaError(err, (std::string("cudaMallocFromPoolAsync for ") + what).c_str());
  }
  return Status::Ok();
}

}  // namespace

Result<DeviceMemory> DeviceMemory::Allocate(GpuResources& res, size_t bytes, const char* what) {
  DeviceMemory out;
  out.device_ = res.device().shared_from_this();
  out.stream_ = res.impl().stream;
  if (bytes == 0) return std::move(out);
  QUIVER_RETURN_IF_ERROR(AllocateOn(res.device(), res.impl().stream, bytes, what, &out.data_));
  out.bytes_ = bytes;
  return std::move(out);
}

Result<DeviceMemory> DeviceMemory::AllocateLongLived(GpuDevice& device, size_t bytes, const char* what) {
  DeviceMemory out;
  out.device_ = device.shared_from_this();
  out.stream_ = device.impl().stream;
  out.long_lived_ = true;
  if (bytes == 0) return std::move(out);
  QUIVER_RETURN_IF_ERROR(AllocateOn(device, device.impl().stream, bytes, what, &out.data_));
  out.bytes_ = bytes;
  // Usable from any stream once the allocation has happened.
  QUIVER_CUDA_TRY(cudaStreamSynchronize(device.impl().stream));
  return std::move(out);
}

void DeviceMemory::Release() {
  if (data_ == nullptr) return;
  (void)cudaSetDevice(device_->impl().ordinal);
  // Long-lived memory may be read by any stream: wait for all of them.
  if (long_lived_) (void)cudaDeviceSynchronize();
  (void)cudaFreeAsync(data_, static_cast<cudaStream_t>(stream_));
  device_->Unreserve(bytes_);
  data_ = nullptr;
  bytes_ = 0;
}

Status DeviceMemory::CopyFromHost(GpuResources& res, const void* src, size_t bytes) {
  if (bytes > bytes_) return Status::InvalidArgument("copy of " + std::to_string(bytes) + " bytes into " +
                                                     std::to_string(bytes_));
  if (bytes == 0) return Status::Ok();
  QUIVER_CUDA_TRY(cudaMemcpyAsync(data_, src, bytes, cudaMemcpyHostToDevice, res.impl().stream));
  return Status::Ok();
}

Status DeviceMemory::CopyToHost(GpuResources& res, void* dst, size_t bytes) const {
  if (bytes > bytes_) return Status::InvalidArgument("copy of " + std::to_string(bytes) + " bytes from " +
                                                     std::to_string(bytes_));
  if (bytes == 0) return Status::Ok();
  QUIVER_CUDA_TRY(cudaMemcpyAsync(dst, data_, bytes, cudaMemcpyDeviceToHost, res.impl().stream));
  return Status::Ok();
}

// ---- PinnedMemory ----

Result<PinnedMemory> PinnedMemory::Allocate(size_t bytes, const char* what) {
  PinnedMemory out;
  if (bytes == 0) return std::move(out);
  if (const cudaError_t err = cudaMallocHost(&out.data_, bytes); err != cudaSuccess) {
    return CudaError(err, (std::string("cudaMallocHost for ") + what).c_str());
  }
  out.bytes_ = bytes;
  return std::move(out);
}

Result<void*> Staging(PinnedMemory& staging, size_t bytes, const char* what) {
  if (staging.bytes() < bytes) {
    size_t grown = 4096;
    while (grown < bytes) grown *= 2;
    staging = PinnedMemory();  // released first: two copies need not coexist
    QUIVER_ASSIGN_OR_RETURN(staging, PinnedMemory::Allocate(grown, what));
  }
  return staging.data();
}

void PinnedMemory::Release() {
  if (data_ != nullptr) (void)cudaFreeHost(data_);
  data_ = nullptr;
  bytes_ = 0;
}

}  // namespace quiver::cuda
