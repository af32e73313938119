// The MoE kernels and plan for the CPU emulator (library cf_kernels_emu).
#include "clusterfusion/kernels/moe/kernel.hpp"
#include "plan_impl.hpp"

CF_MOE_INSTANTIATE(f16, cf::dev::f16, cf::dev::f16)
CF_MOE_INSTANTIATE(bf16, cf::dev::bf16, cf::dev::bf16)
