// Host-side validation of every params struct: one line per problem, naming the call, the field and what was
// expected (cf::InputError).
#include <cmath>
#include <cstdint>
#include <string>

#include "clusterfusion/backends/cuda_unfused/ops.hpp"
#include "cuda_unfused/validate_common.hpp"

namespace cf::cuda_unfused {
namespace {

using namespace detail;

void require_heads(int n_heads, int n_kv_heads, int head_dim, const char* where) {
  require(n_heads > 0 && n_kv_heads > 0, where,
          "n_heads " + std::to_string(n_heads) + " / n_kv_heads " + std::to_string(n_kv_heads) + " must be positive");
  require(n_heads % n_kv_heads == 0, where,
          "n_heads " + std::to_string(n_heads) + " is not a multiple of n_kv_heads " + std::to_string(n_kv_heads));
  require(head_dim == 64 || head_dim == 128, where,
          "head_dim " + std::to_string(head_dim) + " is not supported (expected 64 or 128)");
}

void validate_kv(const KvCacheArgs& kv, int tokens, const char* where) {
  require_pointer(kv.k_pages, where, "kv.k_pages", true);
  require_pointer(kv.v_pages, where, "kv.v_pages", true);
  require(kv.page_size >= 1, where, "kv.page_size " + std::to_string(kv.page_size) + " must be >= 1");
  require(kv.n_pages >= 1, where, "kv.n_pages " + std::to_string(kv.n_pages) + " must be >= 1");
  require_pointer(kv.kv_indptr, where, "kv.kv_indptr", false);
  require_pointer(kv.kv_indices, where, "kv.kv_indices", false);
  require(kv.n_seqs >= 1, where, "kv.n_seqs " + std::to_string(kv.n_seqs) + " must be >= 1");
  require(kv.n_indices >= 1, where, "kv.n_indices " + std::to_string(kv.n_indices) + " must be >= 1");
  require((kv.token_seq == nullptr) == (kv.token_kv_len == nullptr), where,
          "kv.token_seq and kv.token_kv_len must be given together (prefill) or both be null (decode)");
  if (kv.token_seq == nullptr) {
    require_pointer(kv.kv_last_page_len, where, "kv.kv_last_page_len", false);
    require(kv.n_seqs >= tokens, where,
            "decode needs one sequence per token: kv.n_seqs " + std::to_string(kv.n_seqs) + " < " +
                std::to_string(tokens) + " tokens");
  }
}

void validate_rope(const RopeTableArgs& rope, int rot_dim, const char* where) {
  require_pointer(rope.cos_sin, where, "rope.cos_sin", false);
  require(rope.max_positions >= 1, where, "rope.max_positions " + std::to_string(rope.max_positions) + " must be >= 1");
  require(rope.rot_dim == rot_dim, where,
          "rope.rot_dim " + std::to_string(rope.rot_dim) + " differs from the shape's rot_dim " + std::to_string(rot_dim));
}

}  // namespace

void validate_shape(const ref::DecoderShape& s, const char* where) {
  require(s.hidden > 0 && s.hidden % 8 == 0, where,
          "shape.hidden " + std::to_string(s.hidden) + " must be a positive multiple of 8");
  require_heads(s.n_heads, s.n_kv_heads, s.head_dim, where);
  require(s.rot_dim >= 2 && s.rot_dim <= s.head_dim && s.rot_dim % 2 == 0, where,
          "shape.rot_dim " + std::to_string(s.rot_dim) + " must be even and in [2, head_dim " +
              std::to_string(s.head_dim) + "]");
  require(s.rope_style == RopeStyle::NeoX || s.rope_style == RopeStyle::GPTJ, where, "shape.rope_style is not NeoX or GPTJ");
  require(std::isfinite(s.eps) && s.eps > 0.0f, where, "shape.eps " + std::to_string(s.eps) + " must be finite and > 0");
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F16: return "fp16";
    case DType::BF16: return "bf16";
  }
  return "unknown";
}

std::string describe_status(uint32_t bits) {
  static constexpr struct {
    uint32_t bit;
    const char* text;
  } kBits[] = {
      {kStatusBadPosition, "a position is outside the RoPE table [0, rope.max_positions)"},
      {kStatusBadSequence, "a token's sequence index is outside [0, kv.n_seqs)"},
      {kStatusBadPageTable, "kv_indptr is not increasing or runs past kv.n_indices, or a kv_last_page_len is outside [1, page_size]"},
      {kStatusBadPageId, "a kv_indices entry is outside [0, kv.n_pages)"},
      {kStatusBadKvLen, "a kv length is < 1 or more than the sequence's pages hold"},
      {kStatusBadRouterScores, "a token's MoE router logits are not all finite"},
  };
  std::string text;
  for (const auto& b : kBits) {
    if (bits & b.bit) text += (text.empty() ? "" : "; ") + std::string(b.text);
    bits &= ~b.bit;
  }
  if (bits) text += (text.empty() ? "" : "; ") + std::string("unknown status bits ") + std::to_string(bits);
  return text;
}

