// decoder_attention_kernel<f16 weights, activations and KV cache, head_dim 64|128, 1|2 batch tiles> for sm_90a
// (library cf_kernels).
#include "clusterfusion/kernels/decoder_attention/kernel.hpp"
#include "kernel_select.hpp"

CF_DA_INSTANTIATE(f16, cf::dev::f16, cf::dev::f16, cf::dev::f16)
