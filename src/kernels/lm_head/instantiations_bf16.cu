// lm_head_kernel<bf16 weights, bf16 activations, 1|2> for sm_90a (library cf_kernels).
#include "clusterfusion/kernels/lm_head/kernel.hpp"
#include "kernel_select.hpp"

CF_LM_HEAD_INSTANTIATE(bf16, cf::dev::bf16, cf::dev::bf16)
