// The kernels in plain C++ (every CPU; the reference for the vector levels, which compute the same bits).
#include "simd_portable.hpp"
#include "kernels_impl.hpp"

namespace cf::cpu {

const KernelTable& portable_kernels() {
  static const KernelTable table = make_table<Portable>(Isa::Portable);
  return table;
}

}  // namespace cf::cpu
