// The MLA block's kernels and plan for the CPU emulator (library cf_kernels_emu).
#include "clusterfusion/kernels/mla/kernel.hpp"
#include "plan_impl.hpp"

CF_MLA_INSTANTIATE(f16, cf::dev::f16)
CF_MLA_INSTANTIATE(bf16, cf::dev::bf16)
