// The seed's entry point (ClusterFusion's llama_decoder_layer, SGLang-style arguments) on top of Plan, for the Python
// binding to wrap. The seed's conventions: a token pool of page size 1 (paged_kv_indptr / paged_kv_indices list each
// sequence's slots, the new token's slot last), per-layer cache pointers in device arrays indexed by layer_id, int64
// positions, a cos/sin table [max_positions, head_dim] (cos of the pairs, then their sin), NeoX pairing, no bias.
//
//   da::SeedRunner runner;                      // keeps one Plan per (layer weights, cache, shape): built on first use
//   runner.llama_decoder_layer(output, residual_output, hidden_states, residual, qkv_weight, o_weight,
//                              paged_kv_indptr, paged_kv_indices, k_cache_ptrs, v_cache_ptrs, layer_id,
//                              rms_weight, eps, positions, cos_sin, shape, stream);
//
// The tensors' shapes, which the seed reads from torch, come in SeedShape. Every call after the first for a layer is
// a hash lookup plus one launch (graph-capturable). Not thread-safe: one runner per stream/thread.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "clusterfusion/kernels/decoder_attention/launch.hpp"

namespace cf::kernels::inline CF_BUILD_NAMESPACE::decoder_attention {

struct SeedShape {
  dev::DType dtype = dev::DType::F16;
  int batch = 1;            // hidden_states.size(0)
  int hidden = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int cache_slots = 0;      // tokens the pool holds (k_cache_ptrs[layer] has cache_slots x n_kv_heads x head_dim)
  int n_indices = 0;        // paged_kv_indices.size(0)
  int cos_sin_rows = 0;     // cos_sin.size(0)
  int max_batch = 0;        // 0: batch (a plan serves every batch <= its max_batch)
  int cluster_size = 0;     // 0: automatic
};

class SeedRunner {
 public:
  void llama_decoder_layer(void* output, void* residual_output, const void* hidden_states, const void* residual,
                           const void* qkv_weight, const void* o_weight, const int32_t* paged_kv_indptr,
                           const int32_t* paged_kv_indices, const uint64_t* k_cache_ptrs,
                           const uint64_t* v_cache_ptrs, int layer_id, const void* rms_weight, float eps,
                           const int64_t* positions, const float* cos_sin, const SeedShape& shape,
                           void* stream = nullptr) {
    Plan& plan = plan_for(qkv_weight, o_weight, k_cache_ptrs, v_cache_ptrs, layer_id, rms_weight, eps, cos_sin, shape);
    StepArgs step;
    step.batch = shape.batch;
    step.hidden = hidden_states;
    step.residual = residual;
    step.residual_out = residual_output;
    step.out = output;
    step.positions64 = positions;
    step.kv_indptr = paged_kv_indptr;
    step.kv_indices = paged_kv_indices;
    step.kv_last_page_len = nullptr;  // page size 1: every page is full
    step.n_indices = shape.n_indices;
    plan.run(step, stream);
  }

  // The plan of a layer (after a first call), e.g. for check_status().
  Plan* find(const void* qkv_weight, int layer_id) {
    for (auto& [key, plan] : plans_)
      if (std::get<0>(key) == qkv_weight && std::get<4>(key) == layer_id) return plan.get();
    return nullptr;
  }
  size_t plan_count() const { return plans_.size(); }

 private:
  using Key = std::tuple<const void*, const void*, const void*, const void*, int, const void*, float, const void*, int,
                         int, int, int, int, int, int, int, int, int>;

  Plan& plan_for(const void* qkv_weight, const void* o_weight, const uint64_t* k_ptrs, const uint64_t* v_ptrs,
                 int layer_id, const void* rms_weight, float eps, const float* cos_sin, const SeedShape& s) {
    const int max_batch = s.max_batch > 0 ? s.max_batch : s.batch;
    const Key key{qkv_weight, o_weight, k_ptrs, v_ptrs, layer_id, rms_weight, eps, cos_sin, int(s.dtype),
                  max_batch, s.hidden, s.n_heads, s.n_kv_heads, s.head_dim, s.cache_slots, s.n_indices,
                  s.cos_sin_rows, s.cluster_size};
    auto it = plans_.find(key);
    if (it != plans_.end()) return *it->second;
    PlanConfig cfg;
    cfg.dtype = s.dtype;
    cfg.shape.hidden = s.hidden;
    cfg.shape.n_heads = s.n_heads;
    cfg.shape.n_kv_heads = s.n_kv_heads;
    cfg.shape.head_dim = s.head_dim;
    cfg.shape.rope_style = RopeStyle::NeoX;
    cfg.shape.eps = eps;
    cfg.weights.norm = rms_weight;
    cfg.weights.w_qkv = qkv_weight;
    cfg.weights.w_o = o_weight;
    cfg.cache.k_layer_table = k_ptrs;
    cfg.cache.v_layer_table = v_ptrs;
    cfg.cache.layer_id = layer_id;
    cfg.cache.page_size = 1;
    cfg.cache.n_pages = s.cache_slots;
    cfg.rope.cos_sin = cos_sin;
    cfg.rope.max_positions = s.cos_sin_rows;
    cfg.max_batch = max_batch;
    cfg.cluster_size = s.cluster_size;
    auto plan = std::make_unique<Plan>(cfg);
    return *plans_.emplace(key, std::move(plan)).first->second;
  }

  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace cf::kernels::decoder_attention
