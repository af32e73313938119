#include "isa.hpp"

#include <string>

#include "clusterfusion/common/error.hpp"

namespace cf::cpu {

namespace {

Isa detect() {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  // __builtin_cpu_supports also checks that the operating system saves the wider registers (XCR0).
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512vnni");
  if (avx512) return Isa::Avx512;
  if (avx2) return Isa::Avx2;
#endif
  return Isa::Portable;
}

}  // namespace

Isa best_isa() {
  static const Isa isa = detect();
  return isa;
}

bool isa_supported(Isa isa) { return uint8_t(isa) <= uint8_t(best_isa()); }

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Portable: return "portable";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "?";
}

std::optional<Isa> isa_from_name(std::string_view name) {
  for (const Isa isa : {Isa::Portable, Isa::Avx2, Isa::Avx512})
    if (name == isa_name(isa)) return isa;
  return std::nullopt;
}

Isa resolve_isa(std::string_view requested) {
  if (requested.empty() || requested == "auto") return best_isa();
  const auto isa = isa_from_name(requested);
  if (!isa)
    throw InputError("cpu instruction set '" + std::string(requested) +
                     "' is unknown (known: auto, avx512, avx2, portable)");
  if (!isa_supported(*isa))
    throw InputError("cpu instruction set '" + std::string(requested) + "' is not supported by this CPU (best: " +
                     isa_name(best_isa()) + ")");
  return *isa;
}

}  // namespace cf::cpu
