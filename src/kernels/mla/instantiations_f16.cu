// The MLA block's kernels of f16 for sm_90a (library cf_kernels).
#include "clusterfusion/kernels/mla/kernel.hpp"
#include "kernel_select.hpp"

CF_MLA_INSTANTIATE(f16, cf::dev::f16)
