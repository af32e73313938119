// The MoE kernel instantiations, one translation unit per element-type combination (compile time stays bounded),
// found by the plan through select_kernels.
#pragma once
#include "clusterfusion/kernels/moe/kernel_params.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe {

using KernelFn = void (*)(KernelParams);
// The three kernels of one element-type combination; the expert kernels for one and two batch tiles.
struct Kernels {
  KernelFn router;
  KernelFn gate_up[2];
  KernelFn down[2];
};
Kernels kernels_f16();
Kernels kernels_bf16();
// The kernels of the plan's element types (validated: validate_element_types).
inline Kernels select_kernels(const ElementTypes& t) {
  return t.activation == DType::F16 ? kernels_f16() : kernels_bf16();
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe

// Defines kernels_<NAME>() and thereby instantiates the kernels of weights TW, activations TA.
#define CF_MOE_INSTANTIATE(NAME, TW, TA)                                                        \
  namespace cf::kernels::inline CF_BUILD_NAMESPACE::moe {                                      \
  Kernels kernels_##NAME() {                                                                   \
    return {&moe_router_kernel<TA>,                                                            \
            {&moe_gate_up_kernel<TW, TA, 1>, &moe_gate_up_kernel<TW, TA, 2>},                  \
            {&moe_down_kernel<TW, TA, 1>, &moe_down_kernel<TW, TA, 2>}};                       \
  }                                                                                            \
  }
