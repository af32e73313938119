// The kernel instantiations, one translation unit per element type (compile time stays bounded), found by the plan
// through select_kernel_f16 / select_kernel_bf16.
#pragma once
#include "clusterfusion/kernels/decoder_attention/kernel_params.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {

using KernelFn = void (*)(KernelParams);
// decoder_attention_kernel<T, head_dim, batch_tiles> for T = f16 / bf16 (defined by CF_DA_DEFINE_KERNEL_SELECTOR).
KernelFn select_kernel_f16(int head_dim, int batch_tiles);
KernelFn select_kernel_bf16(int head_dim, int batch_tiles);

}  // namespace cf::kernels::decoder_attention

// Defines select_kernel_<NAME>(head_dim, batch_tiles) and thereby instantiates the four kernels of element type T.
#define CF_DA_DEFINE_KERNEL_SELECTOR(NAME, T)                                                        \
  namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {                                                     \
  KernelFn select_kernel_##NAME(int head_dim, int batch_tiles) {                                    \
    if (head_dim == 128)                                                                            \
      return batch_tiles == 1 ? &decoder_attention_kernel<T, 128, 1> : &decoder_attention_kernel<T, 128, 2>; \
    return batch_tiles == 1 ? &decoder_attention_kernel<T, 64, 1> : &decoder_attention_kernel<T, 64, 2>;    \
  }                                                                                                 \
  }
