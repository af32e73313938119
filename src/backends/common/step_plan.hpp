// Splitting a runtime Batch into the steps the fused decode kernels take: one token per sequence per step, token b
// being sequence b, with FlashInfer's page table of each token's view of its sequence (its first kv_len entries).
// A lockstep decode batch is one step; a prefill of n tokens of one sequence is n steps (in order: each token's
// k, v are in the cache before the next token attends to them).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "clusterfusion/runtime/backend.hpp"

namespace cf {

inline constexpr int kMaxDecodeBatch = 16;  // the fused kernels' largest batch

struct DecodeStep {
  std::vector<int32_t> token_of_row;  // [rows] index into the Batch's tokens
  std::vector<int32_t> positions;     // [rows]
  std::vector<int32_t> kv_indptr;     // [rows + 1]
  std::vector<int32_t> kv_indices;
  std::vector<int32_t> kv_last_page_len;      // [rows]
  std::vector<std::vector<size_t>> logit_rows;  // [rows] output rows of forward()'s logits this row fills

  int batch() const { return int(token_of_row.size()); }
};

// Throws cf::Error unless every token's kv_slot is the slot of its position kv_len - 1 in its sequence's pages
// (the device kernels derive the slot from the page table; the Runner always makes them agree).
void check_kv_slots(const Batch& batch, int page_size);

// Throws cf::Error if a token's kv_slot is not the slot of its position kv_len - 1 in its sequence's pages (the
// kernels derive the slot from the page table) or a step would exceed max_rows.
std::vector<DecodeStep> split_into_steps(const Batch& batch, int page_size, int max_rows);

// True when the batch is one decode step: one token per sequence, token b of sequence b.
bool is_decode_step(const Batch& batch);

}  // namespace cf
