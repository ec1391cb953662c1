// Distance primitives with run-time dispatch: the best of AVX-512, AVX2+FMA and
// portable scalar code that the CPU supports, chosen once at first use.
// QUIVER_SIMD=scalar|avx2|avx512 forces a lower level (for tests and A/B runs);
// a level the CPU lacks is refused and the detected one kept.
#pragma once

#include <cstddef>

namespace quiver::kernels {

enum class SimdLevel { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* SimdLevelName(SimdLevel level);

/// What this CPU supports (ignores QUIVER_SIMD).
SimdLevel DetectSimdLevel();

/// The level in use: DetectSimdLevel() lowered by QUIVER_SIMD if set.
SimdLevel ActiveSimdLevel();

struct DistanceFns {
  float (*dot)(const float* a, const float* b, size_t n);
  float (*l2_sq)(const float* a, const float* b, size_t n);
};

/// The implementations for `level`; the level must be supported by the CPU.
const DistanceFns& DistanceFnsFor(SimdLevel level);

/// DistanceFnsFor(ActiveSimdLevel()).
const DistanceFns& ActiveDistanceFns();

}  // namespace quiver::kernels
