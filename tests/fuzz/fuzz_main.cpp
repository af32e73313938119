// libFuzzer driver of one target: CF_FUZZ_TARGET names the entry function (set per binary by CMake).
#include <cstddef>
#include <cstdint>

#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  cf::fuzz::CF_FUZZ_TARGET(data, size);
  return 0;
}
