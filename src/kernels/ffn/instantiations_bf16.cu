// ffn_kernel<bf16, 1|2> for sm_90a (library cf_kernels).
#include "clusterfusion/kernels/ffn/kernel.hpp"
#include "kernel_select.hpp"

CF_FFN_DEFINE_KERNEL_SELECTOR(bf16, cf::dev::bf16)
