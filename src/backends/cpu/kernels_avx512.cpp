// The kernels with AVX-512 F/BW/VL/DQ + VNNI (this file alone is compiled with them; kernels.cpp hands out its
// table only when the CPU has them).
// GCC 12's AVX-512 headers build unmasked intrinsics from _mm512_undefined_*(), which -Wmaybe-uninitialized reports
// once inlined at -O3 (a known false positive of the headers, not of this code).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "simd_avx512.hpp"
#include "kernels_impl.hpp"

namespace cf::cpu {

const KernelTable& avx512_kernels() {
  static const KernelTable table = make_table<Avx512>(Isa::Avx512);
  return table;
}

}  // namespace cf::cpu
