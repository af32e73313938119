// The decoder attention kernels and plan for the CPU emulator (library cf_kernels_emu).
#include "clusterfusion/kernels/decoder_attention/kernel.hpp"
#include "plan_impl.hpp"

CF_DA_INSTANTIATE(f16, cf::dev::f16, cf::dev::f16, cf::dev::f16)
CF_DA_INSTANTIATE(bf16, cf::dev::bf16, cf::dev::bf16, cf::dev::bf16)
