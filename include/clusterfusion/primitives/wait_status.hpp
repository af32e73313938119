// The status word of the fused kernels' bounded waits (bounded_wait.hpp), both sides: how the device packs an
// expired wait into it and the error the host makes of it. Build-agnostic.
#pragma once
#include <cstdint>
#include <string>

#include "clusterfusion/device/types.hpp"

namespace cf::prim {

// The 64-bit word of an expired wait: the complement of (consequence, 1 bit | start in µs, 39 bits | code, 8 bits |
// block, 16 bits), so that atomic_max keeps the likeliest cause (bounded_wait.hpp) and 0 means "none".
CF_HOST_DEVICE constexpr uint64_t timeout_status(bool consequence, uint64_t start_ns, uint32_t code, uint32_t block) {
  return ~(uint64_t(consequence) << 63 | ((start_ns >> 10) & ((uint64_t(1) << 39) - 1)) << 24 |
           uint64_t(code & 0xffu) << 16 | (block & 0xffffu));
}
CF_HOST_DEVICE constexpr uint32_t timeout_code(uint64_t status) { return uint32_t(~status >> 16) & 0xffu; }
CF_HOST_DEVICE constexpr uint32_t timeout_block(uint64_t status) { return uint32_t(~status) & 0xffffu; }

// Host: the error of a launch whose status words (u32, as downloaded) hold an expiry at words[timeout_at] (two words)
// and possibly a failed drain at words[drain_at]; empty if no wait expired. site_name(code) names the kernel's wait.
inline std::string timeout_error(const std::string& kernel, const uint32_t* words, int timeout_at, int drain_at,
                                 int64_t budget_us, std::string (*site_name)(uint32_t)) {
  const uint64_t word = words[timeout_at] | uint64_t(words[timeout_at + 1]) << 32;
  if (word == 0) return {};
  const std::string budget = budget_us % 1000 == 0 ? std::to_string(budget_us / 1000) + " ms"
                                                   : std::to_string(budget_us) + " us";
  std::string m = kernel + ": a wait inside the kernel timed out after " + budget + " in block " +
                  std::to_string(timeout_block(word)) + ", " + site_name(timeout_code(word)) +
                  " (a hang: a bug, please report; this launch's outputs are garbage and the plan refuses further "
                  "launches)";
  if ((words[drain_at] | words[drain_at + 1]) != 0)
    m += "; a copy into shared memory was still in flight when the block ended, so the CUDA context may be "
         "corrupt: restart the process";
  return m;
}

}  // namespace cf::prim
