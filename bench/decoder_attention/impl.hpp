// Implementations of the decoder attention block that bench/decoder_attention times side by side.
//
// Every implementation computes cf::ref::attention_block on the SAME device data (AttentionBenchInputs: weights,
// activations, paged KV cache, page table, positions, RoPE table), so outputs can be cross-checked and the table
// can print fused/unfused per row.
//
// HOOK for the fused kernel (issue 6): implement make_fused_impl() in fused_impl.cpp (replace the stub that returns
// nullptr), link your library in CMakeLists.txt (the marked line), and the program picks it up: one more row per
// case named after name(), with "x unfused" = your µs / the unfused µs and the max difference of your output from
// the unfused output. prepare() may allocate and re-lay-out whatever it needs (tiled weights, tensor maps);
// enqueue() must be graph-capturable (no sync, no allocation).
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "clusterfusion/reference/decoder.hpp"
#include "common/report.hpp"
#include "clusterfusion/backends/cuda_unfused/ops.hpp"

namespace cf::bench {

struct AttentionBenchCase {
  std::string model;          // "llama2-7b", "llama3-8b"
  ref::DecoderShape shape;
  cuda_unfused::DType dtype = cuda_unfused::DType::F16;
  int batch = 1;
  int kv_len = 1024;          // cache entries each sequence attends over, the new token included
  int page_size = 16;

  std::string label() const;  // "llama2-7b fp16 b1 kv1024 p16"
  // Bytes a perfect implementation moves per call: weights once, the KV read once, the new k/v written, the
  // activations (hidden, residual in; residual_out, out written).
  int64_t weight_bytes() const;
  int64_t kv_read_bytes() const;
  int64_t kv_write_bytes() const;
  int64_t activation_bytes() const;
  int64_t total_bytes() const { return weight_bytes() + kv_read_bytes() + kv_write_bytes() + activation_bytes(); }
};

// One rotation set of device data (all [out, in] row-major weights; KV pages [n_pages, page_size, kv_heads, hd]).
struct AttentionDeviceSet {
  const void* norm = nullptr;
  const void* w_qkv = nullptr;  // [q_dim + 2 kv_dim, hidden]
  const void* w_o = nullptr;    // [hidden, q_dim]
  const void* hidden = nullptr;
  const void* residual = nullptr;
  void* residual_out = nullptr;
  void* out = nullptr;
  void* k_pages = nullptr;
  void* v_pages = nullptr;
};

struct AttentionBenchInputs {
  AttentionBenchCase c;
  std::vector<AttentionDeviceSet> sets;  // rotated: call i uses sets[i % sets.size()]
  int n_pages = 0;                       // pages per set's pool
  const int32_t* kv_indptr = nullptr;    // [batch + 1]
  const int32_t* kv_indices = nullptr;   // [n_indices]
  const int32_t* kv_last_page_len = nullptr;
  int n_indices = 0;
  const int32_t* positions = nullptr;    // [batch], kv_len - 1
  const float* rope_cos_sin = nullptr;   // [rope_max_positions, rot_dim]
  int rope_max_positions = 0;
};

class AttentionBlockImpl {
 public:
  virtual ~AttentionBlockImpl() = default;
  virtual std::string name() const = 0;
  // Empty when the case is supported, else a short reason (printed in the table).
  virtual std::string unsupported_reason(const AttentionBenchCase& c) const = 0;
  // Allocates workspaces etc. for these inputs (not timed). Called once per case.
  virtual void prepare(const AttentionBenchInputs& in) = 0;
  // Enqueues one call on rotation set `set`; graph-capturable.
  virtual void enqueue(const AttentionBenchInputs& in, int set, cudaStream_t stream) = 0;
  // After running: synchronise and throw cf::Error if the implementation detected a problem.
  virtual void check(cudaStream_t stream) { (void)stream; }
  // Optional: the call split into named stages (each graph-capturable), timed separately for "where the time goes".
  using Stage = std::pair<std::string, std::function<void(int set, cudaStream_t stream)>>;
  virtual std::vector<Stage> stages(const AttentionBenchInputs& in) { (void)in; return {}; }
  // Frees what prepare() allocated.
  virtual void release() {}
  // What the implementation's plan decided for the last prepare() (JSON object; null when there is nothing to say).
  virtual Json plan_json() const { return Json(); }
};

// The fused plan's knobs (kernels/decoder_attention PlanConfig fields), from the command line.
struct FusedOptions {
  int cluster_size = 0;          // 0: the plan's one-wave choice
  int max_stages = 0;            // 0: as many as fit
  int early_stages = -1;         // -1: the kernel's default
  int64_t wait_budget_us = 20000;
};

std::unique_ptr<AttentionBlockImpl> make_unfused_impl();
// Defined in fused_impl.cpp (the fused kernel of kernels/decoder_attention).
std::unique_ptr<AttentionBlockImpl> make_fused_impl(const FusedOptions& options);

}  // namespace cf::bench
