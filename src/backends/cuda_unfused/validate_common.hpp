// Host-side checks shared by the params structs' validate(): one line naming the call, the field and what was
// expected (cf::InputError).
#pragma once
#include <cstdint>
#include <string>

#include "clusterfusion/backends/cuda_unfused/ops.hpp"

namespace cf::cuda_unfused::detail {

inline void require(bool ok, const char* where, const std::string& what) {
  if (!ok) throw InputError(std::string("cuda-unfused ") + where + ": " + what);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline void require_pointer(const void* p, const char* where, const char* name, bool vector_access) {
  require(p != nullptr, where, std::string(name) + " is null (expected a device pointer)");
  if (vector_access)
    require(aligned16(p), where, std::string(name) + " is not 16-byte aligned (expected cudaMalloc'ed or 16-byte aligned memory)");
}

inline void require_dtype(DType dtype, const char* where) {
  require(dtype == DType::F16 || dtype == DType::BF16, where,
          "dtype " + std::to_string(int(dtype)) + " is not supported (expected F16 or BF16)");
}

inline void require_tokens(int tokens, const char* where) {
  require(tokens >= 1 && tokens <= 65535, where,
          "token count " + std::to_string(tokens) + " out of range (expected 1..65535)");
}

}  // namespace cf::cuda_unfused::detail
