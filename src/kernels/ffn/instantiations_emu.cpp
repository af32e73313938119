// The FFN kernels and plan for the CPU emulator (library cf_kernels_emu).
#include "clusterfusion/kernels/ffn/kernel.hpp"
#include "plan_impl.hpp"

CF_FFN_INSTANTIATE(f16, cf::dev::f16, cf::dev::f16)
CF_FFN_INSTANTIATE(bf16, cf::dev::bf16, cf::dev::bf16)
