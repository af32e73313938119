#include "clusterfusion/runtime/runner.hpp"

#include <algorithm>
#include <numeric>

namespace cf {

Runner::Runner(std::unique_ptr<Backend> backend, int max_seqs, int context)
    : backend_(std::move(backend)),
      pages_(backend_->kv_shape().page_size, backend_->kv_shape().n_pages, max_seqs),
      context_(context > 0 ? context : backend_->config().max_context) {
  CF_CHECK_INPUT(context_ > 0, "context length must be positive");
  const int64_t pages_per_seq = (context_ + pages_.page_size() - 1) / pages_.page_size();
  CF_CHECK_INPUT(pages_per_seq * max_seqs <= pages_.n_pages(),
                 "KV cache of " + std::to_string(pages_.n_pages()) + " pages cannot hold " + std::to_string(max_seqs) +
                     " sequences of " + std::to_string(context_) + " positions");
}

Batch Runner::make_batch(std::span<const int32_t> seqs_of_tokens, std::span<const int32_t> tokens,
                         std::span<const int32_t> first_positions, bool all_logits) const {
  // seqs_of_tokens[i]: sequence of token i; tokens of one sequence are consecutive and its positions start at
  // first_positions[i] for its first token. The page table already holds the appended positions.
  Batch b;
  b.kv_indptr.push_back(0);
  std::vector<int32_t> batch_seq_of;  // runner sequence id -> batch index, via linear search (<= 16 sequences)
  int32_t next_pos = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int seq = seqs_of_tokens[i];
    const bool new_seq = i == 0 || seqs_of_tokens[i - 1] != seq;
    if (new_seq) {
      batch_seq_of.push_back(seq);
      const auto& pages = pages_.pages(seq);
      b.kv_indices.insert(b.kv_indices.end(), pages.begin(), pages.end());
      b.kv_indptr.push_back(int32_t(b.kv_indices.size()));
      b.kv_last_page_len.push_back(pages_.last_page_len(seq));
      next_pos = first_positions[i];
    }
    b.tokens.push_back(tokens[i]);
    b.positions.push_back(next_pos);
    b.token_seq.push_back(int32_t(batch_seq_of.size() - 1));
    b.kv_slot.push_back(pages_.slot(seq, next_pos));
    b.kv_len.push_back(next_pos + 1);
    const bool last_of_seq = i + 1 == tokens.size() || seqs_of_tokens[i + 1] != seq;
    if (all_logits || last_of_seq) b.logit_tokens.push_back(int32_t(i));
    ++next_pos;
  }
  return b;
}

const std::vector<float>& Runner::prefill(int seq, std::span<const int32_t> tokens, bool all_logits) {
  CF_CHECK(seq >= 0 && seq < max_seqs(), "prefill: no sequence " + std::to_string(seq));
  const int length_before = pages_.length(seq);
  if (length_before + int64_t(tokens.size()) > context_)
    throw ContextFullError("context full: " + std::to_string(length_before) + " + " + std::to_string(tokens.size()) +
                           " tokens exceed the context of " + std::to_string(context_));
  const size_t vocab = size_t(this->vocab());
  logits_.assign(all_logits ? tokens.size() * vocab : vocab, 0.0f);
  const size_t chunk = size_t(std::max(1, backend_->max_batch_tokens()));
  for (size_t begin = 0; begin < tokens.size(); begin += chunk) {
    const size_t count = std::min(chunk, tokens.size() - begin);
    const int first = pages_.append(seq, int(count));
    const std::vector<int32_t> seqs(count, seq), firsts(count, first);
    const bool last_chunk = begin + count == tokens.size();
    Batch b = make_batch(seqs, tokens.subspan(begin, count), firsts, all_logits);
    if (!all_logits && !last_chunk) b.logit_tokens.clear();
    try {
      backend_->forward(b, all_logits ? logits_.data() + begin * vocab : logits_.data());
    } catch (...) {
      pages_.truncate(seq, first);
      throw;
    }
  }
  return logits_;
}

const std::vector<float>& Runner::decode(std::span<const int32_t> seqs, std::span<const int32_t> tokens) {
  CF_CHECK(seqs.size() == tokens.size() && !seqs.empty(), "decode: one token per sequence");
  for (size_t i = 0; i < seqs.size(); ++i) {
    CF_CHECK(seqs[i] >= 0 && seqs[i] < max_seqs(), "decode: no sequence " + std::to_string(seqs[i]));
    for (size_t j = 0; j < i; ++j) CF_CHECK(seqs[i] != seqs[j], "decode: sequence listed twice");
    if (pages_.length(seqs[i]) + 1 > context_)
      throw ContextFullError("context full: sequence " + std::to_string(seqs[i]) + " has reached the context of " +
                             std::to_string(context_) + " tokens");
  }
  std::vector<int32_t> firsts(seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i) {
    try {
      firsts[i] = pages_.append(seqs[i], 1);
    } catch (...) {
      for (size_t j = 0; j < i; ++j) pages_.truncate(seqs[j], firsts[j]);
      throw;
    }
  }
  logits_.assign(seqs.size() * size_t(vocab()), 0.0f);
  const Batch b = make_batch(seqs, tokens, firsts, true);
  try {
    backend_->forward(b, logits_.data());
  } catch (...) {
    for (size_t i = 0; i < seqs.size(); ++i) pages_.truncate(seqs[i], firsts[i]);
    throw;
  }
  return logits_;
}

std::vector<float> teacher_forced_logits(Runner& runner, std::span<const int32_t> tokens, int seq) {
  runner.reset(seq);
  return runner.prefill(seq, tokens, /*all_logits=*/true);
}

}  // namespace cf
