// Helpers of the cuda-unfused DeepSeek block tests: shapes in both vocabularies (model/types.hpp for the device,
// reference/mla.hpp + moe.hpp for the CPU), and host copies of the weights in the fused plans' layouts.
#pragma once
#include <string>
#include <vector>

#include "clusterfusion/backends/cuda_unfused/deepseek.hpp"
#include "clusterfusion/reference/moe.hpp"
#include "test_util.hpp"

namespace cf::test {

// V2-Lite's YaRN (factor 40, original context 4096, beta 32 / 1, mscale = mscale_all_dim = 0.707).
inline ref::YarnRope v2_lite_yarn(int dim) {
  ref::YarnRope r;
  r.dim = dim;
  r.factor = 40.0f;
  r.original_context = 4096;
  r.mscale = 0.707f;
  r.mscale_all_dim = 0.707f;
  return r;
}

inline ref::MlaShape mla_shape(int hidden, int heads, int q_lora, int r, int nope, int v, const ref::YarnRope& rope) {
  ref::MlaShape s;
  s.hidden = hidden;
  s.n_heads = heads;
  s.q_lora_rank = q_lora;
  s.kv_lora_rank = r;
  s.qk_nope = nope;
  s.v_head = v;
  s.rope = rope;
  return s;
}

inline ref::YarnRope plain_rope(int dim) {
  ref::YarnRope r;
  r.dim = dim;
  return r;
}

// ref::MlaWeights wants W_UK and W_UV either as kv_b_proj [H (nope + v), r] or as GGUF's split tensors; the device
// takes w_uk [H, nope, r] and w_uv [H, v, r]: interleave them into kv_b_proj rows.
inline std::vector<float> kv_b_rows(const std::vector<float>& w_uk, const std::vector<float>& w_uv,
                                    const ref::MlaShape& s) {
  const size_t r = size_t(s.kv_lora_rank), nope = size_t(s.qk_nope), v = size_t(s.v_head);
  std::vector<float> out;
  out.reserve(size_t(s.n_heads) * (nope + v) * r);
  for (size_t h = 0; h < size_t(s.n_heads); ++h) {
    out.insert(out.end(), w_uk.begin() + long(h * nope * r), w_uk.begin() + long((h + 1) * nope * r));
    out.insert(out.end(), w_uv.begin() + long(h * v * r), w_uv.begin() + long((h + 1) * v * r));
  }
  return out;
}

}  // namespace cf::test
