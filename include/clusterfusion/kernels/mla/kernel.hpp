// Device code of the fused MLA decode block (docs/mla.md §1.5): the row kernel (projections + absorption + latent
// append; output projection), the split-KV latent attention and the W_UV step, each a phase list.
#pragma once
#include "clusterfusion/kernels/mla/attention_kernel.hpp"
#include "clusterfusion/kernels/mla/rows_kernel.hpp"
#include "clusterfusion/kernels/mla/uv_kernel.hpp"
