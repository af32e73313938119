// llama_decoder_layer, llama_ffn_layer, deepseek_decoder_layer, deepseek_moe_layer and rms_norm on CPU arrays: the
// fp32 reference (cf::ref ops, any of float32 / float16 / bfloat16) or, with backend "emu", the fused kernels run on
// the CPU emulator (float16 / bfloat16; the arrays are copied into emulated device memory and back).
#pragma once
#include <cstdint>

#include "layer_args.hpp"
#include "mla_args.hpp"
#include "moe_args.hpp"

namespace cf::py {

enum class CpuBackend { Reference, Emu };

struct KernelOptions {
  int cluster_size = 0;   // 0: the launcher's choice
  int max_batch = 0;      // 0: the call's batch
  uint64_t emu_seed = 0;  // emulator schedule seed (0: $CF_EMU_SEED or 1)
};

void decoder_layer_cpu(const DecoderLayerArgs& a, CpuBackend backend, const KernelOptions& options);
void ffn_layer_cpu(const FfnLayerArgs& a, CpuBackend backend, const KernelOptions& options);
void mla_layer_cpu(const MlaLayerArgs& a, CpuBackend backend, const KernelOptions& options);
void moe_layer_cpu(const MoeLayerArgs& a, CpuBackend backend, const KernelOptions& options);
void rms_norm_cpu(const RmsNormArgs& a);

}  // namespace cf::py
