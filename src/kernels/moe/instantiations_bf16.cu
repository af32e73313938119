// The MoE kernels for bf16 weights and activations, sm_90a (library cf_kernels).
#include "clusterfusion/kernels/moe/kernel.hpp"
#include "kernel_select.hpp"

CF_MOE_INSTANTIATE(bf16, cf::dev::bf16, cf::dev::bf16)
