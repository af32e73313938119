// The kernel instantiations, one translation unit per element-type combination (compile time stays bounded), found
// by the plan through select_kernel.
#pragma once
#include "clusterfusion/kernels/decoder_attention/kernel_params.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {

using KernelFn = void (*)(KernelParams);
// decoder_attention_kernel<weights, activations, KV, head_dim, batch tiles> of one combination (CF_DA_INSTANTIATE).
KernelFn kernels_f16(int head_dim, int batch_tiles);
KernelFn kernels_bf16(int head_dim, int batch_tiles);
// The kernel of the plan's element types (validated: validate_element_types).
inline KernelFn select_kernel(const ElementTypes& t, int head_dim, int batch_tiles) {
  return t.activation == DType::F16 ? kernels_f16(head_dim, batch_tiles) : kernels_bf16(head_dim, batch_tiles);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention

// Defines kernels_<NAME>(head_dim, batch_tiles) and thereby instantiates the four kernels of weights TW, activations
// TA and KV cache TKV.
#define CF_DA_INSTANTIATE(NAME, TW, TA, TKV)                                                       \
  namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {                           \
  template <int kHd>                                                                              \
  KernelFn kernels_##NAME##_hd(int batch_tiles) {                                                 \
    return batch_tiles == 1 ? &decoder_attention_kernel<TW, TA, TKV, kHd, 1>                      \
                            : &decoder_attention_kernel<TW, TA, TKV, kHd, 2>;                     \
  }                                                                                               \
  KernelFn kernels_##NAME(int head_dim, int batch_tiles) {                                        \
    return head_dim == 128 ? kernels_##NAME##_hd<128>(batch_tiles) : kernels_##NAME##_hd<64>(batch_tiles); \
  }                                                                                               \
  }
