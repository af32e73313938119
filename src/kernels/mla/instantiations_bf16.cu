// The MLA block's kernels of bf16 for sm_90a (library cf_kernels).
#include "clusterfusion/kernels/mla/kernel.hpp"
#include "kernel_select.hpp"

CF_MLA_INSTANTIATE(bf16, cf::dev::bf16)
