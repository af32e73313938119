// Instruction-set levels of the cpu backend's kernels and their run-time detection. Every level computes the same
// bits (kernels_impl.hpp defines one order of operations for all of them); higher levels only compute them faster.
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace cf::cpu {

enum class Isa : uint8_t {
  Portable,  // plain C++ (any CPU; the compiler's own vectorisation)
  Avx2,      // AVX2 + FMA + F16C (x86-64-v3: Haswell, Zen 1 and later)
  Avx512,    // AVX-512 F/BW/VL/DQ + VNNI (Ice Lake, Sapphire Rapids, Zen 4 and later)
};

Isa best_isa();                // the highest level this CPU and operating system support
bool isa_supported(Isa isa);   // isa <= best_isa()
const char* isa_name(Isa isa);  // "portable", "avx2", "avx512"
std::optional<Isa> isa_from_name(std::string_view name);

// The level a backend option asks for: "" or "auto" = best_isa(); a named level the CPU lacks, or an unknown name,
// throws cf::InputError saying what this CPU has.
Isa resolve_isa(std::string_view requested);

}  // namespace cf::cpu
