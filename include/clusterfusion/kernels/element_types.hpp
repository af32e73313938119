// The element types of a fused kernel's operands, kept apart so that a new weight format (FP8) is an addition, not
// a rewrite: weights (streamed; the tensor cores' A operand), activations (hidden, residual, outputs; the B operand)
// and the KV cache. Here the host side: the DTypes a plan is made for; on the device they are the kernels' template
// parameters TW, TA, TKV.
//
// Instantiated today: all three the same 16-bit type, F16 or BF16. A new combination is a new instantiation
// (src/kernels/<kernel>/instantiations_*.cu) plus, for a new weight type, the A-fragment conversion in
// pipeline/mma.hpp (load_a_k32).
#pragma once
#include <optional>
#include <string>

#include "clusterfusion/common/dtype.hpp"
#include "clusterfusion/common/error.hpp"
#include "clusterfusion/device/types.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE {

struct ElementTypes {
  DType weight = DType::F16;
  DType activation = DType::F16;
  DType kv = DType::F16;  // kernels without a KV cache: the activations'

  // A plan's fields: activations in `dtype`, weights / KV in their own types when set, else the activations'.
  static ElementTypes of(DType dtype, std::optional<DType> weight_dtype, std::optional<DType> kv_dtype = {}) {
    return {weight_dtype.value_or(dtype), dtype, kv_dtype.value_or(dtype)};
  }
  friend bool operator==(const ElementTypes&, const ElementTypes&) = default;
};

// Host check with the kernel's name: throws cf::InputError naming the field of a combination no kernel is
// instantiated for.
inline void validate_element_types(const char* kernel, const ElementTypes& t) {
  auto name = [](DType d) {
    return d == DType::F16 ? std::string("F16") : d == DType::BF16 ? std::string("BF16")
                                                : d == DType::F32 ? std::string("F32")
                                                                  : "type " + std::to_string(int(d));
  };
  const std::string where = std::string(kernel) + ": config: ";
  if (!dtype_is_half(t.activation)) throw InputError(where + "dtype must be F16 or BF16 (the activations' type)");
  if (t.weight != t.activation)
    throw InputError(where + "weight_dtype " + name(t.weight) + " with activations of " + name(t.activation) +
                     " is not supported (the weights must have the activations' type)");
  if (t.kv != t.activation)
    throw InputError(where + "kv_dtype " + name(t.kv) + " with activations of " + name(t.activation) +
                     " is not supported (the KV cache must have the activations' type)");
}

}  // namespace cf::kernels::inline CF_BUILD_NAMESPACE
