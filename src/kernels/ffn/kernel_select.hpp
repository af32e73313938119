// The FFN kernel instantiations, one translation unit per element type (compile time stays bounded), found by the
// plan through select_kernel_f16 / select_kernel_bf16.
#pragma once
#include "clusterfusion/kernels/ffn/kernel_params.hpp"

namespace cf::kernels::ffn {

using KernelFn = void (*)(KernelParams);
// ffn_kernel<T, batch_tiles> for T = f16 / bf16 (defined by CF_FFN_DEFINE_KERNEL_SELECTOR).
KernelFn select_kernel_f16(int batch_tiles);
KernelFn select_kernel_bf16(int batch_tiles);

}  // namespace cf::kernels::ffn

// Defines select_kernel_<NAME>(batch_tiles) and thereby instantiates the two kernels of element type T.
#define CF_FFN_DEFINE_KERNEL_SELECTOR(NAME, T)                                           \
  namespace cf::kernels::ffn {                                                          \
  KernelFn select_kernel_##NAME(int batch_tiles) {                                      \
    return batch_tiles == 1 ? &ffn_kernel<T, 1> : &ffn_kernel<T, 2>;                    \
  }                                                                                     \
  }
