// The LM head kernels and plan for the CPU emulator (library cf_kernels_emu).
#include "clusterfusion/kernels/lm_head/kernel.hpp"
#include "plan_impl.hpp"

CF_LM_HEAD_INSTANTIATE(f16, cf::dev::f16, cf::dev::f16)
CF_LM_HEAD_INSTANTIATE(bf16, cf::dev::bf16, cf::dev::bf16)
