// The MoE kernels for f16 weights and activations, sm_90a (library cf_kernels).
#include "clusterfusion/kernels/moe/kernel.hpp"
#include "kernel_select.hpp"

CF_MOE_INSTANTIATE(f16, cf::dev::f16, cf::dev::f16)
