// Device code of the fused MLA decode block (docs/mla.md §1.5): the row kernel (projections + absorption + latent
// append; output projection) and the split-KV latent attention (+ W_UV), each a phase list on the pipeline layer.
#pragma once
#include "clusterfusion/kernels/mla/attention_kernel.hpp"
#include "clusterfusion/kernels/mla/rows_kernel.hpp"
