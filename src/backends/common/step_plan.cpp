#include "step_plan.hpp"

#include <string>

#include "clusterfusion/common/error.hpp"

namespace cf {

bool is_decode_step(const Batch& batch) {
  if (batch.n_tokens() != batch.n_seqs()) return false;
  for (int t = 0; t < batch.n_tokens(); ++t)
    if (batch.token_seq[size_t(t)] != t) return false;
  return true;
}

void check_kv_slots(const Batch& batch, int page_size) {
  for (int t = 0; t < batch.n_tokens(); ++t) {
    const int32_t seq = batch.token_seq[size_t(t)], len = batch.kv_len[size_t(t)];
    const int32_t first = batch.kv_indptr[size_t(seq)];
    const int32_t slot = batch.kv_indices[size_t(first + (len - 1) / page_size)] * page_size + (len - 1) % page_size;
    if (slot != batch.kv_slot[size_t(t)])
      throw Error("device step: token " + std::to_string(t) + " has kv_slot " + std::to_string(batch.kv_slot[size_t(t)]) +
                  " but the slot of its position kv_len - 1 = " + std::to_string(len - 1) + " in its pages is " +
                  std::to_string(slot) + " (the device kernels append at kv_len - 1)");
  }
}

std::vector<DecodeStep> split_into_steps(const Batch& batch, int page_size, int max_rows) {
  CF_CHECK(page_size >= 1 && max_rows >= 1, "split_into_steps: bad page size or row limit");
  check_kv_slots(batch, page_size);
  std::vector<std::vector<size_t>> rows_of_token(size_t(batch.n_tokens()));
  for (size_t i = 0; i < batch.logit_tokens.size(); ++i) rows_of_token[size_t(batch.logit_tokens[i])].push_back(i);

  std::vector<DecodeStep> steps;
  std::vector<int32_t> seqs_in_step;
  for (int t = 0; t < batch.n_tokens(); ++t) {
    const int32_t seq = batch.token_seq[size_t(t)];
    bool seen = false;
    for (int32_t s : seqs_in_step) seen = seen || s == seq;
    if (steps.empty() || seen || steps.back().batch() == max_rows) {
      steps.emplace_back();
      steps.back().kv_indptr.push_back(0);
      seqs_in_step.clear();
    }
    DecodeStep& step = steps.back();
    seqs_in_step.push_back(seq);
    const int32_t len = batch.kv_len[size_t(t)];
    const int32_t first = batch.kv_indptr[size_t(seq)];
    const int32_t pages = (len + page_size - 1) / page_size;
    step.token_of_row.push_back(t);
    step.positions.push_back(batch.positions[size_t(t)]);
    step.kv_indices.insert(step.kv_indices.end(), batch.kv_indices.begin() + first,
                           batch.kv_indices.begin() + first + pages);
    step.kv_indptr.push_back(int32_t(step.kv_indices.size()));
    step.kv_last_page_len.push_back(len - (pages - 1) * page_size);
    step.logit_rows.push_back(rows_of_token[size_t(t)]);
  }
  return steps;
}

}  // namespace cf
