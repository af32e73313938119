// The MLA block's kernel instantiations, one translation unit per element type (compile time stays bounded), found
// by the plan through select_rows_kernel / select_attention_kernel.
#pragma once
#include "clusterfusion/kernels/mla/kernel_params.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {

using RowsFn = void (*)(RowsParams);
using AttentionFn = void (*)(AttentionParams);
using UvFn = void (*)(UvParams);
// rows_kernel<T, T, batch tiles> and attention_kernel<T> of one type (defined by CF_MLA_INSTANTIATE).
RowsFn rows_kernels_f16(int batch_tiles);
RowsFn rows_kernels_bf16(int batch_tiles);
AttentionFn attention_kernel_f16();
AttentionFn attention_kernel_bf16();
UvFn uv_kernels_f16(int batch_tiles);
UvFn uv_kernels_bf16(int batch_tiles);
// The kernels of the plan's element types (validated: validate_element_types).
inline RowsFn select_rows_kernel(const ElementTypes& t, int batch_tiles) {
  return t.activation == DType::F16 ? rows_kernels_f16(batch_tiles) : rows_kernels_bf16(batch_tiles);
}
inline AttentionFn select_attention_kernel(const ElementTypes& t) {
  return t.activation == DType::F16 ? attention_kernel_f16() : attention_kernel_bf16();
}
inline UvFn select_uv_kernel(const ElementTypes& t, int batch_tiles) {
  return t.activation == DType::F16 ? uv_kernels_f16(batch_tiles) : uv_kernels_bf16(batch_tiles);
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla

// Defines rows_kernels_<NAME>(batch_tiles), attention_kernel_<NAME>() and uv_kernels_<NAME>(batch_tiles), and thereby
// instantiates the kernels of T.
#define CF_MLA_INSTANTIATE(NAME, T)                                                  \
  namespace cf::kernels::inline CF_BUILD_NAMESPACE::mla {                           \
  RowsFn rows_kernels_##NAME(int batch_tiles) {                                     \
    return batch_tiles == 1 ? &rows_kernel<T, T, 1> : &rows_kernel<T, T, 2>;        \
  }                                                                                 \
  AttentionFn attention_kernel_##NAME() { return &attention_kernel<T>; }            \
  UvFn uv_kernels_##NAME(int batch_tiles) {                                         \
    return batch_tiles == 1 ? &uv_kernel<T, 1> : &uv_kernel<T, 2>;                  \
  }                                                                                 \
  }
