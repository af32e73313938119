// ffn_kernel<f16, 1|2> for sm_90a (library cf_kernels).
#include "clusterfusion/kernels/ffn/kernel.hpp"
#include "kernel_select.hpp"

CF_FFN_DEFINE_KERNEL_SELECTOR(f16, cf::dev::f16)
