// Makes sure BLAS runs its fast kernels.
//
// Debian's OpenBLAS 0.3.21 picks its kernels at load time and does not know
// recent Xeons: it falls back to the Prescott (SSE3) kernels, 6x slower. Its
// choice is read from OPENBLAS_CORETYPE only while the library loads, before
// main(), so the fix is to set it and re-execute the program once. Its worker
// threads are started at load too (one per core but the first), and each
// spins on sched_yield for ~0.1 s of CPU before it sleeps.
#pragma once

#include <string>

namespace quiver::kernels {

/// What EnsureFastBlas does with the worker threads OpenBLAS starts at load.
enum class BlasWorkers {
  /// Keep them, idle: a caller may lend them to BLAS later (the benchmarks
  /// give FAISS multi-threaded BLAS).
  kKeep,
  /// Start none (OPENBLAS_NUM_THREADS=1), unless OPENBLAS_NUM_THREADS was set
  /// already. For quiverd: its own threads call BLAS, and the workers' spin
  /// at start took CPU from the other nodes of a cluster sharing the host.
  kNone,
};

/// Call first thing in main(). If OpenBLAS chose a generic core although the
/// CPU has AVX-512 (or AVX2), sets OPENBLAS_CORETYPE to SkylakeX (or Haswell),
/// and if `workers` asks for none while OpenBLAS started some, sets
/// OPENBLAS_NUM_THREADS=1; then re-executes its own binary (the path behind
/// /proc/self/exe, so the process keeps its name) with the same arguments.
/// Otherwise returns. Never re-executes twice (the variables are then already
/// set). Also puts OpenBLAS in single-threaded mode: our kernels parallelise
/// around BLAS calls.
void EnsureFastBlas(char** argv, BlasWorkers workers = BlasWorkers::kKeep);

/// The kernel family OpenBLAS runs, e.g. "Haswell", "SkylakeX", "Zen".
std::string BlasCoreName();

/// True if BlasCoreName() is a generic pre-AVX2 core on a CPU that has AVX2.
bool BlasOnSlowPath();

}  // namespace quiver::kernels
