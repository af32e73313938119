// The kernels with AVX2 + FMA + F16C (this file alone is compiled with them; kernels.cpp hands out its table only
// when the CPU has them).
#include "simd_avx2.hpp"
#include "kernels_impl.hpp"

namespace cf::cpu {

const KernelTable& avx2_kernels() {
  static const KernelTable table = make_table<Avx2>(Isa::Avx2);
  return table;
}

}  // namespace cf::cpu
