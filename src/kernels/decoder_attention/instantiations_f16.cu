// decoder_attention_kernel<f16, 64|128, 1|2> for sm_90a (library cf_kernels).
#include "clusterfusion/kernels/decoder_attention/kernel.hpp"
#include "kernel_select.hpp"

CF_DA_DEFINE_KERNEL_SELECTOR(f16, cf::dev::f16)
