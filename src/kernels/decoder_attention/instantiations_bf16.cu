// decoder_attention_kernel<bf16 weights, activations and KV cache, head_dim 64|128, 1|2 batch tiles> for sm_90a
// (library cf_kernels).
#include "clusterfusion/kernels/decoder_attention/kernel.hpp"
#include "kernel_select.hpp"

CF_DA_INSTANTIATE(bf16, cf::dev::bf16, cf::dev::bf16, cf::dev::bf16)
