// lm_head_kernel<f16, 1|2> for sm_90a (library cf_kernels).
#include "clusterfusion/kernels/lm_head/kernel.hpp"
#include "kernel_select.hpp"

CF_LM_HEAD_DEFINE_KERNEL_SELECTOR(f16, cf::dev::f16)
