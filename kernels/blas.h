// Makes sure BLAS runs its fast kernels.
//
// Debian's OpenBLAS 0.3.21 picks its kernels at load time and does not know
// recent Xeons: it falls back to the Prescott (SSE3) kernels, 6x slower. Its
// choice is read from OPENBLAS_CORETYPE only while the library loads, before
// main(), so the fix is to set it and re-execute the program once.
#pragma once

#include <string>

namespace quiver::kernels {

/// Call first thing in main(). If OpenBLAS chose a generic core although the
/// CPU has AVX-512 (or AVX2), sets OPENBLAS_CORETYPE to SkylakeX (or Haswell)
/// and re-executes /proc/self/exe with the same arguments; otherwise returns.
/// Never re-executes twice (the variable is then already set). Also puts
/// OpenBLAS in single-threaded mode: our kernels parallelise around BLAS calls.
void EnsureFastBlas(char** argv);

/// The kernel family OpenBLAS runs, e.g. "Haswell", "SkylakeX", "Zen".
std::string BlasCoreName();

/// True if BlasCoreName() is a generic pre-AVX2 core on a CPU that has AVX2.
bool BlasOnSlowPath();

}  // namespace quiver::kernels
