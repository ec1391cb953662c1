// GoogleTest main for every Quiver test binary: BLAS on its fast kernels
// first, as in quiverd, so the tests exercise what ships.
#include <gtest/gtest.h>

#include "kernels/blas.h"

int main(int argc, char** argv) {
  quiver::kernels::EnsureFastBlas(argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
