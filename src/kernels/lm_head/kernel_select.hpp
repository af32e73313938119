// The LM head kernel instantiations, one translation unit per element-type combination (compile time stays
// bounded), found by the plan through select_kernel.
#pragma once
#include "clusterfusion/kernels/lm_head/kernel_params.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head {

using KernelFn = void (*)(KernelParams);
// lm_head_kernel<weights, activations, batch tiles> of one combination (defined by CF_LM_HEAD_INSTANTIATE).
KernelFn kernels_f16(int batch_tiles);
KernelFn kernels_bf16(int batch_tiles);
// The kernel of the plan's element types (validated: validate_element_types).
inline KernelFn select_kernel(const ElementTypes& t, int batch_tiles) {
  return t.activation == DType::F16 ? kernels_f16(batch_tiles) : kernels_bf16(batch_tiles);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head

// Defines kernels_<NAME>(batch_tiles) and thereby instantiates the two kernels of weights TW, activations TA.
#define CF_LM_HEAD_INSTANTIATE(NAME, TW, TA)                                              \
  namespace cf::kernels::inline CF_BUILD_NAMESPACE::lm_head {                            \
  KernelFn kernels_##NAME(int batch_tiles) {                                             \
    return batch_tiles == 1 ? &lm_head_kernel<TW, TA, 1> : &lm_head_kernel<TW, TA, 2>;   \
  }                                                                                      \
  }
