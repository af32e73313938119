// ffn_kernel<bf16 weights, bf16 activations, 1|2> for sm_90a (library cf_kernels).
#include "clusterfusion/kernels/ffn/kernel.hpp"
#include "kernel_select.hpp"

CF_FFN_INSTANTIATE(bf16, cf::dev::bf16, cf::dev::bf16)