void AddRmsNormParams::validate() const {
  const char* where = "add_rmsnorm";
  require_dtype(dtype, where);
  require_tokens(rows, where);
  require(n > 0 && n % 8 == 0, where, "n " + std::to_string(n) + " must be a positive multiple of 8");
  require(std::isfinite(eps) && eps > 0.0f, where, "eps " + std::to_string(eps) + " must be finite and > 0");
  require_pointer(hidden, where, "hidden", true);
  if (residual) require_pointer(residual, where, "residual", true);
  require_pointer(weight, where, "weight", true);
  if (residual_out) require_pointer(residual_out, where, "residual_out", true);
  require_pointer(y, where, "y", true);
}

void RopeAppendParams::validate() const {
  const char* where = "rope_append";
  require_dtype(dtype, where);
  require_tokens(tokens, where);
  require_heads(n_heads, n_kv_heads, head_dim, where);
  require(rot_dim >= 2 && rot_dim <= head_dim && rot_dim % 2 == 0, where,
          "rot_dim " + std::to_string(rot_dim) + " must be even and in [2, head_dim]");
  require(style == RopeStyle::NeoX || style == RopeStyle::GPTJ, where, "style is not NeoX or GPTJ");
  require_pointer(qkv, where, "qkv", false);
  if (bias) require_pointer(bias, where, "bias", false);
  require_pointer(positions, where, "positions", false);
  require_pointer(q_out, where, "q_out", false);
  validate_rope(rope, rot_dim, where);
  validate_kv(kv, tokens, where);
}

void DecodeAttentionParams::validate() const {
  const char* where = "decode_attention";
  require_dtype(dtype, where);
  require_tokens(tokens, where);
  require_heads(n_heads, n_kv_heads, head_dim, where);
  require(std::isfinite(scale) && scale >= 0.0f, where, "scale must be finite and >= 0 (0 = 1/sqrt(head_dim))");
  require_pointer(q, where, "q", false);
  require_pointer(out, where, "out", false);
  require_pointer(partial, where, "partial", false);
  require(max_splits >= 1 && max_splits <= kMaxAttentionSplits, where,
          "max_splits " + std::to_string(max_splits) + " out of range (expected 1.." +
              std::to_string(kMaxAttentionSplits) + ")");
  require(n_kv_heads * ((n_heads / n_kv_heads + 7) / 8) <= 65535, where, "too many KV heads for one grid");
  validate_kv(kv, tokens, where);
}

void SiluMulParams::validate() const {
  const char* where = "silu_mul";
  require_dtype(dtype, where);
  require(rows >= 1 && n >= 1, where, "rows " + std::to_string(rows) + " and n " + std::to_string(n) + " must be >= 1");
  require_pointer(gate_up, where, "gate_up", false);
  require_pointer(out, where, "out", false);
}

void ArgmaxParams::validate() const {
  const char* where = "argmax";
  require_tokens(rows, where);
  require(n >= 1, where, "n " + std::to_string(n) + " must be >= 1");
  require_pointer(logits, where, "logits", false);
  require_pointer(tokens, where, "tokens", false);
}

void AttentionBlockParams::validate() const {
  const char* where = "attention_block";
  require_dtype(dtype, where);
  validate_shape(shape, where);
  require_tokens(batch, where);
  require_pointer(hidden, where, "hidden", true);
  if (residual) require_pointer(residual, where, "residual", true);
  require_pointer(residual_out, where, "residual_out", true);
  require_pointer(out, where, "out", true);
  require_pointer(norm, where, "norm", true);
  require_pointer(w_qkv, where, "w_qkv", true);
  if (b_qkv) require_pointer(b_qkv, where, "b_qkv", false);
  require_pointer(w_o, where, "w_o", true);
  require_pointer(positions, where, "positions", false);
  validate_rope(rope, shape.rot_dim, where);
  validate_kv(kv, batch, where);
}

void FfnBlockParams::validate() const {
  const char* where = "ffn_block";
  require_dtype(dtype, where);
  require(shape.hidden > 0 && shape.hidden % 8 == 0, where,
          "shape.hidden " + std::to_string(shape.hidden) + " must be a positive multiple of 8");
  require(shape.ffn_hidden > 0, where, "shape.ffn_hidden " + std::to_string(shape.ffn_hidden) + " must be > 0");
  require(std::isfinite(shape.eps) && shape.eps > 0.0f, where, "shape.eps must be finite and > 0");
  require_tokens(batch, where);
  require_pointer(hidden, where, "hidden", true);
  if (residual) require_pointer(residual, where, "residual", true);
  require_pointer(residual_out, where, "residual_out", true);
  require_pointer(out, where, "out", true);
  require_pointer(norm, where, "norm", true);
  require_pointer(w_gate_up, where, "w_gate_up", true);
  require_pointer(w_down, where, "w_down", true);
}

void LmHeadParams::validate() const {
  const char* where = "lm_head";
  require_dtype(dtype, where);
  require(shape.hidden > 0 && shape.hidden % 8 == 0, where,
          "shape.hidden " + std::to_string(shape.hidden) + " must be a positive multiple of 8");
  require(std::isfinite(shape.eps) && shape.eps > 0.0f, where, "shape.eps must be finite and > 0");
  require_tokens(batch, where);
  require(vocab >= 1, where, "vocab " + std::to_string(vocab) + " must be >= 1");
  require_pointer(hidden, where, "hidden", true);
  if (residual) require_pointer(residual, where, "residual", true);
  require_pointer(norm, where, "norm", true);
  require_pointer(w_out, where, "w_out", true);
  require_pointer(logits, where, "logits", true);
}

}  // namespace cf::cuda_unfused
