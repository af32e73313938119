// The emu backend: the fused device kernels (decoder attention, FFN, LM head; cf::fused::FusedDecoder) run on the
// CPU emulator through cf_kernels_emu, with the weights converted to fp16 (bf16 for bf16 models) and a paged KV cache
// in emulator memory. Slow (every GPU thread is a fiber): for tiny models, to check the whole fused decode path
// without a GPU (CI). Decode batches of 1..16 sequences run as one fused step; prefill runs token by token (the
// attention kernel appends and attends for one token per sequence per launch).
#pragma once
#include <memory>

#include "clusterfusion/runtime/backend.hpp"
#include "clusterfusion/runtime/weights.hpp"

namespace cf {

std::unique_ptr<Backend> make_emu_backend(std::shared_ptr<const ModelWeights> weights, const BackendOptions& options);

}  // namespace cf
