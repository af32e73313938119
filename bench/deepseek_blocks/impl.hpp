// bench/deepseek_blocks: what the program and its two implementations share: V2-Lite's shapes, a case, the device
// data of one rotation set, and the Impl interface (cuda-unfused in deepseek_blocks.cpp, the fused plans in
// fused_impl.cpp or, when their sources are not in the tree, fused_missing.cpp).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "clusterfusion/backends/cuda_unfused/deepseek.hpp"
#include "clusterfusion/device/buffer.hpp"
#include "clusterfusion/model/deepseek.hpp"
#include "clusterfusion/runtime/model.hpp"
#include "common/report.hpp"

namespace cf::bench {

// DeepSeek-V2-Lite's shapes from the project's model preset (runtime/model.hpp): the reference's shapes of its config
// (model/deepseek.hpp), as the blocks take them.
inline const ModelConfig& v2_lite() {
  static const ModelConfig config = model_preset("deepseek-v2-lite");
  return config;
}
inline ref::YarnRope v2_lite_rope() { return ref::mla_shape(v2_lite()).rope; }
inline MlaBlockShape v2_lite_mla() { return cuda_unfused::mla_block_shape(ref::mla_shape(v2_lite())); }
inline MoeBlockShape v2_lite_moe() { return cuda_unfused::moe_block_shape(ref::moe_shape(v2_lite()), v2_lite().rms_eps); }

struct BenchCase {
  std::string block;  // "mla" or "moe"
  cuda_unfused::DType dtype = cuda_unfused::DType::F16;
  int batch = 1;
  int kv_len = 0;     // mla: cached tokens before this step
  int page_size = 64;

  std::string label() const {
    return block == "mla" ? format("mla %s b%d kv%d", cuda_unfused::dtype_name(dtype), batch, kv_len)
                          : format("moe %s b%d", cuda_unfused::dtype_name(dtype), batch);
  }
  int64_t activation_bytes() const { return 2 * 4 * int64_t(batch) * v2_lite().hidden; }  // 2 in, 2 out
  int64_t mla_weight_bytes() const {
    const MlaBlockShape s = v2_lite_mla();
    const int64_t d = s.hidden, H = s.n_heads, r = s.kv_lora_rank;
    return 2 * (int64_t(s.q_rows()) * d + int64_t(s.latent_row()) * d + H * s.qk_nope * r + H * s.v_head * r +
                d * s.o_dim() + d + r);
  }
  int64_t mla_cache_bytes() const { return 2 * int64_t(batch) * (kv_len + 1) * v2_lite_mla().latent_row(); }
  // MoE: everything but the routed experts, and one routed expert's gate, up and down.
  int64_t moe_fixed_bytes() const {
    const MoeBlockShape s = v2_lite_moe();
    return 4 * int64_t(s.n_experts) * s.hidden + 2 * (3 * int64_t(s.shared_ffn) * s.hidden + s.hidden);
  }
  int64_t moe_expert_bytes() const {
    const MoeBlockShape s = v2_lite_moe();
    return 2 * 3 * int64_t(s.expert_ffn) * s.hidden;
  }
  // Bytes one call reads when the batch chooses `unique_experts` distinct experts (MoE) / always (MLA).
  int64_t bytes_read(double unique_experts) const {
    if (block == "mla") return mla_weight_bytes() + mla_cache_bytes() + activation_bytes();
    return moe_fixed_bytes() + int64_t(unique_experts * double(moe_expert_bytes())) + activation_bytes();
  }
};

// One rotation set: every weight and activation of one call (null where the block has no such buffer).
struct DeviceSet {
  void* norm = nullptr;
  // MLA
  void* w_q = nullptr;
  void* w_kv_a = nullptr;
  void* kv_a_norm = nullptr;
  void* w_uk = nullptr;
  void* w_uv = nullptr;
  void* w_o = nullptr;
  void* pages = nullptr;
  // MoE
  float* router = nullptr;
  void* w_gate_up = nullptr;
  void* w_down = nullptr;
  void* shared_gate_up = nullptr;
  void* shared_down = nullptr;
  int32_t* expert_ids = nullptr;
  float* expert_weights = nullptr;
  // both
  void* hidden = nullptr;
  void* residual = nullptr;
  void* residual_out = nullptr;
  void* out = nullptr;
};

struct CaseData {
  BenchCase c;
  std::vector<dev::DeviceBuffer<uint16_t>> halves;
  std::vector<dev::DeviceBuffer<float>> floats;
  std::vector<dev::DeviceBuffer<int32_t>> ints;
  std::vector<DeviceSet> sets;
  // MLA: one page table, positions and RoPE table for every set (token b = sequence b, kv_len + 1 rows after the
  // append, pages in order)
  dev::DeviceBuffer<int32_t> indptr, indices, last_page_len, positions;
  dev::DeviceBuffer<float> rope;
  int n_pages = 0, page_size = 0, max_positions = 0;
};

class Impl {
 public:
  virtual ~Impl() = default;
  virtual std::string name() const = 0;
  virtual bool available() const { return true; }
  virtual std::string unavailable_reason() const { return {}; }
  virtual void prepare(const CaseData& d) = 0;                                // not timed
  virtual void enqueue(const CaseData& d, int set, cudaStream_t stream) = 0;  // graph-capturable
  virtual void check(cudaStream_t stream) = 0;  // synchronises; throws on a device-side problem
  virtual std::string describe() const { return {}; }
};

// The fused plans (kernels/mla, kernels/moe) as an Impl named "fused"; unavailable when they are not built.
std::unique_ptr<Impl> make_fused_impl();
bool fused_plans_built();
const char* fused_missing_reason();

}  // namespace cf::bench
