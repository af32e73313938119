// ffn_kernel<f16 weights, f16 activations, 1|2> for sm_90a (library cf_kernels).
#include "clusterfusion/kernels/ffn/kernel.hpp"
#include "kernel_select.hpp"

CF_FFN_INSTANTIATE(f16, cf::dev::f16, cf::dev::f16)
