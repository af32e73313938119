// The LM head kernel instantiations, one translation unit per element type, found by the plan through
// select_kernel_f16 / select_kernel_bf16.
#pragma once
#include "clusterfusion/kernels/lm_head/kernel_params.hpp"

namespace cf::kernels::lm_head {

using KernelFn = void (*)(KernelParams);
KernelFn select_kernel_f16(int batch_tiles);
KernelFn select_kernel_bf16(int batch_tiles);

}  // namespace cf::kernels::lm_head

// Defines select_kernel_<NAME>(batch_tiles) and thereby instantiates the two kernels of element type T.
#define CF_LM_HEAD_DEFINE_KERNEL_SELECTOR(NAME, T)                                       \
  namespace cf::kernels::lm_head {                                                      \
  KernelFn select_kernel_##NAME(int batch_tiles) {                                      \
    return batch_tiles == 1 ? &lm_head_kernel<T, 1> : &lm_head_kernel<T, 2>;            \
  }                                                                                     \
  }
